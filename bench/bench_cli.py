"""Start-up, per-request overhead and failover latency, as ratios to baselines of the same run.

    python bench/bench_cli.py [--runs N]

Process timings are medians of N runs of real commands; the simulator runs on 127.0.0.1 in
this process. Baselines: `python -c "import httpx"` for start-up, and a bare httpx POST to the
same simulator for the per-request cost. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from llm_cascade.cascade import Cascade
from llm_cascade.clock import ManualClock
from llm_cascade.config import load_config
from llm_cascade.simulator import Fail, Reply, Simulator
from llm_cascade.store import Store
from llm_cascade.types import Conversation

CLI = [str(Path(sys.executable).with_name("llm-cascade"))]

CONFIG = """\
keyring = {keyring}
[providers.sim]
type = "openai"
base_url = "{url}"
api_key_env = "BENCH_KEY"

[cascades.one]
entries = [{{ provider = "sim", model = "ok" }}]

[cascades.failover]
entries = [{{ provider = "sim", model = "down" }}, {{ provider = "sim", model = "ok" }}]

[database]
path = "{dir}/db.sqlite"

[failure_persistence]
dir = "{dir}/failed"
"""


def median_s(command: list[str], runs: int, env: dict[str, str], before=None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        subprocess.run(
            command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def per_request(sim: Simulator, config_path: Path, n: int) -> tuple[float, float]:
    """(bare httpx POST, engine run) median seconds, one shared client, same simulator."""
    config = load_config(config_path)
    body = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": "Bearer bench"}
    bare, engine_times = [], []
    async with httpx.AsyncClient() as client:
        url = sim.base_url("openai") + "/chat/completions"
        for _ in range(n):
            start = time.perf_counter()
            (await client.post(url, json=body, headers=headers)).raise_for_status()
            bare.append(time.perf_counter() - start)
        with Store(config.database_path) as store:
            engine = Cascade(config, store=store, client=client, clock=ManualClock())
            conversation = Conversation.single_user_prompt("hi")
            for _ in range(n):
                start = time.perf_counter()
                await engine.run("one", conversation)
                engine_times.append(time.perf_counter() - start)
    return statistics.median(bare), statistics.median(engine_times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--peers-venv",
        type=Path,
        help="a venv with `llm` and `litellm` installed, to time their start-up in the same run",
    )
    args = parser.parse_args()
    os.environ["BENCH_KEY"] = "bench-key"
    with tempfile.TemporaryDirectory() as tmp, Simulator() as sim:
        work = Path(tmp)
        sim.script("down", Fail(500))
        sim.script("ok", Reply("fine"))
        rows = []
        for keyring in ("false", "true"):
            cfg = work / f"config-{keyring}.toml"
            cfg.write_text(CONFIG.format(url=sim.base_url("openai"), dir=work, keyring=keyring))
        env = {
            **os.environ,
            "BENCH_KEY": "bench-key",
            "LLM_CASCADE_CONFIG": str(work / "config-false.toml"),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        }
        python = [sys.executable]
        baseline = median_s([*python, "-c", "import httpx"], args.runs, env)
        rows.append(("python -c 'import httpx' (baseline)", baseline))
        rows.append(("python -c 'pass'", median_s([*python, "-c", "pass"], args.runs, env)))
        rows.append(("llm-cascade --version", median_s([*CLI, "--version"], args.runs, env)))
        rows.append(("llm-cascade --help", median_s([*CLI, "--help"], args.runs, env)))
        rows.append(
            (
                "llm-cascade run (1 entry answers)",
                median_s([*CLI, "run", "-C", "one", "-p", "hi"], args.runs, env),
            )
        )
        env_kr = {**env, "LLM_CASCADE_CONFIG": str(work / "config-true.toml")}
        rows.append(
            (
                "llm-cascade run, keyring lookup first",
                median_s([*CLI, "run", "-C", "one", "-p", "hi"], args.runs, env_kr),
            )
        )

        def reopen() -> None:
            with Store(work / "db.sqlite") as store:
                store.clear_cooldowns()

        rows.append(
            (
                "llm-cascade run (500, then failover)",
                median_s(
                    [*CLI, "run", "-C", "failover", "-p", "hi"], args.runs, env, before=reopen
                ),
            )
        )
        subprocess.run(
            [*CLI, "run", "-C", "failover", "-p", "hi"], env=env, check=True, capture_output=True
        )
        rows.append(
            (
                "llm-cascade run (skip cooling entry)",
                median_s([*CLI, "run", "-C", "failover", "-p", "hi"], args.runs, env),
            )
        )
        if args.peers_venv:
            peer_bin = args.peers_venv / "bin"
            rows.append(
                (
                    "peer: llm --version",
                    median_s([str(peer_bin / "llm"), "--version"], args.runs, env),
                )
            )
            rows.append(
                (
                    "peer: python -c 'import litellm'",
                    median_s([str(peer_bin / "python"), "-c", "import litellm"], args.runs, env),
                )
            )
        bare, engine = asyncio.run(per_request(sim, work / "config-false.toml", 200))

    print(f"{'command':<42} {'median ms':>10} {'x baseline':>11}")
    for name, seconds in rows:
        print(f"{name:<42} {seconds * 1000:>10.1f} {seconds / baseline:>11.2f}")
    print()
    print("in-process, per request (median of 200, shared client):")
    print(f"  bare httpx POST to the simulator      {bare * 1000:8.2f} ms  (baseline)")
    print(f"  Cascade.run, one entry answers        {engine * 1000:8.2f} ms  x{engine / bare:.2f}")
    print(f"  engine overhead (log, prompt saved and removed)  {(engine - bare) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
