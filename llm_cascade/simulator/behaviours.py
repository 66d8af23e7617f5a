"""What the simulator does with one request: answer, fail, hang, or break the connection.

Each behaviour is a small value with a JSON form, so another process (the demo, a shell
script) can script a running simulator over its control endpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SimToolCall:
    """A tool call the simulated model makes; `arguments` is a JSON object."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer in the vendor's format. `text=None` echoes the last user message."""

    text: str | None = None
    tool_calls: tuple[SimToolCall, ...] = ()
    input_tokens: int = 11
    output_tokens: int = 7
    stop_reason: str | None = None  # None: the vendor's normal "finished" value
    delay: float = 0.0  # seconds before the reply is sent
    hold: bool = False  # wait for `Simulator.release()` before replying


@dataclass(frozen=True, slots=True)
class Fail:
    """An error status with the vendor's error body and, optionally, Retry-After."""

    status: int
    message: str | None = None
    retry_after: str | None = None  # sent verbatim: "30" or an HTTP-date
    code: str | None = None  # the vendor error code/type, e.g. "insufficient_quota"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hang:
    """Accept the request and send nothing (until `seconds` pass or the server stops)."""

    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Close:
    """Read the request, then drop the connection without a response."""


@dataclass(frozen=True, slots=True)
class InvalidJson:
    """A 2xx whose body is not JSON."""

    status: int = 200


@dataclass(frozen=True, slots=True)
class HtmlError:
    """An HTML error page, as a load balancer in front of the API would send."""

    status: int = 502


@dataclass(frozen=True, slots=True)
class Empty:
    """A 2xx with no answer in it (no choices, no candidates, a safety block)."""

    reason: str = "empty"  # gemini: "SAFETY" gives a blocked finish


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A 200 whose body is the error a `status` would carry, as gateways and streams send."""

    status: int = 529
    message: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """A 307 to another URL (clients must not follow it with credentials)."""

    location: str = "http://127.0.0.1:9/elsewhere"


Behaviour = Reply | Fail | Hang | Close | InvalidJson | HtmlError | Empty | ErrorEvent | Redirect

_TYPES: dict[str, type[Any]] = {
    "reply": Reply,
    "fail": Fail,
    "hang": Hang,
    "close": Close,
    "invalid_json": InvalidJson,
    "html_error": HtmlError,
    "empty": Empty,
    "error_event": ErrorEvent,
    "redirect": Redirect,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


def to_json(behaviour: Behaviour) -> dict[str, Any]:
    """`{"type": "fail", "status": 429, ...}`."""
    return {"type": _NAMES[type(behaviour)], **asdict(behaviour)}


def from_json(data: dict[str, Any]) -> Behaviour:
    """The inverse of `to_json`; raises ValueError on an unknown type or field."""
    values = dict(data)
    kind = values.pop("type", None)
    cls = _TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown behaviour type {kind!r} (expected one of {', '.join(_TYPES)})")
    if cls is Reply and "tool_calls" in values:
        values["tool_calls"] = tuple(SimToolCall(**c) for c in values["tool_calls"])
    try:
        return cls(**values)  # type: ignore[no-any-return]  # cls is one of the Behaviour types
    except TypeError as exc:
        raise ValueError(f"bad {kind} behaviour: {exc}") from None
