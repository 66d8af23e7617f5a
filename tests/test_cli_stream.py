"""`run --stream` as a user runs it: the installed CLI in a pipe and on a terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from llm_cascade.simulator import Reply, Simulator, Stream

from .support import (
    SIM_KEY,
    cli_command,
    entry,
    run_cli,
    run_in_terminal,
    saved_envelopes,
    write_config,
)


def config(tmp_path: Path, sim: Simulator, *models: tuple[str, str]) -> Path:
    providers = {
        "claude": {
            "type": "anthropic",
            "base_url": sim.base_url("anthropic"),
            "api_key_env": "SIM_KEY",
        }
    }
    entries = [entry(provider, model) for provider, model in models]
    return write_config(tmp_path, sim, {"x": entries}, providers=providers)


def saved(tmp_path: Path) -> list[dict[str, Any]]:
    return saved_envelopes(tmp_path / "failed")


WORDS = Reply("the quick brown fox", stream=Stream(pieces=("the ", "quick ", "brown ", "fox")))


def test_a_pipe_gets_the_whole_answer_without_streaming(tmp_path, sim):
    sim.script("a", WORDS)
    done = run_cli("run", "-C", "x", "-c", str(config(tmp_path, sim, ("sim", "a"))), "-p", "hi")
    assert (done.returncode, done.stdout) == (0, "the quick brown fox\n")
    assert "stream" not in sim.requests[0].body


def test_stream_into_a_pipe_writes_the_text_as_it_comes(tmp_path, sim):
    sim.script("a", WORDS)
    cfg = config(tmp_path, sim, ("sim", "a"))
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream")
    assert (done.returncode, done.stdout, done.stderr) == (0, "the quick brown fox\n", "")
    assert sim.requests[0].body["stream"] is True
    assert saved(tmp_path) == []


def test_a_terminal_streams_by_default(tmp_path, sim):
    import pexpect

    sim.script("a", Reply("word by word", stream=Stream(pieces=("word ", "by ", "word"))))
    cfg = config(tmp_path, sim, ("sim", "a"))
    child = pexpect.spawn(
        cli_command()[0],
        ["run", "-C", "x", "-c", str(cfg), "-p", "hi"],
        env={**os.environ, "SIM_KEY": SIM_KEY},
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect("word by word")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert sim.requests[0].body["stream"] is True


def test_json_stream_prints_one_object_per_event_the_last_as_json_prints_it(tmp_path, sim):
    sim.script("a", WORDS)
    cfg = config(tmp_path, sim, ("sim", "a"))
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0] == {"event": "entry_started", "entry": "sim/a", "try": 1}
    assert [e["text"] for e in events if e["event"] == "text"] == [
        "the ",
        "quick ",
        "brown ",
        "fox",
    ]
    last = events[-1]
    whole = json.loads(run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--json").stdout)
    assert last["event"] == "done" and last["text"] == "the quick brown fox"
    assert set(last) - {"event"} == set(whole)


BROKEN = Reply("alpha beta gamma", stream=Stream(drop_after=2))


def test_a_restart_cannot_take_back_text_already_in_a_pipe(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("b", Reply("fresh"))
    cfg = config(tmp_path, sim, ("sim", "a"), ("sim", "b"))
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream")
    assert done.returncode == 1
    assert done.stdout == "alpha beta"
    assert "sim/b: passed over: it cannot continue the partial answer" in done.stderr
    assert "--no-stream" in done.stderr
    assert sim.count("b") == 0  # passed over: starting over would repeat what is in the pipe
    [envelope] = saved(tmp_path)
    assert envelope["status"] == "failed"  # a finished run, not an interrupted one
    assert envelope["errors"][0]["partial"] == "alpha beta"


def test_an_entry_that_takes_a_prefill_continues_the_text_in_the_pipe(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("c", Reply(" gamma"))
    cfg = config(tmp_path, sim, ("sim", "a"), ("claude", "c"))
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream", "--explain")
    assert (done.returncode, done.stdout) == (0, "alpha beta gamma\n"), done.stderr
    assert (
        "sim/a broke mid-stream" in done.stderr and "claude/c continues the answer" in done.stderr
    )
    assert "broke mid-stream after 2 chunks" in done.stderr  # --explain
    assert "first token after" in done.stderr


def test_json_stream_announces_a_restart_and_answers(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("b", Reply("fresh"))
    cfg = config(tmp_path, sim, ("sim", "a"), ("sim", "b"))
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    [reset] = [e for e in events if e["event"] == "reset"]
    assert reset["entry"] == "sim/a"
    assert events[-1]["text"] == "fresh"


def test_ctrl_c_during_a_stream_exits_130_with_the_prompt_and_what_came(tmp_path, sim):
    sim.script("a", Reply("one two three", stream=Stream(stall_after=1)))
    cfg = config(tmp_path, sim, ("sim", "a"))
    proc = subprocess.Popen(
        [*cli_command(), "run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SIM_KEY": SIM_KEY},
    )
    assert proc.stdout is not None
    assert proc.stdout.read(3) == b"one"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    [envelope] = saved(tmp_path)
    assert envelope["status"] == "interrupted"
    assert envelope["errors"][-1]["outcome"] == "cancelled"
    assert envelope["errors"][-1]["partial"] == "one"
    assert sim.wait_for_disconnects(1, "a", timeout=10)


def test_json_stream_that_fails_ends_with_one_failure_line(tmp_path, sim):
    """NDJSON to the end: a reader parsing line by line gets the failure as its last event."""
    from llm_cascade.simulator import Fail

    sim.script("a", Reply("alpha beta gamma", stream=Stream(drop_after=2)))
    sim.script("b", Fail(500))
    cfg = config(tmp_path, sim, ("sim", "a"), ("sim", "b"))
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream", "--json")
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stdout.splitlines()]
    last = events[-1]
    assert (last["event"], last["ok"]) == ("failed", False)
    [envelope] = saved(tmp_path)
    assert last["saved_to"] and envelope["errors"][0]["partial"] == "alpha beta"
    assert [e["event"] for e in events[:-1]].count("text") == 2


def test_a_stdout_that_cannot_encode_the_answer_fails_in_one_line(tmp_path, sim):
    sim.script("a", Reply("price: 5 €", stream=Stream(pieces=("price: ", "5 €"))))
    cfg = config(tmp_path, sim, ("sim", "a"))
    done = run_cli(
        "run",
        "-C",
        "x",
        "-c",
        str(cfg),
        "-p",
        "hi",
        "--stream",
        env={"PYTHONIOENCODING": "latin-1"},
    )
    assert (done.returncode, done.stdout) == (1, "price: ")
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert "cannot write to stdout" in error and "internal error" not in error
    [envelope] = saved(tmp_path)
    assert envelope["errors"][-1]["partial"] == "price: 5 €"  # what had arrived is kept


def test_sigterm_ends_a_stream_whose_reader_stopped_reading(tmp_path, sim):
    """The answer fills the pipe and the write blocks: SIGTERM must still end the run (143),
    with the prompt and what had arrived saved, not wait for a reader that never reads."""
    big = "x" * 300_000  # far more than a pipe holds
    sim.script("a", Reply(big + " end", stream=Stream(pieces=(big, " end"))))
    cfg = config(tmp_path, sim, ("sim", "a"))
    proc = subprocess.Popen(
        [*cli_command(), "run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SIM_KEY": SIM_KEY},
    )
    try:
        assert proc.stdout is not None and proc.stdout.read(1) == b"x"  # it is writing
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)  # stdout is not read: the write stays blocked
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert code == 143, err
    assert b"Traceback" not in err
    [envelope] = saved(tmp_path)
    assert envelope["status"] == "interrupted"
    assert envelope["errors"][-1]["partial"].startswith("xxx")


def test_a_terminal_keeps_a_crlf_split_between_pieces_and_escapes_a_lone_cr(tmp_path, sim):
    pieces = ("one\r", "\ntwo\r", "three\x1b[2J")
    sim.script("a", Reply("".join(pieces), stream=Stream(pieces=pieces)))
    cfg = config(tmp_path, sim, ("sim", "a"))
    status, seen = run_in_terminal("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert status == 0
    assert "one\r\ntwo\\x0dthree\\x1b[2J" in seen, repr(seen)
