"""What routing and budgets read: per-entry moving averages and the spending per period.

- `entry_route`: per entry, moving averages of answered latency, time to first token and
  success (1 answered, 0 failed), and a failure penalty that decays linearly with time
  (constants in routing.py). A run reads one row per entry, never the whole attempt log.
- `spend`: tokens and cost per UTC day (`YYYY-MM-DD`) and month (`YYYY-MM`), per cascade and
  per entry: what budgets are checked against.

Rows are folded in with rollup.py's batches, after their own mark (`route_mark`, the id of the
last row in), not by a trigger on every insert: two triggers cost about 0.08 ms of each
attempt's transaction. Its own mark, so that an older llm-cascade folding only rollup's
aggregates on the same database cannot leave rows out of these.
Reads stay exact all the same: they add the rows after the mark to what is folded, in the
same statement (one snapshot), so a budget is never checked against stale sums. Every
process's rows count, the original tool's too (a row without an outcome is read by its
status, as rollup.py reads it). A database migrated with rows already logged starts the
averages from the all-time aggregates and the spending from the rows of this month.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from . import rollup
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
    "CREATE TABLE IF NOT EXISTS route_mark (id INTEGER NOT NULL)",
)
# Schema 4 and 5 folded each row as it was inserted, with these triggers.
OLD_TRIGGERS = ("attempt_log_route", "attempt_log_spend")
JULIAN_EPOCH = 2440587.5  # the Julian day of 1970-01-01T00:00:00Z

# The rows after the mark, found by id: the `+` on the other columns tested with it keeps
# SQLite from walking an entry's whole history in the (provider_model, timestamp) index.
_PENDING = "r.id > (SELECT id FROM route_mark)"
_BATCH = "r.id > :after AND r.id <= :upto"
# A verdict row as the averages take it: entry, outcome, latency, ttft, its Julian day (a
# timestamp SQLite cannot read gives none, and does not decay the penalty).
_VERDICT = (  # numbers as SQLite's arithmetic reads them (a text that is no number is 0)
    f"r.provider_model, {OUTCOME}, CAST(r.latency_ms AS REAL), CAST(r.ttft_ms AS REAL),"
    " julianday(r.timestamp)"
)
_VERDICTS_OF = f"FROM attempt_log AS r WHERE {OUTCOME} IN ({_VERDICT_LIST})"

# (verdicts, latency_ms, ttft_ms, success, penalty, penalty_at as a Julian day)
_Route = tuple[int, float | None, float | None, float | None, float, float | None]


def _ewma(old: float | None, new: float | None) -> float | None:
    if new is None:
        return old
    if old is None:
        return float(new)
    return old + EWMA_ALPHA * (new - old)


def _step(
    old: _Route | None, outcome: str, latency: float, ttft: float | None, day: float | None
) -> _Route:
    """One verdict folded into an entry's averages (None: its first)."""
    answered = outcome == "ok"
    score = 1.0 if answered else 0.0
    if old is None:
        return (
            1,
            float(latency) if answered else None,
            _ewma(None, ttft) if answered else None,
            score,
            0.0 if answered else PENALTY_STEP,
            day,
        )
    verdicts, lat, first, success, penalty, at = old
    since = 0.0 if day is None or at is None else max(day - at, 0.0)
    decayed = max(penalty - since * 86400.0 / PENALTY_RECOVERY_S, 0.0)
    return (
        verdicts + 1,
        _ewma(lat, latency if answered else None),
        _ewma(first, ttft if answered else None),
        score if success is None else success + EWMA_ALPHA * (score - success),
        decayed * (1 - PENALTY_STEP) if answered else decayed + (1.0 - decayed) * PENALTY_STEP,
        at if day is None else day,
    )


def _replay(stored: dict[str, _Route], rows: Iterable[Sequence[Any]]) -> dict[str, _Route]:
    """`stored` with the verdict rows (entry, outcome, latency, ttft, day; in id order) folded
    in; returns the entries they changed."""
    changed: dict[str, _Route] = {}
    for key, outcome, latency, ttft, day in rows:
        changed[key] = stored[key] = _step(stored.get(key), outcome, latency, ttft, day)
    return changed


def _spend_fold(rows: str, where: str) -> list[str]:
    """Add the tokens and cost of `rows` (alias r) to their day and month, cascade and entry."""
    out = []
    for period in ("substr(r.timestamp, 1, 10)", "substr(r.timestamp, 1, 7)"):
        for scope, name in _SCOPES.items():
            out.append(
                "INSERT INTO spend (period, scope, name, tokens, cost)"
                f" SELECT {period}, '{scope}', {name}, {_TOKENS}, {_COST}"
                f" FROM {rows} AS r WHERE {where} AND {_SPENT}"
                f" GROUP BY 1, 3 ON CONFLICT (period, scope, name) DO UPDATE SET"
                " tokens = tokens + excluded.tokens, cost = cost + excluded.cost"
            )
    return out


_SCOPES = {"cascade": "r.cascade_name", "entry": "r.provider_model"}
_TOKENS = "COALESCE(SUM(r.input_tokens), 0) + COALESCE(SUM(r.output_tokens), 0)"
_COST = "COALESCE(SUM(r.cost), 0)"
_SPENT = "(r.input_tokens IS NOT NULL OR r.output_tokens IS NOT NULL OR r.cost IS NOT NULL)"
_FOLD_SPEND: list[str] = []  # built on first use


def install(conn: sqlite3.Connection, month: str) -> None:
    """Create the tables; seed them from what is logged already; drop the old triggers.

    `month` (`YYYY-MM`, UTC) is the current month: older rows cannot count against a budget.
    Runs inside the migration's write transaction.
    """
    exists = "SELECT 1 FROM sqlite_master WHERE name = ?"
    new = conn.execute(exists, ("entry_route",)).fetchone() is None
    for statement in SCHEMA:
        conn.execute(statement)
    if new:  # rollup.install ran first: its aggregates hold every row
        conn.execute(
            "INSERT OR IGNORE INTO entry_route (provider_model, verdicts, latency_ms, success)"
            " SELECT provider_model, SUM(attempts),"
            " SUM(CASE WHEN outcome = 'ok' THEN latency_ms END) * 1.0"
            " / SUM(CASE WHEN outcome = 'ok' THEN attempts END),"
            " SUM(CASE WHEN outcome = 'ok' THEN attempts ELSE 0 END) * 1.0 / SUM(attempts)"
            f" FROM attempt_totals WHERE outcome IN ({_VERDICT_LIST}) GROUP BY provider_model"
        )
        for statement in _spend_fold("attempt_log", "r.timestamp >= ?"):
            conn.execute(statement, (month,))
    for name in OLD_TRIGGERS:  # schema 4 and 5: they folded every row in already
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    if not conn.execute("SELECT 1 FROM route_mark").fetchone():
        conn.execute("INSERT INTO route_mark (id) VALUES (?)", (rollup.newest(conn),))


def catch_up(conn: sqlite3.Connection) -> None:
    """Fold every row after the mark in. Call it inside a write transaction (as
    rollup.catch_up): the rows, the sums and the mark move together."""
    row = conn.execute("SELECT id FROM route_mark").fetchone()
    after, upto = (int(row[0]) if row else 0), rollup.newest(conn)
    if upto > after:
        _fold(conn, after, upto)
        conn.execute("UPDATE route_mark SET id = ?", (upto,))


def _fold(conn: sqlite3.Connection, after: int, upto: int) -> None:
    """Fold the rows with `after < id <= upto` in."""
    if not _FOLD_SPEND:
        _FOLD_SPEND.extend(_spend_fold("attempt_log", _BATCH))
    bounds = {"after": after, "upto": upto}
    for statement in _FOLD_SPEND:
        conn.execute(statement, bounds)
    rows = conn.execute(
        f"SELECT {_VERDICT} {_VERDICTS_OF} AND {_BATCH} ORDER BY r.id", bounds
    ).fetchall()
    if not rows:
        return
    keys = list(dict.fromkeys(row[0] for row in rows))
    marks = ",".join("?" * len(keys))
    stored = {
        key: tuple(values)
        for key, *values in conn.execute(
            "SELECT provider_model, verdicts, latency_ms, ttft_ms, success, penalty, penalty_at"
            f" FROM entry_route WHERE provider_model IN ({marks})",
            keys,
        )
    }
    changed = _replay(stored, rows)
    conn.executemany(
        "INSERT OR REPLACE INTO entry_route (provider_model, verdicts, latency_ms, ttft_ms,"
        " success, penalty, penalty_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(key, *values) for key, values in changed.items()],
    )


class RouteReader:
    """Reads the routing state of entries, exactly, and remembers each entry's state as of
    the newest row it saw: the next read of that entry only replays the rows after it.

    Without that, a read replays every row not folded yet (up to a batch, about 2 µs each).
    Rows never change once written and ids only grow, so what was read stays true.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[_Route | None, int]] = {}  # state, as of this row id

    def read(self, conn: sqlite3.Connection, keys: Iterable[str]) -> dict[str, RouteStats]:
        """The state of each key (empty when nothing was logged for it), in one query: what
        is folded (for keys not read before), with the later rows laid over it."""
        wanted = list(dict.fromkeys(keys))
        new = [key for key in wanted if key not in self._known]
        since = min((self._known[key][1] for key in wanted if key in self._known), default=None)
        sql = [
            "SELECT -1, NULL, (SELECT id FROM route_mark),"
            " (SELECT COALESCE(MAX(id), 0) FROM attempt_log), NULL, NULL, NULL, NULL"
        ]
        args: list[object] = []
        if new:
            sql.append(
                "SELECT 0, r.provider_model, r.verdicts, r.latency_ms, r.ttft_ms, r.success,"
                " r.penalty, r.penalty_at FROM entry_route AS r"
                f" WHERE r.provider_model IN ({','.join('?' * len(new))})"
            )
            args += new
        after = "(SELECT id FROM route_mark)" if since is None else "?"
        if since is not None and new:
            after = "MIN(?, (SELECT id FROM route_mark))"
        sql.append(
            f"SELECT r.id, {_VERDICT}, NULL, NULL {_VERDICTS_OF} AND r.id > {after}"
            f" AND +r.provider_model IN ({','.join('?' * len(wanted))})"
        )
        if since is not None:
            args.append(since)
        args += wanted
        rows = conn.execute(" UNION ALL ".join(sql) + " ORDER BY 1", args).fetchall()
        _, _, mark, newest, *_ = rows[0]
        state: dict[str, _Route | None] = {}
        start: dict[str, int] = {}
        for key in wanted:
            state[key], start[key] = self._known.get(key, (None, mark or 0))
        for row_id, key, *values in rows[1:]:
            if row_id == 0:
                state[key] = tuple(values)
            elif row_id > start[key]:
                state[key] = _step(state[key], *values[:4])
        for key in wanted:
            self._known[key] = (state[key], newest)
        return {key: RouteStats() if (r := state[key]) is None else _stats(r) for key in wanted}


def _stats(route: _Route) -> RouteStats:
    verdicts, latency, ttft, success, penalty, day = route
    at = None if day is None else (day - JULIAN_EPOCH) * 86400.0
    return RouteStats(verdicts, latency, ttft, success, penalty or 0.0, at)


def spending(
    conn: sqlite3.Connection, scope: str, names: Iterable[str], periods: Iterable[str]
) -> dict[tuple[str, str], tuple[int, float]]:
    """(tokens, cost) per (name, period) of `scope` ('cascade' or 'entry'); absent: nothing.
    What is folded plus the rows not folded yet, in one query."""
    wanted, when = list(dict.fromkeys(names)), list(dict.fromkeys(periods))
    names_in = f"IN ({','.join('?' * len(wanted))})"
    periods_in = f"IN ({','.join('?' * len(when))})"
    name = _SCOPES[scope]
    # The rows not folded yet, per name and day, in one pass (grouped by `+name`, which no
    # index orders, so they are found by id): each counts for its day and its month.
    day, month = "substr(r.timestamp, 1, 10)", "substr(r.timestamp, 1, 7)"
    rows = conn.execute(
        "SELECT 0, name, period, tokens, cost FROM spend WHERE scope = ?"
        f" AND name {names_in} AND period {periods_in}"
        f" UNION ALL SELECT 1, +{name}, {day}, {_TOKENS}, {_COST} FROM attempt_log AS r"
        f" WHERE {_PENDING} AND {_SPENT} AND +{name} {names_in}"
        f" AND ({day} {periods_in} OR {month} {periods_in}) GROUP BY 2, 3",
        [scope, *wanted, *when, *wanted, *when, *when],
    )
    spent: dict[tuple[str, str], tuple[int, float]] = {}
    for pending, key, period, tokens, cost in rows:
        for counted in (period, period[:7]) if pending else (period,):
            if counted in when:
                before = spent.get((key, counted), (0, 0.0))
                spent[key, counted] = (before[0] + tokens, before[1] + cost)
    return spent
