"""How results and failures look: plain text, --json objects and --explain lines."""

from __future__ import annotations

import json
import math
from typing import Any

from ..cascade import Attempt, CascadeResult
from ..clock import format_human
from ..errors import CascadeFailed
from ..types import LlmResponse


def dumps(data: Any) -> str:
    """Pretty JSON as the original prints it: 2-space indent, non-ASCII kept."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def answer_text(response: LlmResponse) -> str:
    """stdout for a plain run: the text, or the whole response as JSON if it calls tools."""
    if response.tool_calls:
        return dumps(response.to_dict())
    return response.text


def failure_json(exc: CascadeFailed) -> dict[str, Any]:
    return {
        "ok": False,
        "cascade": exc.cascade_name,
        "error": exc.message,
        "saved_to": exc.saved.path,
        "save_error": exc.saved.error,
        "retry_after": exc.retry_after_s,
        "attempts": [a.to_dict() for a in exc.attempts],
    }


def failure_hint(exc: CascadeFailed, now: float, wait_s: float | None = None) -> str | None:
    """One line telling a user stuck behind cooldowns when to come back and how not to wait.

    `wait_s` is the run's --wait-cooldown: when it was given, offering it again is no help;
    say how long the wait would have had to be."""
    if not exc.attempts or any(a.outcome != "skipped" for a in exc.attempts):
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


def explain(cascade: str, attempts: list[Attempt], now: float) -> list[str]:
    """Per entry: what happened and why (run --explain)."""
    lines = [f"explain: cascade '{cascade}'"]
    width = max((len(a.entry) for a in attempts), default=0)
    for a in attempts:
        lines.append(f"  {a.entry:<{width}}  {_explain_one(a, now)}")
    return lines


def _explain_one(a: Attempt, now: float) -> str:
    tag = f"try {a.try_number}: " if a.try_number > 1 or a.outcome == "retrying" else ""
    probe = "probe, " if a.probe else ""
    if a.outcome == "ok":
        tokens = (
            f", tokens {a.input_tokens}/{a.output_tokens}" if a.input_tokens is not None else ""
        )
        return f"{tag}{probe}answered in {a.latency_ms} ms (HTTP {a.status}){tokens}"
    if a.outcome == "skipped":
        return f"skipped: {a.detail}"
    if a.outcome == "missing_key":
        return f"not tried: {a.detail}"
    if a.outcome == "deadline":
        return f"{tag}stopped: {a.detail}"
    after = "retrying" if a.outcome == "retrying" else _cooldown_text(a, now)
    return f"{tag}{probe}tried: {a.detail} [rule {a.rule}] -> {after} ({a.latency_ms} ms)"


def _cooldown_text(a: Attempt, now: float) -> str:
    if a.cooldown_until is None:
        return "no cooldown, next entry"
    seconds = max(a.cooldown_until - now, 0)
    return f"cooldown {seconds:.0f} s until {format_human(a.cooldown_until)} (level {a.level})"


def result_json(result: CascadeResult) -> str:
    return dumps(result.to_dict())
