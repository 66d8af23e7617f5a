"""Can the config run? Per entry: where its key comes from and whether it is cooling down.

`config check` renders this. A cascade is runnable when at least one entry has a key (or
needs none); cooldowns pass by themselves, so they are reported but never make a config
unrunnable. Every problem names its fix.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .breakers import BackendError, BackendStatus, backend_status, log_status, open_backend
from .config import AppConfig
from .errors import LlmCascadeError
from .keys import Backend, KeyStatus, key_fix, key_statuses, keyring_backend, lookup_for
from .store import EntryState


@dataclass(frozen=True, slots=True)
class EntryReport:
    """One cascade entry: its key source and its breaker state."""

    key: str
    provider: str
    key_status: KeyStatus
    state: EntryState

    @property
    def has_key(self) -> bool:
        return self.key_status.source != "missing"


@dataclass(frozen=True, slots=True)
class CascadeReport:
    name: str
    entries: tuple[EntryReport, ...]

    @property
    def runnable(self) -> bool:
        return any(e.has_key for e in self.entries)


@dataclass(frozen=True, slots=True)
class Report:
    """Everything `config check` says; `problems` empty means runnable."""

    config_path: Path | None
    database_path: Path
    database_exists: bool
    failure_dir: Path
    keyring: Backend | None  # None: `keyring = false`
    cascades: tuple[CascadeReport, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    config_warnings: tuple[str, ...] = ()  # unknown keys; load_config already logged them
    state: BackendStatus | None = None  # where the breakers live, and whether it answers
    log: BackendStatus | None = None  # where the attempt log also goes ([log]), if anywhere

    @property
    def runnable(self) -> bool:
        return not self.problems


def _states(
    config: AppConfig, keys: list[str], status: BackendStatus
) -> tuple[dict[str, EntryState], str | None]:
    """Cooldown states from the shared backend when it answers, else from the database if it
    exists; neither is created here."""
    from .store import Store

    if keys and config.state.shared and status.reachable:
        try:
            backend = open_backend(config.state)
            try:
                return backend.states(keys), None
            finally:
                backend.close()
        except BackendError as exc:
            return {}, f"cannot read cooldowns: {exc}"
    if not keys or not config.database_path.exists():
        return {}, None
    try:
        with Store(config.database_path) as store:
            return store.states(keys), None
    except (LlmCascadeError, sqlite3.Error) as exc:
        return {}, f"cannot read cooldowns from '{config.database_path}': {exc}"


def check(config: AppConfig, now: float) -> Report:
    """Inspect keys (keyring, env) and cooldowns (database) for every cascade entry."""
    names = sorted(config.providers)
    statuses, keyring_warning = key_statuses(
        [lookup_for(config.providers[n]) for n in names], use_keyring=config.keyring
    )
    by_provider: Mapping[str, KeyStatus] = dict(zip(names, statuses, strict=True))
    backend = keyring_backend() if config.keyring else None
    in_use = backend is not None and backend.problem is None
    all_keys = [e.key for c in config.cascades.values() for e in c.entries]
    status = backend_status(config)
    states, db_warning = _states(config, all_keys, status)
    cascades = tuple(
        CascadeReport(
            c.name,
            tuple(
                EntryReport(
                    e.key, e.provider, by_provider[e.provider], states.get(e.key, EntryState(e.key))
                )
                for e in c.entries
            ),
        )
        for c in config.cascades.values()
    )
    problems: list[str] = []
    warnings = [w for w in (keyring_warning, db_warning) if w]
    if not status.reachable:
        warnings.append(
            f"the state backend is unreachable ({status.detail}); runs fall back to the local"
            f" breaker state in '{config.database_path}'"
        )
    log = log_status(config) if config.log.shared else None
    if log is not None and not log.reachable:
        warnings.append(
            f"the attempt log backend is unreachable ({log.detail}); runs keep their attempts"
            f" in the local log '{config.database_path}' only"
        )
    if not cascades:
        problems.append(
            "no cascades defined: add a [cascades.NAME] table with"
            ' entries = [{ provider = "...", model = "..." }]'
        )
    for cascade in cascades:
        if not cascade.runnable:
            fixes = "; ".join(_fixes(config, cascade, in_use))
            problems.append(
                f"cascade '{cascade.name}' cannot run: no entry has an API key. {fixes}"
            )
        elif all(e.state.is_cooling(now) for e in cascade.entries):
            warnings.append(
                f"every entry of cascade '{cascade.name}' is cooling down; `llm-cascade reset"
                " --all` or `llm-cascade run --ignore-cooldown` tries them now"
            )
    for provider, users in _missing_in_runnable(cascades).items():
        fix = key_fix(by_provider[provider].lookup, use_keyring=in_use)
        warnings.append(
            f"provider '{provider}' has no API key; its entries are skipped"
            f" (in {', '.join(users)}): {fix}"
        )
    return Report(
        config_path=config.path,
        database_path=config.database_path,
        database_exists=config.database_path.exists(),
        failure_dir=config.failure_dir,
        keyring=backend,
        cascades=cascades,
        problems=tuple(problems),
        warnings=tuple(warnings),
        config_warnings=config.warnings,
        state=status,
        log=log,
    )


def _fixes(config: AppConfig, cascade: CascadeReport, use_keyring: bool) -> list[str]:
    providers = dict.fromkeys(e.provider for e in cascade.entries)
    return [key_fix(lookup_for(config.providers[p]), use_keyring=use_keyring) for p in providers]


def _missing_in_runnable(cascades: tuple[CascadeReport, ...]) -> dict[str, list[str]]:
    """Providers without a key that runnable cascades still list, with those cascades."""
    found: dict[str, list[str]] = {}
    for cascade in cascades:
        if cascade.runnable:
            for entry in cascade.entries:
                if not entry.has_key and cascade.name not in found.setdefault(entry.provider, []):
                    found[entry.provider].append(cascade.name)
    return found
