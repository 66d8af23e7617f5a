"""The gateway's cost, measured against the simulator on loopback (not a test: numbers only).

    python bench/bench_serve.py [--levels 1,10,50] [--rounds 3] [--peers-venv DIR]

One run starts the simulator and `llm-cascade serve` (one worker) as processes, then sends the
same Chat Completions request (a distinct prompt each time, as real traffic has) at each
concurrency level, in interleaved rounds, straight to the simulator and through the gateway.
It reports latency percentiles of both and their difference (what the gateway adds: HTTP in,
translation, the engine's cooldown read, prompt file and attempt row, HTTP out), requests per
second through each target, and the worker's resident memory. With `--peers-venv` (a venv with
`litellm[proxy]`, never a project dependency) the LiteLLM proxy is measured the same way
against the same simulator.

The load generator is a minimal HTTP/1.1 keep-alive client on raw asyncio protocols (one
connection per concurrent request, no pool, no header objects), a tenth of the CPU an httpx
client spends on a request, so on a small machine it takes as little as possible from the
servers it measures; the same generator measures every target in the same run, and the
report shows its own CPU per request beside the workers'. With `--before-venv` a gateway of
another build (installed in its own venv) is measured the same way, as "before".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

KEY = "bench-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, path: str, timeout: float = 180) -> None:
    """Until `GET path` on 127.0.0.1:port answers at all."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
                if s.recv(16).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"127.0.0.1:{port}{path} never came up")


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(found.group(1)) / 1024 if found else float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Conn(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its whole response."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = -1  # bytes of the response still missing once the head is parsed
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", self.buf[:head_end])
            if found is None:
                self._done(SystemExit(f"no content-length: {bytes(self.buf[:200])!r}"))
                return
            self.need = head_end + 4 + int(found.group(1))
        if len(self.buf) >= self.need:
            response = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            self.need = -1
            self._done(response)

    def _done(self, result: bytes | BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if isinstance(result, bytes):
                waiter.set_result(result)
            else:
                waiter.set_exception(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done(SystemExit(f"the server closed a connection ({exc})"))

    async def exchange(self, request: bytes) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def request_bytes(port: int, path: str, model: str, n: int) -> bytes:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": f"hello {n}"}], "max_tokens": 16}
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def load(
    port: int, path: str, model: str, requests: int, concurrency: int
) -> tuple[list[float], float]:
    """Latencies (ms) of `requests` POSTs, `concurrency` at a time, and the elapsed seconds."""
    loop = asyncio.get_running_loop()
    conns = [
        (await loop.create_connection(_Conn, "127.0.0.1", port))[1] for _ in range(concurrency)
    ]
    latencies: list[float] = []
    queue = iter(range(requests))
    clock = time.perf_counter

    async def worker(conn: _Conn) -> None:
        for i in queue:
            asked = request_bytes(port, path, model, i)
            began = clock()
            response = await conn.exchange(asked)
            latencies.append((clock() - began) * 1000)
            if not response.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"port {port}: {response[:300]!r}")

    began = clock()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
        return latencies, clock() - began
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()


def event_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def litellm_target(venv: Path, work: Path, sim_port: int) -> tuple[subprocess.Popen[bytes], Target]:
    """The LiteLLM proxy (one worker) in front of the same simulator."""
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: fast\n    litellm_params:\n      model: openai/m\n"
        f"      api_base: http://127.0.0.1:{sim_port}/v1\n      api_key: {KEY}\n"
        "litellm_settings:\n  telemetry: false\n"
    )
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"  # loopback
    cmd = [str(venv / "bin" / "litellm"), "--config", str(config), "--port", str(port)]
    proc = start([*cmd, "--num_workers", "1"], env)
    return proc, (port, "/chat/completions", "fast", "/health/liveliness")


Target = tuple[int, str, str, str]  # port, POST path, model, GET path that says it is up


def report(
    levels: list[int],
    targets: list[str],
    results: dict[tuple[str, int], list[float]],
    elapsed: dict[tuple[str, int], float],
    cpu: dict[tuple[str, int], float],
) -> None:
    print(
        f"{'c':>3} {'target':<8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'added p50':>10}"
        f" {'added p99':>10} {'CPU µs/req':>11}"
    )
    for level in levels:
        direct = results["direct", level]
        for name in targets:
            values = results[name, level]
            rps = len(values) / elapsed[name, level]
            added = " " * 22
            if name != "direct":
                added = (
                    f" {pct(values, 0.5) - pct(direct, 0.5):+10.2f}"
                    f" {pct(values, 0.99) - pct(direct, 0.99):+10.2f}"
                )
            print(
                f"{level:>3} {name:<8} {pct(values, 0.5):8.2f} {pct(values, 0.99):8.2f}"
                f" {rps:7.0f}{added} {cpu[name, level] / len(values) * 1e6:11.0f}"
            )
    for name in targets:
        if name not in ("direct", "gateway"):
            ratios = ", ".join(
                f"c={c} {elapsed[name, c] / elapsed['gateway', c]:.1f}x" for c in levels
            )
            print(f"gateway req/s per worker / {name}'s: {ratios}")


def measure(
    runner: asyncio.Runner,
    targets: dict[str, Target],
    procs: dict[str, subprocess.Popen[bytes]],
    levels: list[int],
    args: argparse.Namespace,
) -> tuple[
    dict[tuple[str, int], list[float]], dict[tuple[str, int], float], dict[tuple[str, int], float]
]:
    """Latencies, elapsed seconds and CPU seconds per (target, level), in interleaved rounds."""
    results: dict[tuple[str, int], list[float]] = {(n, c): [] for n in targets for c in levels}
    elapsed = dict.fromkeys(results, 0.0)
    cpu = dict.fromkeys(results, 0.0)  # the target's process (the generator's for direct)
    for _ in range(args.rounds):
        for level in levels:
            for name, (port, path, model, _probe) in targets.items():
                pid = procs[name].pid
                began = time.process_time() if name == "direct" else cpu_s(pid)
                latencies, seconds = runner.run(
                    load(port, path, model, args.requests * level, level)
                )
                ended = time.process_time() if name == "direct" else cpu_s(pid)
                cpu[name, level] += ended - began
                results[name, level] += latencies
                elapsed[name, level] += seconds
    return results, elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", default="1,10,50", help="concurrency levels, comma-separated")
    parser.add_argument("--requests", type=int, default=40, help="per target, round and client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peers-venv", type=Path, help="a venv with litellm[proxy] installed")
    parser.add_argument("--before-venv", type=Path, help="a venv with another build, as 'before'")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    sim_port = free_port()
    config = work / "config.toml"
    config.write_text(
        f'keyring = false\n[providers.sim]\ntype = "openai"\n'
        f'base_url = "http://127.0.0.1:{sim_port}/v1"\napi_key_env = "BENCH_KEY"\n'
        '[cascades.fast]\nentries = [{ provider = "sim", model = "m" }]\n'
        f'[database]\npath = "{work}/db.sqlite"\n[failure_persistence]\ndir = "{work}/failed"\n'
    )
    env = {**os.environ, "BENCH_KEY": KEY, "LLM_CASCADE_LOG": "warning"}
    simulator = [sys.executable, "-m", "llm_cascade.simulator", "--port", str(sim_port)]
    procs = {"direct": start(simulator)}
    targets: dict[str, Target] = {
        "direct": (sim_port, "/v1/chat/completions", "m", "/_sim/requests")
    }
    gateways = {"gateway": Path(sys.executable).parent}
    if args.before_venv:
        gateways["before"] = args.before_venv / "bin"
    for name, bin_dir in gateways.items():
        port = free_port()
        cmd = [str(bin_dir / "llm-cascade"), "serve", "-c", str(config), "--port", str(port)]
        procs[name] = start(cmd, env)
        targets[name] = (port, "/v1/chat/completions", "fast", "/healthz")
    if args.peers_venv:
        procs["litellm"], targets["litellm"] = litellm_target(args.peers_venv, work, sim_port)
    runner = asyncio.Runner(loop_factory=event_loop())
    try:
        for port, _path, _model, probe in targets.values():
            wait_up(port, probe)
        for port, path, model, _probe in targets.values():  # warm up: imports, caches
            runner.run(load(port, path, model, 300, 50))
        results, elapsed, cpu = measure(runner, targets, procs, levels, args)
        print(f"{args.rounds} rounds, {args.requests} requests per client and round, one worker;")
        print("CPU: of the target's worker (direct: of the load generator)")
        report(levels, list(targets), results, elapsed, cpu)
        for name in gateways:
            print(f"{name} worker RSS after the run: {rss_mib(procs[name].pid):.1f} MiB")
    finally:
        runner.close()
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
