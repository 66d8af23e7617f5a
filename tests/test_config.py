"""Loading and validating the TOML config: defaults, paths, options,
errors that name the file and key, warnings for unknown keys, and rule tables."""

from __future__ import annotations

import copy as copy_module
import datetime
import json
from pathlib import Path

import pytest

from llm_cascade import paths
from llm_cascade.clock import format_ts
from llm_cascade.config import Options, load_config, parse_config
from llm_cascade.errors import ConfigError, ProviderError
from llm_cascade.rules import MAX_SECONDS

PROVIDER = '[providers.p]\ntype = "openai"\n'
T_FAR = 4_102_444_800.0  # 2100-01-01: a clock far ahead must still format every cooldown


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def home() -> Path:
    return Path.home()


# --- defaults and paths ----------------------------------------------------------------------


def test_an_empty_file_is_a_valid_config_with_default_paths(tmp_path, monkeypatch):
    data_home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    config = load_config(write(tmp_path, ""))
    assert config.providers == {} and config.cascades == {}
    assert config.database_path == data_home / "llm-cascade" / "db.sqlite"
    assert config.failure_dir == data_home / "llm-cascade" / "failed_prompts"
    assert config.keyring is True
    assert (config.cooldown.base_s, config.cooldown.cap_s) == (30.0, 3600.0)
    assert config.rules == () and config.warnings == ()


def test_an_empty_xdg_data_home_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", "")
    config = load_config(write(tmp_path, ""))
    assert config.database_path == home() / ".local" / "share" / "llm-cascade" / "db.sqlite"


def test_tilde_paths_expand_to_home_and_relative_paths_follow_the_config(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    config = load_config(
        write(
            folder,
            '[database]\npath = "~/state/db.sqlite"\n[failure_persistence]\ndir = "failed"\n',
        )
    )
    assert config.database_path == home() / "state" / "db.sqlite"
    assert config.failure_dir == folder / "failed"
    assert config.failure_dir.is_absolute()
    assert config.path == folder / "config.toml"


def test_a_relative_config_path_is_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, '[database]\npath = "db.sqlite"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("config.toml")
    assert config.path == tmp_path / "config.toml"
    assert config.database_path == tmp_path / "db.sqlite"


def test_llm_cascade_config_names_the_default_config(tmp_path, monkeypatch):
    chosen = write(tmp_path, '[database]\npath = "chosen.sqlite"\n', name="chosen.toml")
    monkeypatch.setenv("LLM_CASCADE_CONFIG", str(chosen))
    assert paths.default_config_path() == chosen
    assert load_config().database_path == tmp_path / "chosen.sqlite"


def test_llm_cascade_config_expands_tilde(monkeypatch):
    monkeypatch.setenv("LLM_CASCADE_CONFIG", "~/cfg/llm.toml")
    assert paths.default_config_path() == home() / "cfg" / "llm.toml"


@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_llm_cascade_config_is_ignored(tmp_path, monkeypatch, value):
    monkeypatch.setenv("LLM_CASCADE_CONFIG", value)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert paths.default_config_path() == tmp_path / "xdg" / "llm-cascade" / "config.toml"


def test_default_config_path_follows_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert paths.default_config_path() == tmp_path / "xdg" / "llm-cascade" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "")  # empty means unset, not "relative"
    assert paths.default_config_path() == home() / ".config" / "llm-cascade" / "config.toml"


def test_default_config_is_loaded_when_no_path_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    folder = tmp_path / "xdg" / "llm-cascade"
    folder.mkdir(parents=True)
    write(folder, PROVIDER)
    assert list(load_config().providers) == ["p"]


# --- providers, entries and options ----------------------------------------------------------


def test_provider_fields_and_defaults(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "[providers.groq]\n"
            'type = "openai"\n'
            'base_url = "https://api.groq.com/openai/v1///"\n'
            'api_key_service = "groq-svc"\n'
            'api_key_env = "GROQ_API_KEY"\n'
            "[providers.local]\n"
            'type = "ollama"\n',
        )
    )
    groq, local = config.providers["groq"], config.providers["local"]
    assert (groq.type, groq.api_key_service, groq.api_key_env) == (
        "openai",
        "groq-svc",
        "GROQ_API_KEY",
    )
    assert groq.base_url == "https://api.groq.com/openai/v1"
    assert not groq.uses_default_base_url
    assert local.effective_base_url == "http://localhost:11434"
    assert local.uses_default_base_url
    assert local.options == Options(supports=frozenset({"tools", "json", "schema", "stream"}))


def test_supports_defaults_to_the_type_and_can_be_declared(tmp_path):
    config = parse_config(
        {
            "providers": {
                "claude": {"type": "anthropic"},
                "local": {"type": "ollama", "supports": ["stream", "vision"]},
            },
            "cascades": {"x": {"entries": [{"provider": "local", "model": "m", "supports": []}]}},
        },
        tmp_path / "c.toml",
    )
    assert "prefill" in config.providers["claude"].options.supports
    assert config.providers["local"].options.supports == {"stream", "vision"}
    assert config.cascades["x"].entries[0].options.supports == frozenset()
    with pytest.raises(ConfigError, match=r"supports: must be a list of capabilities"):
        parse_config({"providers": {"a": {"type": "openai", "supports": ["teleport"]}}})


def test_on_midstream_is_checked(tmp_path):
    base = {"providers": {"a": {"type": "openai"}}}
    entries = [{"provider": "a", "model": "m"}]
    config = parse_config(
        {**base, "cascades": {"x": {"entries": entries, "on_midstream": "continue"}}}
    )
    assert config.cascades["x"].on_midstream == "continue"
    with pytest.raises(ConfigError, match=r"cascades.x.on_midstream: must be one of restart"):
        parse_config({**base, "cascades": {"x": {"entries": entries, "on_midstream": "retry"}}})


def test_entry_options_override_provider_options_which_override_defaults(tmp_path):
    config = load_config(
        write(
            tmp_path,
            PROVIDER + "timeout = 30\n"
            "max_tokens = 100\n"
            'extra = {seed = 1, top_p = 0.5}\nheaders = {"X-A" = "1", "X-B" = "2"}\n'
            "[cascades.c]\n"
            "entries = [\n"
            '  {provider = "p", model = "fast", max_tokens = 5, extra = {seed = 2, user = "u"},'
            ' headers = {"X-B" = "b"}},\n'
            '  {provider = "p", model = "plain"},\n'
            "]\n",
        )
    )
    fast, plain = config.cascades["c"].entries
    assert fast.options.timeout == 30.0  # from the provider
    assert fast.options.max_tokens == 5  # from the entry
    assert fast.options.connect_timeout == 10.0  # the default
    assert fast.options.extra == {"seed": 2, "top_p": 0.5, "user": "u"}  # merged key-wise
    assert fast.options.headers == {"X-A": "1", "X-B": "b"}
    assert plain.options == config.providers["p"].options
    assert isinstance(fast.options.timeout, float)


def test_max_response_bytes_defaults_to_32_mib_and_an_entry_may_lower_it(tmp_path):
    config = load_config(
        write(
            tmp_path,
            PROVIDER + "[cascades.c]\n"
            'entries = [{provider = "p", model = "a"},'
            ' {provider = "p", model = "b", max_response_bytes = 65_536}]\n',
        )
    )
    default, small = config.cascades["c"].entries
    assert default.options.max_response_bytes == 32 * 1024 * 1024
    assert small.options.max_response_bytes == 65536


def test_stream_usage_defaults_to_true_and_an_entry_may_turn_it_off(tmp_path):
    # Some OpenAI-compatible servers reject `stream_options`: one entry can stop sending it.
    config = load_config(
        write(
            tmp_path,
            PROVIDER + "[cascades.c]\n"
            'entries = [{provider = "p", model = "a"},'
            ' {provider = "p", model = "b", stream_usage = false}]\n',
        )
    )
    default, off = config.cascades["c"].entries
    assert (default.options.stream_usage, off.options.stream_usage) == (True, False)


def test_entries_keep_their_order_and_build_entry_keys(tmp_path):
    config = load_config(
        write(
            tmp_path,
            PROVIDER + "[cascades.c]\n"
            'entries = [{provider = "p", model = "b"}, {provider = "p", model = " a "},'
            ' {provider = "p", model = "llama3:8b"}]\n'
            "deadline = 45\n",
        )
    )
    cascade = config.cascades["c"]
    assert [e.key for e in cascade.entries] == ["p/b", "p/a", "p/llama3:8b"]
    assert cascade.deadline == 45.0


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[providers.p]\n", "providers.p.type", "is missing"),
        ('[providers.p]\ntype = "OpenAI"\n', "providers.p.type", "unknown 'OpenAI'"),
        ('[providers."a/b"]\ntype = "openai"\n', "providers.a/b", "must not"),
        ("providers = 5\n", "providers", "must be a table"),
        ('[providers]\np = "openai"\n', "providers.p", "must be a table"),
        (PROVIDER + 'base_url = "api.example.com"\n', "providers.p.base_url", "http(s) URL"),
        (PROVIDER + "api_key_env = 5\n", "providers.p.api_key_env", "must be a string"),
        (PROVIDER + "timeout = 0\n", "providers.p.timeout", "above 0"),
        (PROVIDER + 'connect_timeout = "5"\n', "providers.p.connect_timeout", "above 0"),
        (PROVIDER + "max_tokens = 1.5\n", "providers.p.max_tokens", "an integer"),
        (PROVIDER + "retries = 11\n", "providers.p.retries", "from 0 to 10"),
        (PROVIDER + "retries = true\n", "providers.p.retries", "from 0 to 10"),
        (PROVIDER + "temperature = -0.1\n", "providers.p.temperature", "0 or more"),
        (PROVIDER + "headers = {X = 1}\n", "providers.p.headers", "string values"),
        (PROVIDER + 'extra = "x"\n', "providers.p.extra", "a table"),
        (PROVIDER + "max_response_bytes = 0\n", "providers.p.max_response_bytes", "above 0"),
        (
            PROVIDER + 'max_response_bytes = "32M"\n',
            "providers.p.max_response_bytes",
            "an integer number of bytes",
        ),
        (PROVIDER + 'stream_usage = "no"\n', "providers.p.stream_usage", "true or false"),
        ("[cascades.c]\n", "cascades.c.entries", "is missing"),
        ("[cascades.c]\nentries = []\n", "cascades.c.entries", "is empty"),
        (
            PROVIDER + '[cascades.c]\nentries = [{provider = "p", model = "m"}, "p/m"]\n',
            "cascades.c.entries[1]",
            "must be a table",
        ),
        (
            PROVIDER + '[cascades.c]\nentries = [{model = "m"}]\n',
            "cascades.c.entries[0].provider",
            "is missing",
        ),
        (
            PROVIDER + '[cascades.c]\nentries = [{provider = "q", model = "m"}]\n',
            "cascades.c.entries[0].provider",
            "'q' is not defined under [providers] (defined: p)",
        ),
        (
            PROVIDER + '[cascades.c]\nentries = [{provider = "p", model = "  "}]\n',
            "cascades.c.entries[0].model",
            "non-empty",
        ),
        (
            PROVIDER + '[cascades.c]\nentries = [{provider = "p", model = "m", retries = -1}]\n',
            "cascades.c.entries[0].retries",
            "from 0 to 10",
        ),
        (
            PROVIDER + '[cascades.c]\nentries = [{provider = "p", model = "m"}]\ndeadline = 0\n',
            "cascades.c.deadline",
            "above 0",
        ),
        ('keyring = "no"\n', "keyring", "true or false"),
        ("[cooldown]\nbase = 0\n", "cooldown.base", "above 0"),
        ("database = 1\n", "database", "must be a table"),
        ("[database]\npath = 1\n", "database.path", "must be a string"),
        ("[failure_persistence]\ndir = []\n", "failure_persistence.dir", "must be a string"),
    ],
)
def test_each_validation_error_names_the_file_and_the_key(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"'{path}': {key}: "), message
    assert problem in message
    assert caught.value.exit_code == 2


def test_a_toml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "[providers.p\ntype = 'openai'\n")
    with pytest.raises(ConfigError, match=r"^Failed to parse config file '.*config\.toml': "):
        load_config(path)


def test_an_unreadable_config_is_a_read_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match=r"^Failed to read config file '.*config\.toml': "):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^Failed to read config file '.*'"):
        load_config(tmp_path)  # a directory


def test_a_missing_config_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match=r"no config file at '.*nope\.toml'.*llm-cascade setup"):
        load_config(tmp_path / "nope.toml")


# --- unknown keys ----------------------------------------------------------------------------


def test_unknown_keys_are_warnings_with_a_suggestion(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "[providers.p]\n"
            'type = "openai"\n'
            'api_key_evn = "X"\n'
            "[cascades.c]\n"
            'entries = [{provider = "p", model = "m", timout = 5}]\n'
            "dedline = 3\n"
            "[databse]\n"
            'path = "x"\n'
            "[[rules]]\n"
            "status = 500\n"
            'cooldwn = "none"\n',
        )
    )
    assert set(config.warnings) == {
        "config.toml: unknown key 'databse' ignored (did you mean 'database'?)",
        "config.toml: unknown key 'rules[0].cooldwn' ignored (did you mean 'cooldown'?)",
        "config.toml: unknown key 'providers.p.api_key_evn' ignored (did you mean 'api_key_env'?)",
        "config.toml: unknown key 'cascades.c.dedline' ignored (did you mean 'deadline'?)",
        "config.toml: unknown key 'cascades.c.entries[0].timout' ignored (did you mean 'timeout'?)",
    }
    # Ignored means ignored: the typo changes nothing.
    assert config.cascades["c"].entries[0].options.timeout == 120.0


def test_an_unknown_key_with_nothing_close_has_no_suggestion(tmp_path):
    config = load_config(write(tmp_path, 'zebra = "stripes"\n'))
    assert config.warnings == ("config.toml: unknown key 'zebra' ignored",)


def test_unknown_keys_are_logged_as_warnings(tmp_path, caplog):
    load_config(write(tmp_path, "[database]\npaht = 'x'\n"))
    assert "unknown key 'database.paht' ignored (did you mean 'path'?)" in caplog.text


# --- rules -----------------------------------------------------------------------------------


def rules_config(tmp_path: Path, *tables: str) -> Path:
    return write(tmp_path, "".join(f"[[rules]]\n{t}\n" for t in tables))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("429", {429}),
        ('"5xx"', set(range(500, 600))),
        ('"500-504"', {500, 501, 502, 503, 504}),
        ('" 500 - 502 "', {500, 501, 502}),
        ('[429, 503, "520-521"]', {429, 503, 520, 521}),
        ('["4xx", 503]', set(range(400, 500)) | {503}),
    ],
)
def test_rule_status_forms(tmp_path, status, expected):
    [rule] = load_config(rules_config(tmp_path, f"status = {status}")).rules
    assert rule.statuses == frozenset(expected)


def test_rule_fields_are_parsed(tmp_path):
    first, second = load_config(
        rules_config(
            tmp_path,
            'name = "too_long"\nstatus = 400\ncode = "Context_Length_Exceeded"\n'
            'action = "stop"\ncooldown = "none"\nhint = "shorten the prompt for {provider}"',
            'kind = ["timeout", "connect"]\ncooldown = 12\nretry = true\nretry_after = false',
        )
    ).rules
    assert first.name == "too_long"
    assert first.codes == frozenset({"context_length_exceeded"})  # codes match case-blind
    assert (first.action, first.cooldown, first.hint) == (
        "stop",
        "none",
        "shorten the prompt for {provider}",
    )
    assert second.name == "rules[1]"
    assert second.kinds == frozenset({"timeout", "connect"}) and second.statuses is None
    assert (second.cooldown, second.retry, second.honor_retry_after) == (12.0, True, False)


def test_provider_rules_are_kept_apart_from_global_ones(tmp_path):
    config = load_config(
        write(
            tmp_path,
            PROVIDER + "[[providers.p.rules]]\nstatus = 400\naction = 'stop'\n"
            "[[rules]]\nkind = 'timeout'\n",
        )
    )
    assert [r.name for r in config.providers["p"].rules] == ["providers.p.rules[0]"]
    assert [r.name for r in config.rules] == ["rules[0]"]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("status = 600", "status: expected a code like 429"),
        ("status = true", "status: expected a code like 429"),
        ('status = "5XX"', "status: expected a code like 429"),
        ('status = "abc"', "status: expected a code like 429"),
        ('status = "500-"', "status: cannot read range"),
        ('status = "504-500"', "status: "),
        ('status = "1-99999"', "status: "),
        ('kind = "hang"', "kind: unknown 'hang'"),
        ('kind = ["timeout", ["connect"]]', "kind: "),
        ("kind = {a = 1}", "kind: "),
        ("code = {a = 1}", "code: "),
        ('status = 500\naction = "explode"', "action: expected 'failover' or 'stop'"),
        ("status = 500\ncooldown = -1", "cooldown: expected"),
        ('status = 500\ncooldown = "forever"', "cooldown: expected"),
        ('status = 500\nretry = "yes"', "retry: expected true or false"),
        ("status = 500\nretry_after = 1", "retry_after: expected true or false"),
        ("status = 500\nhint = 5", "hint: "),
        ('status = 500\nhint = "see {docs}"', "hint: "),
        ('status = 500\nhint = "see {provider:>999999999}"', "hint: "),
        ('status = 500\nhint = "see {provider!r}"', "hint: "),
        ('status = 500\nhint = "see {provider.x}"', "hint: "),
        ('status = 500\nhint = "see {"', "hint: "),
        ('status = 500\nhint = "see {}"', "hint: "),
        ('action = "stop"', "a rule needs at least one of status, kind or code"),
    ],
)
def test_a_bad_rule_is_a_config_error_naming_the_rule(tmp_path, table, problem):
    path = rules_config(tmp_path, "status = 429", table)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"'{path}': rules[1]: {problem}"), str(caught.value)


def test_a_bad_provider_rule_names_its_path(tmp_path):
    path = write(tmp_path, PROVIDER + "[[providers.p.rules]]\nkind = 'nope'\n")
    with pytest.raises(ConfigError, match=r"providers\.p\.rules\[0\]: kind: unknown 'nope'"):
        load_config(path)


def test_rules_must_be_an_array_of_tables(tmp_path):
    path = write(tmp_path, "[rules]\nstatus = 500\n")
    with pytest.raises(ConfigError, match=r"rules: must be an array of tables"):
        load_config(path)


@pytest.mark.parametrize(
    ("headers", "key", "problem"),
    [
        ('{ X-Token = "tok-secret-1\\ntok-secret-2" }', "headers.X-Token", "one line"),
        ('{ X-Token = "tok-secret-\\u00e9" }', "headers.X-Token", "printable ASCII"),
        ('{ X-Token = "tok-secret-\\u0000" }', "headers.X-Token", "printable ASCII"),
        ('{ "X Token" = "tok-secret" }', "headers.X Token", "not a valid header name"),
    ],
)
def test_a_header_that_http_cannot_carry_is_an_error_that_hides_its_value(
    tmp_path, headers, key, problem
):
    for text, prefix in [
        (PROVIDER + f"headers = {headers}\n", "providers.p."),
        (
            PROVIDER
            + f'[cascades.c]\nentries = [{{provider = "p", model = "m", headers = {headers}}}]\n',
            "cascades.c.entries[0].",
        ),
    ]:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        message = str(caught.value)
        assert message.startswith(f"'{path}': {prefix}{key}: "), message
        assert problem in message
        assert "tok-secret" not in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (PROVIDER + "timeout = inf\n", "providers.p.timeout"),
        (PROVIDER + "connect_timeout = nan\n", "providers.p.connect_timeout"),
        (PROVIDER + "first_byte_timeout = inf\n", "providers.p.first_byte_timeout"),
        (PROVIDER + "max_wait = inf\n", "providers.p.max_wait"),
        (PROVIDER + "temperature = inf\n", "providers.p.temperature"),
        (PROVIDER + "extra = { top_p = nan }\n", "providers.p.extra"),
        (PROVIDER + "extra = { a = { b = [1.0, -inf] } }\n", "providers.p.extra"),
        (
            PROVIDER + '[cascades.c]\nentries = [{provider = "p", model = "m"}]\ndeadline = inf\n',
            "cascades.c.deadline",
        ),
        ("[cooldown]\ncap = inf\n", "cooldown.cap"),
        ("[[rules]]\nstatus = 500\ncooldown = inf\n", "rules[0]"),
    ],
)
def test_infinite_or_nan_numbers_are_errors_not_crashes_at_run_time(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"'{path}': {key}: "), caught.value


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/v1",  # an unclosed IPv6 literal
        "http://127.0.0.1:99999/v1",  # no such port
        "http://host:port/v1",
        "http://",  # no host
        "https:///v1",
        "http://example.com/v1?key=1",  # the request path would land in the query
        "http://example.com/v1#top",
    ],
)
def test_a_base_url_no_request_can_use_is_an_error_at_load_time(tmp_path, url):
    path = write(tmp_path, PROVIDER + f'base_url = "{url}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"'{path}': providers.p.base_url: "), caught.value


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[cooldown]\nlong = 1e12\n", "cooldown.long"),
        ("[cooldown]\nbase = 31536001\n", "cooldown.base"),
        ("[cooldown]\ncap = 1e300\n", "cooldown.cap"),
        ("[[rules]]\nstatus = 500\ncooldown = 1e300\n", "rules[0]"),
        (
            PROVIDER + "[[providers.p.rules]]\nstatus = 500\ncooldown = 1e12\n",
            "providers.p.rules[0]",
        ),
        (PROVIDER + "timeout = 1e300\n", "providers.p.timeout"),
        (PROVIDER + "connect_timeout = 1e300\n", "providers.p.connect_timeout"),
        (PROVIDER + "first_byte_timeout = 1e300\n", "providers.p.first_byte_timeout"),
        (PROVIDER + "max_wait = 1e300\n", "providers.p.max_wait"),
        (
            PROVIDER + '[cascades.c]\nentries = [{provider = "p", model = "m", timeout = 1e12}]\n',
            "cascades.c.entries[0].timeout",
        ),
        (
            PROVIDER
            + '[cascades.c]\nentries = [{provider = "p", model = "m"}]\ndeadline = 1e300\n',
            "cascades.c.deadline",
        ),
    ],
)
def test_seconds_beyond_one_year_are_errors_naming_the_key_and_the_maximum(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"'{path}': {key}: "), caught.value
    assert "31536000" in str(caught.value)


def test_one_year_of_seconds_is_still_allowed(tmp_path):
    year = 31_536_000
    path = write(
        tmp_path,
        f"[cooldown]\nlong = {year}\ncap = {year}\n[[rules]]\nstatus = 500\ncooldown = {year}\n"
        + PROVIDER
        + f"timeout = {year}\nmax_wait = {year}\n",
    )
    config = load_config(path)
    assert config.cooldown.long_s == year
    assert config.providers["p"].options.timeout == year


# --- hostile documents -----------------------------------------------------------------------


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (PROVIDER + "extra." + ".".join(["a"] * 500) + " = 1\n", "providers.p.extra.a.a.a…"),
        (
            PROVIDER + '[[cascades.c.entries]]\nprovider = "p"\nmodel = "m"\n'
            "extra." + "a." * 300 + "b = 1\n",
            "cascades.c.entries[0].extra.a…",
        ),
        (
            "[[rules]]\nstatus = 500\nname." + ".".join(["a"] * 200) + " = 1\n",
            "rules[0].name.a.a.a…",
        ),
    ],
)
def test_tables_nested_too_deeply_are_errors_naming_where(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"'{path}': {key}: nested more than 64 levels deep"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[providers.p]\ntype = {a = 1}\n", "providers.p.type", "must be a string"),
        ('[providers.p]\ntype = "' + "x" * 5000 + '"\n', "providers.p.type", "unknown"),
        ("[[rules]]\nstatus = 500\nname = {a = 1}\n", "rules[0]", "name: expected a string"),
        ("[[rules]]\nstatus = 500\nname = 5\n", "rules[0]", "name: expected a string"),
        (PROVIDER + "extra = { since = 2026-01-01 }\n", "providers.p.extra", "no inf, nan, dates"),
    ],
)
def test_wrong_types_are_short_errors_not_crashes(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"'{path}': {key}: "), message
    assert problem in message
    assert len(message) < len(str(path)) + 200


FULL_CONFIG: dict[str, object] = {
    "keyring": False,
    "providers": {
        "p": {
            "type": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "P_KEY",
            "api_key_service": "p",
            "timeout": 5,
            "connect_timeout": 1,
            "first_byte_timeout": 2,
            "max_tokens": 10,
            "temperature": 0.5,
            "retries": 1,
            "max_wait": 1,
            "extra": {"top_p": 0.9, "a": [1, {"b": "c"}]},
            "headers": {"X-A": "b"},
            "stream_usage": True,
            "rules": [
                {
                    "name": "r",
                    "status": [500, "5xx", "400-404"],
                    "kind": "http",
                    "code": ["c"],
                    "action": "stop",
                    "cooldown": 5,
                    "retry": True,
                    "retry_after": False,
                    "hint": "see {provider}",
                }
            ],
        }
    },
    "cascades": {
        "c": {"deadline": 9, "entries": [{"provider": "p", "model": "m", "extra": {"n": 1}}]}
    },
    "cooldown": {"base": 1, "cap": 2, "long": 3},
    "rules": [{"kind": ["timeout"], "cooldown": "long"}],
    "database": {"path": "db.sqlite"},
    "failure_persistence": {"dir": "failed"},
}
HOSTILE_TOML: list[object] = [
    True,
    -1,
    0,
    2**63 - 1,
    1e300,
    -1e300,
    "",
    " x\n",
    "h" * 5000,
    [],
    [{}],
    [[1], "x"],
    {},
    {"a": [1, {"b": []}]},
    nested(500),
    [nested(500)],
    datetime.date(2026, 1, 1),
    datetime.time(12, 0),
]


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*path, i))
    return found


def _replaced(doc: object, path: tuple[object, ...], value: object) -> object:
    copy = copy_module.deepcopy(doc)
    node = copy
    for step in path[:-1]:
        node = node[step]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return copy


@pytest.mark.parametrize("path", _paths(FULL_CONFIG), ids=str)
def test_any_value_anywhere_loads_or_is_a_one_line_config_error(tmp_path, path):
    """Property: no decoded document crashes validation, every error is one short line, and
    what validation accepts can be serialised and timed without crashing later."""
    where = tmp_path / "config.toml"
    for value in HOSTILE_TOML:
        doc = _replaced(FULL_CONFIG, path, value)
        try:
            config = parse_config(doc, where)  # type: ignore[arg-type]
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and len(message) < len(str(where)) + 200, (path, message)
            continue
        for cascade in config.cascades.values():
            for e in cascade.entries:
                json.dumps(dict(e.options.extra))
                assert 0 < e.options.timeout <= MAX_SECONDS
        for rule in (*config.rules, *config.providers["p"].rules):
            seconds = rule.cooldown_s(ProviderError("http", "x", status=500), 99, config.cooldown)
            format_ts(T_FAR + (seconds or 0))


# --- base URLs no request can use ------------------------------------------------------------

BAD_URLS = [
    "https://api.example.com/v1\n",  # urlsplit drops the newline; httpx refuses it
    "https://api.example.com/v1\r",
    "https://api.exa\tmple.com/v1",
    "https://api.example.com/v\x001",
    " https://api.example.com/v1",
    "https://api.example.com/v1 ",
    "https://xn--a.com/v1",  # an A-label that is not Punycode of anything
    "http://xn--.com/v1",
    "https://api.xn--a.com/v1",
    "https://" + "a" * 64 + ".com/v1",  # a DNS label holds at most 63 octets
    "https://" + ("a" * 60 + ".") * 5 + "com/v1",  # a name holds at most 253
    "https://ex\u00e4mple\u200d.com/v1",  # a joiner IDNA refuses there
    "https://\u2488.com/v1",
    "https://a\u0301.com/v1",  # not in NFC
    "https://\u00e4" + "a" * 70 + ".com/v1",
    "https://a..com/v1",
    "https://.com/v1",
    "http://999.1.1.1/v1",
    "http://[::zz]/v1",
    "https://api.example.com/" + "v" * 3000,
]
GOOD_URLS = [
    "http://localhost:8080/v1",
    "http://127.0.0.1:11434",
    "http://[::1]:8080/v1",
    "http://my_service:8000/v1",  # a docker compose service name
    "https://api.example.com./v1",  # a fully qualified name
    "https://m\u00fcnchen.de/v1",
    "https://xn--mnchen-3ya.de/v1",
    "https://" + "a" * 63 + ".com/v1",
    "https://api.example.com/v1/with%20space",
]


def _url_id(url: str) -> str:
    return repr(url)[:50]


@pytest.mark.parametrize("url", BAD_URLS, ids=_url_id)
def test_a_base_url_httpx_would_refuse_is_an_error_at_load_time(tmp_path, url):
    path = write(tmp_path, PROVIDER + f"base_url = {json.dumps(url)}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"'{path}': providers.p.base_url: "), message
    assert "\n" not in message and len(message) < len(str(path)) + 200


def test_a_bad_base_url_is_not_repeated_it_may_hold_a_password(tmp_path):
    for url in [
        "htps://user:tok-secret@api.example.com/v1",
        "https://user:tok-secret@xn--a.com/v1",
        "https://user:tok-secret@api.example.com/v1\n",
        "https://user:tok-secret@a..com/v1",
    ]:
        path = write(tmp_path, PROVIDER + f"base_url = {json.dumps(url)}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert "tok-secret" not in str(caught.value)


@pytest.mark.parametrize("url", BAD_URLS + GOOD_URLS, ids=_url_id)
def test_every_base_url_the_config_accepts_httpx_can_send_to(tmp_path, url):
    """Property: what load_config accepts never fails later inside httpx."""
    import httpx

    path = write(tmp_path, PROVIDER + f"base_url = {json.dumps(url)}\n")
    try:
        config = load_config(path)
    except ConfigError:
        assert url not in GOOD_URLS
        return
    base = config.providers["p"].effective_base_url
    request = httpx.Request("POST", base + "/chat/completions")
    assert request.url.host


def test_the_templates_commented_native_providers_load_once_uncommented():
    """The examples of the newer provider types in the template are a config that works."""
    import tomllib
    from importlib import resources

    text = resources.files("llm_cascade").joinpath("config_template.toml").read_text()
    block = text[text.index("# More native providers") : text.index("# --- cascades")]
    lines = [
        ln[2:] for ln in block.splitlines()[1:] if ln.startswith("# ") and not ln.startswith("# #")
    ]
    config = parse_config(tomllib.loads("\n".join(lines)))
    assert {p.type for p in config.providers.values()} == {
        "azure", "mistral", "cohere", "bedrock", "openai_responses",
    }  # fmt: skip
    assert config.providers["bedrock"].region == "us-east-1"
    assert config.providers["azure"].api_version == "2024-10-21"
