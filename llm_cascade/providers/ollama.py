"""Ollama's native chat API (`POST /api/chat`, whole or streamed as NDJSON), tool round trips.

Ollama takes no API key. Its messages look like Chat Completions with two differences that
matter: tool-call arguments are a JSON object, not a string, and a tool result names the
function it answers (`tool_name`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

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
    StreamFormat,
    WireRequest,
    arguments_object,
    count,
    deep_merge,
    function_tools,
    names_in,
    new_call_id,
    obj,
    tool_name,
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


def _message(conversation: Conversation, msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.text}
    if msg.images:  # base64 only: images.unfit skips the entry for image URLs
        out["images"] = [image.data for image in msg.images]
    if msg.tool_calls:
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {"index": i, "name": c.name, "arguments": arguments_object(c)},
            }
            for i, c in enumerate(msg.tool_calls)
        ]
    if msg.role == "tool":
        name = tool_name(conversation, msg)
        if name:
            out["tool_name"] = name
        if msg.tool_call_id is not None:  # unknown fields are ignored by older servers
            out["tool_call_id"] = msg.tool_call_id
    return out


def _tool_call(raw: Any) -> ToolCall:
    call = obj(raw)
    fn = obj(call.get("function"))
    args = fn.get("arguments")
    call_id = call.get("id")
    return ToolCall(
        call_id if isinstance(call_id, str) and call_id else new_call_id(),  # usually absent
        str(fn.get("name") or ""),
        args if isinstance(args, str) else compact_json(args or {}),
    )


def _usage(data: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens of a final reply or line."""
    return count(data.get("prompt_eval_count")), count(data.get("eval_count"))


def _done_reason(data: Mapping[str, Any]) -> str | None:
    done = data.get("done_reason")
    return done if isinstance(done, str) else None


class OllamaAdapter(Adapter):
    """Ollama's native chat API."""

    type_name = "ollama"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body: dict[str, Any] = {
            "model": options.model,
            "messages": [_message(conversation, m) for m in conversation.messages],
        }
        if conversation.tools:
            body["tools"] = function_tools(conversation.tools)
        model_options: dict[str, Any] = {}
        if options.max_tokens is not None:
            model_options["num_predict"] = options.max_tokens
        if options.temperature is not None:
            model_options["temperature"] = options.temperature
        if model_options:
            body["options"] = model_options
        if options.output is not None:  # "json", or the schema itself
            schema = options.output.wire_schema
            body["format"] = "json" if schema is None else dict(schema)
        # Ollama streams unless told not to.
        body = with_stream(deep_merge(body, options.extra), stream, say_no=True)
        return WireRequest(f"{options.base_url}/api/chat", body)

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        self.reject_error_body(data)
        message = obj(data.get("message"))
        blocks: list[ContentBlock] = []
        text = message.get("content")
        if isinstance(text, str) and text:
            blocks.append(TextBlock(text))
        calls = message.get("tool_calls")
        blocks += [_tool_call(c) for c in calls] if isinstance(calls, list) else []
        stop_reason = _done_reason(data)
        model = data.get("model")
        return self.answer(
            blocks,
            model if isinstance(model, str) and model else options.model,
            _usage(data),
            stop_reason,
            f"no text or tool calls (done_reason: {stop_reason})",
        )

    # --- health probes ---------------------------------------------------------------------

    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        """`GET /api/tags`: the models pulled into this server."""
        return (ProbeRequest(f"{options.base_url}/api/tags", listing=True),)

    def listed(self, data: Any, options: CallOptions) -> bool:
        """`llama3` is pulled as `llama3:latest`."""
        names = names_in(data, "models", "name", "model")
        wanted = options.model if ":" in options.model else f"{options.model}:latest"
        return bool({options.model, wanted} & names)

    # --- streaming (NDJSON) ------------------------------------------------------------------

    stream_format: ClassVar[StreamFormat] = "ndjson"

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return OllamaStreamParser(self)


class OllamaStreamParser(StreamParser):
    """One JSON object per line; the last has `done: true`, `done_reason` and the counts.

    Tool calls arrive whole, each in one line. An `{"error": "..."}` line (a failure after the
    200 was sent) fails as an error-shaped whole reply does.
    """

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self._adapter = adapter
        self._calls = 0  # tool calls seen: each gets the next index

    def feed(self, event: StreamEvent) -> list[Delta]:
        data = event_json(event)
        if not isinstance(data, Mapping):
            raise self._adapter.malformed("stream line is not a JSON object")
        self._adapter.reject_error_body(data)
        deltas = self.model_delta(data.get("model"))
        message = obj(data.get("message"))
        text = message.get("content")
        if isinstance(text, str) and text:
            deltas.append(TextDelta(text))
        calls = message.get("tool_calls")
        for call in map(_tool_call, calls if isinstance(calls, list) else ()):
            deltas.append(ToolCallDelta(self._calls, call.id, call.name, call.arguments))
            self._calls += 1
        if data.get("done") is True:
            deltas.append(UsageDelta(*_usage(data)))
            stop_reason = _done_reason(data)
            if stop_reason is not None:
                deltas.append(StopDelta(stop_reason))
            deltas.append(EndOfStream())
        return deltas


ADAPTER = OllamaAdapter()
