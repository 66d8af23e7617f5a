"""`run --stream`: the answer written as it arrives (text, or one JSON object per event).

The engine decides everything; this module only writes what it yields. A stream that broke
after output is announced on stderr: continued by the next entry, or restarted (on a terminal,
below a separator; in a plain-text pipe nothing already written can be taken back, so the run
stops there, with the prompt and the partial answer saved).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..events import Done, EntryStarted, Reset, Switched, Text, ToolCallDelta
from ._common import StdoutClosed, StdoutFailed, say, silence_stdout, write_stdout

if TYPE_CHECKING:
    from ..cascade import Cascade, RunOptions
    from ..events import StreamEvent
    from ..results import CascadeResult
    from ..types import Conversation


class Terminated(BaseException):
    """SIGTERM while a write to stdout was blocked (its reader stopped reading)."""


_writing = False  # a write to stdout is under way: the event loop cannot see a signal now


def event_json(event: StreamEvent) -> dict[str, Any]:
    """One line of `run --json --stream`; `Done` is the object `run --json` prints."""
    if isinstance(event, Done):
        return {"event": "done", **event.result.to_dict()}
    if isinstance(event, EntryStarted):
        return {"event": "entry_started", "entry": event.entry, "try": event.try_number}
    if isinstance(event, Text):
        return {"event": "text", "text": event.text}
    if isinstance(event, ToolCallDelta):
        return {
            "event": "tool_call_delta",
            "index": event.index,
            "id": event.id,
            "name": event.name,
            "arguments": event.arguments,  # a piece of the JSON text `done` has whole
        }
    if isinstance(event, Reset):
        return {"event": "reset", "entry": event.entry, "reason": event.reason}
    return {"event": "switched", "entry": event.entry, "to": event.to, "reason": event.reason}


async def stream_answer(
    engine: Cascade,
    cascade: str,
    conversation: Conversation,
    options: RunOptions,
    *,
    as_json: bool,
    terminal: bool,
    on_output: Callable[[], None] = lambda: None,
) -> CascadeResult:
    """Write the stream out; return the result once the whole answer is out.

    `on_output` is called before anything is written (a spinner stops there).
    """
    from . import render

    stream = engine.stream(cascade, conversation, options)
    shown = render.StreamedText(terminal=terminal)
    async with _sigterm_cancels(), aclosing(stream) as events:
        async for event in events:
            if not isinstance(event, EntryStarted):
                on_output()
            if isinstance(event, Done):
                calls = event.result.response.tool_calls
                end = "\n" + (render.dumps(event.result.response.to_dict()) + "\n" if calls else "")
                try:
                    _write(_line(event) if as_json else shown.flush() + end)
                except (StdoutClosed, StdoutFailed, Terminated) as exc:
                    event.answer.undelivered(str(exc) or "the reader closed stdout")
                    raise
                return event.result
            if as_json:
                _write(_line(event))
            elif isinstance(event, Text):
                _write(shown.feed(event.text))
            elif isinstance(event, Switched):  # the answer goes on: a held CR stays held
                say(
                    f"\nllm-cascade: {event.entry} broke mid-stream ({event.reason});"
                    f" {event.to} continues the answer"
                )
            elif isinstance(event, Reset):  # not in a plain pipe: the run says it cannot restart
                say(
                    f"\nllm-cascade: {event.entry} broke mid-stream ({event.reason});"
                    " the next entry answers from the start:"
                )
                shown.flush()  # the broken answer's last CR: nothing follows it
                _write("\n----\n")
    raise AssertionError("a stream ends with Done or raises")  # pragma: no cover


@asynccontextmanager
async def _sigterm_cancels() -> AsyncIterator[None]:
    """SIGTERM cancels the run at its next await, as Ctrl-C does. While a write to stdout
    blocks (a reader that stopped reading) no await comes: then it ends the write instead."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()

    def on_sigterm(signum: int, frame: object) -> None:
        if _writing:
            raise Terminated("terminated while stdout was blocked")
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write(text: str) -> None:
    """`write_stdout`; text stdout cannot encode (a Latin-1 locale) fails as stdout does."""
    global _writing
    _writing = True
    try:
        write_stdout(text)
    except UnicodeEncodeError as exc:
        raise StdoutFailed(f"cannot write to stdout: {exc}") from None
    except Terminated:
        silence_stdout()  # what the blocked write left in the buffer must not block the exit
        raise
    finally:
        _writing = False


def _line(event: StreamEvent) -> str:
    from . import render

    return render.compact_dumps(event_json(event)) + "\n"
