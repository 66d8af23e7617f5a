"""What the simulator does with one request: answer, fail, hang, or break the connection.

Each behaviour is a small value with a JSON form, so another process (the demo, a shell
script) can script a running simulator over its control endpoint. How a streamed answer is
delivered (its pieces, pace and faults) is a `Stream` value inside the `Reply`: the same reply
answers a non-streaming request whole, and a streaming one as `Stream` says.
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
class Stream:
    """How a reply is streamed when the request asks for a stream, and how the stream breaks.

    "After N" counts content events: text pieces and tool-call fragments (an OpenAI tool call's
    first fragment with its id and name, an Anthropic `tool_use` block start, each arguments
    piece; an Ollama or Gemini tool call, which arrives whole, is one). A fault whose N is at
    least the number of content events fires after the last one, before the vendor's closing
    events (finish chunk, `message_delta`, final frame). Waits are released by
    `Simulator.stop()`; keep-alives are sent during every wait when `keepalive_every` is set, so
    "keep-alives for a while" is `first_token_delay` with `keepalive_every`, and "keep-alives
    forever" is `stall_after=0` with `keepalive_every`.
    """

    chunks: int | None = None  # cut the text into this many near-equal pieces
    pieces: tuple[str, ...] | None = None  # or exactly these pieces (None: one piece per word)
    chunk_delay: float = 0.0  # seconds between content events
    first_token_delay: float = 0.0  # seconds before the first content event, after the head
    keepalive_every: float | None = None  # while waiting, a keep-alive this often (seconds)
    tool_fragments: int = 1  # pieces each tool call's arguments JSON is cut into
    reuse_index_zero: bool = False  # OpenAI-compatible servers' quirk: every tool call index 0
    drop_after: int | None = None  # close the connection mid-body
    stall_after: int | None = None  # send nothing until `Simulator.release()` (or stop)
    error_after: int | None = None  # the vendor's in-stream error event, then the end
    error_status: int = 529  # the status whose error the event carries (529: overloaded)
    error_message: str | None = None  # None: the status's phrase ("Overloaded")
    malformed_after: int | None = None  # one data line that is not JSON, then carry on
    oversized_after: int | None = None  # one text piece of more than 1 MiB, then carry on
    terminator: bool = True  # False: no `[DONE]`, `message_stop`, `done: true`, final frame

    def __post_init__(self) -> None:
        for name in ("chunks", "tool_fragments"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"stream {name} must be a positive integer, not {value!r}")
        for name in (*FAULTS, "oversized_after"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"stream {name} must be a count of events, not {value!r}")
        if self.chunks is not None and self.pieces is not None:
            raise ValueError("give a stream either chunks or pieces, not both")
        if self.keepalive_every is not None and not self.keepalive_every > 0:
            raise ValueError("stream keepalive_every must be a positive number of seconds")


# The faults "after N content events", in the order they fire when several share one N.
FAULTS = ("malformed_after", "stall_after", "error_after", "drop_after")


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer in the vendor's format. `text=None` echoes the last user message.

    `stream` says how it is streamed to a request that asks for a stream (None: the defaults,
    one piece per word); a non-streaming request gets the same answer whole. Explicit
    `stream.pieces` are the text: with `text=None` they replace the echo.
    """

    text: str | None = None
    tool_calls: tuple[SimToolCall, ...] = ()
    input_tokens: int = 11
    output_tokens: int = 7
    stop_reason: str | None = None  # None: the vendor's normal "finished" value
    delay: float = 0.0  # seconds before the reply (its headers) is sent
    hold: bool = False  # wait for `Simulator.release()` before replying
    stream: Stream | None = None

    def __post_init__(self) -> None:
        pieces = self.stream.pieces if self.stream is not None else None
        if pieces is not None and self.text is not None and "".join(pieces) != self.text:
            raise ValueError("stream pieces must join to the reply's text")


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
    try:
        if cls is Reply and "tool_calls" in values:
            values["tool_calls"] = tuple(SimToolCall(**c) for c in values["tool_calls"])
        if cls is Reply and values.get("stream") is not None:
            if not isinstance(values["stream"], dict):
                raise ValueError(
                    f"bad reply behaviour: stream must be an object: {values['stream']!r}"
                )
            stream = dict(values["stream"])
            if stream.get("pieces") is not None:
                stream["pieces"] = tuple(stream["pieces"])
            values["stream"] = Stream(**stream)
        return cls(**values)  # type: ignore[no-any-return]  # cls is one of the Behaviour types
    except TypeError as exc:
        raise ValueError(f"bad {kind} behaviour: {exc}") from None
