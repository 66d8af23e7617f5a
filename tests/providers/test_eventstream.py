"""The AWS event-stream framer, without I/O: messages at every byte split, both checksums,
every header type, exceptions and errors, and its limits."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from llm_cascade.errors import ProviderError
from llm_cascade.providers.eventstream import EventStreamDecoder
from llm_cascade.providers.streaming import MAX_EVENT_BYTES, StreamEvent, framer
from llm_cascade.simulator.wire import aws_message as encode


def event(kind: str, payload: dict) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode(json.dumps(payload).encode(), headers)


BODY = event("messageStart", {"role": "assistant"}) + event(
    "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hé"}}
)


def decode(pieces: list[bytes]) -> list[StreamEvent]:
    decoder = EventStreamDecoder()
    return [e for piece in pieces for e in decoder.feed(piece)] + decoder.finish()


def test_messages_decode_whole_and_one_byte_at_a_time():
    expected = [
        StreamEvent('{"role": "assistant"}', "messageStart", "event"),
        StreamEvent(
            '{"contentBlockIndex": 0, "delta": {"text": "H\\u00e9"}}', "contentBlockDelta", "event"
        ),
    ]
    assert decode([BODY]) == expected
    assert decode([BODY[i : i + 1] for i in range(len(BODY))]) == expected
    assert isinstance(framer("eventstream"), EventStreamDecoder)


@pytest.mark.parametrize("cut", range(1, 40, 3))
def test_any_split_gives_the_same_events(cut):
    assert decode([BODY[:cut], BODY[cut:]]) == decode([BODY])


def test_exceptions_are_named_by_their_type_and_errors_carry_their_headers():
    exception = encode(
        b'{"message":"Too many tokens"}',
        {":exception-type": "throttlingException", ":message-type": "exception"},
    )
    error = encode(
        b"", {":error-code": "InternalFailure", ":error-message": "oops", ":message-type": "error"}
    )
    assert decode([exception, error]) == [
        StreamEvent('{"message":"Too many tokens"}', "throttlingException", "exception"),
        StreamEvent('{"message": "oops"}', "InternalFailure", "error"),
    ]


def test_headers_of_every_type_are_skipped_to_reach_the_strings():
    def header(name: bytes, kind: int, value: bytes) -> bytes:
        return bytes([len(name)]) + name + bytes([kind]) + value

    raw = b"".join(
        [
            header(b"t", 0, b""),
            header(b"f", 1, b""),
            header(b"b", 2, b"\x01"),
            header(b"s", 3, b"\x00\x02"),
            header(b"i", 4, b"\x00" * 4),
            header(b"l", 5, b"\x00" * 8),
            header(b"a", 6, b"\x00\x03abc"),
            header(b"ts", 8, b"\x00" * 8),
            header(b"u", 9, b"\x00" * 16),
            header(b":event-type", 7, b"\x00\x08metadata"),
        ]
    )
    payload = b"{}"
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    message = head + struct.pack(">I", zlib.crc32(head))
    assert decode([message]) == [StreamEvent("{}", "metadata", "event")]


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda m: m[:8] + b"\0\0\0\0" + m[12:], "prelude checksum mismatch"),
        (lambda m: m[:-1] + bytes([m[-1] ^ 1]), "message checksum mismatch"),
        (lambda m: m[:20] + bytes([m[20] ^ 1]) + m[21:], "message checksum mismatch"),
    ],
)
def test_a_corrupted_message_is_an_invalid_response(mangle, problem):
    with pytest.raises(ProviderError) as caught:
        decode([mangle(event("messageStop", {"stopReason": "end_turn"}))])
    assert caught.value.kind == "invalid_response"
    assert problem in caught.value.message


def test_a_message_announcing_more_than_the_limit_fails_before_it_arrives():
    prelude = struct.pack(">II", MAX_EVENT_BYTES + 1, 0)
    with pytest.raises(ProviderError, match="larger than 1 MiB"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


def test_a_message_cut_short_at_the_end_is_dropped():
    assert decode([BODY[:-3]]) == decode([BODY])[:1]
