"""The attempt log on PostgreSQL (`[log] backend = "postgres"`): real servers, real CLI
processes, each "host" with its own local database, so only PostgreSQL can carry the fleet's
rows into `stats`, `metrics` and `top`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.cascade import Cascade
from llm_cascade.config import LogConfig, StateConfig, load_config
from llm_cascade.simulator import Fail, Reply
from llm_cascade.store import AttemptRecord, Store
from llm_cascade.types import Conversation

from .state_servers import PostgresServer, free_port
from .support import error_line, run_async, run_cli, write_config
from .test_fleet import SilentServer

LOG_TABLES = (
    "llm_cascade_attempts, llm_cascade_attempt_hourly, llm_cascade_latency_hourly,"
    " llm_cascade_histogram_totals, llm_cascade_attempt_pruned, llm_cascade_log_pruned,"
    " llm_cascade_entry_errors, llm_cascade_log_schema, llm_cascade_breakers, llm_cascade_schema"
)


def emptied(server: PostgresServer) -> str:
    """The server's URL, its llm-cascade tables dropped (the session shares one server)."""
    import psycopg

    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {LOG_TABLES} CASCADE")
    return server.url


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return emptied(postgres_server)


def host_config(
    tmp_path: Path, sim, host: str, log: dict[str, Any], state: dict[str, Any] | None = None
) -> Path:
    extra: dict[str, Any] = {
        "log": {"host": host, **log},
        "database": {"path": str(tmp_path / host / "db.sqlite")},
    }
    if state is not None:
        extra["state"] = state
    return write_config(tmp_path, sim, {"x": ["a", "b"]}, extra=extra, name=f"{host}.toml")


def fleet_rows(url: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT host, provider_model, outcome, http_status, rule,"
            " cooldown_until IS NOT NULL FROM llm_cascade_attempts ORDER BY id"
        ).fetchall()


def stats_of(cfg: Path, *more: str) -> dict[str, Any]:
    done = run_cli("stats", "--json", "-c", str(cfg), *more)
    assert done.returncode == 0, done.stderr
    counted: dict[str, Any] = json.loads(done.stdout)["cascades"]
    return {c["cascade"]: c for c in counted}


def entry_of(stats: dict[str, Any], key: str) -> dict[str, Any]:
    [found] = [e for e in stats["x"]["entries"] if e["entry"] == key]
    return found


def metrics_of(cfg: Path, *more: str) -> list[str]:
    done = run_cli("metrics", "-c", str(cfg), *more)
    assert done.returncode == 0, done.stderr
    # the countdown gauge moves between two reads; everything else must match
    return [x for x in done.stdout.splitlines() if "cooldown_remaining" not in x]


def test_two_hosts_rows_show_in_stats_metrics_and_top_of_either(tmp_path, sim, pg_url):
    # host one shares its breakers on PostgreSQL too: its log defaults to that server
    shared = {"backend": "postgres", "url": pg_url}
    one = host_config(tmp_path, sim, "one", {"backend": "postgres"}, shared)
    two = host_config(tmp_path, sim, "two", {"backend": "postgres", "url": pg_url})
    sim.script("a", Fail(500, "upstream exploded"), Reply())
    assert run_cli("run", "-C", "x", "-c", str(one), "-p", "q").returncode == 0  # a fails, b
    # One host alone: the fleet's aggregates are exactly what its own SQLite log folds.
    assert stats_of(one) == stats_of(one, "--local")
    assert metrics_of(one) == metrics_of(one, "--local")

    assert run_cli("run", "-C", "x", "-c", str(two), "-p", "q").returncode == 0  # a answers
    assert [(r[0], r[1], r[2]) for r in fleet_rows(pg_url)] == [
        ("one", "sim/a", "failed"),
        ("one", "sim/b", "ok"),
        ("two", "sim/a", "ok"),
    ]
    assert fleet_rows(pg_url)[0][3:] == (500, "server_error", True)  # the cooldown it set
    for cfg in (one, two):
        fleet = stats_of(cfg)
        a, b = entry_of(fleet, "sim/a"), entry_of(fleet, "sim/b")
        assert (a["attempts"], a["successes"], a["failovers"], a["cooldowns"]) == (2, 1, 1, 1)
        assert (b["attempts"], b["successes"]) == (1, 1)
        assert (fleet["x"]["runs"], fleet["x"]["answered_by_first_entry"]) == (2, 1)
        text = "\n".join(metrics_of(cfg))
        assert (
            'llm_cascade_attempts_total{cascade="x",provider="sim",model="a",outcome="ok"} 1'
            in text
        )
        assert 'llm_cascade_runs_total{cascade="x"} 2' in text
        frame = run_cli("top", "--once", "-c", str(cfg))
        assert frame.returncode == 0, frame.stderr
        assert "upstream exploded" in frame.stdout  # host one's error, seen from either
        assert f"fleet log: {pg_url}" in " ".join(frame.stdout.split())
    local_two = entry_of(stats_of(two, "--local"), "sim/a")
    assert (local_two["attempts"], local_two["failovers"]) == (1, 0)  # this host's only
    assert "upstream exploded" not in run_cli("top", "--once", "--local", "-c", str(two)).stdout
    with sqlite3.connect(tmp_path / "two" / "db.sqlite") as conn:  # every row still local
        assert conn.execute("SELECT count(*) FROM attempt_log").fetchone() == (1,)

    check = json.loads(run_cli("config", "check", "--json", "-c", str(two)).stdout)
    assert check["log"]["reachable"] is True and check["log"]["backend"] == "postgres"
    health = run_cli("health", "-c", str(one))
    assert f"Attempt log backend: postgres at {pg_url}: reachable" in health.stderr


def test_a_server_stopped_mid_run_keeps_the_rows_local_and_says_so_once(tmp_path, sim, caplog):
    server = PostgresServer().start()
    try:
        cfg = host_config(
            tmp_path, sim, "one", {"backend": "postgres", "url": server.url, "timeout": 1}
        )
        config = load_config(cfg)
        sim.script("a", Reply("first"), Reply("held answer", hold=True), Reply("third"))

        async def scenario() -> list[str]:
            async with Cascade(config) as engine:
                first = await engine.run("x", Conversation.single_user_prompt("one"))
                assert engine.store is not None and engine.store.log_sink is not None
                await asyncio.to_thread(engine.store.log_sink.flush)  # written by its thread
                running = asyncio.create_task(
                    engine.run("x", Conversation.single_user_prompt("two"))
                )
                assert await asyncio.to_thread(sim.wait_for, 2, "a")
                server.stop()  # while the request is in flight
                sim.release()
                second = await running
                third = await engine.run("x", Conversation.single_user_prompt("three"))
                return [r.response.text for r in (first, second, third)]

        assert run_async(scenario()) == ["first", "held answer", "third"]
        warnings = [r.getMessage() for r in caplog.records if "attempt log" in r.getMessage()]
        assert len(warnings) == 1, warnings  # said once, not per row
        assert "stay in the local log" in warnings[0] and f"127.0.0.1:{server.port}" in warnings[0]
        with sqlite3.connect(config.database_path) as conn:
            assert conn.execute("SELECT count(*) FROM attempt_log").fetchone() == (3,)
            fell = conn.execute("SELECT backend FROM state_fallback").fetchall()
        assert fell == [("log:postgres",)]
        down = run_cli("stats", "-c", str(cfg))  # the fleet's log cannot be read: one line
        assert down.returncode == 1
        assert error_line(down.stderr).startswith(f"Error: PostgreSQL at {server.url}:")
        assert run_cli("stats", "--local", "-c", str(cfg)).returncode == 0
        server.start()
        assert len(fleet_rows(server.url)) == 1  # only the row written before the stop
        check = run_cli("config", "check", "-c", str(cfg))
        assert f"Attempt log:    postgres at {server.url} (reachable; last fell back" in (
            check.stdout
        )
        # The next run (another process) catches the two rows up with its own: each once.
        assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q").returncode == 0
        assert [(r[1], r[2]) for r in fleet_rows(server.url)] == [("sim/a", "ok")] * 4
        a = entry_of(stats_of(cfg), "sim/a")
        assert (a["attempts"], a["successes"]) == (4, 4)
        assert stats_of(cfg) == stats_of(cfg, "--local")

        # A crash between the server's commit and the local mark: everything is sent again.
        with sqlite3.connect(config.database_path) as conn:
            assert conn.execute("SELECT shipped FROM fleet_log_mark").fetchone() == (4,)
            conn.execute("UPDATE fleet_log_mark SET shipped = 0")
        assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q").returncode == 0
        assert len(fleet_rows(server.url)) == 5  # the four once, and this run's row
        a = entry_of(stats_of(cfg), "sim/a")
        assert (a["attempts"], a["successes"]) == (5, 5)
        assert metrics_of(cfg) == metrics_of(cfg, "--local")
    finally:
        server.close()


def test_a_database_older_than_the_fleet_log_does_not_upload_its_history(tmp_path, sim, pg_url):
    alone = host_config(tmp_path, sim, "one", {})
    for _ in range(3):  # logged while the log was local only
        assert run_cli("run", "-C", "x", "-c", str(alone), "-p", "q").returncode == 0
    cfg = host_config(tmp_path, sim, "one", {"backend": "postgres", "url": pg_url})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q").returncode == 0
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q").returncode == 0
    assert len(fleet_rows(pg_url)) == 2  # from the first row it handed over on
    with sqlite3.connect(tmp_path / "one" / "db.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM attempt_log").fetchone() == (5,)
        assert conn.execute("SELECT shipped FROM fleet_log_mark").fetchone()[0] >= 3


def test_prune_deletes_old_rows_on_both_sides_and_counters_never_go_back(tmp_path, sim, pg_url):
    import time

    import psycopg

    cfg = host_config(tmp_path, sim, "one", {"backend": "postgres", "url": pg_url})
    config = load_config(cfg)
    assert config.log.server is not None
    now = time.time()
    record = AttemptRecord("x", "sim/a", 200, 7, input_tokens=3, output_tokens=5)
    with logging_store(config.database_path.parent, config.log) as store:
        for age_days in (40, 35, 1):
            store.log_attempt(record, now - age_days * 86400)
    assert len(fleet_rows(pg_url)) == 3
    metrics = metrics_of(cfg)

    done = run_cli("log", "--prune", "30", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "Deleted 2 attempt rows, and 2 from the fleet's log, older than 30 days." in done.stderr
    assert len(fleet_rows(pg_url)) == 1
    with psycopg.connect(pg_url) as conn:  # the old hours' sums are gone from the hours
        hours = conn.execute("SELECT count(*) FROM llm_cascade_attempt_hourly").fetchone()
        assert hours == (1,)
    assert metrics_of(cfg) == metrics  # all-time counters and histograms keep the pruned rows
    assert metrics_of(cfg, "--local") == metrics
    assert entry_of(stats_of(cfg, "--since", "60d"), "sim/a")["attempts"] == 1
    assert stats_of(cfg, "--since", "60d") == stats_of(cfg, "--since", "60d", "--local")

    local = run_cli("log", "--prune", "0", "--local", "-c", str(cfg))
    assert "Deleted 1 attempt row older than 0 days." in local.stderr
    assert len(fleet_rows(pg_url)) == 1  # --local: the fleet's log is left as it is
    down = host_config(tmp_path, sim, "two", {"backend": "postgres", "url": f"{pg_url}x"})
    refused = run_cli("log", "--prune", "30", "-c", str(down))
    assert refused.returncode == 1 and error_line(refused.stderr).startswith("Error: PostgreSQL")


def test_stats_by_host_shows_each_hosts_part_of_the_fleet(tmp_path, sim, pg_url):
    one = host_config(tmp_path, sim, "one", {"backend": "postgres", "url": pg_url})
    two = host_config(tmp_path, sim, "two", {"backend": "postgres", "url": pg_url})
    sim.script("a", Fail(500, "upstream exploded"), Reply(), Reply())
    assert run_cli("run", "-C", "x", "-c", str(one), "-p", "q").returncode == 0  # a fails, b
    assert run_cli("run", "-C", "x", "-c", str(two), "-p", "q").returncode == 0  # a answers
    assert run_cli("run", "-C", "x", "-c", str(two), "-p", "q").returncode == 0  # a answers

    done = run_cli("stats", "--by-host", "--json", "-c", str(one))
    assert done.returncode == 0, done.stderr
    hosts = {
        h["host"]: {c["cascade"]: c for c in h["cascades"]}
        for h in json.loads(done.stdout)["hosts"]
    }
    assert sorted(hosts) == ["one", "two"]
    a1, b1 = entry_of(hosts["one"], "sim/a"), entry_of(hosts["one"], "sim/b")
    assert (a1["attempts"], a1["successes"], a1["failovers"], b1["successes"]) == (1, 0, 1, 1)
    a2 = entry_of(hosts["two"], "sim/a")
    assert (a2["attempts"], a2["successes"], hosts["two"]["x"]["runs"]) == (2, 2, 2)
    assert a2["latency_ms"]["p50"] is not None
    # each host's part is what that host's own log says (the breakers: the reader's own)
    for host, cfg in (("one", one), ("two", two)):
        own = stats_of(cfg, "--local")["x"]["entries"]
        assert [{**e, "state": "-"} for e in hosts[host]["x"]["entries"]] == [
            {**e, "state": "-"} for e in own
        ]

    text = run_cli("stats", "--by-host", "-c", str(two))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines.index("Host one") < lines.index("Host two")
    assert text.stdout.count("Cascade x") == 2 and "P95 MS" in text.stdout

    local = run_cli("stats", "--by-host", "--local", "-c", str(one))
    assert local.returncode == 2 and "--local" in error_line(local.stderr)
    sqlite_only = host_config(tmp_path, sim, "three", {})
    plain = run_cli("stats", "--by-host", "-c", str(sqlite_only))
    assert plain.returncode == 2
    assert 'needs the fleet\'s log ([log] backend = "postgres")' in error_line(plain.stderr)


def test_a_server_that_never_answers_costs_one_timeout_not_the_answer(tmp_path, sim):
    silent = SilentServer()
    try:
        url = f"postgresql://127.0.0.1:{silent.port}/db"
        cfg = host_config(tmp_path, sim, "one", {"backend": "postgres", "url": url, "timeout": 0.5})
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q", timeout=30)
        check = run_cli("config", "check", "-c", str(cfg), timeout=30)
    finally:
        silent.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Simulated answer from a: q\n"
    [line] = [x for x in done.stderr.splitlines() if "attempt log" in x]
    assert f"127.0.0.1:{silent.port}" in line
    assert "the attempt log backend is unreachable" in check.stdout + check.stderr


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"backend": "postgres"}, "log.url: is required"),
        ({"backend": "postgres", "url": "redis://127.0.0.1/"}, "must start with postgresql://"),
        ({"backend": "postgres", "url": "postgresql://h:99999999/db"}, "not a valid URL"),
        ({"backend": "redis", "url": "redis://127.0.0.1/"}, "log.backend: must be one of"),
        ({"backend": "postgres", "url": "postgresql://h/db", "timeout": 0}, "log.timeout"),
        ({"host": ""}, "log.host: must be a non-empty string"),
    ],
)
def test_a_bad_log_table_is_a_config_error(tmp_path, sim, table, problem):
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra={"log": table})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q")
    assert done.returncode == 2
    assert problem in error_line(done.stderr)
    assert sim.count() == 0


@pytest.fixture
def guarded() -> Iterator[PostgresServer]:
    server = PostgresServer(password="s3cret-log-password").start()
    try:
        yield server
    finally:
        server.close()


def test_a_wrong_password_is_one_line_and_the_password_is_never_shown(tmp_path, sim, guarded):
    secret = "s3cret-log-password"
    table = {"backend": "postgres", "url": guarded.url, "password_env": "LOG_PW", "timeout": 2}
    cfg = host_config(tmp_path, sim, "one", table)
    good = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q", env={"LOG_PW": secret})
    assert good.returncode == 0 and "attempt log" not in good.stderr
    ok_stats = run_cli("stats", "--json", "-c", str(cfg), env={"LOG_PW": secret})
    assert (
        entry_of({c["cascade"]: c for c in json.loads(ok_stats.stdout)["cascades"]}, "sim/a")[
            "successes"
        ]
        == 1
    )

    wrong = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q", env={"LOG_PW": "nope"})
    assert wrong.stdout == "Simulated answer from a: q\n"  # answered, logged locally
    [line] = [x for x in wrong.stderr.splitlines() if "attempt log" in x]
    assert "password authentication failed" in line
    read = run_cli("stats", "-c", str(cfg), env={"LOG_PW": "nope"})
    assert read.returncode == 1 and "password authentication failed" in error_line(read.stderr)
    in_url = guarded.url.replace("postgres@", "postgres:hunter2@")
    with_url = host_config(tmp_path, sim, "two", {"backend": "postgres", "url": in_url})
    shown = run_cli("metrics", "-c", str(with_url))
    assert shown.returncode == 1
    assert "postgres:***@127.0.0.1" in error_line(shown.stderr)
    assert "hunter2" not in shown.stdout + shown.stderr
    outputs = good.stderr + wrong.stderr + read.stderr + ok_stats.stdout
    assert secret not in outputs
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_database_an_older_version_made_gets_the_log_and_keeps_its_breakers(
    tmp_path, sim, pg_url
):
    import psycopg

    # What the version before the log left: the breakers' schema (version 1) and a breaker.
    state = host_config(tmp_path, sim, "old", {}, {"backend": "postgres", "url": pg_url})
    sim.script("a", Fail(429, retry_after="600"))
    assert run_cli("run", "-C", "x", "-c", str(state), "-p", "q").returncode == 0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('llm_cascade_attempts')").fetchone() == (None,)

    new = host_config(
        tmp_path, sim, "new", {"backend": "postgres"}, {"backend": "postgres", "url": pg_url}
    )
    done = run_cli("run", "-C", "x", "-c", str(new), "-p", "q", "-v")
    assert done.returncode == 0 and "skipping sim/a" in done.stderr  # the old host's breaker
    assert [(r[0], r[1], r[2]) for r in fleet_rows(pg_url)] == [
        ("new", "sim/a", "skipped"),
        ("new", "sim/b", "ok"),
    ]
    with psycopg.connect(pg_url) as conn:  # hosts of the older version keep their breakers
        assert conn.execute("SELECT version FROM llm_cascade_schema").fetchall() == [(1,)]


def test_a_version_1_log_is_upgraded_and_keeps_its_sums_under_no_host(tmp_path, sim, pg_url):
    import time

    import psycopg

    from llm_cascade.breakers.pg import migrate_schema
    from llm_cascade.fleetlog import _MIGRATIONS

    hour = time.time() // 3600 * 3600
    with psycopg.connect(pg_url, autocommit=True) as conn:  # version 1's tables, one hour summed
        migrate_schema(conn, "llm_cascade_log_schema", 1, _MIGRATIONS)
        conn.execute(
            "INSERT INTO llm_cascade_attempt_hourly (hour, cascade_name, provider_model, outcome,"
            " rule, attempts, runs, answered_runs, first_answered)"
            " VALUES (to_timestamp(%s), 'x', 'sim/a', 'ok', '', 2, 2, 2, 2)",
            (hour,),
        )
    cfg = host_config(tmp_path, sim, "one", {"backend": "postgres", "url": pg_url})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q").returncode == 0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM llm_cascade_log_schema").fetchall() == [(2,)]
    assert entry_of(stats_of(cfg), "sim/a")["successes"] == 3
    done = run_cli("stats", "--by-host", "--json", "-c", str(cfg))
    hosts = json.loads(done.stdout)["hosts"]
    assert [(h["host"], h["cascades"][0]["runs"]) for h in hosts] == [(None, 2), ("one", 1)]
    assert "Host (unknown" in run_cli("stats", "--by-host", "-c", str(cfg)).stdout


def test_a_log_schema_from_a_newer_version_is_refused_clearly(tmp_path, sim, pg_url):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE llm_cascade_log_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO llm_cascade_log_schema VALUES (99)")
    cfg = host_config(tmp_path, sim, "one", {"backend": "postgres", "url": pg_url})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q")
    assert done.returncode == 0 and done.stdout == "Simulated answer from a: q\n"
    [line] = [x for x in done.stderr.splitlines() if "attempt log" in x]
    assert "schema is version 99, newer than this llm-cascade's 2: upgrade llm-cascade" in line
    read = run_cli("stats", "-c", str(cfg))
    assert read.returncode == 1 and "upgrade llm-cascade" in error_line(read.stderr)


def test_an_unreachable_log_backend_is_reported_by_config_check(tmp_path, sim):
    url = f"postgresql://127.0.0.1:{free_port()}/db"
    cfg = host_config(tmp_path, sim, "one", {"backend": "postgres", "url": url, "timeout": 0.5})
    done = run_cli("config", "check", "--json", "-c", str(cfg))
    report = json.loads(done.stdout)
    assert report["log"]["reachable"] is False and report["log"]["url"] == url
    assert any("attempt log backend is unreachable" in w for w in report["warnings"])


def test_the_templates_commented_log_table_loads_once_uncommented():
    import tomllib
    from importlib import resources

    from llm_cascade.config import parse_config

    text = resources.files("llm_cascade").joinpath("config_template.toml").read_text()
    block = text[text.index("# [log]") : text.index("# Breakers")]
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith("# ")]
    log = parse_config(tomllib.loads("\n".join(lines))).log
    assert log.server is not None and log.server.url == "postgresql://llmc@db.internal/llmc"
    assert (log.server.password_env, log.host) == ("LLM_CASCADE_LOG_PASSWORD", "web-3")


def logging_store(tmp_path: Path, log: LogConfig, **options: Any) -> Store:
    """A real local database whose rows also go to the fleet's log `log` describes."""
    from llm_cascade.fleetlog import FleetLog

    store = Store(tmp_path / "db.sqlite")
    store.log_sink = FleetLog(log, str(store.path), **options)
    return store


def test_a_row_postgresql_text_cannot_hold_is_still_written(tmp_path, pg_url, caplog):
    record = AttemptRecord("x", "sim/a", 500, 3, outcome="failed", error_message="a\x00b")
    with logging_store(tmp_path, LogConfig(StateConfig("postgres", pg_url), "one")) as store:
        store.log_attempt(record, 1_800_000_000.0)
        store.log_attempt(record, 1_800_000_001.0)
    assert not [r for r in caplog.records if "attempt log" in r.getMessage()]
    assert [r[:3] for r in fleet_rows(pg_url)] == [("one", "sim/a", "failed")] * 2


def test_a_log_without_url_takes_the_state_servers_and_may_set_its_own_timeout():
    from llm_cascade.config import parse_config

    state = {"backend": "postgres", "url": "postgresql://u@db/x", "password_env": "PW"}
    log = parse_config({"state": state, "log": {"backend": "postgres", "timeout": 5}}).log
    assert log.server is not None
    assert (log.server.url, log.server.password_env, log.server.timeout_s) == (
        "postgresql://u@db/x",
        "PW",
        5.0,
    )
    assert parse_config({"state": state}).log.server is None  # the log stays local by default


def test_after_an_outage_the_log_is_written_again_and_catches_up_once_retried(tmp_path, caplog):
    from llm_cascade.fleetlog import RETRY_S, FleetLog

    server = PostgresServer().start()
    ticks, fell = [0.0], []
    log = LogConfig(StateConfig("postgres", server.url, timeout_s=1), "one")
    store = logging_store(tmp_path, log, on_down=fell.append, monotonic=lambda: ticks[0])
    assert isinstance(store.log_sink, FleetLog)
    record = AttemptRecord("x", "sim/a", 200, 3)
    try:
        for step in ("up", "stop", "start", "retry"):
            if step == "stop":
                server.stop()
            elif step == "start":
                server.start()
            elif step == "retry":
                ticks[0] += RETRY_S
            store.log_attempt(replace(record, rule=step), 1_800_000_000.0)
            store.log_sink.flush()
            if step == "start":  # while it was down (and not retried yet) rows stayed local
                assert [r[4] for r in fleet_rows(server.url)] == ["up"]
        rows = [r[4] for r in fleet_rows(server.url)]
    finally:
        store.close()
        server.close()
    assert rows == ["up", "retry", "stop", "start"]  # then caught up, each once
    assert store.log_sink.caught_up == 2
    assert len(fell) == 1 and "PostgreSQL at" in fell[0]  # recorded once, on the caller's side
    assert len([r for r in caplog.records if "attempt log" in r.getMessage()]) == 1
