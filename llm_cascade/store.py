"""SQLite state shared by every process: the attempt log and per-entry cooldowns.

The original's tables and columns are kept byte-compatible; everything new is an additive,
nullable column, applied once by a `PRAGMA user_version` migration. WAL and a busy timeout let
many processes write at once; each attempt is one short `BEGIN IMMEDIATE` transaction. Rows
hold entry keys, statuses and short error texts, never prompts or keys.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from . import rollup, routestate
from .clock import format_ts, json_time, parse_ts
from .errors import LlmCascadeError
from .paths import ensure_private_dir
from .routing import RouteStats

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6  # 3: the aggregates of rollup.py; 4: routing state and spending;
# 5: the aggregates folded in batches (rollup_mark) instead of by a per-row trigger;
# 6: the routing state and spending folded with those batches too
# No instant written is later than this (9999-12-31T00:00:00Z): past year 9999 no timestamp
# can be formatted, so an absurd cooldown or lease is clamped here instead of crashing.
LATEST_INSTANT = 253_402_214_400.0

_ORIGINAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempt_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT NOT NULL,
    cascade_name TEXT NOT NULL,
    provider_model TEXT NOT NULL,
    http_status INTEGER,
    latency_ms INTEGER NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER
);
CREATE TABLE IF NOT EXISTS cooldown (
    provider_model TEXT PRIMARY KEY,
    cooldown_until TEXT NOT NULL
);
"""

# Additive columns (all nullable), so the original binary keeps reading and writing the tables.
_ADDED_COLUMNS = {
    "attempt_log": {
        "outcome": "TEXT",  # ok | failed | skipped | missing_key | deadline
        "error_kind": "TEXT",
        "error_message": "TEXT",
        "rule": "TEXT",
        "cooldown_until": "TEXT",
        "run_id": "TEXT",
        "try_number": "INTEGER",
        "ttft_ms": "INTEGER",  # streams: milliseconds to the first content event
        "chunks": "INTEGER",  # streams: content events received
        "cost": "REAL",  # currency units, when the entry declares a price
    },
    "cooldown": {
        "failures": "INTEGER",  # consecutive failures since the last success
        "reason": "TEXT",
        "probe_owner": "TEXT",  # the run holding the half-open probe
        "probe_until": "TEXT",  # when that claim lapses if its holder died
        "updated_at": "TEXT",
    },
}


DEFAULT_BUSY_TIMEOUT_S = 5.0  # each write holds the lock for well under a millisecond
Phase = Literal["closed", "open", "half-open", "probing"]


class StoreError(LlmCascadeError):
    """The database cannot be opened or migrated."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"Error initializing database '{path}': {reason}")


@dataclass(frozen=True, slots=True)
class EntryState:
    """One entry's breaker: closed (no failures), open (cooling) or half-open (awaiting probe)."""

    key: str
    cooldown_until: float | None = None
    failures: int = 0
    probe_until: float | None = None
    reason: str | None = None

    def is_cooling(self, now: float) -> bool:
        return self.cooldown_until is not None and self.cooldown_until > now

    def is_half_open(self, now: float) -> bool:
        """The cooldown is over but no request has succeeded since: one probe may go."""
        return self.failures > 0 and not self.is_cooling(now)

    def probe_in_flight(self, now: float) -> bool:
        return self.probe_until is not None and self.probe_until > now

    def phase(self, now: float) -> Phase:
        """The breaker's name now: closed, open (cooling), half-open or probing."""
        if self.is_cooling(now):
            return "open"
        if self.is_half_open(now):
            return "probing" if self.probe_in_flight(now) else "half-open"
        return "closed"

    def retry_after(self, now: float) -> float | None:
        """Seconds until the cooldown ends, or None when the entry is not cooling."""
        if self.cooldown_until is None or not self.is_cooling(now):
            return None
        return self.cooldown_until - now


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure to count on an entry's breaker, at `now`; `cooldown_for(level)` gives the
    seconds to cool down (None: no cooldown), `level` counting this failure."""

    key: str
    now: float
    cooldown_for: Callable[[int], float | None]
    rule: str | None = None
    owner: str | None = None  # the run whose probe lease this verdict ends


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One row of attempt_log; the first eight fields are the original's columns."""

    cascade_name: str
    provider_model: str
    http_status: int | None
    latency_ms: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    outcome: str = "ok"
    error_kind: str | None = None
    error_message: str | None = None
    rule: str | None = None
    cooldown_until: float | None = None
    run_id: str | None = None
    try_number: int | None = None
    ttft_ms: int | None = None
    chunks: int | None = None
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One row read back from attempt_log, rows the original tool wrote included.

    The original wrote no outcome: it is derived from the status (2xx answered, else failed).
    """

    id: int
    timestamp: str
    cascade_name: str
    provider_model: str
    http_status: int | None
    latency_ms: int
    input_tokens: int | None
    output_tokens: int | None
    outcome: str
    error_kind: str | None = None
    error_message: str | None = None
    rule: str | None = None
    cooldown_until: str | None = None
    run_id: str | None = None
    try_number: int | None = None
    ttft_ms: int | None = None
    chunks: int | None = None
    cost: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AttemptRow:
        columns = set(row.keys())  # `in row` would look among the values
        values = {f.name: row[f.name] for f in fields(cls) if f.name in columns}
        if not values.get("outcome"):
            values["outcome"] = _derived(values.get("http_status"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The row for `log --json`: its instants in RFC 3339 whatever form the writer used."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["timestamp"] = json_time(self.timestamp)
        values["cooldown_until"] = json_time(self.cooldown_until)
        return values


class LogSink(Protocol):
    """Where each attempt row also goes once the local log has it as `row_id` (`[log]`);
    never raises."""

    def write(self, row_id: int | None, record: AttemptRecord, now: float) -> None: ...

    def close(self) -> None: ...


class Store:
    """One connection to the shared database. Methods raise sqlite3.Error on I/O trouble."""

    def __init__(self, path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.log_sink: LogSink | None = None
        self._routes = routestate.RouteReader()
        conn = None
        try:
            ensure_private_dir(path.parent)
            if not path.exists():
                # Create it owner-only; SQLite gives the -wal and -shm files the same mode.
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self.conn = conn
            self._use_wal(time.monotonic() + busy_timeout_s)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._busy_ms = _millis(busy_timeout_s)
            self._migrate()
            self._folded = rollup.folded_up_to(self.conn)
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            raise StoreError(path, str(exc)) from None

    def _use_wal(self, give_up_at: float) -> None:
        """Switch to WAL, waiting for other openers: this pragma ignores the busy timeout.

        Processes that create the same new database at one instant race for the lock the
        switch needs; SQLite answers "database is locked" at once instead of waiting.
        """
        pause = 0.001
        while True:
            try:
                mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + pause > give_up_at:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write may wait for another process's lock before failing."""
        self._busy_ms = _millis(seconds)
        self.conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def close(self) -> None:
        if self.log_sink is not None:
            self.log_sink.close()
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short immediate transaction: takes the write lock up front, so no upgrade deadlock.

        Rolled back if the body or the COMMIT fails, and only while one is open (SQLite may
        already have rolled it back itself, e.g. after a full disk).
        """
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        if self.conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._write() as conn:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # another process migrated while we waited for the lock
            for statement in _ORIGINAL_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for table, columns in _ADDED_COLUMNS.items():
                present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for name, sql_type in columns.items():
                    if name not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
            conn.execute(
                "CREATE INDEX IF NOT EXISTS attempt_log_entry_time"
                " ON attempt_log (provider_model, timestamp)"
            )
            rollup.install(conn)
            routestate.install(conn, format_ts(time.time())[:7])
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def fold_log(self, *, wait: bool = True) -> None:
        """Bring the aggregates up to the newest row; readers call it before they read.

        A database that cannot be written now (locked past the wait, read-only, full) is left
        as it is: its rows are safe and the aggregates catch up at a later fold.
        """
        try:
            if not wait:
                self.conn.execute("PRAGMA busy_timeout = 0")
            try:
                with self._write() as conn:
                    self._folded = _catch_up(conn)
            finally:
                if not wait:
                    self.conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        except sqlite3.Error as exc:
            logger.debug("aggregates not folded now: %s", exc)

    def _logged(self, row_id: int | None, record: AttemptRecord, now: float) -> None:
        """After a row is committed: hand it to the fleet log, if any, and fold the waiting
        rows once there are enough of them, if the lock is free at once (a busy database is
        left to the next writer or reader)."""
        if self.log_sink is not None:
            self.log_sink.write(row_id, record, now)
        if row_id is not None and row_id - self._folded >= rollup.FOLD_EVERY:
            self.fold_log(wait=False)

    # --- reads ---------------------------------------------------------------------------

    def states(self, keys: Iterable[str]) -> dict[str, EntryState]:
        """The breaker state of each key (closed when there is no row), in one query."""
        wanted = list(dict.fromkeys(keys))
        marks = ",".join("?" * len(wanted))
        rows = self.conn.execute(
            "SELECT provider_model, cooldown_until, failures, probe_until, reason"
            f" FROM cooldown WHERE provider_model IN ({marks})",
            wanted,
        )
        found = {row[0]: _state(row) for row in rows}
        return {key: found.get(key, EntryState(key)) for key in wanted}

    def all_states(self) -> list[EntryState]:
        rows = self.conn.execute(
            "SELECT provider_model, cooldown_until, failures, probe_until, reason"
            " FROM cooldown ORDER BY provider_model"
        )
        return [_state(row) for row in rows]

    def route_stats(self, keys: Iterable[str]) -> dict[str, RouteStats]:
        """What routing knows of each key: one row per entry, whatever the size of the log."""
        return self._routes.read(self.conn, keys)

    def spending(
        self, scope: str, names: Iterable[str], periods: Iterable[str]
    ) -> dict[tuple[str, str], tuple[int, float]]:
        """(tokens, cost) per (name, period) of a scope ('cascade' or 'entry')."""
        return routestate.spending(self.conn, scope, names, periods)

    def recent_attempts(self, limit: int = 20, cascade: str | None = None) -> list[AttemptRow]:
        """The newest attempt rows, oldest first."""
        where, args = ("WHERE cascade_name = ?", [cascade]) if cascade else ("", [])
        cursor = self.conn.execute(
            f"SELECT * FROM (SELECT * FROM attempt_log {where} ORDER BY id DESC LIMIT ?)"
            " ORDER BY id",
            [*args, limit],
        )
        cursor.row_factory = sqlite3.Row
        return [AttemptRow.from_row(row) for row in cursor]

    def recent_outcomes(self, limit: int) -> list[tuple[str, str, str, int]]:
        """(timestamp, entry, outcome, latency_ms) of the newest `limit` rows, newest first:
        a bounded read for live views, whatever the size of the log."""
        rows = self.conn.execute(
            "SELECT timestamp, provider_model, outcome, http_status, latency_ms FROM attempt_log"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [(t, key, outcome or _derived(status), ms) for t, key, outcome, status, ms in rows]

    # --- writes --------------------------------------------------------------------------

    def log_attempt(self, record: AttemptRecord, now: float) -> None:
        """One row, in a transaction of its own (a single statement needs no BEGIN/COMMIT)."""
        self._logged(_insert(self.conn, record, now), record, now)

    def claim_probe(self, key: str, owner: str, now: float, lease_s: float) -> bool:
        """Atomically become the one run that probes a half-open entry; False if another is."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT cooldown_until, failures, probe_until FROM cooldown"
                " WHERE provider_model = ?",
                (key,),
            ).fetchone()
            if row is None:
                return False
            state = EntryState(key, _ts(row[0]), row[1] or 0, _ts(row[2]))
            if not state.is_half_open(now) or state.probe_in_flight(now):
                return False
            conn.execute(
                "UPDATE cooldown SET probe_owner = ?, probe_until = ? WHERE provider_model = ?",
                (owner, format_ts(_writable(now + lease_s)), key),
            )
            return True

    def record_success(self, record: AttemptRecord, now: float, *, reset: bool = True) -> None:
        """Log the answer and close the entry's breaker (the failure run resets).

        Unless another process recorded a failure after this request was sent (a 429 while
        it was in flight): that verdict is newer, and its cooldown must not be shortened.
        `reset=False` (the breaker was closed when the run read it) only logs the row.
        """
        if not reset:
            self.log_attempt(record, now)
            return
        with self._write() as conn:
            row_id = _insert(conn, record, now)
            _close(conn, record.provider_model, now - record.latency_ms / 1000, now)
        self._logged(row_id, record, now)

    def reset_breaker(self, key: str, sent: float, now: float) -> None:
        """Close `key`'s breaker after an answer to a request sent at `sent` (no log row)."""
        with self._write() as conn:
            _close(conn, key, sent, now)

    def record_failure(
        self,
        record: AttemptRecord,
        now: float,
        cooldown_for: Callable[[int], float | None],
        *,
        owner: str | None = None,
    ) -> tuple[float | None, int]:
        """Log a failure and, if `cooldown_for(level)` gives seconds, open the breaker.

        `level` counts consecutive failures including this one. The new instant never
        shortens a longer cooldown another process set. Returns (until, level).
        """
        with self._write() as conn:
            failure = Failure(record.provider_model, now, cooldown_for, record.rule, owner)
            until, level = _open(conn, failure)
            record = record if until is None else replace(record, cooldown_until=until)
            row_id = _insert(conn, record, now)
        self._logged(row_id, record, now)
        return until, level

    def fail_breaker(self, failure: Failure) -> tuple[float | None, int]:
        """The breaker half of `record_failure` (no log row)."""
        with self._write() as conn:
            return _open(conn, failure)

    def release_probe(self, key: str, owner: str) -> None:
        """Give back `owner`'s probe lease without a verdict (its run was cancelled)."""
        with self._write() as conn:
            _free_probe(conn, key, owner)

    def prune(self, before: float) -> int:
        """Delete attempt rows older than `before` (epoch seconds), and the hourly aggregates
        of the hours before it; returns how many rows. The all-time totals stay."""
        stamp = format_ts(before)
        with self._write() as conn:
            self._folded = _catch_up(conn)  # the totals keep what is deleted
            rollup.prune_hourly(conn, stamp[:13])
            return conn.execute("DELETE FROM attempt_log WHERE timestamp < ?", (stamp,)).rowcount

    def clear_cooldowns(self, keys: Iterable[str] | None = None) -> int:
        """Close the breaker of the given entries (all when None); returns how many rows."""
        with self._write() as conn:
            if keys is None:
                return conn.execute("DELETE FROM cooldown").rowcount
            wanted = list(keys)
            marks = ",".join("?" * len(wanted))
            return conn.execute(
                f"DELETE FROM cooldown WHERE provider_model IN ({marks})", wanted
            ).rowcount

    def put_states(self, states: Iterable[EntryState]) -> int:
        """Write these breakers' cooldowns, failure counts and reasons as they are (a copy
        from another backend; probe leases stay behind); returns how many."""
        rows = [
            (s.key, format_ts(_writable(s.cooldown_until or 0.0)), s.failures, s.reason)
            for s in states
        ]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO cooldown (provider_model, cooldown_until, failures, reason)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (provider_model) DO UPDATE SET"
                " cooldown_until = excluded.cooldown_until, failures = excluded.failures,"
                " reason = excluded.reason",
                rows,
            )
        return len(rows)


def _derived(status: int | None) -> str:
    """The outcome of a row the original wrote (it has none): 2xx answered, else failed."""
    return "ok" if isinstance(status, int) and status < 400 else "failed"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _writable(instant: float) -> float:
    """`instant`, or LATEST_INSTANT if it is later (or nan): every instant must be formattable."""
    return instant if instant <= LATEST_INSTANT else LATEST_INSTANT


def _ts(text: str | None) -> float | None:
    return parse_ts(text) if text else None


def _state(row: tuple[Any, ...]) -> EntryState:
    return EntryState(row[0], _ts(row[1]), row[2] or 0, _ts(row[3]), row[4])


def _close(conn: sqlite3.Connection, key: str, sent: float, now: float) -> None:
    """Reset `key`'s failure run, unless a verdict newer than `sent` is recorded."""
    stamp = format_ts(now)
    # One statement: it touches the row only if there is something to reset and no
    # verdict newer than this request's sending (timestamps compare as strings).
    conn.execute(
        "UPDATE cooldown SET failures = 0, probe_owner = NULL, probe_until = NULL,"
        " reason = NULL, updated_at = ?,"
        " cooldown_until = CASE WHEN cooldown_until > ? THEN ? ELSE cooldown_until END"
        " WHERE provider_model = ? AND (updated_at IS NULL OR updated_at <= ?)"
        " AND (failures > 0 OR probe_owner IS NOT NULL OR reason IS NOT NULL"
        " OR cooldown_until > ?)",
        (stamp, stamp, stamp, key, format_ts(sent), stamp),
    )


def _open(conn: sqlite3.Connection, failure: Failure) -> tuple[float | None, int]:
    """Count a failure and cool the entry down if its `cooldown_for(level)` says so."""
    key, now, rule, owner = failure.key, failure.now, failure.rule, failure.owner
    row = conn.execute(
        "SELECT cooldown_until, failures FROM cooldown WHERE provider_model = ?", (key,)
    ).fetchone()
    level = (row[1] or 0) + 1 if row else 1
    seconds = failure.cooldown_for(level)
    if seconds is None:
        if owner is not None:
            # No cooldown (e.g. a caller error): free the probe so the next run can try.
            _free_probe(conn, key, owner)
        return None, level
    existing = parse_ts(row[0]) if row else None
    until = _writable(max(now + seconds, existing or 0.0))
    conn.execute(
        "INSERT INTO cooldown (provider_model, cooldown_until, failures, reason,"
        " updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (provider_model) DO UPDATE SET"
        " cooldown_until = excluded.cooldown_until, failures = excluded.failures,"
        " reason = excluded.reason, updated_at = excluded.updated_at,"
        " probe_owner = NULL, probe_until = NULL",
        (key, format_ts(until), level, rule, format_ts(now)),
    )
    return until, level


def _catch_up(conn: sqlite3.Connection) -> int:
    """Fold the rows not folded yet into every aggregate; returns rollup's new mark."""
    routestate.catch_up(conn)
    return rollup.catch_up(conn)


def _free_probe(conn: sqlite3.Connection, key: str, owner: str) -> None:
    conn.execute(
        "UPDATE cooldown SET probe_owner = NULL, probe_until = NULL"
        " WHERE provider_model = ? AND probe_owner = ?",
        (key, owner),
    )


def _millis(seconds: float) -> int:
    return max(int(seconds * 1000), 0)


def _insert(conn: sqlite3.Connection, r: AttemptRecord, now: float) -> int | None:
    """Write one attempt row; returns its id."""
    return conn.execute(
        "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
        " latency_ms, input_tokens, output_tokens, outcome, error_kind, error_message, rule,"
        " cooldown_until, run_id, try_number, ttft_ms, chunks, cost)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            format_ts(now),
            r.cascade_name,
            r.provider_model,
            r.http_status,
            r.latency_ms,
            r.input_tokens,
            r.output_tokens,
            r.outcome,
            r.error_kind,
            r.error_message,
            r.rule,
            format_ts(r.cooldown_until) if r.cooldown_until is not None else None,
            r.run_id,
            r.try_number,
            r.ttft_ms,
            r.chunks,
            r.cost,
        ),
    ).lastrowid
