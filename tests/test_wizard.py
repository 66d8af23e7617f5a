"""`setup --interactive`: the answer rules, then the real command in a pseudo-terminal."""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pexpect
import pytest
from keyrings.alt.file import PlaintextKeyring

import llm_cascade
from llm_cascade.config import parse_config
from llm_cascade.keys import lookup_for
from llm_cascade.wizard import (
    ask_keys,
    build_document,
    check_base_url,
    check_name,
    parse_entry,
    parse_selection,
    parse_yes_no,
    render_config,
    run_wizard,
)

from .support import cli_command, run_cli

needs_pty = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
SECRET = "sk-wizard-0123456789abcdef"
NAMES = ["anthropic", "gemini", "groq", "ollama", "openai"]


# --- answer rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "value"),
    [("y", True), ("YES", True), (" Yes ", True), ("n", False), ("No", False), ("", False)],
)
def test_yes_and_no_in_any_case(answer, value):
    assert parse_yes_no(answer, default=False) is value


@pytest.mark.parametrize("answer", ["yep", "1", "oui"])
def test_other_answers_are_asked_again(answer):
    with pytest.raises(ValueError, match="y or n"):
        parse_yes_no(answer, default=False)


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [
        ("5", ["openai"]),
        ("openai, 4", ["openai", "ollama"]),
        ("OpenAI 1 1", ["openai", "anthropic"]),
        ("all", NAMES),
        ("none", []),
    ],
)
def test_providers_by_number_or_name(answer, chosen):
    assert parse_selection(answer, NAMES) == chosen


@pytest.mark.parametrize(("answer", "message"), [("", "at least one"), ("11", "Unknown choice")])
def test_bad_provider_choices_say_what_is_allowed(answer, message):
    with pytest.raises(ValueError, match=message):
        parse_selection(answer, NAMES)


def test_entries_split_at_the_first_colon_and_need_a_model():
    assert parse_entry("ollama:llama3:8b", ["ollama"]) == ("ollama", "llama3:8b")
    assert parse_entry(" openai : gpt-4o ", ["openai"]) == ("openai", "gpt-4o")
    for line, message in [
        ("openai", "Format: provider:model"),
        ("openai:", "model after ':' is empty"),
        ("openai:  ", "model after ':' is empty"),
        ("gorq:llama", "'gorq' is not configured (configured: openai)"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_entry(line, ["openai"])


@pytest.mark.parametrize("name", ["my llm", "a/b", "a:b", "", "ü"])
def test_names_are_letters_digits_dash_underscore(name):
    with pytest.raises(ValueError):
        check_name(name, [], "provider")
    assert check_name("my-llm_2", [], "provider") == "my-llm_2"
    with pytest.raises(ValueError, match="already"):
        check_name("openai", ["openai"], "provider")


@pytest.mark.parametrize(
    "url", ["", "localhost:8000", "ftp://x", "http://", "http://a b", "http://h:x"]
)
def test_base_urls_must_parse_as_http(url):
    with pytest.raises(ValueError):
        check_base_url(url)
    assert check_base_url("http://localhost:8000/v1/") == "http://localhost:8000/v1"


class Scripted:
    """A Prompter that answers from a list and then behaves like a closed stdin."""

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers = list(answers)
        self.lines: list[str] = []

    def ask(self, prompt: str) -> str:
        self.lines.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0).strip()

    ask_secret = ask

    def say(self, text: str = "") -> None:
        self.lines.append(text)

    warn = say


def test_the_dialogue_builds_a_config_that_loads():
    providers = ["openai,ollama", "y", "local", "http://127.0.0.1:8000/v1", "", "n"]
    cascades = ["", "local:qwen", "openai:gpt-4o-mini", "", "fast", "ollama:llama3", "", ""]
    cascades += ["fast"]  # the default cascade
    io = Scripted([*providers, *cascades])
    answers = run_wizard(io)
    doc = build_document(answers, "~/db.sqlite", "~/failed")
    text = render_config(doc, "/the/template.toml")
    config = parse_config(tomllib.loads(text))
    assert list(config.providers) == ["local", "ollama", "openai"]
    assert config.providers["local"].api_key_env == "LOCAL_API_KEY"
    assert [e.key for e in config.cascades["default"].entries] == [
        "local/qwen",
        "openai/gpt-4o-mini",
    ]
    assert [e.key for e in config.cascades["fast"].entries] == ["ollama/llama3"]
    assert config.default_cascade == "fast"
    assert any("Default cascade, used when `run` has no -C [default]" in ln for ln in io.lines)


def test_closed_input_ends_the_dialogue_instead_of_asking_forever():
    io = Scripted(["11", "", "x"])  # three invalid answers, then end of input
    with pytest.raises(EOFError):
        run_wizard(io)
    assert sum("Providers [1-10]" in line for line in io.lines) == 4


def test_hidden_keys_are_asked_per_provider_and_can_be_skipped():
    config = parse_config(
        {"providers": {"a": {"type": "openai"}, "o": {"type": "ollama"}, "b": {"type": "gemini"}}}
    )
    lookups = [lookup_for(config.providers[n]) for n in sorted(config.providers)]
    io = Scripted(["yes", "", "sk one", f"  {SECRET} "])
    assert ask_keys(io, lookups, "memory") == {"b": SECRET}
    assert "  the API key contains spaces or several lines; give exactly one key" in io.lines
    assert not any("API key for o" in line for line in io.lines)  # ollama needs none


def test_the_new_native_types_are_offered_with_the_settings_they_need():
    providers = [
        "azure bedrock 8 mistral openai_responses",
        "ftp://x",
        "https://contoso.openai.azure.com/",
        "mars",
        "",
        "n",
    ]
    cascades = [
        "",
        "azure:prod-4o",
        "bedrock:anthropic.claude-3-5-sonnet-20240620-v1:0",
        "",
        "",
        "",
    ]  # the last: the default cascade
    io = Scripted([*providers, *cascades])

    answers = run_wizard(io)

    config = parse_config(tomllib.loads(render_config(build_document(answers, "db", "f"), "t")))
    assert sorted(config.providers) == ["azure", "bedrock", "cohere", "mistral", "openai_responses"]
    assert config.providers["azure"].base_url == "https://contoso.openai.azure.com"
    assert config.providers["bedrock"].region == "us-east-1"  # the default, after a bad answer
    assert "  An AWS region looks like us-east-1 or eu-west-3." in io.lines
    assert config.providers["openai_responses"].api_key_service == "openai"  # the same key
    assert [e.model for e in config.cascades["default"].entries] == [
        "prod-4o",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    ]


def test_aws_credentials_are_asked_as_one_pair_and_checked():
    config = parse_config({"providers": {"br": {"type": "bedrock", "region": "eu-west-1"}}})
    lookups = [lookup_for(config.providers["br"])]
    io = Scripted(["y", "AKIDONLY", "AKID1:s3cr3t/key"])
    assert ask_keys(io, lookups, "memory") == {"br": "AKID1:s3cr3t/key"}
    assert any("AWS credentials ID:SECRET[:TOKEN] for br" in line for line in io.lines)
    assert any("ACCESS_KEY_ID:SECRET_ACCESS_KEY" in line for line in io.lines)  # the retry


# --- the real command in a pseudo-terminal --------------------------------------------------


@pytest.fixture
def paths(tmp_path):
    home = tmp_path / "home"
    return {
        "config": home / ".config" / "llm-cascade" / "config.toml",
        "data": home / ".local" / "share" / "llm-cascade",
        "keyring": Path(PlaintextKeyring().file_path),
    }


def spawn(*args: str) -> pexpect.spawn:
    env = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "TERM": "dumb",
        "COLUMNS": "200",
    }
    child = pexpect.spawn(
        cli_command()[0],
        list(args),
        env=env,
        encoding="utf-8",
        timeout=20,
        dimensions=(50, 200),
    )
    child.delaybeforesend = None  # answers wait in the terminal's buffer; no need to pause
    return child


def answer(child: pexpect.spawn, *steps: tuple[str, str | None]) -> None:
    """Wait for each text and type the reply; a reply of None only waits (e.g. for an error)."""
    for prompt, reply in steps:
        child.expect_exact(prompt)
        if reply is not None:
            child.sendline(reply)


def finish(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF)
    child.close()
    assert "Traceback" not in child.before
    return child.before


def assert_nothing_written(paths) -> None:
    assert not paths["config"].parent.exists()  # not even the folder
    assert not paths["data"].exists()
    assert not paths["keyring"].exists()


@needs_pty
def test_wizard_happy_path_writes_config_folders_and_key(paths):
    child = spawn("setup", "--interactive")
    answer(
        child,
        ("Providers [1-10]: ", "openai, ollama"),
        ("custom OpenAI-compatible provider", "y"),
        ("Name (letters, digits, - and _): ", "my-llm"),
        ("Base URL (e.g. https://api.example.com/v1): ", "http://127.0.0.1:8000/v1"),
        ("Env var for its key [MY_LLM_API_KEY]: ", ""),
        ("Add another custom provider? [y/N]: ", "N"),
        ("Cascade name [default]: ", ""),
        ("Entry 1 (provider:model, e.g. ollama:llama3): ", "ollama:llama3:8b"),
        ("Entry 2 (provider:model, Enter to finish): ", "openai:gpt-4o-mini"),
        ("Entry 3 (provider:model, Enter to finish): ", ""),
        ("Another cascade name (Enter to finish): ", ""),
        ("Default cascade, used when `run` has no -C", ""),
        ("Store API keys in the keyring now (file PlaintextKeyring)? [y/N]: ", "yes"),
        ("API key for my-llm (or set MY_LLM_API_KEY later): ", ""),
        ("API key for openai (or set OPENAI_API_KEY later): ", f"  {SECRET}  "),
    )
    out = finish(child)
    assert child.exitstatus == 0, out
    assert SECRET not in out  # hidden input, never echoed
    config = tomllib.loads(paths["config"].read_text())
    assert config["providers"]["my-llm"] == {
        "type": "openai",
        "api_key_service": "my-llm",
        "api_key_env": "MY_LLM_API_KEY",
        "base_url": "http://127.0.0.1:8000/v1",
    }
    assert config["cascades"]["default"]["entries"] == [
        {"provider": "ollama", "model": "llama3:8b"},
        {"provider": "openai", "model": "gpt-4o-mini"},
    ]
    assert stat.S_IMODE(paths["config"].stat().st_mode) == 0o600
    assert (paths["data"] / "db.sqlite").exists() and (paths["data"] / "failed_prompts").is_dir()
    assert PlaintextKeyring().get_password("llm-cascade", "openai") == SECRET
    assert PlaintextKeyring().get_password("llm-cascade", "my-llm") is None
    # It shows what it wrote and what to run next.
    assert '{ provider = "ollama", model = "llama3:8b" }' in out
    assert config["default_cascade"] == "default"  # Enter: the first cascade
    assert 'llm-cascade run "Hello"           the default cascade, default' in out
    assert "my-llm: run `llm-cascade key set my-llm` or set MY_LLM_API_KEY" in out
    assert run_cli("config", "check").returncode == 0


@needs_pty
def test_the_written_config_refers_only_to_files_installed_with_the_package(paths):
    """A `pip install` has no README, docs/ or config.example.toml: only llm_cascade/."""
    child = spawn("setup", "-i")
    answer(
        child,
        ("Providers [1-10]: ", "ollama"),
        ("custom OpenAI-compatible provider", "n"),
        ("Cascade name [default]: ", ""),
        ("Entry 1 (provider:model, e.g. ollama:llama3): ", "ollama:llama3"),
        ("Entry 2 (provider:model, Enter to finish): ", ""),
        ("Another cascade name (Enter to finish): ", ""),
        ("Default cascade, used when `run` has no -C", ""),
    )
    out = finish(child)
    assert child.exitstatus == 0, out
    comments = "\n".join(
        line for line in paths["config"].read_text().splitlines() if line.startswith("#")
    )
    named = re.findall(r"[\w./~-]+\.(?:toml|md|txt|json|cfg)\b", comments)
    assert named, comments  # it still says where the options are described
    package = Path(llm_cascade.__file__).parent
    for name in named:
        path = Path(name)
        assert path.is_absolute() and path.is_relative_to(package) and path.is_file(), name


@needs_pty
def test_wizard_explains_a_bad_answer_and_accepts_the_correction(paths):
    child = spawn("setup", "-i")
    answer(
        child,
        ("Providers [1-10]: ", "openai, gorq"),
        ("Unknown choice 'gorq'", None),
        ("Providers [1-10]: ", "5"),
        ("custom OpenAI-compatible provider", "sure"),
        ("Please answer y or n.", None),
        ("custom OpenAI-compatible provider", "YES"),
        ("Name (letters, digits, - and _): ", "my llm"),
        ("only letters, digits, '-' and '_'", None),
        ("Name (letters, digits, - and _): ", "openai"),
        ("There is already a provider called 'openai'.", None),
        ("Name (letters, digits, - and _): ", "local"),
        ("Base URL (e.g. https://api.example.com/v1): ", "localhost:8000"),
        ("must look like https://api.example.com/v1", None),
        ("Base URL (e.g. https://api.example.com/v1): ", "http://localhost:8000/v1"),
        ("Env var for its key [LOCAL_API_KEY]: ", "LOCAL KEY"),
        ("An env var name uses letters", None),
        ("Env var for its key [LOCAL_API_KEY]: ", "MY_LOCAL_KEY"),
        ("Add another custom provider? [y/N]: ", "n"),
        ("Cascade name [default]: ", "bad/name"),
        ("A cascade name uses only", None),
        ("Cascade name [default]: ", "main"),
        ("Entry 1 (provider:model, e.g. openai:gpt-4o-mini): ", ""),
        ("A cascade needs at least one entry.", None),
        ("Entry 1 (provider:model, e.g. openai:gpt-4o-mini): ", "openai"),
        ("Format: provider:model (e.g. openai:gpt-4o).", None),
        ("Entry 1 (provider:model, e.g. openai:gpt-4o-mini): ", "openai:"),
        ("The model after ':' is empty (e.g. openai:gpt-4o-mini).", None),
        ("Entry 1 (provider:model, e.g. openai:gpt-4o-mini): ", "olama:llama3"),
        ("Provider 'olama' is not configured (configured: local, openai).", None),
        ("Entry 1 (provider:model, e.g. openai:gpt-4o-mini): ", "local:qwen2.5"),
        ("Entry 2 (provider:model, Enter to finish): ", "local:qwen2.5"),
        ("local:qwen2.5 is already in this cascade.", None),
        ("Entry 2 (provider:model, Enter to finish): ", ""),
        ("Another cascade name (Enter to finish): ", "main"),
        ("There is already a cascade called 'main'.", None),
        ("Another cascade name (Enter to finish): ", ""),
        ("Default cascade, used when `run` has no -C [main]: ", "fast"),
        ("Choose one of the cascades: main.", None),
        ("Default cascade, used when `run` has no -C [main]: ", "main"),
        ("Store API keys in the keyring now", "n"),
    )
    out = finish(child)
    assert child.exitstatus == 0, out
    config = tomllib.loads(paths["config"].read_text())
    assert sorted(config["providers"]) == ["local", "openai"]
    assert config["providers"]["local"]["api_key_env"] == "MY_LOCAL_KEY"
    assert config["cascades"] == {"main": {"entries": [{"provider": "local", "model": "qwen2.5"}]}}
    assert not paths["keyring"].exists()


OPENAI_ONLY = [("Providers [1-10]: ", "openai"), ("custom OpenAI-compatible provider", "n")]
ONE_CASCADE = [
    ("Cascade name [default]: ", ""),
    ("Entry 1 (provider:model, e.g. openai:gpt-4o-mini): ", "openai:gpt-4o"),
    ("Entry 2 (provider:model, Enter to finish): ", ""),
    ("Another cascade name (Enter to finish): ", ""),
    ("Default cascade, used when `run` has no -C", ""),
    ("Store API keys in the keyring now", "y"),
]


@needs_pty
@pytest.mark.parametrize(
    ("steps", "waiting"),
    [
        ([], "Providers [1-10]: "),
        (OPENAI_ONLY, "Cascade name [default]: "),
        (OPENAI_ONLY + ONE_CASCADE, "API key for openai (or set OPENAI_API_KEY later): "),
    ],
    ids=["providers", "cascade-name", "hidden-key"],
)
def test_wizard_end_of_input_aborts_with_nothing_written(paths, steps, waiting):
    child = spawn("setup", "-i")
    answer(child, *steps)
    child.expect_exact(waiting)
    child.sendeof()
    out = finish(child)
    assert child.exitstatus == 1
    assert out.strip().splitlines()[-1] == (
        "Aborted: input ended before setup finished; nothing was written."
    )
    assert_nothing_written(paths)


@needs_pty
def test_wizard_ctrl_c_after_a_key_was_typed_writes_and_stores_nothing(paths):
    child = spawn("setup", "-i")
    answer(
        child,
        ("Providers [1-10]: ", "1 2 3 4 5"),
        ("custom OpenAI-compatible provider", ""),
        ("Cascade name [default]: ", ""),
        ("Entry 1 (provider:model, e.g. anthropic:claude-sonnet-4-20250514): ", "groq:llama"),
        ("Entry 2 (provider:model, Enter to finish): ", ""),
        ("Another cascade name (Enter to finish): ", ""),
        ("Default cascade, used when `run` has no -C", ""),
        ("Store API keys in the keyring now", "y"),
        ("API key for anthropic (or set ANTHROPIC_API_KEY later): ", SECRET),
    )
    child.expect_exact("API key for gemini (or set GOOGLE_API_KEY later): ")
    child.sendintr()
    out = finish(child)
    assert child.exitstatus == 130
    assert out.strip().splitlines()[-1] == "Aborted; nothing was written."
    assert SECRET not in out
    assert_nothing_written(paths)


@needs_pty
def test_plain_setup_on_a_terminal_offers_to_store_keys(paths):
    child = spawn("setup")
    answer(
        child,
        ("Store API keys in the keyring now (file PlaintextKeyring)? [y/N]: ", "y"),
        ("API key for anthropic (or set ANTHROPIC_API_KEY later): ", ""),
        ("API key for gemini (or set GOOGLE_API_KEY later): ", ""),
        ("API key for groq (or set GROQ_API_KEY later): ", "  gsk-0123456789abcdef  "),
        ("API key for openai (or set OPENAI_API_KEY later): ", ""),
    )
    out = finish(child)
    assert child.exitstatus == 0, out
    assert "API key for 'groq' stored in keyring." in out
    assert PlaintextKeyring().get_password("llm-cascade", "groq") == "gsk-0123456789abcdef"
    assert paths["config"].is_file()


def test_wizard_with_closed_stdin_exits_1_without_spinning(paths):
    done = run_cli("setup", "-i", stdin="", timeout=20)  # the original looped forever
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Aborted: input ended before setup finished; nothing was written."
    )
    assert done.stdout == ""
    assert_nothing_written(paths)
