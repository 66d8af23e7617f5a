"""Aggregates of the attempt log, folded in batches, for `stats`, `metrics` and the dashboard.

Scanning a million attempt rows takes seconds; these tables answer the same questions in
milliseconds. Rows are folded in after they are written, many at a time: `rollup_mark` holds
the id of the last row folded, every reader folds what came after it before it reads, and a
writer folds once `FOLD_EVERY` rows wait. A per-row trigger kept them exact too, but cost
0.4 ms of every attempt's transaction (eleven statements each); in batches a row costs about
a twentieth of that. Rows written by any process count, the original tool's included (it
knows nothing of the aggregates; its rows are folded with the next batch). A database that
had rows before these tables existed is folded in once, by the same statements, when it is
migrated.

- `attempt_hourly` and `attempt_totals`: per (UTC hour,) cascade, entry, outcome and rule:
  rows, tokens, latency, cooldowns set, failovers caused, runs started and answered.
- `latency_hourly`: histograms of answered latency and time to first token, per hour.
- `histogram_totals`: the same since the beginning, plus request duration of every attempt
  and token counts: what the Prometheus histograms expose.
- `entry_errors`: each entry's latest error.

Histograms count integer milliseconds in buckets exact below 10 ms and about 9 % wide above
(each bound is 10 ms * 2^(k/8), so 10, 20, 40 … ms are bounds); token counts use the
OpenTelemetry GenAI bucket bounds. `log --prune` drops the hourly rows with the raw rows;
the totals only grow, as Prometheus counters must.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

# --- histogram buckets ---------------------------------------------------------------------

OVERFLOW = 2**63 - 1  # the last bucket's bound: every value falls in some bucket


def _ms_bounds() -> tuple[int, ...]:
    bounds = list(range(10))
    k = 0
    while True:
        value = round(10 * 2 ** (k / 8))
        if value > 3_600_000:  # an hour: no request takes longer
            break
        if value > bounds[-1]:
            bounds.append(value)
        k += 1
    return (*bounds, OVERFLOW)


MS_BOUNDS: tuple[int, ...] = _ms_bounds()
# gen_ai.client.token.usage's advised bucket bounds
TOKEN_BOUNDS: tuple[int, ...] = (*(4**i for i in range(14)), OVERFLOW)
SCHEMES = {"ms": MS_BOUNDS, "tokens": TOKEN_BOUNDS}

# --- schema ----------------------------------------------------------------------------------

_COUNTS = (
    "attempts",  # rows, whatever their outcome
    "input_tokens",
    "output_tokens",
    "latency_ms",  # summed
    "cooldowns",  # rows that set a cooldown
    "failovers",  # failures after which the run went on to another entry
    "runs",  # runs whose first row this is (the cascade's first entry)
    "answered_runs",  # answers of a run (one per run at most)
    "first_answered",  # answers by a run's first entry
)
_KEY = ("cascade_name", "provider_model", "outcome", "rule")


def _counts_table(name: str, hourly: bool) -> str:
    key = ("hour", *_KEY) if hourly else _KEY
    columns = [f"{k} TEXT NOT NULL" for k in key]
    columns += [f"{c} INTEGER NOT NULL DEFAULT 0" for c in _COUNTS]
    return (
        f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(columns)},"
        f" PRIMARY KEY ({', '.join(key)})) WITHOUT ROWID"
    )


SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS histogram_bounds (scheme TEXT NOT NULL, upper INTEGER NOT NULL,"
    " bucket INTEGER NOT NULL, PRIMARY KEY (scheme, upper)) WITHOUT ROWID",
    _counts_table("attempt_hourly", hourly=True),
    _counts_table("attempt_totals", hourly=False),
    "CREATE TABLE IF NOT EXISTS latency_hourly (hour TEXT NOT NULL, cascade_name TEXT NOT NULL,"
    " provider_model TEXT NOT NULL, metric TEXT NOT NULL, bucket INTEGER NOT NULL,"
    " count INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (hour, cascade_name, provider_model, metric, bucket)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS histogram_totals (cascade_name TEXT NOT NULL,"
    " provider_model TEXT NOT NULL, metric TEXT NOT NULL, error TEXT NOT NULL,"
    " bucket INTEGER NOT NULL, count INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (cascade_name, provider_model, metric, error, bucket)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS entry_errors (provider_model TEXT PRIMARY KEY,"
    " attempt_id INTEGER NOT NULL, timestamp TEXT, outcome TEXT, http_status INTEGER,"
    " rule TEXT, message TEXT) WITHOUT ROWID",
    # The previous row of a run, looked up for every new row, is one index seek away.
    "CREATE INDEX IF NOT EXISTS attempt_log_run ON attempt_log (run_id) WHERE run_id IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS rollup_mark (id INTEGER NOT NULL)",  # the last row folded
)
FOLD_EVERY = 64  # rows a writer lets wait before it folds them (about 1.5 ms of work)

# --- the statements that fold rows in --------------------------------------------------------

# The original wrote no outcome: 2xx answered, anything else failed (as AttemptRow reads it).
OUTCOME = (
    "COALESCE(NULLIF(r.outcome, ''), CASE WHEN r.http_status < 400 THEN 'ok' ELSE 'failed' END)"
)
_COLUMNS = (
    "id",
    "timestamp",
    "cascade_name",
    "provider_model",
    "http_status",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "outcome",
    "error_kind",
    "error_message",
    "rule",
    "cooldown_until",
    "run_id",
    "ttft_ms",
)
# The rows of one batch: after the mark, up to the newest row when the batch began. Bound
# as parameters, so the statements are compiled once per connection and then reused.
_BATCH = "(SELECT " + ", ".join(_COLUMNS) + " FROM attempt_log WHERE id > :after AND id <= :upto)"
# Requests that reached (or were cut short at) a provider: what a duration measures.
_REQUEST = (
    "(a.outcome IN ('ok', 'failed', 'retrying') OR (a.outcome = 'deadline' AND a.latency_ms > 0))"
)
_ERROR_TYPE = (
    "CASE WHEN a.outcome = 'ok' THEN '' WHEN a.rule != '' THEN a.rule"
    " WHEN a.http_status IS NOT NULL THEN CAST(a.http_status AS TEXT) ELSE '_OTHER' END"
)
_IS_ERROR = (
    "(a.outcome IN ('failed', 'retrying', 'deadline', 'missing_key')"
    " OR (a.outcome = 'probe' AND a.error_kind IS NOT NULL))"
)


def _source(rows: str) -> str:
    """The rows as the statements read them (alias `a`): outcome and rule made explicit, the
    hour taken from the UTC timestamp, and whether the row opens its run."""
    return (
        "(SELECT r.id AS id, r.timestamp AS timestamp, substr(r.timestamp, 1, 13) AS hour,"
        " r.cascade_name AS cascade_name, r.provider_model AS provider_model,"
        f" {OUTCOME} AS outcome, COALESCE(r.rule, '') AS rule, r.http_status AS http_status,"
        " r.latency_ms AS latency_ms, r.input_tokens AS input_tokens,"
        " r.output_tokens AS output_tokens, r.ttft_ms AS ttft_ms,"
        " r.cooldown_until AS cooldown_until, r.run_id AS run_id, r.error_kind AS error_kind,"
        " r.error_message AS error_message,"
        f" (r.run_id IS NOT NULL AND {OUTCOME} != 'probe' AND NOT EXISTS (SELECT 1 FROM"
        " attempt_log AS p WHERE p.run_id = r.run_id AND p.id < r.id)) AS first_of_run"
        f" FROM {rows} AS r) AS a"
    )


def _bucket(scheme: str, value: str) -> str:
    last = len(SCHEMES[scheme]) - 1  # a value no bound holds (text in a number column)
    return (
        f"COALESCE((SELECT b.bucket FROM histogram_bounds AS b WHERE b.scheme = '{scheme}'"
        f" AND b.upper >= {value} ORDER BY b.upper LIMIT 1), {last})"
    )


def _upsert(table: str, key: Sequence[str], values: Sequence[str], select: str) -> str:
    """INSERT … SELECT that adds its sums to the row of the same key (the WHERE in `select`
    keeps SQLite from reading ON CONFLICT as a join constraint)."""
    columns = [*key, *values]
    adds = ", ".join(f"{v} = {v} + excluded.{v}" for v in values)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) {select}"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {adds}"
    )


def _counts(rows: str, table: str, hourly: bool) -> list[str]:
    key = ["hour", *_KEY] if hourly else list(_KEY)
    picked = ", ".join(f"a.{k}" for k in key)
    sums = (
        "COUNT(*), COALESCE(SUM(a.input_tokens), 0), COALESCE(SUM(a.output_tokens), 0),"
        " COALESCE(SUM(a.latency_ms), 0), SUM(a.cooldown_until IS NOT NULL), 0,"
        " SUM(a.first_of_run), SUM(a.run_id IS NOT NULL AND a.outcome = 'ok'),"
        " SUM(a.first_of_run AND a.outcome = 'ok')"
    )
    rows_in = _upsert(
        table,
        key,
        _COUNTS,
        f"SELECT {picked}, {sums} FROM {_source(rows)} WHERE true GROUP BY {picked}",
    )
    # A row after a failure of its run means the run failed over from that entry: credit it.
    previous = ["substr(p.timestamp, 1, 13)"] if hourly else []
    previous += ["p.cascade_name", "p.provider_model", "'failed'", "COALESCE(p.rule, '')"]
    failovers = _upsert(
        table,
        key,
        ["failovers"],
        f"SELECT {', '.join(previous)}, COUNT(*) FROM {_source(rows)}"
        " JOIN attempt_log AS p ON p.id = (SELECT q.id FROM attempt_log AS q"
        " WHERE q.run_id = a.run_id AND q.id < a.id ORDER BY q.id DESC LIMIT 1)"
        f" WHERE a.run_id IS NOT NULL AND p.outcome = 'failed' GROUP BY {', '.join(previous)}",
    )
    return [rows_in, failovers]


def _histogram(rows: str, metric: str, value: str, where: str, *, hourly: bool) -> str:
    scheme = "tokens" if metric.endswith("tokens") else "ms"
    if hourly:
        key = ["hour", "cascade_name", "provider_model", "metric", "bucket"]
        picked = f"a.hour, a.cascade_name, a.provider_model, '{metric}', {_bucket(scheme, value)}"
        return _upsert(
            "latency_hourly",
            key,
            ["count"],
            f"SELECT {picked}, COUNT(*) FROM {_source(rows)} WHERE {where} GROUP BY 1, 2, 3, 4, 5",
        )
    key = ["cascade_name", "provider_model", "metric", "error", "bucket"]
    picked = (
        f"a.cascade_name, a.provider_model, '{metric}', {_ERROR_TYPE}, {_bucket(scheme, value)}"
    )
    return _upsert(
        "histogram_totals",
        key,
        ["count", "total"],
        f"SELECT {picked}, COUNT(*), COALESCE(SUM({value}), 0) FROM {_source(rows)}"
        f" WHERE {where} GROUP BY 1, 2, 3, 4, 5",
    )


def _latest_error(rows: str) -> str:
    # With a lone MAX(), SQLite takes the other columns from the row that has it.
    return (
        "INSERT INTO entry_errors (provider_model, attempt_id, timestamp, outcome, http_status,"
        " rule, message) SELECT a.provider_model, MAX(a.id), a.timestamp, a.outcome,"
        f" a.http_status, a.rule, a.error_message FROM {_source(rows)} WHERE {_IS_ERROR}"
        " GROUP BY a.provider_model ON CONFLICT (provider_model) DO UPDATE SET"
        " attempt_id = excluded.attempt_id, timestamp = excluded.timestamp,"
        " outcome = excluded.outcome, http_status = excluded.http_status,"
        " rule = excluded.rule, message = excluded.message"
        " WHERE excluded.attempt_id > entry_errors.attempt_id"
    )


def fold_statements(rows: str = _BATCH) -> list[str]:
    """Every statement that adds `rows` (by default one batch) to the aggregates."""
    answered = "a.outcome = 'ok'"
    with_ttft = f"{answered} AND a.ttft_ms IS NOT NULL"
    return [
        *_counts(rows, "attempt_hourly", hourly=True),
        *_counts(rows, "attempt_totals", hourly=False),
        _histogram(rows, "latency", "a.latency_ms", answered, hourly=True),
        _histogram(rows, "ttft", "a.ttft_ms", with_ttft, hourly=True),
        _histogram(rows, "duration", "a.latency_ms", _REQUEST, hourly=False),
        _histogram(rows, "ttft", "a.ttft_ms", with_ttft, hourly=False),
        _histogram(
            rows,
            "input_tokens",
            "a.input_tokens",
            f"{answered} AND a.input_tokens IS NOT NULL",
            hourly=False,
        ),
        _histogram(
            rows,
            "output_tokens",
            "a.output_tokens",
            f"{answered} AND a.output_tokens IS NOT NULL",
            hourly=False,
        ),
        _latest_error(rows),
    ]


_FOLD: list[str] = []  # fold_statements(), built on first use: importing stays cheap
OLD_TRIGGER = "attempt_log_rollup"  # schema 3 and 4 folded each row as it was written


def install(conn: sqlite3.Connection) -> None:
    """Create the aggregates and fold in the rows already logged.

    Runs inside the migration's write transaction: other processes see all of it or none.
    """
    for statement in SCHEMA:
        conn.execute(statement)
    conn.executemany(
        "INSERT OR REPLACE INTO histogram_bounds (scheme, upper, bucket) VALUES (?, ?, ?)",
        [(s, upper, i) for s, bounds in SCHEMES.items() for i, upper in enumerate(bounds)],
    )
    if conn.execute("SELECT 1 FROM rollup_mark").fetchone():
        return
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?"
    folded = conn.execute(exists, (OLD_TRIGGER,)).fetchone() is not None
    conn.execute(f"DROP TRIGGER IF EXISTS {OLD_TRIGGER}")
    # Under the old trigger every row is already in; otherwise none is.
    conn.execute("INSERT INTO rollup_mark (id) VALUES (?)", (newest(conn) if folded else 0,))
    catch_up(conn)


def newest(conn: sqlite3.Connection) -> int:
    """The id of the newest attempt row (0 when there is none)."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM attempt_log").fetchone()[0])


def folded_up_to(conn: sqlite3.Connection) -> int:
    """The id of the last row in the aggregates (0 before the first fold)."""
    row = conn.execute("SELECT id FROM rollup_mark").fetchone()
    return int(row[0]) if row else 0


def catch_up(conn: sqlite3.Connection) -> int:
    """Fold every row after the mark into the aggregates; returns the new mark.

    Call it inside a write transaction: the rows, the sums and the mark move together, so
    two processes folding at once never count a row twice.
    """
    after, upto = folded_up_to(conn), newest(conn)
    if upto <= after:
        return after
    if not _FOLD:
        _FOLD.extend(fold_statements())
    bounds = {"after": after, "upto": upto}
    for statement in _FOLD:
        conn.execute(statement, bounds)
    conn.execute("UPDATE rollup_mark SET id = ?", (upto,))
    return upto


def prune_hourly(conn: sqlite3.Connection, before_hour: str) -> None:
    """Drop the hourly aggregates of hours before `before_hour` (`YYYY-MM-DDTHH`)."""
    for table in ("attempt_hourly", "latency_hourly"):
        conn.execute(f"DELETE FROM {table} WHERE hour < ?", (before_hour,))


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """The sums of one (cascade, entry, outcome, rule) over a window or all time."""

    cascade: str
    entry: str
    outcome: str
    rule: str
    attempts: int
    input_tokens: int
    output_tokens: int
    latency_ms: int
    cooldowns: int
    failovers: int
    runs: int
    answered_runs: int
    first_answered: int


@dataclass(frozen=True, slots=True)
class Histogram:
    """Observations per bucket index of the metric's scheme, and their sum (all time only)."""

    buckets: dict[int, int]
    total: int = 0

    @property
    def count(self) -> int:
        return sum(self.buckets.values())


@dataclass(frozen=True, slots=True)
class LatestError:
    timestamp: str | None
    outcome: str | None
    http_status: int | None
    rule: str | None
    message: str | None


def _where(since_hour: str | None, cascade: str | None) -> tuple[str, list[str]]:
    clauses, args = ["true"], []
    if since_hour is not None:
        clauses.append("hour >= ?")
        args.append(since_hour)
    if cascade is not None:
        clauses.append("cascade_name = ?")
        args.append(cascade)
    return " AND ".join(clauses), args


def counts(
    conn: sqlite3.Connection, since_hour: str | None = None, cascade: str | None = None
) -> list[Counts]:
    """Sums per (cascade, entry, outcome, rule): of the hours from `since_hour` on, else of
    all time."""
    table = "attempt_totals" if since_hour is None else "attempt_hourly"
    where, args = _where(since_hour, cascade)
    sums = ", ".join(f"SUM({c})" for c in _COUNTS)
    rows = conn.execute(
        f"SELECT {', '.join(_KEY)}, {sums} FROM {table} WHERE {where} GROUP BY {', '.join(_KEY)}",
        args,
    )
    return [Counts(*row) for row in rows]


def histograms(
    conn: sqlite3.Connection, since_hour: str | None = None, cascade: str | None = None
) -> dict[tuple[str, str, str, str], Histogram]:
    """Per (cascade, entry, metric, error type): the hourly histograms of answers (`latency`,
    `ttft`; error type '') from `since_hour` on, else the all-time ones (`duration` of every
    request by error type, `ttft`, `input_tokens`, `output_tokens`)."""
    where, args = _where(since_hour, cascade)
    if since_hour is None:
        sql = (
            "SELECT cascade_name, provider_model, metric, error, bucket, SUM(count), SUM(total)"
            f" FROM histogram_totals WHERE {where} GROUP BY 1, 2, 3, 4, 5"
        )
    else:
        sql = (
            "SELECT cascade_name, provider_model, metric, '', bucket, SUM(count), 0"
            f" FROM latency_hourly WHERE {where} GROUP BY 1, 2, 3, 4, 5"
        )
    found: dict[tuple[str, str, str, str], Histogram] = {}
    for cascade_name, entry, metric, error, bucket, count, total in conn.execute(sql, args):
        key = (cascade_name, entry, metric, error)
        histogram = found.setdefault(key, Histogram({}))
        histogram.buckets[bucket] = count
        found[key] = Histogram(histogram.buckets, histogram.total + total)
    return found


def latest_errors(conn: sqlite3.Connection) -> dict[str, LatestError]:
    """Each entry's latest error (failure, retried failure, deadline, missing key, probe)."""
    rows = conn.execute(
        "SELECT provider_model, timestamp, outcome, http_status, rule, message FROM entry_errors"
    )
    return {row[0]: LatestError(*row[1:]) for row in rows}


def cascades_seen(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT DISTINCT cascade_name FROM attempt_totals")}
