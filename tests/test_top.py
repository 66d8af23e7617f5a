"""`top`: one frame for scripts and cron mail, and the live view in a real pseudo-terminal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pexpect

from llm_cascade.simulator import Fail, Reply, Simulator
from llm_cascade.store import AttemptRecord, Store

from .support import SIM_KEY, cli_command, run_cli, write_config


def outage(tmp_path: Path, sim: Simulator) -> Path:
    sim.script("primary", Fail(429, message="slow down", retry_after="600"))
    sim.script("backup", Reply("fine"))
    return write_config(tmp_path, sim, {"main": ["primary", "backup"]})


def test_once_prints_one_frame_with_state_countdown_rates_and_last_error(tmp_path, sim):
    cfg = outage(tmp_path, sim)
    assert run_cli("run", "-C", "main", "-c", str(cfg), "-p", "hi").returncode == 0
    (tmp_path / "failed").mkdir(exist_ok=True)
    (tmp_path / "failed" / "main_20260101_000000_abcdef.json").write_text("{}")
    done = run_cli("top", "-c", str(cfg), "--once", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    primary = next(line for line in done.stdout.splitlines() if "sim/primary" in line)
    cells = [c.strip() for c in primary.strip("│ ").split("│")]
    assert cells[:2] == ["sim/primary", "open"]
    assert cells[2].startswith(("9:", "10:00"))  # the countdown of a 600 s cooldown
    assert cells[3:5] == ["1", "0.0%"]
    assert cells[6] == "-"  # no probe in flight
    assert cells[7].endswith("HTTP 429: requests: slow down")
    backup = next(line for line in done.stdout.splitlines() if "sim/backup" in line)
    assert "100.0%" in backup and "closed" in backup
    assert "pending failed prompts: 1" in done.stdout
    assert "q quits" not in done.stdout


def test_once_without_a_database_shows_the_configured_entries(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    done = run_cli("top", "-c", str(cfg), "--once")
    assert done.returncode == 0, done.stderr
    assert "sim/primary" in done.stdout and "(none yet)" in done.stdout
    assert not (tmp_path / "state" / "db.sqlite").exists()


def test_without_a_terminal_top_refuses_with_a_hint(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    done = run_cli("top", "-c", str(cfg))  # stdin and stdout are pipes
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: top needs a terminal; use `llm-cascade status` or `llm-cascade stats`"
        " (or `llm-cascade top --once` for one frame)",
        "Try 'llm-cascade top -h' for help.",
    ]


def spawn_top(cfg: Path) -> pexpect.spawn:
    command, *args = cli_command()
    return pexpect.spawn(
        command,
        [*args, "top", "-c", str(cfg)],
        env={**os.environ, "SIM_KEY": SIM_KEY, "TERM": "xterm"},
        dimensions=(30, 200),
        timeout=20,
        encoding="utf-8",
    )


def test_top_draws_refreshes_after_a_state_change_and_quits_on_q(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    db = tmp_path / "state" / "db.sqlite"
    Store(db).close()
    child = spawn_top(cfg)
    try:
        child.expect("sim/primary")
        child.expect("closed")
        with Store(db) as store:  # another process's run hits a rate limit
            record = AttemptRecord("main", "sim/primary", 429, 5, outcome="failed", rule="x")
            store.record_failure(record, time.time(), lambda level: 600.0)
        child.expect("open")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_ctrl_c_quits_top_cleanly(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    child = spawn_top(cfg)
    try:
        child.expect("sim/primary")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")


def test_once_shows_a_probe_in_flight(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    with Store(tmp_path / "state" / "db.sqlite") as store:
        now = time.time()
        record = AttemptRecord("main", "sim/primary", 500, 5, outcome="failed", rule="x")
        store.record_failure(record, now - 10, lambda level: 1.0)  # cooled down, half-open
        assert store.claim_probe("sim/primary", "another-run", now, 120.0)
    done = run_cli("top", "-c", str(cfg), "--once", env={"COLUMNS": "200"})
    primary = next(line for line in done.stdout.splitlines() if "sim/primary" in line)
    cells = [c.strip() for c in primary.strip("│ ").split("│")]
    assert cells[1] == "probing"
    assert cells[6] in ("2:00 left", "1:59 left")
