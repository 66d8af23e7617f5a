"""What routing and budgets read, kept by SQLite itself as attempts are written.

- `entry_route`: per entry, moving averages of answered latency, time to first token and
  success (1 answered, 0 failed), and a failure penalty that decays linearly with time
  (constants in routing.py). A run reads one row per entry, never the attempt log.
- `spend`: tokens and cost per UTC day (`YYYY-MM-DD`) and month (`YYYY-MM`), per cascade and
  per entry: what budgets are checked against.

Triggers on `attempt_log` fold each new row in, in the inserting transaction, so every
process's rows count (the original tool's too: a row without an outcome is read by its
status, as rollup.py reads it). A database migrated with rows already logged starts the
averages from the all-time aggregates and the spending from the rows of this month.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from .rollup import OUTCOME
from .routing import EWMA_ALPHA, PENALTY_RECOVERY_S, PENALTY_STEP, RouteStats

VERDICTS = ("ok", "failed", "retrying", "invalid_output", "truncated")
_VERDICT_LIST = ", ".join(f"'{v}'" for v in VERDICTS)

SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS entry_route (provider_model TEXT PRIMARY KEY,"
    " verdicts INTEGER NOT NULL DEFAULT 0, latency_ms REAL, ttft_ms REAL, success REAL,"
    " penalty REAL NOT NULL DEFAULT 0, penalty_at REAL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS spend (period TEXT NOT NULL, scope TEXT NOT NULL,"
    " name TEXT NOT NULL, tokens INTEGER NOT NULL DEFAULT 0, cost REAL NOT NULL DEFAULT 0,"
    " PRIMARY KEY (period, scope, name)) WITHOUT ROWID",
)
ROUTE_TRIGGER = "attempt_log_route"
SPEND_TRIGGER = "attempt_log_spend"


def _ewma(column: str) -> str:
    return (
        f"{column} = CASE WHEN excluded.{column} IS NULL THEN {column}"
        f" WHEN {column} IS NULL THEN excluded.{column}"
        f" ELSE {column} + {EWMA_ALPHA} * (excluded.{column} - {column}) END"
    )


# The penalty decayed to the new row's time, then raised by a failure or halved by an
# answer. Its time is a Julian day number (a timestamp SQLite cannot read gives none, and
# does not decay it): no text to parse when a run reads it.
_DECAYED = (
    "MAX(penalty - MAX(COALESCE(excluded.penalty_at - penalty_at, 0), 0)"
    f" * 86400.0 / {PENALTY_RECOVERY_S}, 0.0)"
)
JULIAN_EPOCH = 2440587.5  # the Julian day of 1970-01-01T00:00:00Z
_ROUTE_FOLD = (
    "INSERT INTO entry_route (provider_model, verdicts, latency_ms, ttft_ms, success, penalty,"
    " penalty_at) SELECT r.provider_model, 1,"
    " CASE WHEN r.outcome = 'ok' THEN r.latency_ms END,"
    " CASE WHEN r.outcome = 'ok' THEN r.ttft_ms END,"
    " CASE WHEN r.outcome = 'ok' THEN 1.0 ELSE 0.0 END,"
    f" CASE WHEN r.outcome = 'ok' THEN 0.0 ELSE {PENALTY_STEP} END, julianday(r.timestamp)"
    " FROM (SELECT NEW.provider_model AS provider_model, NEW.latency_ms AS latency_ms,"
    f" NEW.ttft_ms AS ttft_ms, NEW.timestamp AS timestamp,"
    f" {OUTCOME.replace('r.', 'NEW.')} AS outcome) AS r"
    f" WHERE r.outcome IN ({_VERDICT_LIST})"
    " ON CONFLICT (provider_model) DO UPDATE SET verdicts = verdicts + 1,"
    f" {_ewma('latency_ms')}, {_ewma('ttft_ms')},"
    f" success = COALESCE(success + {EWMA_ALPHA} * (excluded.success - success),"
    " excluded.success),"
    f" penalty = CASE WHEN excluded.success > 0 THEN {_DECAYED} * {1 - PENALTY_STEP}"
    f" ELSE {_DECAYED} + (1.0 - {_DECAYED}) * {PENALTY_STEP} END,"
    " penalty_at = COALESCE(excluded.penalty_at, penalty_at)"
)


def _spend_fold(rows: str, where: str = "true") -> list[str]:
    """Add the tokens and cost of `rows` (alias r) to their day and month, cascade and entry."""
    out = []
    for period in ("substr(r.timestamp, 1, 10)", "substr(r.timestamp, 1, 7)"):
        for scope, name in (("cascade", "r.cascade_name"), ("entry", "r.provider_model")):
            out.append(
                "INSERT INTO spend (period, scope, name, tokens, cost)"
                f" SELECT {period}, '{scope}', {name},"
                " COALESCE(SUM(r.input_tokens), 0) + COALESCE(SUM(r.output_tokens), 0),"
                f" COALESCE(SUM(r.cost), 0) FROM {rows} AS r WHERE {where}"
                " AND (r.input_tokens IS NOT NULL OR r.output_tokens IS NOT NULL"
                " OR r.cost IS NOT NULL)"
                f" GROUP BY 1, 3 ON CONFLICT (period, scope, name) DO UPDATE SET"
                " tokens = tokens + excluded.tokens, cost = cost + excluded.cost"
            )
    return out


_NEW_ROW = (
    "(SELECT NEW.timestamp AS timestamp, NEW.cascade_name AS cascade_name,"
    " NEW.provider_model AS provider_model, NEW.input_tokens AS input_tokens,"
    " NEW.output_tokens AS output_tokens, NEW.cost AS cost)"
)


def install(conn: sqlite3.Connection, month: str) -> None:
    """Create the tables and triggers; seed them from what is logged already.

    `month` (`YYYY-MM`, UTC) is the current month: older rows cannot count against a budget.
    Runs inside the migration's write transaction.
    """
    for statement in SCHEMA:
        conn.execute(statement)
    exists = "SELECT 1 FROM sqlite_master WHERE name = ?"
    if not conn.execute(exists, (ROUTE_TRIGGER,)).fetchone():
        conn.execute(
            "INSERT OR IGNORE INTO entry_route (provider_model, verdicts, latency_ms, success)"
            " SELECT provider_model, SUM(attempts),"
            " SUM(CASE WHEN outcome = 'ok' THEN latency_ms END) * 1.0"
            " / SUM(CASE WHEN outcome = 'ok' THEN attempts END),"
            " SUM(CASE WHEN outcome = 'ok' THEN attempts ELSE 0 END) * 1.0 / SUM(attempts)"
            f" FROM attempt_totals WHERE outcome IN ({_VERDICT_LIST}) GROUP BY provider_model"
        )
        conn.execute(
            f"CREATE TRIGGER {ROUTE_TRIGGER} AFTER INSERT ON attempt_log BEGIN {_ROUTE_FOLD}; END"
        )
    if not conn.execute(exists, (SPEND_TRIGGER,)).fetchone():
        for statement in _spend_fold("attempt_log", "r.timestamp >= ?"):
            conn.execute(statement, (month,))
        body = "; ".join(_spend_fold(_NEW_ROW))
        conn.execute(
            f"CREATE TRIGGER {SPEND_TRIGGER} AFTER INSERT ON attempt_log BEGIN {body}; END"
        )


def route_stats(conn: sqlite3.Connection, keys: Iterable[str]) -> dict[str, RouteStats]:
    """The routing state of each key (empty when nothing was logged for it), in one query."""
    wanted = list(dict.fromkeys(keys))
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(
        "SELECT provider_model, verdicts, latency_ms, ttft_ms, success, penalty, penalty_at"
        f" FROM entry_route WHERE provider_model IN ({marks})",
        wanted,
    )
    found = {
        key: RouteStats(
            verdicts,
            latency,
            ttft,
            success,
            penalty or 0.0,
            None if day is None else (day - JULIAN_EPOCH) * 86400.0,
        )
        for key, verdicts, latency, ttft, success, penalty, day in rows
    }
    return {key: found.get(key, RouteStats()) for key in wanted}


def spending(
    conn: sqlite3.Connection, scope: str, names: Iterable[str], periods: Iterable[str]
) -> dict[tuple[str, str], tuple[int, float]]:
    """(tokens, cost) per (name, period) of `scope` ('cascade' or 'entry'); absent: nothing."""
    wanted, when = list(dict.fromkeys(names)), list(dict.fromkeys(periods))
    rows = conn.execute(
        "SELECT name, period, tokens, cost FROM spend WHERE scope = ?"
        f" AND name IN ({','.join('?' * len(wanted))})"
        f" AND period IN ({','.join('?' * len(when))})",
        [scope, *wanted, *when],
    )
    return {(name, period): (tokens, cost) for name, period, tokens, cost in rows}
