"""What a run did, entry by entry, and the one text that sums up a run that got no answer.

A leaf module (it imports only the clock's formatting), so the exception tree can name
`Attempt` without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Literal

from .clock import json_time

Outcome = Literal[
    "ok",  # answered
    "failed",  # the provider failed; the rule decided what next
    "retrying",  # failed, and tried again in place
    "skipped",  # not sent: cooling down, or another process is probing it
    "missing_key",  # not sent: no API key
    "deadline",  # not sent, or cut short: the cascade deadline was spent
    "waited",  # not an entry's try: the run waited for this entry to cool down
    "undelivered",  # answered, but the answer could not reach its reader
    "truncated",  # a stream broke after output reached the caller
    "cancelled",  # the caller went away while the request was in flight: no verdict
    "hedged",  # cancelled: a hedged request to another entry answered first (no cooldown)
    "mirror",  # a background copy of the request, for comparison; never the answer
    "invalid_output",  # answered, but not with the JSON (or the schema) asked for
]
NOT_TRIED: frozenset[str] = frozenset({"skipped", "waited", "cancelled", "hedged", "mirror"})
CAPABILITY = "capability"  # the rule of a skip: the entry cannot serve this request
BUDGET = "budget"  # the rule of a skip: the entry spent its budget for the day or month


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened to one entry (or one try of it), for --explain, --json and the log."""

    entry: str
    outcome: Outcome
    detail: str = ""
    status: int | None = None
    kind: str | None = None
    rule: str | None = None
    cooldown_until: float | None = None
    cooldown_s: float | None = None  # the cooldown this failure set, as decided
    level: int | None = None  # consecutive failures, this one included
    latency_ms: int = 0
    try_number: int = 1
    probe: bool = False
    stopped: bool = False  # its rule's action stopped the cascade here
    note: str | None = None  # e.g. a cooldown that --ignore-cooldown overrode
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttft_ms: int | None = None  # streams: milliseconds to the first content event
    chunks: int | None = None  # streams: content events received
    partial: str | None = None  # streams: the text shown before it broke (saved with the prompt)
    cost: float | None = None  # currency units, when the entry declares a price

    @property
    def cooling(self) -> bool:
        """Skipped because its breaker is open or another process probes it."""
        return self.outcome == "skipped" and self.rule not in (CAPABILITY, BUDGET)

    def to_dict(self) -> dict[str, Any]:
        """The set fields, for JSON output and the saved prompt's `errors` list (instants in
        RFC 3339, as every JSON output has them)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["cooldown_until"] = json_time(self.cooldown_until)
        return {k: v for k, v in values.items() if v is not None and v is not False}

    def error_text(self) -> str:
        """`<key>: <error>`, as one item of the `Failed entries:` list."""
        return f"{self.entry}: {self.detail}"


def error_list(attempts: Iterable[Attempt]) -> list[dict[str, Any]]:
    """What each entry did short of answering: the saved prompt's `errors` list."""
    return [a.to_dict() for a in attempts if a.outcome != "ok"]


def failure_summary(attempts: Iterable[Attempt]) -> str:
    """The original's text for a run with no answer: the skipped entries, then each failure.

    `Skipped (on cooldown): a/x, b/y` and `Failed entries: c/z: HTTP 500: oops; ...`, each
    line only when it has something to list; entries that could not serve the request at all
    (`Skipped (cannot serve this request): ...`) come first.
    """
    done = list(attempts)
    unfit = [a.error_text() for a in done if a.outcome == "skipped" and a.rule == CAPABILITY]
    spent = [a.error_text() for a in done if a.outcome == "skipped" and a.rule == BUDGET]
    skipped = list(dict.fromkeys(a.entry for a in done if a.cooling))
    failed = [a.error_text() for a in done if a.outcome not in (*NOT_TRIED, "retrying", "ok")]
    lines = []
    if unfit:
        lines.append(f"Skipped (cannot serve this request): {'; '.join(unfit)}")
    if spent:
        lines.append(f"Skipped (over budget): {'; '.join(spent)}")
    if skipped:
        lines.append(f"Skipped (on cooldown): {', '.join(skipped)}")
    if failed or not (skipped or unfit or spent):
        lines.append(f"Failed entries: {'; '.join(failed) or 'none were tried'}")
    return "\n".join(lines)
