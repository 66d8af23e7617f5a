"""Configs that put one native provider first and the simulator's OpenAI model `b` behind it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from llm_cascade.cascade import Cascade, CascadeResult
from llm_cascade.clock import ManualClock
from llm_cascade.config import load_config
from llm_cascade.events import Done
from llm_cascade.simulator import Simulator
from llm_cascade.store import Store
from llm_cascade.types import Conversation

from ..support import entry, run_async, write_config

NATIVE = (
    "anthropic",
    "gemini",
    "ollama",
    "azure",
    "mistral",
    "cohere",
    "bedrock",
    "openai_responses",
)
ALL_TYPES = ("openai", *NATIVE)
# The types whose wire format carries tool-call arguments as JSON text (kept as sent); the
# others send an object, which is serialised compactly.
STRING_ARGUMENTS = frozenset({"openai", "azure", "mistral", "cohere", "openai_responses"})

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

# user -> assistant(tool_calls) -> tool results -> user, as a conversation file holds it.
TOOL_ROUND_TRIP: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Weather in Tokyo and Oslo?"},
        {"role": "system", "content": "Use Celsius."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
            ],
        },
        {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"},
        {"role": "tool", "content": "4 degrees", "tool_call_id": "call_2"},
        {"role": "user", "content": "Which is warmer?"},
    ],
    "tools": [WEATHER_TOOL],
}


def round_trip() -> Conversation:
    return Conversation.from_dict(TOOL_ROUND_TRIP)


def provider_table(sim: Simulator, ptype: str, **options: Any) -> dict[str, Any]:
    """A provider of `ptype` aimed at the simulator; keyed ones read SIM_KEY."""
    table: dict[str, Any] = {"type": ptype, "base_url": sim.base_url(ptype)}
    if ptype == "bedrock":  # AWS credentials the simulator signs with, and a region
        table.update(api_key_env="SIM_AWS_KEY", region="us-east-1")
    elif ptype != "ollama":  # Ollama takes no key
        table["api_key_env"] = "SIM_KEY"
    return {**table, **options}


def vendor_config(
    tmp_path: Path,
    sim: Simulator,
    ptype: str,
    model: str = "m",
    *,
    fallback: bool = True,
    provider_options: dict[str, Any] | None = None,
    **entry_options: Any,
) -> Path:
    """Cascade `x`: provider `ptype`'s `model`, then (if `fallback`) the OpenAI model `b`."""
    entries: list[Any] = [entry(ptype, model, **entry_options)]
    if fallback:
        entries.append("b")
    providers = {ptype: provider_table(sim, ptype, **(provider_options or {}))}
    return write_config(tmp_path, sim, {"x": entries}, providers=providers)


def cooldown_rows(tmp_path: Path) -> dict[str, int]:
    """`provider_model -> failures` of every cooldown row."""
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        return dict(conn.execute("SELECT provider_model, failures FROM cooldown").fetchall())


def post(sim: Simulator, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """One raw request to the simulator, for checking the rules it enforces."""
    return httpx.post(sim.url + path, json=body, headers=headers, timeout=5)


def stream_engine(
    config_path: Path, clock: ManualClock, conversation: Conversation | None = None
) -> CascadeResult:
    """Cascade `x` run in-process as a stream (`Cascade.stream`), to its `Done`."""

    async def go() -> CascadeResult:
        config = load_config(config_path)
        asked = conversation or Conversation.single_user_prompt("hello")
        with Store(config.database_path) as store:
            async with Cascade(config, store=store, clock=clock) as engine:
                async for event in engine.stream("x", asked):
                    if isinstance(event, Done):
                        return event.result
        raise AssertionError("a stream ends with Done or raises")

    return run_async(go())
