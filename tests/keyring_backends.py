"""Keyring backends that misbehave, loadable by subprocesses via PYTHON_KEYRING_BACKEND."""

from __future__ import annotations

import threading

from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked

RELEASE = threading.Event()  # never set in a subprocess: every call blocks until it is killed


class HangingKeyring(KeyringBackend):
    """Like a Secret Service collection waiting for an unlock dialog nobody answers."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        RELEASE.wait()
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        RELEASE.wait()

    def delete_password(self, service: str, username: str) -> None:
        RELEASE.wait()


class LockedKeyring(KeyringBackend):
    """A keyring whose collection stays locked: every call raises."""

    priority = 1  # type: ignore[assignment]
    calls = 0

    def get_password(self, service: str, username: str) -> str | None:
        type(self).calls += 1
        raise KeyringLocked("Failed to unlock the collection!")

    def set_password(self, service: str, username: str, password: str) -> None:
        type(self).calls += 1
        raise KeyringLocked("Failed to unlock the collection!")

    def delete_password(self, service: str, username: str) -> None:
        type(self).calls += 1
        raise KeyringLocked("Failed to unlock the collection!")
