"""The adapter interface: a pure translation between our types and one vendor's JSON.

An adapter does no I/O. `_http.send` posts what `build_request` returns and hands the decoded
reply to `parse_response` (or the error body to `parse_error`), so timeouts, status handling and
Retry-After live in one place for every provider. A streamed reply is framed as `stream_format`
says and read by the adapter's `stream_parser` (see `streaming.py`).
`probe_requests` and `listed` are the same kind of translation for `health`: which GET shows
that a model is served.
"""

from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeGuard

from ..errors import ProviderError
from ..types import (
    ContentBlock,
    Conversation,
    LlmResponse,
    Message,
    OutputFormat,
    ToolCall,
    ToolDefinition,
)

if TYPE_CHECKING:
    from .streaming import StreamParser

DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # far above any real answer, far below harm
# How a streamed reply is framed: server-sent events, JSON lines (Ollama), AWS event stream.
StreamFormat = Literal["sse", "ndjson", "eventstream"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Time limits for one request, in seconds. For a stream, `first_byte` is the time to the
    first content event (keep-alives do not count) and `idle` the longest gap between events."""

    total: float
    connect: float
    first_byte: float
    idle: float | None = None


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Everything one request needs besides the conversation."""

    model: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    max_tokens: int | None = None
    temperature: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # decoded body; larger fails over
    stream_usage: bool = True  # OpenAI: ask for usage in a stream (some compatibles refuse it)
    # Vendor headers a gateway's client sent (anthropic-version...): sent over the adapter's
    # own, under the configured `headers`; not secrets, so never registered as such.
    passed_headers: Mapping[str, str] = field(default_factory=dict)
    # The shape the answer must have (the conversation's `output`): each adapter asks for it
    # in its vendor's own way and hands the document back as the answer's text.
    output: OutputFormat | None = None
    api_version: str | None = None  # Azure: the `api-version` of a deployment's URL
    region: str | None = None  # Bedrock: the AWS region signed for


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A POST to send: URL, headers and JSON body."""

    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """A GET that tells whether a model is served: its own page, or a listing to search."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    listing: bool = False  # True: a 2xx body lists models; `Adapter.listed` finds ours in it


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it; nested tables merge instead of being replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def with_stream(body: dict[str, Any], stream: bool, *, say_no: bool = False) -> dict[str, Any]:
    """`body` asking for a streamed reply or not, whatever `extra` put there: the reply is read
    as what was asked for. `say_no` sends `"stream": false` (for APIs that stream by default)."""
    body.pop("stream", None)
    if stream or say_no:
        body["stream"] = stream
    return body


def is_object(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """True for a JSON object. Decoded JSON's objects are dicts, told apart without the cost
    of the Mapping ABC's check (it runs several times for every event of a stream)."""
    return isinstance(value, dict) or (value is not None and isinstance(value, Mapping))


def obj(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one (lenient parsing of vendor replies)."""
    return value if is_object(value) else {}


MAX_COUNT = 2**63 - 1  # the largest integer SQLite stores; anything above is not a real count


def count(value: Any) -> int | None:
    """A token count: a non-negative integer SQLite can store, else None."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT
    return value if ok else None


def names_in(data: Any, list_key: str, *fields: str) -> set[str]:
    """The names a model listing gives (`fields` of each item of `data[list_key]`)."""
    items = obj(data).get(list_key)
    if not isinstance(items, list):
        raise ProviderError("invalid_response", f"the model listing has no '{list_key}' array")
    return {v for item in items for f in fields if isinstance(v := obj(item).get(f), str)}


def joined_system(conversation: Conversation) -> str | None:
    """Every system message, joined with a blank line, for APIs with one system slot."""
    texts = [m.text for m in conversation.messages if m.role == "system"]
    return "\n\n".join(texts) if texts else None


def function_tools(tools: Iterable[ToolDefinition]) -> list[dict[str, Any]]:
    """Tools in the `{"type": "function", "function": {...}}` form (OpenAI, Ollama)."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            },
        }
        for t in tools
    ]


def arguments_object(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as a JSON object, for APIs that take an object rather than a string.

    Arguments that are not a JSON object (a model can emit broken JSON) are kept, not
    dropped, under the key `arguments`.
    """
    value = call.parsed_arguments()
    if isinstance(value, dict):
        return value
    return {} if value in ("", None) else {"arguments": call.arguments}


def tool_name(conversation: Conversation, msg: Message) -> str | None:
    """The function a tool result answers: its own `name`, else the call it answers."""
    return msg.name or conversation.tool_name_for(msg.tool_call_id)


_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")


def safe_tool_id(call_id: str | None) -> str:
    """A call id in the `[a-zA-Z0-9_-]` alphabet Anthropic and Bedrock accept; a call and its
    result map the same way. Some OpenAI-compatible servers mint ids such as
    `functions.get_weather:0`."""
    return _UNSAFE_ID.sub("_", call_id or "")


def new_call_id() -> str:
    """A unique id for a tool call the vendor sent without one."""
    return f"call_{uuid.uuid4().hex[:24]}"


def merge_turns(turns: Iterable[tuple[str, list[Any]]]) -> list[tuple[str, list[Any]]]:
    """Consecutive turns of one role joined into one, so roles strictly alternate.

    Tool results then share one turn, which Anthropic and Gemini require.
    """
    merged: list[tuple[str, list[Any]]] = []
    for role, parts in turns:
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(parts)
        else:
            merged.append((role, list(parts)))
    return merged


def json_or_text(text: str) -> Any:
    """`text` decoded if it is JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# The code every vendor's "the prompt is too long for this model" error is given, so one rule
# matches them all (OpenAI sends it; the others say it only in words).
CONTEXT_CODE = "context_length_exceeded"
_CONTEXT_WORDS = re.compile(
    r"prompt is too long|maximum context length|context length|context window"
    r"|input token count .* exceeds|exceeds the maximum number of tokens",
    re.IGNORECASE,
)


def context_code(message: str | None, code: str | None) -> str | None:
    """`code`, or CONTEXT_CODE when the message says the prompt is over the context window."""
    if code != CONTEXT_CODE and message and _CONTEXT_WORDS.search(message):
        return CONTEXT_CODE
    return code


def document_text(value: Any) -> str:
    """A JSON value as the text of an answer: compact, keys in the model's order."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_summary(data: Any) -> tuple[str | None, str | None]:
    """(message, code) from the common error shapes, or (None, None).

    Covers `{"error": {"message", "type"|"code"|"status", "details"}}` (OpenAI, Anthropic,
    Gemini and most compatibles) and `{"error": "text"}` (Ollama).
    """
    if not isinstance(data, Mapping):
        return None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None
    if not isinstance(err, Mapping):
        return None, None
    details = err.get("details")
    candidates = [details.get("error_code")] if isinstance(details, Mapping) else []
    candidates += [err.get("code"), err.get("type"), err.get("status")]
    code = next((c for c in candidates if isinstance(c, str) and c), None)
    message = err.get("message")
    if not isinstance(message, str):
        return None, code
    return (f"{code}: {message}" if code and code not in message else message), code


class Adapter(ABC):
    """One wire protocol. Subclasses implement the two pure conversions, and streaming."""

    type_name: ClassVar[str]
    stream_format: ClassVar[StreamFormat] = "sse"

    @abstractmethod
    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        """The POST for this conversation; with `stream`, asking for a streamed reply."""

    @abstractmethod
    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        """Turn a decoded 2xx body into a response; raise ProviderError if it holds no answer."""

    def parse_error(self, data: Any) -> tuple[str | None, str | None]:
        """(short message, vendor code) from a decoded error body."""
        message, code = error_summary(data)
        return message, context_code(message, code)

    def error_details(self, data: Any, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(short message, vendor code) of an error reply: its decoded body (None if it is no
        JSON) and its headers, for APIs that name the error in a header (Bedrock)."""
        return self.parse_error(data) if data is not None else (None, None)

    def retry_after(self, data: Any) -> float | None:
        """Seconds to wait named in an error body (for APIs that say it there, not in a header)."""
        return None

    def rate_limit_wait(self, headers: Mapping[str, str]) -> float | None:
        """Seconds to wait named in a vendor's own rate-limit header, when no Retry-After came."""
        return None

    def sign(
        self, url: str, headers: Mapping[str, str], body: bytes, options: CallOptions, now: float
    ) -> dict[str, str]:
        """Headers that authenticate this very request, for APIs that sign the URL, headers and
        body (SigV4) rather than take a key; `now` is the wall clock. Most need none."""
        return {}

    def reject_error_body(self, data: Any) -> None:
        """Raise if a 2xx body is an error object (gateways and error events send these)."""
        if not is_object(data) or not (data.get("error") or data.get("type") == "error"):
            return
        message, code = self.parse_error(data)
        if message or code:
            raise ProviderError(
                "invalid_response",
                f"error in a 2xx response: {message or code}",
                code=code,
            )

    # --- health probes: a cheap request that says whether the entry could answer ----------

    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        """What `health` asks, in order: the next one only if the previous answered 404 (a
        compatible server without the model's own page may still list it). Empty (the
        default) when the vendor has no cheap page the key can read: `health` then asks for
        one token, as `--deep` does."""
        return ()

    def listed(self, data: Any, options: CallOptions) -> bool:
        """Whether a decoded listing names `options.model`; raise if it is no listing."""
        raise NotImplementedError(f"{self.type_name} has no model listing")

    # --- small helpers ------------------------------------------------------------------

    @staticmethod
    def empty(reason: str) -> ProviderError:
        """A 2xx with nothing usable in it: a failure that fails over."""
        return ProviderError("empty_response", f"empty response: {reason}")

    @staticmethod
    def malformed(reason: str) -> ProviderError:
        return ProviderError("invalid_response", reason)

    @staticmethod
    def answer(
        blocks: Iterable[ContentBlock],
        model: str,
        usage: tuple[int | None, int | None],
        stop_reason: str | None,
        nothing: str,
    ) -> LlmResponse:
        """A reply as an LlmResponse; one with neither text nor tool calls is `empty`, with
        `nothing` saying what the vendor's stop field said ("no text or tool calls (...)")."""
        response = LlmResponse(tuple(blocks), model, usage[0], usage[1], stop_reason)
        if not response.has_content():
            raise Adapter.empty(nothing)
        return response

    # --- streaming ---------------------------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        """A parser for one streamed reply, framed as `stream_format` says."""
        raise NotImplementedError(f"{self.type_name} replies cannot be streamed")

    def error_event(self, data: Any, status: int) -> ProviderError:
        """An error event inside a 2xx stream that says which HTTP status it stands for, made
        the error a reply with that status would be, so the same rules decide."""
        message, code = self.parse_error(data)
        return ProviderError(
            "http",
            message or code or "error event in the stream",
            status=status,
            code=code,
            retry_after_s=self.retry_after(data),
        )
