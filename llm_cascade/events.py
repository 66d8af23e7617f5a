"""What `Cascade.stream()` yields: typed events, the last one `Done` with the whole result.

    async for event in engine.stream("fast", conversation):
        match event:
            case Text(text=piece): print(piece, end="", flush=True)
            case Reset(): ...  # discard what was shown: the next entry answers from the start
            case Done(result=result): print()

`Reset` comes only when a stream broke after output and the cascade's `on_midstream` policy
restarts it on the next entry; with `continue` the next entry picks up where the text stopped
(a `Switched` event says so) and the text already shown stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# The pieces of content are the adapters' own (types.py): passed on as they were parsed.
from .types import Text, ToolCallDelta

__all__ = ["Done", "EntryStarted", "Reset", "StreamEvent", "Switched", "Text", "ToolCallDelta"]

if TYPE_CHECKING:
    from .cascade import Answer
    from .results import CascadeResult


@dataclass(frozen=True, slots=True)
class EntryStarted:
    """A request to `entry` is about to be sent (try `try_number`, maybe as the probe)."""

    entry: str
    try_number: int = 1
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Reset:
    """Discard what was shown: `entry` broke mid-stream and the next entry starts over."""

    entry: str
    reason: str


@dataclass(frozen=True, slots=True)
class Switched:
    """`entry` broke mid-stream; `to` continues the text from where it stopped."""

    entry: str
    to: str
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """The whole answer, as `Cascade.run` returns it; the stream ends after this event.

    The saved prompt is removed when the stream is resumed or closed after this event; call
    `answer.undelivered(reason)` first if the answer could not reach its reader.
    """

    result: CascadeResult
    answer: Answer


StreamEvent = EntryStarted | Text | ToolCallDelta | Reset | Switched | Done
