"""What both vendor formats share at the gateway's edge: the parsed request, the 4xx that bad
input gets, strict field readers with messages that name the field, stop reasons and SSE.

Pure functions and values, no I/O.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConversationError
from ..types import (
    ContentPart,
    Conversation,
    ImagePart,
    LlmResponse,
    Message,
    TextPart,
    image_from_url,
    inline_image,
    shown,
    too_deep,
)
from ..untrusted import MAX_NESTING

# The caller's vendor headers passed to entries of that vendor (all other headers stay here).
PASSED_HEADERS = {"anthropic": ("anthropic-version", "anthropic-beta")}
MAX_HEADER_CHARS = 512


class BadRequest(Exception):
    """A request the gateway refuses before anything is sent upstream: a 4xx in the client's
    vendor shape. `param` names the offending field (OpenAI's `param`)."""

    def __init__(
        self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None
    ) -> None:
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """A vendor request, translated: which cascade answers what, and how."""

    cascade: str
    conversation: Conversation
    stream: bool = False
    include_usage: bool = False  # OpenAI's stream_options.include_usage
    max_tokens: int | None = None
    temperature: float | None = None
    vendor_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def cascade_name(model: Any, cascades: Mapping[str, object]) -> str:
    """The cascade a request's `model` names: `NAME` or `cascade/NAME`; 404 if there is none."""
    if not isinstance(model, str) or not model:
        raise BadRequest("model: is missing or not a string (a cascade name)", param="model")
    name = model.removeprefix("cascade/")
    if name not in cascades:
        defined = ", ".join(sorted(cascades)) or "none"
        raise BadRequest(
            f"model {shown(model)} is not a cascade of this gateway (defined: {defined})",
            status=404,
            param="model",
            code="model_not_found",
        )
    return name


def decode_body(raw: bytes) -> dict[str, Any]:
    """The JSON object a POST carries, or a 400 that says what is wrong with it."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise BadRequest("the body is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, got {json_type(data)}")
    if too_deep(data) is not None:
        raise BadRequest(f"the body is nested more than {MAX_NESTING} levels deep")
    return data


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((dict, "object"), (list, "array"), (str, "string")):
        if isinstance(value, kind):
            return name
    return "number"


def expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """`value` if it is of `kind` (a bool is never a number), else a 400 naming `where`."""
    is_bool = isinstance(value, bool)
    wants_bool = kind is bool or (isinstance(kind, tuple) and bool in kind)
    if not isinstance(value, kind) or (is_bool and not wants_bool):
        raise BadRequest(f"{where}: must be {what}, got {json_type(value)}", param=where)
    return value


def optional_int(body: Mapping[str, Any], key: str, *, low: int = 1) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    expect(value, int, key, "an integer")
    if value < low:
        raise BadRequest(f"{key}: must be at least {low}, got {value}", param=key)
    return int(value)


def optional_number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    expect(value, (int, float), key, "a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise BadRequest(f"{key}: must be between {low:g} and {high:g}, got {value}", param=key)
    return float(value)


def refuse_unknown(
    body: Mapping[str, Any], mapped: frozenset[str], neutral: Mapping[str, Any]
) -> None:
    """A 400 for a field this gateway does not map. Fields in `neutral` pass when they hold
    the value that changes nothing (`n: 1`, `top_p: 1`...) or null; a field with a meaning we
    would silently drop is refused instead."""
    for key, value in body.items():
        if key in mapped or value is None:
            continue
        if key in neutral and neutral[key] in (value, ANY):
            continue
        raise BadRequest(
            f"{key}: this parameter is not supported by llm-cascade serve"
            + (f" (only {json.dumps(neutral[key])} is accepted)" if key in neutral else ""),
            param=key,
            code="unsupported_parameter",
        )


ANY = object()  # in `neutral`: any value is accepted and ignored (labels such as `user`)


def passed_headers(headers: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The caller's vendor headers that go on to entries of that vendor, checked."""
    out: dict[str, dict[str, str]] = {}
    for vendor, names in PASSED_HEADERS.items():
        for name in names:
            value = headers.get(name)
            if value is None:
                continue
            if len(value) > MAX_HEADER_CHARS or not value.isascii() or not value.isprintable():
                raise BadRequest(f"header {name}: must be one line of printable ASCII")
            out.setdefault(vendor, {})[name] = value
    return out


# --- answers ----------------------------------------------------------------------------------

Stop = Literal["end", "length", "tool", "filter"]
_STOPS: dict[str, Stop] = {
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool",
    "function_call": "tool",
    "tool_use": "tool",
    "content_filter": "filter",
    "refusal": "filter",
    "safety": "filter",
    "recitation": "filter",
    "blocklist": "filter",
    "prohibited_content": "filter",
    "spii": "filter",
}


def stop_kind(response: LlmResponse) -> Stop:
    """Why the answer ended, whatever vendor answered: every vendor names it its own way."""
    if response.tool_calls:
        return "tool"
    return _STOPS.get((response.stop_reason or "").lower(), "end")


def entry_model(entry: str) -> str:
    """The model of an entry key `provider/model`."""
    return entry.partition("/")[2]


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def sse(data: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event: `event:` (when named) and one `data:` line of compact JSON."""
    line = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {line}\n\n".encode()


def image_part(url: Any, where: str) -> ImagePart:
    """An image given by an http(s) URL or a base64 `data:` URL, as a conversation file takes it."""
    expect(url, str, where, "an http(s) or data: URL")
    try:
        return image_from_url(url, where)
    except ConversationError as exc:
        raise BadRequest(str(exc), param=where) from None


def inline_image_part(media_type: Any, data: Any, where: str) -> ImagePart:
    """An image given as base64 `data` with its `media_type`."""
    expect(media_type, str, f"{where}.media_type", "an image media type")
    expect(data, str, f"{where}.data", "base64 text")
    try:
        return inline_image(media_type, data, where)
    except ConversationError as exc:
        raise BadRequest(str(exc), param=where) from None


def user_message(parts: list[ContentPart]) -> Message:
    """A user turn of text and image parts in the order given; text alone is one string."""
    if not any(isinstance(p, ImagePart) for p in parts):
        return Message.user("".join(p.text for p in parts if isinstance(p, TextPart)))
    return Message.user(parts)
