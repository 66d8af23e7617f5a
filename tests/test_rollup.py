"""The aggregates behind `stats` and `metrics`, on real SQLite files: folding row by row, in
one batch and at migration agree, writers fold on their own once enough rows wait, two
processes folding at once count each row once, rows the original tool writes count, prune
keeps totals."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from llm_cascade import rollup
from llm_cascade.store import AttemptRecord, Store

from .test_store import ORIGINAL_DDL

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TABLES = ("attempt_hourly", "attempt_totals", "latency_hourly", "histogram_totals", "entry_errors")


def log_runs(store: Store, after_each: Callable[[], None] = lambda: None) -> None:
    """Two runs of our engine: a 429 that fails over to an answer, then a first-entry answer."""
    store.record_failure(
        AttemptRecord("c", "a/x", 429, 30, outcome="failed", rule="rate_limited", run_id="r1"),
        T0,
        lambda level: 30.0,
    )
    after_each()
    store.log_attempt(AttemptRecord("c", "b/y", None, 0, outcome="skipped", run_id="r1"), T0)
    after_each()
    store.record_success(AttemptRecord("c", "d/z", 200, 120, 11, 7, run_id="r1", ttft_ms=40), T0)
    after_each()
    store.record_success(AttemptRecord("c", "a/x", 200, 80, 11, 7, run_id="r2"), T0 + 3600)
    after_each()


def log_original_rows(conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
        " latency_ms, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            ("2026-01-01T00:30:00.123456789+00:00", "c", "a/x", 500, 900, None, None),
            ("2026-01-01T00:31:00Z", "c", "a/x", 200, 95, 12, 40),
            ("2026-01-01T00:32:00+00:00", "c", "a/x", None, 3, None, None),
        ],
    )


def aggregates(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4, 5").fetchall() for t in TABLES
        }
    finally:
        conn.close()


def test_folding_row_by_row_in_one_batch_and_at_migration_agree(tmp_path):
    each = tmp_path / "each.sqlite"
    with Store(each) as store:  # a reader after every row
        log_runs(store, store.fold_log)
        log_original_rows(store.conn)
        store.fold_log()
    batch = tmp_path / "batch.sqlite"
    with Store(batch) as store:  # one reader after all of them
        log_runs(store)
        log_original_rows(store.conn)
        assert aggregates(batch)["attempt_totals"] == []  # nothing folded yet
        store.fold_log()
    late = tmp_path / "late.sqlite"
    with Store(late) as store:  # the same rows, logged before the aggregates existed
        log_runs(store)
        log_original_rows(store.conn)
        for table in (*TABLES, "rollup_mark"):
            store.conn.execute(f"DROP TABLE {table}")
        store.conn.execute("PRAGMA user_version = 2")
    Store(late).close()  # the migration folds them in
    assert aggregates(late) == aggregates(batch) == aggregates(each)
    assert aggregates(each)["attempt_totals"]  # not vacuous


def test_a_database_whose_trigger_folded_every_row_is_not_folded_twice(tmp_path):
    path = tmp_path / "db.sqlite"
    with Store(path) as store:
        log_runs(store)
        store.fold_log()
        exact = aggregates(path)
        # As schema 4 left it: every row already in, a trigger folding the next, no mark.
        store.conn.execute("DROP TABLE rollup_mark")
        store.conn.execute(
            f"CREATE TRIGGER {rollup.OLD_TRIGGER} AFTER INSERT ON attempt_log BEGIN SELECT 1; END"
        )
        store.conn.execute("PRAGMA user_version = 4")
    with Store(path) as store:
        store.fold_log()
        triggers = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
    assert aggregates(path) == exact
    assert rollup.OLD_TRIGGER not in triggers


def test_a_writer_folds_by_itself_once_enough_rows_wait(tmp_path):
    path = tmp_path / "db.sqlite"

    def attempts() -> int:
        return sum(r[4] for r in aggregates(path)["attempt_totals"])

    with Store(path) as store:
        for _ in range(rollup.FOLD_EVERY - 1):
            store.log_attempt(AttemptRecord("c", "a/x", 200, 10), T0)
        assert attempts() == 0
        store.record_success(AttemptRecord("c", "a/x", 200, 10), T0)
        assert attempts() == rollup.FOLD_EVERY
        store.log_attempt(AttemptRecord("c", "a/x", 200, 10), T0)
        assert attempts() == rollup.FOLD_EVERY  # the next batch waits again


def test_two_processes_folding_the_same_rows_count_each_once(tmp_path):
    path = tmp_path / "db.sqlite"
    with Store(path) as one, Store(path) as two:
        for i in range(10):
            (one if i % 2 else two).log_attempt(AttemptRecord("c", "a/x", 200, 10), T0)
        two.fold_log()
        one.fold_log()  # its idea of the mark is stale: it must read the mark again
        one.log_attempt(AttemptRecord("c", "a/x", 200, 10), T0)
        two.fold_log()
        one.fold_log()
    assert [r[4] for r in aggregates(path)["attempt_totals"]] == [11]


def test_runs_failovers_and_first_entry_answers_are_counted(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        log_runs(store)
        store.fold_log()
        rows = store.conn.execute(
            "SELECT provider_model, outcome, rule, attempts, failovers, runs, answered_runs,"
            " first_answered, cooldowns FROM attempt_totals ORDER BY 1, 2"
        ).fetchall()
    assert rows == [
        ("a/x", "failed", "rate_limited", 1, 1, 1, 0, 0, 1),  # opened run 1, failed it over
        ("a/x", "ok", "", 1, 0, 1, 1, 1, 0),  # opened run 2 and answered it
        ("b/y", "skipped", "", 1, 0, 0, 0, 0, 0),
        ("d/z", "ok", "", 1, 0, 0, 1, 0, 0),  # answered run 1, not as its first entry
    ]


def test_rows_the_original_tool_writes_are_counted_with_the_outcome_it_meant(tmp_path):
    path = tmp_path / "db.sqlite"
    Store(path).close()  # our database, then the original binary writes to it
    conn = sqlite3.connect(path)
    log_original_rows(conn)
    conn.commit()
    with Store(path) as store:  # what a reader (`stats`, `metrics`) does first
        store.fold_log()
    totals = conn.execute(
        "SELECT outcome, attempts, input_tokens, output_tokens FROM attempt_totals ORDER BY 1"
    ).fetchall()
    error = conn.execute("SELECT outcome, http_status FROM entry_errors").fetchone()
    conn.close()
    assert totals == [("failed", 2, 0, 0), ("ok", 1, 12, 40)]
    assert error == ("failed", None)  # the latest failure: no status at all


def test_an_original_database_is_folded_in_when_first_opened(tmp_path):
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(ORIGINAL_DDL)
    log_original_rows(conn)
    conn.commit()
    conn.close()
    Store(path).close()
    hourly = aggregates(path)["attempt_hourly"]
    assert [(r[0], r[3], r[5]) for r in hourly] == [
        ("2026-01-01T00", "failed", 2),
        ("2026-01-01T00", "ok", 1),
    ]


def test_prune_drops_old_hours_but_keeps_the_totals(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        log_runs(store)
        store.prune(T0 + 3600)  # the hour of 00:00, not that of 01:00
        hours = {r[0] for r in store.conn.execute("SELECT hour FROM attempt_hourly")}
        latency_hours = {r[0] for r in store.conn.execute("SELECT hour FROM latency_hourly")}
        totals = store.conn.execute("SELECT SUM(attempts) FROM attempt_totals").fetchone()[0]
    assert hours == latency_hours == {"2026-01-01T01"}
    assert totals == 4


def test_every_value_finds_a_bucket_even_one_no_bound_holds(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        store.log_attempt(AttemptRecord("c", "a/x", 200, 10**15, 11, 7), T0)
        store.conn.execute(  # what a broken writer could leave in a number column
            "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
            " latency_ms) VALUES ('2026-01-01T00:00:00Z', 'c', 'a/x', 200, 'n/a')"
        )
        store.fold_log()
        buckets = store.conn.execute(
            "SELECT bucket, count FROM latency_hourly WHERE metric = 'latency'"
        ).fetchall()
    assert buckets == [(len(rollup.MS_BOUNDS) - 1, 2)]
    assert rollup.MS_BOUNDS[:12] == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    assert {10, 20, 40, 81920} <= set(rollup.MS_BOUNDS)  # the OpenTelemetry duration bounds
