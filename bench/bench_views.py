"""`stats` and `metrics` over a million attempt rows, and `health` over ten entries.

    python bench/bench_views.py [--rows N] [--runs N] [--keep DIR]

Builds a database of N attempt rows (default 1,000,000) spread over 30 days, 10 entries in
3 cascades, about 80 % answers, 10 % rate limits and 10 % skips; folds it into the aggregates
as a migration would (timed); then times real `llm-cascade stats` and `metrics` processes
(median of --runs). `health` probes 10 entries whose model pages each take 300 ms, then one:
concurrent probes cost about one probe's latency. Also: what folding the aggregates (in
batches of `rollup.FOLD_EVERY` rows, by the writers) adds to one attempt row. Never part of
the test suite.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm_cascade import rollup
from llm_cascade.clock import format_ts
from llm_cascade.simulator import Reply, Simulator
from llm_cascade.store import AttemptRecord, Store

CLI = str(Path(sys.executable).with_name("llm-cascade"))
ENTRIES = [f"p{i % 4}/model{i}" for i in range(10)]
CASCADES = {"a": ENTRIES[:4], "b": ENTRIES[3:8], "c": ENTRIES[6:]}
COLUMNS = (
    "timestamp, cascade_name, provider_model, http_status, latency_ms, input_tokens,"
    " output_tokens, outcome, error_kind, error_message, rule, run_id, try_number"
)


def config_text(folder: Path, base_url: str) -> str:
    providers = "".join(
        f'[providers.p{i}]\ntype = "openai"\nbase_url = "{base_url}"\napi_key_env = "BENCH_KEY"\n'
        for i in range(4)
    )
    cascades = "".join(
        f"[cascades.{name}]\nentries = ["
        + ", ".join(
            f'{{ provider = "{e.split("/")[0]}", model = "{e.split("/")[1]}" }}' for e in keys
        )
        + "]\n"
        for name, keys in CASCADES.items()
    )
    cascades += '[cascades.one]\nentries = [{ provider = "p0", model = "model0" }]\n'
    return (
        f'{providers}{cascades}[database]\npath = "{folder}/db.sqlite"\n'
        f'[failure_persistence]\ndir = "{folder}/failed"\n'
    )


def rows(count: int, now: float) -> list[tuple[object, ...]]:
    rnd = random.Random(1)
    out: list[tuple[object, ...]] = []
    run = 0
    while len(out) < count:
        run += 1
        cascade = rnd.choice(list(CASCADES))
        stamp = format_ts(now - rnd.random() * 30 * 86400)
        run_id = f"{run:016x}"
        for key in CASCADES[cascade]:
            draw = rnd.random()
            if draw < 0.8:
                latency = int(rnd.lognormvariate(6, 0.6))
                out.append(
                    (stamp, cascade, key, 200, latency, 100, 50, "ok", None, None, None, run_id, 1)
                )
                break
            if draw < 0.9:
                out.append(
                    (stamp, cascade, key, 429, 30, None, None, "failed", "http", "HTTP 429",
                     "rate_limited", run_id, 1)
                )  # fmt: skip
            else:
                out.append(
                    (stamp, cascade, key, None, 0, None, None, "skipped", None, "cooling", None,
                     run_id, 1)
                )  # fmt: skip
    return out[:count]


def build(db: Path, count: int) -> float:
    """Write `count` rows as an old database held them, then fold them in; the fold's seconds."""
    with Store(db) as store:
        conn = store.conn
        conn.execute("BEGIN")
        marks = ", ".join("?" * len(COLUMNS.split(",")))
        conn.executemany(
            f"INSERT INTO attempt_log ({COLUMNS}) VALUES ({marks})", rows(count, time.time())
        )
        conn.execute("COMMIT")
        started = time.perf_counter()
        store.fold_log()
        return time.perf_counter() - started


def timed(args: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([CLI, *args], capture_output=True, check=True, env={"BENCH_KEY": "k"})
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def fold_cost(folder: Path, count: int = 2000, rounds: int = 5) -> tuple[float, float]:
    """Microseconds per logged row (CPU, median of interleaved rounds), with the writers'
    batched folding and without any."""
    with Store(folder / "fold.sqlite") as store:

        def per_row(tag: str) -> float:
            started = time.process_time()
            for i in range(count):
                record = AttemptRecord("c", "p/m", 200, 80, 11, 7, run_id=f"{tag}{i}")
                store.log_attempt(record, time.time())
            return (time.process_time() - started) / count * 1e6

        per_row("warm-up")
        folded, bare = [], []
        every = rollup.FOLD_EVERY
        for r in range(rounds):
            folded.append(per_row(f"a{r}"))
            rollup.FOLD_EVERY = 2**62
            try:
                bare.append(per_row(f"b{r}"))
            finally:
                rollup.FOLD_EVERY = every
        return statistics.median(folded), statistics.median(bare)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the database in DIR and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-views-"))
    folder.mkdir(parents=True, exist_ok=True)
    with Simulator() as sim:
        for key in ENTRIES:
            sim.script_probe(key.split("/")[1], Reply(delay=0.3))
        cfg = folder / "config.toml"
        cfg.write_text(config_text(folder, sim.base_url("openai")))
        started = time.perf_counter()
        fold = build(folder / "db.sqlite", args.rows)
        print(f"built {args.rows} rows in {time.perf_counter() - started:.1f} s;"
              f" folding them into the aggregates took {fold:.1f} s")  # fmt: skip
        size = (
            sqlite3.connect(folder / "db.sqlite")
            .execute("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
            .fetchone()[0]
        )
        print(f"database: {size / 2**20:.0f} MiB")
        print("| command | median s |\n|---|---:|")
        for label, command in [
            ("`llm-cascade --version` (start-up floor)", ["--version"]),
            ("`stats` (24 h)", ["stats", "-c", str(cfg)]),
            ("`stats --since 7d`", ["stats", "-c", str(cfg), "--since", "7d"]),
            ("`stats --since 30d` (every row)", ["stats", "-c", str(cfg), "--since", "30d"]),
            ("`stats --since 30d --json`", ["stats", "-c", str(cfg), "--since", "30d", "--json"]),
            ("`metrics`", ["metrics", "-c", str(cfg)]),
            ("`health`, 1 entry, 300 ms probe", ["health", "-c", str(cfg), "-C", "one"]),
            ("`health`, 10 entries, 300 ms probes", ["health", "-c", str(cfg)]),
        ]:
            print(f"| {label} | {timed(command, args.runs):.3f} |")
    folded, without = fold_cost(folder)
    print(
        f"one logged row: {folded:.0f} µs with the aggregates folded in batches,"
        f" {without:.0f} µs without folding"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
