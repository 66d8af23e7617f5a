"""The installed `llm-cascade` as a subprocess, as shells, pipelines and cron jobs use it."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llm_cascade._version import __version__
from llm_cascade.simulator import Fail, Reply, SimToolCall

from .support import SIM_KEY, RawServer, cli_command, entry, error_line, run_cli, write_config

PROVIDER_A = '[providers.a]\ntype = "openai"\n[cascades.x]\n'


def test_version_and_help():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"llm-cascade {__version__}"
    assert run_cli("--help").returncode == 0
    assert "--cascade" in run_cli("run", "--help").stdout


def test_pipeline_prompt_on_stdin_answer_alone_on_stdout(tmp_path, sim):
    sim.script("a", Reply("the answer"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = subprocess.run(
        f"echo hi | {' '.join(cli_command())} run -C x -c {cfg} | tr a-z A-Z",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "THE ANSWER\n"
    assert done.stderr == ""
    assert sim.requests[0].body["messages"] == [{"role": "user", "content": "hi\n"}]


def test_prompt_dash_reads_stdin_and_system_goes_first(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "-", "-s", "be terse", stdin="question")
    assert done.returncode == 0, done.stderr
    assert sim.requests[0].body["messages"] == [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "question"},
    ]


def test_failover_with_explain_on_stderr(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="30"))
    sim.script("b", Reply("from b"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--explain")
    assert done.returncode == 0
    assert done.stdout == "from b\n"
    assert "sim/a  tried: HTTP 429" in done.stderr and "rule rate_limited" in done.stderr
    assert "sim/b  answered in" in done.stderr
    assert "\x1b[" not in done.stderr  # no colour when not a TTY


def explain_line(stderr: str, entry: str) -> str:
    [line] = [ln for ln in stderr.splitlines() if ln.strip().startswith(entry + " ")]
    return line


@pytest.mark.parametrize(
    ("fail", "cooldown"),
    [
        (Fail(500), "cooldown 30 s"),  # the backoff set, not the seconds left when printed
        (Fail(429, headers={"retry-after-ms": "1500"}), "cooldown 1.5 s"),
        (Fail(401), "cooldown 3600 s"),
    ],
)
def test_explain_shows_the_cooldown_that_was_set(tmp_path, sim, fail, cooldown):
    sim.script("a", fail)
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--explain")
    assert done.returncode == 0, done.stderr
    assert f"-> {cooldown} until " in explain_line(done.stderr, "sim/a")
    assert explain_line(done.stderr, "sim/a").split(" -> ")[1].startswith(cooldown)


def test_explain_says_a_stop_rule_stopped_the_cascade(tmp_path, sim):
    sim.script("a", Fail(400, message="context too long"))
    rules = [{"name": "give_up", "status": 400, "action": "stop", "cooldown": "none"}]
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]}, extra={"rules": rules})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--explain")
    assert done.returncode == 1
    line = explain_line(done.stderr, "sim/a")
    assert "[rule give_up] -> no cooldown, cascade stopped" in line
    assert "next entry" not in line
    assert sim.count("b") == 0


def test_explain_shows_the_wait_of_wait_cooldown(tmp_path, sim):
    sim.script("a", Fail(503, retry_after="1"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "one").returncode == 1
    sim.script("a", Reply("after the wait"))
    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "two", "--explain", "--wait-cooldown", "5"
    )
    assert (done.returncode, done.stdout) == (0, "after the wait\n"), done.stderr
    lines = [ln.strip() for ln in done.stderr.splitlines()[1:]]
    assert lines[0].startswith("sim/a  waited ") and "(--wait-cooldown)" in lines[0]
    assert lines[1].startswith("sim/a  probe, answered in")


def test_explain_says_ignore_cooldown_overrode_a_cooldown(tmp_path, sim):
    sim.script("a", Fail(503, retry_after="600"), Reply("tried anyway"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "one").returncode == 1
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "two", "--explain", "--ignore-cooldown")
    assert (done.returncode, done.stdout) == (0, "tried anyway\n"), done.stderr
    line = explain_line(done.stderr, "sim/a")
    assert "answered in" in line and "was cooling down until" in line and "tried anyway" in line


def test_every_entry_skipped_names_them_without_an_empty_failed_line(tmp_path, sim):
    sim.script("a", Fail(503, retry_after="600"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "one").returncode == 1
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "two")
    assert done.returncode == 1
    assert "Skipped (on cooldown): sim/a" in done.stderr
    assert "Failed entries" not in done.stderr


def test_config_env_var_selects_the_config(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-p", "hi", env={"LLM_CASCADE_CONFIG": str(cfg)})
    assert done.returncode == 0, done.stderr


def test_cooldown_set_by_one_process_is_honoured_by_the_next(tmp_path, sim):
    sim.script("a", Fail(503, retry_after="120"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "one").returncode == 0
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "two", "--json")
    assert done.returncode == 0
    result = json.loads(done.stdout)
    assert result["entry"] == "sim/b"
    assert result["attempts"][0]["outcome"] == "skipped"
    assert sim.count("a") == 1


def test_json_output_carries_tool_calls_tokens_and_attempts(tmp_path, sim):
    sim.script(
        "a", Reply("", tool_calls=(SimToolCall("get_weather", {"city": "Oslo"}, id="call_1"),))
    )
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "weather?", "--json")
    data = json.loads(done.stdout)
    assert data["ok"] is True
    # One shape for arguments in every JSON output: the JSON text the model sent, as in
    # `response` (the original's shape), never an object in one place and a string in another.
    assert data["tool_calls"] == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
    ]
    assert data["response"]["content"][0]["arguments"] == data["tool_calls"][0]["arguments"]
    assert (data["input_tokens"], data["output_tokens"], data["stop_reason"]) == (
        11,
        7,
        "tool_calls",
    )
    assert data["provider"] == "sim" and data["model"] == "a"
    assert data["attempts"][0]["outcome"] == "ok"


def test_tool_calls_print_as_pretty_json_like_the_original(tmp_path, sim):
    sim.script(
        "a", Reply("", tool_calls=(SimToolCall("get_weather", {"city": "Oslo"}, id="call_1"),))
    )
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "weather?")
    assert json.loads(done.stdout) == {
        "content": [
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Oslo"}',
            }
        ],
        "input_tokens": 11,
        "output_tokens": 7,
        "model": "a",
        "stop_reason": "tool_calls",
    }
    assert done.stdout.startswith('{\n  "content": [')


def test_total_failure_exits_1_and_names_the_saved_file(tmp_path, sim):
    sim.script("a", Fail(500, "boom"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "do not lose me")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert (
        lines[0] == "All providers in cascade 'x' failed:"
        " Failed entries: sim/a: HTTP 500: server_error: boom"
    )
    assert lines[1].startswith("Failed prompt persisted to: /")
    saved = Path(lines[1].split(": ", 1)[1])
    assert (
        json.loads(saved.read_text())["conversation"]["messages"][0]["content"] == "do not lose me"
    )


def test_failure_json_carries_retry_after(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="90"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    run_cli("run", "-C", "x", "-c", str(cfg), "-p", "one")
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "two", "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["ok"] is False
    assert 85 < data["retry_after"] <= 90
    assert Path(data["saved_to"]).exists()
    assert "Every entry is cooling down" in done.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["run", "-C", "x", "-p", "a", "-f", "b.json"], None, "cannot be used together"),
        (
            ["run", "-C", "nope", "-p", "hi"],
            None,
            "Cascade 'nope' not found in configuration (defined: x)",
        ),
        (["run", "-C", "x", "-f", "missing.json"], None, "Error: reading file 'missing.json'"),
        (["run", "-C", "x", "-f", "-"], '{"messages": [{"role": "robot"}]}', "$.messages[0].role"),
        (["run", "-C", "x", "-f", "-"], "not json", "not valid JSON"),
        (["run", "-C", "x", "-p", "  "], None, "the prompt is empty"),
        (["run", "-C", "x", "-p", "hi", "--wait-cooldown=soon"], None, "--wait-cooldown"),
        (["run", "-p", "hi"], None, "no cascade: give -C NAME or set default_cascade"),
        (["run", "-C", "x", "-p", "hi", "--bogus"], None, "No such option"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, sim, args, stdin, message):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli(*args, "-c", str(cfg), stdin=stdin, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in error_line(done.stderr)
    assert sim.count() == 0
    assert not (tmp_path / "state").exists()  # nothing written before the input is known good


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[providers.a]\ntype = "gtp"\n', "providers.a.type: unknown 'gtp'"),
        ("[cascades.x]\nentries = []\n", "cascades.x.entries: is empty"),
        (
            PROVIDER_A + 'entries = [{provider = "b", model = "m"}]\n',
            "cascades.x.entries[0].provider: 'b' is not defined under [providers] (defined: a)",
        ),
        (
            PROVIDER_A + 'entries = [{provider = "a", model = ""}]\n',
            "cascades.x.entries[0].model: must be a non-empty model id",
        ),
        ("this is = not toml [", "Failed to parse config file"),
        ('[providers.a]\ntype = "openai"\ntimeout = -1\n', "providers.a.timeout: must be a number"),
    ],
)
def test_invalid_config_names_file_and_key_and_exits_2(tmp_path, toml, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2
    assert message in done.stderr
    assert str(cfg) in done.stderr
    assert error_line(done.stderr)


def test_missing_config_says_how_to_create_one(tmp_path):
    done = run_cli("run", "-C", "x", "-p", "hi")
    assert done.returncode == 2
    assert "llm-cascade setup" in done.stderr


def test_unknown_key_warns_with_a_suggestion(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    cfg.write_text(
        cfg.read_text().replace(
            'api_key_env = "SIM_KEY"', 'api_key_env = "SIM_KEY"\napi_key_evn = "X"'
        )
    )
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 0
    assert (
        "unknown key 'providers.sim.api_key_evn' ignored (did you mean 'api_key_env'?)"
        in done.stderr
    )
    assert done.stdout.startswith("Simulated answer")


def test_status_and_log_show_the_shared_state(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="300"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert [(s["entry"], s["state"], s["failures"]) for s in status] == [
        ("sim/a", "open", 1),
        ("sim/b", "closed", 0),
    ]
    log = json.loads(run_cli("log", "-c", str(cfg), "--json").stdout)
    assert [(r["provider_model"], r["http_status"], r["rule"]) for r in log] == [
        ("sim/a", 429, "rate_limited"),
        ("sim/b", 200, None),
    ]
    assert run_cli("reset", "sim/a", "-c", str(cfg)).returncode == 0
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert status[0]["state"] == "closed"


def test_verbose_logs_attempts_without_secrets(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-vv")
    assert "attempting sim/a" in done.stderr and "success from sim/a" in done.stderr
    assert SIM_KEY not in done.stderr + done.stdout


@pytest.mark.slow
def test_eight_processes_ten_runs_each_share_one_database(tmp_path, sim):
    sim.script("a", Reply("ok"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    script = " ".join(cli_command()) + f" run -C x -c {cfg} -p hi"
    loop = f"for i in $(seq 10); do {script} >/dev/null || echo FAIL $?; done"

    def worker(_: int) -> subprocess.CompletedProcess[str]:
        env_cmd = ["bash", "-c", loop]
        return subprocess.run(env_cmd, capture_output=True, text=True, timeout=300, check=False)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    for done in results:
        assert "FAIL" not in done.stdout, done.stderr
        assert "locked" not in done.stderr and "Traceback" not in done.stderr
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        outcomes = conn.execute(
            "SELECT outcome, error_message, count(*) FROM attempt_log GROUP BY 1, 2"
        ).fetchall()
    assert outcomes == [("ok", None, 80)], outcomes
    assert sim.count("a") == 80, [r.model for r in sim.requests]


def test_unwritable_failure_dir_falls_back_to_a_private_temp_dir(tmp_path, sim):
    sim.script("a", Fail(500))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cfg = write_config(
        tmp_path, sim, {"x": ["a"]}, extra={"failure_persistence": {"dir": str(blocker / "failed")}}
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "keep me somewhere", env={"TMPDIR": str(temp)}
    )
    assert done.returncode == 1
    assert "could not save the prompt in" in done.stderr
    saved = Path(done.stderr.split("Failed prompt persisted to: ")[1].strip())
    assert saved.parent.parent.parent == temp
    assert (
        json.loads(saved.read_text())["conversation"]["messages"][0]["content"]
        == "keep me somewhere"
    )


def test_a_fallback_dir_others_can_read_is_refused_and_the_error_says_so(tmp_path, sim):
    sim.script("a", Fail(500))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cfg = write_config(
        tmp_path, sim, {"x": ["a"]}, extra={"failure_persistence": {"dir": str(blocker / "f")}}
    )
    temp = tmp_path / "tmp"
    planted = temp / f"llm-cascade-{os.getuid()}"  # pre-created by someone, readable by all
    planted.mkdir(parents=True)
    planted.chmod(0o755)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", env={"TMPDIR": str(temp)})
    assert done.returncode == 1
    assert "Failed prompt could not be persisted:" in done.stderr
    assert "is not private to this user" in done.stderr
    assert "persisted to" not in done.stderr
    assert list(planted.rglob("*.json")) == []


def test_a_reader_that_goes_away_gets_no_error_spew(tmp_path, sim):
    sim.script("a", Reply("x" * 500_000))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = subprocess.run(
        [
            "bash",
            "-c",
            f"set -o pipefail; {' '.join(cli_command())} run -C x -c {cfg} -p hi | head -c 1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout == "x"
    assert done.stderr == ""
    assert done.returncode in (0, 141)


def test_log_prune_deletes_old_rows_only(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        conn.execute(
            "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
            " latency_ms) VALUES ('2020-01-01T00:00:00.000000+00:00', 'x', 'sim/a', 500, 5)"
        )
    done = run_cli("log", "--prune", "30", "-c", str(cfg))
    assert done.returncode == 0 and "Deleted 1 attempt row older than 30 days" in done.stderr
    rows = json.loads(run_cli("log", "--json", "-c", str(cfg)).stdout)
    assert [r["http_status"] for r in rows] == [200]


def test_a_terminal_sees_which_entry_is_being_asked(tmp_path, sim):
    import pexpect

    sim.script("a", Fail(503))
    sim.script("b", Reply("patience pays", hold=True))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    env = {**os.environ, "SIM_KEY": SIM_KEY, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(
        cli_command()[0],
        ["run", "-C", "x", "-c", str(cfg), "-p", "hi"],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(24, 120),
    )
    try:
        child.expect("asking sim/b")
        assert sim.count("a") == 1
        sim.release()
        child.expect("patience pays")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


DEEP_JSON = "[" * 100_000 + "]" * 100_000


def test_a_deeply_nested_conversation_file_is_a_usage_error(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    conv = tmp_path / "deep.json"
    conv.write_text('{"messages": ' + DEEP_JSON + "}")
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-f", str(conv))
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: parsing conversation JSON from '{conv}'")
    assert error_line(done.stderr)
    assert sim.count() == 0


def test_a_deeply_nested_config_is_a_config_error(tmp_path):
    cfg = tmp_path / "deep.toml"
    cfg.write_text("a = " + DEEP_JSON + "\n")
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: Failed to parse config file '{cfg}'")


def test_a_deeply_nested_saved_prompt_does_not_block_the_queue(tmp_path, sim):
    sim.script("a", Fail(500, "down"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "keep me").returncode == 1
    (tmp_path / "failed" / "x_20200101_000000_abcdef.json").write_text(DEEP_JSON)
    listed = run_cli("failed", "list", "--json", "-c", str(cfg))
    assert listed.returncode == 0, listed.stderr
    assert [e["cascade"] for e in json.loads(listed.stdout)] == ["x"]


def _everything_written(tmp_path: Path) -> str:
    """The database rows and saved prompts of a run, as one string to search for secrets."""
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        rows = conn.execute("SELECT * FROM attempt_log").fetchall()
    files = [p.read_text() for p in (tmp_path / "failed").glob("*.json")]
    return repr(rows) + "".join(files)


@pytest.mark.parametrize(
    "key",
    [
        "sk-first-half-0123\nsk-second-half-4567",  # a file of two lines in the variable
        "sk-first-half-0123\rsk-second-half-4567",
        "sk-first-half-0123\u201dsk-second-half-4567",  # a pasted typographic quote
    ],
)
def test_a_key_that_cannot_go_in_a_header_is_never_shown_or_sent(tmp_path, sim, key):
    sim.script("b", Reply("from the other provider"))
    providers = {
        "bad": {"type": "openai", "base_url": sim.base_url("openai"), "api_key_env": "BAD_KEY"}
    }
    cfg = write_config(tmp_path, sim, {"x": [entry("bad", "a"), "b"]}, providers=providers)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-v", env={"BAD_KEY": key})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from the other provider\n"
    assert "BAD_KEY" in done.stderr  # the warning names the variable to fix
    shown = done.stderr + done.stdout + _everything_written(tmp_path)
    assert "first-half" not in shown and "second-half" not in shown
    assert sim.count("a") == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_answer_that_cannot_be_written_keeps_the_prompt(tmp_path, sim):
    sim.script("a", Reply("lost in a full disk"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*cli_command(), "run", "-C", "x", "-c", str(cfg), "-p", "keep me"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SIM_KEY": SIM_KEY},
            check=False,
            timeout=60,
        )
    assert done.returncode == 1
    assert "internal error" not in done.stderr
    [saved] = (tmp_path / "failed").glob("*.json")
    assert f"the prompt and the answer are saved in {saved}" in done.stderr
    assert error_line(done.stderr)
    envelope = json.loads(saved.read_text())
    assert envelope["status"] == "undelivered"
    assert envelope["conversation"]["messages"] == [{"role": "user", "content": "keep me"}]
    assert envelope["answer"]["text"] == "lost in a full disk"
    assert "No space left on device" in envelope["errors"][-1]["detail"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["-p", "caf\udce9"], None, "-p/--prompt is not valid UTF-8"),  # argv byte 0xE9
        (["-p", "hi", "-s", "caf\udce9"], None, "-s/--system is not valid UTF-8"),
        ([], b"caf\xe9", "stdin is not valid UTF-8"),
        (["-p", "-"], b"caf\xe9", "stdin is not valid UTF-8"),
        (
            ["-f", "-"],
            b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}',
            "not valid Unicode",
        ),
    ],
)
def test_text_that_is_not_utf8_is_a_usage_error(tmp_path, sim, args, stdin, message):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = subprocess.run(
        [*cli_command(), "run", "-C", "x", "-c", str(cfg), *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "SIM_KEY": SIM_KEY, "LC_ALL": "C.UTF-8"},
        check=False,
        timeout=60,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert message in stderr and error_line(stderr)
    assert sim.count() == 0
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["-p", "hi", "--wait-cooldown"],
        ["--wait-cooldown", "-p", "hi"],
        ["--wait-cooldown", "--json", "-p", "hi"],
    ],
)
def test_wait_cooldown_without_a_value_waits_up_to_the_default(tmp_path, sim, args):
    sim.script("a", Fail(429, retry_after="600"), Reply("answered"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "first").returncode == 1
    done = run_cli("run", "-C", "x", "-c", str(cfg), *args)
    assert done.returncode == 1, done.stderr  # 600 s is beyond the default 300: fail fast
    assert "cooling down" in done.stderr
    assert sim.count("a") == 1


@pytest.mark.parametrize("command", [["run"], ["failed", "retry"]])
def test_help_shows_verbose_as_a_repeatable_flag_that_takes_no_value(command):
    done = run_cli(*command, "--help", env={"COLUMNS": "200"})
    line = next(line for line in done.stdout.splitlines() if "--verbose" in line)
    assert "-v" in line.replace("--verbose", "") and "repeat" in line, line
    assert not any(word in line for word in ("<int>", "INTEGER", "[default")), line


def test_repeated_verbose_flags_count(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--verbose", "--verbose")
    assert done.returncode == 0, done.stderr
    assert "HTTP Request: POST" in done.stderr


def test_a_wait_cooldown_too_short_says_how_long_is_needed(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="600"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "first").returncode == 1
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--wait-cooldown", "2")
    assert done.returncode == 1
    needed = re.search(
        r"--wait-cooldown 2 was too short: the first entry frees up in (\d+) s", done.stderr
    )
    assert needed and 590 <= int(needed[1]) <= 600, done.stderr
    assert "Use --wait-cooldown to wait" not in done.stderr
    deadline = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "hi", "--wait-cooldown=700", "--deadline", "1"
    )
    assert "after the cascade deadline" in deadline.stderr  # the wait was long enough
    plain = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert "Use --wait-cooldown to wait for it" in plain.stderr  # no wait asked: offer one
    assert sim.count("a") == 1


def test_only_https_needs_tls_certificates(tmp_path, sim):
    """A broken SSL_CERT_FILE cannot stop a run that only talks plain http (a local Ollama),
    and an https entry fails over naming the reason (the SSL context is made on first use)."""
    tls = {"type": "openai", "base_url": "https://127.0.0.1:9/v1", "api_key_env": "SIM_KEY"}
    cfg = write_config(
        tmp_path, sim, {"plain": ["b"], "mixed": [entry("tls", "a"), "b"]}, providers={"tls": tls}
    )
    env = {"SSL_CERT_FILE": str(tmp_path / "missing-ca.pem")}
    plain = run_cli("run", "-C", "plain", "-c", str(cfg), "-p", "hi", env=env)
    assert plain.returncode == 0, plain.stderr
    mixed = run_cli("run", "-C", "mixed", "-c", str(cfg), "-p", "hi", "--explain", env=env)
    assert mixed.returncode == 0, mixed.stderr
    assert "cannot set up TLS (certificates: No such file or directory)" in mixed.stderr
    assert sim.count("b") == 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_https_checks_the_certificate_against_ssl_cert_file(tmp_path, sim):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    where = ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=test"]
    ip = ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", *new_key, *where, *ip], check=True, capture_output=True
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    answer = {"choices": [{"message": {"content": "over tls"}}]}
    with RawServer(json.dumps(answer).encode(), tls=context) as server:
        tls = {"type": "openai", "base_url": server.url, "api_key_env": "SIM_KEY"}
        cfg = write_config(tmp_path, sim, {"x": [entry("tls", "m"), "b"]}, providers={"tls": tls})
        trusted = run_cli(
            "run", "-C", "x", "-c", str(cfg), "-p", "hi", env={"SSL_CERT_FILE": str(cert)}
        )
        unknown = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--explain")
    assert trusted.returncode == 0 and trusted.stdout == "over tls\n", trusted.stderr
    assert unknown.stdout.startswith("Simulated answer from b")  # not its certificate: next
    assert "CERTIFICATE_VERIFY_FAILED" in unknown.stderr
    assert server.count == 1


def test_proxies_from_the_environment_are_used_except_for_loopback_hosts(tmp_path, sim):
    answer = {"choices": [{"message": {"content": "via the proxy"}}]}
    with RawServer(json.dumps(answer).encode()) as proxy:  # answers whatever it is asked
        far = {"type": "openai", "base_url": "http://llm.invalid/v1", "api_key_env": "SIM_KEY"}
        cascades = {"far": [entry("far", "m")], "near": ["a"]}
        cfg = write_config(tmp_path, sim, cascades, providers={"far": far})
        env = {"HTTP_PROXY": proxy.url, "NO_PROXY": ""}
        through = run_cli("run", "-C", "far", "-c", str(cfg), "-p", "hi", env=env)
        direct = run_cli("run", "-C", "near", "-c", str(cfg), "-p", "hi", env=env)
    assert through.returncode == 0 and through.stdout == "via the proxy\n", through.stderr
    assert direct.returncode == 0, direct.stderr  # a local Ollama: a proxy cannot reach it
    assert (proxy.count, sim.count("a")) == (1, 1)


def test_the_cli_skips_interpreter_teardown_but_not_under_a_profiler(tmp_path, sim):
    """main() ends with os._exit once output is flushed; a profiler writes its data at exit."""
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    piped = subprocess.run(  # much output, flushed at the very end, to a reader that stops
        f"{' '.join(cli_command())} log -n 1000 -c {cfg} --json | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert piped.stdout == "[\n  {\n    ", piped.stdout
    assert piped.stderr == ""
    stats = tmp_path / "run.prof"
    profiled = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(stats), cli_command()[0], "--version"],
        capture_output=True,
        text=True,
    )
    assert profiled.returncode == 0 and profiled.stdout == f"llm-cascade {__version__}\n"
    assert stats.stat().st_size > 0


def test_double_verbose_also_logs_the_http_requests_without_secrets(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-vv")
    assert f"HTTP Request: POST {sim.base_url('openai')}/chat/completions" in done.stderr
    assert SIM_KEY not in done.stderr + done.stdout
    quiet = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-v")
    assert "HTTP Request" not in quiet.stderr


def test_a_key_pasted_as_api_key_env_is_a_config_error_that_does_not_show_it(tmp_path, sim):
    providers = {
        "sim": {
            "type": "openai",
            "base_url": sim.base_url("openai"),
            "api_key_env": "sk-proj-Abc123SecretValue987",  # the key itself, not a name
        }
    }
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, providers=providers)
    for args in (["run", "-C", "x", "-p", "hi"], ["key", "list"], ["config", "check"]):
        done = run_cli(*args, "-c", str(cfg))
        assert done.returncode == 2, done.stderr
        assert "providers.sim.api_key_env: must be the name of an environment variable" in (
            done.stderr
        )
        assert "Secret" not in done.stdout + done.stderr
    assert sim.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["log", "--prune", "1e12"], "--prune"),
        (["log", "--prune", "inf"], "--prune"),
        (["log", "--prune", "nan"], "--prune"),
        (["log", "-n", "1000000000000000000000"], "--limit"),
        (["run", "-C", "x", "-p", "hi", "--deadline", "nan"], "--deadline"),
        (["run", "-C", "x", "-p", "hi", "--wait-cooldown=nan"], "--wait-cooldown"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(tmp_path, sim, args, message):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")  # a database with a row
    done = run_cli(*args, "-c", str(cfg))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "internal error" not in done.stderr
    assert sim.count() == 1


def test_a_hanging_keyring_costs_one_time_limit_per_run_not_one_per_provider(tmp_path, sim):
    sim.script("a", Fail(500, "down"))
    providers = {
        name: {"type": "openai", "base_url": sim.base_url("openai"), "api_key_env": "SIM_KEY"}
        for name in ("p1", "p2", "p3")
    }
    entries = [entry("p1", "a"), entry("p2", "a"), entry("p3", "b")]
    cfg = write_config(tmp_path, sim, {"x": entries}, providers=providers)
    env = {
        "PYTHON_KEYRING_BACKEND": "tests.keyring_backends.HangingKeyring",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "LLM_CASCADE_KEYRING_TIMEOUT": "1",
    }
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Simulated answer from b")
    assert done.stderr.count("no answer within 1 s") == 1  # asked once, then env vars only
