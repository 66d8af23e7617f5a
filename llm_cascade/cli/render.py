"""How results and failures look: plain text, --json objects and --explain lines."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .. import untrusted
from ..attempts import CAPABILITY
from ..cascade import Attempt, CascadeResult
from ..clock import format_human
from ..errors import CascadeFailed
from ..routing import Route
from ..types import LlmResponse

_UNESCAPED_CONTROL = re.compile("[\x7f-\x9f]")  # json.dumps escapes only C0


def dumps(data: Any) -> str:
    """Pretty JSON as the original prints it: 2-space indent, non-ASCII kept.

    DEL and C1 controls are written as `\\u0080`-style escapes (the same JSON), so no JSON we
    print can drive a terminal.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _UNESCAPED_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def compact_dumps(data: Any) -> str:
    """One line of JSON (NDJSON), escaped like `dumps`."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return _UNESCAPED_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shown_text(text: str, *, terminal: bool) -> str:
    """A piece of answer text as `answer_text` would show it."""
    return untrusted.escape_controls(text) if terminal else text


class StreamedText:
    """Stream pieces as `shown_text` shows them, for a terminal: a CR that ends one piece is
    held back until the next says whether it starts a CRLF line end (kept) or not (escaped)."""

    def __init__(self, *, terminal: bool) -> None:
        self.terminal = terminal
        self._held = ""

    def feed(self, text: str) -> str:
        if not self.terminal:
            return text
        text, self._held = self._held + text, ""
        if text.endswith("\r"):
            text, self._held = text[:-1], "\r"
        return shown_text(text, terminal=True)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return shown_text(held, terminal=self.terminal)


def answer_text(response: LlmResponse, *, terminal: bool = False) -> str:
    """stdout for a plain run: the text, or the whole response as JSON if it calls tools.

    The text is the user's data and goes out byte for byte, except to a `terminal`, which
    gets control characters other than tab, newline and CRLF escaped (`\\x1b`): an answer must
    not be able to clear the screen, retitle the window or write the clipboard.
    """
    if response.tool_calls:
        return dumps(response.to_dict())
    return shown_text(response.text, terminal=terminal)


def result_text(result: CascadeResult, *, terminal: bool = False) -> str:
    """stdout for a plain run: the checked JSON document when one was asked for (`--schema`),
    else the answer as `answer_text` shows it."""
    if result.parsed is not None:
        return dumps(result.parsed.value)
    return answer_text(result.response, terminal=terminal)


def failure_json(exc: CascadeFailed) -> dict[str, Any]:
    return {
        "ok": False,
        "outcome": exc.outcome,
        "cascade": exc.cascade_name,
        "error": exc.message,
        "saved_to": exc.saved.path,
        "save_error": exc.saved.error,
        "retry_after": exc.retry_after_s,
        "attempts": [a.to_dict() for a in exc.attempts],
        **({"route": exc.route.to_dict()} if exc.route is not None else {}),
    }


def failure_hint(exc: CascadeFailed, now: float, wait_s: float | None = None) -> str | None:
    """One line telling a user stuck behind cooldowns when to come back and how not to wait.

    `wait_s` is the run's --wait-cooldown: when it was given, offering it again is no help;
    say how long the wait would have had to be."""
    considered = [a for a in exc.attempts if a.outcome != "skipped" or a.cooling]
    if not considered or any(not a.cooling for a in considered):
        return None
    if exc.retry_after_s is None:
        return None
    when = format_human(now + exc.retry_after_s)
    if wait_s is None:
        return (
            f"Every entry is cooling down; the first frees up at {when}"
            f" (in {exc.retry_after_s:.0f} s). Use --wait-cooldown to wait for it or"
            " --ignore-cooldown to try anyway."
        )
    needed = math.ceil(exc.retry_after_s)
    if needed > wait_s:
        return (
            f"Every entry is cooling down and --wait-cooldown {wait_s:g} was too short: the first"
            f" entry frees up in {needed} s (at {when}). Wait at least that long, or use"
            " --ignore-cooldown to try anyway."
        )
    # Long enough, yet the wait stopped: the deadline came first, or the wait was spent.
    return (
        f"Every entry is still cooling down; the first frees up at {when} (in {needed} s),"
        " after the cascade deadline or the --wait-cooldown time left. Use --ignore-cooldown"
        " to try anyway."
    )


def explain(cascade: str, attempts: list[Attempt], route: Route | None = None) -> list[str]:
    """The strategy's ranking (when not `ordered`), then per entry: what happened and why
    (run --explain)."""
    lines = [f"explain: cascade '{cascade}'"]
    if route is not None:
        lines.append(f"  strategy {route.strategy}:")
        ranked = route.ranked
        width = max((len(r.key) for r in ranked), default=0)
        for place, r in enumerate(ranked, 1):
            numbers = ", ".join(f"{k} {_number(v)}" for k, v in r.numbers.items())
            note = f" ({r.note})" if r.note else ""
            lines.append(f"    {place}. {r.key:<{width}}  {numbers}{note}")
    width = max((len(a.entry) for a in attempts), default=0)
    for a in attempts:
        lines.append(f"  {a.entry:<{width}}  {_explain_one(a)}")
    return lines


def _number(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _explain_one(a: Attempt) -> str:
    note = f" ({a.note})" if a.note else ""
    tag = f"try {a.try_number}: " if a.try_number > 1 or a.outcome == "retrying" else ""
    probe = "probe, " if a.probe else ""
    if a.outcome == "ok":
        tokens = (
            f", tokens {a.input_tokens}/{a.output_tokens}" if a.input_tokens is not None else ""
        )
        streamed = (
            f", first token after {a.ttft_ms} ms, {a.chunks} chunks"
            if a.ttft_ms is not None
            else ""
        )
        cost = f", cost {a.cost:.6g}" if a.cost is not None else ""
        return (
            f"{tag}{probe}answered in {a.latency_ms} ms (HTTP {a.status}{streamed}){tokens}"
            f"{cost}{note}"
        )
    if a.outcome == "skipped" and a.rule == CAPABILITY:
        return f"skipped, cannot serve this request: {a.detail}"
    if a.outcome == "skipped":
        return f"skipped: {a.detail}"
    if a.outcome == "waited":
        return f"waited {seconds_text(a.latency_ms / 1000)} for it to cool down (--wait-cooldown)"
    if a.outcome == "missing_key":
        return f"not tried: {a.detail}"
    if a.outcome in ("deadline", "undelivered"):
        return f"{tag}stopped: {a.detail}"
    if a.outcome == "cancelled":
        return f"{tag}cancelled by the caller after {a.latency_ms} ms"
    if a.outcome == "hedged":
        return f"{tag}hedged: cancelled after {a.latency_ms} ms, another entry answered first"
    if a.outcome == "truncated":
        broke = f"broke mid-stream after {a.chunks} chunks (first token after {a.ttft_ms} ms)"
        return f"{tag}{probe}{broke}: {a.detail} [rule {a.rule}] -> {_after_failure(a)}{note}"
    after = "retrying" if a.outcome == "retrying" else _after_failure(a)
    return f"{tag}{probe}tried: {a.detail} [rule {a.rule}] -> {after} ({a.latency_ms} ms){note}"


def _after_failure(a: Attempt) -> str:
    """What the failure set and where the cascade went: `cooldown 30 s ..., next entry`."""
    then = "cascade stopped (the rule's action is stop)" if a.stopped else "next entry"
    if a.cooldown_s is None:
        return f"no cooldown, {then}"
    until = f" until {format_human(a.cooldown_until)}" if a.cooldown_until is not None else ""
    level = f", level {a.level}" if a.level else ""
    return f"cooldown {seconds_text(a.cooldown_s)}{until}{level}, {then}"


def seconds_text(seconds: float) -> str:
    """`30 s`, `1.5 s`, `0.25 s`: a duration as it was set, without false precision."""
    return f"{round(seconds, 3):g} s"


def result_json(result: CascadeResult) -> str:
    return dumps(result.to_dict())
