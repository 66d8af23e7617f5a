"""Streams end to end, through the library, over real HTTP against the simulator: each vendor's
format, failover before the first token, the mid-stream policies, time limits, cancellation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.cascade import Cascade, RunOptions
from llm_cascade.config import load_config
from llm_cascade.errors import CascadeFailed
from llm_cascade.events import Done, EntryStarted, Reset, Switched, Text, ToolCallDelta
from llm_cascade.simulator import Fail, Reply, SimToolCall, Simulator, Stream
from llm_cascade.store import Store
from llm_cascade.types import Conversation

from .support import entry, write_config

TYPES = ("openai", "anthropic", "gemini", "ollama")


def providers(sim: Simulator, **options: Any) -> dict[str, dict[str, Any]]:
    """One provider of each type, all on the simulator."""
    out = {}
    for kind in TYPES:
        table: dict[str, Any] = {"type": kind, "base_url": sim.base_url(kind), **options}
        if kind != "ollama":
            table["api_key_env"] = "SIM_KEY"
        out[kind] = table
    return out


def config(tmp_path: Path, sim: Simulator, entries: list[dict[str, Any]], **extra: Any) -> Path:
    cascade = {"entries": entries, **extra}
    path = write_config(tmp_path, sim, {}, providers=providers(sim))
    text = path.read_text()
    import tomli_w

    doc = {"cascades": {"x": cascade}}
    path.write_text(text + "\n" + tomli_w.dumps(doc))
    return path


async def _collect(cfg: Path, prompt: str | Conversation, **options: Any) -> list[Any]:
    conversation = (
        prompt if isinstance(prompt, Conversation) else Conversation.single_user_prompt(prompt)
    )
    app = load_config(cfg)
    async with Cascade(app) as engine:
        return [e async for e in engine.stream("x", conversation, RunOptions(**options))]


def collect(cfg: Path, prompt: str | Conversation = "hello", **options: Any) -> list[Any]:
    return asyncio.run(_collect(cfg, prompt, **options))


def texts(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, Text)]


def rows(tmp_path: Path) -> list[Any]:
    with Store(tmp_path / "state" / "db.sqlite") as store:
        return store.recent_attempts(50)


def saved(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "failed").glob("*.json"))]


# --- each vendor's stream ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", TYPES)
def test_each_vendor_streams_its_answer_piece_by_piece(tmp_path, sim, kind):
    sim.script(
        "m", Reply("one two three four", stream=Stream(pieces=("one ", "two ", "three ", "four")))
    )
    cfg = config(tmp_path, sim, [entry(kind, "m")])
    events = collect(cfg)
    assert texts(events) == ["one ", "two ", "three ", "four"]
    assert isinstance(events[0], EntryStarted) and events[0].entry == f"{kind}/m"
    done = events[-1]
    assert isinstance(done, Done)
    assert done.result.text == "one two three four"
    assert done.result.response.input_tokens == 11 and done.result.response.output_tokens == 7
    assert done.result.response.stop_reason
    [row] = rows(tmp_path)
    assert (row.outcome, row.chunks) == ("ok", 4)
    assert row.ttft_ms is not None and row.ttft_ms <= row.latency_ms
    assert saved(tmp_path) == []  # delivered


@pytest.mark.parametrize("kind", TYPES)
def test_each_vendor_streams_tool_calls_that_assemble_whole(tmp_path, sim, kind):
    calls = (
        SimToolCall("get_weather", {"city": "Oslo", "days": 3}),
        SimToolCall("get_time", {"tz": "UTC"}),
    )
    sim.script("m", Reply("", tool_calls=calls, stream=Stream(tool_fragments=3)))
    cfg = config(tmp_path, sim, [entry(kind, "m")])
    events = collect(cfg)
    assert any(isinstance(e, ToolCallDelta) for e in events)
    result = events[-1].result
    assert [(c.name, c.parsed_arguments()) for c in result.response.tool_calls] == [
        ("get_weather", {"city": "Oslo", "days": 3}),
        ("get_time", {"tz": "UTC"}),
    ]


def test_parallel_tool_calls_that_reuse_index_zero_stay_apart(tmp_path, sim):
    calls = (SimToolCall("a", {"x": 1}), SimToolCall("b", {"y": 2}))
    sim.script(
        "m", Reply("", tool_calls=calls, stream=Stream(tool_fragments=2, reuse_index_zero=True))
    )
    cfg = config(tmp_path, sim, [entry("openai", "m")])
    result = collect(cfg)[-1].result
    assert [(c.name, c.parsed_arguments()) for c in result.response.tool_calls] == [
        ("a", {"x": 1}),
        ("b", {"y": 2}),
    ]


def test_openai_asks_for_usage_unless_told_not_to(tmp_path, sim):
    cfg = config(tmp_path, sim, [entry("openai", "m"), entry("openai", "n", stream_usage=False)])
    collect(cfg)
    assert sim.requests[0].body["stream_options"] == {"include_usage": True}
    sim.script("m", Fail(500))
    collect(cfg)
    assert "stream_options" not in sim.requests[-1].body and sim.requests[-1].body["stream"] is True


# --- failover before the first token ----------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        Fail(429, retry_after="30"),
        Reply("x y", stream=Stream(error_after=0)),
        Reply("x y", stream=Stream(drop_after=0)),
        Reply("x y", stream=Stream(malformed_after=0)),
        Reply("x y", stream=Stream(terminator=False, chunks=1, drop_after=0)),
    ],
    ids=["429", "error-event", "dropped", "malformed", "cut"],
)
def test_a_failure_before_the_first_token_fails_over_like_a_whole_request(tmp_path, sim, first):
    sim.script("a", first)
    sim.script("b", Reply("from b"))
    cfg = config(tmp_path, sim, [entry("anthropic", "a"), entry("openai", "b")])
    events = collect(cfg)
    assert not any(isinstance(e, Reset | Switched) for e in events)  # nothing had been shown
    assert "".join(texts(events)) == "from b"
    assert events[-1].result.entry == "openai/b"


def test_keep_alives_never_count_as_the_first_token(tmp_path, sim):
    """A server that only sends keep-alives must still fail over at first_byte_timeout."""
    sim.script("a", Reply("late", stream=Stream(stall_after=0, keepalive_every=0.02)))
    sim.script("b", Reply("from b"))
    cfg = config(
        tmp_path, sim, [entry("openai", "a", first_byte_timeout=0.3), entry("ollama", "b")]
    )
    events = collect(cfg)
    assert events[-1].result.entry == "ollama/b"
    first = rows(tmp_path)[0]
    assert first.error_kind == "timeout" and "first_byte_timeout" in (first.error_message or "")


def test_a_stream_that_stalls_after_output_fails_at_the_idle_timeout(tmp_path, sim):
    sim.script("a", Reply("one two three", stream=Stream(stall_after=1)))
    sim.script("b", Reply("from b"))
    cfg = config(tmp_path, sim, [entry("openai", "a", idle_timeout=0.3), entry("openai", "b")])
    events = collect(cfg)
    assert [type(e) for e in events if isinstance(e, Reset)] == [Reset]
    assert events[-1].result.text == "from b"
    first = rows(tmp_path)[0]
    assert first.outcome == "truncated" and "idle_timeout" in (first.error_message or "")


@pytest.mark.parametrize("kind", TYPES)
def test_a_stream_without_its_end_marker_is_truncated_never_a_short_answer(tmp_path, sim, kind):
    sim.script("a", Reply("half an answer", stream=Stream(terminator=False)))
    sim.script("b", Reply("whole"))
    cfg = config(tmp_path, sim, [entry(kind, "a"), entry("openai", "b")])
    events = collect(cfg)
    assert events[-1].result.text == "whole"
    first = rows(tmp_path)[0]
    assert (first.outcome, first.error_kind) == ("truncated", "truncated")


def test_an_overloaded_error_event_inside_a_200_follows_the_529_rule(tmp_path, sim):
    sim.script("a", Reply("one two", stream=Stream(error_after=1, error_status=529)))
    sim.script("b", Reply("from b"))
    cfg = config(tmp_path, sim, [entry("anthropic", "a"), entry("openai", "b")])
    collect(cfg)
    first = rows(tmp_path)[0]
    assert (first.rule, first.http_status) == ("overloaded", 529)
    assert first.cooldown_until is not None


def test_an_oversized_event_fails_the_attempt_cleanly(tmp_path, sim):
    sim.script("a", Reply("one two", stream=Stream(oversized_after=0)))
    sim.script("b", Reply("from b"))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("openai", "b")])
    events = collect(cfg)
    assert events[-1].result.text == "from b"
    assert "1 MiB" in (rows(tmp_path)[0].error_message or "")


# --- mid-stream -------------------------------------------------------------------------------

BROKEN = Reply("alpha beta gamma delta", stream=Stream(drop_after=2))


def test_restart_resets_and_the_next_entry_answers_from_the_start(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("b", Reply("fresh answer"))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("openai", "b")])
    events = collect(cfg)  # the library's default: restart
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Reset") > kinds.index("Text")
    reset = next(e for e in events if isinstance(e, Reset))
    assert reset.entry == "openai/a"
    assert events[-1].result.text == "fresh answer"
    assert sim.requests[-1].body["messages"][-1]["role"] == "user"  # from the start
    first = rows(tmp_path)[0]
    assert first.outcome == "truncated" and first.chunks == 2
    assert first.cooldown_until is not None  # the same rules cool it down


def test_continue_hands_the_partial_answer_to_an_entry_that_takes_a_prefill(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("c", Reply(" gamma delta"))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("anthropic", "c")])
    events = collect(cfg, on_midstream="continue")
    switched = next(e for e in events if isinstance(e, Switched))
    assert (switched.entry, switched.to) == ("openai/a", "anthropic/c")
    assert not any(isinstance(e, Reset) for e in events)
    sent = sim.requests[-1].body["messages"]
    assert sent[-1]["role"] == "assistant" and sent[-1]["content"] == "alpha beta"
    assert events[-1].result.text == "alpha beta gamma delta"


def test_a_prefill_never_ends_in_whitespace_which_vendors_refuse(tmp_path, sim):
    pieces = ("alpha ", "beta ", "gamma")
    sim.script("a", Reply("".join(pieces), stream=Stream(pieces=pieces, drop_after=2)))
    sim.script("c", Reply(" gamma"))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("anthropic", "c")])
    events = collect(cfg, on_midstream="continue")
    assert sim.requests[-1].body["messages"][-1]["content"] == "alpha beta"
    assert events[-1].result.text == "alpha beta gamma"


def test_continue_restarts_on_an_entry_that_takes_no_prefill(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("b", Reply("fresh"))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("openai", "b")])
    events = collect(cfg, on_midstream="continue")
    assert any(isinstance(e, Reset) for e in events)
    assert events[-1].result.text == "fresh"


def test_a_tool_call_cut_in_half_is_never_continued(tmp_path, sim):
    calls = (SimToolCall("f", {"a": "long value"}),)
    sim.script("a", Reply("", tool_calls=calls, stream=Stream(tool_fragments=4, drop_after=2)))
    sim.script("c", Reply("plain"))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("anthropic", "c")])
    events = collect(cfg, on_midstream="continue")
    assert any(isinstance(e, Reset) for e in events)
    assert sim.requests[-1].body["messages"][-1]["role"] == "user"


def test_fail_stops_and_saves_the_prompt_with_what_was_shown(tmp_path, sim):
    sim.script("a", BROKEN)
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("openai", "b")], on_midstream="fail")
    with pytest.raises(CascadeFailed):
        collect(cfg)
    assert sim.count("b") == 0
    [envelope] = saved(tmp_path)
    assert envelope["status"] == "failed"
    assert envelope["errors"][0]["partial"] == "alpha beta"


def test_a_total_failure_saves_what_each_entry_streamed(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("b", Reply("one two three", stream=Stream(drop_after=1)))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("gemini", "b")])
    with pytest.raises(CascadeFailed):
        collect(cfg)
    [envelope] = saved(tmp_path)
    assert [e.get("partial") for e in envelope["errors"]] == ["alpha beta", "one"]


# --- cancellation -----------------------------------------------------------------------------


async def _break_after_first_text(cfg: Path) -> None:
    app = load_config(cfg)
    async with Cascade(app) as engine:
        stream = engine.stream("x", Conversation.single_user_prompt("hi"))
        async for event in stream:
            if isinstance(event, Text):
                await stream.aclose()
                break


def test_closing_the_stream_closes_the_upstream_and_sets_no_cooldown(tmp_path, sim):
    sim.script("a", Reply("one two three", stream=Stream(stall_after=1)))
    cfg = config(tmp_path, sim, [entry("openai", "a")])
    asyncio.run(_break_after_first_text(cfg))
    assert sim.wait_for_disconnects(1, "a", timeout=10)
    [row] = rows(tmp_path)
    assert (row.outcome, row.cooldown_until) == ("cancelled", None)
    [envelope] = saved(tmp_path)
    assert envelope["status"] == "interrupted"
    assert envelope["errors"][0]["partial"] == "one"
    with Store(tmp_path / "state" / "db.sqlite") as store:
        assert not store.states(["openai/a"])["openai/a"].is_cooling(0)


def test_run_still_returns_whole_answers_without_streaming(tmp_path, sim):
    cfg = config(tmp_path, sim, [entry("openai", "a")])

    async def go() -> str:
        async with Cascade(load_config(cfg)) as engine:
            return (await engine.run("x", Conversation.single_user_prompt("hi"))).text

    assert asyncio.run(go()).startswith("Simulated answer")
    assert "stream" not in sim.requests[0].body
