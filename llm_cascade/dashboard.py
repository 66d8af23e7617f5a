"""What `top` shows, read fresh from the shared state: a model without any drawing.

One row per entry (the config's, then any other the database knows): its breaker and the
countdown of its cooldown, an in-flight probe, its success rate and p50 latency over the last
hour (from the hour before this one on: whole hours, as `stats`), its latest error; and the
saved prompts waiting for a retry. Reading is cheap (aggregates, a few small tables), so a
dashboard can ask every second; a database that cannot be read is shown as a problem, not
raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import rollup
from .config import AppConfig, safe_url
from .errors import LlmCascadeError
from .failures import FailureStore
from .logsource import log_source, reads_fleet
from .state import configured_keys, opened
from .stats import TRIED, hour_start, percentile
from .store import EntryState, Phase
from .text import shorten
from .untrusted import escape_controls

BUSY_TIMEOUT_S = 0.5  # a locked database must not freeze a screen that refreshes every second
WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class EntryRow:
    entry: str
    in_config: bool
    phase: Phase
    failures: int
    cooldown_left: float | None  # seconds until the cooldown ends, while open
    probe_left: float | None  # seconds the probe lease has left, while probing
    attempts: int  # in the window
    success_rate: float | None
    p50_ms: float | None
    last_error: str | None  # one line, control characters escaped
    last_error_at: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    window_start: float
    rows: tuple[EntryRow, ...]
    pending_prompts: int
    database: Path
    has_database: bool
    problem: str | None = None  # why the database could not be read this time
    fleet: str | None = None  # where the fleet's log was read (the URL without its password)


def snapshot(config: AppConfig, now: float, *, local: bool = False) -> Snapshot:
    """The dashboard's state at `now`: the fleet's log when `[log]` puts it on PostgreSQL
    (unless `local`), else this host's."""
    hour, start = hour_start(now - WINDOW_S)
    states: dict[str, EntryState] = {}
    counted: list[rollup.Counts] = []
    histograms: dict[tuple[str, str, str, str], rollup.Histogram] = {}
    errors: dict[str, rollup.LatestError] = {}
    problem = None
    try:
        with (
            opened(config, busy_timeout_s=BUSY_TIMEOUT_S) as store,
            log_source(config, store, local=local) as log,
        ):
            if store is not None:
                states = {s.key: s for s in store.all_states()}
            counted = log.counts(hour)
            histograms = log.histograms(hour)
            errors = log.latest_errors()
    except LlmCascadeError as exc:
        problem = str(exc)
    listed = configured_keys(config)
    keys = list(dict.fromkeys([*listed, *states, *sorted({c.entry for c in counted})]))
    rows = tuple(
        _row(key, key in listed, states.get(key, EntryState(key)), counted, histograms, errors, now)
        for key in keys
    )
    return Snapshot(
        now,
        start,
        rows,
        FailureStore(config.failure_dir).count_waiting(),
        config.database_path,
        config.database_path.exists() or reads_fleet(config, local),
        problem,
        safe_url(config.log.server.url or "")
        if config.log.server is not None and reads_fleet(config, local)
        else None,
    )


def _row(
    key: str,
    in_config: bool,
    state: EntryState,
    counted: list[rollup.Counts],
    histograms: dict[tuple[str, str, str, str], rollup.Histogram],
    errors: dict[str, rollup.LatestError],
    now: float,
) -> EntryRow:
    mine = [c for c in counted if c.entry == key]
    attempts = sum(c.attempts for c in mine if c.outcome in TRIED)
    answered = sum(c.attempts for c in mine if c.outcome == "ok")
    merged: dict[int, int] = {}
    for (_, entry, metric, _), histogram in histograms.items():
        if entry == key and metric == "latency":
            for bucket, count in histogram.buckets.items():
                merged[bucket] = merged.get(bucket, 0) + count
    error = errors.get(key)
    phase = state.phase(now)
    probe_left = None
    if phase == "probing" and state.probe_until is not None:
        probe_left = state.probe_until - now
    return EntryRow(
        key,
        in_config,
        phase,
        state.failures,
        state.retry_after(now),
        probe_left,
        attempts,
        answered / attempts if attempts else None,
        percentile(rollup.Histogram(merged), 0.5),
        _error_text(error) if error else None,
        error.timestamp if error else None,
    )


def _error_text(error: rollup.LatestError) -> str:
    text = error.message or (f"HTTP {error.http_status}" if error.http_status else error.outcome)
    return shorten(escape_controls(" ".join(str(text or "error").split())), 120)
