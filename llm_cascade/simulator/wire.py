"""The bytes of a streamed answer: events, how each vendor frames them, how text is cut up.

A vendor turns a reply into `StreamParts` (its events, content events marked); a `Framing`
turns each event into bytes: server-sent events (OpenAI, Anthropic, Gemini with `alt=sse`),
a streamed JSON array (Gemini without it) or one JSON object a line (Ollama).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

MALFORMED = "this is not json {"
OVERSIZED = 1024 * 1024 + 1  # characters: one more than the 1 MiB a client may allow an event


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a stream. `data` is JSON-encoded unless `raw` (OpenAI's `[DONE]`)."""

    data: Any
    name: str | None = None  # the SSE `event:` line (Anthropic names every event)
    content: bool = False  # a text piece or tool-call fragment: what faults count
    raw: bool = False
    message_type: str = "event"  # AWS event streams: `event` or `exception`


@dataclass(frozen=True, slots=True)
class StreamParts:
    """A vendor's stream: `head` before the content (OpenAI's role chunk, Anthropic's
    `message_start`), `body` (content events and the structure between them), `tail` (finish,
    usage, the terminator)."""

    head: list[Event] = field(default_factory=list)
    body: list[Event] = field(default_factory=list)
    tail: list[Event] = field(default_factory=list)


def _encode(event: Event) -> str:
    return str(event.data) if event.raw else json.dumps(event.data)


class Framing:
    """Events to bytes for one response (a JSON array remembers whether it has begun)."""

    content_type = "text/event-stream; charset=utf-8"

    def event(self, event: Event) -> bytes:
        raise NotImplementedError

    def comment(self) -> bytes:
        """A keep-alive that carries no event."""
        raise NotImplementedError

    def close(self) -> bytes:
        """What ends the body after the last event (a JSON array's `]`)."""
        return b""


class Sse(Framing):
    """Server-sent events; Gemini ends its lines with CRLF, as Google's servers do."""

    def __init__(self, newline: str = "\n", content_type: str | None = None) -> None:
        self.newline = newline
        if content_type is not None:
            self.content_type = content_type

    def event(self, event: Event) -> bytes:
        nl = self.newline
        name = f"event: {event.name}{nl}" if event.name else ""
        return f"{name}data: {_encode(event)}{nl}{nl}".encode()

    def comment(self) -> bytes:
        return f": keep-alive{self.newline}{self.newline}".encode()


class Ndjson(Framing):
    """One JSON object a line (Ollama)."""

    content_type = "application/x-ndjson"

    def event(self, event: Event) -> bytes:
        return f"{_encode(event)}\n".encode()

    def comment(self) -> bytes:
        return b"\n"


class JsonArray(Framing):
    """A JSON array written element by element, as Gemini streams without `alt=sse`."""

    content_type = "application/json; charset=UTF-8"

    def __init__(self) -> None:
        self.started = False

    def event(self, event: Event) -> bytes:
        lead = "\n,\r\n" if self.started else "["
        self.started = True
        return f"{lead}{_encode(event)}".encode()

    def comment(self) -> bytes:
        return b"\n"  # whitespace between array elements

    def close(self) -> bytes:
        return b"\n]" if self.started else b"[]"


class EventStream(Framing):
    """AWS event-stream messages (Bedrock's converse-stream): each event a binary message
    whose `:event-type` (or `:exception-type`) header is the event's name."""

    content_type = "application/vnd.amazon.eventstream"

    def event(self, event: Event) -> bytes:
        kind = ":exception-type" if event.message_type == "exception" else ":event-type"
        headers = {
            kind: event.name or "",
            ":content-type": "application/json",
            ":message-type": event.message_type,
        }
        return aws_message(_encode(event).encode(), headers)

    def comment(self) -> bytes:
        return b""  # the format has no keep-alive: the service sends nothing while it waits


def aws_message(payload: bytes, headers: dict[str, str]) -> bytes:
    """One AWS event-stream message with string headers: the prelude (total and headers
    length, their CRC32), the headers, the payload, and a CRC32 of all that."""
    raw = b"".join(
        bytes([len(n.encode())])
        + n.encode()
        + b"\x07"
        + struct.pack(">H", len(v.encode()))
        + v.encode()
        for n, v in headers.items()
    )
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return head + struct.pack(">I", zlib.crc32(head))


def words(text: str) -> list[str]:
    """One piece per word, each with the whitespace before it, as tokens arrive."""
    pieces = re.findall(r"\s*\S+", text)
    trailing = text[len("".join(pieces)) :]
    if trailing and pieces:
        pieces[-1] += trailing
    return pieces or ([text] if text else [])


def cut(text: str, count: int) -> list[str]:
    """`text` in `count` near-equal pieces (fewer if it is shorter); "" gives no pieces."""
    count = max(1, min(count, len(text)))
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return [p for p in pieces if p]
