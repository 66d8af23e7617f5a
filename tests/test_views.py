"""`stats` and `metrics` as an operator runs them: the installed CLI over databases filled by
real runs against the simulator, rows in the original tool's shape, and bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_cascade.simulator import Fail, Reply, Simulator

from .support import entry, error_line, run_cli, write_config
from .test_store import ORIGINAL_DDL


def outage_config(tmp_path: Path, sim: Simulator) -> Path:
    """`main`: a primary that is rate-limited, a backup that answers."""
    sim.script("primary", Fail(429, retry_after="30"))
    sim.script("backup", Reply("fine", input_tokens=11, output_tokens=7))
    return write_config(tmp_path, sim, {"main": ["primary", "backup"], "spare": ["backup"]})


def stats_json(cfg: Path, *args: str) -> dict[str, Any]:
    done = run_cli("stats", "-c", str(cfg), "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def by_entry(report: dict[str, Any], cascade: str) -> dict[str, dict[str, Any]]:
    (found,) = [c for c in report["cascades"] if c["cascade"] == cascade]
    return {e["entry"]: e for e in found["entries"]}


def test_stats_counts_real_runs_per_entry_and_cascade(tmp_path, sim):
    cfg = outage_config(tmp_path, sim)
    assert run_cli("run", "-C", "main", "-c", str(cfg), "-p", "one").returncode == 0
    assert run_cli("run", "-C", "main", "-c", str(cfg), "-p", "two").returncode == 0  # skips
    assert run_cli("run", "-C", "spare", "-c", str(cfg), "-p", "three").returncode == 0
    report = stats_json(cfg)
    main = by_entry(report, "main")
    assert main["sim/primary"] | {"latency_ms": None} == main["sim/primary"] | {
        "attempts": 1,
        "successes": 0,
        "success_rate": 0.0,
        "skipped": 1,
        "failovers": 1,
        "cooldowns": 1,
        "state": "open",
        "latency_ms": None,
    }
    backup = main["sim/backup"]
    assert (backup["attempts"], backup["successes"], backup["success_rate"]) == (2, 2, 1.0)
    assert (backup["input_tokens"], backup["output_tokens"]) == (22, 14)
    assert backup["latency_ms"]["p50"] is not None and backup["ttft_ms"] is None
    (summary,) = [c for c in report["cascades"] if c["cascade"] == "main"]
    assert (summary["runs"], summary["answered"], summary["answered_by_first_entry"]) == (2, 2, 0)
    spare = next(c for c in report["cascades"] if c["cascade"] == "spare")
    assert (spare["runs"], spare["answered_by_first_entry"], spare["failed"]) == (1, 1, 0)
    only = stats_json(cfg, "-C", "spare")
    assert [c["cascade"] for c in only["cascades"]] == ["spare"]


def test_stats_table_shows_each_cascade_with_its_summary_row(tmp_path, sim):
    cfg = outage_config(tmp_path, sim)
    assert run_cli("run", "-C", "main", "-c", str(cfg), "-p", "one").returncode == 0
    done = run_cli("stats", "-c", str(cfg), "--since", "7d")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Since ") and "Cascade main" in lines
    primary = next(line for line in lines if line.startswith("sim/primary"))
    assert primary.split()[:5] == ["sim/primary", "open", "1", "0.0%", "1"]
    assert "runs 1: answered by the first entry 0 (0.0%), failed 0 (0.0%)" in lines
    assert "TTFT" not in done.stdout  # no streamed answers: no column for them


def test_stats_counts_rows_the_original_tool_wrote(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    db = tmp_path / "state" / "db.sqlite"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.executescript(ORIGINAL_DDL)
    rows = [(500, 900, None, None), (200, 95, 12, 40), (200, 105, 10, 30), (None, 3, None, None)]
    conn.executemany(
        "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
        " latency_ms, input_tokens, output_tokens)"
        " VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'main', 'sim/primary', ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()
    primary = by_entry(stats_json(cfg), "main")["sim/primary"]
    assert (primary["attempts"], primary["successes"], primary["success_rate"]) == (4, 2, 0.5)
    assert (primary["input_tokens"], primary["output_tokens"]) == (22, 70)
    assert 95 <= primary["latency_ms"]["p50"] <= 105  # of the two answers


def test_stats_without_a_database_is_an_empty_view(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary", "backup"]})
    done = run_cli("stats", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "sim/primary  closed  0" in done.stdout
    assert "no database yet" in done.stderr
    assert not (tmp_path / "state" / "db.sqlite").exists()  # looking created nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: expected a span like 24h"),
        (["--since", "99999999d"], "--since: expected a span like 24h"),
        (["--since", "2026-13-45"], "--since: expected a span like 24h"),
        (["-C", "nope"], "Cascade 'nope' not found in configuration (defined: main)"),
    ],
)
def test_stats_bad_input_is_one_line_and_exit_2(tmp_path, sim, args, message):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    done = run_cli("stats", "-c", str(cfg), *args)
    assert done.returncode == 2
    assert message in done.stderr and error_line(done.stderr)


def test_stats_on_a_locked_database_is_one_line_and_exit_1(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    db = tmp_path / "state" / "db.sqlite"
    db.parent.mkdir()
    holder = sqlite3.connect(db, isolation_level=None)  # the original's rollback journal
    holder.executescript(ORIGINAL_DDL)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than we wait
    try:
        done = run_cli("stats", "-c", str(cfg))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 1
    assert "database is locked" in done.stderr
    assert error_line(done.stderr)


# --- metrics -----------------------------------------------------------------------------


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(family: Any, name: str, **labels: str) -> float:
    found = [
        s.value
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, family.samples)
    return float(found[0])


def test_metrics_parse_as_prometheus_text_with_the_genai_names(tmp_path, sim):
    cfg = outage_config(tmp_path, sim)
    assert run_cli("run", "-C", "main", "-c", str(cfg), "-p", "one").returncode == 0
    assert run_cli("run", "-C", "main", "-c", str(cfg), "-p", "two").returncode == 0
    done = run_cli("metrics", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    found = families(done.stdout)
    attempts = found["llm_cascade_attempts"]
    assert attempts.type == "counter"
    primary = {"cascade": "main", "provider": "sim", "model": "primary"}
    assert sample(attempts, "llm_cascade_attempts_total", **primary, outcome="failed") == 1
    assert sample(attempts, "llm_cascade_attempts_total", **primary, outcome="skipped") == 1
    assert sample(found["llm_cascade_cooldowns"], "llm_cascade_cooldowns_total", **primary) == 1
    assert sample(found["llm_cascade_failovers"], "llm_cascade_failovers_total", **primary) == 1
    backup = {"cascade": "main", "provider": "sim", "model": "backup"}
    tokens = found["llm_cascade_tokens"]
    assert sample(tokens, "llm_cascade_tokens_total", **backup, type="output") == 14
    assert sample(found["llm_cascade_runs"], "llm_cascade_runs_total", cascade="main") == 2

    duration = found["gen_ai_client_operation_duration_seconds"]
    assert duration.type == "histogram"
    genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai"}
    name = "gen_ai_client_operation_duration_seconds"
    ok = {**backup, **genai, "gen_ai_request_model": "backup"}
    assert sample(duration, f"{name}_count", **ok) == 2
    assert sample(duration, f"{name}_bucket", **ok, le="+Inf") == 2
    failed = sample(duration, f"{name}_count", **primary, error_type="rate_limited")
    assert failed == 1
    usage = found["gen_ai_client_token_usage"]
    assert sample(usage, "gen_ai_client_token_usage_sum", **backup, gen_ai_token_type="input") == 22
    inputs = {**backup, "gen_ai_token_type": "input"}
    assert sample(usage, "gen_ai_client_token_usage_bucket", **inputs, le="16") == 2

    breaker = found["llm_cascade_breaker_state"]
    assert sample(breaker, "llm_cascade_breaker_state", provider="sim", model="primary") == 2
    assert sample(breaker, "llm_cascade_breaker_state", provider="sim", model="backup") == 0
    remaining = found["llm_cascade_cooldown_remaining_seconds"]
    left = sample(remaining, "llm_cascade_cooldown_remaining_seconds", model="primary")
    assert 0 < left <= 30
    pending = found["llm_cascade_failed_prompts_pending"]
    assert sample(pending, "llm_cascade_failed_prompts_pending") == 0


def test_metrics_count_a_failed_prompt_waiting_and_a_half_open_breaker(tmp_path, sim):
    sim.script("only", Fail(500))
    rules = [{"name": "no_wait", "status": 500, "cooldown": 0}]  # at once half-open
    cfg = write_config(tmp_path, sim, {"main": ["only"]}, extra={"rules": rules})
    assert run_cli("run", "-C", "main", "-c", str(cfg), "-p", "lost").returncode == 1
    found = families(run_cli("metrics", "-c", str(cfg)).stdout)
    breaker = found["llm_cascade_breaker_state"]
    assert sample(breaker, "llm_cascade_breaker_state", model="only") == 1  # cooled, not closed
    failures = found["llm_cascade_consecutive_failures"]
    assert sample(failures, "llm_cascade_consecutive_failures", model="only") == 1
    pending = found["llm_cascade_failed_prompts_pending"]
    assert sample(pending, "llm_cascade_failed_prompts_pending") == 1


def test_metrics_label_values_are_escaped(tmp_path, sim):
    odd = 'we"ird\\model'
    sim.script(odd, Reply("ok"))
    cfg = write_config(tmp_path, sim, {"c": [entry("sim", odd)]})
    assert run_cli("run", "-C", "c", "-c", str(cfg), "-p", "hi").returncode == 0
    found = families(run_cli("metrics", "-c", str(cfg)).stdout)
    attempts = found["llm_cascade_attempts"]
    assert sample(attempts, "llm_cascade_attempts_total", model=odd, outcome="ok") == 1


def test_metrics_textfile_is_replaced_whole_and_readable_by_the_collector(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    target = tmp_path / "textfile" / "llm_cascade.prom"
    target.parent.mkdir()
    target.write_text("old\n")
    done = run_cli("metrics", "-c", str(cfg), "--textfile", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "llm_cascade_breaker_state" in families(target.read_text())
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["llm_cascade.prom"]


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` refuses new files, even to root (immutable), for the duration."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root, on a file system without immutable folders")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_metrics_textfile_in_a_directory_that_cannot_be_written_keeps_the_old_file(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "llm_cascade.prom"
    target.write_text("old\n")
    with unwritable(folder):
        done = run_cli("metrics", "-c", str(cfg), "--textfile", str(target))
    assert done.returncode == 1
    assert f"cannot write the metrics to '{target}'" in done.stderr
    assert error_line(done.stderr)
    assert target.read_text() == "old\n"


def test_metrics_textfile_in_a_missing_directory_is_exit_1_naming_the_path(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"main": ["primary"]})
    target = tmp_path / "no" / "such" / "llm_cascade.prom"
    done = run_cli("metrics", "-c", str(cfg), "--textfile", str(target))
    assert done.returncode == 1
    assert f"cannot write the metrics to '{target}'" in done.stderr


def test_stats_shows_time_to_first_token_once_answers_are_streamed(tmp_path, sim):
    cfg = outage_config(tmp_path, sim)
    args = ("run", "-C", "spare", "-c", str(cfg), "-p", "one")
    assert run_cli(*args, "--no-stream").returncode == 0
    assert "TTFT" not in run_cli("stats", "-c", str(cfg)).stdout
    assert run_cli(*args, "--stream").returncode == 0
    backup = by_entry(stats_json(cfg), "spare")["sim/backup"]
    assert backup["attempts"] == 2 and backup["ttft_ms"]["p50"] is not None
    done = run_cli("stats", "-c", str(cfg), "-C", "spare")
    assert "TTFT P50" in done.stdout and "TTFT P95" in done.stdout
