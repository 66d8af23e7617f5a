"""OpenAI Chat Completions at the gateway's edge: a request in, our answer or stream out.

`parse_request` turns a `/v1/chat/completions` body into a `GatewayRequest` (or a 400 naming
the field), `completion` renders a `CascadeResult`, `ChunkStream` turns the engine's stream
events into `chat.completion.chunk` SSE events ending with `[DONE]`. Pure: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ..events import Done, EntryStarted, StreamEvent, Text, ToolCallDelta
from ..results import CascadeResult
from ..structured import output_format
from ..types import (
    ContentPart,
    Conversation,
    LlmResponse,
    Message,
    OutputFormat,
    Role,
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
    {"model", "messages", "stream", "stream_options", "tools", "tool_choice", "max_tokens"}
    | {"max_completion_tokens", "temperature", "response_format"}
)
# Fields accepted when they hold the value that changes nothing (or any value, for labels).
NEUTRAL: dict[str, Any] = {
    "n": 1,
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "parallel_tool_calls": True,
    "store": False,
    "user": ANY,
    "metadata": ANY,
    "safety_identifier": ANY,
    "prompt_cache_key": ANY,
    "service_tier": "auto",
}
FINISH: dict[Stop, str] = {
    "end": "stop",
    "length": "length",
    "tool": "tool_calls",
    "filter": "content_filter",
}
ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def parse_request(
    body: Mapping[str, Any], cascades: Mapping[str, object], headers: Mapping[str, str]
) -> GatewayRequest:
    """A Chat Completions body as a cascade run; BadRequest for anything we cannot honour."""
    refuse_unknown(body, MAPPED, NEUTRAL)
    name = cascade_name(body.get("model"), cascades)
    stream = expect(body.get("stream", False) or False, bool, "stream", "true or false")
    options = body.get("stream_options") or {}
    expect(options, dict, "stream_options", "an object")
    usage = expect(
        options.get("include_usage", False) or False,
        bool,
        "stream_options.include_usage",
        "true or false",
    )
    output = _output(body.get("response_format"))
    tools = _tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"))
    max_tokens = optional_int(body, "max_completion_tokens") or optional_int(body, "max_tokens")
    return GatewayRequest(
        cascade=name,
        conversation=Conversation(_messages(body.get("messages")), tools, output),
        stream=stream,
        include_usage=usage,
        max_tokens=max_tokens,
        temperature=optional_number(body, "temperature", 0, 2),
        vendor_headers=passed_headers(headers),
    )


def _output(value: Any) -> OutputFormat | None:
    """`response_format`: `text` (free text), `json_object` (JSON mode) or `json_schema` (a
    named schema): the answer is checked as `run --schema` checks it, whatever the entry."""
    if value is None:
        return None
    expect(value, dict, "response_format", "an object")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat()
    if kind != "json_schema":
        raise BadRequest(
            f"response_format.type: must be text, json_object or json_schema, got"
            f" {compact_json(kind)}",
            param="response_format.type",
        )
    spec = expect(value.get("json_schema"), dict, "response_format.json_schema", "an object")
    name = expect(spec.get("name"), str, "response_format.json_schema.name", "a string")
    where = "response_format.json_schema.schema"
    try:
        return output_format(spec.get("schema", {"type": "object"}), name, where=where)
    except UsageError as exc:
        raise BadRequest(str(exc), param=where) from None


def _check_tool_choice(value: Any) -> None:
    if value is None or value == "auto":
        return
    raise BadRequest(
        'tool_choice: only "auto" is supported (the model decides)',
        param="tool_choice",
        code="unsupported_parameter",
    )


def _parts(content: Any, where: str, images: bool) -> list[ContentPart]:
    """A message's content as parts: a string, or an array of text (and, when `images`,
    `image_url`) parts."""
    if isinstance(content, str):
        return [TextPart(content)]
    expect(content, list, where, "a string or an array of content parts")
    parts: list[ContentPart] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        expect(part, dict, at, "a content part object")
        kind = part.get("type")
        if kind == "text":
            parts.append(TextPart(expect(part.get("text"), str, f"{at}.text", "a string")))
        elif kind == "image_url" and images:
            image = expect(part.get("image_url"), dict, f"{at}.image_url", "an object")
            parts.append(image_part(image.get("url"), f"{at}.image_url.url"))
        else:
            allowed = "text and image_url" if images else "text"
            raise BadRequest(
                f"{at}.type: {compact_json(kind)} parts are not supported ({allowed} only)",
                param=f"{at}.type",
                code="unsupported_parameter",
            )
    return parts


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or an array of text parts."""
    return "".join(p.text for p in _parts(content, where, images=False) if isinstance(p, TextPart))


def _tool_call(raw: Any, where: str) -> ToolCall:
    expect(raw, dict, where, "a tool call object")
    fn = expect(raw.get("function"), dict, f"{where}.function", "an object")
    arguments = fn.get("arguments", "{}")
    if not isinstance(arguments, str):
        expect(arguments, dict, f"{where}.function.arguments", "a JSON string")
        arguments = compact_json(arguments)
    return ToolCall(
        expect(raw.get("id"), str, f"{where}.id", "a string"),
        expect(fn.get("name"), str, f"{where}.function.name", "a string"),
        arguments,
    )


def _message(raw: Any, where: str) -> Message:
    expect(raw, dict, where, "a message object")
    role = raw.get("role")
    if role == "tool":
        call_id = expect(raw.get("tool_call_id"), str, f"{where}.tool_call_id", "a string")
        return Message.tool(_text(raw.get("content"), f"{where}.content"), call_id)
    if role not in ROLES:
        raise BadRequest(
            f"{where}.role: must be one of system, developer, user, assistant, tool",
            param=f"{where}.role",
        )
    calls_raw = raw.get("tool_calls") if role == "assistant" else None
    calls = [
        _tool_call(c, f"{where}.tool_calls[{i}]")
        for i, c in enumerate(expect(calls_raw or [], list, f"{where}.tool_calls", "an array"))
    ]
    content = raw.get("content")
    if content is None and (calls or role == "assistant"):
        content = ""  # an assistant turn that only calls tools has null content
    elif content is None:
        raise BadRequest(f"{where}.content: is missing", param=f"{where}.content")
    if role == "user":
        return user_message(_parts(content, f"{where}.content", images=True))
    return Message(ROLES[role], _text(content, f"{where}.content"), tool_calls=tuple(calls))


def _messages(raw: Any) -> list[Message]:
    if raw is None:
        raise BadRequest("messages: is missing", param="messages")
    expect(raw, list, "messages", "an array of messages")
    if not raw:
        raise BadRequest("messages: must hold at least one message", param="messages")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(raw)]


def _tools(raw: Any) -> list[ToolDefinition] | None:
    if raw is None:
        return None
    expect(raw, list, "tools", "an array")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        expect(tool, dict, where, "a tool object")
        if tool.get("type") != "function":
            raise BadRequest(
                f"{where}.type: only function tools are supported",
                param=f"{where}.type",
                code="unsupported_parameter",
            )
        fn = expect(tool.get("function"), dict, f"{where}.function", "an object")
        params = fn.get("parameters") or {"type": "object"}
        tools.append(
            ToolDefinition(
                expect(fn.get("name"), str, f"{where}.function.name", "a string"),
                expect(fn.get("description") or "", str, f"{where}.function.description", "text"),
                expect(params, dict, f"{where}.function.parameters", "a JSON Schema object"),
            )
        )
    return tools


# --- out ------------------------------------------------------------------------------------


def _usage(response: LlmResponse) -> dict[str, int]:
    prompt, completion = response.input_tokens or 0, response.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id or new_id("call_"),
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for c in calls
    ]


def completion(result: CascadeResult, *, now: float | None = None) -> dict[str, Any]:
    """The `chat.completion` object for a whole answer."""
    response = result.response
    message: dict[str, Any] = {"role": "assistant", "content": response.text or None}
    if response.tool_calls:
        message["tool_calls"] = _calls(response.tool_calls)
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time() if now is None else now),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH[stop_kind(response)],
                "logprobs": None,
            }
        ],
        "usage": _usage(response),
    }


ERROR_TYPES = {401: "authentication_error", 404: "invalid_request_error", 503: "server_error"}


def error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def models(names: list[str], created: int) -> dict[str, Any]:
    """`GET /v1/models`: one model per cascade."""
    data = [
        {"id": n, "object": "model", "created": created, "owned_by": "llm-cascade"} for n in names
    ]
    return {"object": "list", "data": data}


class ChunkStream:
    """The engine's events as `chat.completion.chunk` SSE events, then `data: [DONE]`.

    Nothing is produced before the first piece of content, so a cascade that fails before
    it can still be answered with a plain 503; `model` is the entry's model once one answers.
    """

    def __init__(self, model: str, *, include_usage: bool, now: float | None = None) -> None:
        self.id = new_id("chatcmpl-")
        self.created = int(time.time() if now is None else now)
        self.model = model
        self.include_usage = include_usage
        self.started = False
        self._calls: dict[int, int] = {}  # the engine's call index -> ours, in arrival order

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [choice] if delta or finish else [],
                **extra,
            }
        )

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def feed(self, event: StreamEvent) -> list[bytes]:
        """The SSE bytes for one engine event (none for the engine's own bookkeeping)."""
        if isinstance(event, Text):
            return [*self._start(), self._chunk({"content": event.text})]
        if isinstance(event, ToolCallDelta):
            return [*self._start(), self._chunk({"tool_calls": [self._call_piece(event)]})]
        if isinstance(event, Done):
            return self._done(event.result.response)
        if isinstance(event, EntryStarted) and not self.started:
            self.model = entry_model(event.entry)
        return []  # Switched (the text goes on), Reset (never: can_restart is off)

    def _call_piece(self, event: ToolCallDelta) -> dict[str, Any]:
        first = event.index not in self._calls
        index = self._calls.setdefault(event.index, len(self._calls))
        piece: dict[str, Any] = {"index": index, "function": {"arguments": event.arguments}}
        if first:
            piece.update(id=event.id or new_id("call_"), type="function")
            piece["function"]["name"] = event.name or ""
        return piece

    def _done(self, response: LlmResponse) -> list[bytes]:
        self.model = response.model
        out = self._start()
        out.append(self._chunk({}, FINISH[stop_kind(response)]))
        if self.include_usage:
            out.append(self._chunk({}, usage=_usage(response)))
        out.append(sse("[DONE]"))
        return out

    @staticmethod
    def error(message: str, *, code: str = "cascade_failed") -> bytes:
        """The error event that ends a stream no entry could finish (no `[DONE]` follows)."""
        return sse(error(503, message, code=code))
