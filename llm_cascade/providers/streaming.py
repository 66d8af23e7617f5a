"""Streamed replies without I/O: bytes framed into events, events into deltas, deltas into a
response.

The HTTP reading loop feeds the body to the framer the adapter's `stream_format` names
(`SseDecoder` or `NdjsonDecoder`), each framed `StreamEvent` to the adapter's `StreamParser`,
and each delta to one `StreamAssembler`, which builds the `LlmResponse` a whole reply would
give. Everything here is pure and incremental: a byte may arrive at a time.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .. import untrusted
from ..errors import ProviderError
from ..text import shorten
from ..types import ContentBlock, LlmResponse, Text, TextBlock, ToolCall
from ..types import ToolCallDelta as ToolCallDelta  # re-exported: the parsers make them
from .base import Adapter, CallOptions, StreamFormat, new_call_id

# No real event comes near this (a delta is a few tokens; a whole tool call a few KiB): a larger
# one is a broken or hostile server, refused before it fills memory.
MAX_EVENT_BYTES = 1 << 20


class StreamEvent(NamedTuple):
    """One framed event, still text (a tuple: made once per event, at half a dataclass's cost)."""

    data: str
    name: str | None = None  # SSE `event:` field; None for NDJSON lines and unnamed SSE events
    message_type: str | None = None  # AWS event streams: `event`, `exception` or `error`


# --- deltas: what an adapter's parser makes of an event ---------------------------------------


# More answer text, and a piece of the tool call at `index`: the events the caller gets.
TextDelta = Text


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """The latest known token counts; None leaves a count as it was."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class StopDelta:
    """Why the model stopped, in the vendor's own words (`stop`, `end_turn`, `MAX_TOKENS`...)."""

    reason: str | None


@dataclass(frozen=True, slots=True)
class ModelDelta:
    """The model that answers, when the stream names it."""

    model: str


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The vendor's end marker was seen: `[DONE]`, `message_stop`, `done: true`, Gemini's final
    frame. A stream that stops without it was cut."""


Delta = TextDelta | ToolCallDelta | UsageDelta | StopDelta | ModelDelta | EndOfStream
CONTENT = (TextDelta, ToolCallDelta)  # what counts as "output reached the caller"
Content = TextDelta | ToolCallDelta


def too_large() -> ProviderError:
    return ProviderError(
        "invalid_response", f"stream event larger than {MAX_EVENT_BYTES >> 20} MiB"
    )


# --- framing ----------------------------------------------------------------------------------


class _Lines:
    """Bytes split into lines, each at most MAX_EVENT_BYTES with what its event already holds.

    With `cr`, a lone CR ends a line too, and a CRLF split between two chunks is one line end.
    """

    def __init__(self, *, cr: bool) -> None:
        self._end = re.compile(rb"\r\n|\r|\n" if cr else rb"\n")
        self._cr = cr
        self._line = bytearray()
        self._after_cr = False  # the last chunk ended with CR: a LF opening the next is its pair
        self.held = 0  # bytes the current event already holds: they count against the limit

    def split(self, chunk: bytes) -> list[bytes]:
        if not self._line and not self._after_cr and b"\r" not in chunk:  # the common case
            lines = chunk.split(b"\n")  # at C speed
            tail = lines.pop()
            room = MAX_EVENT_BYTES - self.held
            if len(chunk) > room and (len(tail) > room or max(map(len, lines), default=0) > room):
                raise too_large()
            self._line += tail
            return lines
        if not chunk:
            return []
        start = 1 if self._after_cr and chunk[:1] == b"\n" else 0
        lines = []
        for match in self._end.finditer(chunk, start):
            self._take(chunk, start, match.start())
            lines.append(bytes(self._line))
            self._line.clear()
            start = match.end()
        self._take(chunk, start, len(chunk))
        self._after_cr = self._cr and chunk.endswith(b"\r")
        return lines

    def rest(self) -> bytes:
        """What came after the last line end; the buffer is emptied."""
        line = bytes(self._line)
        self._line.clear()
        return line

    def _take(self, chunk: bytes, start: int, end: int) -> None:
        if self.held + len(self._line) + end - start > MAX_EVENT_BYTES:
            raise too_large()
        self._line += chunk[start:end]


class SseDecoder:
    """Server-sent events as the HTML standard frames them, fed any split of the bytes.

    Lines end with LF, CRLF or CR; a leading BOM is dropped; `data:` lines are joined with LF;
    a line starting with `:` is a comment (keep-alive); `id:` and `retry:` only matter to a
    client that reconnects, which we never do; a blank line dispatches the event, unless it has
    no data. An event not closed by a blank line when the stream ends is dropped, as browsers
    drop it: it may be cut short.
    """

    def __init__(self) -> None:
        self._lines = _Lines(cr=True)
        self._first = True
        self._data: list[str] = []
        self._name = ""

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        events = []
        lines = self._lines
        held = lines.held
        for raw in lines.split(chunk):  # one loop, no call per line: it runs per event
            text = raw.decode("utf-8", errors="replace")  # a line end is never in a character
            if self._first:
                self._first = False
                text = text.removeprefix("\ufeff")
            if not text:  # a blank line dispatches the event
                if self._data:
                    events.append(StreamEvent("\n".join(self._data), self._name or None))
                    self._data.clear()
                self._name, held = "", 0
                continue
            if text.startswith("data: "):  # most lines: no partition needed
                self._data.append(text[6:])
            elif text[0] == ":":
                continue
            else:
                name, _, value = text.partition(":")
                value = value.removeprefix(" ")
                if name == "data":  # a lone `data`, no colon: an empty line of data
                    self._data.append(value)
                elif name == "event":
                    self._name = value
                else:
                    continue  # id, retry and unknown fields
            held += len(raw)
        lines.held = held
        return events

    def finish(self) -> list[StreamEvent]:
        """The stream ended: an unfinished event is dropped, so nothing is returned."""
        self._lines.rest()
        self._data, self._name, self._lines.held = [], "", 0
        return []


class NdjsonDecoder:
    """Newline-delimited JSON (Ollama): one event per non-blank line, fed any split of the bytes.

    A last line without its newline is still an event, as Go's line scanner (Ollama's own
    client) reads it; if it was cut short, its JSON is what fails.
    """

    def __init__(self) -> None:
        self._lines = _Lines(cr=False)

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        return [e for e in map(self._event, self._lines.split(chunk)) if e is not None]

    def finish(self) -> list[StreamEvent]:
        event = self._event(self._lines.rest())
        return [event] if event is not None else []

    @staticmethod
    def _event(raw: bytes) -> StreamEvent | None:
        text = raw.decode("utf-8", errors="replace").strip()  # a CRLF's CR, blank lines
        return StreamEvent(text) if text else None


class Framer(Protocol):
    """Bytes in, events out, for one reply."""

    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]:
        """The body ended: what is left, as events."""
        ...


def framer(stream_format: StreamFormat) -> Framer:
    """A fresh framer for one reply in this format."""
    if stream_format == "sse":
        return SseDecoder()
    if stream_format == "ndjson":
        return NdjsonDecoder()
    from .eventstream import EventStreamDecoder  # only Bedrock streams use it

    return EventStreamDecoder()


# --- parsing ----------------------------------------------------------------------------------


def event_json(event: StreamEvent) -> Any:
    """The event's data as JSON, entering our types through `untrusted.loads`."""
    try:
        return untrusted.loads(event.data)
    except untrusted.NestedTooDeep as exc:
        raise ProviderError("invalid_response", f"stream event {exc}") from None
    except ValueError:
        raise ProviderError(
            "invalid_response", f"malformed stream event: {shorten(event.data.strip(), 80)}"
        ) from None


class StreamParser(ABC):
    """One vendor's events turned into deltas, for one stream (it may keep state, never I/O).

    Raises ProviderError for an error event, a blocked or refused answer, malformed JSON. Its
    messages may quote the provider: the reading loop scrubs them, as it does a whole reply's.
    """

    def __init__(self) -> None:
        self._model: str | None = None

    @abstractmethod
    def feed(self, event: StreamEvent) -> list[Delta]:
        """The deltas in one event; unknown events give none."""

    def model_delta(self, value: Any) -> list[Delta]:
        """A ModelDelta the first time a stream names its model (most repeat it every chunk)."""
        if not isinstance(value, str) or not value or value == self._model:
            return []
        self._model = value
        return [ModelDelta(value)]


# --- assembling -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    id: str | None
    name: str | None
    pieces: list[str] = field(default_factory=list)

    def finished(self) -> ToolCall:
        """The call, its arguments checked: pieces lost or cut make JSON that does not parse."""
        name = self.name or ""
        arguments = "".join(self.pieces) or "{}"
        try:
            untrusted.loads(arguments)
        except untrusted.NestedTooDeep as exc:
            raise ProviderError(
                "invalid_response", f"tool call '{name}' arguments are {exc}"
            ) from None
        except ValueError:
            raise ProviderError(
                "invalid_response",
                f"tool call '{name}' arguments are not valid JSON: {shorten(arguments, 80)}",
            ) from None
        return ToolCall(self.id or new_call_id(), name, arguments)


class StreamAssembler:
    """Deltas of any vendor in, one LlmResponse out.

    Content keeps the order it arrived in: a run of text is one block, a tool call sits where
    its first piece came. A tool call is known by its index; a piece with a new, different id
    at an index already used starts another call, as compatible servers that number every
    parallel call 0 send them.
    """

    def __init__(self) -> None:
        self._blocks: list[list[str] | _Call] = []
        self._calls: dict[int, _Call] = {}
        self._text: list[str] = []
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._stop_reason: str | None = None
        self._model: str | None = None
        self._ended = False

    def add(self, delta: Delta) -> bool:
        """Take one delta; True if it is content for the caller (text, a tool-call piece)."""
        if type(delta) is TextDelta:  # first and without a match: this runs for every delta
            text = delta.text
            if not text:
                return False
            self._text.append(text)
            blocks = self._blocks
            last = blocks[-1] if blocks else None
            if type(last) is list:
                last.append(text)
            else:
                blocks.append([text])
            return True
        match delta:
            case ToolCallDelta():
                self._add_call(delta)
                return True
            case UsageDelta(input_tokens, output_tokens):
                if input_tokens is not None:
                    self._input_tokens = input_tokens
                if output_tokens is not None:
                    self._output_tokens = output_tokens
            case StopDelta(reason):
                self._stop_reason = reason
            case ModelDelta(model):
                self._model = model
            case EndOfStream():
                self._ended = True
        return False

    def take(self, deltas: list[Delta], content: list[Content]) -> None:
        """`add` each delta; the content among them goes to `content`, in order."""
        for delta in deltas:
            if self.add(delta):
                content.append(delta)  # type: ignore[arg-type]  # add() said it is content

    def _add_call(self, delta: ToolCallDelta) -> None:
        call = self._calls.get(delta.index)
        if call is None or (delta.id and call.id and delta.id != call.id):
            call = self._calls[delta.index] = _Call(delta.id or None, delta.name or None)
            self._blocks.append(call)
        else:
            call.id = call.id or delta.id or None
            call.name = call.name or delta.name or None
        if delta.arguments:
            call.pieces.append(delta.arguments)

    @property
    def content_started(self) -> bool:
        """True once text or a tool call reached us: from then on, output may have reached the
        caller, so the attempt cannot be silently replaced."""
        return bool(self._blocks)

    @property
    def text(self) -> str:
        """The text so far (what a retry can ask the next entry to continue)."""
        return "".join(self._text)

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._calls)

    @property
    def ended(self) -> bool:
        """True once the vendor's end marker was seen; a stream that stopped before was cut."""
        return self._ended

    def response(self, options: CallOptions) -> LlmResponse:
        """The whole answer. Raises ProviderError if the stream was cut (`truncated`), a tool
        call's arguments are not JSON (`invalid_response`), or nothing usable came."""
        if not self._ended:
            raise ProviderError("truncated", "the stream ended before its end marker")
        content: list[ContentBlock] = [
            TextBlock("".join(block)) if isinstance(block, list) else block.finished()
            for block in self._blocks
        ]
        return Adapter.answer(
            content,
            self._model or options.model,
            (self._input_tokens, self._output_tokens),
            self._stop_reason,
            f"no text or tool calls (stop reason: {self._stop_reason})",
        )
