"""Token and cost budgets per UTC day and month: pure checks against what was spent.

Spending is kept in SQLite per day and month as attempts are written (routestate.py), so
every process counts against the same budget. A check happens before a request is sent;
requests already in flight in other processes are not counted until they finish, so
concurrent runs may overshoot a budget by at most what those requests spend.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

LIMIT_KEYS = ("tokens_per_day", "tokens_per_month", "cost_per_day", "cost_per_month")


@dataclass(frozen=True, slots=True)
class Limits:
    """A budget: any of tokens or cost (currency units) per UTC day or month."""

    tokens_per_day: float | None = None
    tokens_per_month: float | None = None
    cost_per_day: float | None = None
    cost_per_month: float | None = None


@dataclass(frozen=True, slots=True)
class Exceeded:
    """The first limit reached: which, what was spent, and when it resets (epoch seconds)."""

    limit: str
    allowed: float
    spent: float
    resets_at: float

    def text(self, now: float) -> str:
        from .clock import format_human

        spent = f"{self.spent:g}" if self.limit.startswith("tokens") else f"{self.spent:.4g}"
        return (
            f"over its budget ({self.limit} = {self.allowed:g}, spent {spent});"
            f" resets at {format_human(self.resets_at)} (in {max(self.resets_at - now, 0):.0f} s)"
        )


def periods(now: float) -> tuple[str, str]:
    """The UTC day (`YYYY-MM-DD`) and month (`YYYY-MM`) of `now`, as the spend table keys them."""
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    return day, day[:7]


def resets(now: float) -> tuple[float, float]:
    """When the current UTC day and month end."""
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = start.timestamp() + 86400
    first = start.replace(day=1)
    month_end = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return day_end, month_end.timestamp()


def exceeded(limits: Limits, spent: Mapping[str, tuple[int, float]], now: float) -> Exceeded | None:
    """The limit of `limits` already reached, given (tokens, cost) `spent` per period."""
    day, month = periods(now)
    tokens_day, cost_day = spent.get(day, (0, 0.0))
    tokens_month, cost_month = spent.get(month, (0, 0.0))
    checks = (
        ("tokens_per_day", limits.tokens_per_day, tokens_day, 0),
        ("cost_per_day", limits.cost_per_day, cost_day, 0),
        ("tokens_per_month", limits.tokens_per_month, tokens_month, 1),
        ("cost_per_month", limits.cost_per_month, cost_month, 1),
    )
    reached = [c for c in checks if c[1] is not None and c[2] >= c[1]]
    if not reached:
        return None
    # The one that lasts longest (a month's) says when the budget frees up again.
    name, allowed, used, period = max(reached, key=lambda c: c[3])
    assert allowed is not None
    return Exceeded(name, allowed, used, resets(now)[period])
