"""The simulator's streams: each vendor's documented wire format, read raw with httpx (not
with the project's adapters), the request rules around streaming, every scripted fault, and
the record of clients that went away mid-stream."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_cascade.simulator import (
    Empty,
    ErrorEvent,
    Fail,
    Hang,
    Reply,
    SimToolCall,
    Simulator,
    Stream,
)
from llm_cascade.simulator.behaviours import from_json, to_json

from .test_simulator import first_line, start_simulator

VENDORS = ("openai", "anthropic", "gemini", "ollama")
HI = [{"role": "user", "content": "hi"}]
GEMINI_HI = [{"role": "user", "parts": [{"text": "hi"}]}]
OPENAI_HEADERS = {"Authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
GEMINI_HEADERS = {"x-goog-api-key": "sk-test"}
GEMINI_STREAM = "/v1beta/models/m:streamGenerateContent"


def request_for(vendor: str, **fields: Any) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(path, body, headers) of a streaming request for model `m`."""
    if vendor == "openai":
        body = {"model": "m", "messages": HI, "stream": True, **fields}
        return "/v1/chat/completions", body, OPENAI_HEADERS
    if vendor == "anthropic":
        body = {"model": "m", "messages": HI, "max_tokens": 64, "stream": True, **fields}
        return "/v1/messages", body, ANTHROPIC_HEADERS
    if vendor == "gemini":
        return f"{GEMINI_STREAM}?alt=sse", {"contents": GEMINI_HI, **fields}, GEMINI_HEADERS
    return "/api/chat", {"model": "m", "messages": HI, **fields}, {}


def post(sim: Simulator, vendor: str, **fields: Any) -> httpx.Response:
    path, body, headers = request_for(vendor, **fields)
    return httpx.post(sim.url + path, json=body, headers=headers, timeout=10)


def open_stream(client: httpx.Client, sim: Simulator, vendor: str) -> Any:
    path, body, headers = request_for(vendor)
    return client.stream("POST", sim.url + path, json=body, headers=headers)


# --- reading streams -------------------------------------------------------------------------


@dataclass
class Frame:
    """One SSE event (or comment), or one NDJSON line."""

    name: str | None = None
    data: str | None = None
    comment: str | None = None

    def json(self) -> Any:
        assert self.data is not None, self
        return json.loads(self.data)


def sse_block(lines: list[str]) -> Frame:
    frame = Frame()
    for line in lines:
        if line.startswith(":"):
            frame.comment = line[1:].strip()
        elif line.startswith("event: "):
            frame.name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            frame.data = line.removeprefix("data: ")
        else:
            raise AssertionError(f"not an SSE line: {line!r}")
    return frame


def frames(vendor: str, text: str) -> list[Frame]:
    if vendor == "ollama":
        assert text.endswith("\n") or not text
        return [Frame(data=line) for line in text.split("\n") if line]
    blocks = text.replace("\r\n", "\n").split("\n\n")
    return [sse_block(block.split("\n")) for block in blocks if block]


def live_frames(vendor: str, response: httpx.Response) -> Iterator[Frame]:
    """Frames as they arrive (for streams that stall, or that the test leaves)."""
    block: list[str] = []
    for line in response.iter_lines():
        if vendor == "ollama":
            yield Frame(data=line)
        elif line:
            block.append(line)
        elif block:
            yield sse_block(block)
            block = []


def read_until_broken(response: httpx.Response) -> tuple[str, Exception | None]:
    """The body as far as it came, and the error that cut it short (if one did)."""
    got: list[str] = []
    try:
        for piece in response.iter_text():
            got.append(piece)
    except httpx.HTTPError as exc:
        return "".join(got), exc
    return "".join(got), None


def data(items: list[Frame]) -> list[Any]:
    """The JSON of every data frame (not comments, not `[DONE]`)."""
    return [f.json() for f in items if f.data is not None and f.data != "[DONE]"]


def pieces_of(vendor: str, items: list[Frame]) -> list[str]:
    """The text pieces, in order, as a client would collect them."""
    out: list[str] = []
    for d in data(items):
        if vendor == "openai":
            out += [
                c["delta"]["content"] for c in d.get("choices", []) if c["delta"].get("content")
            ]
        elif vendor == "anthropic":
            if d["type"] == "content_block_delta" and d["delta"]["type"] == "text_delta":
                out.append(d["delta"]["text"])
        elif vendor == "gemini":
            for cand in d.get("candidates", []):
                out += [
                    p["text"] for p in cand.get("content", {}).get("parts", []) if p.get("text")
                ]
        elif d.get("message", {}).get("content"):
            out.append(d["message"]["content"])
    return out


def terminated(vendor: str, items: list[Frame]) -> bool:
    """Whether the stream ends the way the vendor says a complete stream ends."""
    last = items[-1]
    if vendor == "openai":
        return last.data == "[DONE]"
    if vendor == "anthropic":
        return last.name == "message_stop"
    if vendor == "gemini":
        return "finishReason" in last.json()["candidates"][0]
    return last.json().get("done") is True


def is_keepalive(vendor: str, frame: Frame) -> bool:
    if vendor == "anthropic":
        return frame.name == "ping" and frame.json() == {"type": "ping"}
    if vendor == "ollama":
        line = frame.json()
        return line["done"] is False and line["message"] == {"role": "assistant", "content": ""}
    return frame.comment == "keep-alive" and frame.data is None


# The error event each vendor sends inside a 200 when a stream fails (529: overloaded).
OVERLOADED = {
    "openai": {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
    },
    "anthropic": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    "gemini": {"error": {"code": 529, "message": "Overloaded", "status": "INTERNAL"}},
    "ollama": {"error": "Overloaded"},
}


# --- OpenAI ----------------------------------------------------------------------------------


def test_openai_streams_a_role_chunk_content_chunks_a_finish_and_done(sim):
    sim.script("m", Reply("Hello there world"))
    response = post(sim, "openai")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    items = frames("openai", response.text)
    assert all(f.name is None and f.comment is None for f in items)
    assert items[-1].data == "[DONE]"
    chunks = data(items)
    [(chunk_id, obj, model)] = {(c["id"], c["object"], c["model"]) for c in chunks}
    assert chunk_id.startswith("chatcmpl-") and (obj, model) == ("chat.completion.chunk", "m")
    assert all(isinstance(c["created"], int) and "usage" not in c for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1:-1] == [{"content": "Hello"}, {"content": " there"}, {"content": " world"}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["stop"]
    assert deltas[-1] == {}


def test_openai_include_usage_adds_a_usage_chunk_and_says_null_before_it(sim):
    sim.script("m", Reply("a b", input_tokens=5, output_tokens=2))
    response = post(sim, "openai", stream_options={"include_usage": True})
    items = frames("openai", response.text)
    *chunks, usage = data(items)
    assert items[-1].data == "[DONE]"
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in chunks)
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


@pytest.mark.parametrize("stream", [None, False])
def test_openai_stream_options_without_stream_true_is_400(sim, stream):
    fields: dict[str, Any] = {"stream_options": {"include_usage": True}}
    path, body, headers = request_for("openai", **fields)
    body.pop("stream")
    if stream is not None:
        body["stream"] = stream
    response = httpx.post(sim.url + path, json=body, headers=headers, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    )


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"stream": "yes"}, "Invalid type for 'stream': expected a boolean"),
        ({"stream_options": ["include_usage"]}, "Invalid type for 'stream_options'"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ],
)
def test_openai_rejects_malformed_stream_fields(sim, fields, fragment):
    response = post(sim, "openai", **fields)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def openai_tool_deltas(items: list[Frame]) -> list[dict[str, Any]]:
    return [
        call for chunk in data(items) for call in chunk["choices"][0]["delta"].get("tool_calls", [])
    ]


TWO_CALLS = (
    SimToolCall("get_weather", {"city": "Oslo"}, id="call_a"),
    SimToolCall("get_time", {"tz": "UTC"}, id="call_b"),
)


def test_openai_tool_calls_stream_id_and_name_first_then_the_arguments_in_pieces(sim):
    sim.script("m", Reply("", tool_calls=TWO_CALLS, stream=Stream(tool_fragments=3)))
    items = frames("openai", post(sim, "openai").text)
    chunks = data(items)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    deltas = openai_tool_deltas(items)
    for index, call in enumerate(TWO_CALLS):
        mine = [d for d in deltas if d["index"] == index]
        first, *rest = mine
        assert first == {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        assert len(rest) == 3 and all(set(d) == {"index", "function"} for d in rest)
        arguments = "".join(d["function"]["arguments"] for d in rest)
        assert json.loads(arguments) == call.arguments


def test_openai_compatible_quirk_gives_every_parallel_call_index_zero(sim):
    sim.script("m", Reply("", tool_calls=TWO_CALLS, stream=Stream(reuse_index_zero=True)))
    deltas = openai_tool_deltas(frames("openai", post(sim, "openai").text))
    assert {d["index"] for d in deltas} == {0}
    # Only a new id tells the calls apart.
    assert [d.get("id") for d in deltas] == ["call_a", None, "call_b", None]


def test_a_non_streaming_request_gets_a_streamed_reply_whole(sim):
    sim.script("m", Reply("whole", stream=Stream(chunks=3, drop_after=1)))
    response = post(sim, "openai", stream=False)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["choices"][0]["message"]["content"] == "whole"


# --- Anthropic -------------------------------------------------------------------------------


def test_anthropic_streams_its_event_sequence_with_text_and_tool_blocks(sim):
    call = SimToolCall("get_weather", {"city": "Oslo"}, id="toolu_1")
    sim.script(
        "m",
        Reply("Let me check", tool_calls=(call,), output_tokens=9, stream=Stream(tool_fragments=2)),
    )
    response = post(sim, "anthropic")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    items = frames("anthropic", response.text)
    assert all(f.json()["type"] == f.name for f in items)
    assert [f.name for f in items] == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * 2,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, _, text_start, *_ = data(items)
    message = start["message"]
    assert (message["role"], message["content"], message["stop_reason"]) == ("assistant", [], None)
    assert message["usage"]["input_tokens"] == 11
    assert text_start["content_block"] == {"type": "text", "text": ""}
    tool_start = items[7].json()
    assert tool_start == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    }
    partial = [f.json()["delta"] for f in items[8:10]]
    assert all(d["type"] == "input_json_delta" for d in partial)
    assert json.loads("".join(d["partial_json"] for d in partial)) == {"city": "Oslo"}
    assert pieces_of("anthropic", items) == ["Let", " me", " check"]
    assert items[11].json() == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 9},
    }


def test_anthropic_error_mid_stream_is_an_error_event_inside_the_200(sim):
    sim.script("m", Reply("one two three", stream=Stream(error_after=1)))
    response = post(sim, "anthropic")
    assert response.status_code == 200
    items = frames("anthropic", response.text)
    assert [f.name for f in items] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert items[-1].json() == OVERLOADED["anthropic"]


def test_anthropic_stream_must_be_a_boolean(sim):
    response = post(sim, "anthropic", stream="yes")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "stream: Input should be a valid boolean"


# --- Gemini ----------------------------------------------------------------------------------


def test_gemini_alt_sse_streams_responses_with_crlf_and_ends_on_the_finish(sim):
    sim.script("m", Reply("Hello there world", input_tokens=4, output_tokens=3))
    response = post(sim, "gemini")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("\r\n\r\n") and "\n\n" not in response.text.replace("\r\n", "")
    items = frames("gemini", response.text)
    assert all(f.name is None and f.comment is None for f in items)
    assert "[DONE]" not in response.text
    *middle, last = data(items)
    assert pieces_of("gemini", items) == ["Hello", " there", " world"]
    for frame in middle:
        [candidate] = frame["candidates"]
        assert "finishReason" not in candidate and candidate["content"]["role"] == "model"
        assert frame["usageMetadata"] == {"promptTokenCount": 4, "totalTokenCount": 4}
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == {
        "promptTokenCount": 4,
        "candidatesTokenCount": 3,
        "totalTokenCount": 7,
    }
    assert {f["modelVersion"] for f in data(items)} == {"m"}


def test_gemini_function_calls_arrive_whole_in_their_own_frames(sim):
    sim.script("m", Reply("", tool_calls=TWO_CALLS))
    items = frames("gemini", post(sim, "gemini").text)
    parts = [f["candidates"][0]["content"]["parts"] for f in data(items)[:-1]]
    assert parts == [
        [{"functionCall": {"name": c.name, "args": c.arguments, "id": c.id}}] for c in TWO_CALLS
    ]


def test_gemini_a_blocked_answer_ends_with_finish_reason_safety(sim):
    sim.script("m", Reply("partial answer", stop_reason="SAFETY"), Empty("SAFETY"))
    items = frames("gemini", post(sim, "gemini").text)
    assert pieces_of("gemini", items) == ["partial", " answer"]
    assert data(items)[-1]["candidates"][0]["finishReason"] == "SAFETY"
    [blocked] = data(frames("gemini", post(sim, "gemini").text))
    assert blocked["candidates"][0]["finishReason"] == "SAFETY"
    assert "content" not in blocked["candidates"][0]


def test_gemini_without_alt_sse_streams_a_json_array_of_the_same_responses(sim):
    sim.script("m", Reply("Hello there world"))
    sse = data(frames("gemini", post(sim, "gemini").text))
    response = httpx.post(
        sim.url + GEMINI_STREAM,
        json={"contents": GEMINI_HI},
        headers=GEMINI_HEADERS,
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.text.startswith("[{") and response.text.endswith("]")
    array = response.json()
    assert [f["candidates"] for f in array] == [f["candidates"] for f in sse]


def test_gemini_refuses_an_alt_it_does_not_simulate(sim):
    response = httpx.post(
        sim.url + GEMINI_STREAM + "?alt=proto",
        json={"contents": GEMINI_HI},
        headers=GEMINI_HEADERS,
        timeout=10,
    )
    assert response.status_code == 400
    assert "alt=sse" in response.json()["error"]["message"]


# --- Ollama ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["absent", True])
def test_ollama_streams_ndjson_unless_told_not_to(sim, stream):
    sim.script("m", Reply("Hello there", input_tokens=3, output_tokens=2))
    fields = {} if stream == "absent" else {"stream": stream}
    response = post(sim, "ollama", **fields)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    *lines, last = data(frames("ollama", response.text))
    assert [line["message"] for line in lines] == [
        {"role": "assistant", "content": "Hello"},
        {"role": "assistant", "content": " there"},
    ]
    assert all(line["done"] is False and line["model"] == "m" for line in lines)
    assert all(line["created_at"].endswith("Z") for line in [*lines, last])
    assert last["done"] is True and last["done_reason"] == "stop"
    assert (last["prompt_eval_count"], last["eval_count"]) == (3, 2)
    assert last["message"] == {"role": "assistant", "content": ""}


def test_ollama_stream_false_still_answers_one_json_object(sim):
    sim.script("m", Reply("whole"))
    response = post(sim, "ollama", stream=False)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["message"]["content"] == "whole"


def test_ollama_tool_calls_arrive_whole_in_one_message_line(sim):
    sim.script("m", Reply("", tool_calls=TWO_CALLS))
    [calls, last] = data(frames("ollama", post(sim, "ollama").text))
    assert calls["done"] is False
    assert calls["message"]["tool_calls"] == [
        {"function": {"index": i, "name": c.name, "arguments": c.arguments}, "id": c.id}
        for i, c in enumerate(TWO_CALLS)
    ]
    assert last["done"] is True


# --- pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_chunks_cut_the_text_into_that_many_pieces(sim, vendor):
    sim.script("m", Reply("abcdefgh", stream=Stream(chunks=3)))
    assert pieces_of(vendor, frames(vendor, post(sim, vendor).text)) == ["abc", "def", "gh"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_explicit_pieces_are_the_text_streamed_or_not(sim, vendor):
    sim.script("m", Reply(stream=Stream(pieces=("Hel", "lo w", "orld"))))
    assert pieces_of(vendor, frames(vendor, post(sim, vendor).text)) == ["Hel", "lo w", "orld"]
    whole = post(sim, "openai", stream=False).json()
    assert whole["choices"][0]["message"]["content"] == "Hello world"


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_drop_after_n_chunks_cuts_the_connection_mid_body(sim, vendor):
    sim.script("m", Reply("one two three four", stream=Stream(drop_after=2)))
    path, body, headers = request_for(vendor)
    with httpx.stream("POST", sim.url + path, json=body, headers=headers, timeout=10) as r:
        assert r.status_code == 200
        text, error = read_until_broken(r)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert pieces_of(vendor, frames(vendor, text)) == ["one", " two"]


def test_a_fault_past_the_last_chunk_fires_before_the_closing_events(sim):
    sim.script("m", Reply("one two", stream=Stream(drop_after=99)))
    path, body, headers = request_for("openai")
    with httpx.stream("POST", sim.url + path, json=body, headers=headers, timeout=10) as r:
        text, error = read_until_broken(r)
    assert isinstance(error, httpx.RemoteProtocolError)
    chunks = data(frames("openai", text))
    assert pieces_of("openai", frames("openai", text)) == ["one", " two"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


@pytest.mark.parametrize("vendor", VENDORS)
def test_error_after_n_chunks_is_the_vendors_error_event_then_the_end(sim, vendor):
    sim.script("m", Reply("one two three", stream=Stream(error_after=1)))
    response = post(sim, vendor)
    assert response.status_code == 200
    items = frames(vendor, response.text)
    assert items[-1].json() == OVERLOADED[vendor]
    assert pieces_of(vendor, items[:-1]) == ["one"]


def test_the_error_event_carries_the_scripted_status_and_message(sim):
    sim.script(
        "m", Reply("a b", stream=Stream(error_after=0, error_status=503, error_message="busy"))
    )
    last = frames("gemini", post(sim, "gemini").text)[-1].json()
    assert last == {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}


@pytest.mark.parametrize("vendor", VENDORS)
def test_no_terminator_ends_the_body_without_the_vendors_closing_event(sim, vendor):
    sim.script("m", Reply("one two"), Reply("one two", stream=Stream(terminator=False)))
    assert terminated(vendor, frames(vendor, post(sim, vendor).text))
    response = post(sim, vendor)  # the body itself is complete: no transport error
    items = frames(vendor, response.text)
    assert not terminated(vendor, items)
    assert pieces_of(vendor, items) == ["one", " two"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_malformed_event_after_n_chunks_then_the_stream_goes_on(sim, vendor):
    sim.script("m", Reply("one two three", stream=Stream(malformed_after=2)))
    response = post(sim, vendor)
    items = frames(vendor, response.text)
    bad = [i for i, f in enumerate(items) if f.data == "this is not json {"]
    assert len(bad) == 1
    assert pieces_of(vendor, items[: bad[0]]) == ["one", " two"]
    rest = items[bad[0] + 1 :]
    assert pieces_of(vendor, rest) == [" three"] and terminated(vendor, rest)
    if vendor == "anthropic":  # named as a delta, so a client cannot skip it as unknown
        assert items[bad[0]].name == "content_block_delta"


@pytest.mark.parametrize("vendor", VENDORS)
def test_one_oversized_event_of_more_than_a_mebibyte(sim, vendor):
    sim.script("m", Reply("one two", stream=Stream(oversized_after=1)))
    items = frames(vendor, post(sim, vendor).text)
    sizes = [len(f.data or "") for f in items]
    assert sum(1 for size in sizes if size > 1024 * 1024) == 1
    one, huge, two = pieces_of(vendor, items)
    assert (one, two) == ("one", " two") and set(huge) == {"x"}
    assert terminated(vendor, items)


@pytest.mark.parametrize("vendor", VENDORS)
def test_keepalives_while_the_first_token_is_slow(sim, vendor):
    """Every keep-alive due within the wait is sent (late if the server thread was late), so
    a 45 ms wait at one per 10 ms holds four, however loaded the machine is (Anthropic's head
    has a ping of its own)."""
    stream = Stream(first_token_delay=0.045, keepalive_every=0.01)
    sim.script("m", Reply("one two", stream=stream))
    items = frames(vendor, post(sim, vendor).text)
    first = next(i for i, f in enumerate(items) if pieces_of(vendor, [f]))
    waiting = [f for f in items[:first] if is_keepalive(vendor, f)]
    assert len(waiting) == 4 + (vendor == "anthropic")
    assert not any(is_keepalive(vendor, f) for f in items[first:])
    assert pieces_of(vendor, items) == ["one", " two"] and terminated(vendor, items)


@pytest.mark.parametrize("vendor", VENDORS)
def test_keepalives_forever_until_released(sim, vendor):
    sim.script("m", Reply("one two", stream=Stream(stall_after=0, keepalive_every=0.01)))
    with httpx.Client(timeout=10) as client, open_stream(client, sim, vendor) as response:
        arriving = live_frames(vendor, response)
        seen = 0
        for frame in arriving:
            assert not pieces_of(vendor, [frame]), "content before the release"
            seen += is_keepalive(vendor, frame)
            if seen == 3:
                break
        sim.release()
        rest = list(arriving)
    content = [f for f in rest if pieces_of(vendor, [f])]
    assert pieces_of(vendor, content) == ["one", " two"] and terminated(vendor, rest)


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_stall_holds_the_rest_until_released(sim, vendor):
    sim.script("m", Reply("one two three", stream=Stream(stall_after=1)))
    with httpx.Client(timeout=10) as client, open_stream(client, sim, vendor) as response:
        arriving = live_frames(vendor, response)
        before = next(f for f in arriving if pieces_of(vendor, [f]))
        sim.release()
        rest = list(arriving)
    assert pieces_of(vendor, [before]) == ["one"]
    assert pieces_of(vendor, rest) == [" two", " three"] and terminated(vendor, rest)
    assert sim.disconnects() == 0


# --- clients that go away --------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_client_that_leaves_a_stalled_stream_is_recorded(sim, vendor):
    sim.script("m", Reply("one two three", stream=Stream(stall_after=1)))
    with httpx.Client(timeout=10) as client, open_stream(client, sim, vendor) as response:
        next(f for f in live_frames(vendor, response) if pieces_of(vendor, [f]))
    # Leaving the block closed the connection mid-body; the stalled server notices.
    assert sim.wait_for_disconnects(1, "m", timeout=10)
    assert [r.disconnected for r in sim.requests] == [True]
    assert sim.disconnects("m") == 1 and sim.disconnects("other") == 0


def test_a_client_that_leaves_before_the_slow_first_token_is_recorded(sim):
    sim.script("m", Reply("late", stream=Stream(first_token_delay=60)))
    with httpx.Client(timeout=10) as client, open_stream(client, sim, "anthropic") as response:
        head = next(live_frames("anthropic", response))
        assert head.name == "message_start"
    assert sim.wait_for_disconnects(1, timeout=10)


def test_a_client_that_leaves_between_slow_chunks_is_recorded(sim):
    sim.script("m", Reply("one two three", stream=Stream(chunk_delay=60)))
    with httpx.Client(timeout=10) as client, open_stream(client, sim, "ollama") as response:
        next(live_frames("ollama", response))
    assert sim.wait_for_disconnects(1, timeout=10)


def test_a_client_that_gives_up_on_a_hang_is_recorded(sim):
    sim.script("m", Hang(seconds=60))
    path, body, headers = request_for("openai")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim.url + path, json=body, headers=headers, timeout=httpx.Timeout(10, read=0.2))
    assert sim.wait_for_disconnects(1, timeout=10)


def test_streams_read_to_the_end_are_not_disconnects(sim):
    sim.script("m", Reply("one two", stream=Stream(chunk_delay=0.001)))
    for vendor in VENDORS:
        assert terminated(vendor, frames(vendor, post(sim, vendor).text))
    assert sim.disconnects() == 0
    recorded = httpx.get(sim.url + "/_sim/requests", timeout=10).json()
    assert [r["disconnected"] for r in recorded] == [False] * 4


def test_the_requests_endpoint_reports_disconnects(sim):
    sim.script("m", Reply("one two", stream=Stream(stall_after=1)))
    with httpx.Client(timeout=10) as client, open_stream(client, sim, "openai") as response:
        next(f for f in live_frames("openai", response) if pieces_of("openai", [f]))
    assert sim.wait_for_disconnects(1, timeout=10)
    recorded = httpx.get(sim.url + "/_sim/requests", timeout=10).json()
    assert [r["disconnected"] for r in recorded] == [True]


def test_stopping_the_simulator_ends_a_stalled_stream():
    sim = Simulator().start()
    try:
        sim.script("m", Reply("one two", stream=Stream(stall_after=1, keepalive_every=0.01)))
        with httpx.Client(timeout=10) as client, open_stream(client, sim, "openai") as response:
            arriving = live_frames("openai", response)
            next(f for f in arriving if pieces_of("openai", [f]))
            sim.stop()
            with pytest.raises(httpx.RemoteProtocolError):
                for frame in arriving:
                    assert not pieces_of("openai", [frame])
    finally:
        sim.stop()


# --- other behaviours on streaming requests --------------------------------------------------


def test_an_error_event_on_a_streaming_request_is_a_stream_of_that_error(sim):
    sim.script("m", ErrorEvent(529))
    response = post(sim, "anthropic")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    [error] = frames("anthropic", response.text)
    assert (error.name, error.json()) == ("error", OVERLOADED["anthropic"])


def test_an_empty_answer_on_a_streaming_request(sim):
    sim.script("m", Empty())
    items = frames("openai", post(sim, "openai").text)
    assert [f.data for f in items][-1] == "[DONE]"
    assert data(items)[0]["choices"] == []
    sim.script("m", Empty("refusal"))
    items = frames("anthropic", post(sim, "anthropic").text)
    assert [f.name for f in items] == ["message_start", "ping", "message_delta", "message_stop"]
    assert items[2].json()["delta"]["stop_reason"] == "refusal"


def test_a_fail_on_a_streaming_request_is_a_plain_error_response(sim):
    sim.script("m", Fail(429, retry_after="3"))
    response = post(sim, "openai")
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"


# --- scripting streams -----------------------------------------------------------------------


def test_a_streamed_reply_round_trips_through_json():
    reply = Reply(
        "ab",
        tool_calls=(SimToolCall("f", {"x": 1}),),
        stream=Stream(pieces=("a", "b"), stall_after=1, keepalive_every=0.5, terminator=False),
    )
    encoded = json.loads(json.dumps(to_json(reply)))
    assert encoded["stream"]["pieces"] == ["a", "b"]
    assert from_json(encoded) == reply


def test_the_control_endpoint_scripts_a_stream(sim):
    script = {"m": [{"type": "reply", "text": "a b c", "stream": {"chunks": 5, "drop_after": 1}}]}
    assert httpx.post(sim.url + "/_sim/script", json=script, timeout=10).status_code == 200
    path, body, headers = request_for("openai")
    with httpx.stream("POST", sim.url + path, json=body, headers=headers, timeout=10) as r:
        text, error = read_until_broken(r)
    assert error is not None and pieces_of("openai", frames("openai", text)) == ["a"]


@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        ({"chunk": 2}, "unexpected keyword argument 'chunk'"),
        ({"chunks": 0}, "chunks must be a positive integer"),
        ({"drop_after": -1}, "drop_after must be a count"),
        ({"chunks": 2, "pieces": ["a"]}, "either chunks or pieces"),
        ({"keepalive_every": 0}, "keepalive_every must be a positive"),
        ({"pieces": ["a", "b"]}, "pieces must join to the reply's text"),
        ("fast", "stream must be an object"),
    ],
)
def test_a_bad_stream_script_is_refused(sim, stream, fragment):
    script = {"m": [{"type": "reply", "text": "x", "stream": stream}]}
    response = httpx.post(sim.url + "/_sim/script", json=script, timeout=10)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_the_simulator_program_takes_a_script_with_streams(tmp_path: Path):
    script = tmp_path / "script.json"
    reply = {"type": "reply", "text": "abcdef", "stream": {"chunks": 3, "terminator": False}}
    script.write_text(json.dumps({"m": [reply]}))
    proc = start_simulator("--script", str(script))
    try:
        url = first_line(proc)
        path, body, headers = request_for("ollama")
        response = httpx.post(url + path, json=body, headers=headers, timeout=10)
        items = frames("ollama", response.text)
        assert pieces_of("ollama", items) == ["ab", "cd", "ef"]
        assert not terminated("ollama", items)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
