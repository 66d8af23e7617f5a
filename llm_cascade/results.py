"""What a run reports: the `CascadeResult` (with one `Attempt` per entry or try), the options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .attempts import Attempt, Outcome, error_list
from .routing import Route
from .types import LlmResponse

__all__ = ["Attempt", "CascadeResult", "Outcome", "Parsed", "RunOptions", "error_list"]


@dataclass(frozen=True, slots=True)
class Parsed:
    """The document of an answer that was asked for JSON: `value` as decoded and checked,
    `checked` what the caller's own check made of it (a pydantic model instance), else `value`."""

    value: Any
    checked: Any


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
    parsed: Parsed | None = None  # the checked document, when the conversation asked for JSON
    route: Route | None = None  # how the cascade's strategy ordered the entries (not `ordered`)

    @property
    def cost(self) -> float | None:
        """What the run's requests cost, when the entries that answered declare a price."""
        costs = [a.cost for a in self.attempts if a.cost is not None]
        return sum(costs) if costs else None

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
            "cost": self.cost,
            "attempts": [a.to_dict() for a in self.attempts],
            **({"route": self.route.to_dict()} if self.route is not None else {}),
            "response": r.to_dict(),
            **({"parsed": self.parsed.value} if self.parsed is not None else {}),
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
    # False: what was passed on cannot be taken back (a gateway's open response), so an entry
    # that could only start over is passed over instead of restarting the answer.
    can_restart: bool = True
    # The caller's own request settings, over every entry's (a gateway's client sets them).
    max_tokens: int | None = None
    temperature: float | None = None
    # Headers for entries of one provider type, e.g. {"anthropic": {"anthropic-beta": ...}}:
    # a gateway passes its client's vendor headers to the entries that speak that vendor.
    vendor_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Entry options for this run only (max_tokens, temperature, timeout...), over the config's.
    entry_options: Mapping[str, Any] = field(default_factory=dict)
    # A check of the decoded JSON document after the schema's (e.g. a pydantic model's
    # `model_validate`): a ValueError fails the entry over as `invalid_output`; what it
    # returns becomes `Parsed.checked`.
    output_check: Callable[[Any], Any] | None = None
