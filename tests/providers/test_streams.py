"""Streamed replies, without I/O: the SSE and NDJSON framers at every byte split and at their
limits, and the assembler that turns the deltas of any vendor into one response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_cascade.errors import ProviderError
from llm_cascade.providers.base import CallOptions
from llm_cascade.providers.streaming import (
    CONTENT,
    MAX_EVENT_BYTES,
    EndOfStream,
    ModelDelta,
    NdjsonDecoder,
    SseDecoder,
    StopDelta,
    StreamAssembler,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageDelta,
)
from llm_cascade.rules import decide
from llm_cascade.types import TextBlock, ToolCall

OPTIONS = CallOptions(model="asked-for", base_url="http://127.0.0.1:9")


def sse(*events: Any, eol: str = "\n") -> bytes:
    """An SSE body: each event a JSON object, `(name, object)`, or raw data text."""
    out = []
    for event in events:
        name, data = event if isinstance(event, tuple) else (None, event)
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}{eol}" if name else "") + f"data: {text}{eol}{eol}")
    return "".join(out).encode()


def ndjson(*lines: dict[str, Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def events_of(decoder: SseDecoder | NdjsonDecoder, pieces: list[bytes]) -> list[StreamEvent]:
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.finish()


def bytewise(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


# --- SSE framing ------------------------------------------------------------------------------

# Every framing rule of the HTML standard in one stream: a BOM, LF, CRLF and CR line ends, a
# comment, multi-line data, a named event, id and retry fields, a field with no colon, a value
# with no space after the colon, an event with no data (not dispatched), and a last event that
# never gets its blank line (dropped).
TRICKY_SSE = (
    b"\xef\xbb\xbfdata: first\n\n"
    b": keep-alive\n"
    b"event: delta\r\ndata: two\r\ndata:  lines\r\nid: 7\r\nretry: 3000\r\n\r\n"
    b"data\rdata:no space \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\r\r"
    b"event: only-a-name\n\n"
    b"unknown: field\ndata: after an unknown field\n\n"
    b"data: cut short\n"
)
TRICKY_EVENTS = [
    StreamEvent("first"),
    StreamEvent("two\n lines", "delta"),
    StreamEvent("\nno space é€😀"),
    StreamEvent("after an unknown field"),
]


def test_sse_follows_the_html_standard_in_one_piece_and_one_byte_at_a_time():
    assert events_of(SseDecoder(), [TRICKY_SSE]) == TRICKY_EVENTS
    assert events_of(SseDecoder(), bytewise(TRICKY_SSE)) == TRICKY_EVENTS


@pytest.mark.parametrize("cut", range(1, len(TRICKY_SSE)))
def test_sse_gives_the_same_events_whatever_byte_the_body_is_split_at(cut):
    assert events_of(SseDecoder(), [TRICKY_SSE[:cut], TRICKY_SSE[cut:]]) == TRICKY_EVENTS


def test_a_crlf_split_between_two_reads_is_one_line_end_not_a_blank_line():
    # Read as CR, then LF, the LF would be a blank line dispatching "a" alone.
    events = events_of(SseDecoder(), [b"data: a\r", b"\ndata: b\r\n\r\n"])
    assert events == [StreamEvent("a\nb")]


def test_only_a_leading_bom_is_dropped():
    body = "data: x\n\n\ufeffdata: hidden\n\n".encode()
    assert events_of(SseDecoder(), [body]) == [StreamEvent("x")]  # "\ufeffdata" is no field


@pytest.mark.parametrize("tail", [b'data: {"done": true}\n', b'data: {"done": tr'])
def test_a_final_event_without_its_blank_line_is_dropped_at_the_end(tail):
    decoder = SseDecoder()
    assert decoder.feed(b"data: 1\n\n" + tail) == [StreamEvent("1")]
    assert decoder.finish() == []


def test_an_empty_chunk_between_cr_and_lf_changes_nothing():
    assert events_of(SseDecoder(), [b"data: a\r", b"", b"\n\n"]) == [StreamEvent("a")]


def test_an_sse_event_of_exactly_the_limit_passes():
    line = b"data: " + b"x" * (MAX_EVENT_BYTES - len(b"data: "))
    assert events_of(SseDecoder(), [line + b"\n\n"]) == [StreamEvent("x" * (len(line) - 6))]


def test_an_sse_event_over_the_limit_fails_even_in_many_small_lines():
    decoder = SseDecoder()
    line = b"data: " + b"x" * 1000 + b"\n"
    with pytest.raises(ProviderError, match="stream event larger than 1 MiB") as caught:
        for _ in range(MAX_EVENT_BYTES // (len(line) - 1) + 1):  # the LFs are not counted
            decoder.feed(line)
    assert caught.value.kind == "invalid_response"


def test_an_endless_line_fails_before_its_line_end_arrives():
    decoder = SseDecoder()
    decoder.feed(b"data: ")
    with pytest.raises(ProviderError, match="larger than 1 MiB"):
        for _ in range(MAX_EVENT_BYTES // 4096 + 1):
            decoder.feed(b"x" * 4096)


def test_keep_alive_comments_do_not_add_up_to_the_limit():
    comments = b": ping\n" * (MAX_EVENT_BYTES // 7 + 10)
    assert events_of(SseDecoder(), [comments, b"data: x\n\n"]) == [StreamEvent("x")]


def test_the_limit_starts_again_with_each_event():
    line = b"data: " + b"x" * (MAX_EVENT_BYTES // 2) + b"\n\n"
    assert len(events_of(SseDecoder(), [line, line, line])) == 3


# --- NDJSON framing ---------------------------------------------------------------------------

NDJSON = b'{"a": 1}\n\n  \r\n{"b": "\xc3\xa9"}\r\n{"c": 3}'


def test_ndjson_gives_one_event_per_non_blank_line_in_any_split():
    expected = [StreamEvent('{"a": 1}'), StreamEvent('{"b": "é"}'), StreamEvent('{"c": 3}')]
    assert events_of(NdjsonDecoder(), [NDJSON]) == expected
    assert events_of(NdjsonDecoder(), bytewise(NDJSON)) == expected
    for cut in range(1, len(NDJSON)):
        assert events_of(NdjsonDecoder(), [NDJSON[:cut], NDJSON[cut:]]) == expected


def test_in_ndjson_a_cr_is_no_line_end():
    # A CR ending one read must not swallow the LF that really ends the line.
    assert events_of(NdjsonDecoder(), [b'{"a": 1}\r', b'\n{"b": 2}\n']) == [
        StreamEvent('{"a": 1}'),
        StreamEvent('{"b": 2}'),
    ]


def test_an_ndjson_line_over_the_limit_fails():
    decoder = NdjsonDecoder()
    assert decoder.feed(b"x" * MAX_EVENT_BYTES + b"\n") == [StreamEvent("x" * MAX_EVENT_BYTES)]
    with pytest.raises(ProviderError, match="larger than 1 MiB"):
        decoder.feed(b"x" * (MAX_EVENT_BYTES + 1))


# --- the assembler ------------------------------------------------------------------------------


def assemble(*deltas: Any) -> StreamAssembler:
    assembler = StreamAssembler()
    for delta in deltas:
        assembler.add(delta)
    return assembler


def test_the_assembler_reports_progress_as_deltas_arrive():
    assembler = assemble(ModelDelta("m-1"), UsageDelta(input_tokens=5))
    assert not assembler.content_started and assembler.text == ""
    assembler.add(TextDelta("Hel"))
    assembler.add(TextDelta("lo"))
    assert assembler.content_started and assembler.text == "Hello"
    assert not assembler.has_tool_calls and not assembler.ended
    assembler.add(ToolCallDelta(0, "c1", "f", '{"a":1}'))
    assert assembler.has_tool_calls
    assembler.add(EndOfStream())
    assert assembler.ended
    assert {TextDelta, ToolCallDelta} == set(CONTENT)


def test_content_keeps_its_order_and_text_runs_are_joined():
    response = assemble(
        TextDelta("Let me "),
        TextDelta("check."),
        ToolCallDelta(0, "c1", "get_weather", '{"city":'),
        TextDelta("Done."),
        ToolCallDelta(0, arguments='"Oslo"}'),
        EndOfStream(),
    ).response(OPTIONS)
    assert response.content == (
        TextBlock("Let me check."),
        ToolCall("c1", "get_weather", '{"city":"Oslo"}'),
        TextBlock("Done."),
    )


def test_usage_stop_and_model_are_the_latest_known():
    response = assemble(
        UsageDelta(10, 1),
        ModelDelta("claude-x"),
        TextDelta("hi"),
        UsageDelta(output_tokens=7),
        StopDelta("end_turn"),
        EndOfStream(),
    ).response(OPTIONS)
    assert (response.input_tokens, response.output_tokens) == (10, 7)
    assert (response.stop_reason, response.model) == ("end_turn", "claude-x")


def test_without_a_model_delta_the_model_asked_for_is_reported():
    assert assemble(TextDelta("hi"), EndOfStream()).response(OPTIONS).model == "asked-for"


def test_a_stream_without_its_end_marker_is_truncated_even_with_text():
    assembler = assemble(TextDelta("half an ans"))
    with pytest.raises(ProviderError) as caught:
        assembler.response(OPTIONS)
    assert caught.value.kind == "truncated"
    assert decide(caught.value, "openai").name == "truncated"
    assert assembler.text == "half an ans"  # still there for a retry to continue from


@pytest.mark.parametrize("deltas", [[], [TextDelta(""), TextDelta("  \n")], [StopDelta("stop")]])
def test_an_ended_stream_without_content_is_an_empty_response(deltas):
    with pytest.raises(ProviderError) as caught:
        assemble(*deltas, EndOfStream()).response(OPTIONS)
    assert caught.value.kind == "empty_response"


def test_an_empty_text_delta_is_not_content():
    assert not assemble(TextDelta("")).content_started


def test_a_new_id_at_an_index_already_used_is_another_call():
    # Compatible servers that number every parallel call 0.
    response = assemble(
        ToolCallDelta(0, "call_a", "get_weather", '{"city":"Tokyo"}'),
        ToolCallDelta(0, "call_b", "get_weather", '{"city":'),
        ToolCallDelta(0, arguments='"Oslo"}'),
        EndOfStream(),
    ).response(OPTIONS)
    assert response.tool_calls == [
        ToolCall("call_a", "get_weather", '{"city":"Tokyo"}'),
        ToolCall("call_b", "get_weather", '{"city":"Oslo"}'),
    ]


def test_an_id_repeated_in_every_piece_is_still_one_call():
    response = assemble(
        ToolCallDelta(0, "call_a", "f", '{"x"'),
        ToolCallDelta(0, "call_a", "f", ":1}"),
        EndOfStream(),
    ).response(OPTIONS)
    assert response.tool_calls == [ToolCall("call_a", "f", '{"x":1}')]


def test_a_call_without_arguments_gets_an_empty_object_and_one_without_id_a_fresh_id():
    (call,) = assemble(ToolCallDelta(3, None, "now"), EndOfStream()).response(OPTIONS).tool_calls
    assert (call.name, call.arguments) == ("now", "{}")
    assert call.id.startswith("call_")


@pytest.mark.parametrize(
    ("pieces", "problem"),
    [
        (['{"city": "Os'], "not valid JSON"),  # a piece lost or the stream cut inside
        (['{"a":1}', '{"b":2}'], "not valid JSON"),  # two calls' pieces run together
        (["[" * 100 + "]" * 100], "nested deeper than 64 levels"),
    ],
)
def test_tool_call_arguments_that_are_not_json_fail_the_answer(pieces, problem):
    deltas = [ToolCallDelta(0, "c", "get_weather", pieces[0])]
    deltas += [ToolCallDelta(0, arguments=p) for p in pieces[1:]]
    with pytest.raises(ProviderError, match=problem) as caught:
        assemble(*deltas, EndOfStream()).response(OPTIONS)
    assert caught.value.kind == "invalid_response"
    assert "get_weather" in caught.value.message
