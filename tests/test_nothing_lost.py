"""A broken or locked database, a full disk, a reader that goes away, a kill at the worst
moment: the answer still comes when it can, and the prompt is never lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from llm_cascade.failures import FailureStore
from llm_cascade.simulator import Fail, Reply

from .support import SIM_KEY, cli_command, run_cli, saved_envelopes, write_config


def saved_prompts(tmp_path: Path) -> list[dict[str, object]]:
    folder = tmp_path / "failed"
    return saved_envelopes(folder)


def start_cli(*args: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SIM_KEY": SIM_KEY}
    return subprocess.Popen([*cli_command(), *args], env=env, **popen)  # type: ignore[call-overload]


# --- a database that cannot be used -----------------------------------------------------------


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(5000))


def _truncated(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    conn.commit()
    conn.close()
    with open(db, "r+b") as f:
        f.truncate(3000)


def _directory(db: Path) -> None:
    db.mkdir()


def _parent_is_a_file(db: Path) -> None:
    db.parent.rmdir()
    db.parent.write_text("not a folder")


BROKEN = {
    "garbage": (_garbage, "file is not a database"),
    "truncated": (_truncated, "malformed"),
    "a directory": (_directory, "unable to open"),
    "its folder is a file": (_parent_is_a_file, "Not a directory"),
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_an_unusable_database_costs_a_warning_not_the_answer(tmp_path, sim, how):
    breaks, reason = BROKEN[how]
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    db = tmp_path / "state" / "db.sqlite"
    db.parent.mkdir()
    breaks(db)
    sim.script("a", Fail(500))
    sim.script("b", Reply("answered anyway"))

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")

    assert (done.returncode, done.stdout) == (0, "answered anyway\n")
    [warning] = done.stderr.splitlines()
    assert warning.startswith(f"llm-cascade: warning: cannot use the database '{db}'")
    assert reason in warning and "without shared cooldowns" in warning
    assert saved_prompts(tmp_path) == []  # delivered: nothing left behind


@pytest.mark.parametrize("how", ["garbage", "a directory"])
def test_with_an_unusable_database_a_failed_prompt_keeps_every_attempt(tmp_path, sim, how):
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    db = tmp_path / "state" / "db.sqlite"
    db.parent.mkdir()
    BROKEN[how][0](db)
    sim.script("a", Fail(503))
    sim.script("b", Fail(500))

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "keep me")

    assert done.returncode == 1
    [envelope] = saved_prompts(tmp_path)
    assert envelope["conversation"]["messages"] == [{"role": "user", "content": "keep me"}]
    assert [(e["entry"], e["status"]) for e in envelope["errors"]] == [
        ("sim/a", 503),
        ("sim/b", 500),
    ]
    assert "Failed prompt persisted to" in done.stderr


def test_a_full_disk_answers_and_says_honestly_the_prompt_could_not_be_kept(tmp_path, sim):
    """`ulimit -f 0`: no file can grow, not even in the temp dir; stdout is a pipe."""
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    sim.script("a", Reply("still answered"))
    shell = f"ulimit -f 0; exec {' '.join(cli_command())} run -C x -c {cfg} -p hi"
    done = subprocess.run(
        ["bash", "-c", shell],
        capture_output=True,
        text=True,
        env={**os.environ, "SIM_KEY": SIM_KEY},
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "still answered\n")
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert "could not save the prompt before sending it" in done.stderr

    sim.script("a", Fail(500))
    done = subprocess.run(
        ["bash", "-c", shell],
        capture_output=True,
        text=True,
        env={**os.environ, "SIM_KEY": SIM_KEY},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "internal error" not in done.stderr
    assert "Failed prompt could not be persisted" in done.stderr  # never a false claim


def test_a_locked_database_does_not_stall_the_run_past_its_deadline(tmp_path, sim):
    """Another process holds the write lock: the first blocked write gives up within the
    deadline, the run goes on without state, and the next entry answers."""
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "create the db").returncode == 0
    sim.script("a", Fail(500))
    sim.script("b", Reply("answered past the lock"))
    holder = sqlite3.connect(tmp_path / "state" / "db.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # 40 s without the bound (two 30 s waits, minus the first): the timeout catches it.
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--deadline", "5", timeout=20)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (done.returncode, done.stdout) == (0, "answered past the lock\n")
    [warning] = done.stderr.splitlines()
    assert "database is locked" in warning and "without shared cooldowns" in warning
    assert sim.count("b") == 1


# --- delivery ---------------------------------------------------------------------------------


BIG = "x" * 1_000_000  # far more than a pipe holds: the writer blocks until it is read


def test_kill_9_while_the_answer_is_being_written_keeps_the_prompt(tmp_path, sim):
    sim.script("a", Reply(BIG))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    proc = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "big one", stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.read(10) == b"x" * 10  # the answer arrived and is being written
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()

    [listed] = json.loads(run_cli("failed", "list", "--json", "-c", str(cfg)).stdout)
    assert listed["status"] == "interrupted"
    [envelope] = saved_prompts(tmp_path)
    assert envelope["conversation"]["messages"][0]["content"] == "big one"


def test_a_reader_that_goes_away_mid_answer_leaves_the_prompt_and_the_answer(tmp_path, sim):
    sim.script("a", Reply(BIG))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    proc = start_cli(
        "run",
        "-C",
        "x",
        "-c",
        str(cfg),
        "-p",
        "big one",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b"x" * 10
    proc.stdout.close()  # the reader dies: the writer gets EPIPE
    proc.stdout = None
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 141
    assert stderr == b""  # like SIGPIPE: quiet
    [envelope] = saved_prompts(tmp_path)
    assert envelope["status"] == "undelivered"
    assert envelope["answer"]["text"] == BIG  # what was paid for is kept
    assert "reader closed stdout" in envelope["errors"][-1]["detail"]


def test_head_1_of_a_large_answer_exits_141(tmp_path, sim):
    sim.script("a", Reply("first line\n" + "more\n" * 200_000))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    command = " ".join(cli_command())
    done = subprocess.run(
        ["bash", "-c", f"{command} run -C x -c {cfg} -p hi | head -1; echo ${{PIPESTATUS[0]}} >&2"],
        capture_output=True,
        text=True,
        env={**os.environ, "SIM_KEY": SIM_KEY},
        timeout=60,
        check=False,
    )
    assert done.stdout == "first line\n"
    assert done.stderr.strip() == "141"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["log", "--json"],  # empty, the tables print nothing on stdout: their JSON does
        ["failed", "list", "--json"],
        ["config", "path"],
        ["key", "list"],
        ["--version"],
    ],
)
def test_any_command_whose_stdout_is_full_exits_1_with_one_line(tmp_path, sim, args):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*cli_command(), *args, *(["-c", str(cfg)] if args[0] != "--version" else [])],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SIM_KEY": SIM_KEY},
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["Error: cannot write to stdout: No space left on device"]


# --- one saved prompt per question, however often it is asked --------------------------------


def test_a_cron_job_firing_during_an_outage_keeps_one_saved_prompt(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="600"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    for _ in range(5):  # the first run fails, the next four find the entry cooling down
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "daily report")
        assert done.returncode == 1
    other = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "another question")
    assert other.returncode == 1
    assert sim.count("a") == 1

    prompts = saved_prompts(tmp_path)
    assert sorted(p["conversation"]["messages"][0]["content"] for p in prompts) == [
        "another question",
        "daily report",
    ]
    [report] = [p for p in prompts if p["conversation"]["messages"][0]["content"] == "daily report"]
    assert report["repeats"] == 4
    assert report["status"] == "failed"
    assert [e["outcome"] for e in report["errors"]] == ["skipped"]  # what the last run saw

    sim.script("a", Reply("here it is"))
    run_cli("reset", "--all", "-c", str(cfg))
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "daily report")
    assert (done.returncode, done.stdout) == (0, "here it is\n")
    assert [p["conversation"]["messages"][0]["content"] for p in saved_prompts(tmp_path)] == [
        "another question"
    ]  # the question was answered: its saved copy went with it


def test_the_same_prompt_in_two_running_processes_gets_two_files(tmp_path, sim):
    """A prompt another live run holds is never taken over: each run owns its own file."""
    from llm_cascade.simulator import Hang

    sim.script("a", Hang(seconds=60))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    first = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "same", stderr=subprocess.PIPE)
    try:
        assert sim.wait_for(1, "a")
        second = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "same", stderr=subprocess.PIPE)
        try:
            assert sim.wait_for(2, "a")
            listed = FailureStore(tmp_path / "failed").list()
            assert [p.status for p in listed] == ["running", "running"]
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert {p["status"] for p in saved_prompts(tmp_path)} == {"interrupted"}


def test_a_saved_prompt_taken_over_by_a_new_run_stays_locked_while_it_runs(tmp_path, sim):
    """The run that takes over a waiting copy rewrites it: the new file must carry the lock,
    or `failed retry` would send the question a second time while the run is still asking."""
    sim.script("a", Fail(500, "down"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "daily report").returncode == 1
    assert run_cli("reset", "--all", "-c", str(cfg)).returncode == 0
    sim.script("a", Reply("late answer", hold=True), Reply("sent twice"))
    running = start_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "daily report", stdout=subprocess.PIPE
    )
    try:
        assert sim.wait_for(2, "a")  # it took the saved copy over and is waiting for its answer
        listed = json.loads(run_cli("failed", "list", "--json", "-c", str(cfg)).stdout)
        retry = run_cli("failed", "retry", "--all", "-c", str(cfg))
    finally:
        sim.release()
        out, _ = running.communicate(timeout=30)
    assert [p["status"] for p in listed] == ["running"]
    assert retry.stdout == "" and sim.count("a") == 2  # never sent while its run holds it
    assert out == b"late answer\n"
    assert saved_prompts(tmp_path) == []


def test_an_answer_dropped_without_a_verdict_lets_its_prompt_go(tmp_path, sim):
    """`Cascade.answer()` whose Answer is never marked delivered or undelivered: the prompt
    stays saved, but once the Answer is gone no lock is held for the rest of the process,
    so `failed retry` can answer it (no file descriptor is leaked per dropped answer)."""
    import asyncio
    import gc

    from llm_cascade.cascade import Cascade
    from llm_cascade.config import load_config
    from llm_cascade.types import Conversation

    cfg = write_config(tmp_path, sim, {"x": ["a"]})

    async def ask_and_drop() -> None:
        async with Cascade(load_config(cfg)) as engine:
            await engine.answer("x", Conversation.single_user_prompt("dropped"))

    asyncio.run(ask_and_drop())  # this process lives on
    gc.collect()  # as it happens, sooner or later, in any process that goes on working
    listed = json.loads(run_cli("failed", "list", "--json", "-c", str(cfg)).stdout)
    assert [p["status"] for p in listed] == ["interrupted"]
    done = run_cli("failed", "retry", "--all", "-c", str(cfg))
    assert done.stdout.startswith("Simulated answer from a: dropped")
    assert saved_prompts(tmp_path) == []


def test_an_answer_said_undelivered_twice_is_kept_once(tmp_path, sim):
    """Two copies of one question would be sent twice by `failed retry`."""
    import asyncio

    from llm_cascade.cascade import Cascade
    from llm_cascade.config import load_config
    from llm_cascade.types import Conversation

    cfg = write_config(tmp_path, sim, {"x": ["a"]})

    async def ask() -> tuple[str | None, str | None]:
        async with Cascade(load_config(cfg)) as engine:
            answer = await engine.answer("x", Conversation.single_user_prompt("keep me"))
            first = answer.undelivered("the disk is full")
            again = answer.undelivered("still full")
            return first.path, again.path

    first, again = asyncio.run(ask())
    [envelope] = saved_prompts(tmp_path)
    assert first == again and envelope["status"] == "undelivered"
    assert envelope["answer"]["text"].startswith("Simulated answer from a: keep me")
