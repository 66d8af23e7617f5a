"""Anthropic Messages at the gateway's edge: a request in, our answer or stream out.

`parse_request` turns a `/v1/messages` body into a `GatewayRequest` (or a 400 naming the
field), `message` renders a `CascadeResult`, `EventStream` turns the engine's stream events
into the Messages event sequence (`message_start`, content blocks, `message_delta`,
`message_stop`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events import Done, EntryStarted, StreamEvent, Text, ToolCallDelta
from ..providers.base import arguments_object
from ..providers.base import safe_tool_id as tool_id
from ..results import CascadeResult
from ..types import (
    ContentPart,
    Conversation,
    ImagePart,
    LlmResponse,
    Message,
    TextPart,
    ToolCall,
    ToolDefinition,
    compact_json,
)
from .wire import (
    ANY,
    BadRequest,
    GatewayRequest,
    Stop,
    cascade_name,
    entry_model,
    expect,
    image_part,
    inline_image_part,
    new_id,
    optional_int,
    optional_number,
    passed_headers,
    refuse_unknown,
    sse,
    stop_kind,
    user_message,
)

MAPPED = frozenset(
    {"model", "messages", "max_tokens", "system", "stream", "tools", "tool_choice"}
    | {"temperature"}
)
NEUTRAL: dict[str, Any] = {
    "metadata": ANY,
    "stop_sequences": [],
    "thinking": {"type": "disabled"},
    "service_tier": "auto",
}
STOP_REASONS: dict[Stop, str] = {
    "end": "end_turn",
    "length": "max_tokens",
    "tool": "tool_use",
    "filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}
SKIPPED_BLOCKS = ("thinking", "redacted_thinking")  # earlier turns' reasoning: not mapped


def parse_request(
    body: Mapping[str, Any], cascades: Mapping[str, object], headers: Mapping[str, str]
) -> GatewayRequest:
    """A Messages body as a cascade run; BadRequest for anything we cannot honour."""
    refuse_unknown(body, MAPPED, NEUTRAL)
    name = cascade_name(body.get("model"), cascades)
    max_tokens = optional_int(body, "max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: is missing", param="max_tokens")
    _check_tool_choice(body.get("tool_choice"))
    system = _system(body.get("system"))
    messages = [*([Message.system(system)] if system else []), *_messages(body.get("messages"))]
    return GatewayRequest(
        cascade=name,
        conversation=Conversation(messages, _tools(body.get("tools"))),
        stream=expect(body.get("stream", False) or False, bool, "stream", "true or false"),
        max_tokens=max_tokens,
        temperature=optional_number(body, "temperature", 0, 1),
        vendor_headers=passed_headers(headers),
    )


def _unsupported(where: str, what: str) -> BadRequest:
    return BadRequest(f"{where}: {what}", param=where, code="unsupported_parameter")


def _check_tool_choice(value: Any) -> None:
    if value is None or (isinstance(value, dict) and value.get("type") == "auto"):
        return
    raise _unsupported("tool_choice", 'only {"type": "auto"} is supported (the model decides)')


def _text_blocks(value: Any, where: str) -> str:
    """A string, or text blocks joined (cache_control and citations do not change the text)."""
    if isinstance(value, str):
        return value
    expect(value, list, where, "a string or an array of text blocks")
    texts = []
    for i, block in enumerate(value):
        expect(block, dict, f"{where}[{i}]", "a content block object")
        if block.get("type") != "text":
            kind = compact_json(block.get("type"))
            raise _unsupported(f"{where}[{i}].type", f"{kind} blocks are not supported (text only)")
        texts.append(expect(block.get("text"), str, f"{where}[{i}].text", "a string"))
    return "".join(texts)


def _system(value: Any) -> str | None:
    return None if value is None else _text_blocks(value, "system") or None


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    expect(content, list, where, "a string or an array of content blocks")
    for i, block in enumerate(content):
        expect(block, dict, f"{where}[{i}]", "a content block object")
    return list(content)


def _assistant(blocks: list[dict[str, Any]], where: str) -> Message:
    texts, calls = [], []
    for i, block in enumerate(blocks):
        kind, at = block.get("type"), f"{where}[{i}]"
        if kind == "text":
            texts.append(expect(block.get("text"), str, f"{at}.text", "a string"))
        elif kind == "tool_use":
            arguments = expect(block.get("input", {}), dict, f"{at}.input", "an object")
            calls.append(
                ToolCall(
                    expect(block.get("id"), str, f"{at}.id", "a string"),
                    expect(block.get("name"), str, f"{at}.name", "a string"),
                    compact_json(arguments),
                )
            )
        elif kind not in SKIPPED_BLOCKS:
            raise _unsupported(f"{at}.type", f"{compact_json(kind)} blocks are not supported")
    return Message.assistant("".join(texts), calls)


def _image(block: dict[str, Any], where: str) -> ImagePart:
    """An `image` block: a `base64` source with its media type, or a `url` source."""
    source = expect(block.get("source"), dict, f"{where}.source", "an object")
    kind = source.get("type")
    if kind == "base64":
        return inline_image_part(source.get("media_type"), source.get("data"), f"{where}.source")
    if kind == "url":
        return image_part(source.get("url"), f"{where}.source.url")
    raise _unsupported(f"{where}.source.type", "must be base64 or url")


def _user(blocks: list[dict[str, Any]], where: str) -> list[Message]:
    """Tool results become tool turns (first, as the API orders them), the text and images a
    user turn."""
    out: list[Message] = []
    parts: list[ContentPart] = []
    for i, block in enumerate(blocks):
        kind, at = block.get("type"), f"{where}[{i}]"
        if kind == "text":
            parts.append(TextPart(expect(block.get("text"), str, f"{at}.text", "a string")))
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            call_id = expect(block.get("tool_use_id"), str, f"{at}.tool_use_id", "a string")
            out.append(
                Message.tool(_text_blocks(block.get("content", ""), f"{at}.content"), call_id)
            )
        else:
            raise _unsupported(f"{at}.type", f"{compact_json(kind)} blocks are not supported")
    if parts or not out:
        out.append(user_message(parts))
    return out


def _messages(raw: Any) -> list[Message]:
    if raw is None:
        raise BadRequest("messages: is missing", param="messages")
    expect(raw, list, "messages", "an array of messages")
    if not raw:
        raise BadRequest("messages: must hold at least one message", param="messages")
    out: list[Message] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        expect(msg, dict, where, "a message object")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: must be user or assistant", param=f"{where}.role")
        blocks = _blocks(msg.get("content"), f"{where}.content")
        if role == "assistant":
            out.append(_assistant(blocks, f"{where}.content"))
        else:
            out += _user(blocks, f"{where}.content")
    return out


def _tools(raw: Any) -> list[ToolDefinition] | None:
    if raw is None:
        return None
    expect(raw, list, "tools", "an array")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        expect(tool, dict, where, "a tool object")
        if tool.get("type", "custom") != "custom":
            raise _unsupported(f"{where}.type", "server tools are not supported (custom only)")
        schema = expect(tool.get("input_schema"), dict, f"{where}.input_schema", "an object")
        tools.append(
            ToolDefinition(
                expect(tool.get("name"), str, f"{where}.name", "a string"),
                expect(tool.get("description") or "", str, f"{where}.description", "text"),
                schema,
            )
        )
    return tools


# --- out ------------------------------------------------------------------------------------


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": tool_id(call.id) or new_id("toolu_"),
        "name": call.name,
        "input": arguments_object(call),
    }


def _usage(response: LlmResponse) -> dict[str, int]:
    return {
        "input_tokens": response.input_tokens or 0,
        "output_tokens": response.output_tokens or 0,
    }


def message(result: CascadeResult) -> dict[str, Any]:
    """The `message` object for a whole answer."""
    response = result.response
    content: list[dict[str, Any]] = (
        [{"type": "text", "text": response.text}] if response.text else []
    )
    content += [_tool_use(c) for c in response.tool_calls]
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": STOP_REASONS[stop_kind(response)],
        "stop_sequence": None,
        "usage": _usage(response),
    }


def error(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def models(names: list[str]) -> dict[str, Any]:
    """`GET /v1/models` as the Anthropic API lists models: one per cascade."""
    data = [
        {"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}
        for n in names
    ]
    first, last = (names[0], names[-1]) if names else (None, None)
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}


class EventStream:
    """The engine's events as the Messages stream: `message_start` with the first content,
    one content block per text run or tool call, then `message_delta` and `message_stop`.

    Nothing is produced before the first piece of content, so a cascade that fails before it
    can still be answered with a plain 503.
    """

    def __init__(self, model: str) -> None:
        self.id = new_id("msg_")
        self.model = model
        self.started = False
        self._blocks = 0  # content blocks started so far
        self._open: int | None = None  # the block now open
        self._text_block: int | None = None  # the open block, when it is a text block
        self._calls: dict[int, int] = {}  # the engine's tool-call index -> its block index

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        start: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [_event("message_start", message=start)]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        index, self._open, self._text_block = self._open, None, None
        return [_event("content_block_stop", index=index)]

    def _open_block(self, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._open = self._blocks
        self._blocks += 1
        return [*out, _event("content_block_start", index=self._open, content_block=block)]

    def feed(self, event: StreamEvent) -> list[bytes]:
        """The SSE bytes for one engine event (none for the engine's own bookkeeping)."""
        if isinstance(event, Text):
            out = self._start()
            if self._text_block is None:
                out += self._open_block({"type": "text", "text": ""})
                self._text_block = self._open
            delta = {"type": "text_delta", "text": event.text}
            return [*out, _event("content_block_delta", index=self._text_block, delta=delta)]
        if isinstance(event, ToolCallDelta):
            return [*self._start(), *self._tool_piece(event)]
        if isinstance(event, Done):
            return self._done(event.result.response)
        if isinstance(event, EntryStarted) and not self.started:
            self.model = entry_model(event.entry)
        return []  # Switched (the text goes on), Reset (never: can_restart is off)

    def _tool_piece(self, event: ToolCallDelta) -> list[bytes]:
        out: list[bytes] = []
        if event.index not in self._calls:
            block = {
                "type": "tool_use",
                "id": tool_id(event.id) or new_id("toolu_"),
                "name": event.name or "",
                "input": {},
            }
            out += self._open_block(block)
            self._calls[event.index] = self._blocks - 1
        if event.arguments:
            # A piece of a call whose block was closed (vendors send calls one after another,
            # so this is rare) still names its own block: clients accumulate by index.
            delta = {"type": "input_json_delta", "partial_json": event.arguments}
            out.append(_event("content_block_delta", index=self._calls[event.index], delta=delta))
        return out

    def _done(self, response: LlmResponse) -> list[bytes]:
        out = [*self._start(), *self._close()]
        delta = {"stop_reason": STOP_REASONS[stop_kind(response)], "stop_sequence": None}
        out.append(_event("message_delta", delta=delta, usage=_usage(response)))
        out.append(_event("message_stop"))
        return out

    @staticmethod
    def error(message: str) -> bytes:
        """The error event that ends a stream no entry could finish."""
        return _event("error", error=error(503, message)["error"])


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, kind)
