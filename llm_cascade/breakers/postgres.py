"""Breakers on PostgreSQL, shared by every host that points at the same database.

One table, `llm_cascade_breakers`, instants as epoch seconds (double precision). The probe
claim is one conditional UPDATE (half-open and no unexpired lease), which row locking makes
exclusive; a failure is one transaction that locks the entry's advisory lock, reads its
level and upserts the cooldown with GREATEST, so it never shortens a later one. The schema's
version sits in `llm_cascade_schema`; an older one is upgraded in place, a newer one refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from ..config import StateConfig
from ..store import LATEST_INSTANT, EntryState, Failure
from .pg import PgConnection, migrate_schema

SCHEMA_VERSION = 1
_TABLE = "llm_cascade_breakers"
_COLUMNS = "provider_model, cooldown_until, failures, probe_until, reason"
_MIGRATIONS = {
    1: [
        f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
        " provider_model TEXT PRIMARY KEY, cooldown_until DOUBLE PRECISION,"
        " failures INTEGER NOT NULL DEFAULT 0, reason TEXT, probe_owner TEXT,"
        " probe_until DOUBLE PRECISION, updated_at DOUBLE PRECISION)",
    ],
}


class PostgresBreakers:
    """The `Breakers` of one PostgreSQL database (psycopg 3, one connection, autocommit)."""

    def __init__(self, config: StateConfig, password: str | None = None) -> None:
        self.pg = PgConnection(config, password, _migrate)
        self.where = self.pg.where
        self._tx = self.pg.tx

    def ping(self) -> None:
        self.pg.ping()

    # --- reads ---------------------------------------------------------------------------

    def states(self, keys: Iterable[str]) -> dict[str, EntryState]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM {_TABLE} WHERE provider_model = ANY(%s)", (wanted,)
            ).fetchall()
        found = {row[0]: _state(row) for row in rows}
        return {key: found.get(key, EntryState(key)) for key in wanted}

    def all_states(self) -> list[EntryState]:
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {_TABLE} ORDER BY provider_model")
            return [_state(row) for row in rows.fetchall()]

    # --- writes --------------------------------------------------------------------------

    def claim_probe(self, key: str, owner: str, now: float, lease_s: float) -> bool:
        with self._tx() as conn:
            row = conn.execute(
                f"UPDATE {_TABLE} SET probe_owner = %s, probe_until = %s"
                " WHERE provider_model = %s AND failures > 0"
                " AND (cooldown_until IS NULL OR cooldown_until <= %s)"
                " AND (probe_until IS NULL OR probe_until <= %s) RETURNING 1",
                (owner, min(now + lease_s, LATEST_INSTANT), key, now, now),
            ).fetchone()
        return row is not None

    def release_probe(self, key: str, owner: str) -> None:
        with self._tx() as conn:
            _free_probe(conn, key, owner)

    def reset_breaker(self, key: str, sent: float, now: float) -> None:
        with self._tx() as conn:
            conn.execute(
                f"UPDATE {_TABLE} SET failures = 0, probe_owner = NULL, probe_until = NULL,"
                " reason = NULL, updated_at = %(now)s,"
                " cooldown_until = LEAST(cooldown_until, %(now)s)"
                " WHERE provider_model = %(key)s"
                " AND (updated_at IS NULL OR updated_at <= %(sent)s)"
                " AND (failures > 0 OR probe_owner IS NOT NULL OR reason IS NOT NULL"
                " OR cooldown_until > %(now)s)",
                {"now": now, "key": key, "sent": sent},
            )

    def fail_breaker(self, failure: Failure) -> tuple[float | None, int]:
        key, now, owner = failure.key, failure.now, failure.owner
        with self._tx() as conn:
            # New entries have no row to lock: the entry's advisory lock orders them too.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
            row = conn.execute(
                f"SELECT failures FROM {_TABLE} WHERE provider_model = %s", (key,)
            ).fetchone()
            level = (row[0] if row else 0) + 1
            seconds = failure.cooldown_for(level)
            if seconds is None:
                if owner is not None:
                    _free_probe(conn, key, owner)
                return None, level
            found = conn.execute(
                f"INSERT INTO {_TABLE} AS b (provider_model, cooldown_until, failures, reason,"
                " updated_at) VALUES (%(key)s, %(until)s, %(level)s, %(rule)s, %(now)s)"
                " ON CONFLICT (provider_model) DO UPDATE SET"
                " cooldown_until = GREATEST(excluded.cooldown_until, b.cooldown_until),"
                " failures = excluded.failures, reason = excluded.reason,"
                " updated_at = excluded.updated_at, probe_owner = NULL, probe_until = NULL"
                " RETURNING cooldown_until",
                {
                    "key": key,
                    "until": min(now + seconds, LATEST_INSTANT),
                    "level": level,
                    "rule": failure.rule,
                    "now": now,
                },
            ).fetchone()
            assert found is not None
            return float(found[0]), level

    def clear_cooldowns(self, keys: Iterable[str] | None = None) -> int:
        with self._tx() as conn:
            if keys is None:
                return conn.execute(f"DELETE FROM {_TABLE}").rowcount
            wanted = list(keys)
            return conn.execute(
                f"DELETE FROM {_TABLE} WHERE provider_model = ANY(%s)", (wanted,)
            ).rowcount

    def put_states(self, states: Iterable[EntryState]) -> int:
        rows = [(s.key, s.cooldown_until or 0.0, s.failures, s.reason) for s in states]
        with self._tx() as conn, conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {_TABLE} (provider_model, cooldown_until, failures, reason)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (provider_model) DO UPDATE SET"
                " cooldown_until = excluded.cooldown_until, failures = excluded.failures,"
                " reason = excluded.reason",
                rows,
            )
        return len(rows)

    def close(self) -> None:
        self.pg.close()


def _migrate(conn: psycopg.Connection[Any]) -> None:
    migrate_schema(conn, "llm_cascade_schema", SCHEMA_VERSION, _MIGRATIONS)


def _free_probe(conn: psycopg.Connection[Any], key: str, owner: str) -> None:
    conn.execute(
        f"UPDATE {_TABLE} SET probe_owner = NULL, probe_until = NULL"
        " WHERE provider_model = %s AND probe_owner = %s",
        (key, owner),
    )


def _state(row: tuple[Any, ...]) -> EntryState:
    return EntryState(row[0], row[1], row[2] or 0, row[3], row[4])
