"""What every breaker-state backend offers, and the error a shared one raises when it is out.

The embedded SQLite `Store` is one such backend; Redis and PostgreSQL are the shared ones.
Every instant is epoch seconds from the caller's clock, so all backends judge "now" alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..errors import LlmCascadeError
from ..store import EntryState, Failure


class BackendError(LlmCascadeError):
    """A shared backend could not be used (unreachable, timed out, refused, wrong schema)."""


class Breakers(Protocol):
    """Per-entry breakers: cooldown until/level/reason, consecutive failures, the probe lease."""

    def states(self, keys: Iterable[str]) -> dict[str, EntryState]:
        """Each key's breaker (closed when unknown), in one round trip."""
        ...

    def all_states(self) -> list[EntryState]: ...

    def claim_probe(self, key: str, owner: str, now: float, lease_s: float) -> bool:
        """Become the one holder of a half-open entry's probe lease; False if not half-open
        or another holds an unexpired lease."""
        ...

    def release_probe(self, key: str, owner: str) -> None:
        """Free the lease if `owner` still holds it."""
        ...

    def reset_breaker(self, key: str, sent: float, now: float) -> None:
        """An answer to a request sent at `sent`: reset the failures, end the cooldown and the
        lease, unless a failure newer than `sent` was recorded."""
        ...

    def fail_breaker(self, failure: Failure) -> tuple[float | None, int]:
        """A failure at `level` = failures + 1: cool down for `cooldown_for(level)` seconds
        (never shortening a later cooldown already set) and end the lease; with None, no
        cooldown, the count unchanged and `owner`'s lease freed. Returns (until, level)."""
        ...

    def clear_cooldowns(self, keys: Iterable[str] | None = None) -> int: ...

    def put_states(self, states: Iterable[EntryState]) -> int:
        """Copy these breakers in as they are (probe leases excluded)."""
        ...

    def close(self) -> None: ...


class SharedBreakers(Breakers, Protocol):
    """A backend on a server: it can be asked whether it answers."""

    def ping(self) -> None:
        """Raise BackendError unless the server answers within the timeout."""
        ...
