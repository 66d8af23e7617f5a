"""In-process costs against bare httpx, measured in one run, rounds interleaved.

    python bench/bench_inprocess.py [--rounds N]

The simulator runs in its own process, so the CPU time measured here is the client's alone.
Cases (each a ratio to its httpx baseline of the same run):

- one whole call: `Cascade.run` vs a bare httpx POST (wall and CPU per call);
- time to the first delta: `Cascade.stream` vs a bare httpx stream of the same answer;
- CPU per chunk of a 2,000-chunk answer: `Cascade.stream` vs bare httpx `aiter_lines` plus
  `json.loads` per line;
- peak memory of a 1 MiB streamed answer through `Cascade.stream` (tracemalloc), as a multiple
  of the answer's size;
- 500 concurrent calls, three batches each on a fresh client (as a new process would have):
  `Cascade.run` against bare httpx POSTs through the same kind of client, so the cost of
  opening the connections (the first batch) is told apart from the engine's.

Never part of the test suite; numbers go to bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from llm_cascade.cascade import Cascade
from llm_cascade.clock import ManualClock
from llm_cascade.config import parse_config
from llm_cascade.events import Text
from llm_cascade.http_client import new_client
from llm_cascade.store import Store
from llm_cascade.types import Conversation

CHUNKS = 2000
BIG = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    script = {
        "ok": [{"type": "reply", "text": "hello there"}],
        "chunky": [{"type": "reply", "text": "x " * CHUNKS, "stream": {"chunks": CHUNKS}}],
        "big": [{"type": "reply", "text": "y" * BIG, "stream": {"chunks": 256}}],
    }
    (work / "script.json").write_text(json.dumps(script))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_cascade.simulator", "--port", str(port), "--script",
         str(work / "script.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def config(url: str, work: Path) -> Any:
    entries = {m: {"entries": [{"provider": "sim", "model": m}]} for m in ("ok", "chunky", "big")}
    return parse_config(
        {
            "keyring": False,
            "providers": {
                "sim": {"type": "openai", "base_url": url + "/v1", "api_key_env": "BENCH_KEY"}
            },
            "cascades": entries,
            "database": {"path": str(work / "db.sqlite")},
            "failure_persistence": {"dir": str(work / "failed")},
        },
        work / "config.toml",
    )


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    """(wall, cpu) seconds per call over n calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


class Probes:
    """The measured calls: each bare httpx one beside the engine's."""

    def __init__(self, client: httpx.AsyncClient, engine: Cascade, url: str) -> None:
        self.client, self.engine = client, engine
        self.chat = url + "/v1/chat/completions"
        self.headers = {"Authorization": "Bearer bench"}
        self.counter = 0

    def prompt(self) -> Conversation:
        self.counter += 1
        return Conversation.single_user_prompt(f"hi {self.counter}")

    def body(self, model: str, stream: bool = False) -> dict[str, Any]:
        b: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        if stream:
            b["stream"] = True
        return b

    async def bare_post(self) -> None:
        reply = await self.client.post(self.chat, json=self.body("ok"), headers=self.headers)
        reply.raise_for_status()

    async def engine_run(self) -> None:
        await self.engine.run("ok", self.prompt())

    async def _bare_lines(self, model: str) -> httpx.Response:
        req = self.client.build_request(
            "POST", self.chat, json=self.body(model, True), headers=self.headers
        )
        return await self.client.send(req, stream=True)

    async def bare_first(self) -> float:
        start, first = time.perf_counter(), 0.0
        response = await self._bare_lines("ok")
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content"' in line:
                first = first or time.perf_counter() - start
        await response.aclose()
        return first

    async def engine_first(self) -> float:
        start, first = time.perf_counter(), 0.0
        async for event in self.engine.stream("ok", self.prompt()):
            if isinstance(event, Text) and not first:
                first = time.perf_counter() - start
        return first

    async def bare_chunks(self) -> None:
        response = await self._bare_lines("chunky")
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                json.loads(line[6:])
        await response.aclose()

    async def engine_chunks(self) -> None:
        async for _ in self.engine.stream("chunky", self.prompt()):
            pass


async def measure(probes: Probes, rounds: int, note: Callable[[str, float], None]) -> None:
    for _ in range(3):  # warm up connections and imports
        await probes.bare_post()
        await probes.engine_run()
        await probes.engine_first()
    for _ in range(rounds):
        for name, fn in (("post", probes.bare_post), ("run", probes.engine_run)):
            wall, cpu = await timed(fn, 20)
            note(f"{name}_wall", wall)
            note(f"{name}_cpu", cpu)
        note("bare_first", statistics.median([await probes.bare_first() for _ in range(10)]))
        note("engine_first", statistics.median([await probes.engine_first() for _ in range(10)]))
        for name, fn in (("bare", probes.bare_chunks), ("engine", probes.engine_chunks)):
            _, cpu = await timed(fn, 2)
            note(f"{name}_chunk_cpu", cpu / CHUNKS)
    tracemalloc.start()
    async for _ in probes.engine.stream("big", probes.prompt()):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    note("big_peak", peak / BIG)


async def main(url: str, work: Path, rounds: int) -> dict[str, Any]:
    os.environ["BENCH_KEY"] = "bench"
    app = config(url, work)
    results: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    async with httpx.AsyncClient() as client:
        with Store(app.database_path) as store:
            engine = Cascade(app, store=store, client=client, clock=ManualClock())
            probes = Probes(client, engine, url)
            await measure(probes, rounds, note)
    async with new_client() as bare:  # a fresh pool: the first batch opens the connections
        for batch in range(3):
            start = time.perf_counter()
            await asyncio.gather(
                *(Probes(bare, probes.engine, url).bare_post() for _ in range(500))
            )
            note(f"bare_batch{batch}", time.perf_counter() - start)
    async with Cascade(app) as fresh:  # its own client and pool, as a new process would have
        for batch in range(3):
            start = time.perf_counter()
            await asyncio.gather(*(fresh.run("ok", probes.prompt()) for _ in range(500)))
            note(f"batch{batch}", time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in results.items()}


def report(m: dict[str, Any]) -> None:
    rows = [
        ("bare httpx POST (baseline)", m["post_wall"] * 1e3, m["post_cpu"] * 1e3, 1.0),
        ("`Cascade.run`, one entry answers", m["run_wall"] * 1e3, m["run_cpu"] * 1e3,
         m["run_cpu"] / m["post_cpu"]),
    ]  # fmt: skip
    print("| one whole call | wall ms | CPU ms | CPU x baseline |\n|---|---:|---:|---:|")
    for name, wall, cpu, ratio in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {ratio:.2f} |")
    first = m["engine_first"] / m["bare_first"]
    extra = (m["engine_first"] - m["bare_first"]) * 1e3
    print(
        f"\ntime to first delta: bare httpx stream {m['bare_first'] * 1e3:.2f} ms,"
        f" Cascade.stream {m['engine_first'] * 1e3:.2f} ms ({first:.2f}x, +{extra:.2f} ms)"
    )
    chunk = m["engine_chunk_cpu"] / m["bare_chunk_cpu"]
    print(
        f"CPU per chunk ({CHUNKS} chunks): bare {m['bare_chunk_cpu'] * 1e6:.1f} µs,"
        f" Cascade.stream {m['engine_chunk_cpu'] * 1e6:.1f} µs ({chunk:.2f}x)"
    )
    print(f"peak memory of a 1 MiB streamed answer: {m['big_peak']:.2f}x its size")
    for name, key in (("bare httpx", "bare_batch"), ("Cascade.run", "batch")):
        print(f"500 concurrent calls, {name}: first batch {m[key + '0']:.2f} s,"
              f" then {m[key + '1']:.2f} s and {m[key + '2']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sim, base = start_simulator(Path(tmp))
        try:
            report(asyncio.run(main(base, Path(tmp), args.rounds)))
        finally:
            sim.terminate()
            sim.wait()
