"""`stats`: per cascade and entry over a window, from the hourly aggregates (`rollup.py`).

Windows are whole UTC hours: `--since 24h` starts at the top of the hour 24 hours ago, so a
window reads a few hundred aggregate rows however many attempts it holds. Percentiles are
read from histograms whose buckets are exact below 10 ms and about 9 % wide above.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import rollup
from .clock import format_ts, parse_ts
from .config import AppConfig
from .errors import UsageError
from .logsource import LogSource, fleet_log, log_source, reads_fleet
from .routing import Price
from .state import opened
from .store import EntryState, Phase, Store

# Outcomes of a row that went to a provider (or was cut short there by the deadline).
TRIED = frozenset({"ok", "failed", "retrying", "deadline"})
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SPAN_S = 100 * 365 * 86400.0


def parse_since(text: str, now: float) -> float:
    """The start of a window: `90m`, `24h`, `7d`, `2w`, or a date or time (UTC unless it says
    otherwise) such as `2026-01-31` or `2026-01-31T12:00`. Raises UsageError."""
    match = _SPAN.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
        if seconds <= MAX_SPAN_S:
            return now - seconds
    elif re.match(r"^\s*\d{4}-\d\d-\d\d", text):
        moment = parse_ts(text.strip().replace(" ", "T", 1))
        if moment is not None and 0 <= moment <= now + MAX_SPAN_S:
            return moment
    raise UsageError(
        f"--since: expected a span like 24h, 7d or 90m, or a date like 2026-01-31, got {text!r}"
    )


def hour_start(epoch: float) -> tuple[str, float]:
    """The UTC hour holding `epoch`, as the aggregates name it, and as an instant."""
    hour = format_ts(max(epoch, 0.0))[:13]
    return hour, parse_ts(f"{hour}:00:00+00:00") or 0.0


def percentile(histogram: rollup.Histogram, q: float) -> float | None:
    """The q-quantile (0 < q ≤ 1) of a millisecond histogram, interpolated in its bucket."""
    total = histogram.count
    if total == 0:
        return None
    rank = max(math.ceil(q * total), 1)
    seen = 0
    for index in sorted(histogram.buckets):
        count = histogram.buckets[index]
        if seen + count >= rank:
            upper = rollup.MS_BOUNDS[index]
            lower = rollup.MS_BOUNDS[index - 1] if index else upper
            if upper == rollup.OVERFLOW:  # past the last bound: say so, not a made-up number
                return float(lower)
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return None  # pragma: no cover - the loop always reaches the rank


@dataclass(frozen=True, slots=True)
class EntryStats:
    """One entry of one cascade over the window."""

    cascade: str
    entry: str
    in_config: bool
    state: Phase
    attempts: int = 0  # tries sent (or cut short by the deadline)
    successes: int = 0
    skipped: int = 0
    failovers: int = 0
    cooldowns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # p50, p95, p99
    ttft_ms: dict[str, float | None] = field(default_factory=dict)  # p50, p95 (streams only)
    cost: float | None = None  # the window's tokens at the entry's configured price

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.attempts if self.attempts else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "in_config": self.in_config,
            "attempts": self.attempts,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "skipped": self.skipped,
            "failovers": self.failovers,
            "cooldowns": self.cooldowns,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms or None,
            "cost": self.cost,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class CascadeStats:
    """A cascade's entries and its runs over the window."""

    name: str
    in_config: bool
    entries: tuple[EntryStats, ...]
    runs: int = 0
    answered: int = 0
    first_answered: int = 0  # answered by the cascade's first entry

    @property
    def failed(self) -> int:
        """Runs no entry answered (a run still going counts until it answers)."""
        return self.runs - self.answered

    def to_dict(self) -> dict[str, Any]:
        return {
            "cascade": self.name,
            "in_config": self.in_config,
            "runs": self.runs,
            "answered": self.answered,
            "answered_by_first_entry": self.first_answered,
            "failed": self.failed,
            "entries": [e.to_dict() for e in self.entries],
        }


@dataclass(frozen=True, slots=True)
class StatsReport:
    since: float  # the window's start: the top of an hour
    until: float
    cascades: tuple[CascadeStats, ...]
    has_database: bool

    @property
    def has_ttft(self) -> bool:
        return any(e.ttft_ms for c in self.cascades for e in c.entries)

    @property
    def has_cost(self) -> bool:
        return any(e.cost is not None for c in self.cascades for e in c.entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": format_ts(self.since),
            "until": format_ts(self.until),
            "cascades": [c.to_dict() for c in self.cascades],
        }


def collect(
    config: AppConfig, since: float, now: float, cascade: str | None = None, *, local: bool = False
) -> StatsReport:
    """Stats of every cascade (or one) from the hour holding `since` until now.

    The fleet's log when `[log]` puts it on PostgreSQL (unless `local`), else this host's.
    A cascade the config does not define is shown if the log knows it (it was renamed);
    one neither knows is a UsageError. No database yet: every entry with nothing counted.
    """
    hour, start = hour_start(since)
    with opened(config) as store, log_source(config, store, local=local) as log:
        _check_cascade(config, cascade, log)
        report = _report(config, log, _states(store), (hour, start), now, cascade)
    return replace(report, has_database=store is not None or reads_fleet(config, local))


@dataclass(frozen=True, slots=True)
class HostsReport:
    """`stats --by-host`: each host's part of the fleet's log ('' for the sums folded before
    hosts were kept apart), as `collect` reports the whole."""

    since: float
    until: float
    hosts: tuple[tuple[str, StatsReport], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": format_ts(self.since),
            "until": format_ts(self.until),
            "hosts": [
                {"host": host or None, "cascades": part.to_dict()["cascades"]}
                for host, part in self.hosts
            ],
        }


def collect_by_host(
    config: AppConfig, since: float, now: float, cascade: str | None = None, *, local: bool = False
) -> HostsReport:
    """Each host's stats from the fleet's log: the cascades it logged in the window (or
    `cascade`), the hosts that logged any. UsageError without a fleet's log or with `local`."""
    if local:
        raise UsageError("--by-host reads the fleet's log: it cannot go with --local")
    if not reads_fleet(config, local):
        raise UsageError(
            "--by-host needs the fleet's log ([log] backend = \"postgres\"): this host's"
            " SQLite log holds its own rows only"
        )
    hour, start = hour_start(since)
    with opened(config) as store, fleet_log(config) as fleet:
        _check_cascade(config, cascade, fleet)
        states = _states(store)
        hosts = tuple(
            (
                host,
                _report(
                    config, fleet.of_host(host), states, (hour, start), now, cascade, logged=True
                ),
            )
            for host in fleet.hosts(hour, cascade)
        )
    return HostsReport(start, now, hosts)


def _states(store: Store | None) -> dict[str, EntryState]:
    return {} if store is None else {s.key: s for s in store.all_states()}


def _check_cascade(config: AppConfig, cascade: str | None, log: LogSource) -> None:
    """A cascade neither the config nor the log knows is a UsageError."""
    if cascade is None or cascade in config.cascades or cascade in log.cascades_seen():
        return
    defined = ", ".join(sorted(config.cascades)) or "none"
    raise UsageError(f"Cascade '{cascade}' not found in configuration (defined: {defined})")


def _report(
    config: AppConfig,
    log: LogSource,
    states: Mapping[str, EntryState],
    window: tuple[str, float],
    now: float,
    cascade: str | None,
    *,
    logged: bool = False,
) -> StatsReport:
    """The stats of `log` from the hour `window` names (and starts at): every configured
    cascade and those the log knows (`logged`: only those it counted in the window)."""
    hour, start = window
    counted = log.counts(hour, cascade)
    histograms = log.histograms(hour, cascade)
    names = [cascade] if cascade is not None else _cascade_names(config, counted)
    if logged:
        names = [n for n in names if any(c.cascade == n for c in counted)]
    cascades = tuple(_cascade(config, name, counted, histograms, states, now) for name in names)
    return StatsReport(start, now, cascades, True)


def _cascade_names(config: AppConfig, counted: Iterable[rollup.Counts]) -> list[str]:
    return list(dict.fromkeys([*config.cascades, *sorted({c.cascade for c in counted})]))


def _cascade(
    config: AppConfig,
    name: str,
    counted: list[rollup.Counts],
    histograms: Mapping[tuple[str, str, str, str], rollup.Histogram],
    states: Mapping[str, EntryState],
    now: float,
) -> CascadeStats:
    configured = config.cascades.get(name)
    mine = [c for c in counted if c.cascade == name]
    listed = [e.key for e in configured.entries] if configured else []
    configured_entries = (*configured.entries, *configured.mirror) if configured else ()
    prices = {e.key: e.price for e in configured_entries if e.price is not None}
    keys = list(dict.fromkeys([*listed, *sorted({c.entry for c in mine})]))
    entries = tuple(
        _entry(
            name,
            key,
            key in listed,
            [c for c in mine if c.entry == key],
            histograms,
            states.get(key, EntryState(key)).phase(now),
            prices.get(key),
        )
        for key in keys
    )
    return CascadeStats(
        name,
        configured is not None,
        entries,
        runs=sum(c.runs for c in mine),
        answered=sum(c.answered_runs for c in mine),
        first_answered=sum(c.first_answered for c in mine),
    )


def _entry(
    cascade: str,
    key: str,
    in_config: bool,
    rows: list[rollup.Counts],
    histograms: Mapping[tuple[str, str, str, str], rollup.Histogram],
    state: Phase,
    price: Price | None = None,
) -> EntryStats:
    latency = histograms.get((cascade, key, "latency", ""))
    ttft = histograms.get((cascade, key, "ttft", ""))
    tokens_in = sum(r.input_tokens for r in rows)
    tokens_out = sum(r.output_tokens for r in rows)
    return EntryStats(
        cascade,
        key,
        in_config,
        state,
        attempts=sum(r.attempts for r in rows if r.outcome in TRIED),
        successes=sum(r.attempts for r in rows if r.outcome == "ok"),
        skipped=sum(r.attempts for r in rows if r.outcome == "skipped"),
        failovers=sum(r.failovers for r in rows),
        cooldowns=sum(r.cooldowns for r in rows),
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        latency_ms=_quantiles(latency, (0.5, 0.95, 0.99)),
        ttft_ms=_quantiles(ttft, (0.5, 0.95)) if ttft and ttft.count else {},
        cost=price.cost(tokens_in, tokens_out) if price is not None else None,
    )


def _quantiles(histogram: rollup.Histogram | None, qs: Iterable[float]) -> dict[str, float | None]:
    return {f"p{round(q * 100)}": (percentile(histogram, q) if histogram else None) for q in qs}
