"""Text and JSON that someone else controls (a provider's reply), made safe to keep and show.

A reply can hold what no writer downstream accepts: a lone surrogate escape (`"\\ud800"`) that
UTF-8 cannot encode, so printing, logging, SQLite and saved JSON would fail on it; JSON nested
deep enough to exhaust the stack of any recursive reader or printer; control characters that
rewrite a terminal. `loads` is the one way a reply's JSON enters our types; `escape_controls`
is applied wherever such text is shown as part of our own messages.
"""

from __future__ import annotations

import json
import re
from typing import Any

# How deep any JSON we accept may nest (replies, conversations, configs, saved prompts): a real
# reply nests a dozen levels, tool arguments a few more. One limit, so whatever one part
# accepts (an answer's tool call) another can read back (the same call in a conversation).
MAX_NESTING = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
# Text that may turn into a surrogate: a \uD800-\uDFFF escape, or a surrogate already there.
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
# C0 controls but tab and newline, DEL and C1 (0x9b is a one-byte CSI); a CR not ending a line.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


_DECODER = json.JSONDecoder()


class NestedTooDeep(ValueError):
    """JSON nested deeper than we accept."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"nested deeper than {max_depth} levels")


def encodable(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, so any UTF-8 writer takes it."""
    return _SURROGATE.sub("\ufffd", text)


def escape_controls(text: str) -> str:
    """`text` with control characters shown as `\\x1b`, so it cannot drive a terminal.

    Tabs, newlines and CRLF line ends are kept; callers that want one line collapse them.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()[0]):02x}", text)


def loads(text: str, max_depth: int = MAX_NESTING) -> Any:
    """`json.loads` for untrusted text: every string made `encodable`.

    Raises `NestedTooDeep` past `max_depth` levels of arrays and objects, ValueError if it is
    not JSON. The document is walked only when it could need it (enough brackets for the depth
    to matter, or a surrogate escape), so an ordinary reply costs one `json.loads`.
    """
    try:
        # json.loads without its checks of arguments never passed (it runs per stream event);
        # a BOM still goes through it, for its own error.
        value = _DECODER.decode(text) if text[:1] != "\ufeff" else json.loads(text)
    except RecursionError:
        raise NestedTooDeep(max_depth) from None
    deep = text.count("[") + text.count("{") > max_depth
    # A surrogate comes from a \u escape or sits in the text (then it is not ASCII): test
    # those cheaply before the search (this runs once per stream event).
    if deep or (("\\u" in text or not text.isascii()) and _MAYBE_SURROGATE.search(text)):
        value = _clean(value, max_depth)
    return value


def _clean(value: Any, max_depth: int) -> Any:
    """Make every string (keys too) encodable, in place and without recursion; check depth."""
    if isinstance(value, str):
        return encodable(value)
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            if any(_SURROGATE.search(key) for key in node):
                fixed = {encodable(key): item for key, item in node.items()}
                node.clear()
                node.update(fixed)
            slots: Any = list(node.items())
        elif isinstance(node, list):
            slots = list(enumerate(node))
        else:
            continue
        if depth > max_depth:
            raise NestedTooDeep(max_depth)
        for slot, item in slots:
            if isinstance(item, str):
                node[slot] = encodable(item)
            elif isinstance(item, dict | list):
                pending.append((item, depth + 1))
    return value
