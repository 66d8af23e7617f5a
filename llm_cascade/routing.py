"""Which entry a run tries first: the cascade's strategy applied to what the shared state knows.

Pure functions. The engine passes one `Candidate` per entry (its weight, price, whether it can
be tried now, and the `RouteStats` SQLite keeps for it as attempts are written) with a random
source and the time; `route` returns the order to try the entries in and, per entry, the
numbers behind its place (`--explain`, `run --json`).

- `ordered`: the configured order.
- `weighted`: the first entry is drawn by effective weight (its weight, less a failure
  penalty that decays) among the entries that can be tried; the rest follow by that weight.
- `latency`: lowest recent latency first (time to first token for streams, when known).
- `cost`: cheapest estimated request first; entries without a price last.
- `score`: the weighted sum of reliability, latency and cost, each scaled to 0..1.

Entries with no data yet are explored: they rank as the best of the known ones would
(latency, score), so one request is enough to place them. Entries that cannot be tried now
(cooling, over budget) go last in every strategy but `ordered`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("ordered", "weighted", "latency", "cost", "score")
SCORE_PARTS = ("reliability", "latency", "cost")
DEFAULT_SCORE_WEIGHTS: Mapping[str, float] = {"reliability": 0.5, "latency": 0.3, "cost": 0.2}
EWMA_ALPHA = 0.3  # the weight of the newest observation in the moving averages
PENALTY_STEP = 0.5  # a failure adds this share of what is left below 1; a success halves it
PENALTY_RECOVERY_S = 300.0  # a full penalty (1.0) decays to nothing in this time, linearly
MIN_SHARE = 0.05  # a penalised entry keeps this share of its weight: it is still sampled
PER_MILLION = 1_000_000
EXPECTED_OUTPUT_TOKENS = 512  # the answer's size for a cost estimate, without max_tokens


@dataclass(frozen=True, slots=True)
class Price:
    """Currency units per million tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """The cost of a request with these token counts; None when neither is known."""
        if input_tokens is None and output_tokens is None:
            return None
        return ((input_tokens or 0) * self.input + (output_tokens or 0) * self.output) / PER_MILLION


def estimated_cost(price: Price | None, input_tokens: int, max_tokens: int | None) -> float | None:
    """What a request of `input_tokens` is expected to cost (None without a price): the
    answer taken as `max_tokens` long, else EXPECTED_OUTPUT_TOKENS."""
    if price is None:
        return None
    return price.cost(input_tokens, max_tokens or EXPECTED_OUTPUT_TOKENS)


@dataclass(frozen=True, slots=True)
class RouteStats:
    """What the shared state knows of one entry (kept by SQLite as attempts are written)."""

    verdicts: int = 0  # answers and failures counted
    latency_ms: float | None = None  # moving average of answered latency
    ttft_ms: float | None = None  # moving average of time to first token (streams)
    success: float | None = None  # moving average of 1 (answered) / 0 (failed)
    penalty: float = 0.0  # as of `penalty_at`
    penalty_at: float | None = None  # epoch seconds

    def penalty_now(self, now: float) -> float:
        """The failure penalty decayed to `now`."""
        return decayed(self.penalty, self.penalty_at, now)


def decayed(penalty: float, since: float | None, now: float) -> float:
    """`penalty` set at `since`, after linear decay until `now` (never below 0)."""
    if since is None:
        return penalty
    return max(penalty - max(now - since, 0.0) / PENALTY_RECOVERY_S, 0.0)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One entry as a strategy sees it."""

    key: str
    weight: float = 1.0
    stats: RouteStats = field(default_factory=RouteStats)
    cost: float | None = None  # estimated cost of this request; None: no price declared
    available: bool = True  # False: cooling or over budget, it will be skipped


@dataclass(frozen=True, slots=True)
class Ranked:
    """An entry's place and the numbers behind it."""

    key: str
    numbers: Mapping[str, Any]
    note: str = ""  # e.g. "drawn", "no data yet: explored", "cannot be tried now"

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.key, **self.numbers, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True, slots=True)
class Route:
    """The order a run tries its entries in, and why."""

    strategy: str
    ranked: tuple[Ranked, ...]

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(r.key for r in self.ranked)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "ranking": [r.to_dict() for r in self.ranked]}


def route(
    strategy: str,
    candidates: Sequence[Candidate],
    *,
    now: float,
    rng: random.Random,
    streaming: bool = False,
    score_weights: Mapping[str, float] = DEFAULT_SCORE_WEIGHTS,
) -> Route:
    """The order to try `candidates` in under `strategy` (one of STRATEGIES)."""
    if strategy == "ordered":
        return Route(strategy, tuple(Ranked(c.key, {}) for c in candidates))
    if strategy == "weighted":
        return Route(strategy, _weighted(candidates, now, rng))
    if strategy == "latency":
        return Route(strategy, _by_latency(candidates, now, streaming))
    if strategy == "cost":
        return Route(strategy, _by_cost(candidates))
    if strategy == "score":
        return Route(strategy, _by_score(candidates, now, streaming, score_weights))
    raise ValueError(f"unknown strategy {strategy!r}")


def effective_weight(c: Candidate, now: float) -> float:
    """The weight less the decayed failure penalty (never below MIN_SHARE of it)."""
    return c.weight * max(1.0 - c.stats.penalty_now(now), MIN_SHARE)


def _weighted(
    candidates: Sequence[Candidate], now: float, rng: random.Random
) -> tuple[Ranked, ...]:
    penalties = {c.key: c.stats.penalty_now(now) for c in candidates}
    weights = {c.key: c.weight * max(1.0 - penalties[c.key], MIN_SHARE) for c in candidates}
    pool = [c for c in candidates if c.available]
    total = sum(weights[c.key] for c in pool)
    drawn = None
    point = rng.random() * total
    for c in pool:
        drawn = c
        point -= weights[c.key]
        if point < 0:
            break
    rest = sorted(
        (c for c in candidates if c is not drawn), key=lambda c: (not c.available, -weights[c.key])
    )
    ordered = [drawn, *rest] if drawn is not None else rest
    return tuple(
        Ranked(
            c.key,
            {
                "weight": c.weight,
                "penalty": round(penalties[c.key], 3),
                "effective_weight": round(weights[c.key], 3),
                "share": round(weights[c.key] / total, 3) if c.available and total else 0.0,
            },
            "drawn" if c is drawn else _unavailable(c),
        )
        for c in ordered
    )


def _latency_of(c: Candidate, streaming: bool) -> tuple[float | None, str]:
    """The latency a strategy compares: time to first token for streams when known."""
    if streaming and c.stats.ttft_ms is not None:
        return c.stats.ttft_ms, "ttft_ms"
    return c.stats.latency_ms, "latency_ms"


def _by_latency(candidates: Sequence[Candidate], now: float, streaming: bool) -> tuple[Ranked, ...]:
    def place(c: Candidate) -> tuple[bool, int, float]:
        value, _ = _latency_of(c, streaming)
        if c.stats.verdicts == 0:
            return (not c.available, 0, 0.0)  # explored first
        return (not c.available, 1, value if value is not None else float("inf"))

    out = []
    for c in sorted(candidates, key=place):
        value, metric = _latency_of(c, streaming)
        numbers = {metric: None if value is None else round(value, 1)}
        numbers["penalty"] = round(c.stats.penalty_now(now), 3)
        out.append(Ranked(c.key, numbers, _unavailable(c) or _explored(c)))
    return tuple(out)


def _by_cost(candidates: Sequence[Candidate]) -> tuple[Ranked, ...]:
    def place(c: Candidate) -> tuple[bool, bool, float]:
        return (not c.available, c.cost is None, c.cost or 0.0)

    return tuple(
        Ranked(
            c.key,
            {"estimated_cost": c.cost},
            _unavailable(c) or ("" if c.cost is not None else "no price declared"),
        )
        for c in sorted(candidates, key=place)
    )


def _scale(values: Mapping[str, float | None]) -> Callable[[str], float]:
    """1 for the lowest known value, 0 for the highest, linear between; 1 when unknown
    (explored) or when all known values are equal."""
    known = [v for v in values.values() if v is not None]
    low = min(known, default=0.0)
    span = max(known, default=0.0) - low

    def scaled(key: str) -> float:
        value = values[key]
        return 1.0 if value is None or span <= 0 else 1.0 - (value - low) / span

    return scaled


def _by_score(
    candidates: Sequence[Candidate],
    now: float,
    streaming: bool,
    weights: Mapping[str, float],
) -> tuple[Ranked, ...]:
    total_weight = sum(weights.get(p, 0.0) for p in SCORE_PARTS)
    w_rel, w_lat, w_cost = (weights.get(p, 0.0) / total_weight for p in SCORE_PARTS)
    latency = _scale({c.key: _latency_of(c, streaming)[0] for c in candidates})
    cost = _scale({c.key: c.cost for c in candidates})
    scored = []
    for c in candidates:
        success = 1.0 if c.stats.success is None else c.stats.success
        parts = (success * (1.0 - c.stats.penalty_now(now)), latency(c.key), cost(c.key))
        score = w_rel * parts[0] + w_lat * parts[1] + w_cost * parts[2]
        scored.append((c, score, parts))
    scored.sort(key=lambda item: (not item[0].available, -item[1]))
    return tuple(
        Ranked(
            c.key,
            {
                "score": round(score, 4),
                "reliability_score": round(parts[0], 3),
                "latency_score": round(parts[1], 3),
                "cost_score": round(parts[2], 3),
            },
            _unavailable(c) or _explored(c),
        )
        for c, score, parts in scored
    )


def _unavailable(c: Candidate) -> str:
    return "" if c.available else "cannot be tried now"


def _explored(c: Candidate) -> str:
    return "no data yet: explored" if c.stats.verdicts == 0 else ""
