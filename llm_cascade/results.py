"""What a run reports: the `CascadeResult` (with one `Attempt` per entry or try), the options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .attempts import Attempt, Outcome, error_list
from .types import LlmResponse

__all__ = ["Attempt", "CascadeResult", "Outcome", "RunOptions", "error_list"]


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
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in r.tool_calls
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
    # A stream that broke after output: "restart", "continue" or "fail"; None: the cascade's
    # `on_midstream`, else the engine's default (restart).
    on_midstream: str | None = None
