"""Anthropic Messages API (`POST /v1/messages`): tool round trips, max_tokens, stop reasons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..types import (
    ContentBlock,
    Conversation,
    ImagePart,
    LlmResponse,
    Message,
    OutputFormat,
    TextBlock,
    ToolCall,
    compact_json,
)
from .answer_tool import DESCRIPTION, AnswerStream, answer_schema, document
from .base import (
    Adapter,
    CallOptions,
    ProbeRequest,
    WireRequest,
    arguments_object,
    count,
    deep_merge,
    joined_system,
    merge_turns,
    names_in,
    obj,
    safe_tool_id,
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

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # the original's fixed value, now only the default
# The HTTP status each documented error type is sent with, for the same error inside a stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
UNKNOWN_ERROR_STATUS = 500  # a type not documented yet: the server failed mid-answer


def _image(image: ImagePart) -> dict[str, Any]:
    source: dict[str, Any] = (
        {"type": "url", "url": image.url}
        if image.url is not None
        else {"type": "base64", "media_type": image.media_type, "data": image.data}
    )
    return {"type": "image", "source": source}


def _blocks(msg: Message) -> tuple[str, list[dict[str, Any]]]:
    """One message as (role, content blocks); a tool result is a user turn."""
    if msg.role == "tool":
        block = {
            "type": "tool_result",
            "tool_use_id": safe_tool_id(msg.tool_call_id),
            "content": msg.text,
        }
        return "user", [block]
    # The API rejects empty text blocks, so a turn that only calls tools carries none.
    blocks: list[dict[str, Any]] = [
        _image(p) if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
        for p in msg.parts
        if isinstance(p, ImagePart) or p.text
    ]
    blocks += [
        {"type": "tool_use", "id": safe_tool_id(c.id), "name": c.name, "input": arguments_object(c)}
        for c in msg.tool_calls
    ]
    return msg.role, blocks


def _content(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A lone text block as a plain string (the shape most requests use), else the blocks."""
    if not blocks:
        return ""
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return str(blocks[0]["text"])
    return blocks


def messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The `messages` array: system turns removed, consecutive turns of one role merged.

    Merging puts every tool result answering one assistant turn into the single user turn the
    API requires (tool results first, then any text that followed them).
    """
    turns = merge_turns(_blocks(m) for m in conversation.messages if m.role != "system")
    return [{"role": role, "content": _content(blocks)} for role, blocks in turns]


def _tools(conversation: Conversation) -> list[dict[str, Any]]:
    out = []
    for t in conversation.tools or ():
        tool: dict[str, Any] = {"name": t.name, "input_schema": {"type": "object", **t.parameters}}
        if t.description:
            tool["description"] = t.description
        out.append(tool)
    return out


def answer_tool(output: OutputFormat) -> dict[str, Any]:
    """The tool whose input is the answer (JSON mode by tool use, as Anthropic's tool-use guide
    describes it)."""
    schema, _ = answer_schema(output)
    return {"name": output.name, "description": DESCRIPTION, "input_schema": schema}


def _parse_block(raw: Any) -> ContentBlock | None:
    block = obj(raw)
    if block.get("type") == "text":
        text = block.get("text")
        return TextBlock(text) if isinstance(text, str) and text else None
    if block.get("type") == "tool_use":
        args = block.get("input")
        return ToolCall(
            str(block.get("id") or ""), str(block.get("name") or ""), compact_json(args or {})
        )
    return None  # thinking, redacted_thinking, server tool blocks: not mapped


def _answer_blocks(content: list[Any], output: OutputFormat) -> list[ContentBlock]:
    """The answer tool's input as the answer's only text, or nothing if it was not called."""
    for block in map(obj, content):
        if block.get("type") == "tool_use" and block.get("name") == output.name:
            return [TextBlock(document(block.get("input"), output))]
    return []


def _usage(usage: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens of a `usage` object (a reply's, or a stream's cumulative one)."""
    return _input_tokens(usage), count(usage.get("output_tokens"))


def _check_stop(stop_reason: str | None) -> None:
    if stop_reason == "refusal":  # like a Gemini safety block: let another entry answer
        raise Adapter.empty("the model refused (stop_reason: refusal)")


def _input_tokens(usage: Mapping[str, Any]) -> int | None:
    """All input the request consumed: uncached plus cache writes and reads."""
    base = count(usage.get("input_tokens"))
    if base is None:
        return None
    cached = (
        count(usage.get(k)) or 0 for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return count(base + sum(cached))


def _headers(options: CallOptions) -> dict[str, str]:
    headers = {"anthropic-version": API_VERSION}
    if options.api_key:
        headers["x-api-key"] = options.api_key
    return headers


class AnthropicAdapter(Adapter):
    """The Messages API."""

    type_name = "anthropic"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body: dict[str, Any] = {
            "model": options.model,
            "max_tokens": options.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages(conversation),
        }
        system = joined_system(conversation)
        if system is not None:
            body["system"] = system
        if conversation.tools:
            body["tools"] = _tools(conversation)
        if options.output is not None:  # the answer is the input of a tool it must call
            body["tools"] = [*body.get("tools", ()), answer_tool(options.output)]
            body["tool_choice"] = {"type": "tool", "name": options.output.name}
        if options.temperature is not None:
            body["temperature"] = options.temperature
        body = with_stream(deep_merge(body, options.extra), stream)
        return WireRequest(f"{options.base_url}/v1/messages", body, _headers(options))

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        self.reject_error_body(data)  # an error event inside a 200
        content = data.get("content")
        if not isinstance(content, list):
            raise self.malformed("response has no content array")
        blocks = [b for b in map(_parse_block, content) if b is not None]
        if options.output is not None:  # the answer tool's input is the answer
            blocks = _answer_blocks(content, options.output) or blocks
        stop = data.get("stop_reason")
        stop_reason = stop if isinstance(stop, str) else None
        _check_stop(stop_reason)
        return self.answer(
            blocks,
            str(data.get("model") or options.model),
            _usage(obj(data.get("usage"))),
            stop_reason,
            f"no text or tool calls (stop_reason: {stop_reason})",
        )

    # --- health probes ---------------------------------------------------------------------

    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        """`GET /v1/models/{id}` (it resolves aliases), else the listing of compatibles."""
        own = f"{options.base_url}/v1/models/{quote(options.model, safe='')}"
        listing = f"{options.base_url}/v1/models?limit=1000"
        return ProbeRequest(own, _headers(options)), ProbeRequest(listing, _headers(options), True)

    def listed(self, data: Any, options: CallOptions) -> bool:
        return options.model in names_in(data, "data", "id")

    # --- streaming (SSE) ---------------------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return AnthropicStreamParser(self, options.output)


class AnthropicStreamParser(StreamParser):
    """`message_start`, content blocks (`content_block_start`/`_delta`/`_stop`), `message_delta`,
    `message_stop`; `ping` and event types added later are ignored.

    Only text and `tool_use` blocks are read (thinking, signatures, citations and server tools
    are not mapped, as in a whole reply). An `error` event stands for the HTTP status its type
    is documented with (`overloaded_error` is 529), so the same rules decide as for a reply.
    With an output format, the answer tool's input streams as the answer's text (gathered
    until its block ends when the document is wrapped, so the text is the document alone).
    """

    def __init__(self, adapter: Adapter, output: OutputFormat | None = None) -> None:
        super().__init__()
        self._adapter = adapter
        self._tool_blocks: set[int] = set()  # indexes of the tool_use blocks: their JSON is read
        self._answer = AnswerStream(output)

    def feed(self, event: StreamEvent) -> list[Delta]:
        data = event_json(event)
        if not isinstance(data, Mapping):
            raise self._adapter.malformed("stream event is not a JSON object")
        kind = data.get("type", event.name)  # the data names its type; a proxy may drop `event:`
        if kind == "error":
            error_type = str(obj(data.get("error")).get("type"))
            raise self._adapter.error_event(
                data, ERROR_STATUS.get(error_type, UNKNOWN_ERROR_STATUS)
            )
        if kind == "message_start":
            message = obj(data.get("message"))
            return [
                *self.model_delta(message.get("model")),
                UsageDelta(*_usage(obj(message.get("usage")))),
            ]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "content_block_stop":
            return self._answer.stop(data.get("index"))
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return [EndOfStream()]
        return []  # ping, content_block_stop, and types this code does not know yet

    def _block_start(self, data: Mapping[str, Any]) -> list[Delta]:
        index, block = data.get("index"), obj(data.get("content_block"))
        if not isinstance(index, int):
            return []
        if block.get("type") == "text":
            text = block.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if block.get("type") != "tool_use":
            return []
        if self._answer.starts(index, block.get("name")):
            return []  # its input is the answer: read as text, below
        self._tool_blocks.add(index)
        start = block.get("input")  # `{}`: the input follows as input_json_delta pieces
        start = start if isinstance(start, Mapping) else None
        call_id, name = block.get("id"), block.get("name")
        return [
            ToolCallDelta(
                index,
                call_id if isinstance(call_id, str) else None,
                name if isinstance(name, str) else None,
                compact_json(start) if start else "",
            )
        ]

    def _block_delta(self, data: Mapping[str, Any]) -> list[Delta]:
        index, delta = data.get("index"), obj(data.get("delta"))
        if not isinstance(index, int):
            return []
        if delta.get("type") == "text_delta":
            text = delta.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if delta.get("type") == "input_json_delta" and self._answer.owns(index):
            return self._answer.piece(delta.get("partial_json"))
        if delta.get("type") == "input_json_delta" and index in self._tool_blocks:
            piece = delta.get("partial_json")
            return [ToolCallDelta(index, arguments=piece)] if isinstance(piece, str) else []
        return []  # thinking_delta, signature_delta, citations_delta, server tools' input

    def _message_delta(self, data: Mapping[str, Any]) -> list[Delta]:
        stop = obj(data.get("delta")).get("stop_reason")
        deltas: list[Delta] = []
        if isinstance(stop, str):
            _check_stop(stop)
            deltas.append(StopDelta(stop))
        usage = data.get("usage")  # cumulative; input counts too when the API sends them
        if isinstance(usage, Mapping):
            deltas.append(UsageDelta(*_usage(usage)))
        return deltas


ADAPTER = AnthropicAdapter()
