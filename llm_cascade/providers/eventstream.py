"""AWS event streams (`application/vnd.amazon.eventstream`, Bedrock's `converse-stream`), framed
without I/O and fed any split of the bytes.

A message is its total length and its headers' length (4 bytes each, big-endian), a CRC32 of
those 8 bytes, the headers, the payload and a CRC32 of everything before it. A header is a
1-byte name length, the name, a 1-byte value type and the value. Each message becomes one
`StreamEvent`: the payload as text, named by its `:event-type` (or `:exception-type`), with
its `:message-type` (`event`, `exception` or `error`).
"""

from __future__ import annotations

import json
import struct
import zlib

from ..errors import ProviderError
from .streaming import MAX_EVENT_BYTES, StreamEvent, too_large

PRELUDE = 12  # total length, headers length, prelude CRC
TRAILER = 4  # message CRC
# Value sizes by header type: 0/1 booleans (no value), byte, short, integer, long, then the
# length-prefixed byte array (6) and string (7), timestamp (8) and UUID (9).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def malformed(reason: str) -> ProviderError:
    return ProviderError("invalid_response", f"malformed event stream: {reason}")


def headers_of(raw: bytes) -> dict[str, str]:
    """The string headers of a message (other types are skipped, not decoded)."""
    out: dict[str, str] = {}
    at = 0
    while at < len(raw):
        size = raw[at]
        name = raw[at + 1 : at + 1 + size].decode("utf-8", errors="replace")
        at += 1 + size
        if at >= len(raw):
            raise malformed("a header has no value type")
        kind = raw[at]
        at += 1
        if kind in (6, 7):
            if at + 2 > len(raw):
                raise malformed("a header value is cut short")
            (length,) = struct.unpack_from(">H", raw, at)
            value = raw[at + 2 : at + 2 + length]
            at += 2 + length
            if kind == 7:
                out[name] = value.decode("utf-8", errors="replace")
        elif kind in _FIXED:
            at += _FIXED[kind]
        else:
            raise malformed(f"unknown header value type {kind}")
        if at > len(raw):
            raise malformed("a header value is cut short")
    return out


class EventStreamDecoder:
    """Binary event-stream messages to events, checking both checksums."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        self._buffer += chunk
        events = []
        while len(self._buffer) >= PRELUDE:
            total, header_size = struct.unpack_from(">II", self._buffer)
            if total > MAX_EVENT_BYTES:
                raise too_large()
            (prelude_crc,) = struct.unpack_from(">I", self._buffer, 8)
            if zlib.crc32(self._buffer[:8]) != prelude_crc:
                raise malformed("prelude checksum mismatch")
            if total < PRELUDE + TRAILER + header_size:
                raise malformed("a message shorter than its own headers")
            if len(self._buffer) < total:
                break
            message = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", message, total - TRAILER)
            if zlib.crc32(message[:-TRAILER]) != message_crc:
                raise malformed("message checksum mismatch")
            events.append(self._event(message, header_size))
        return events

    def finish(self) -> list[StreamEvent]:
        """The stream ended: a message cut short is dropped (the reply then lacks its end)."""
        self._buffer.clear()
        return []

    @staticmethod
    def _event(message: bytes, header_size: int) -> StreamEvent:
        headers = headers_of(message[PRELUDE : PRELUDE + header_size])
        payload = message[PRELUDE + header_size : -TRAILER].decode("utf-8", errors="replace")
        kind = headers.get(":message-type", "event")
        if kind == "error":  # the error is in the headers; the payload is empty
            payload = json.dumps({"message": headers.get(":error-message", "")})
            return StreamEvent(payload, headers.get(":error-code"), kind)
        name = headers.get(":exception-type" if kind == "exception" else ":event-type")
        return StreamEvent(payload, name, kind)
