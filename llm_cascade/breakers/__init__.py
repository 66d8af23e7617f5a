"""Where the breakers live: the embedded SQLite database, or a shared Redis or PostgreSQL.

`open_store(config)` gives the engine, `status`, `reset` and `health` one `Store`: the plain
SQLite one by default, or a `SharedStore` whose breakers are on the configured backend while
the attempt log stays in local SQLite. The client library of a shared backend is imported
only here, only when configured. When the backend cannot be used, the store says so once on
stderr, records it in the local database and falls back to the local breakers; it tries the
backend again after `RETRY_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from ..clock import format_ts
from ..config import AppConfig, StateConfig, safe_url
from ..store import DEFAULT_BUSY_TIMEOUT_S, AttemptRecord, EntryState, Failure, Store
from .base import BackendError, Breakers, SharedBreakers

__all__ = [
    "BackendError",
    "BackendStatus",
    "Breakers",
    "SharedStore",
    "log_status",
    "open_store",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_S = 30.0  # after a fallback, how long before the shared backend is tried again
_FALLBACKS = (
    "CREATE TABLE IF NOT EXISTS state_fallback"
    " (timestamp TEXT NOT NULL, backend TEXT NOT NULL, reason TEXT NOT NULL)"
)


def password_for(state: StateConfig) -> str | None:
    """The backend's password from its env var, else the keyring; never from the logs."""
    from ..keys import KeyringUnavailable, keyring_get, read_env

    found = read_env(state.password_env)
    if found is None and state.password_keyring:
        try:
            found = keyring_get(state.password_keyring)
        except KeyringUnavailable as exc:
            raise BackendError(f"cannot read the state backend's password: {exc}") from None
    return found


def open_backend(state: StateConfig) -> SharedBreakers:
    """The shared backend `[state]` configures (its client imported now). Connects lazily."""
    password = password_for(state)
    try:
        if state.backend == "redis":
            from .redis import RedisBreakers

            return RedisBreakers(state, password)
        from .postgres import PostgresBreakers

        return PostgresBreakers(state, password)
    except ImportError as exc:
        extra = "redis" if state.backend == "redis" else "postgres"
        raise BackendError(
            f"[state] backend = {state.backend!r} needs its client:"
            f" pip install 'llm-cascade[{extra}]' ({exc.name} is not installed)"
        ) from None


class SharedStore(Store):
    """The local database for the attempt log; the breakers on a shared backend.

    Each breaker operation goes to the backend; if it fails, to the local breakers (after one
    warning and a `state_fallback` row). The attempt row of an outcome is written locally
    after the backend's verdict, so it carries the cooldown the fleet decided.
    """

    def __init__(
        self,
        path: Path,
        state: StateConfig,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        strict: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`strict`: a backend error is raised (for `status` and `reset`), not fallen back on."""
        super().__init__(path, busy_timeout_s=busy_timeout_s)
        self.strict = strict
        self.state_config = state
        self.where = f"{state.backend} at {safe_url(state.url or '')}"
        self.monotonic = monotonic
        self.down_until: float | None = None  # falling back until then
        self.last_error: str | None = None
        self.shared: SharedBreakers | None = None
        try:
            self.shared = open_backend(state)
        except BackendError as exc:
            if strict:
                super().close()
            self._fall_back(exc)

    @property
    def falling_back(self) -> bool:
        return self.down_until is not None and self.monotonic() < self.down_until

    def _fall_back(self, exc: BackendError) -> None:
        if self.strict:
            raise exc
        if not self.falling_back:
            logger.warning(
                "state backend unreachable (%s); this run uses the local breaker state in '%s'",
                exc,
                self.path,
            )
            self._record_fallback(str(exc))
        self.last_error = str(exc)
        self.down_until = self.monotonic() + RETRY_S

    def _record_fallback(self, reason: str) -> None:
        record_fallback(self, self.state_config.backend, reason)

    def _shared(self, action: Callable[[Breakers], T], local: Callable[[], T]) -> T:
        if self.shared is not None and not self.falling_back:
            try:
                result = action(self.shared)
            except BackendError as exc:
                self._fall_back(exc)
            else:
                self.down_until = None
                return result
        return local()

    def states(self, keys: Iterable[str]) -> dict[str, EntryState]:
        wanted = list(keys)
        return self._shared(lambda b: b.states(wanted), lambda: Store.states(self, wanted))

    def all_states(self) -> list[EntryState]:
        return self._shared(lambda b: b.all_states(), lambda: Store.all_states(self))

    def claim_probe(self, key: str, owner: str, now: float, lease_s: float) -> bool:
        return self._shared(
            lambda b: b.claim_probe(key, owner, now, lease_s),
            lambda: Store.claim_probe(self, key, owner, now, lease_s),
        )

    def release_probe(self, key: str, owner: str) -> None:
        self._shared(
            lambda b: b.release_probe(key, owner),
            lambda: Store.release_probe(self, key, owner),
        )

    def reset_breaker(self, key: str, sent: float, now: float) -> None:
        self._shared(
            lambda b: b.reset_breaker(key, sent, now),
            lambda: Store.reset_breaker(self, key, sent, now),
        )

    def fail_breaker(self, failure: Failure) -> tuple[float | None, int]:
        return self._shared(
            lambda b: b.fail_breaker(failure), lambda: Store.fail_breaker(self, failure)
        )

    def record_success(self, record: AttemptRecord, now: float, *, reset: bool = True) -> None:
        if reset:
            self.reset_breaker(record.provider_model, now - record.latency_ms / 1000, now)
        self.log_attempt(record, now)

    def record_failure(
        self,
        record: AttemptRecord,
        now: float,
        cooldown_for: Callable[[int], float | None],
        *,
        owner: str | None = None,
    ) -> tuple[float | None, int]:
        failure = Failure(record.provider_model, now, cooldown_for, record.rule, owner)
        until, level = self.fail_breaker(failure)
        self.log_attempt(record if until is None else replace(record, cooldown_until=until), now)
        return until, level

    def clear_cooldowns(self, keys: Iterable[str] | None = None) -> int:
        wanted = None if keys is None else list(keys)
        return self._shared(
            lambda b: b.clear_cooldowns(wanted),
            lambda: Store.clear_cooldowns(self, wanted),
        )

    def put_states(self, states: Iterable[EntryState]) -> int:
        chosen = list(states)
        return self._shared(lambda b: b.put_states(chosen), lambda: Store.put_states(self, chosen))

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
        super().close()


def record_fallback(store: Store, backend: str, reason: str) -> None:
    """A `state_fallback` row in the local database: this host fell back, now, and why."""
    with store._write() as conn:
        conn.execute(_FALLBACKS)
        conn.execute(
            "INSERT INTO state_fallback VALUES (?, ?, ?)",
            (format_ts(time.time()), backend, reason[:500]),
        )


def open_store(
    config: AppConfig, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, *, strict: bool = False
) -> Store:
    """The config's store: plain SQLite, or SQLite plus the shared breakers `[state]` names;
    with `[log] backend = "postgres"`, the attempt rows it logs also go there (not with
    `strict`: views log nothing). Raises StoreError (the local database); with `strict`,
    BackendError rather than fall back."""
    store = (
        SharedStore(
            config.database_path, config.state, busy_timeout_s=busy_timeout_s, strict=strict
        )
        if config.state.shared
        else Store(config.database_path, busy_timeout_s=busy_timeout_s)
    )
    if config.log.shared and not strict:
        from ..fleetlog import FALLBACK_BACKEND, FleetLog

        def on_down(reason: str) -> None:
            record_fallback(store, FALLBACK_BACKEND, reason)

        store.log_sink = FleetLog(config.log, str(config.database_path), on_down)
    return store


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """What `config check` and `health` say about the breakers' backend."""

    backend: str
    where: str | None  # the URL without its password; None for the local database
    reachable: bool
    detail: str
    last_fallback: str | None = None  # when this host last fell back, and why


def backend_status(config: AppConfig) -> BackendStatus:
    """Try the configured backend once (within its timeout) and say how it is."""
    state = config.state
    if not state.shared:
        return BackendStatus("sqlite", None, True, f"local database '{config.database_path}'")
    where = safe_url(state.url or "")
    last = last_fallback(config.database_path)
    try:
        backend = open_backend(state)
        try:
            backend.ping()
        finally:
            backend.close()
    except BackendError as exc:
        return BackendStatus(state.backend, where, False, str(exc), last)
    return BackendStatus(state.backend, where, True, "reachable", last)


def log_status(config: AppConfig) -> BackendStatus:
    """Like `backend_status`, for the attempt log `[log]` configures (its schema checked)."""
    server = config.log.server
    if server is None:
        return BackendStatus("sqlite", None, True, f"local database '{config.database_path}'")
    from ..fleetlog import FALLBACK_BACKEND, FleetLogReader

    where = safe_url(server.url or "")
    last = last_fallback(config.database_path, FALLBACK_BACKEND)
    try:
        reader = FleetLogReader(server)
        try:
            reader.ping()
        finally:
            reader.close()
    except BackendError as exc:
        return BackendStatus("postgres", where, False, str(exc), last)
    return BackendStatus("postgres", where, True, "reachable", last)


def last_fallback(path: Path, backend: str | None = None) -> str | None:
    """The newest `state_fallback` row of the local database, as one line; None if none.
    `backend`: only that backend's rows; None: the breakers' (not the log's)."""
    import sqlite3

    if not path.exists():
        return None
    where, args = ("backend = ?", [backend]) if backend else ("backend NOT LIKE 'log:%'", [])
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)) as conn:
            row = conn.execute(
                f"SELECT timestamp, backend, reason FROM state_fallback WHERE {where}"
                " ORDER BY rowid DESC LIMIT 1",
                args,
            ).fetchone()
    except sqlite3.Error:
        return None  # no fallback table: it never happened
    return f"{row[0]}: {row[2]}" if row else None
