"""API keys: one resolution rule (keyring, then env var) shared by `run` and `key ...`.

Keyring entries live under service `llm-cascade`, username = the provider's `api_key_service`
(default: the provider name). A type-default variable such as OPENAI_API_KEY is used only when
the provider talks to that vendor's own URL; empty values count as missing. The
keyring is imported lazily and every call has a time limit, so a locked or broken keyring
costs a one-line warning, never a hang or a traceback.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from . import redaction
from .config import ProviderConfig
from .providers import AWS_KEY_VARS, AWS_REGION_VARS, AWS_TYPES, PROVIDER_TYPES, aws_key_parts
from .text import shorten

logger = logging.getLogger(__name__)

KEYRING_SERVICE = "llm-cascade"
KEYRING_TIMEOUT_S = 5.0
KEYRING_TIMEOUT_ENV = "LLM_CASCADE_KEYRING_TIMEOUT"
MAX_KEY_CHARS = 4096
Source = Literal["keyring", "env", "missing", "not_needed"]
KeyringState = Literal["set", "not set", "error", "no backend", "off", "n/a"]
T = TypeVar("T")


class KeyringUnavailable(Exception):
    """The keyring could not be used: no backend, locked, failing or too slow."""


class NoKeyring(KeyringUnavailable):
    """No keyring backend at all (a headless server): the documented fallback to env vars."""


NO_BACKEND = "no keyring backend is installed or reachable"


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """Where a provider's key would come from: keyring username and env var, in that order."""

    provider: str
    needs_key: bool
    keyring_user: str | None
    env_var: str | None
    # A type-default variable deliberately not used because base_url is a third party.
    withheld_env_var: str | None = None
    # AWS credentials (`ID:SECRET[:TOKEN]` in the keyring or `api_key_env`, else the AWS_*
    # variables) and the region they are used in; no region means they cannot be used.
    aws: bool = False
    region: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """The outcome of a lookup. `value` never appears in reprs or logs."""

    source: Source
    value: str | None = field(default=None, repr=False)
    env_var: str | None = None
    warning: str | None = None  # e.g. the keyring failed and the env var was used
    keyring_failed: bool = False  # the keyring itself failed (not just: no entry)
    region: str | None = None  # AWS: the region the credentials are used in


def lookup_for(provider: ProviderConfig) -> KeyLookup:
    """The lookup recipe for a provider: keyring user, then env var (a vendor's default variable
    only for that vendor's own URL)."""
    default_env = PROVIDER_TYPES[provider.type].default_key_env
    if default_env is None:
        return KeyLookup(provider.name, False, None, None)
    user = provider.api_key_service or provider.name
    if provider.type in AWS_TYPES:  # SigV4 never sends the secret: any base_url may sign
        region = provider.region or next(filter(None, map(read_env, AWS_REGION_VARS)), None)
        env = provider.api_key_env or default_env
        return KeyLookup(provider.name, True, user, env, aws=True, region=region)
    if provider.api_key_env:
        return KeyLookup(provider.name, True, user, provider.api_key_env)
    if provider.uses_vendor_url:
        return KeyLookup(provider.name, True, user, default_env)
    return KeyLookup(provider.name, True, user, None, withheld_env_var=default_env)


def read_env(var: str | None) -> str | None:
    """The stripped value of `var`, or None when unset, empty or blank."""
    if not var:
        return None
    value = os.environ.get(var, "").strip()
    return value or None


def env_value(lookup: KeyLookup) -> str | None:
    """The key the environment holds for this lookup: its variable, or for AWS without
    `api_key_env` the AWS_* variables joined as `ID:SECRET[:TOKEN]`."""
    if not (lookup.aws and lookup.env_var == AWS_KEY_VARS[0]):
        return read_env(lookup.env_var)
    key_id, secret, token = map(read_env, AWS_KEY_VARS)
    if not (key_id and secret):
        return None
    return ":".join(p for p in (key_id, secret, token) if p)


def env_names(lookup: KeyLookup) -> str | None:
    """The variables to set, in words: `X_API_KEY`, or the two AWS ones."""
    if lookup.aws and lookup.env_var == AWS_KEY_VARS[0]:
        return f"{AWS_KEY_VARS[0]} and {AWS_KEY_VARS[1]} (+ {AWS_KEY_VARS[2]})"
    return lookup.env_var


def check_key(lookup: KeyLookup, secret: str) -> str:
    """`secret` cleaned (see clean_secret), and for AWS in its `ID:SECRET[:TOKEN]` form.
    Raises ValueError naming the problem."""
    value = clean_secret(secret)
    if lookup.aws and aws_key_parts(value) is None:
        raise ValueError(
            "AWS credentials are ACCESS_KEY_ID:SECRET_ACCESS_KEY (or"
            " ACCESS_KEY_ID:SECRET_ACCESS_KEY:SESSION_TOKEN for temporary ones)"
        )
    return value


def _usable(lookup: KeyLookup, value: str) -> bool:
    return fits_a_header(value) and (not lookup.aws or aws_key_parts(value) is not None)


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
        if isinstance(box["error"], KeyringUnavailable):
            raise box["error"]
        raise KeyringUnavailable(_first_line(box["error"])) from None
    return box["value"]  # type: ignore[no-any-return]  # set by the worker


def _keyring_call(call: Callable[[Any], T], timeout_s: float | None = None) -> T:
    """`call(backend)` on the backend in use, within the time limit.

    The backend is found inside the time limit too (discovery may wait on D-Bus). Raises
    KeyringUnavailable, or NoKeyring when there is no backend to call."""
    from . import keyring_choice

    def on_backend() -> T:
        backend = keyring_choice.backend()
        if backend is None or _is_no_backend(backend):
            raise NoKeyring(NO_BACKEND)
        return call(backend)

    return _with_timeout(on_backend, timeout_s or keyring_timeout_s())


def _is_no_backend(backend: Any) -> bool:
    """The `fail` backend, or a chain of no backends: keyring found nothing to use."""
    module = type(backend).__module__
    return module == "keyring.backends.fail" or (
        module == "keyring.backends.chainer" and not getattr(backend, "backends", None)
    )


def keyring_timeout_s() -> float:
    """Seconds one keyring call may take: $LLM_CASCADE_KEYRING_TIMEOUT, else 5."""
    raw = os.environ.get(KEYRING_TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else KEYRING_TIMEOUT_S
    except ValueError:
        return KEYRING_TIMEOUT_S
    return value if value > 0 and math.isfinite(value) else KEYRING_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Backend:
    """The keyring backend in use; `problem` says why keys cannot be kept in it."""

    name: str
    problem: str | None = None
    note: str | None = None  # worth knowing but not fatal, e.g. keys stored unencrypted


def keyring_backend() -> Backend:
    """Describe the backend `keyring` picks, discovered afresh; never raises, never hangs.

    The commands that show it (`key list`, `config check`, `key set`) thereby also refresh the
    choice `run` remembers (keyring_choice)."""
    from . import keyring_choice

    try:
        backend = _with_timeout(keyring_choice.discover, keyring_timeout_s())
    except KeyringUnavailable as exc:  # also a keyring that cannot be imported
        return Backend("unknown", str(exc))
    name = str(getattr(backend, "name", type(backend).__name__))
    problem = note = None
    # These three accept or refuse every call without keeping anything.
    if type(backend).__module__ == "keyring.backends.null":
        problem = "the null backend keeps nothing"
    elif _is_no_backend(backend):
        problem = NO_BACKEND
    elif "plaintext" in type(backend).__name__.lower():
        where = getattr(backend, "file_path", None)
        note = "keys are stored unencrypted" + (f" in {where}" if where else "")
    return Backend(name, problem, note)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """`NoKeyringError: No recommended backend was available.`: one short line, not a page."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.split(". ")[0].rstrip(".")
    text = shorten(text, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def keyring_in_use(enabled: bool) -> bool:
    """True if `key set` can keep keys: the config allows the keyring and its backend works.

    Callers pass this as `use_keyring` to `key_fix`, so no hint sends the user to a `key set`
    that would refuse."""
    return enabled and keyring_backend().problem is None


def backend_name() -> str:
    """The keyring backend in use, e.g. `SecretService Keyring`, or why there is none."""
    backend = keyring_backend()
    return f"{backend.name} (unusable: {backend.problem})" if backend.problem else backend.name


def keyring_get(user: str, timeout_s: float | None = None) -> str | None:
    """Read (`llm-cascade`, user) from the keyring; None if absent.

    Raises KeyringUnavailable (NoKeyring when there is no backend at all)."""
    value = _keyring_call(lambda backend: backend.get_password(KEYRING_SERVICE, user), timeout_s)
    return (value.strip() or None) if isinstance(value, str) else None


def keyring_set(user: str, secret: str) -> None:
    """Store a key. Raises KeyringUnavailable."""
    _keyring_call(lambda backend: backend.set_password(KEYRING_SERVICE, user, secret))


def store_key(lookup: KeyLookup, secret: str) -> None:
    """Store a provider's key where the runtime looks, and read it back.

    Raises KeyringUnavailable when the backend is unusable, fails, or does not return what it
    was given (a backend that silently drops keys must not look like success).
    """
    if not lookup.keyring_user:
        raise KeyringUnavailable(f"provider '{lookup.provider}' does not use an API key")
    backend = keyring_backend()
    if backend.problem:
        raise KeyringUnavailable(f"{backend.name}: {backend.problem}")
    keyring_set(lookup.keyring_user, secret)
    if keyring_get(lookup.keyring_user) != secret:
        raise KeyringUnavailable(f"{backend.name} accepted the key but does not return it")


def keyring_delete(user: str) -> bool:
    """Delete a key; False if there was none. Raises KeyringUnavailable."""

    def delete(backend: Any) -> bool:
        from keyring.errors import PasswordDeleteError

        try:
            backend.delete_password(KEYRING_SERVICE, user)
        except PasswordDeleteError:
            return False
        return True

    return _keyring_call(delete)


def fits_a_header(value: str) -> bool:
    """True if `value` can be sent as an HTTP header: one line of printable ASCII, no spaces.

    A value that cannot makes the HTTP layer fail with the header, key included, in its
    message, so such a key is never used (and never shown)."""
    return value.isascii() and value.isprintable() and not any(ch.isspace() for ch in value)


def _unusable(where: str, provider: str) -> str:
    return (
        f"ignored the key in {where} for '{provider}': it has spaces, line breaks, control or"
        " non-ASCII characters"
    )


def resolve_key(lookup: KeyLookup, *, use_keyring: bool = True) -> ResolvedKey:
    """Find the key: keyring first, then the env var. Never raises."""
    if not lookup.needs_key:
        return ResolvedKey("not_needed")
    warnings = []
    keyring_failed = False
    if use_keyring and lookup.keyring_user:
        try:
            value = keyring_get(lookup.keyring_user)
        except NoKeyring:  # the documented fallback, not news on every run: said at -v
            keyring_failed = True
            logger.info("no keyring backend; the key for '%s' comes from env vars", lookup.provider)
        except KeyringUnavailable as exc:
            keyring_failed = True
            warnings.append(f"keyring unavailable for '{lookup.provider}' ({exc}); using env var")
            logger.debug("keyring lookup failed for %s: %s", lookup.provider, exc)
        else:
            if value and not _usable(lookup, value):
                warnings.append(_unusable("the keyring", lookup.provider))
            elif value:
                logger.debug("key for %s found in the keyring", lookup.provider)
                redaction.register(value, *value.split(":"))
                return _found(lookup, ResolvedKey("keyring", value, region=lookup.region))
    value = env_value(lookup)
    if value and not _usable(lookup, value):
        warnings.append(_unusable(f"env var {env_names(lookup)}", lookup.provider))
        value = None
    warning = "; ".join(warnings) or None
    if value:
        redaction.register(value, *value.split(":"))
        found = ResolvedKey("env", value, lookup.env_var, warning, keyring_failed, lookup.region)
        return _found(lookup, found)
    return ResolvedKey("missing", None, lookup.env_var, warning, keyring_failed)


def _found(lookup: KeyLookup, key: ResolvedKey) -> ResolvedKey:
    """A key that was found, or missing after all: AWS credentials without a region."""
    if lookup.aws and not lookup.region:
        return replace(key, source="missing", value=None)
    return key


def missing_key_message(lookup: KeyLookup, *, use_keyring: bool = True) -> str:
    """Say where the key was looked for and how to provide one."""
    if lookup.aws:
        what = "AWS credentials" if lookup.region else "AWS region"
        message = f"{what} not configured for provider '{lookup.provider}'"
        return f"{message}: {key_fix(lookup, use_keyring=use_keyring)}"
    message = f"API key not configured for provider '{lookup.provider}'"
    return f"{message}: {key_fix(lookup, use_keyring=use_keyring)}"


def key_fix(lookup: KeyLookup, *, use_keyring: bool = True) -> str:
    """How to give a provider its key: `run `llm-cascade key set x` or set X_API_KEY`."""
    if lookup.aws and not lookup.region:  # asked first: without it no credential can sign
        return f"set `region` in [providers.{lookup.provider}] or {AWS_REGION_VARS[0]}"
    fixes = [f"run `llm-cascade key set {lookup.provider}`"] if use_keyring else []
    if lookup.env_var:
        fixes.append(f"set {env_names(lookup)}")
    elif lookup.withheld_env_var:
        fixes.append(
            f"set api_key_env for it ({lookup.withheld_env_var} is not sent to a custom base_url)"
        )
    return " or ".join(fixes)


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """Where one provider's key would come from right now (for `key list`, `config check`)."""

    lookup: KeyLookup
    keyring: KeyringState
    env_set: bool | None  # None: no env var applies to this provider
    source: Source

    @property
    def where(self) -> str:
        """`keyring`, `env var NAME`, `missing` or `not needed`."""
        if self.source == "env":
            return f"env var {env_names(self.lookup)}"
        return {"keyring": "keyring", "missing": "missing"}.get(self.source, "not needed")


def key_statuses(
    lookups: Iterable[KeyLookup], *, use_keyring: bool = True
) -> tuple[list[KeyStatus], str | None]:
    """The status of each lookup, and a warning if the keyring failed.

    After the first keyring failure the keyring is not asked again, so a locked keyring costs
    one time limit, not one per provider. No backend at all is no warning: callers show the
    backend. No key value leaves this function.
    """
    warning = None
    failed: KeyringState | None = None  # once the keyring failed: "error" or "no backend"
    statuses = []
    for lookup in lookups:
        if not lookup.needs_key:
            statuses.append(KeyStatus(lookup, "n/a", None, "not_needed"))
            continue
        state: KeyringState = "off"
        if use_keyring and lookup.keyring_user and failed is not None:
            state = failed
        elif use_keyring and lookup.keyring_user:
            try:
                state = "set" if keyring_get(lookup.keyring_user) else "not set"
            except NoKeyring:
                state = failed = "no backend"
            except KeyringUnavailable as exc:
                state = failed = "error"
                warning = f"keyring unavailable ({exc}); only env vars are used"
        env_set = None if lookup.env_var is None else env_value(lookup) is not None
        source: Source = "keyring" if state == "set" else "env" if env_set else "missing"
        if lookup.aws and not lookup.region:  # credentials without a region cannot sign
            source = "missing"
        statuses.append(KeyStatus(lookup, state, env_set, source))
    return statuses, warning


def clean_secret(raw: str) -> str:
    """The key as vendors expect it: stripped. Raises ValueError naming the problem."""
    value = raw.strip()
    if not value:
        raise ValueError("the API key is empty")
    if len(value) > MAX_KEY_CHARS:
        raise ValueError(f"the API key is longer than {MAX_KEY_CHARS} characters")
    if any(ch.isspace() for ch in value):
        raise ValueError("the API key contains spaces or several lines; give exactly one key")
    if not value.isprintable():
        raise ValueError("the API key contains control characters")
    if not value.isascii():
        raise ValueError("the API key contains non-ASCII characters (a pasted quote?)")
    return value


def mask_key(key: str) -> str:
    """Show at most 4 characters and never more than a quarter of the key."""
    shown = min(4, len(key) // 4)
    if shown < 2:
        return "*" * len(key)
    head = shown // 2 + shown % 2
    tail = shown - head
    return f"{key[:head]}...{key[len(key) - tail :]}" if tail else f"{key[:head]}..."
