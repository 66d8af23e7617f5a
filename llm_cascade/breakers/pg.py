"""One PostgreSQL connection with bounded waits, shared by the breakers and the attempt log.

psycopg 3, autocommit, `connect_timeout`, `statement_timeout`, `lock_timeout` and
`tcp_user_timeout` all set from the configured timeout, so a server that accepts and never
answers costs at most that. Any failure becomes a `BackendError` (one line, the URL without
its password) and drops the connection: the next call starts from a fresh one. Each schema
keeps its version in its own table; an older one is upgraded in place, a newer one refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from ..config import StateConfig, safe_url
from .base import BackendError

_SCHEMA_LOCK = 0x6C6C6D63  # one advisory lock id for creating or upgrading any schema


class PgConnection:
    """A lazily (re)opened connection; `migrate(conn)` runs once per connection opened."""

    def __init__(
        self,
        config: StateConfig,
        password: str | None,
        migrate: Callable[[psycopg.Connection[Any]], None],
    ) -> None:
        assert config.url is not None
        self.where = safe_url(config.url)
        self.url = config.url
        self.timeout_s = config.timeout_s
        self.password = password
        self.migrate = migrate
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        ms = max(int(self.timeout_s * 1000), 1)
        extra: dict[str, Any] = {"password": self.password} if self.password else {}
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(round(self.timeout_s), 1),
            options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
            tcp_user_timeout=ms,
            keepalives=1,
            keepalives_idle=max(int(self.timeout_s), 1),
            keepalives_interval=1,
            keepalives_count=2,
            application_name="llm-cascade",
            **extra,
        )
        try:
            self.migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on the (re)opened connection; any failure is a BackendError."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            with self._conn.transaction():
                yield self._conn
        except psycopg.Error as exc:
            self.close()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"PostgreSQL at {self.where}: {reason}") from None

    def ping(self) -> None:
        with self.tx() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def migrate_schema(
    conn: psycopg.Connection[Any],
    version_table: str,
    latest: int,
    migrations: Mapping[int, Sequence[str]],
) -> None:
    """Bring the schema whose version `version_table` holds to `latest`, one process at a
    time; a version newer than `latest` is refused ("upgrade llm-cascade")."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER NOT NULL)")
        row = conn.execute(f"SELECT max(version) FROM {version_table}").fetchone()
        version = row[0] if row and row[0] is not None else 0
        if version > latest:
            raise psycopg.errors.FeatureNotSupported(
                f"its schema is version {version}, newer than this llm-cascade's"
                f" {latest}: upgrade llm-cascade"
            )
        for step in range(version + 1, latest + 1):
            for statement in migrations[step]:
                conn.execute(statement)
        if version < latest:
            conn.execute(f"DELETE FROM {version_table}")
            conn.execute(f"INSERT INTO {version_table} VALUES (%s)", (latest,))
