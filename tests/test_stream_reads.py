"""A stream is read a network read at a time, its pieces handed to the caller one by one: what
the records say the caller saw must be what it was handed, when one read carries many pieces.

A real loopback server sends the whole SSE body in one write, so the client reads it at once.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from pathlib import Path
from typing import Any

from llm_cascade.cascade import Cascade
from llm_cascade.config import load_config
from llm_cascade.events import Done, Reset, Text
from llm_cascade.simulator import Reply, Simulator
from llm_cascade.store import Store
from llm_cascade.types import Conversation

from .support import RawServer, entry, write_config

SSE = {"Content-Type": "text/event-stream"}


def chunk(text: str) -> bytes:
    data = {"model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def config(tmp_path: Path, sim: Simulator, raw: RawServer) -> Path:
    """Cascade `x`: `raw/m` on the raw server, then `sim/b` on the simulator."""
    providers = {"raw": {"type": "openai", "base_url": raw.url + "/v1", "api_key_env": "SIM_KEY"}}
    sim.script("b", Reply("from the simulator"))
    return write_config(tmp_path, sim, {"x": [entry("raw", "m"), "b"]}, providers=providers)


def saved(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "failed").glob("*.json"))]


def test_a_caller_that_leaves_after_one_piece_of_a_read_is_recorded_as_seeing_that_piece(
    tmp_path, sim
):
    body = chunk("one ") + chunk("two ") + chunk("three") + b"data: [DONE]\n\n"

    async def first_piece(cfg: Path) -> str:
        async with Cascade(load_config(cfg)) as engine:
            stream = engine.stream("x", Conversation.single_user_prompt("hi"))
            async with aclosing(stream):
                async for event in stream:
                    if isinstance(event, Text):
                        return event.text
        raise AssertionError("no text came")

    with RawServer(body, headers=SSE) as raw:
        cfg = config(tmp_path, sim, raw)
        assert asyncio.run(first_piece(cfg)) == "one "
    [envelope] = saved(tmp_path)
    assert envelope["status"] == "interrupted"
    assert [e.get("partial") for e in envelope["errors"]] == ["one "]
    with Store(tmp_path / "state" / "db.sqlite") as store:
        [row] = store.recent_attempts(5)
    assert row.outcome == "cancelled"


def test_content_before_a_broken_event_in_the_same_read_reaches_the_caller_first(tmp_path, sim):
    body = chunk("one ") + chunk("two ") + b"data: {not json\n\n" + chunk("never")

    async def collect(cfg: Path) -> list[Any]:
        async with Cascade(load_config(cfg)) as engine:
            return [e async for e in engine.stream("x", Conversation.single_user_prompt("hi"))]

    with RawServer(body, headers=SSE) as raw:
        cfg = config(tmp_path, sim, raw)
        events = asyncio.run(collect(cfg))
    kinds = [type(e) for e in events]
    assert [e.text for e in events[: kinds.index(Reset)] if isinstance(e, Text)] == ["one ", "two "]
    assert isinstance(events[-1], Done) and events[-1].result.entry == "sim/b"
    with Store(tmp_path / "state" / "db.sqlite") as store:
        first = store.recent_attempts(5)[0]
    assert first.provider_model == "raw/m" and first.chunks == 2
    assert "malformed" in (first.error_message or "")
