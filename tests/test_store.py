"""The SQLite store against real files: migration of the original's database, breaker state,
permissions, and the one timestamp format."""

from __future__ import annotations

import math
import multiprocessing
import re
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.clock import format_ts, parse_ts
from llm_cascade.rules import CooldownPolicy
from llm_cascade.store import LATEST_INSTANT, SCHEMA_VERSION, AttemptRecord, Store, StoreError

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KEY = "openai/gpt-4o"
TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")

# Byte for byte what the original tool creates.
ORIGINAL_DDL = """
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
ORIGINAL_COLUMNS = [
    "id",
    "timestamp",
    "cascade_name",
    "provider_model",
    "http_status",
    "latency_ms",
    "input_tokens",
    "output_tokens",
]
# Rows as the original writes them: 9 fractional digits, or none at all.
ORIGINAL_LOG = [
    ("2026-04-14T09:15:02.123456789+00:00", "x", KEY, 503, 812, None, None),
    ("2026-04-14T09:15:03+00:00", "x", "groq/llama", 200, 95, 12, 40),
    ("2026-04-14T09:15:04.5+00:00", "x", KEY, None, 3, None, None),
    ("2026-04-14T09:15:05.120+00:00", "x", KEY, 429, 40, None, None),
]
ORIGINAL_COOLDOWNS = [
    (KEY, "2026-04-14T09:15:32.123456789+00:00"),
    ("groq/llama", "2026-04-14T09:16:00+00:00"),
]


def original_database(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(ORIGINAL_DDL)
    conn.executemany(
        "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
        " latency_ms, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ORIGINAL_LOG,
    )
    conn.executemany("INSERT INTO cooldown VALUES (?, ?)", ORIGINAL_COOLDOWNS)
    conn.commit()
    conn.close()
    return path


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def failed(key: str = KEY, status: int | None = 500, rule: str = "server_error") -> AttemptRecord:
    return AttemptRecord("x", key, status, 12, outcome="failed", rule=rule)


def ok(key: str = KEY) -> AttemptRecord:
    return AttemptRecord("x", key, 200, 30, 11, 7)


def cooldown_row(store: Store, key: str = KEY) -> dict[str, object] | None:
    cursor = store.conn.execute("SELECT * FROM cooldown WHERE provider_model = ?", (key,))
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "db.sqlite") as opened:
        yield opened


# --- the original's database -----------------------------------------------------------------


def test_original_database_is_migrated_additively(tmp_path):
    path = original_database(tmp_path / "db.sqlite")

    with Store(path) as store:
        conn = store.conn
        log_columns = columns(conn, "attempt_log")
        cooldown_columns = columns(conn, "cooldown")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    assert log_columns[:8] == ORIGINAL_COLUMNS  # the original's columns, in place and in order
    assert {"outcome", "error_kind", "error_message", "rule", "run_id"} <= set(log_columns[8:])
    assert cooldown_columns[:2] == ["provider_model", "cooldown_until"]
    assert {"failures", "probe_owner", "probe_until"} <= set(cooldown_columns[2:])

    raw = sqlite3.connect(path)
    assert (
        raw.execute(
            "SELECT timestamp, cascade_name, provider_model, http_status, latency_ms,"
            " input_tokens, output_tokens FROM attempt_log ORDER BY id"
        ).fetchall()
        == ORIGINAL_LOG
    )
    assert raw.execute("SELECT provider_model, cooldown_until FROM cooldown").fetchall() == (
        ORIGINAL_COOLDOWNS
    )
    # Every added column is nullable, so the original's own INSERTs keep working.
    notnull = {row[1] for row in raw.execute("PRAGMA table_info(attempt_log)") if row[3]}
    assert notnull == {"timestamp", "cascade_name", "provider_model", "latency_ms"}
    raw.close()


def test_queries_and_writes_of_the_original_still_work_after_migration(tmp_path):
    path = original_database(tmp_path / "db.sqlite")
    Store(path).close()

    raw = sqlite3.connect(path)
    # The original's backoff query and its writes, unchanged.
    count = raw.execute(
        "SELECT count(*) FROM attempt_log WHERE provider_model=? AND http_status >= 400", (KEY,)
    ).fetchone()[0]
    assert count == 2
    raw.execute(
        "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
        " latency_ms, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("2026-04-14T10:00:00.000000001+00:00", "x", KEY, 500, 7, None, None),
    )
    raw.execute(
        "INSERT INTO cooldown (provider_model, cooldown_until) VALUES (?, ?)"
        " ON CONFLICT(provider_model) DO UPDATE SET cooldown_until = excluded.cooldown_until",
        (KEY, "2026-04-14T10:00:30+00:00"),
    )
    raw.commit()
    raw.close()

    with Store(path) as store:
        assert store.recent_attempts(1)[0].http_status == 500
        assert store.states([KEY])[KEY].cooldown_until == parse_ts("2026-04-14T10:00:30+00:00")
        rows = store.recent_attempts()
    # The original wrote no outcome: a 2xx answered, anything else (or no status) failed.
    assert [r.outcome for r in rows] == ["failed", "ok", "failed", "failed", "failed"]


def test_a_version_1_database_gains_the_stream_and_cost_columns(tmp_path):
    path = tmp_path / "db.sqlite"
    with Store(path) as store:
        store.log_attempt(ok(), T0)
    raw = sqlite3.connect(path)  # as a version-1 database left it: without the new columns
    for table in (  # nor the aggregates that read them
        *("attempt_hourly", "attempt_totals", "latency_hourly", "histogram_totals"),
        *("entry_route", "spend"),
    ):
        raw.execute(f"DROP TABLE {table}")
    raw.execute("DROP TABLE rollup_mark")
    for name in ("ttft_ms", "chunks", "cost"):
        raw.execute(f"ALTER TABLE attempt_log DROP COLUMN {name}")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with Store(path) as store:
        assert {"ttft_ms", "chunks", "cost"} <= set(columns(store.conn, "attempt_log"))
        store.log_attempt(AttemptRecord("x", KEY, 200, 30, ttft_ms=12, chunks=40, cost=0.5), T0)
        old, new = store.recent_attempts()
    assert (old.ttft_ms, old.chunks, old.cost) == (None, None, None)
    assert (new.ttft_ms, new.chunks, new.cost) == (12, 40, 0.5)


def test_migration_runs_once_and_reopening_changes_nothing(tmp_path):
    path = original_database(tmp_path / "db.sqlite")
    Store(path).close()
    before = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    Store(path).close()
    after = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert before == after


def test_cooldowns_written_by_the_original_are_read_at_full_precision(tmp_path):
    path = original_database(tmp_path / "db.sqlite")
    with Store(path) as store:
        states = store.states([KEY, "groq/llama", "never/seen"])
    expected = datetime(2026, 4, 14, 9, 15, 32, 123457, tzinfo=UTC).timestamp()
    assert states[KEY].cooldown_until == pytest.approx(expected, abs=1e-6)
    assert states[KEY].failures == 0  # the original has no counter: NULL reads as 0
    assert (
        states["groq/llama"].cooldown_until == datetime(2026, 4, 14, 9, 16, tzinfo=UTC).timestamp()
    )
    assert states["never/seen"].cooldown_until is None


def test_a_failure_never_shortens_a_cooldown_the_original_wrote(tmp_path):
    path = original_database(tmp_path / "db.sqlite")
    written = parse_ts("2026-04-14T09:15:32.123456789+00:00")
    assert written is not None
    with Store(path) as store:
        until, level = store.record_failure(failed(), written - 20, lambda _: 5.0)
    assert until == pytest.approx(written, abs=1e-6)
    assert level == 1


# --- opening ---------------------------------------------------------------------------------


def test_database_uses_wal(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_new_database_is_owner_only_and_new_parents_are_0700(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    existing.chmod(0o755)
    path = existing / "a" / "b" / "db.sqlite"
    with Store(path) as store:
        store.log_attempt(ok(), T0)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name("db.sqlite-wal")
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    assert stat.S_IMODE((existing / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((existing / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # parents that existed are left alone


def test_a_path_that_cannot_be_a_database_is_a_store_error(tmp_path):
    directory = tmp_path / "not-a-db"
    directory.mkdir()
    with pytest.raises(StoreError, match=r"Error initializing database '.*not-a-db'"):
        Store(directory)


def _open_fresh_databases(barrier: Any, root: str, rounds: int, failures: Any) -> None:
    """One of many processes: open database i of `root` at the same instant as the others."""
    failed_opens = 0
    for i in range(rounds):
        barrier.wait()
        try:
            with Store(Path(root) / f"db{i}.sqlite") as opened:
                opened.states([KEY])
        except StoreError:
            failed_opens += 1
    failures.put(failed_opens)


def test_many_processes_creating_one_new_database_at_once_all_open_it(tmp_path):
    """Switching a new file to WAL ignores the busy timeout: openers racing on it must wait."""
    ctx = multiprocessing.get_context("spawn")
    processes, rounds = 16, 100
    barrier, failures = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=_open_fresh_databases, args=(barrier, str(tmp_path), rounds, failures))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    failed_opens = [failures.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert len(list(tmp_path.glob("db*.sqlite"))) == rounds
    assert failed_opens == [0] * processes


def test_a_failed_commit_rolls_back_and_the_connection_stays_usable(tmp_path):
    path = tmp_path / "db.sqlite"
    with Store(path) as store:
        store.log_attempt(ok(), T0)
        # A trigger that fails only at COMMIT time: a deferred foreign key violation.
        store.conn.executescript(
            "PRAGMA foreign_keys = ON;"
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        )
        with pytest.raises(sqlite3.IntegrityError), store._write() as conn:
            conn.execute("INSERT INTO child VALUES (42)")
        assert not store.conn.in_transaction
        store.log_attempt(ok(), T0 + 1)  # a new transaction starts cleanly
        assert len(store.recent_attempts()) == 2
        assert store.conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0


def test_an_error_after_sqlite_rolled_back_by_itself_is_not_masked(tmp_path):
    """ROLLBACK with no open transaction would raise and hide the real error."""
    with Store(tmp_path / "db.sqlite") as store:
        with pytest.raises(ZeroDivisionError), store._write() as conn:
            conn.execute("ROLLBACK")  # as SQLite does by itself on some I/O errors
            raise ZeroDivisionError
        assert not store.conn.in_transaction


def test_breaker_phases_are_named_in_one_place():
    from llm_cascade.store import EntryState

    assert EntryState(KEY).phase(T0) == "closed"
    assert EntryState(KEY, T0 + 5, 1).phase(T0) == "open"
    assert EntryState(KEY, T0 - 5, 1).phase(T0) == "half-open"
    assert EntryState(KEY, T0 - 5, 1, probe_until=T0 + 9).phase(T0) == "probing"
    assert EntryState(KEY, T0 + 5, 1).retry_after(T0) == 5
    assert EntryState(KEY, T0 - 5, 1).retry_after(T0) is None


def test_two_connections_share_the_state(tmp_path):
    path = tmp_path / "db.sqlite"
    with Store(path) as one, Store(path) as two:
        one.record_failure(failed(), T0, lambda _: 30.0)
        assert two.states([KEY])[KEY].cooldown_until == T0 + 30


# --- the breaker -----------------------------------------------------------------------------


def test_consecutive_failures_escalate_the_level_and_the_backoff(store):
    policy = CooldownPolicy()
    now = T0
    seen = []
    for _ in range(9):
        until, level = store.record_failure(failed(), now, policy.backoff)
        assert until is not None
        seen.append((level, round(until - now)))
        now = until + 1  # the cooldown is over: the next failure is the probe failing again
    assert seen == [
        (1, 30),
        (2, 60),
        (3, 120),
        (4, 240),
        (5, 480),
        (6, 960),
        (7, 1920),
        (8, 3600),
        (9, 3600),
    ]
    assert cooldown_row(store)["failures"] == 9
    assert cooldown_row(store)["reason"] == "server_error"


def test_failure_without_a_cooldown_is_logged_but_opens_nothing(store):
    until, level = store.record_failure(failed(status=400, rule="caller_error"), T0, lambda _: None)
    assert (until, level) == (None, 1)
    assert cooldown_row(store) is None
    [row] = store.recent_attempts()
    assert (row.http_status, row.outcome, row.cooldown_until) == (400, "failed", None)


def test_a_new_cooldown_never_shortens_a_longer_one(store):
    store.record_failure(failed(status=429, rule="rate_limited"), T0, lambda _: 3600.0)
    until, _ = store.record_failure(failed(), T0 + 10, lambda _: 30.0)
    assert until == T0 + 3600
    assert store.states([KEY])[KEY].cooldown_until == T0 + 3600
    # ...but a longer one still wins (max of both).
    until, _ = store.record_failure(failed(), T0 + 20, lambda _: 7200.0)
    assert until == T0 + 20 + 7200


def test_failure_row_records_the_cooldown_it_set(store):
    store.record_failure(failed(), T0, lambda _: 30.0)
    [row] = store.recent_attempts()
    assert row.cooldown_until == format_ts(T0 + 30)
    assert row.timestamp == format_ts(T0)


def test_success_resets_the_failures_and_frees_the_probe(store):
    store.record_failure(failed(), T0, lambda _: 30.0)
    store.record_failure(failed(), T0 + 31, lambda _: 60.0)
    assert store.claim_probe(KEY, "run-1", T0 + 100, lease_s=20)

    store.record_success(ok(), T0 + 101)

    row = cooldown_row(store)
    assert row is not None
    assert row["failures"] == 0
    assert (row["probe_owner"], row["probe_until"]) == (None, None)
    state = store.states([KEY])[KEY]
    assert not state.is_cooling(T0 + 101) and not state.is_half_open(T0 + 101)
    assert store.recent_attempts(1)[0].input_tokens == 11
    # The level starts over.
    _, level = store.record_failure(failed(), T0 + 200, lambda _: 30.0)
    assert level == 1


def test_success_during_a_cooldown_closes_the_breaker_now(store):
    store.record_failure(failed(), T0, lambda _: 600.0)
    store.record_success(ok(), T0 + 5)  # e.g. a run with --ignore-cooldown got an answer
    assert store.states([KEY])[KEY].cooldown_until == T0 + 5
    assert cooldown_row(store)["cooldown_until"] == format_ts(T0 + 5)


def test_a_success_sent_before_a_newer_failure_leaves_its_cooldown(store):
    store.record_failure(failed(), T0, lambda _: 600.0)  # a 429 while this request was out
    sent_before = AttemptRecord("x", KEY, 200, 10_000, 11, 7)  # sent at T0 - 5, answered at T0 + 5
    store.record_success(sent_before, T0 + 5)
    state = store.states([KEY])[KEY]
    assert (state.cooldown_until, state.failures) == (T0 + 600, 1)
    assert store.recent_attempts(1)[0].outcome == "ok"  # the answer is still logged


def test_only_one_claim_on_a_half_open_entry_succeeds(store):
    store.record_failure(failed(), T0, lambda _: 30.0)
    assert not store.claim_probe(KEY, "early", T0 + 29, lease_s=20)  # still cooling
    assert store.claim_probe(KEY, "first", T0 + 31, lease_s=20)
    assert not store.claim_probe(KEY, "second", T0 + 32, lease_s=20)
    assert cooldown_row(store)["probe_owner"] == "first"
    assert store.states([KEY])[KEY].probe_in_flight(T0 + 32)


def test_a_lapsed_probe_lease_can_be_claimed_again(store):
    store.record_failure(failed(), T0, lambda _: 30.0)
    assert store.claim_probe(KEY, "died", T0 + 31, lease_s=20)
    assert not store.claim_probe(KEY, "waiting", T0 + 50, lease_s=20)
    assert store.claim_probe(KEY, "next", T0 + 52, lease_s=20)
    assert cooldown_row(store)["probe_owner"] == "next"


def test_a_closed_or_unknown_entry_has_no_probe_to_claim(store):
    assert not store.claim_probe("never/failed", "run", T0, lease_s=20)
    store.record_failure(failed(), T0, lambda _: 30.0)
    store.record_success(ok(), T0 + 31)
    assert not store.claim_probe(KEY, "run", T0 + 32, lease_s=20)


def test_failure_without_cooldown_releases_only_its_own_probe(store):
    store.record_failure(failed(), T0, lambda _: 30.0)
    assert store.claim_probe(KEY, "mine", T0 + 31, lease_s=20)
    store.record_failure(failed(status=400), T0 + 32, lambda _: None, owner="someone-else")
    assert cooldown_row(store)["probe_owner"] == "mine"
    store.record_failure(failed(status=400), T0 + 33, lambda _: None, owner="mine")
    assert cooldown_row(store)["probe_owner"] is None
    assert store.claim_probe(KEY, "another", T0 + 34, lease_s=20)


def test_clear_cooldowns_of_some_or_all_entries(store):
    for key in ("a/1", "b/2", "c/3"):
        store.record_failure(failed(key), T0, lambda _: 30.0)
    assert store.clear_cooldowns(["a/1", "missing/0"]) == 1
    assert [s.key for s in store.all_states()] == ["b/2", "c/3"]
    assert store.clear_cooldowns() == 2
    assert store.all_states() == []
    assert len(store.recent_attempts()) == 3  # the log is history: never cleared


def test_recent_attempts_are_the_newest_oldest_first(store):
    for i in range(5):
        store.log_attempt(AttemptRecord("x" if i % 2 else "y", f"p/{i}", 200, i), T0 + i)
    assert [r.provider_model for r in store.recent_attempts(3)] == ["p/2", "p/3", "p/4"]
    assert [r.provider_model for r in store.recent_attempts(10, cascade="x")] == ["p/1", "p/3"]


def test_every_timestamp_written_has_six_digits_and_a_utc_offset(store):
    store.record_failure(failed(), T0 + 0.5, lambda _: 30.25)
    store.claim_probe(KEY, "run", T0 + 31, lease_s=7.123)
    store.record_success(ok(), T0 + 40)
    store.log_attempt(ok("b/2"), T0 + 1 / 3)
    texts = [
        value
        for table, cols in (
            ("attempt_log", "timestamp, cooldown_until"),
            ("cooldown", "cooldown_until, updated_at"),
        )
        for row in store.conn.execute(f"SELECT {cols} FROM {table}")
        for value in row
        if value is not None
    ]
    assert len(texts) >= 5
    assert all(TS_FORMAT.match(t) for t in texts), texts


# --- clock.format_ts / parse_ts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000000+00:00"),
        (T0, "2026-01-01T00:00:00.000000+00:00"),
        (T0 + 0.5, "2026-01-01T00:00:00.500000+00:00"),
        (T0 + 61.000123, "2026-01-01T00:01:01.000123+00:00"),
    ],
)
def test_format_ts_writes_utc_with_exactly_six_digits(epoch, text):
    assert format_ts(epoch) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-04-14T09:15:02.123456789+00:00", datetime(2026, 4, 14, 9, 15, 2, 123456)),
        ("2026-04-14T09:15:02.123456+00:00", datetime(2026, 4, 14, 9, 15, 2, 123456)),
        ("2026-04-14T09:15:02.120+00:00", datetime(2026, 4, 14, 9, 15, 2, 120000)),
        ("2026-04-14T09:15:02.5+00:00", datetime(2026, 4, 14, 9, 15, 2, 500000)),
        ("2026-04-14T09:15:02+00:00", datetime(2026, 4, 14, 9, 15, 2)),
        ("2026-04-14T09:15:02Z", datetime(2026, 4, 14, 9, 15, 2)),
        ("2026-04-14T09:15:02.250Z", datetime(2026, 4, 14, 9, 15, 2, 250000)),
        ("2026-04-14T09:15:02", datetime(2026, 4, 14, 9, 15, 2)),  # naive: read as UTC
        # Another offset (a failed-prompt timestamp of the original is local time).
        ("2026-04-14T12:15:02.123456789+02:00", datetime(2026, 4, 14, 10, 15, 2, 123456)),
        ("2026-04-14T12:15:02+02:00", datetime(2026, 4, 14, 10, 15, 2)),
        ("2026-04-14T04:15:02.5-05:30", datetime(2026, 4, 14, 9, 45, 2, 500000)),
    ],
)
def test_parse_ts_reads_every_rfc3339_form(text, expected):
    assert parse_ts(text) == pytest.approx(expected.replace(tzinfo=UTC).timestamp(), abs=1e-6)


@pytest.mark.parametrize("text", ["", "soon", "2026-13-01T00:00:00+00:00", "12:00"])
def test_parse_ts_gives_none_for_unreadable_text(text):
    assert parse_ts(text) is None


def _originals_format(moment: datetime) -> str:
    """The original's text: the shortest of 0, 3, 6 or 9 fractional digits."""
    nanos = f"{moment.microsecond:06d}000"
    for digits in (0, 3, 6, 9):
        if int(nanos[digits:] or 0) == 0:
            break
    fraction = f".{nanos[:digits]}" if digits else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "+00:00"


def test_our_timestamps_compare_as_strings_like_the_instants_they_name():
    base = datetime(2026, 4, 14, 9, 15, 2, tzinfo=UTC)
    offsets_us = [0, 1, 120_000, 500_000, 999_999, 1_000_000, 1_000_001, 61_250_000]
    moments = [base + timedelta(microseconds=us) for us in offsets_us]
    pairs = [(a, b) for a in moments for b in moments if a != b]  # equal: a boundary only
    for ours, theirs in pairs:
        mine = format_ts(ours.timestamp())
        original = _originals_format(theirs)
        assert (mine > original) == (ours > theirs), (mine, original)
        assert (original > mine) == (theirs > ours), (mine, original)


def test_format_and_parse_round_trip():
    for epoch in (0.0, T0, T0 + 0.000001, T0 + 1234.5678, 4_102_444_800.999999):
        assert parse_ts(format_ts(epoch)) == pytest.approx(epoch, abs=1e-6)


# --- instants beyond any timestamp -----------------------------------------------------------


@pytest.mark.parametrize("seconds", [1e12, 1e300, math.inf, math.nan])
def test_a_cooldown_past_the_last_writable_instant_is_clamped_not_a_crash(store, seconds):
    until, _ = store.record_failure(failed(), T0, lambda _: seconds)
    assert until == LATEST_INSTANT
    assert store.states([KEY])[KEY].cooldown_until == LATEST_INSTANT
    assert cooldown_row(store)["cooldown_until"].startswith("9999-12-31T")
    [row] = store.recent_attempts()
    assert parse_ts(row.cooldown_until or "") == LATEST_INSTANT


@pytest.mark.parametrize("lease_s", [1e12, 1e300, math.inf])
def test_a_probe_lease_past_the_last_writable_instant_is_clamped_not_a_crash(store, lease_s):
    store.record_failure(failed(), T0, lambda _: 30.0)
    assert store.claim_probe(KEY, "slow", T0 + 31, lease_s=lease_s)
    assert store.states([KEY])[KEY].probe_until == LATEST_INSTANT
