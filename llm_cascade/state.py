"""The shared state made visible and editable: breakers, the attempt log, resets.

Every function takes a loaded config and opens its database only for the call. Reading never
creates a database: where there is none yet, there is nothing to show.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .breakers import open_store
from .clock import json_time
from .config import AppConfig
from .errors import LlmCascadeError, UsageError
from .store import DEFAULT_BUSY_TIMEOUT_S, AttemptRow, EntryState, Phase, Store


@dataclass(frozen=True, slots=True)
class EntryView:
    """One entry's breaker as `status` shows it."""

    state: EntryState
    phase: Phase
    retry_after: float | None  # seconds until its cooldown ends, when it is cooling
    in_config: bool

    @property
    def key(self) -> str:
        return self.state.key

    def to_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "entry": s.key,
            "state": self.phase,
            "cooldown_until": json_time(s.cooldown_until),
            "retry_after": self.retry_after,
            "failures": s.failures,
            "reason": s.reason,
            "in_config": self.in_config,
        }


def has_database(config: AppConfig) -> bool:
    return config.database_path.exists()


class DatabaseUnreadable(LlmCascadeError):
    """The database exists but cannot be read now (locked, corrupt, unreadable)."""


@contextmanager
def opened(
    config: AppConfig, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> Iterator[Store | None]:
    """The config's database for one view or edit; None when there is none yet. Any SQLite
    error inside becomes one line naming the database, instead of a traceback. With a shared
    `[state]` backend, the breakers are the backend's; if it cannot be used, BackendError."""
    if not has_database(config) and not config.state.shared:
        yield None
        return
    with open_store(config, busy_timeout_s, strict=True) as store:
        try:
            yield store
        except sqlite3.Error as exc:
            raise DatabaseUnreadable(
                f"cannot use the database '{config.database_path}': {exc}"
            ) from None


def configured_keys(config: AppConfig) -> list[str]:
    """Every entry key of every cascade, in config order, once each."""
    return list(dict.fromkeys(e.key for c in config.cascades.values() for e in c.entries))


def entry_views(config: AppConfig, now: float) -> list[EntryView]:
    """The config's entries, then any other entry the database knows, with their breakers."""
    keys = configured_keys(config)
    with opened(config) as store:
        found = {s.key: s for s in store.all_states()} if store is not None else {}
    views = []
    for key in dict.fromkeys([*keys, *found]):
        state = found.get(key, EntryState(key))
        views.append(EntryView(state, state.phase(now), state.retry_after(now), key in keys))
    return views


def recent_attempts(config: AppConfig, limit: int, cascade: str | None = None) -> list[AttemptRow]:
    """The newest attempt rows, oldest first (none when there is no database yet)."""
    with opened(config) as store:
        return [] if store is None else store.recent_attempts(limit, cascade)


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many attempt rows `prune_log` deleted: here, and on the fleet's log (None: not)."""

    local: int
    fleet: int | None = None


def prune_log(
    config: AppConfig, older_than_days: float, now: float, *, local: bool = False
) -> Pruned:
    """Delete attempt rows older than the given age: with `[log]` on PostgreSQL, every host's
    there first (unless `local`; BackendError if it cannot be used), then this host's."""
    before = now - older_than_days * 86400
    fleet = None
    if config.log.server is not None and not local:
        from .fleetlog import prune

        fleet = prune(config.log.server, before)
    with opened(config) as store:
        return Pruned(0 if store is None else store.prune(before), fleet)


def reset_entries(config: AppConfig, keys: Sequence[str] | None) -> int | None:
    """Close the breakers of `keys` (all when None); None when there is no database yet.

    A key that is neither an entry of the config nor known to the database is a UsageError
    (a typo would otherwise reset nothing and say it was done).
    """
    known = set(configured_keys(config))
    with opened(config) as store:
        if store is not None:
            known |= {s.key for s in store.all_states()}
        _check_known(keys, known)
        return (
            None if store is None else store.clear_cooldowns(None if keys is None else list(keys))
        )


def _check_known(keys: Sequence[str] | None, known: set[str]) -> None:
    for key in keys or ():
        if key not in known:
            raise UsageError(_unknown_entry(key, known))


def _unknown_entry(key: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    if "/" not in key:
        return (
            f"'{key}' is not an entry: name it as provider/model (see `llm-cascade status`){hint}"
        )
    return (
        f"unknown entry '{key}': no cascade of the config has it and the database knows no"
        f" cooldown for it (see `llm-cascade status`){hint}"
    )


def clear_auth_cooldowns(config: AppConfig, provider: str) -> list[str]:
    """Reopen the entries of `provider` that a rejected key (401/403) put on cooldown."""
    with opened(config) as store:
        if store is None:
            return []
        keys = [
            s.key
            for s in store.all_states()
            if s.key.startswith(f"{provider}/") and s.reason == "auth"
        ]
        if keys:
            store.clear_cooldowns(keys)
    return keys


@dataclass(frozen=True, slots=True)
class Migration:
    copied: int
    kept: int  # entries whose cooldown on the backend already ran later
    source: str
    target: str


def migrate_state(config: AppConfig) -> Migration:
    """Copy the local database's breakers (those with failures or a cooldown) into the shared
    backend `[state]` names. A longer cooldown already on the backend is kept: a copy never
    shortens what the fleet decided."""
    from .breakers import open_backend
    from .config import safe_url

    if not config.state.shared:
        raise UsageError(
            '[state] backend is \'sqlite\': set backend = "redis" or "postgres" and its url'
            " first; the local database is already the state"
        )
    target = f"{config.state.backend} at {safe_url(config.state.url or '')}"
    source = str(config.database_path)
    if not has_database(config):
        return Migration(0, 0, source, target)
    with Store(config.database_path) as local:
        try:
            local_states = [s for s in local.all_states() if s.failures or s.cooldown_until]
        except sqlite3.Error as exc:
            raise DatabaseUnreadable(f"cannot use the database '{source}': {exc}") from None
    backend = open_backend(config.state)
    try:
        there = backend.states(s.key for s in local_states)
        chosen = [s for s in local_states if not _later_there(s, there[s.key])]
        backend.put_states(chosen)
    finally:
        backend.close()
    return Migration(len(chosen), len(local_states) - len(chosen), source, target)


def _later_there(local: EntryState, there: EntryState) -> bool:
    return (there.cooldown_until or 0.0) > (local.cooldown_until or 0.0)
