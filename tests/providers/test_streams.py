"""Streamed replies, without I/O: the SSE and NDJSON framers at every byte split and at their
limits, each vendor's parser on event sequences written from its documentation, and the
assembler that turns the deltas of any vendor into one response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_cascade.errors import ProviderError
from llm_cascade.providers import get_adapter
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
from llm_cascade.types import Conversation, LlmResponse, TextBlock, ToolCall

from ..support import run_engine
from .helpers import vendor_config

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


def read(type_name: str, body: bytes, *, one_byte_at_a_time: bool = False) -> StreamAssembler:
    """What the reading loop does: frame the body, parse each event, assemble each delta."""
    adapter = get_adapter(type_name)
    decoder = SseDecoder() if adapter.stream_format == "sse" else NdjsonDecoder()
    parser = adapter.stream_parser(OPTIONS)
    assembler = StreamAssembler()
    pieces = bytewise(body) if one_byte_at_a_time else [body]
    for event in events_of(decoder, pieces):
        for delta in parser.feed(event):
            assembler.add(delta)
    return assembler


def answer(type_name: str, body: bytes) -> LlmResponse:
    """The response of `body`, checked to be the same when it arrives a byte at a time."""
    response = read(type_name, body).response(OPTIONS)
    again = read(type_name, body, one_byte_at_a_time=True).response(OPTIONS)
    assert shape(response) == shape(again)
    return response


def shape(response: LlmResponse) -> tuple[Any, ...]:
    """Everything but the tool-call ids made up for calls that came without one."""
    blocks = [
        b.text if isinstance(b, TextBlock) else (b.name, b.arguments) for b in response.content
    ]
    usage = (response.input_tokens, response.output_tokens)
    return (blocks, usage, response.stop_reason, response.model)


def failure(type_name: str, body: bytes) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        read(type_name, body).response(OPTIONS)
    return caught.value


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


# --- OpenAI -----------------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict:
    """A `chat.completion.chunk` as the API reference shows it."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    base = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": choices,
        "usage": None,
    }
    return {**base, **extra}


OPENAI_TEXT = sse(
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Hello"}),
    chunk({"content": " there"}),
    chunk({}, "stop"),
    chunk(usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}),
    "[DONE]",
)


def test_openai_text_stream_with_usage_in_the_extra_last_chunk():
    response = answer("openai", OPENAI_TEXT)
    assert response.text == "Hello there"
    assert (response.input_tokens, response.output_tokens) == (9, 2)
    assert (response.stop_reason, response.model) == ("stop", "gpt-4o-mini-2024-07-18")


def test_openai_usage_null_chunks_give_no_usage_delta_and_done_is_the_end():
    parser = get_adapter("openai").stream_parser(OPTIONS)
    assert parser.feed(StreamEvent(json.dumps(chunk({"content": "x"})))) == [
        ModelDelta("gpt-4o-mini-2024-07-18"),
        TextDelta("x"),
    ]
    assert parser.feed(StreamEvent(json.dumps(chunk({"content": "y"})))) == [TextDelta("y")]
    assert parser.feed(StreamEvent("[DONE]")) == [EndOfStream()]


def call_piece(index: int, arguments: str, call_id: str | None = None, name: str = "") -> dict:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        piece |= {"id": call_id, "type": "function"}
        piece["function"]["name"] = name
    return chunk({"tool_calls": [piece]})


def test_openai_parallel_tool_calls_arrive_in_pieces_keyed_by_index():
    body = sse(
        chunk({"role": "assistant", "content": None}),
        call_piece(0, "", "call_tokyo", "get_weather"),
        call_piece(0, '{"ci'),
        call_piece(0, 'ty": "Tokyo"}'),
        call_piece(1, "", "call_oslo", "get_weather"),
        call_piece(1, '{"city": '),
        call_piece(1, '"Oslo"}'),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    response = answer("openai", body)
    assert response.tool_calls == [
        ToolCall("call_tokyo", "get_weather", '{"city": "Tokyo"}'),
        ToolCall("call_oslo", "get_weather", '{"city": "Oslo"}'),
    ]
    assert response.stop_reason == "tool_calls"
    assert response.input_tokens is None  # no usage chunk: stream_usage was off


def test_openai_compatible_server_that_reuses_index_0_for_every_call():
    body = sse(
        call_piece(0, '{"city": "Tokyo"}', "call_1", "get_weather"),
        call_piece(0, '{"city": "Oslo"}', "call_2", "get_weather"),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    assert [c.id for c in answer("openai", body).tool_calls] == ["call_1", "call_2"]


def test_openai_compatible_shapes_text_parts_object_arguments_and_no_index():
    body = sse(
        chunk({"content": [{"type": "text", "text": "parts "}, {"type": "text", "text": "ok"}]}),
        chunk({"tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}]}),
        chunk({}, "stop"),
        "[DONE]",
    )
    response = answer("openai", body)
    assert response.text == "parts ok"
    assert response.tool_calls == [ToolCall("c1", "f", '{"a":1}')]


def test_openai_only_the_first_choice_is_read():
    second = chunk({"content": "other"})
    second["choices"][0]["index"] = 1
    body = sse(chunk({"content": "first"}), second, chunk({}, "stop"), "[DONE]")
    assert answer("openai", body).text == "first"


def test_openai_error_object_inside_the_stream_fails_like_an_error_shaped_reply():
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    err = failure("openai", sse(chunk({"content": "Hel"}), error))
    assert (err.kind, err.code) == ("invalid_response", "server_error")
    assert "The server had an error" in err.message
    assert decide(err, "openai").name == "invalid_response"


def test_openai_stream_cut_before_done_is_truncated():
    err = failure("openai", sse(chunk({"content": "Hel"}), chunk({}, "stop")))
    assert err.kind == "truncated"


@pytest.mark.parametrize("data", ["{not json", '{"choices": [', "[1, 2]", '"text"'])
def test_openai_data_that_is_no_json_object_is_an_invalid_response(data):
    err = failure("openai", sse(chunk({"content": "x"}), data))
    assert err.kind == "invalid_response"


def test_openai_malformed_event_message_quotes_the_data_briefly():
    err = failure("openai", sse("<html>" + "x" * 500))
    assert err.message.startswith("malformed stream event: <html>xxx")
    assert len(err.message) < 120


def test_openai_stream_request_asks_for_usage_unless_stream_usage_is_off():
    adapter = get_adapter("openai")
    conversation = Conversation.single_user_prompt("hi")
    whole = adapter.build_request(conversation, OPTIONS)
    streamed = adapter.build_request(conversation, OPTIONS, stream=True)
    quiet = CallOptions(model="m", base_url="http://h", stream_usage=False)
    assert "stream" not in whole.body and "stream_options" not in whole.body
    assert streamed.body["stream"] is True
    assert streamed.body["stream_options"] == {"include_usage": True}
    assert streamed.url == whole.url == "http://127.0.0.1:9/chat/completions"
    body = adapter.build_request(conversation, quiet, stream=True).body
    assert body["stream"] is True and "stream_options" not in body


# --- Anthropic --------------------------------------------------------------------------------

MESSAGE_START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4-5-20250929",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1},
        },
    },
)
PING = ("ping", {"type": "ping"})
MESSAGE_STOP = ("message_stop", {"type": "message_stop"})


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    event = {"type": "content_block_start", "index": index, "content_block": block}
    return "content_block_start", event


def block_delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, output_tokens: int, **usage: int) -> tuple[str, dict]:
    event = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens, **usage},
    }
    return "message_delta", event


def text(index: int, value: str) -> tuple[str, dict[str, Any]]:
    return block_delta(index, {"type": "text_delta", "text": value})


def json_piece(index: int, value: str) -> tuple[str, dict[str, Any]]:
    return block_delta(index, {"type": "input_json_delta", "partial_json": value})


def test_anthropic_text_stream_as_documented():
    body = sse(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        PING,
        text(0, "Hello"),
        text(0, "!"),
        block_stop(0),
        message_delta("end_turn", 15),
        MESSAGE_STOP,
    )
    response = answer("anthropic", body)
    assert response.text == "Hello!"
    assert (response.input_tokens, response.output_tokens) == (25, 15)  # output: cumulative
    assert (response.stop_reason, response.model) == ("end_turn", "claude-sonnet-4-5-20250929")


def test_anthropic_tool_use_input_arrives_as_partial_json_after_a_text_block():
    body = sse(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text(0, "Okay, let's check the weather for San Francisco, CA:"),
        block_stop(0),
        block_start(
            1,
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather"}
            | {"input": {}},
        ),
        json_piece(1, ""),
        json_piece(1, '{"location":'),
        json_piece(1, ' "San Francisc'),
        json_piece(1, 'o, CA", "unit": "fah'),
        json_piece(1, 'renheit"}'),
        block_stop(1),
        message_delta("tool_use", 89),
        MESSAGE_STOP,
    )
    response = answer("anthropic", body)
    assert response.content == (
        TextBlock("Okay, let's check the weather for San Francisco, CA:"),
        ToolCall(
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "get_weather",
            '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
        ),
    )
    assert response.stop_reason == "tool_use"


def test_anthropic_tool_without_arguments_gets_an_empty_object():
    body = sse(
        MESSAGE_START,
        block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}),
        json_piece(0, ""),
        block_stop(0),
        message_delta("tool_use", 3),
        MESSAGE_STOP,
    )
    assert answer("anthropic", body).tool_calls == [ToolCall("toolu_1", "now", "{}")]


def test_anthropic_thinking_signatures_and_server_tool_input_are_ignored():
    body = sse(
        MESSAGE_START,
        block_start(0, {"type": "thinking", "thinking": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "Let me think..."}),
        block_delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}),
        block_stop(0),
        block_start(1, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}),
        json_piece(1, '{"query": "weather"}'),
        block_stop(1),
        block_start(2, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}),
        block_stop(2),
        block_start(3, {"type": "text", "text": ""}),
        text(3, "Sunny."),
        block_delta(3, {"type": "citations_delta", "citation": {"type": "web_search_result"}}),
        block_stop(3),
        message_delta("end_turn", 40),
        MESSAGE_STOP,
    )
    response = answer("anthropic", body)
    assert response.content == (TextBlock("Sunny."),)


def test_anthropic_unknown_event_types_are_ignored():
    body = sse(
        MESSAGE_START,
        ("future_event", {"type": "future_event", "anything": [1, 2]}),
        block_start(0, {"type": "text", "text": ""}),
        text(0, "still fine"),
        block_delta(0, {"type": "future_delta", "x": 1}),
        message_delta("end_turn", 2),
        MESSAGE_STOP,
    )
    assert answer("anthropic", body).text == "still fine"


def test_anthropic_usage_in_message_delta_may_carry_input_and_cache_counts():
    body = sse(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text(0, "x"),
        message_delta("end_turn", 9, input_tokens=30, cache_read_input_tokens=70),
        MESSAGE_STOP,
    )
    response = answer("anthropic", body)
    assert (response.input_tokens, response.output_tokens) == (100, 9)


def error_event(error_type: str, message: str, **details: str) -> tuple[str, dict[str, Any]]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error["details"] = details
    return "error", {"type": "error", "error": error}


@pytest.mark.parametrize(
    ("error", "status", "rule"),
    [
        (error_event("overloaded_error", "Overloaded"), 529, "overloaded"),
        (error_event("rate_limit_error", "Rate limited"), 429, "rate_limited"),
        (
            error_event(
                "rate_limit_error", "Spend limit", error_code="enforced_spend_limit_reached"
            ),
            429,
            "anthropic_spend_limit",
        ),
        (error_event("api_error", "Internal server error"), 500, "server_error"),
        (error_event("timeout_error", "Timed out"), 504, "server_error"),
        (error_event("authentication_error", "invalid x-api-key"), 401, "auth"),
        (error_event("billing_error", "Credit balance too low"), 402, "payment_required"),
        (
            error_event("invalid_request_error", "prompt is too long"),
            400,
            "context_length_exceeded",
        ),
        (error_event("a_future_error", "New"), 500, "server_error"),
    ],
)
def test_anthropic_error_event_in_a_200_is_the_error_its_status_would_be(error, status, rule):
    body = sse(MESSAGE_START, block_start(0, {"type": "text", "text": ""}), text(0, "Hi"), error)
    err = failure("anthropic", body)
    assert (err.kind, err.status) == ("http", status)
    assert err.message.endswith(error[1]["error"]["message"])
    assert decide(err, "anthropic").name == rule


def test_anthropic_refusal_mid_stream_is_the_empty_answer_a_whole_refusal_is():
    body = sse(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text(0, "I'll help with th"),
        message_delta("refusal", 12),
        MESSAGE_STOP,
    )
    err = failure("anthropic", body)
    assert err.kind == "empty_response"
    assert err.message == "empty response: the model refused (stop_reason: refusal)"


def test_anthropic_stream_cut_before_message_stop_is_truncated():
    body = sse(MESSAGE_START, block_start(0, {"type": "text", "text": ""}), text(0, "Hel"))
    assert failure("anthropic", body).kind == "truncated"


def test_anthropic_stream_request():
    adapter = get_adapter("anthropic")
    conversation = Conversation.single_user_prompt("hi")
    assert "stream" not in adapter.build_request(conversation, OPTIONS).body
    wire = adapter.build_request(conversation, OPTIONS, stream=True)
    assert wire.body["stream"] is True
    assert wire.url == "http://127.0.0.1:9/v1/messages"


# --- Gemini -----------------------------------------------------------------------------------


def frame(parts: list[dict[str, Any]] | None, finish: str | None = None, **extra: Any) -> dict:
    """A `GenerateContentResponse` frame of `streamGenerateContent?alt=sse`."""
    candidate: dict[str, Any] = {"content": {"parts": parts or [], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate] if parts is not None else []}
    out["modelVersion"] = "gemini-2.0-flash"
    return out | extra


USAGE_1 = {"usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}}
USAGE_2 = {
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 20, "totalTokenCount": 28}
}


def gemini_sse(*frames: dict[str, Any]) -> bytes:
    return sse(*frames, eol="\r\n")  # the API ends its lines with CRLF


def test_gemini_frames_end_with_the_one_that_has_a_finish_reason():
    body = gemini_sse(
        frame([{"text": "Once"}], **USAGE_1),
        frame([{"text": " upon a time"}], "STOP", **USAGE_2),
    )
    response = answer("gemini", body)
    assert response.text == "Once upon a time"
    assert (response.input_tokens, response.output_tokens) == (8, 20)
    assert (response.stop_reason, response.model) == ("STOP", "gemini-2.0-flash")


def test_gemini_function_calls_arrive_whole_and_thoughts_are_skipped():
    body = gemini_sse(
        frame([{"text": "thinking about it", "thought": True}]),
        frame([{"functionCall": {"name": "get_weather", "args": {"city": "Tokyo"}}}]),
        frame(
            [{"functionCall": {"id": "fc-2", "name": "get_weather", "args": {"city": "Oslo"}}}],
            "STOP",
            **USAGE_2,
        ),
    )
    first, second = answer_calls = read("gemini", body).response(OPTIONS).tool_calls
    assert (first.name, first.arguments) == ("get_weather", '{"city":"Tokyo"}')
    assert first.id.startswith("call_")  # Gemini 2 sends no id: one is made up
    assert second == ToolCall("fc-2", "get_weather", '{"city":"Oslo"}')
    assert len(answer_calls) == 2


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT", "SPII"])
def test_gemini_answer_blocked_mid_stream_fails_as_a_whole_blocked_reply(reason):
    body = gemini_sse(frame([{"text": "Here is how to"}]), frame([], reason, **USAGE_2))
    err = failure("gemini", body)
    assert err.kind == "empty_response"
    assert err.message == f"empty response: answer blocked (finishReason: {reason})"


def test_gemini_blocked_prompt_is_the_only_frame():
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, **USAGE_1}
    err = failure("gemini", gemini_sse(blocked))
    assert (err.kind, err.message) == ("empty_response", "empty response: prompt blocked (SAFETY)")


def test_gemini_max_tokens_is_an_ordinary_end():
    body = gemini_sse(frame([{"text": "cut by the limit"}], "MAX_TOKENS", **USAGE_2))
    assert answer("gemini", body).stop_reason == "MAX_TOKENS"


def test_gemini_error_frame_is_the_error_its_code_would_be():
    error = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    err = failure("gemini", gemini_sse(frame([{"text": "Once"}]), error))
    assert (err.kind, err.status, err.code, err.retry_after_s) == (
        "http",
        429,
        "RESOURCE_EXHAUSTED",
        37.0,
    )
    assert decide(err, "gemini").name == "rate_limited"


def test_gemini_stream_without_a_finish_reason_is_truncated():
    assert failure("gemini", gemini_sse(frame([{"text": "Once"}], **USAGE_1))).kind == "truncated"


def test_gemini_stream_request_uses_stream_generate_content_with_sse():
    adapter = get_adapter("gemini")
    conversation = Conversation.single_user_prompt("hi")
    options = CallOptions(model="gemini-2.0-flash", base_url="http://h", api_key="k")
    whole = adapter.build_request(conversation, options)
    wire = adapter.build_request(conversation, options, stream=True)
    assert whole.url == "http://h/v1beta/models/gemini-2.0-flash:generateContent"
    assert wire.url == "http://h/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert wire.body == whole.body and wire.headers == whole.headers


# --- Ollama -----------------------------------------------------------------------------------


def line(content: str, done: bool = False, **extra: Any) -> dict[str, Any]:
    """One `/api/chat` stream line as the API docs show it."""
    out: dict[str, Any] = {
        "model": "llama3.2",
        "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    return out | extra


FINAL = {
    "done_reason": "stop",
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}


def test_ollama_lines_end_with_done_true_and_the_counts():
    body = ndjson(line("The"), line(" sky"), line(" is blue."), line("", True, **FINAL))
    response = answer("ollama", body)
    assert response.text == "The sky is blue."
    assert (response.input_tokens, response.output_tokens) == (26, 282)
    assert (response.stop_reason, response.model) == ("stop", "llama3.2")


def test_ollama_tool_calls_arrive_whole_with_object_arguments():
    calls = line("")
    calls["message"]["tool_calls"] = [
        {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
        {"id": "call_x", "function": {"index": 1, "name": "get_weather", "arguments": {}}},
    ]
    body = ndjson(line("Checking."), calls, line("", True, **FINAL))
    response = answer("ollama", body)
    first, second = response.tool_calls
    assert (first.name, first.arguments) == ("get_weather", '{"city":"Tokyo"}')
    assert second == ToolCall("call_x", "get_weather", "{}")
    assert response.content[0] == TextBlock("Checking.")


def test_ollama_error_line_after_the_200_fails_like_an_error_shaped_reply():
    body = ndjson(line("The"), {"error": "an error was encountered while running the model"})
    err = failure("ollama", body)
    assert err.kind == "invalid_response"
    assert "an error was encountered while running the model" in err.message


def test_ollama_stream_without_done_is_truncated():
    assert failure("ollama", ndjson(line("The"), line(" sky"))).kind == "truncated"


def test_ollama_last_line_without_its_newline_still_counts():
    body = ndjson(line("The")) + json.dumps(line("", True, **FINAL)).encode()
    assert answer("ollama", body).text == "The"


def test_ollama_stream_request_says_true_and_a_whole_one_false():
    adapter = get_adapter("ollama")
    conversation = Conversation.single_user_prompt("hi")
    assert adapter.stream_format == "ndjson"
    assert adapter.build_request(conversation, OPTIONS).body["stream"] is False
    assert adapter.build_request(conversation, OPTIONS, stream=True).body["stream"] is True


# --- shared -----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["openai", "anthropic", "gemini"])
def test_sse_vendors_say_so(type_name):
    assert get_adapter(type_name).stream_format == "sse"


@pytest.mark.parametrize("type_name", ["openai", "anthropic", "ollama"])
def test_extra_cannot_change_whether_a_reply_is_asked_for_as_a_stream(type_name):
    # The reply is read as what was asked for: `extra` would make it unreadable. (Gemini says
    # it in the URL.)
    adapter = get_adapter(type_name)
    conversation = Conversation.single_user_prompt("hi")
    for stream, extra in ((False, {"stream": True}), (True, {"stream": False})):
        options = CallOptions(model="m", base_url="http://h", extra=extra)
        body = adapter.build_request(conversation, options, stream=stream).body
        assert body.get("stream", False) is stream


@pytest.mark.parametrize("ptype", ["ollama", "openai", "anthropic"])
def test_extra_stream_true_cannot_turn_a_whole_reply_into_a_stream(tmp_path, sim, clock, ptype):
    # The reply is read as one JSON document: a `stream` from `extra` would make it a stream
    # no whole-reply parser can read (Ollama's own server streams unless told not to).
    cfg = vendor_config(tmp_path, sim, ptype, "m", fallback=False, extra={"stream": True})

    result = run_engine(cfg, "x", clock=clock)

    assert result.entry == f"{ptype}/m"
    assert sim.requests[0].body.get("stream", False) is False
