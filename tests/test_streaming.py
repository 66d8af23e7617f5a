"""Streams end to end, through the library, over real HTTP against the simulator: each vendor's
format, failover before the first token, the mid-stream policies, time limits, cancellation."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.cascade import Cascade, RunOptions
from llm_cascade.clock import ManualClock
from llm_cascade.config import load_config
from llm_cascade.errors import CascadeFailed
from llm_cascade.events import Done, EntryStarted, Reset, Switched, Text, ToolCallDelta
from llm_cascade.simulator import Fail, Reply, SimToolCall, Simulator, Stream
from llm_cascade.store import AttemptRecord, Store
from llm_cascade.types import Conversation

from .support import entry, saved_envelopes, write_config

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
    return saved_envelopes(tmp_path / "failed")


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


@pytest.mark.parametrize(
    "slow",
    [Reply("slow start", delay=0.6), Reply("slow start", stream=Stream(first_token_delay=0.6))],
    ids=["headers", "first-token"],
)
def test_the_idle_timeout_does_not_cut_the_wait_for_the_first_token(tmp_path, sim, slow):
    """Until content flows, first_byte_timeout rules (a model loading, a long prompt read)."""
    sim.script("a", slow)
    cfg = config(tmp_path, sim, [entry("ollama", "a", idle_timeout=0.2, first_byte_timeout=30)])
    assert collect(cfg)[-1].result.text == "slow start"


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


@pytest.mark.parametrize("continuation", [" gamma", "gamma"])
def test_a_continued_stream_shows_the_text_its_answer_holds(tmp_path, sim, continuation):
    """The space the shown text ended with is on the screen already: the continuation, which
    writes it again (or not), must not show it twice, and Done's text is what was shown."""
    pieces = ("alpha ", "beta ", "gamma")
    sim.script("a", Reply("".join(pieces), stream=Stream(pieces=pieces, drop_after=2)))
    sim.script("c", Reply(continuation))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("anthropic", "c")])
    events = collect(cfg, on_midstream="continue")
    assert "".join(texts(events)) == events[-1].result.text == "alpha beta gamma"


def test_continue_restarts_on_an_entry_that_takes_no_prefill(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("b", Reply("fresh"))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("openai", "b")])
    events = collect(cfg, on_midstream="continue")
    assert any(isinstance(e, Reset) for e in events)
    assert events[-1].result.text == "fresh"


def test_a_caller_that_cannot_restart_passes_over_entries_without_a_prefill(tmp_path, sim):
    """A gateway's open response cannot take text back: `b` could only start over, so it is
    not asked; `c` takes the prefill and continues."""
    sim.script("a", BROKEN)
    sim.script("c", Reply(" gamma delta"))
    entries = [entry("openai", "a"), entry("openai", "b"), entry("anthropic", "c")]
    cfg = config(tmp_path, sim, entries)
    events = collect(cfg, on_midstream="continue", can_restart=False)
    assert not any(isinstance(e, Reset) for e in events)
    assert sim.count("b") == 0
    assert events[-1].result.text == "alpha beta gamma delta"


def test_a_caller_that_cannot_restart_gets_a_failure_when_nobody_can_continue(tmp_path, sim):
    sim.script("a", BROKEN)
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("openai", "b")])
    with pytest.raises(CascadeFailed) as failed:
        collect(cfg, on_midstream="continue", can_restart=False)
    assert sim.count("b") == 0
    assert failed.value.saved.path is not None
    assert saved(tmp_path)[0]["status"] == "failed"


def test_the_callers_request_settings_and_vendor_headers_reach_the_entry(tmp_path, sim):
    cfg = config(tmp_path, sim, [entry("anthropic", "c", max_tokens=50), entry("openai", "d")])
    sim.script("c", Fail(500))
    headers = {"anthropic": {"anthropic-beta": "tools-2024", "anthropic-version": "2023-06-01"}}
    collect(cfg, max_tokens=12, temperature=0.5, vendor_headers=headers)
    to_anthropic, to_openai = sim.requests
    assert to_anthropic.body["max_tokens"] == 12 and to_anthropic.body["temperature"] == 0.5
    assert to_anthropic.headers["anthropic-beta"] == "tools-2024"
    assert to_openai.body["max_tokens"] == 12
    assert "anthropic-beta" not in to_openai.headers


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


def test_a_deadline_that_ends_during_the_stream_saves_what_was_shown(tmp_path, sim):
    sim.script("a", Reply("one two three", stream=Stream(stall_after=1)))
    cfg = config(tmp_path, sim, [entry("openai", "a"), entry("openai", "b")])
    with pytest.raises(CascadeFailed) as failed:
        collect(cfg, deadline_s=0.5)
    [attempt] = failed.value.attempts
    assert (attempt.outcome, attempt.partial, attempt.chunks) == ("deadline", "one", 1)
    [envelope] = saved(tmp_path)
    assert envelope["errors"][0]["partial"] == "one"
    assert sim.count("b") == 0


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


@pytest.mark.parametrize("leave", ["break", "raise"])
def test_a_stream_left_as_the_readme_loops_is_recorded_before_the_engine_closes(
    tmp_path, sim, leave
):
    """`async for event in engine.stream(...)` with no aclosing: the engine, closing, closes
    the stream it still runs, while its database and connection can still say so."""
    sim.script("a", Reply("one two three", stream=Stream(stall_after=1)))
    cfg = config(tmp_path, sim, [entry("openai", "a")])

    async def go() -> None:
        async with Cascade(load_config(cfg)) as engine:
            async for event in engine.stream("x", Conversation.single_user_prompt("hi")):
                if isinstance(event, Text):
                    if leave == "raise":
                        raise LookupError("the consumer failed")
                    break

    if leave == "raise":
        with pytest.raises(LookupError):
            asyncio.run(go())
    else:
        asyncio.run(go())
    assert sim.wait_for_disconnects(1, "a", timeout=10)
    [row] = rows(tmp_path)
    assert row.outcome == "cancelled"
    [envelope] = saved(tmp_path)
    assert envelope["errors"][0]["partial"] == "one"


class SleepUntilCancelled(ManualClock):
    """A clock whose waits last until the run is cancelled; `waiting` is set when one starts."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.waiting.set()
        await asyncio.Event().wait()


def half_open(cfg: Path, now: float) -> None:
    """sim/a failed long ago and its cooldown is over: the next run probes it."""
    with Store(load_config(cfg).database_path) as store:
        record = AttemptRecord("x", "sim/a", 500, 3, outcome="failed")
        store.record_failure(record, now - 100, lambda _level: 30)


def probe_lease(tmp_path: Path) -> float | None:
    with Store(tmp_path / "state" / "db.sqlite") as store:
        return store.states(["sim/a"])["sim/a"].probe_until


def test_a_probe_cancelled_while_it_waits_to_retry_gives_its_lease_back(tmp_path, sim):
    clock = SleepUntilCancelled()
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", retries=1)]})
    half_open(cfg, clock.now())
    sim.script("a", Fail(500))

    async def go() -> None:
        async with Cascade(load_config(cfg), clock=clock) as engine:
            run = asyncio.create_task(engine.run("x", Conversation.single_user_prompt("hi")))
            await clock.waiting.wait()  # its first try failed; it waits to try again
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

    asyncio.run(go())
    assert probe_lease(tmp_path) is None  # the next run may probe it at once
    assert sorted(r.outcome for r in rows(tmp_path)) == ["failed", "retrying"]  # seed, its try
    [envelope] = saved(tmp_path)
    assert envelope["status"] == "interrupted"


def test_a_stream_closed_before_its_probe_is_sent_gives_the_lease_back(tmp_path, sim):
    clock = ManualClock()
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    half_open(cfg, clock.now())

    async def go() -> None:
        async with Cascade(load_config(cfg), clock=clock) as engine:
            stream = engine.stream("x", Conversation.single_user_prompt("hi"))
            async with aclosing(stream):
                first = await anext(stream)
            assert isinstance(first, EntryStarted) and first.probe

    asyncio.run(go())
    assert sim.count("a") == 0
    assert probe_lease(tmp_path) is None


def test_run_still_returns_whole_answers_without_streaming(tmp_path, sim):
    cfg = config(tmp_path, sim, [entry("openai", "a")])

    async def go() -> str:
        async with Cascade(load_config(cfg)) as engine:
            return (await engine.run("x", Conversation.single_user_prompt("hi"))).text

    assert asyncio.run(go()).startswith("Simulated answer")
    assert "stream" not in sim.requests[0].body
