"""API keys: one resolution rule (keyring, then env var) shared by `run` and `key ...` (D41).

Keyring entries live under service `llm-cascade`, username = the provider's `api_key_service`
(default: the provider name). A type-default variable such as OPENAI_API_KEY is used only when
the provider talks to that vendor's own URL (D18); empty values count as missing (D23). The
keyring is imported lazily and every call has a time limit, so a locked or broken keyring
costs a one-line warning, never a hang or a traceback (D46, D47).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .config import ProviderConfig
from .providers import PROVIDER_TYPES

logger = logging.getLogger(__name__)

KEYRING_SERVICE = "llm-cascade"
KEYRING_TIMEOUT_S = 5.0
Source = Literal["keyring", "env", "missing", "not_needed"]
T = TypeVar("T")


class KeyringUnavailable(Exception):
    """The keyring could not be used: no backend, locked, failing or too slow."""


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """Where a provider's key would come from: keyring username and env var, in that order."""

    provider: str
    needs_key: bool
    keyring_user: str | None
    env_var: str | None
    # A type-default variable deliberately not used because base_url is a third party (D18).
    withheld_env_var: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """The outcome of a lookup. `value` never appears in reprs or logs."""

    source: Source
    value: str | None = field(default=None, repr=False)
    env_var: str | None = None
    warning: str | None = None  # e.g. the keyring failed and the env var was used


def lookup_for(provider: ProviderConfig) -> KeyLookup:
    """The lookup recipe for a provider (SPEC §8.2 with the D18 fix)."""
    default_env = PROVIDER_TYPES[provider.type].default_key_env
    if default_env is None:
        return KeyLookup(provider.name, False, None, None)
    user = provider.api_key_service or provider.name
    if provider.api_key_env:
        return KeyLookup(provider.name, True, user, provider.api_key_env)
    if provider.uses_default_base_url:
        return KeyLookup(provider.name, True, user, default_env)
    return KeyLookup(provider.name, True, user, None, withheld_env_var=default_env)


def read_env(var: str | None) -> str | None:
    """The stripped value of `var`, or None when unset, empty or blank (D23)."""
    if not var:
        return None
    value = os.environ.get(var, "").strip()
    return value or None


def _with_timeout(call: Callable[[], T], timeout_s: float) -> T:
    """Run a keyring call in a daemon thread so a backend waiting for an unlock cannot hang us."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # reported to the caller below, whatever the backend raised
            box["error"] = exc

    worker = threading.Thread(target=target, name="keyring", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise KeyringUnavailable(
            f"no answer within {timeout_s:g} s (locked or waiting for unlock?)"
        )
    if "error" in box:
        exc = box["error"]
        raise KeyringUnavailable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    return box["value"]  # type: ignore[no-any-return]  # set by the worker


def backend_name() -> str:
    """The keyring backend in use, e.g. `SecretService Keyring`, or why there is none."""
    try:
        import keyring

        backend = _with_timeout(keyring.get_keyring, KEYRING_TIMEOUT_S)
    except (ImportError, KeyringUnavailable) as exc:
        return f"unavailable ({exc})"
    name = getattr(backend, "name", type(backend).__name__)
    return str(name)


def keyring_get(user: str, timeout_s: float = KEYRING_TIMEOUT_S) -> str | None:
    """Read (`llm-cascade`, user) from the keyring; None if absent. Raises KeyringUnavailable."""
    try:
        import keyring
    except ImportError as exc:  # pragma: no cover - keyring is a dependency
        raise KeyringUnavailable(str(exc)) from None
    value = _with_timeout(lambda: keyring.get_password(KEYRING_SERVICE, user), timeout_s)
    return (value.strip() or None) if isinstance(value, str) else None


def keyring_set(user: str, secret: str) -> None:
    """Store a key. Raises KeyringUnavailable."""
    import keyring

    _with_timeout(lambda: keyring.set_password(KEYRING_SERVICE, user, secret), KEYRING_TIMEOUT_S)


def keyring_delete(user: str) -> bool:
    """Delete a key; False if there was none. Raises KeyringUnavailable."""
    import keyring
    from keyring.errors import PasswordDeleteError

    def delete() -> bool:
        try:
            keyring.delete_password(KEYRING_SERVICE, user)
        except PasswordDeleteError:
            return False
        return True

    return _with_timeout(delete, KEYRING_TIMEOUT_S)


def resolve_key(lookup: KeyLookup, *, use_keyring: bool = True) -> ResolvedKey:
    """Find the key: keyring first, then the env var. Never raises."""
    if not lookup.needs_key:
        return ResolvedKey("not_needed")
    warning = None
    if use_keyring and lookup.keyring_user:
        try:
            value = keyring_get(lookup.keyring_user)
        except KeyringUnavailable as exc:
            warning = f"keyring unavailable for '{lookup.provider}' ({exc}); using env var"
            logger.debug("keyring lookup failed for %s: %s", lookup.provider, exc)
        else:
            if value:
                logger.debug("key for %s found in the keyring", lookup.provider)
                return ResolvedKey("keyring", value)
    value = read_env(lookup.env_var)
    if value:
        return ResolvedKey("env", value, env_var=lookup.env_var, warning=warning)
    return ResolvedKey("missing", env_var=lookup.env_var, warning=warning)


def missing_key_message(lookup: KeyLookup) -> str:
    """Say where the key was looked for and how to provide one."""
    message = f"API key not configured for provider '{lookup.provider}'"
    fixes = [f"run `llm-cascade key set {lookup.provider}`"]
    if lookup.env_var:
        fixes.append(f"set {lookup.env_var}")
    elif lookup.withheld_env_var:
        fixes.append(
            f"set api_key_env for it ({lookup.withheld_env_var} is not sent to a custom base_url)"
        )
    return f"{message}: {' or '.join(fixes)}"


def mask_key(key: str) -> str:
    """Show at most 4 characters and never more than a quarter of the key (D42)."""
    shown = min(4, len(key) // 4)
    if shown < 2:
        return "*" * len(key)
    head = shown // 2 + shown % 2
    tail = shown - head
    return f"{key[:head]}...{key[len(key) - tail :]}" if tail else f"{key[:head]}..."
