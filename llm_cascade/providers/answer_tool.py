"""JSON by tool use, for vendors with no JSON mode of their own (Anthropic, Bedrock's Converse):
the request offers one more tool, named after the output format, whose input schema is the
answer's, and forces the model to call it; that call's input is the answer's text.

A tool input is an object, so a schema for anything else becomes the one property `value`
(its `$defs` stay at the root, where its `$ref`s point) and the answer is unwrapped again.
`AnswerStream` does the same for a stream: the answer tool's input pieces become text deltas
(gathered until the block ends when the document is wrapped, so the text is the document alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import untrusted
from ..types import OutputFormat
from .base import document_text
from .streaming import Delta, TextDelta

WRAPPED = "value"  # the one property of a tool input that wraps a document that is no object
_DEFS = ("$defs", "definitions")
DESCRIPTION = "Give your answer as the input of this tool."


def answer_schema(output: OutputFormat) -> tuple[dict[str, Any], bool]:
    """The answer tool's input schema, and whether the document is wrapped in it."""
    wire = output.wire_schema
    schema = dict(wire) if wire is not None else {"type": "object"}
    wrapped = schema.get("type") != "object"
    if wrapped:
        defs = {k: schema.pop(k) for k in _DEFS if k in schema}
        schema = {"type": "object", "properties": {WRAPPED: schema}, "required": [WRAPPED], **defs}
    return schema, wrapped


def _unwrap(value: Any, wrapped: bool) -> Any:
    return value[WRAPPED] if wrapped and isinstance(value, Mapping) and WRAPPED in value else value


def document(value: Any, output: OutputFormat) -> str:
    """The answer tool's input as the document's text."""
    return document_text(_unwrap(value, answer_schema(output)[1]))


def _unwrapped(text: str) -> str:
    """A wrapped document's text without its wrapper; text that is no JSON stays as it is
    (the check that follows says so)."""
    try:
        value = untrusted.loads(text)
    except ValueError:
        return text
    return document_text(_unwrap(value, wrapped=True))


class AnswerStream:
    """Which streamed content block is the answer tool's call, and its input as text."""

    def __init__(self, output: OutputFormat | None) -> None:
        self.output = output
        self._wrapped = output is not None and answer_schema(output)[1]
        self._index: int | None = None
        self._gathered: list[str] = []

    def starts(self, index: int, name: Any) -> bool:
        """True when the block `index` opening a call of `name` is the answer (and is read here)."""
        if self.output is None or name != self.output.name:
            return False
        self._index = index
        return True

    def owns(self, index: Any) -> bool:
        return index is not None and index == self._index

    def piece(self, text: Any) -> list[Delta]:
        """A piece of the answer tool's input JSON."""
        if not isinstance(text, str) or not text:
            return []
        if self._wrapped:
            self._gathered.append(text)
            return []
        return [TextDelta(text)]

    def stop(self, index: Any) -> list[Delta]:
        """The end of block `index`: a wrapped answer's text, whole."""
        if not self.owns(index) or not self._wrapped:
            return []
        return [TextDelta(_unwrapped("".join(self._gathered)))]
