"""`LLMCascade.get_response` against `Cascade.run`: what the library layer costs per call.

    python bench/bench_library.py [--rounds N] [--calls N]

Both answer the same one-entry cascade from the simulator on 127.0.0.1 (in this process),
through one HTTP client and one database each, in alternating rounds so machine load hits
both alike; the table shows the median time per call of each and the ratio to Cascade.run.
The same for `get_structured_json_response` with a typical 20-field schema against
`Cascade.run` of the same conversation (schema, check and all).
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_schema import typical

from llm_cascade import LLMCascade, Response
from llm_cascade.cascade import Cascade
from llm_cascade.config import load_config
from llm_cascade.library import conversation_of
from llm_cascade.simulator import Reply, Simulator
from llm_cascade.structured import output_format
from llm_cascade.types import Conversation

CONFIG = """\
keyring = false
[providers.sim]
type = "openai"
base_url = "{url}"
api_key_env = "BENCH_KEY"
[cascades.one]
entries = [{{ provider = "sim", model = "ok" }}]
[database]
path = "{dir}/db.sqlite"
[failure_persistence]
dir = "{dir}/failed"
"""


async def timed(call: Callable[[], Awaitable[object]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def main(rounds: int, calls: int) -> None:
    import os

    os.environ["BENCH_KEY"] = "bench-key-0123456789"
    schema, value = typical()
    with Simulator() as sim, tempfile.TemporaryDirectory() as work:
        path = Path(work) / "config.toml"
        path.write_text(CONFIG.format(url=sim.base_url("openai"), dir=work))
        config = load_config(path)
        conversation = Conversation.single_user_prompt("hi")
        engine = Cascade(config)
        library = LLMCascade("one", config=config)
        sim.script("ok", Reply("an answer"))
        structured_conversation = conversation.with_output(output_format(schema))
        pairs = {
            "plain": [
                ("Cascade.run", lambda: engine.run("one", conversation)),
                ("get_response", lambda: library.get_response("hi")),
            ],
            "schema": [
                ("Cascade.run", lambda: engine.run("one", structured_conversation)),
                ("get_structured", lambda: library.get_structured_json_response(schema, "hi")),
            ],
        }
        results: dict[tuple[str, str], list[float]] = {}
        await engine.run("one", conversation)  # warm both up: clients, database, imports
        await library.get_response("hi")
        for i in range(rounds):
            for kind, pair in pairs.items():
                sim.script("ok", Reply("an answer" if kind == "plain" else json.dumps(value)))
                for name, call in pair if i % 2 else reversed(pair):  # neither always first
                    results.setdefault((kind, name), []).append(await timed(call, calls))
        # What get_response adds around Cascade.run, timed alone (no I/O, so little noise).
        result = await engine.run("one", conversation)
        start = time.perf_counter()
        for _ in range(2000):
            Response.of(result)
            library._run_options({})
            conversation_of("hi", None, None, None)
        wrapper_us = (time.perf_counter() - start) / 2000 * 1e6
        await engine.aclose()
        await library.aclose()
    for kind in ("plain", "schema"):
        base = statistics.median(results[(kind, "Cascade.run")])
        for (each, name), times in results.items():
            if each == kind:
                median = statistics.median(times)
                print(f"{kind:6} {name:15} {median:7.0f} µs per call ({median / base:5.3f} x)")
    plain = statistics.median(results[("plain", "Cascade.run")])
    print(f"get_response's own work: {wrapper_us:.0f} µs a call ({wrapper_us / plain:.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
