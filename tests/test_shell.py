"""The everyday command, short and unsurprising: a default cascade, a positional prompt, stdin
with a prompt, ad-hoc `-m` entries, templates, one error style, empty tables, one JSON format.

Every form runs the installed CLI as a subprocess against the simulator.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess

import pytest

from llm_cascade.adhoc import adhoc_config
from llm_cascade.config import load_config, parse_config
from llm_cascade.errors import ConfigError
from llm_cascade.keys import lookup_for
from llm_cascade.simulator import Fail, Reply, SimToolCall

from .support import cli_command, entry, error_line, run_cli, write_config

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
TEMPLATES = {
    "sum": {
        "system": "Be terse.",
        "prompt": "Summarise in $words words:\n\n$input",
        "cascade": "t",
        "temperature": 0.2,
        "max_tokens": 50,
    },
    "joke": {"prompt": "Tell a joke about $topic."},
    "plain": {"system": "You answer in French."},
}


def config(tmp_path, sim, **extra):
    """Cascades x (model a), y (model b) and t (model t), with `extra` at the top."""
    return write_config(tmp_path, sim, {"x": ["a"], "y": ["b"], "t": ["t"]}, extra=extra)


def messages(sim, i=-1):
    return sim.requests[i].body["messages"]


def nothing_sent_or_saved(tmp_path, sim):
    assert sim.count() == 0
    assert not (tmp_path / "failed").exists() and not (tmp_path / "state").exists()


# --- 1. the default cascade ------------------------------------------------------------------


def test_run_without_c_uses_the_default_cascade_and_c_still_picks_another(tmp_path, sim):
    cfg = config(tmp_path, sim, default_cascade="y")
    done = run_cli("run", "-c", str(cfg), "-p", "hi")
    assert (done.returncode, done.stdout) == (0, "Simulated answer from b: hi\n"), done.stderr
    assert sim.requests[-1].model == "b"
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi").returncode == 0
    assert sim.requests[-1].model == "a"


def test_without_a_default_cascade_run_says_how_to_set_one(tmp_path, sim):
    cfg = config(tmp_path, sim)
    done = run_cli("run", "-c", str(cfg), "hi")
    assert done.returncode == 2
    assert error_line(done.stderr) == (
        f'Error: no cascade: give -C NAME or set default_cascade = "NAME" at the top of'
        f" '{cfg}' (defined: t, x, y)"
    )
    nothing_sent_or_saved(tmp_path, sim)


def test_a_default_cascade_that_is_not_defined_is_a_config_error(tmp_path, sim):
    cfg = config(tmp_path, sim, default_cascade="nope")
    for args in (["run", "hi"], ["status"]):
        done = run_cli(*args, "-c", str(cfg))
        assert done.returncode == 2
        assert error_line(done.stderr) == (
            f"Error: '{cfg}': default_cascade: 'nope' is not defined under [cascades]"
            " (defined: t, x, y)"
        )
    nothing_sent_or_saved(tmp_path, sim)


# --- 2. the positional prompt ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["Summarise this"],
        ["-p", "Summarise this"],
        ["--wait-cooldown", "Summarise this"],  # a bare --wait-cooldown takes only a number
    ],
)
def test_a_positional_prompt_is_the_same_as_p(tmp_path, sim, args):
    cfg = config(tmp_path, sim, default_cascade="x")
    done = run_cli("run", "-c", str(cfg), *args)
    assert done.returncode == 0, done.stderr
    assert messages(sim) == [{"role": "user", "content": "Summarise this"}]


def test_a_prompt_that_starts_with_a_dash_follows_a_double_dash(tmp_path, sim):
    cfg = config(tmp_path, sim)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "--", "-v means verbose?")
    assert done.returncode == 0, done.stderr
    assert messages(sim) == [{"role": "user", "content": "-v means verbose?"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hi", "-p", "ho"], "give the prompt once: as an argument or with -p/--prompt, not both"),
        (["hi", "-f", "conv.json"], "a prompt (-p or positional) and -f/--file cannot be used"),
        (["-m", "sim/a", "-C", "x", "hi"], "-m/--model and -C/--cascade cannot be used together"),
        (["-m", "nowhere/a", "hi"], "'nowhere' is neither a provider of the config"),
        (["-m", "sim", "hi"], "-m: 'sim': expected PROVIDER/MODEL"),
        (["-m", "sim/", "hi"], "expected PROVIDER/MODEL"),
        (["-t", "nope", "hi"], "unknown template 'nope'"),
        (["-t", "sum", "hi"], "template 'sum' needs $words: add --var words=VALUE"),
        (["-t", "sum", "--var", "words=3", "--var", "tone=dry", "hi"], "has no variable $tone"),
        (["-t", "joke", "--var", "topic", "hi"], "--var 'topic': expected NAME=VALUE"),
        (["-t", "plain"], "template 'plain' needs $input"),
        (["-t", "plain", "-f", "conv.json"], "-t/--template takes a prompt"),
        (["--var", "words=3", "hi"], "--var needs -t/--template"),
    ],
)
def test_bad_combinations_are_one_line_and_exit_2_with_nothing_sent_or_saved(
    tmp_path, sim, args, message
):
    cfg = config(tmp_path, sim, default_cascade="x", templates=TEMPLATES)
    (tmp_path / "conv.json").write_text('{"messages": [{"role": "user", "content": "hi"}]}')
    done = run_cli("run", "-c", str(cfg), *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in error_line(done.stderr)
    assert done.stdout == ""
    nothing_sent_or_saved(tmp_path, sim)


# --- 3. stdin and a prompt together ----------------------------------------------------------


@pytest.mark.parametrize("prompt", [["Summarise"], ["-p", "Summarise"]])
def test_piped_text_follows_the_prompt_in_one_message(tmp_path, sim, prompt):
    cfg = config(tmp_path, sim, default_cascade="x")
    done = run_cli("run", "-c", str(cfg), *prompt, stdin="line one\nline two\n")
    assert done.returncode == 0, done.stderr
    assert messages(sim) == [
        {"role": "user", "content": "Summarise\n\nline one\nline two\n"},
    ]


def test_a_pipeline_keeps_the_document_it_pipes(tmp_path, sim):
    """The issue's own line: `cat doc | llm-cascade run -C x -p "Summarise"`."""
    cfg = config(tmp_path, sim)
    (tmp_path / "doc").write_text("the document\n")
    done = subprocess.run(
        f"cat doc | {cli_command()[0]} run -C x -c {cfg} -p Summarise",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert messages(sim)[0]["content"] == "Summarise\n\nthe document\n"


def test_an_empty_stdin_leaves_the_prompt_alone_and_dash_still_reads_stdin(tmp_path, sim):
    cfg = config(tmp_path, sim, default_cascade="x")
    assert run_cli("run", "-c", str(cfg), "hi").returncode == 0  # stdin is /dev/null
    assert messages(sim) == [{"role": "user", "content": "hi"}]
    assert run_cli("run", "-c", str(cfg), "-p", "-", stdin="from stdin").returncode == 0
    assert messages(sim) == [{"role": "user", "content": "from stdin"}]
    assert run_cli("run", "-c", str(cfg), "-", stdin="from stdin too").returncode == 0
    assert messages(sim) == [{"role": "user", "content": "from stdin too"}]


def test_f_dash_is_still_a_conversation_on_stdin(tmp_path, sim):
    cfg = config(tmp_path, sim, default_cascade="x")
    conversation = {"messages": [{"role": "user", "content": "a conversation"}]}
    done = run_cli("run", "-c", str(cfg), "-f", "-", stdin=json.dumps(conversation))
    assert done.returncode == 0, done.stderr
    assert messages(sim) == conversation["messages"]


def test_run_help_documents_the_stdin_rule():
    text = " ".join(run_cli("run", "--help").stdout.split())
    assert "with a prompt, the run sends one message: the prompt, a blank line, then" in text
    assert "`-f -` reads a JSON conversation from stdin" in text


# --- 4. ad-hoc entries -----------------------------------------------------------------------


def test_m_runs_just_those_entries_in_order(tmp_path, sim):
    sim.script("b", Fail(500))
    cfg = config(tmp_path, sim, default_cascade="x")
    done = run_cli("run", "-c", str(cfg), "-m", "sim/b", "-m", "sim/c", "hi", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["cascade"], result["entry"]) == ("adhoc", "sim/c")
    assert [r.model for r in sim.requests] == ["b", "c"]
    # Cooldowns and the log treat them like any entry: shared with cascade y, which has sim/b.
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    [view] = [v for v in status if v["entry"] == "sim/b"]
    assert view["state"] == "open" and RFC3339.fullmatch(view["cooldown_until"])
    log = json.loads(run_cli("log", "-c", str(cfg), "--json").stdout)
    assert [(r["cascade_name"], r["provider_model"], r["outcome"]) for r in log] == [
        ("adhoc", "sim/b", "failed"),
        ("adhoc", "sim/c", "ok"),
    ]
    again = run_cli("run", "-C", "y", "-c", str(cfg), "hi", "--explain")
    assert "sim/b  skipped: cooling down until" in again.stderr


def test_failed_retry_makes_the_m_cascades_again_from_the_saved_prompts(tmp_path, sim):
    sim.script("b", Fail(500), Reply("b at last"))
    sim.script("c", Fail(500), Reply("c at last"))
    cfg = config(tmp_path, sim)
    for model in ("b", "c"):  # two different -m lists, both saved as cascade "adhoc"
        assert run_cli("run", "-c", str(cfg), "-m", f"sim/{model}", f"ask {model}").returncode == 1
    saved = json.loads(run_cli("failed", "list", "-c", str(cfg), "--json").stdout)
    assert sorted(s["cascade"] for s in saved) == ["adhoc", "adhoc"]
    assert run_cli("reset", "--all", "-c", str(cfg)).returncode == 0

    done = run_cli("failed", "retry", "--all", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")) == ["", "b at last", "c at last"]
    # each through its own entries, not through the first list or a config cascade
    asked = [(r.model, r.body["messages"][-1]["content"]) for r in sim.requests[2:]]
    assert sorted(asked) == [("b", "ask b"), ("c", "ask c")]
    assert json.loads(run_cli("failed", "list", "-c", str(cfg), "--json").stdout) == []


def test_an_ad_hoc_entry_outside_the_config_cools_down_and_resets_like_any(tmp_path, sim):
    sim.script("z", Fail(500))
    cfg = config(tmp_path, sim)
    run_cli("run", "-c", str(cfg), "-m", "sim/z", "-m", "sim/c", "hi")
    again = run_cli("run", "-c", str(cfg), "-m", "sim/z", "-m", "sim/c", "hi", "--explain")
    assert again.returncode == 0 and "sim/z  skipped: cooling down until" in again.stderr
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert [(v["entry"], v["state"], v["in_config"]) for v in status][-1] == (
        "sim/z",
        "open",
        False,
    )
    done = run_cli("reset", "sim/z", "-c", str(cfg))  # known to the database
    assert (done.returncode, done.stderr) == (0, "Reset 1 entry.\n")


def test_m_takes_provider_types_with_their_defaults(tmp_path, sim):
    """`openai/...` with no [providers.openai]: the OpenAI API and its key variable; with no
    key set, nothing is sent to it and the next entry answers."""
    cfg = config(tmp_path, sim)
    done = run_cli("run", "-c", str(cfg), "-m", "openai/gpt-4o-mini", "-m", "sim/a", "hi", "-v")
    assert done.returncode == 0, done.stderr
    assert "API key not configured for provider 'openai'" in done.stderr
    assert "OPENAI_API_KEY" in done.stderr
    assert [r.model for r in sim.requests] == ["a"]


def test_the_issue_example_runs_with_an_ollama_type_and_no_config_file(tmp_path, sim):
    """`-m ollama/llama3 -m openai/gpt-4o-mini "hi"` with nothing configured at all: the
    local Ollama (not running here) is tried and cools down, OpenAI has no key; the prompt is
    saved in the platform data folder."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 11434)) == 0:
            pytest.skip("something listens on Ollama's port here")
    done = run_cli("run", "-m", "ollama/llama3", "-m", "openai/gpt-4o-mini", "hi", "--explain")
    assert done.returncode == 1, done.stderr
    assert "ollama/llama3       tried: Request failed: " in done.stderr
    assert "openai/gpt-4o-mini  not tried: API key not configured" in done.stderr
    data = tmp_path / "home" / ".local" / "share" / "llm-cascade"
    [saved] = (data / "failed_prompts").glob("adhoc_*.json")
    assert json.loads(saved.read_text())["conversation"]["messages"][0]["content"] == "hi"


def test_the_spec_resolution_is_one_library_function(tmp_path, sim):
    """`run -m` and `LLMCascade([...])` resolve their entries through `adhoc_config`."""
    cfg = load_config(config(tmp_path, sim))
    specs = ["sim/a", "anthropic/claude-sonnet-4", ("gemini", "gemini-2.0-flash", {"retries": 2})]
    made = adhoc_config(specs, cfg, name="adhoc", label="-m")
    cascade = made.cascades["adhoc"]
    assert [e.key for e in cascade.entries] == [
        "sim/a",
        "anthropic/claude-sonnet-4",
        "gemini/gemini-2.0-flash",
    ]
    assert cascade.entries[0].options == cfg.providers["sim"].options  # the config's own
    assert cascade.entries[2].options.retries == 2
    assert sorted(set(made.providers) - set(cfg.providers)) == ["anthropic", "gemini"]
    anthropic = made.providers["anthropic"]
    assert anthropic.effective_base_url == "https://api.anthropic.com"
    lookup = lookup_for(anthropic)
    assert (lookup.keyring_user, lookup.env_var) == ("anthropic", "ANTHROPIC_API_KEY")
    assert "prefill" in anthropic.options.supports  # the type's capabilities
    bare = adhoc_config(["openai/gpt-4o"], name="adhoc")
    assert bare.providers["openai"].effective_base_url == "https://api.openai.com/v1"
    with pytest.raises(ConfigError, match="'nope' is neither a provider of the config"):
        adhoc_config(["nope/x"], cfg, label="-m")
    with pytest.raises(ConfigError, match="given twice"):
        adhoc_config(["sim/a", "sim/a"], cfg, label="-m")
    with pytest.raises(ConfigError, match=r"retries: must be an integer from 0 to 10"):
        adhoc_config([("sim", "a", {"retries": 99})], cfg, label="-m")


# --- 5. templates ----------------------------------------------------------------------------


def test_a_template_fills_its_prompt_and_sets_cascade_and_options(tmp_path, sim):
    cfg = config(tmp_path, sim, default_cascade="x", templates=TEMPLATES)
    done = run_cli("run", "-c", str(cfg), "-t", "sum", "--var", "words=5", stdin="the doc\n")
    assert done.returncode == 0, done.stderr
    body = sim.requests[-1].body
    assert sim.requests[-1].model == "t"  # the template's cascade
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Summarise in 5 words:\n\nthe doc\n"},
    ]
    assert (body["temperature"], body["max_tokens"]) == (0.2, 50)


def test_a_template_without_input_takes_the_prompt_after_its_own(tmp_path, sim):
    cfg = config(tmp_path, sim, default_cascade="x", templates=TEMPLATES)
    assert run_cli("run", "-c", str(cfg), "-t", "joke", "--var", "topic=cats").returncode == 0
    assert messages(sim) == [{"role": "user", "content": "Tell a joke about cats."}]
    done = run_cli("run", "-c", str(cfg), "-t", "joke", "--var", "topic=$x", "short one")
    assert done.returncode == 0, done.stderr
    assert messages(sim) == [
        {"role": "user", "content": "Tell a joke about $x.\n\nshort one"},  # no second pass
    ]
    assert sim.requests[-1].model == "a"  # no template cascade: the default
    run_cli("run", "-c", str(cfg), "-t", "plain", "-C", "y", "-s", "Be brief.", "bonjour")
    assert messages(sim) == [
        {"role": "system", "content": "Be brief."},  # -s wins over the template's system
        {"role": "user", "content": "bonjour"},
    ]
    assert sim.requests[-1].model == "b"


def test_templates_list_and_show(tmp_path, sim):
    cfg = config(tmp_path, sim, templates=TEMPLATES)
    listed = run_cli("templates", "list", "-c", str(cfg))
    assert listed.returncode == 0 and listed.stderr == ""
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["TEMPLATE", "CASCADE", "VARIABLES", "PROMPT"]
    assert lines[2].split()[:4] == ["joke", "-", "$topic", "Tell"]
    assert lines[4].split()[:4] == ["sum", "t", "$words", "$input"]
    data = json.loads(run_cli("templates", "list", "-c", str(cfg), "--json").stdout)
    assert data[2] == {"name": "sum", **TEMPLATES["sum"], "variables": ["words", "input"]}
    shown = run_cli("templates", "show", "sum", "-c", str(cfg))
    assert shown.returncode == 0
    assert "  Summarise in $words words:" in shown.stdout and "temperature: 0.2" in shown.stdout
    missing = run_cli("templates", "show", "nope", "-c", str(cfg))
    assert missing.returncode == 2
    assert "unknown template 'nope'" in error_line(missing.stderr)
    empty = run_cli("templates", "list", "-c", str(config(tmp_path, sim)))
    assert (empty.returncode, empty.stdout) == (0, "")
    assert empty.stderr.startswith("no templates yet: add a [templates.NAME] table to")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"prompt": "costs $5"}, "templates.t.prompt: has a '$' that starts no variable name"),
        ({"prompt": 3}, "templates.t.prompt: must be a string"),
        ({"cascade": "nope"}, "templates.t.cascade: 'nope' is not defined under [cascades]"),
        ({"temperature": -1}, "templates.t.temperature: must be a number of 0 or more"),
    ],
)
def test_a_bad_template_is_a_config_error_naming_the_key(table, message):
    raw = {
        "providers": {"p": {"type": "ollama"}},
        "cascades": {"c": {"entries": [entry("p", "m")]}},
    }
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({**raw, "templates": {"t": table}})


# --- 7. one error style ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "first", "command"),
    [
        (["run", "-C"], "Error: Option '-C' requires an argument.", "run"),
        (["run", "--bogus", "x"], "Error: No such option: --bogus", "run"),
        (["nosuch"], "Error: No such command 'nosuch'.", ""),
        (["log", "-n", "x"], "Error: Invalid value for '--limit' / '-n'", "log"),
        (["status", "--bogus"], "Error: No such option: --bogus", "status"),
        (["failed", "retry"], "Error: name the prompts to retry", "failed retry"),
        (["failed", "show"], "Error: Missing argument 'ID'.", "failed show"),
        (["key", "get"], "Error: Missing argument 'PROVIDER'.", "key get"),
        (["templates", "show"], "Error: Missing argument 'NAME'.", "templates show"),
        (["config", "check", "--bogus"], "Error: No such option: --bogus", "config check"),
        (["reset"], "Error: name the entries to reset", "reset"),
        (["setup", "-x"], "Error: No such option: -x", "setup"),
    ],
)
def test_every_usage_error_is_one_error_line_then_the_help_hint(args, first, command):
    done = run_cli(*args)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(first), done.stderr
    assert lines[1] == f"Try '{' '.join(['llm-cascade', *command.split()])} -h' for help."
    assert done.stdout == ""


def test_a_usage_error_is_exactly_two_plain_lines():
    done = run_cli("run", "-C")
    assert done.stderr == (
        "Error: Option '-C' requires an argument.\nTry 'llm-cascade run -h' for help.\n"
    )


def test_no_box_even_on_a_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(cli_command()[0], ["run", "-C"], encoding="utf-8", timeout=20)
    out = child.read()
    child.close()
    assert child.exitstatus == 2
    assert out.replace("\r\n", "\n") == (
        "Error: Option '-C' requires an argument.\nTry 'llm-cascade run -h' for help.\n"
    )


def test_a_bare_group_still_shows_its_help():
    done = run_cli("templates")
    assert done.returncode == 2
    assert "list" in done.stdout and "show" in done.stdout


# --- 7. empty tables and unknown entries -----------------------------------------------------


def test_empty_tables_say_so_on_stderr_and_print_nothing(tmp_path, sim):
    cfg = config(tmp_path, sim)
    for args, said in (
        (["log"], "no attempts yet\n"),
        (["log", "-C", "x"], "no attempts yet for cascade 'x'\n"),
        (["failed", "list"], f"no saved prompts in {tmp_path / 'failed'}\n"),
    ):
        done = run_cli(*args, "-c", str(cfg))
        assert (done.returncode, done.stdout, done.stderr) == (0, "", said), args
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[database]\npath = "{tmp_path}/db.sqlite"\n')
    for args, said in (
        (["status"], "no entries yet: the config defines no cascades\n"),
        (["key", "list"], f"no providers in {bare}: add a [providers.NAME] table\n"),
    ):
        done = run_cli(*args, "-c", str(bare))
        assert (done.returncode, done.stdout) == (0, ""), args
        assert done.stderr.startswith(said), done.stderr
    assert json.loads(run_cli("log", "-c", str(cfg), "--json").stdout) == []


def test_reset_of_an_unknown_entry_says_so_and_exits_2(tmp_path, sim):
    sim.script("a", Fail(500))
    cfg = config(tmp_path, sim)
    assert (
        run_cli("reset", "sim/a", "-c", str(cfg)).stderr == "Nothing to reset: no database yet.\n"
    )
    run_cli("run", "-C", "x", "-c", str(cfg), "hi")
    typo = run_cli("reset", "sim/aa", "-c", str(cfg))
    assert typo.returncode == 2
    assert error_line(typo.stderr) == (
        "Error: unknown entry 'sim/aa': no cascade of the config has it and the database knows"
        " no cooldown for it (see `llm-cascade status`); did you mean 'sim/a'?"
    )
    assert (
        "is not an entry: name it as provider/model"
        in run_cli("reset", "sim", "-c", str(cfg)).stderr
    )
    assert json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)[0]["state"] == "open"
    done = run_cli("reset", "sim/a", "-c", str(cfg))
    assert (done.returncode, done.stderr) == (0, "Reset 1 entry.\n")


# --- 7. one timestamp format in every JSON output --------------------------------------------


def test_every_json_output_writes_instants_in_rfc_3339(tmp_path, sim):
    sim.script("a", Fail(500))
    sim.script("b", Fail(503, retry_after="60"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    ran = json.loads(run_cli("run", "-C", "x", "-c", str(cfg), "hi", "--json").stdout)
    assert [RFC3339.fullmatch(a["cooldown_until"]) is not None for a in ran["attempts"]] == [
        True,
        True,
    ]
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert all(RFC3339.fullmatch(v["cooldown_until"]) for v in status)
    checked = json.loads(run_cli("config", "check", "-c", str(cfg), "--json").stdout)
    assert all(RFC3339.fullmatch(e["cooldown_until"]) for e in checked["cascades"][0]["entries"])
    [saved_file] = (tmp_path / "failed").glob("*.json")
    saved = json.loads(saved_file.read_text())
    assert RFC3339.fullmatch(saved["timestamp"])
    assert all(
        RFC3339.fullmatch(e["cooldown_until"]) for e in saved["errors"] if "cooldown_until" in e
    )
    listed = json.loads(run_cli("failed", "list", "-c", str(cfg), "--json").stdout)
    assert RFC3339.fullmatch(listed[0]["saved_at"])
    shown = json.loads(run_cli("failed", "show", listed[0]["id"], "-c", str(cfg), "--json").stdout)
    assert shown["errors"] == saved["errors"]
    # Rows and files written by the original tool (or this one before) come out the same way.
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        conn.execute(
            "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
            " latency_ms) VALUES ('2026-04-14T12:15:02.123456789Z', 'x', 'sim/a', 200, 5)"
        )
    log = json.loads(run_cli("log", "-c", str(cfg), "--json").stdout)
    assert all(RFC3339.fullmatch(r["timestamp"]) for r in log)
    assert log[-1]["timestamp"] == "2026-04-14T12:15:02.123456+00:00"
    assert all(r["cooldown_until"] is None or RFC3339.fullmatch(r["cooldown_until"]) for r in log)
    old = dict(saved, timestamp="2026-04-14T12:15:02Z")
    old["errors"] = [dict(e, cooldown_until=1776168902.5) for e in saved["errors"]]
    saved_file.write_text(json.dumps(old))
    listed = json.loads(run_cli("failed", "list", "-c", str(cfg), "--json").stdout)
    assert listed[0]["saved_at"] == "2026-04-14T12:15:02.000000+00:00"
    assert listed[0]["errors"][0]["cooldown_until"] == "2026-04-14T12:15:02.500000+00:00"


def test_tool_call_arguments_have_one_shape_in_every_json_output(tmp_path, sim):
    call = SimToolCall("get_weather", {"city": "Oslo"}, id="call_1")
    sim.script("a", Reply("", tool_calls=(call,)))
    cfg = config(tmp_path, sim)
    plain = json.loads(run_cli("run", "-C", "x", "-c", str(cfg), "hi").stdout)
    whole = json.loads(run_cli("run", "-C", "x", "-c", str(cfg), "hi", "--json").stdout)
    streamed = run_cli("run", "-C", "x", "-c", str(cfg), "hi", "--json", "--stream")
    done = json.loads(streamed.stdout.splitlines()[-1])
    text = '{"city": "Oslo"}'
    assert plain["content"][0]["arguments"] == text
    assert whole["tool_calls"][0]["arguments"] == text
    assert whole["response"]["content"][0]["arguments"] == text
    assert json.loads(done["tool_calls"][0]["arguments"]) == {"city": "Oslo"}
    assert done["tool_calls"][0]["arguments"] == done["response"]["content"][0]["arguments"]


def test_completion_code_is_not_imported_by_a_plain_command(tmp_path, sim):
    cfg = config(tmp_path, sim)
    for args in (["--help"], ["run", "-C", "x", "-c", str(cfg), "hi"]):
        done = run_cli(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
        loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert "llm_cascade.cli._common" in loaded  # not vacuous
        assert "llm_cascade.cli.completion" not in loaded, args


def test_saved_prompts_of_ad_hoc_runs_can_be_retried_through_a_cascade_given_with_c(tmp_path, sim):
    sim.script("b", Fail(500))
    cfg = config(tmp_path, sim)
    assert run_cli("run", "-c", str(cfg), "-m", "sim/b", "keep me").returncode == 1
    [saved] = (tmp_path / "failed").glob("adhoc_*.json")
    retry = run_cli("failed", "retry", saved.stem, "-c", str(cfg))  # its own entries: still down
    assert retry.returncode == 1 and "still failing" in retry.stderr
    done = run_cli("failed", "retry", saved.stem, "-C", "x", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert messages(sim)[0]["content"] == "keep me"
