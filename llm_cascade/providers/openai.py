"""OpenAI Chat Completions, and every OpenAI-compatible `base_url`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..types import (
    ContentBlock,
    Conversation,
    LlmResponse,
    Message,
    TextBlock,
    ToolCall,
    compact_json,
)
from .base import (
    Adapter,
    CallOptions,
    ProbeRequest,
    WireRequest,
    count,
    deep_merge,
    function_tools,
    names_in,
    obj,
    with_stream,
)
from .streaming import (
    Delta,
    EndOfStream,
    StopDelta,
    StreamEvent,
    StreamParser,
    TextDelta,
    ToolCallDelta,
    UsageDelta,
    event_json,
)


def _message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.tool_calls:
        out["content"] = msg.content or None  # a tool-calling turn may have no text
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = msg.tool_call_id
    return out


def chat_body(conversation: Conversation, options: CallOptions) -> dict[str, Any]:
    """The Chat Completions body: model, messages and tools."""
    body: dict[str, Any] = {
        "model": options.model,
        "messages": [_message(m) for m in conversation.messages],
    }
    if conversation.tools:  # an empty list is rejected by the API, so omit it
        body["tools"] = function_tools(conversation.tools)
    return body


def _text(content: Any) -> str:
    """`content` as text: a string, or the text parts some compatible servers send."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def _arguments(value: Any, missing: str) -> str:
    """Arguments as JSON text: a string as sent, an object (some compatibles) serialised."""
    if isinstance(value, str):
        return value
    return missing if value is None else compact_json(value)


def _tool_call(raw: Any) -> ToolCall:
    raw = obj(raw)
    fn = obj(raw.get("function"))
    args = _arguments(fn.get("arguments"), "{}")
    return ToolCall(str(raw.get("id") or ""), str(fn.get("name") or ""), args)


def _usage(data: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens from a reply's or a chunk's `usage`."""
    usage = obj(data.get("usage"))
    return count(usage.get("prompt_tokens")), count(usage.get("completion_tokens"))


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _auth(options: CallOptions) -> dict[str, str]:
    return {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}


class OpenAIAdapter(Adapter):
    type_name = "openai"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body = chat_body(conversation, options)
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if stream and options.stream_usage:
            body["stream_options"] = {"include_usage": True}  # else a stream has no usage
        body = with_stream(deep_merge(body, options.extra), stream)
        return WireRequest(f"{options.base_url}/chat/completions", body, _auth(options))

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            self.reject_error_body(data)  # an error-shaped 200, as some proxies send
            raise self.empty("no choices")
        choice = obj(choices[0])
        message_obj = obj(choice.get("message"))
        blocks: list[ContentBlock] = []
        text = _text(message_obj.get("content"))
        if text:
            blocks.append(TextBlock(text))
        calls = message_obj.get("tool_calls")
        blocks += [_tool_call(c) for c in calls] if isinstance(calls, list) else []
        input_tokens, output_tokens = _usage(data)
        stop = choice.get("finish_reason")
        response = LlmResponse(
            content=tuple(blocks),
            model=str(data.get("model") or options.model),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            stop_reason=stop if isinstance(stop, str) else None,
        )
        if not response.has_content():
            raise self.empty(f"no text or tool calls (finish_reason: {stop})")
        return response

    # --- health probes ---------------------------------------------------------------------

    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        """`GET /models/{id}`; servers without it (vLLM, some proxies) answer the listing."""
        own = f"{options.base_url}/models/{quote(options.model, safe='')}"
        listing = f"{options.base_url}/models"
        return ProbeRequest(own, _auth(options)), ProbeRequest(listing, _auth(options), True)

    def listed(self, data: Any, options: CallOptions) -> bool:
        return options.model in names_in(data, "data", "id")

    # --- streaming (SSE) ---------------------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return OpenAIStreamParser(self)


class OpenAIStreamParser(StreamParser):
    """`chat.completion.chunk` events, then `data: [DONE]`.

    Usage comes in an extra chunk with `choices: []` (earlier chunks have `usage: null`) when
    `stream_options.include_usage` was asked for. Only the first choice is read, as in a whole
    reply. Tool-call pieces are keyed by their `index`; the assembler tells apart the calls of
    servers that number every parallel call 0.
    """

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self._adapter = adapter

    def feed(self, event: StreamEvent) -> list[Delta]:
        if event.data.strip() == "[DONE]":
            return [EndOfStream()]
        data = event_json(event)
        if not isinstance(data, Mapping):
            raise self._adapter.malformed("stream event is not a JSON object")
        self._adapter.reject_error_body(data)  # `data: {"error": {...}}` mid-stream
        deltas = self.model_delta(data.get("model"))
        if isinstance(data.get("usage"), Mapping):
            deltas.append(UsageDelta(*_usage(data)))
        choices = data.get("choices")
        for choice in map(obj, choices if isinstance(choices, list) else ()):
            if choice.get("index", 0) == 0:
                deltas += _choice_deltas(choice)
        return deltas


def _choice_deltas(choice: Mapping[str, Any]) -> list[Delta]:
    delta = obj(choice.get("delta"))
    deltas: list[Delta] = []
    text = _text(delta.get("content"))
    if text:
        deltas.append(TextDelta(text))
    calls = delta.get("tool_calls")
    for position, raw in enumerate(calls if isinstance(calls, list) else ()):
        call = obj(raw)
        fn = obj(call.get("function"))
        index = call.get("index")
        deltas.append(
            ToolCallDelta(
                index if isinstance(index, int) and not isinstance(index, bool) else position,
                _text_or_none(call.get("id")),
                _text_or_none(fn.get("name")),
                _arguments(fn.get("arguments"), ""),
            )
        )
    stop = choice.get("finish_reason")
    if isinstance(stop, str):
        deltas.append(StopDelta(stop))
    return deltas


ADAPTER = OpenAIAdapter()
