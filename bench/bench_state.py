"""What a shared breaker backend costs a run: Redis and PostgreSQL against SQLite, one run.

    python bench/bench_state.py [--rounds N] [--runs-per-process N]

Starts a private redis-server and PostgreSQL cluster (as tests/state_servers.py does) and the
simulator in its own process, then measures, rounds interleaved so machine load hits every
backend alike:

- one `Cascade.run` whose entry answers (one read of the cascade's breakers, one local row),
  per backend, and its difference to SQLite's: the per-run state overhead;
- the breaker operations of a failover run alone (read two entries, record a failure with its
  cooldown, read again, clear), per backend;
- 8 processes at once, each running `--runs-per-process` cascades: runs per second per backend.

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
from pathlib import Path

from bench_inprocess import config as sim_config
from bench_inprocess import start_simulator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm_cascade.breakers import open_store  # noqa: E402
from llm_cascade.cascade import Cascade  # noqa: E402
from llm_cascade.config import AppConfig, StateConfig  # noqa: E402
from llm_cascade.store import AttemptRecord  # noqa: E402
from llm_cascade.types import Conversation  # noqa: E402
from tests.state_servers import PostgresServer, RedisServer  # noqa: E402

BACKENDS = ("sqlite", "redis", "postgres")
PROCESSES = 8


def with_state(base: AppConfig, backend: str, url: str | None, work: Path) -> AppConfig:
    from dataclasses import replace

    db = work / backend / "db.sqlite"
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
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["BENCH_KEY"] = "bench"
    if args.worker:
        backend, url, sim_url, work, runs = args.worker
        worker(backend, url, sim_url, Path(work), int(runs))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers stop in `finally`
    redis_server, pg = RedisServer().start(), PostgresServer().start()
    work = Path(tempfile.mkdtemp(prefix="bench-state-"))
    sim, sim_url = start_simulator(work)
    try:
        urls = {"sqlite": "", "redis": redis_server.url, "postgres": pg.url}
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

        runs = asyncio.run(in_process())
        ops = failover_ops_ms(configs, args.rounds)
        rps = concurrent_rps(urls, sim_url, work, args.runs_per_process)
    finally:
        sim.terminate()
        sim.wait()
        redis_server.close()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.rounds} interleaved rounds; {PROCESSES} processes x {args.runs_per_process} runs")
    report("One `Cascade.run`, its entry answers:", runs)
    report("The breaker operations of a failover run:", ops)
    print(f"\n| backend | runs/s, {PROCESSES} processes |\n|---|---:|")
    for backend, value in rps.items():
        print(f"| {backend} | {value:.0f} |")


if __name__ == "__main__":
    main()
