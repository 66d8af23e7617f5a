"""Cohere's v2 chat API (`POST /v2/chat`), whole or streamed as named SSE events.

Messages look like Chat Completions with Cohere's differences: the system text is one system
turn first, an assistant turn that calls tools says what it plans in `tool_plan` (mapped to
and from the turn's text, so the plan survives a trip through another vendor), tool results
are `role: tool` with `tool_call_id`, and the answer's `content` is a list of text (and, from
reasoning models, thinking) items. Token counts are `usage.billed_units`, else `usage.tokens`.
A finish reason of `ERROR` or `TIMEOUT` is a failed generation, not an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..types import (
    ContentBlock,
    Conversation,
    ImagePart,
    LlmResponse,
    Message,
    OutputFormat,
    TextBlock,
    ToolCall,
)
from .base import (
    Adapter,
    CallOptions,
    WireRequest,
    count,
    deep_merge,
    error_summary,
    function_tools,
    joined_system,
    new_call_id,
    obj,
    with_stream,
)
from .openai import ask_for_output, bearer_auth
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

FAILED_FINISH = frozenset({"ERROR", "TIMEOUT"})
# A trial key's monthly allowance spent: a 429 that waiting minutes does not lift.
TRIAL_MONTHLY = "trial_key_monthly_limit"


def _content(msg: Message) -> str | list[dict[str, Any]]:
    if not msg.images:
        return msg.text
    return [
        {"type": "image_url", "image_url": {"url": p.data_url}}
        if isinstance(p, ImagePart)
        else {"type": "text", "text": p.text}
        for p in msg.parts
    ]


def _message(msg: Message) -> dict[str, Any]:
    if msg.role == "tool":
        return {"role": "tool", "tool_call_id": msg.tool_call_id, "content": msg.text}
    if msg.role == "assistant" and msg.tool_calls:
        out: dict[str, Any] = {"role": "assistant"}
        if msg.text:
            out["tool_plan"] = msg.text
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
        return out
    return {"role": msg.role, "content": _content(msg)}


def messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The `messages` array: the system text first, as one turn, then the rest in order."""
    system = joined_system(conversation)
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + [_message(m) for m in conversation.messages if m.role != "system"]


def _tool_call(raw: Any) -> ToolCall:
    call = obj(raw)
    fn = obj(call.get("function"))
    call_id, args = call.get("id"), fn.get("arguments")
    return ToolCall(
        call_id if isinstance(call_id, str) and call_id else new_call_id(),
        str(fn.get("name") or ""),
        args if isinstance(args, str) and args else "{}",
    )


def _usage(usage: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens as billed; else as processed (`tokens`, which also counts
    Cohere's own prompt template)."""
    billed, tokens = obj(usage.get("billed_units")), obj(usage.get("tokens"))
    source = billed if "input_tokens" in billed or "output_tokens" in billed else tokens
    return count(source.get("input_tokens")), count(source.get("output_tokens"))


def _finish(value: Any) -> str | None:
    """The finish reason; raises if it says the generation failed."""
    finish = value if isinstance(value, str) else None
    if finish in FAILED_FINISH:
        raise Adapter.malformed(f"the generation failed (finish_reason: {finish})")
    return finish


def response_format(output: OutputFormat) -> dict[str, Any]:
    """`response_format`: a JSON object, under `json_schema` when there is one (Cohere's
    structured outputs take the schema itself, unnamed)."""
    wire = output.wire_schema
    return {"type": "json_object"} if wire is None else {"type": "json_object", "json_schema": wire}


class CohereAdapter(Adapter):
    type_name = "cohere"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body: dict[str, Any] = {"model": options.model, "messages": messages(conversation)}
        if conversation.tools:
            body["tools"] = function_tools(conversation.tools)
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if options.output is not None:
            ask_for_output(body, conversation, options.output, response_format(options.output))
        body = with_stream(deep_merge(body, options.extra), stream)
        return WireRequest(f"{options.base_url}/v2/chat", body, bearer_auth(options))

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        message = data.get("message")
        if not isinstance(message, Mapping):
            if isinstance(message, str):  # Cohere's error shape, `{"message": "..."}`, in a 200
                raise self.malformed(f"error in a 2xx response: {message}")
            self.reject_error_body(data)
            raise self.empty("no message")
        stop_reason = _finish(data.get("finish_reason"))
        blocks: list[ContentBlock] = []
        plan = message.get("tool_plan")
        if isinstance(plan, str) and plan:
            blocks.append(TextBlock(plan))
        content = message.get("content")
        for item in map(obj, content if isinstance(content, list) else ()):
            text = item.get("text")  # thinking items carry `thinking`, not `text`
            if item.get("type") == "text" and isinstance(text, str) and text:
                blocks.append(TextBlock(text))
        calls = message.get("tool_calls")
        blocks += [_tool_call(c) for c in calls] if isinstance(calls, list) else []
        return self.answer(
            blocks,
            options.model,  # the reply does not name it
            _usage(obj(data.get("usage"))),
            stop_reason,
            f"no text or tool calls (finish_reason: {stop_reason})",
        )

    def parse_error(self, data: Any) -> tuple[str | None, str | None]:
        """`{"id", "message"}`; a trial key's spent monthly allowance gets a code of its own."""
        message, code = error_summary(data)
        if message and "trial key" in message.lower() and "month" in message.lower():
            return message, TRIAL_MONTHLY
        return message, code

    # --- streaming (SSE) ---------------------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return CohereStreamParser(self)


class CohereStreamParser(StreamParser):
    """`message-start`, `content-start`/`-delta`/`-end` (text or thinking), `tool-plan-delta`,
    `tool-call-start`/`-delta`/`-end` keyed by `index`, `citation-*`, and `message-end` with the
    finish reason and the usage, the last event."""

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self._adapter = adapter
        self._thinking: set[int] = set()  # content indexes that hold thinking, not answer text

    def feed(self, event: StreamEvent) -> list[Delta]:
        data = event_json(event)
        if not isinstance(data, Mapping):
            raise self._adapter.malformed("stream event is not a JSON object")
        kind = data.get("type", event.name)
        message = obj(obj(data.get("delta")).get("message"))
        index = data.get("index")
        if kind == "content-start" and obj(message.get("content")).get("type") == "thinking":
            self._thinking.add(index if isinstance(index, int) else -1)
            return []
        if kind in ("content-start", "content-delta"):
            text = obj(message.get("content")).get("text")
            skip = index in self._thinking
            return [TextDelta(text)] if isinstance(text, str) and text and not skip else []
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return [TextDelta(plan)] if isinstance(plan, str) and plan else []
        if kind in ("tool-call-start", "tool-call-delta") and isinstance(index, int):
            return self._call(kind, index, obj(message.get("tool_calls")))
        if kind == "message-end":
            delta = obj(data.get("delta"))
            stop = _finish(delta.get("finish_reason"))
            return [UsageDelta(*_usage(obj(delta.get("usage")))), StopDelta(stop), EndOfStream()]
        return []  # message-start, content-end, tool-call-end, citations, events added later

    @staticmethod
    def _call(kind: str, index: int, call: Mapping[str, Any]) -> list[Delta]:
        fn = obj(call.get("function"))
        args = fn.get("arguments")
        piece = args if isinstance(args, str) else ""
        if kind == "tool-call-delta":
            return [ToolCallDelta(index, arguments=piece)] if piece else []
        call_id, name = call.get("id"), fn.get("name")
        return [
            ToolCallDelta(
                index,
                call_id if isinstance(call_id, str) else None,
                name if isinstance(name, str) else None,
                piece,
            )
        ]


ADAPTER = CohereAdapter()
