"""What a run reports: one `Attempt` per entry (or try), the `CascadeResult`, the run options."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .types import LlmResponse

Outcome = Literal["ok", "failed", "retrying", "skipped", "missing_key", "deadline"]


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
    level: int | None = None  # consecutive failures, this one included
    latency_ms: int = 0
    try_number: int = 1
    probe: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The set fields, for JSON output and the saved prompt's `errors` list."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if v is not None}

    def error_text(self) -> str:
        """`<key>: <error>` as in the original's Failed entries list (§6.4)."""
        return f"{self.entry}: {self.detail}"


def error_list(attempts: list[Attempt]) -> list[dict[str, Any]]:
    """What each entry did short of answering: the saved prompt's `errors` list."""
    return [a.to_dict() for a in attempts if a.outcome != "ok"]


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """An answer and how it was reached."""

    response: LlmResponse
    cascade_name: str
    entry: str
    provider: str
    status: int
    latency_ms: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.response.text

    def to_dict(self) -> dict[str, Any]:
        """The `run --json` object."""
        r = self.response
        return {
            "ok": True,
            "text": r.text,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.parsed_arguments()}
                for c in r.tool_calls
            ],
            "cascade": self.cascade_name,
            "entry": self.entry,
            "provider": self.provider,
            "model": r.model,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "stop_reason": r.stop_reason,
            "latency_ms": self.latency_ms,
            "attempts": [a.to_dict() for a in self.attempts],
            "response": r.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-run behaviour on top of the config."""

    deadline_s: float | None = None  # whole-cascade budget; None: the cascade's `deadline`
    ignore_cooldown: bool = False
    wait_cooldown_s: float | None = None  # wait up to this long for the soonest cooling entry
