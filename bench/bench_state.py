"""What a shared breaker backend costs a run: Redis and PostgreSQL against SQLite, one run.

    python bench/bench_state.py [--rounds N] [--runs-per-process N]

Starts a private redis-server and PostgreSQL cluster (as tests/state_servers.py does) and the
simulator in its own process, then measures, rounds interleaved so machine load hits every
backend alike:

- one `Cascade.run` whose entry answers (one read of the cascade's breakers, one local row),
  per backend, and its difference to SQLite's: the per-run state overhead;
- the breaker operations of a failover run alone (read two entries, record a failure with its
  cooldown, read again, clear), per backend;
- 8 processes at once, each running `--runs-per-process` cascades: runs per second per backend;
- the same with the breakers in SQLite and the attempt log also on PostgreSQL (`pglog`);
- reading `--log-rows` attempt rows (30 days of them): `stats` over 24 h and the `metrics`
  scrape, from the fleet's aggregates on PostgreSQL against this host's SQLite ones, and the
  alternative not taken (windowed SQL with percentiles over the indexed raw rows).

Without redis-server installed, Redis is left out.

Never part of the test suite; numbers go to bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from bench_inprocess import config as sim_config
from bench_inprocess import start_simulator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm_cascade.breakers import open_store  # noqa: E402
from llm_cascade.cascade import Cascade  # noqa: E402
from llm_cascade.config import AppConfig, LogConfig, StateConfig  # noqa: E402
from llm_cascade.store import AttemptRecord  # noqa: E402
from llm_cascade.types import Conversation  # noqa: E402
from tests.state_servers import PostgresServer, RedisServer  # noqa: E402

PROCESSES = 8
DAYS = 30


def with_state(base: AppConfig, backend: str, url: str | None, work: Path) -> AppConfig:
    """`pglog`: the breakers in SQLite, the attempt log also on PostgreSQL at `url`."""
    from dataclasses import replace

    db = work / backend / "db.sqlite"
    if backend == "pglog":
        log = LogConfig(StateConfig("postgres", url), host="bench")
        return replace(base, log=log, database_path=db)
    return replace(base, state=StateConfig(backend, url, prefix="bench"), database_path=db)


async def one_run_ms(engines: dict[str, Cascade], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {b: [] for b in engines}
    prompt = Conversation.single_user_prompt("hi")
    for _ in range(rounds):
        for backend, engine in engines.items():
            start = time.perf_counter()
            await engine.run("ok", prompt)
            times[backend].append((time.perf_counter() - start) * 1000)
    return times


def failover_ops_ms(configs: dict[str, AppConfig], rounds: int) -> dict[str, list[float]]:
    """Read two breakers, record a failure with its cooldown (and its local row), read again,
    clear it: a failover run's state work."""
    stores = {b: open_store(c) for b, c in configs.items()}
    times: dict[str, list[float]] = {b: [] for b in stores}
    keys = ["sim/a", "sim/b"]
    failure = AttemptRecord("ok", "sim/a", 500, 3, outcome="failed", rule="server_error")
    try:
        for _ in range(rounds):
            for backend, store in stores.items():
                start = time.perf_counter()
                store.states(keys)
                store.record_failure(failure, time.time(), lambda _level: 30.0)
                store.states(keys)
                store.clear_cooldowns(["sim/a"])
                times[backend].append((time.perf_counter() - start) * 1000)
    finally:
        for store in stores.values():
            store.close()
    return times


def worker(backend: str, url: str, sim_url: str, work: Path, runs: int) -> None:
    """One of the concurrent processes: `runs` cascades on one engine."""
    cfg = with_state(sim_config(sim_url, work), backend, url or None, work)

    async def go() -> None:
        async with Cascade(cfg) as engine:
            for i in range(runs):
                await engine.run("ok", Conversation.single_user_prompt(f"hi {i}"))

    asyncio.run(go())


def concurrent_rps(urls: dict[str, str], sim_url: str, work: Path, runs: int) -> dict[str, float]:
    rps = {}
    for backend, url in urls.items():
        command = [sys.executable, __file__, "--worker", backend, url, sim_url, str(work)]
        start = time.perf_counter()
        procs = [subprocess.Popen([*command, str(runs)]) for _ in range(PROCESSES)]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit(f"a {backend} worker failed")
        rps[backend] = PROCESSES * runs / (time.perf_counter() - start)
    return rps


# 30 days of rows, 1 in 10 a failure that fails over, 4 entries of 2 cascades.
_FAKE_ROWS = (
    "cascade_name, provider_model, http_status, latency_ms, input_tokens, output_tokens,"
    " outcome, rule, run_id"
)


def fill_postgres(url: str, rows: int, batch: int = 2000) -> None:
    """Through the trigger, `batch` rows per statement (one huge transaction would make
    every upsert walk its hot row's chain of versions)."""
    import psycopg

    step = DAYS * 86400 / rows
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, rows, batch):
            conn.execute(
                f"INSERT INTO llm_cascade_attempts (host, timestamp, {_FAKE_ROWS})"
                " SELECT 'h' || (i %% 3), to_timestamp(%s + i * %s), 'c' || (i %% 2),"
                " 'sim/m' || (i %% 4), CASE WHEN i %% 10 = 0 THEN 500 ELSE 200 END,"
                " 50 + (i * 7919) %% 2000, 100, 20,"
                " CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'ok' END,"
                " CASE WHEN i %% 10 = 0 THEN 'server_error' END, 'r' || (i / 2)"
                " FROM generate_series(%s::bigint, %s::bigint) AS i",
                (time.time() - DAYS * 86400, step, first, min(first + batch, rows) - 1),
            )
        conn.execute("VACUUM ANALYZE")


def fill_sqlite(path: Path, rows: int) -> None:
    import sqlite3

    from llm_cascade.store import Store

    Store(path).close()  # the schema, the aggregates and their trigger
    step = DAYS * 86400 / rows
    with sqlite3.connect(path) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)"
            f" INSERT INTO attempt_log (timestamp, {_FAKE_ROWS})"
            " SELECT strftime('%Y-%m-%dT%H:%M:%f000+00:00', ? + i * ?, 'unixepoch'),"
            " 'c' || (i % 2), 'sim/m' || (i % 4), CASE WHEN i % 10 = 0 THEN 500 ELSE 200 END,"
            " 50 + (i * 7919) % 2000, 100, 20, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'ok' END,"
            " CASE WHEN i % 10 = 0 THEN 'server_error' END, 'r' || (i / 2) FROM n",
            (rows, time.time() - DAYS * 86400, step),
        )


def windowed_ms(url: str, since: float | None) -> float:
    """The road not taken: aggregate the raw rows at read time, percentiles included."""
    import psycopg

    where = "WHERE timestamp >= to_timestamp(%s)" if since is not None else ""
    start = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(
            "SELECT cascade_name, provider_model, outcome, count(*), sum(input_tokens),"
            " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms),"
            " count(*) FILTER (WHERE run_id IS NOT NULL AND outcome = 'failed'"
            " AND EXISTS (SELECT 1 FROM llm_cascade_attempts AS q WHERE q.run_id = a.run_id"
            " AND q.id > a.id))"
            f" FROM llm_cascade_attempts AS a {where} GROUP BY 1, 2, 3",
            () if since is None else (since,),
        ).fetchall()
    return (time.perf_counter() - start) * 1000


def log_reads(url: str, work: Path, base: AppConfig, rows: int, rounds: int) -> None:
    from dataclasses import replace

    from llm_cascade import metrics, stats

    db = work / "reads" / "db.sqlite"
    config = replace(
        base, log=LogConfig(StateConfig("postgres", url), host="bench"), database_path=db
    )
    from llm_cascade.fleetlog import FleetLogReader

    FleetLogReader(StateConfig("postgres", url)).ping()  # the schema
    start = time.perf_counter()
    fill_postgres(url, rows)
    pg_fill = time.perf_counter() - start
    start = time.perf_counter()
    fill_sqlite(db, rows)
    sqlite_fill = time.perf_counter() - start
    times: dict[str, list[float]] = {}

    def timed(name: str, call: object) -> None:
        assert callable(call)
        start = time.perf_counter()
        call()
        times.setdefault(name, []).append((time.perf_counter() - start) * 1000)

    day = time.time() - 86400
    for _ in range(rounds):
        timed(
            "stats 24h: this host's SQLite (baseline)",
            lambda: stats.collect(config, day, time.time(), local=True),
        )
        timed("stats 24h: the fleet's PostgreSQL", lambda: stats.collect(config, day, time.time()))
        timed(
            "metrics: this host's SQLite (baseline)",
            lambda: metrics.render(config, time.time(), local=True),
        )
        timed("metrics: the fleet's PostgreSQL", lambda: metrics.render(config, time.time()))
    windowed = {
        "stats 24h, windowed SQL on raw rows": [windowed_ms(url, day) for _ in range(3)],
        "metrics, windowed SQL on raw rows": [windowed_ms(url, None) for _ in range(3)],
    }
    print(
        f"\nReading {rows} attempt rows ({DAYS} days; filled PostgreSQL through its trigger at"
        f" {rows / pg_fill:.0f} rows/s, SQLite through its own at {rows / sqlite_fill:.0f}"
        f" rows/s), {rounds} rounds:\n"
    )
    print("| read | median ms |\n|---|---:|")
    for name, values in {**times, **windowed}.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


def catch_up_rates(url: str, work: Path, rows: int) -> dict[str, float]:
    """Rows/s to the fleet's log of the same local rows: written live by the writer (batches
    of `FleetLog.BATCH`, the baseline), then caught up from the local mark (passes of
    `CATCH_UP_ROWS`, each asking the server which rows it lacks), through one connection."""
    import sqlite3

    from llm_cascade.fleetlog import FleetLog, _record
    from llm_cascade.store import AttemptRow

    db = work / "catchup" / "db.sqlite"
    fill_sqlite(db, rows)
    log = LogConfig(StateConfig("postgres", url), host="bench")
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        local = [AttemptRow.from_row(r) for r in conn.execute("SELECT * FROM attempt_log")]
    items: list[tuple[int, AttemptRecord, float]] = []
    for row in local:
        record, at = _record(row)
        items.append((row.id, record, at or 0.0))
    live = FleetLog(log, str(db))
    start = time.perf_counter()
    for first in range(0, len(items), FleetLog.BATCH):
        live._send(items[first : first + FleetLog.BATCH])
    live_s = time.perf_counter() - start
    live.close()
    with closing(sqlite3.connect(db)) as conn, conn:  # as if another database: all over again
        conn.execute("UPDATE fleet_log_mark SET source = 'again', shipped = 0")
    again = FleetLog(log, str(db))
    start = time.perf_counter()
    while again._catch_up_pass():
        pass
    caught_s = time.perf_counter() - start
    again.close()
    assert again.caught_up == rows, again.caught_up
    return {"written live (baseline)": rows / live_s, "caught up from the mark": rows / caught_s}


def report(title: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(times["sqlite"])
    print(f"\n{title}\n\n| backend | median ms | over SQLite, ms |\n|---|---:|---:|")
    for backend, values in times.items():
        median = statistics.median(values)
        print(f"| {backend} | {median:.3f} | {median - base:+.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--runs-per-process", type=int, default=100)
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--read-rounds", type=int, default=20)
    parser.add_argument("--catch-up-rows", type=int, default=20_000)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["BENCH_KEY"] = "bench"
    if args.worker:
        backend, url, sim_url, work, runs = args.worker
        worker(backend, url, sim_url, Path(work), int(runs))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers stop in `finally`
    redis_server = RedisServer().start() if shutil.which("redis-server") else None
    pg = PostgresServer().start()
    work = Path(tempfile.mkdtemp(prefix="bench-state-"))
    sim, sim_url = start_simulator(work)
    try:
        urls = {"sqlite": "", "postgres": pg.url, "pglog": pg.url}
        if redis_server is not None:
            urls = {"sqlite": "", "redis": redis_server.url, **urls}
        base = sim_config(sim_url, work)
        configs = {b: with_state(base, b, u or None, work) for b, u in urls.items()}

        async def in_process() -> dict[str, list[float]]:
            engines = {b: Cascade(c) for b, c in configs.items()}
            try:
                await one_run_ms(engines, 20)  # warm up: connections, schema, the first row
                return await one_run_ms(engines, args.rounds)
            finally:
                for engine in engines.values():
                    await engine.aclose()

        runs = asyncio.run(in_process()) if args.rounds else {}
        ops = failover_ops_ms(configs, args.rounds) if args.rounds else {}
        rps = (
            concurrent_rps(urls, sim_url, work, args.runs_per_process)
            if args.runs_per_process
            else {}
        )
        if args.log_rows:
            log_reads(pg.url, work, base, args.log_rows, args.read_rounds)
        caught = catch_up_rates(pg.url, work, args.catch_up_rows) if args.catch_up_rows else {}
    finally:
        sim.terminate()
        sim.wait()
        if redis_server is not None:
            redis_server.close()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.rounds} interleaved rounds; {PROCESSES} processes x {args.runs_per_process} runs")
    if args.rounds:
        report("One `Cascade.run`, its entry answers:", runs)
        report("The breaker operations of a failover run:", ops)
    print(f"\n| backend | runs/s, {PROCESSES} processes |\n|---|---:|")
    for backend, value in rps.items():
        print(f"| {backend} | {value:.0f} |")
    if caught:
        print(f"\n| {args.catch_up_rows} local rows to the fleet's log | rows/s |\n|---|---:|")
        for name, value in caught.items():
            print(f"| {name} | {value:.0f} |")


if __name__ == "__main__":
    main()
