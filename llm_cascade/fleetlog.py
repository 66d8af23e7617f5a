"""The attempt log on PostgreSQL (`[log] backend = "postgres"`): every host's rows in one place.

Each row the local SQLite log gets is also inserted into `llm_cascade_attempts` (the same
columns, instants as timestamptz, plus `host`) by a writer thread, rows queued together in one
batch. A PL/pgSQL trigger folds each, in its INSERT, into aggregates that mirror `rollup.py`'s:
`llm_cascade_attempt_hourly` (counts per hour, cascade, entry, outcome, rule),
`llm_cascade_latency_hourly` and `llm_cascade_histogram_totals` (millisecond and token
histograms with the same buckets) and `llm_cascade_entry_errors`. `stats`, `metrics` and
`top` read only those, so their cost does not grow with the log. The schema's version is in
`llm_cascade_log_schema`, apart from the breakers' one, so hosts of an older version keep
their shared breakers.

When PostgreSQL cannot be used the log says so once on stderr, records it in the local
`state_fallback` table, keeps the rows local only and tries again after `RETRY_S`. Rows it
did not write (an outage, another process's outage, a crash) are caught up from the local
log: `fleet_log_mark` there holds the database's `source` id and the newest local id up to
which every row is on the server; the writer thread, once the server answers again and then
every `CATCH_UP_S` while it writes, sends the rows after the mark, `CATCH_UP_ROWS` at a
time. Each server row carries (source, local id), unique, inserted with ON CONFLICT DO
NOTHING, so a row sent twice (a crash between the commit and the mark) is folded once.
"""

from __future__ import annotations

import copy
import logging
import queue
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from . import rollup
from .clock import format_ts, parse_ts
from .config import LogConfig, StateConfig
from .store import AttemptRecord, AttemptRow

if TYPE_CHECKING:
    import psycopg

    from .breakers.pg import PgConnection

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 2  # 2: rows keyed by (source, local id), hourly sums per host, pruning
RETRY_S = 30.0  # after a failure, how long rows stay local only before PostgreSQL is retried
CATCH_UP_S = 1.0  # while writing, how often the rows after the local mark are looked at
CATCH_UP_ROWS = 500  # local rows one catch-up pass reads (and sends at most)
PRUNE_ROWS = 10_000  # server rows one pruning statement deletes
FALLBACK_BACKEND = "log:postgres"  # the `state_fallback.backend` of the log's fallbacks
_KEY = "hour, cascade_name, provider_model, outcome, rule, host"
_TOTAL_KEY = "cascade_name, provider_model, outcome, rule"
_COUNTS = (
    "attempts",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "cooldowns",
    "failovers",
    "runs",
    "answered_runs",
    "first_answered",
)
_HOURLY_KEY = "hour, cascade_name, provider_model, metric, bucket, host"
_TOTALS_KEY = "cascade_name, provider_model, metric, error, bucket"
_ROW_COLUMNS = (
    "cascade_name, provider_model, http_status, latency_ms, input_tokens, output_tokens,"
    " outcome, error_kind, error_message, rule, run_id, try_number, ttft_ms, chunks, cost"
)


def _bounds(values: tuple[int, ...]) -> str:
    return "'{" + ",".join(str(v) for v in values) + "}'::bigint[]"


_FOLD = f"""
CREATE OR REPLACE FUNCTION llm_cascade_fold() RETURNS trigger LANGUAGE plpgsql AS $fold$
DECLARE
  ms_bounds CONSTANT bigint[] := {_bounds(rollup.MS_BOUNDS)};
  token_bounds CONSTANT bigint[] := {_bounds(rollup.TOKEN_BOUNDS)};
  hr timestamptz := llm_cascade_hour(NEW.timestamp);
  oc text := COALESCE(NULLIF(NEW.outcome, ''),
    CASE WHEN NEW.http_status < 400 THEN 'ok' ELSE 'failed' END);
  rl text := COALESCE(NEW.rule, '');
  prev record;
  failover boolean := false;
  first_of_run boolean := false;
  before_own boolean := false;
BEGIN
  IF NEW.run_id IS NOT NULL THEN
    SELECT p.timestamp, p.cascade_name, p.provider_model, p.outcome, COALESCE(p.rule, '') AS rule,
      p.host INTO prev FROM llm_cascade_attempts AS p
      WHERE p.run_id = NEW.run_id AND p.id < NEW.id ORDER BY p.id DESC LIMIT 1;
    first_of_run := NOT FOUND AND oc <> 'probe';
    failover := FOUND AND prev.outcome = 'failed';
  END IF;
  -- Buckets: the first bound >= the value, i.e. as many bounds as lie below `value - 1`.
  -- Two counts rows: always locked in key order, so concurrent inserts cannot deadlock.
  IF failover THEN
    before_own := (llm_cascade_hour(prev.timestamp), prev.cascade_name, prev.provider_model,
      'failed'::text, prev.rule, prev.host) < (hr, NEW.cascade_name, NEW.provider_model, oc, rl,
      NEW.host);
  END IF;
  IF before_own THEN
    PERFORM llm_cascade_count(llm_cascade_hour(prev.timestamp), prev.host, prev.cascade_name,
      prev.provider_model, 'failed', prev.rule, 0, 0, 0, 0, 0, 1, 0, 0, 0);
  END IF;
  PERFORM llm_cascade_count(hr, NEW.host, NEW.cascade_name, NEW.provider_model, oc, rl, 1,
    COALESCE(NEW.input_tokens, 0), COALESCE(NEW.output_tokens, 0), COALESCE(NEW.latency_ms, 0),
    (NEW.cooldown_until IS NOT NULL)::int, 0, first_of_run::int,
    (NEW.run_id IS NOT NULL AND oc = 'ok')::int, (first_of_run AND oc = 'ok')::int);
  IF failover AND NOT before_own THEN
    PERFORM llm_cascade_count(llm_cascade_hour(prev.timestamp), prev.host, prev.cascade_name,
      prev.provider_model, 'failed', prev.rule, 0, 0, 0, 0, 0, 1, 0, 0, 0);
  END IF;
  IF oc = 'ok' THEN
    PERFORM llm_cascade_observe_hour(hr, NEW.host, NEW.cascade_name, NEW.provider_model, 'latency',
      width_bucket(NEW.latency_ms - 1, ms_bounds));
    IF NEW.ttft_ms IS NOT NULL THEN
      PERFORM llm_cascade_observe_hour(hr, NEW.host, NEW.cascade_name, NEW.provider_model, 'ttft',
        width_bucket(NEW.ttft_ms - 1, ms_bounds));
      PERFORM llm_cascade_observe(NEW.cascade_name, NEW.provider_model, 'ttft', '',
        width_bucket(NEW.ttft_ms - 1, ms_bounds), NEW.ttft_ms);
    END IF;
    IF NEW.input_tokens IS NOT NULL THEN
      PERFORM llm_cascade_observe(NEW.cascade_name, NEW.provider_model, 'input_tokens', '',
        width_bucket(NEW.input_tokens - 1, token_bounds), NEW.input_tokens);
    END IF;
    IF NEW.output_tokens IS NOT NULL THEN
      PERFORM llm_cascade_observe(NEW.cascade_name, NEW.provider_model, 'output_tokens', '',
        width_bucket(NEW.output_tokens - 1, token_bounds), NEW.output_tokens);
    END IF;
  END IF;
  IF oc IN ('ok', 'failed', 'retrying') OR (oc = 'deadline' AND NEW.latency_ms > 0) THEN
    PERFORM llm_cascade_observe(NEW.cascade_name, NEW.provider_model, 'duration',
      CASE WHEN oc = 'ok' THEN '' WHEN rl <> '' THEN rl
        WHEN NEW.http_status IS NOT NULL THEN NEW.http_status::text ELSE '_OTHER' END,
      width_bucket(NEW.latency_ms - 1, ms_bounds), NEW.latency_ms);
  END IF;
  IF oc IN ('failed', 'retrying', 'deadline', 'missing_key')
      OR (oc = 'probe' AND NEW.error_kind IS NOT NULL) THEN
    INSERT INTO llm_cascade_entry_errors AS x VALUES (NEW.provider_model, NEW.id,
      NEW.timestamp, oc, NEW.http_status, rl, NEW.error_message)
    ON CONFLICT (provider_model) DO UPDATE SET attempt_id = excluded.attempt_id,
      timestamp = excluded.timestamp, outcome = excluded.outcome,
      http_status = excluded.http_status, rule = excluded.rule, message = excluded.message
      WHERE excluded.attempt_id > x.attempt_id;
  END IF;
  RETURN NULL;
END
$fold$
"""

_COUNT_ARGS = ", ".join(f"{c}_ bigint" for c in _COUNTS)
_COUNT = (
    "CREATE OR REPLACE FUNCTION llm_cascade_count(hour_ timestamptz, host_ text, cascade_ text,"
    f" entry_ text, outcome_ text, rule_ text, {_COUNT_ARGS}) RETURNS void LANGUAGE plpgsql"
    f" AS $c$ BEGIN INSERT INTO llm_cascade_attempt_hourly AS x ({_KEY}, {', '.join(_COUNTS)})"
    " VALUES (hour_, cascade_, entry_, outcome_, rule_, host_,"
    f" {', '.join(f'{c}_' for c in _COUNTS)}) ON CONFLICT ({_KEY}) DO UPDATE SET"
    f" {', '.join(f'{c} = x.{c} + excluded.{c}' for c in _COUNTS)}; END $c$"
)
# PL/pgSQL, not SQL: its statements' plans are kept for the session, a SQL function's are not.
_OBSERVE_HOUR = (
    "CREATE OR REPLACE FUNCTION llm_cascade_observe_hour(hour_ timestamptz, host_ text,"
    " cascade_ text, entry_ text, metric_ text, bucket_ integer) RETURNS void LANGUAGE plpgsql"
    f" AS $o$ BEGIN INSERT INTO llm_cascade_latency_hourly AS x ({_HOURLY_KEY}, count)"
    " VALUES (hour_, cascade_, entry_, metric_, bucket_, host_, 1)"
    f" ON CONFLICT ({_HOURLY_KEY}) DO UPDATE SET count = x.count + 1; END $o$"
)
_OBSERVE = (
    "CREATE OR REPLACE FUNCTION llm_cascade_observe(cascade_ text, entry_ text, metric_ text,"
    " error_ text, bucket_ integer, value_ bigint) RETURNS void LANGUAGE plpgsql AS $o$ BEGIN"
    f" INSERT INTO llm_cascade_histogram_totals AS x ({_TOTALS_KEY}, count, total)"
    " VALUES (cascade_, entry_, metric_, error_, bucket_, 1, value_)"
    f" ON CONFLICT ({_TOTALS_KEY}) DO UPDATE SET count = x.count + 1,"
    " total = x.total + excluded.total; END $o$"
)
_MIGRATIONS = {
    1: [
        "CREATE TABLE IF NOT EXISTS llm_cascade_attempts (id BIGSERIAL PRIMARY KEY,"
        " host TEXT NOT NULL, timestamp TIMESTAMPTZ NOT NULL, cascade_name TEXT NOT NULL,"
        " provider_model TEXT NOT NULL, http_status INTEGER, latency_ms INTEGER NOT NULL,"
        " input_tokens INTEGER, output_tokens INTEGER, outcome TEXT, error_kind TEXT,"
        " error_message TEXT, rule TEXT, cooldown_until TIMESTAMPTZ, run_id TEXT,"
        " try_number INTEGER, ttft_ms INTEGER, chunks INTEGER, cost DOUBLE PRECISION)",
        "CREATE INDEX IF NOT EXISTS llm_cascade_attempts_time ON llm_cascade_attempts (timestamp)",
        "CREATE INDEX IF NOT EXISTS llm_cascade_attempts_run"
        " ON llm_cascade_attempts (run_id, id) WHERE run_id IS NOT NULL",
        "CREATE TABLE IF NOT EXISTS llm_cascade_attempt_hourly (hour TIMESTAMPTZ NOT NULL,"
        " cascade_name TEXT NOT NULL, provider_model TEXT NOT NULL, outcome TEXT NOT NULL,"
        " rule TEXT NOT NULL, "
        + ", ".join(f"{c} BIGINT NOT NULL DEFAULT 0" for c in _COUNTS)
        + ", PRIMARY KEY (hour, cascade_name, provider_model, outcome, rule))",
        # answers' latency and time to first token per hour: `stats` and `top` windows
        "CREATE TABLE IF NOT EXISTS llm_cascade_latency_hourly (hour TIMESTAMPTZ NOT NULL,"
        " cascade_name TEXT NOT NULL, provider_model TEXT NOT NULL, metric TEXT NOT NULL,"
        " bucket INTEGER NOT NULL, count BIGINT NOT NULL DEFAULT 0,"
        " PRIMARY KEY (hour, cascade_name, provider_model, metric, bucket))",
        # since the beginning, by error type: what the Prometheus histograms expose
        "CREATE TABLE IF NOT EXISTS llm_cascade_histogram_totals (cascade_name TEXT NOT NULL,"
        " provider_model TEXT NOT NULL, metric TEXT NOT NULL, error TEXT NOT NULL,"
        " bucket INTEGER NOT NULL, count BIGINT NOT NULL DEFAULT 0,"
        f" total BIGINT NOT NULL DEFAULT 0, PRIMARY KEY ({_TOTALS_KEY}))",
        "CREATE TABLE IF NOT EXISTS llm_cascade_entry_errors (provider_model TEXT PRIMARY KEY,"
        " attempt_id BIGINT NOT NULL, timestamp TIMESTAMPTZ, outcome TEXT, http_status INTEGER,"
        " rule TEXT, message TEXT)",
        # The UTC hour of an instant, whatever the session's time zone.
        "CREATE OR REPLACE FUNCTION llm_cascade_hour(t timestamptz) RETURNS timestamptz"
        " LANGUAGE sql IMMUTABLE AS $h$"
        " SELECT to_timestamp(floor(extract(epoch FROM t) / 3600) * 3600) $h$",
        # (version 1's fold functions and trigger: replaced by version 2's below)
    ],
    2: [
        # Each row once: (the local database's id, the row's id there), sent any number of times.
        "ALTER TABLE llm_cascade_attempts ADD COLUMN IF NOT EXISTS source TEXT,"
        " ADD COLUMN IF NOT EXISTS local_id BIGINT",
        "CREATE UNIQUE INDEX IF NOT EXISTS llm_cascade_attempts_local"
        " ON llm_cascade_attempts (source, local_id)",
        # Per host: `stats --by-host`. Sums folded before this version have host ''.
        *(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS host TEXT NOT NULL DEFAULT '',"
            f" DROP CONSTRAINT IF EXISTS {table}_pkey, ADD PRIMARY KEY ({key})"
            for table, key in (
                ("llm_cascade_attempt_hourly", _KEY),
                ("llm_cascade_latency_hourly", _HOURLY_KEY),
            )
        ),
        # The sums of the hourly rows pruned: all-time counts (Prometheus counters) never shrink.
        "CREATE TABLE IF NOT EXISTS llm_cascade_attempt_pruned (cascade_name TEXT NOT NULL,"
        " provider_model TEXT NOT NULL, outcome TEXT NOT NULL, rule TEXT NOT NULL, "
        + ", ".join(f"{c} BIGINT NOT NULL DEFAULT 0" for c in _COUNTS)
        + f", PRIMARY KEY ({_TOTAL_KEY}))",
        # Rows older than this are not sent any more: they were (or would have been) pruned.
        "CREATE TABLE IF NOT EXISTS llm_cascade_log_pruned (before TIMESTAMPTZ NOT NULL)",
        "DROP FUNCTION IF EXISTS llm_cascade_count(timestamptz, text, text, text, text, "
        + ", ".join(["bigint"] * len(_COUNTS))
        + ")",
        "DROP FUNCTION IF EXISTS llm_cascade_observe_hour(timestamptz, text, text, text, integer)",
        _COUNT,
        _OBSERVE_HOUR,
        _OBSERVE,
        _FOLD,
        "DROP TRIGGER IF EXISTS llm_cascade_attempts_fold ON llm_cascade_attempts",
        "CREATE TRIGGER llm_cascade_attempts_fold AFTER INSERT ON llm_cascade_attempts"
        " FOR EACH ROW EXECUTE FUNCTION llm_cascade_fold()",
    ],
}
_INSERT = (
    "INSERT INTO llm_cascade_attempts (source, local_id, host, timestamp, cooldown_until,"
    f" {_ROW_COLUMNS}) VALUES (%s, %s, %s, to_timestamp(%s), to_timestamp(%s), "
    + ", ".join(["%s"] * len(_ROW_COLUMNS.split(",")))
    + ") ON CONFLICT (source, local_id) DO NOTHING"
)
_SUMS = ", ".join(f"SUM({c})::bigint" for c in _COUNTS)
# The hours pruned, moved into the all-time sums in one statement: exactly the rows deleted.
_PRUNE_HOURS = (
    "WITH gone AS (DELETE FROM llm_cascade_attempt_hourly WHERE hour < to_timestamp(%s)"
    f" RETURNING {_TOTAL_KEY}, {', '.join(_COUNTS)})"
    f" INSERT INTO llm_cascade_attempt_pruned AS x ({_TOTAL_KEY}, {', '.join(_COUNTS)})"
    f" SELECT {_TOTAL_KEY}, {_SUMS} FROM gone GROUP BY {_TOTAL_KEY}"
    f" ON CONFLICT ({_TOTAL_KEY}) DO UPDATE SET"
    f" {', '.join(f'{c} = x.{c} + excluded.{c}' for c in _COUNTS)}"
)
_PRUNE_ROWS = (
    "DELETE FROM llm_cascade_attempts WHERE id IN (SELECT id FROM llm_cascade_attempts"
    " WHERE timestamp < to_timestamp(%s) LIMIT %s)"
)
_MARK = "CREATE TABLE IF NOT EXISTS fleet_log_mark (source TEXT NOT NULL, shipped INTEGER NOT NULL)"


def _migrate(conn: psycopg.Connection[Any]) -> None:
    from .breakers.pg import migrate_schema

    migrate_schema(conn, "llm_cascade_log_schema", SCHEMA_VERSION, _MIGRATIONS)


def connection(server: StateConfig) -> PgConnection:
    """A lazy connection to the log's PostgreSQL (psycopg imported now). Raises BackendError
    when the client is not installed or the password cannot be read."""
    from .breakers import BackendError, password_for

    password = password_for(server)
    try:
        from .breakers.pg import PgConnection
    except ImportError as exc:
        raise BackendError(
            "[log] backend = 'postgres' needs its client: pip install 'llm-cascade[postgres]'"
            f" ({exc.name} is not installed)"
        ) from None
    return PgConnection(server, password, _migrate)


def _params(
    source: str, local_id: int, host: str, record: AttemptRecord, now: float
) -> tuple[Any, ...]:
    r = record
    values = (
        source,
        local_id,
        host,
        now,
        r.cooldown_until,
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
        r.run_id,
        r.try_number,
        r.ttft_ms,
        r.chunks,
        r.cost,
    )
    # PostgreSQL text holds no NUL (SQLite's does): one such error text must not cost the log.
    return tuple(v.replace("\x00", "\\0") if isinstance(v, str) else v for v in values)


def _record(row: AttemptRow) -> tuple[AttemptRecord, float | None]:
    """A local row as the writer is handed one: the record and its instant (None: unreadable)."""
    values = {f.name: getattr(row, f.name) for f in fields(AttemptRecord)}
    values["cooldown_until"] = parse_ts(row.cooldown_until) if row.cooldown_until else None
    return AttemptRecord(**values), parse_ts(row.timestamp)


def prune(server: StateConfig, before: float) -> int:
    """Delete every host's rows older than `before` (epoch seconds), `PRUNE_ROWS` per
    statement, and the hourly aggregates of the hours before its hour, their sums moved into
    the all-time ones; the histogram totals stay. Returns how many rows. Raises BackendError."""
    pg = connection(server)
    try:
        hour = before - before % 3600
        with pg.tx() as conn:
            conn.execute("INSERT INTO llm_cascade_log_pruned VALUES (to_timestamp(%s))", (before,))
            conn.execute(_PRUNE_HOURS, (hour,))
            conn.execute(
                "DELETE FROM llm_cascade_latency_hourly WHERE hour < to_timestamp(%s)", (hour,)
            )
        deleted = 0
        while True:
            with pg.tx() as conn:
                count = conn.execute(_PRUNE_ROWS, (before, PRUNE_ROWS)).rowcount
            deleted += count
            if count < PRUNE_ROWS:
                return deleted
    finally:
        pg.close()


class FleetLog:
    """A store's log sink: each row it logs is also written to PostgreSQL, by a writer thread,
    so a run never waits for the server; rows queued meanwhile go in one batch (one round
    trip). While the server fails, rows stay local only: said once per outage, and recorded
    by `on_down(reason)`, called on the caller's thread (it writes the local database).
    The rows it did not write are caught up later from the local log at `local`."""

    BATCH = 100

    def __init__(
        self,
        log: LogConfig,
        local: str,
        on_down: Callable[[str], None] = lambda _reason: None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from .breakers import BackendError

        assert log.server is not None
        self.host = log.host or socket.gethostname()
        self.local = local
        self.on_down = on_down
        self.monotonic = monotonic
        self.timeout_s = log.server.timeout_s
        self.down_until: float | None = None  # rows stay local only until then
        self.caught_up = 0  # rows the catch-up sent (the writer thread's count)
        self._unrecorded: str | None = None  # an outage `on_down` has not been told of
        self._queue: queue.Queue[tuple[int, AttemptRecord, float] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._first_id: int | None = None  # the first row handed over: where a new mark starts
        # the writer thread's own: its local connection, the database's source id, the ids it
        # wrote that the mark has not passed yet, and when the next catch-up pass is due
        self._db: sqlite3.Connection | None = None
        self._source: str | None = None
        self._written: set[int] = set()
        self._next_pass: float | None = 0.0  # at once, after the first batch
        self.pg: PgConnection | None = None
        try:
            self.pg = connection(log.server)
        except BackendError as exc:
            self._down(str(exc))
            self._record()

    def _down(self, reason: str) -> None:
        if self.down_until is None:
            logger.warning(
                "attempt log backend unreachable (%s); this run's attempts stay in the local"
                " log '%s' only",
                reason,
                self.local,
            )
            self._unrecorded = reason
        self.down_until = self.monotonic() + RETRY_S

    def _is_down(self) -> bool:
        return self.down_until is not None and self.monotonic() < self.down_until

    def _record(self) -> None:
        reason, self._unrecorded = self._unrecorded, None
        if reason is not None:
            self.on_down(reason)

    def write(self, row_id: int | None, record: AttemptRecord, now: float) -> None:
        """Hand over the local row `row_id` (committed): it goes to the server soon, or, if
        it cannot now, with a later catch-up."""
        self._record()
        if row_id is None:
            return
        if self._first_id is None:
            self._first_id = row_id
        if self.pg is None or self._is_down():
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="fleet-log", daemon=True)
            self._thread.start()
        self._queue.put((row_id, record, now))

    def _drain(self) -> None:
        try:
            while True:
                item = self._queue.get()
                batch = [] if item is None else [item]
                while item is not None and len(batch) < self.BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        batch.append(item)
                try:
                    if batch and not self._is_down():
                        self._send(batch)
                    self._catch_up(final=item is None)
                finally:
                    for _ in range(len(batch) + (item is None)):
                        self._queue.task_done()
                if item is None:
                    return
        finally:
            if self._db is not None:
                self._db.close()

    def _send(self, batch: list[tuple[int, AttemptRecord, float]]) -> None:
        """Write a batch of this process's rows; on failure they stay local (caught up later)."""
        from .breakers import BackendError

        assert self.pg is not None
        try:
            source = self._source or self._mark()[0]
        except sqlite3.Error as exc:  # left to a later catch-up, once the mark can be read
            logger.debug("fleet log: the local mark cannot be read: %s", exc)
            return
        try:
            rows = [_params(source, i, self.host, record, now) for i, record, now in batch]
            with self.pg.tx() as conn, conn.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
        except BackendError as exc:
            self._down(str(exc))
            return
        if self.down_until is not None:  # back after an outage: catch up at once
            self._next_pass = 0.0
        elif self._next_pass is None:
            self._next_pass = self.monotonic() + CATCH_UP_S
        self.down_until = None
        self._written.update(i for i, _, _ in batch)

    def _catch_up(self, *, final: bool) -> None:
        """Catch-up passes while one is due, the server up and no row waits (`final`: at
        most one, the process is closing)."""
        from .breakers import BackendError

        while (
            self._next_pass is not None
            and self.monotonic() >= self._next_pass
            and not self._is_down()
            and (final or self._queue.empty())
        ):
            try:
                full = self._catch_up_pass()
            except BackendError as exc:
                self._down(str(exc))
                return
            except sqlite3.Error as exc:
                logger.debug("fleet log: no catch-up now: %s", exc)
                full = False
            self._next_pass = self.monotonic() if full else None
            if final:
                return

    def _catch_up_pass(self) -> bool:
        """Send the rows after the local mark that the server lacks (at most CATCH_UP_ROWS),
        then move the mark past them; True if there may be more."""
        assert self.pg is not None
        source, mark = self._mark()
        assert self._db is not None
        cursor = self._db.execute(
            "SELECT * FROM attempt_log WHERE id > ? ORDER BY id LIMIT ?", (mark, CATCH_UP_ROWS)
        )
        cursor.row_factory = sqlite3.Row
        rows = [AttemptRow.from_row(row) for row in cursor]
        if not rows:
            return False
        others = [row for row in rows if row.id not in self._written]
        if others:  # rows this process did not write: send those the server lacks
            with self.pg.tx() as conn:
                found = conn.execute(
                    "SELECT extract(epoch FROM max(before))::float8 FROM llm_cascade_log_pruned"
                ).fetchone()
                horizon = found[0] if found and found[0] is not None else None
                present = {
                    local_id
                    for (local_id,) in conn.execute(
                        "SELECT local_id FROM llm_cascade_attempts"
                        " WHERE source = %s AND local_id = ANY(%s)",
                        (source, [row.id for row in others]),
                    )
                }
                missing = []
                for row in others:
                    record, at = _record(row)
                    if (
                        row.id not in present
                        and at is not None
                        and (horizon is None or at >= horizon)
                    ):
                        missing.append(_params(source, row.id, self.host, record, at))
                if missing:
                    with conn.cursor() as insert:
                        insert.executemany(_INSERT, missing)
            self.caught_up += len(missing)
        upto = rows[-1].id
        self._db.execute("UPDATE fleet_log_mark SET shipped = max(shipped, ?)", (upto,))
        self._written = {i for i in self._written if i > upto}
        return len(rows) == CATCH_UP_ROWS

    def _mark(self) -> tuple[str, int]:
        """This local database's source id and mark, made on first use: the mark then starts
        before the first row this process handed over (older rows are not sent)."""
        if self._db is None:
            self._db = sqlite3.connect(self.local, timeout=5.0, isolation_level=None)
        db = self._db
        try:
            row = db.execute("SELECT source, shipped FROM fleet_log_mark").fetchone()
        except sqlite3.OperationalError:  # no such table yet
            row = None
        if row is None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(_MARK)
                row = db.execute("SELECT source, shipped FROM fleet_log_mark").fetchone()
                if row is None:
                    start = (self._first_id or 1) - 1
                    row = (uuid.uuid4().hex, start)
                    db.execute("INSERT INTO fleet_log_mark VALUES (?, ?)", row)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._source = str(row[0])
        return self._source, int(row[1])

    def flush(self) -> None:
        """Wait until every queued row is written (or given up on), and the catch-up due."""
        if self._thread is not None:
            self._queue.join()
        self._record()

    def close(self) -> None:
        """Write what is queued (and one catch-up pass, if due), waiting at most about two
        timeouts (a server that never answers costs that, not a hang), then close the
        connection."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=2 * max(self.timeout_s, 1.0) + 1.0)
            if not self._thread.is_alive() and self.pg is not None:
                self.pg.close()
            self._thread = None
        elif self.pg is not None:
            self.pg.close()
        self._record()


class FleetLogReader:
    """The fleet's aggregates, as `rollup`'s readers give this host's: a `LogSource`; with
    `host`, that host's part of the hourly ones only."""

    def __init__(self, server: StateConfig, host: str | None = None) -> None:
        self.pg = connection(server)
        self.host = host

    def of_host(self, host: str) -> FleetLogReader:
        """The same connection, reading only `host`'s rows (close this one, not it)."""
        view = copy.copy(self)
        view.host = host
        return view

    def hosts(self, since_hour: str | None = None, cascade: str | None = None) -> list[str]:
        """The hosts with rows from `since_hour` on ('' for sums folded before hosts were
        kept apart), sorted."""
        where, args = _where(since_hour, cascade)
        with self.pg.tx() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT host FROM llm_cascade_attempt_hourly WHERE {where}", args
            ).fetchall()
        return sorted(row[0] for row in rows)

    def counts(
        self, since_hour: str | None = None, cascade: str | None = None
    ) -> list[rollup.Counts]:
        where, args = _where(since_hour, cascade, self.host)
        columns = f"{_TOTAL_KEY}, {', '.join(_COUNTS)}"
        table = "llm_cascade_attempt_hourly"
        if since_hour is None and self.host is None:  # all time: the pruned hours count too
            table = (
                f"(SELECT {columns} FROM llm_cascade_attempt_hourly UNION ALL"
                f" SELECT {columns} FROM llm_cascade_attempt_pruned) AS t"
            )
        with self.pg.tx() as conn:
            rows = conn.execute(
                f"SELECT {_TOTAL_KEY}, {_SUMS} FROM {table} WHERE {where} GROUP BY {_TOTAL_KEY}",
                args,
            ).fetchall()
        return [rollup.Counts(*row) for row in rows]

    def histograms(
        self, since_hour: str | None = None, cascade: str | None = None
    ) -> dict[tuple[str, str, str, str], rollup.Histogram]:
        where, args = _where(since_hour, cascade, self.host)
        if since_hour is None and self.host is None:  # what the Prometheus histograms expose
            sql = (
                "SELECT cascade_name, provider_model, metric, error, bucket, SUM(count)::bigint,"
                f" SUM(total)::bigint FROM llm_cascade_histogram_totals WHERE {where}"
                " GROUP BY 1, 2, 3, 4, 5"
            )
        else:  # the answers of the window
            sql = (
                "SELECT cascade_name, provider_model, metric, '', bucket, SUM(count)::bigint, 0"
                f" FROM llm_cascade_latency_hourly WHERE {where} GROUP BY 1, 2, 3, 4, 5"
            )
        with self.pg.tx() as conn:
            rows = conn.execute(sql, args).fetchall()
        found: dict[tuple[str, str, str, str], rollup.Histogram] = {}
        for cascade_name, entry, metric, error, bucket, count, total in rows:
            key = (cascade_name, entry, metric, error)
            histogram = found.setdefault(key, rollup.Histogram({}))
            histogram.buckets[bucket] = count
            found[key] = rollup.Histogram(histogram.buckets, histogram.total + total)
        return found

    def latest_errors(self) -> dict[str, rollup.LatestError]:
        with self.pg.tx() as conn:
            rows = conn.execute(
                "SELECT provider_model, extract(epoch FROM timestamp)::float8, outcome,"
                " http_status, rule, message FROM llm_cascade_entry_errors"
            ).fetchall()
        return {
            key: rollup.LatestError(None if at is None else format_ts(at), *rest)
            for key, at, *rest in rows
        }

    def cascades_seen(self) -> set[str]:
        where, args = _where(None, None, self.host)
        sql = f"SELECT DISTINCT cascade_name FROM llm_cascade_attempt_hourly WHERE {where}"
        if self.host is None:
            sql += " UNION SELECT cascade_name FROM llm_cascade_attempt_pruned"
        with self.pg.tx() as conn:
            return {row[0] for row in conn.execute(sql, args).fetchall()}

    def ping(self) -> None:
        self.pg.ping()

    def close(self) -> None:
        self.pg.close()


def _where(
    since_hour: str | None, cascade: str | None, host: str | None = None
) -> tuple[str, list[Any]]:
    clauses: list[str] = ["true"]
    args: list[Any] = []
    if since_hour is not None:
        clauses.append("hour >= to_timestamp(%s)")
        args.append(parse_ts(f"{since_hour}:00:00+00:00") or 0.0)
    if cascade is not None:
        clauses.append("cascade_name = %s")
        args.append(cascade)
    if host is not None:
        clauses.append("host = %s")
        args.append(host)
    return " AND ".join(clauses), args
