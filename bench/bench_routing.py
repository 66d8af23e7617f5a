"""The routing decision over a million attempt rows, and a hedged run.

    python bench/bench_routing.py [--rows N] [--decisions N] [--hedge-runs N]

Builds a database of N attempt rows (default 1,000,000) over 8 entries as the original tool
would have written them (no new columns), then opens it: the migration folds the rows into
the aggregates and seeds the routing state (timed). Times what a routed run adds before its
first request: the routing rows of a 4-entry cascade, the ranking (`score`, which computes
every part), and a cascade and an entry budget check; the baseline is the breaker read every
run already makes. The same on an empty database shows the cost does not grow with the log,
and with 63 rows not folded yet (a writer's rows before its next fold), which a read adds in.

Then a hedged run against the simulator: the first entry answers after 1 s, the second at
once, `hedge_after = 0.2`. Baseline: one request to the quick entry. Never part of the
tests.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llm_cascade import budgets, rollup, routing
from llm_cascade.cascade import Cascade
from llm_cascade.clock import format_ts
from llm_cascade.config import parse_config
from llm_cascade.simulator import Reply, Simulator
from llm_cascade.store import AttemptRecord, Store
from llm_cascade.types import Conversation

ENTRIES = [f"p{i % 3}/model{i}" for i in range(8)]
CASCADE = ENTRIES[:4]
ORIGINAL = (
    "CREATE TABLE attempt_log (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL,"
    " cascade_name TEXT NOT NULL, provider_model TEXT NOT NULL, http_status INTEGER,"
    " latency_ms INTEGER NOT NULL, input_tokens INTEGER, output_tokens INTEGER);"
    "CREATE TABLE cooldown (provider_model TEXT PRIMARY KEY, cooldown_until TEXT NOT NULL);"
)


def build(path: Path, count: int, now: float) -> None:
    rnd = random.Random(1)
    conn = sqlite3.connect(path)
    conn.executescript(ORIGINAL)
    batch = []
    for _ in range(count):
        ok = rnd.random() < 0.85
        batch.append(
            (
                format_ts(now - rnd.random() * 30 * 86400),
                "bench",
                rnd.choice(ENTRIES),
                200 if ok else 503,
                int(rnd.lognormvariate(6, 0.6)),
                100 if ok else None,
                50 if ok else None,
            )
        )
        if len(batch) == 50_000:
            conn.executemany("INSERT INTO attempt_log VALUES (NULL, ?, ?, ?, ?, ?, ?, ?)", batch)
            batch.clear()
    conn.executemany("INSERT INTO attempt_log VALUES (NULL, ?, ?, ?, ?, ?, ?, ?)", batch)
    conn.commit()
    conn.close()


def per_call_us(action: Callable[[], object], count: int) -> float:
    """Median of 5 rounds of `count` calls, in microseconds per call."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count):
            action()
        rounds.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(rounds)


def decision_costs(store: Store, count: int) -> dict[str, float]:
    now = time.time()
    rng = random.Random(2)
    limits = budgets.Limits(tokens_per_day=1e12, cost_per_month=1e9)
    day, month = budgets.periods(now)
    price = routing.Price(0.15, 0.6)

    def decide() -> routing.Route:
        stats = store.route_stats(CASCADE)
        candidates = [
            routing.Candidate(key, 1.0, stats[key], cost=routing.estimated_cost(price, 200, None))
            for key in CASCADE
        ]
        return routing.route("score", candidates, now=now, rng=rng)

    def budget_checks() -> None:
        for scope, name in (("cascade", "bench"), ("entry", CASCADE[0])):
            spent = store.spending(scope, [name], [day, month])
            budgets.exceeded(limits, {p: v for (_, p), v in spent.items()}, now)

    return {
        "breaker read (baseline)": per_call_us(lambda: store.states(CASCADE), count),
        "routing rows + ranking": per_call_us(decide, count),
        "two budget checks": per_call_us(budget_checks, count),
    }


async def hedged(base_url: str, folder: Path, runs: int) -> dict[str, float]:
    def config(hedge: bool, entries: list[str]) -> object:
        cascade: dict[str, object] = {"entries": [{"provider": "sim", "model": m} for m in entries]}
        if hedge:
            cascade["hedge_after"] = 0.2
        return parse_config(
            {
                "providers": {
                    "sim": {"type": "openai", "base_url": base_url, "api_key_env": "BENCH_KEY"}
                },
                "cascades": {"x": cascade},
                "database": {"path": str(folder / "hedge.sqlite")},
                "failure_persistence": {"dir": str(folder / "failed")},
            }
        )

    async def timed(app: object) -> float:
        samples = []
        async with Cascade(app) as engine:  # type: ignore[arg-type]
            await engine.run("x", Conversation.single_user_prompt("warm up"))
            for i in range(runs):
                start = time.perf_counter()
                await engine.run("x", Conversation.single_user_prompt(f"hedge {i}"))
                samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    return {
        "one request to the quick entry (baseline)": await timed(config(False, ["quick"])),
        "hedged: slow first entry, quick second answers": await timed(
            config(True, ["slow", "quick"])
        ),
        "unhedged: slow first entry answers": await timed(config(False, ["slow", "quick"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--hedge-runs", type=int, default=7)
    args = parser.parse_args()
    import os

    os.environ.setdefault("BENCH_KEY", "sk-bench-0000000000")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "big.sqlite"
        build(path, args.rows, time.time())
        start = time.perf_counter()
        Store(path).close()
        print(f"migration of {args.rows:,} original rows: {time.perf_counter() - start:.1f} s")

        def report(label: str, store: Store) -> None:
            costs = decision_costs(store, args.decisions)
            base = costs["breaker read (baseline)"]
            print(f"\n{label}:\n| | µs | x baseline |\n|---|---:|---:|")
            for name, us in costs.items():
                print(f"| {name} | {us:.1f} | {us / base:.2f} |")

        with Store(path) as big, Store(folder / "empty.sqlite") as empty:
            report(f"{args.rows:,} rows", big)
            report("empty log", empty)
            # The rows a writer lets wait before its next fold: reads add them in.
            record = AttemptRecord("bench", CASCADE[0], 200, 300, 100, 50, cost=0.0001)
            for _ in range(rollup.FOLD_EVERY - 1):
                big.log_attempt(record, time.time())
            report(f"{args.rows:,} rows, {rollup.FOLD_EVERY - 1} of them not folded yet", big)
        with Simulator() as sim:
            sim.script("slow", Reply("slow", delay=1.0))
            sim.script("quick", Reply("quick"))
            timings = asyncio.run(hedged(sim.base_url("openai"), folder, args.hedge_runs))
        base = timings["one request to the quick entry (baseline)"]
        print("\nhedged run (hedge_after 0.2 s):\n| | ms | x baseline |\n|---|---:|---:|")
        for name, ms in timings.items():
            print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
