"""The gateway's translations as units: vendor requests in, our results and events out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_cascade.events import Done, EntryStarted, Switched, Text, ToolCallDelta
from llm_cascade.results import CascadeResult
from llm_cascade.serve import anthropic_wire, openai_wire
from llm_cascade.serve.wire import BadRequest, decode_body
from llm_cascade.types import LlmResponse, Message, TextBlock, ToolCall

CASCADES = {"fast": object()}
ASKED = [{"role": "user", "content": "x"}]


def result(*blocks: Any, stop: str | None = None) -> CascadeResult:
    response = LlmResponse(tuple(blocks), "m-1", input_tokens=3, output_tokens=4, stop_reason=stop)
    return CascadeResult(response, "fast", "p/m-1", "p", 200, 5)


def sse_data(chunks: list[bytes]) -> list[Any]:
    """The `data:` payloads of SSE events, decoded (`[DONE]` as the string)."""
    out = []
    for chunk in chunks:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


class _Answer:
    def delivered(self) -> None: ...


def done(r: CascadeResult) -> Done:
    return Done(r, _Answer())  # type: ignore[arg-type]


# --- OpenAI in --------------------------------------------------------------------------------


def test_an_openai_request_becomes_a_conversation_and_options():
    body = {
        "model": "cascade/fast",
        "messages": [
            {"role": "developer", "content": "rules"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 9,
        "temperature": 0.3,
        "n": 1,
        "user": "someone",
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
    }
    request = openai_wire.parse_request(body, CASCADES, {})
    assert request.cascade == "fast" and request.stream and request.include_usage
    assert (request.max_tokens, request.temperature) == (9, 0.3)
    system, user, assistant, tool = request.conversation.messages
    assert (system.role, system.content) == ("system", "rules")
    assert user.content == "ab"
    assert assistant.tool_calls == (ToolCall("c1", "f", "{}"),)
    assert tool == Message.tool("42", "c1")
    assert request.conversation.tools is not None and request.conversation.tools[0].name == "f"


PNG = "iVBORw0KGgo="  # base64 of the PNG signature: enough for the gateway's checks
IMAGE_PART = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


def test_openai_image_parts_and_response_format_become_the_conversation():
    body = {
        "model": "fast",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE_PART]}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "seen", "schema": {"type": "array"}},
        },
    }
    request = openai_wire.parse_request(body, CASCADES, {})
    (user,) = request.conversation.messages
    assert user.text == "what?"
    assert [(i.media_type, i.data) for i in user.images] == [("image/png", PNG)]
    output = request.conversation.output
    assert output is not None and (output.name, output.schema) == ("seen", {"type": "array"})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "fast", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "fast", "messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {"model": "fast", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].image_url",
        ),
        (
            {"model": "fast", "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"model": "fast", "messages": [{"role": "system", "content": [IMAGE_PART]}]},
            "messages[0].content[0].type",  # images go in user turns only
        ),
        (
            {
                "model": "fast",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "messages[0].content[0].image_url.url",
        ),
        ({"model": "fast", "messages": [], "max_tokens": 0}, "max_tokens"),
        ({"model": "fast", "messages": [], "stream": "yes"}, "stream"),
        ({"model": "fast", "messages": ASKED, "temperature": True}, "temperature"),
        (
            {"model": "fast", "messages": [], "response_format": {"type": "xml"}},
            "response_format.type",
        ),
        (
            {"model": "fast", "messages": [], "response_format": {"type": "json_schema"}},
            "response_format.json_schema",
        ),
        (
            {
                "model": "fast",
                "messages": [],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"type": "nonsense"}},
                },
            },
            "response_format.json_schema.schema",
        ),
        ({"model": "fast", "messages": [], "tool_choice": "required"}, "tool_choice"),
        ({"model": "fast", "messages": [], "top_p": 0.5}, "top_p"),
    ],
)
def test_openai_requests_we_cannot_honour_name_their_field(body, param):
    with pytest.raises(BadRequest) as refused:
        openai_wire.parse_request(body, CASCADES, {})
    assert refused.value.param == param and refused.value.status == 400


def test_an_unknown_model_is_a_404_listing_the_cascades():
    with pytest.raises(BadRequest) as refused:
        openai_wire.parse_request({"model": "gpt-4o", "messages": []}, CASCADES, {})
    assert refused.value.status == 404 and "defined: fast" in refused.value.message


def test_a_body_that_is_not_a_json_object_is_refused():
    for raw in (b"", b"[]", b"\xff", b"[" * 200 + b"]" * 200):
        with pytest.raises(BadRequest):
            decode_body(raw)


# --- OpenAI out -------------------------------------------------------------------------------


def test_a_whole_answer_is_a_chat_completion():
    body = openai_wire.completion(result(TextBlock("hi"), ToolCall("", "f", '{"a":1}')), now=7)
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and body["created"] == 7 and body["model"] == "m-1"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "hi"
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"] == {
        "name": "f",
        "arguments": '{"a":1}',
    }
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
    ],
)
def test_every_vendors_stop_reason_becomes_openais(stop, finish):
    assert (
        openai_wire.completion(result(TextBlock("x"), stop=stop))["choices"][0]["finish_reason"]
        == finish
    )


def test_a_stream_becomes_chunks_then_done():
    out = openai_wire.ChunkStream("fast", include_usage=True)
    events = [
        EntryStarted("p/m-1"),
        Text("he"),
        Switched("p/m-1", "q/m-2", "cut"),
        Text("llo"),
        ToolCallDelta(3, "c9", "f", '{"a"'),
        ToolCallDelta(3, None, None, ":1}"),
        done(result(TextBlock("hello"), ToolCall("c9", "f", '{"a":1}'))),
    ]
    assert out.feed(events[0]) == []  # nothing before content: a failure can still be a 503
    data = sse_data([c for e in events[1:] for c in out.feed(e)])
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert data[0]["model"] == "m-1"
    deltas = [d["choices"][0]["delta"] for d in data[1:5]]
    assert deltas[:2] == [{"content": "he"}, {"content": "llo"}]
    assert deltas[2]["tool_calls"][0] == {
        "index": 0,
        "id": "c9",
        "type": "function",
        "function": {"arguments": '{"a"', "name": "f"},
    }
    assert deltas[3]["tool_calls"][0] == {"index": 0, "function": {"arguments": ":1}"}}
    assert data[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert data[6]["choices"] == [] and data[6]["usage"]["total_tokens"] == 7
    assert data[7] == "[DONE]"


def test_a_stream_error_event_is_openais_error_object():
    (event,) = sse_data([openai_wire.ChunkStream.error("gone")])
    assert event["error"]["message"] == "gone" and event["error"]["code"] == "cascade_failed"


# --- Anthropic in -----------------------------------------------------------------------------


def test_an_anthropic_request_becomes_a_conversation_and_options():
    body = {
        "model": "fast",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "tu1", "name": "w", "input": {"c": "P"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "tu1", "content": "rain"},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        "metadata": {"user_id": "u"},
        "stop_sequences": [],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}],
    }
    request = anthropic_wire.parse_request(
        body, CASCADES, {"anthropic-beta": "b1", "x-other": "no"}
    )
    assert request.max_tokens == 100
    assert request.vendor_headers == {"anthropic": {"anthropic-beta": "b1"}}
    system, _, assistant, tool, follow = request.conversation.messages
    assert (system.role, system.content) == ("system", "rules")
    assert assistant.content == "checking" and assistant.tool_calls == (
        ToolCall("tu1", "w", '{"c":"P"}'),
    )
    assert tool == Message.tool("rain", "tu1") and follow == Message.user("and?")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fast", "messages": []}, "max_tokens"),
        (
            {"model": "fast", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]},
            "messages[0].content",
        ),
        ({"model": "fast", "max_tokens": 5, "temperature": 1.5, "messages": ASKED}, "temperature"),
        (
            {"model": "fast", "max_tokens": 5, "tool_choice": {"type": "any"}, "messages": []},
            "tool_choice",
        ),
        (
            {"model": "fast", "max_tokens": 5, "thinking": {"type": "enabled"}, "messages": []},
            "thinking",
        ),
        (
            {
                "model": "fast",
                "max_tokens": 5,
                "tools": [{"type": "web_search_20250305"}],
                "messages": ASKED,
            },
            "tools[0].type",
        ),
    ],
)
def test_anthropic_requests_we_cannot_honour_name_their_field(body, param):
    with pytest.raises(BadRequest) as refused:
        anthropic_wire.parse_request(body, CASCADES, {})
    assert refused.value.param == param


def test_a_header_that_cannot_travel_is_refused():
    with pytest.raises(BadRequest):
        anthropic_wire.parse_request(
            {"model": "fast", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            CASCADES,
            {"anthropic-beta": "a\x01b"},
        )


# --- Anthropic out ----------------------------------------------------------------------------


def test_a_whole_answer_is_a_message():
    body = anthropic_wire.message(
        result(TextBlock("hi"), ToolCall("functions.f:0", "f", '{"a":1}'))
    )
    text, call = body["content"]
    assert text == {"type": "text", "text": "hi"}
    assert call == {"type": "tool_use", "id": "functions_f_0", "name": "f", "input": {"a": 1}}
    assert body["stop_reason"] == "tool_use" and body["usage"] == {
        "input_tokens": 3,
        "output_tokens": 4,
    }


def test_a_stream_becomes_the_messages_event_sequence():
    out = anthropic_wire.EventStream("fast")
    events = [
        EntryStarted("p/m-1"),
        Text("a"),
        Text("b"),
        ToolCallDelta(0, "tu", "f", ""),
        ToolCallDelta(0, arguments='{"x":2}'),
        done(result(TextBlock("ab"), ToolCall("tu", "f", '{"x":2}'))),
    ]
    chunks = [c for e in events for c in out.feed(e)]
    names = [c.decode().split("\n")[0].removeprefix("event: ") for c in chunks]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = sse_data(chunks)
    assert data[0]["message"]["model"] == "m-1"
    assert data[5]["content_block"] == {"type": "tool_use", "id": "tu", "name": "f", "input": {}}
    assert data[6]["delta"] == {"type": "input_json_delta", "partial_json": '{"x":2}'}
    assert data[8]["delta"]["stop_reason"] == "tool_use" and data[8]["usage"]["output_tokens"] == 4


def test_an_anthropic_stream_error_is_its_error_event():
    chunk = anthropic_wire.EventStream.error("gone")
    assert chunk.startswith(b"event: error\n")
    assert sse_data([chunk])[0] == {
        "type": "error",
        "error": {"type": "api_error", "message": "gone"},
    }
