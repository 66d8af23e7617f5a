"""Replies no vendor should send, from a real server: answer or fail over, never crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.simulator import Simulator

from ..support import RawServer, entry, run_engine, write_config

HUGE = 10**30  # beyond SQLite's 64-bit INTEGER
TOP = 2**63 - 1  # the largest SQLite INTEGER

ANSWERS: dict[str, dict[str, Any]] = {
    "openai": {
        "choices": [{"message": {"content": "odd but fine"}}],
        "usage": {"prompt_tokens": HUGE, "completion_tokens": 3},
    },
    "anthropic": {
        "content": [{"type": "text", "text": "odd but fine"}],
        "usage": {"input_tokens": TOP, "cache_read_input_tokens": 5, "output_tokens": HUGE},
    },
    "gemini": {
        "candidates": [{"content": {"parts": [{"text": "odd but fine"}]}}],
        "usageMetadata": {"promptTokenCount": HUGE, "candidatesTokenCount": 3},
    },
    "ollama": {"message": {"content": "odd but fine"}, "prompt_eval_count": HUGE, "eval_count": 3},
}


def raw_config(tmp_path: Path, sim: Simulator, raw: RawServer, ptype: str) -> Path:
    """Cascade `x`: a `ptype` provider served by `raw`, then the simulator's model `b`."""
    table: dict[str, Any] = {"type": ptype, "base_url": raw.url}
    if ptype != "ollama":
        table["api_key_env"] = "SIM_KEY"
    return write_config(tmp_path, sim, {"x": [entry("odd", "m"), "b"]}, providers={"odd": table})


@pytest.mark.parametrize("ptype", sorted(ANSWERS))
def test_token_counts_too_big_for_sqlite_do_not_lose_the_answer(tmp_path, sim, clock, ptype):
    with RawServer(json.dumps(ANSWERS[ptype]).encode()) as raw:
        result = run_engine(raw_config(tmp_path, sim, raw, ptype), "x", clock=clock)
    assert (result.entry, result.text) == ("odd/m", "odd but fine")
    assert result.response.input_tokens is None  # not a count anyone can use
    assert sim.count() == 0


DEEP = b"[" * 100_000 + b"]" * 100_000  # valid JSON that Python's parser cannot recurse into


@pytest.mark.parametrize(("status", "rule"), [(200, "invalid_response"), (500, "server_error")])
def test_a_deeply_nested_body_fails_over(tmp_path, sim, clock, status, rule):
    with RawServer(DEEP, status) as raw:
        result = run_engine(raw_config(tmp_path, sim, raw, "openai"), "x", clock=clock)
    assert result.entry == "sim/b"
    assert (result.attempts[0].status, result.attempts[0].rule) == (status, rule)
