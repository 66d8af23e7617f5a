"""The gateway's cost, measured against the simulator on loopback (not a test: numbers only).

    python bench/bench_serve.py [--requests N] [--concurrency 50] [--peers-venv DIR]

One run starts the simulator and `llm-cascade serve` (one worker) as processes, then sends the
same Chat Completions request at the given concurrency, in interleaved rounds, straight to the
simulator and through the gateway. It reports latency percentiles of both and their
difference (what the gateway adds: HTTP in, translation, the engine's cooldown read, prompt
file and attempt row, HTTP out), requests per second through the gateway, and the worker's
resident memory. With `--peers-venv` (a venv with `litellm[proxy]`, never a project
dependency) the LiteLLM proxy is measured the same way against the same simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
KEY = "bench-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"{url} never came up")


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(found.group(1)) / 1024 if found else float("nan")


async def load(
    url: str, model: str, requests: int, concurrency: int, key: str
) -> tuple[list[float], float]:
    """Latencies (ms) of `requests` POSTs, `concurrency` at a time, and the elapsed seconds."""
    latencies: list[float] = []
    queue = iter(range(requests))
    body = {**BODY, "model": model}
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for i in queue:  # distinct prompts, as real traffic has
                asked = {**body, "messages": [{"role": "user", "content": f"hello {i}"}]}
                began = time.perf_counter()
                reply = await client.post("/chat/completions", json=asked, headers=headers)
                latencies.append((time.perf_counter() - began) * 1000)
                if reply.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {reply.status_code}: {reply.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - began


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per target and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--peers-venv", type=Path, help="a venv with litellm[proxy] installed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    sim_port, gw_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    config = work / "config.toml"
    config.write_text(
        f'keyring = false\n[providers.sim]\ntype = "openai"\nbase_url = "{sim_url}/v1"\n'
        'api_key_env = "BENCH_KEY"\n[cascades.fast]\n'
        'entries = [{ provider = "sim", model = "m" }]\n'
        f'[database]\npath = "{work}/db.sqlite"\n[failure_persistence]\ndir = "{work}/failed"\n'
    )
    env = {**os.environ, "BENCH_KEY": KEY, "LLM_CASCADE_LOG": "warning"}
    cli = str(Path(sys.executable).with_name("llm-cascade"))
    procs = [start([sys.executable, "-m", "llm_cascade.simulator", "--port", str(sim_port)])]
    procs.append(start([cli, "serve", "-c", str(config), "--port", str(gw_port)], env))
    targets = {
        "direct": (f"{sim_url}/v1", "m"),
        "gateway": (f"http://127.0.0.1:{gw_port}/v1", "fast"),
    }
    if args.peers_venv:
        peer_port = free_port()
        peer_cfg = work / "litellm.yaml"
        peer_cfg.write_text(
            "model_list:\n  - model_name: fast\n    litellm_params:\n      model: openai/m\n"
            f"      api_base: {sim_url}/v1\n      api_key: {KEY}\n"
            "litellm_settings:\n  telemetry: false\n"
        )
        peer_env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
        peer_env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"  # loopback
        litellm = str(args.peers_venv / "bin" / "litellm")
        procs.append(
            start(
                [
                    litellm,
                    "--config",
                    str(peer_cfg),
                    "--port",
                    str(peer_port),
                    "--num_workers",
                    "1",
                ],
                peer_env,
            )
        )
        targets["litellm"] = (f"http://127.0.0.1:{peer_port}", "fast")
    try:
        wait_up(f"{sim_url}/_sim/requests")
        wait_up(f"http://127.0.0.1:{gw_port}/healthz")
        if "litellm" in targets:
            wait_up(f"{targets['litellm'][0]}/health/liveliness")
        results: dict[str, list[float]] = {name: [] for name in targets}
        elapsed: dict[str, float] = dict.fromkeys(targets, 0.0)
        for url, model in targets.values():  # warm up: connections, imports, caches
            asyncio.run(load(url, model, 200, args.concurrency, KEY))
        for _ in range(args.rounds):
            for name, (url, model) in targets.items():
                latencies, seconds = asyncio.run(
                    load(url, model, args.requests, args.concurrency, KEY)
                )
                results[name] += latencies
                elapsed[name] += seconds
        total = args.requests * args.rounds
        print(f"{total} requests per target, concurrency {args.concurrency}, one worker each")
        print(f"{'target':<10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for name, values in results.items():
            rps = total / elapsed[name]
            print(f"{name:<10} {pct(values, 0.5):8.2f} {pct(values, 0.99):8.2f} {rps:8.0f}")
        direct, gw = results["direct"], results["gateway"]
        p50, p99 = pct(gw, 0.5) - pct(direct, 0.5), pct(gw, 0.99) - pct(direct, 0.99)
        print(f"added by the gateway: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        print(f"gateway worker RSS after the run: {rss_mib(procs[1].pid):.1f} MiB")
        if "litellm" in targets:
            ratio = (total / elapsed["gateway"]) / (total / elapsed["litellm"])
            print(f"gateway req/s per worker = {ratio:.1f} x LiteLLM proxy's")
        print(
            f"(mean direct {statistics.mean(direct):.2f} ms, gateway {statistics.mean(gw):.2f} ms)"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


if __name__ == "__main__":
    main()
