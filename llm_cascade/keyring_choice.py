"""Which keyring backend to use, remembered between CLI runs so `run` does not pay to find it.

To pick a backend, `keyring` imports and probes every backend it knows (on Linux that includes a
ctypes probe for the macOS one): about 0.1 s, on every process. What it picks depends only on
what is installed, on a few environment variables and on keyring's own config file, so the CLI
saves its choice with a fingerprint of those in an owner-only file under the data dir (one per
environment, a few at most). The next run loads that backend directly, and skips the keyring
entirely when the choice was the `fail` backend (no keyring: every headless server). A new
environment, a changed config file or a saved backend that no longer loads means a fresh
discovery. `PYTHON_KEYRING_BACKEND` is keyring's own direct choice and is never cached; nor is
anything in a process that did not call `remember_choice()` (the library uses keyring as is).
A saved chain of several backends (keyring's `ChainerBackend`) still finds its members by
discovery when loaded: correct, only not faster.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_NAME = "keyring-backend.json"
FORMAT = 1
MAX_CHOICES = 8  # environments remembered (a desktop session, cron, ssh...)
MAX_BYTES = 256 * 1024
ENV_OVERRIDE = "PYTHON_KEYRING_BACKEND"
# What keyring's backends read to decide whether they can run (D-Bus session, desktop, config
# and data roots), besides the installed packages, which the sys.path folders' mtimes cover.
FINGERPRINT_ENV = (
    "HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CURRENT_DESKTOP",
    "DBUS_SESSION_BUS_ADDRESS",
    "LOCALAPPDATA",
)
NO_KEYRING = "keyring.backends.fail.Keyring"
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")

_remember = False
_cache_file: Path | None = None  # None with _remember: the data dir's, found on first use
_chosen: Any = None  # the backend this process uses, once known


def remember_choice(cache_file: Path | None = None) -> None:
    """Let this process read and save the choice (the CLI calls this; default: the data dir)."""
    global _remember, _cache_file
    _remember, _cache_file = True, cache_file


def _cache() -> Path | None:
    """The cache file, or None when this process must use keyring's choice as it is."""
    global _cache_file
    if not _remember or os.environ.get(ENV_OVERRIDE):
        return None
    if _cache_file is None:
        from .paths import default_data_dir

        _cache_file = default_data_dir() / CACHE_NAME
    return _cache_file


def backend() -> Any:
    """The backend to read keys from, or None when there is no keyring (the `fail` backend).

    From the saved choice when it still holds, else keyring's own discovery (then saved)."""
    global _chosen
    cache = _cache()
    if cache is None:
        return _usable(_keyring().get_keyring())
    if _chosen is None:
        _chosen = _load_saved(cache) or discover()
    return _usable(_chosen)


def discover() -> Any:
    """keyring's choice, found afresh (and saved for the next runs when allowed)."""
    global _chosen
    found = _keyring().get_keyring()
    cache = _cache()
    if cache is not None:
        _chosen = found
        _save(cache, found)
    return found


def _usable(found: Any) -> Any:
    return None if found == NO_KEYRING or class_path(found) == NO_KEYRING else found


def class_path(found: Any) -> str:
    kind = type(found)
    return f"{kind.__module__}.{kind.__qualname__}"


def _keyring() -> Any:
    import keyring

    return keyring


# --- the saved choice --------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """What keyring's choice depends on, besides its config file; cheap, keyring not imported."""
    return {
        "platform": sys.platform,
        "python": sys.executable,
        "keyring": _keyring_version(),
        "env": {name: os.environ.get(name) for name in FINGERPRINT_ENV},
        # Installing or removing a package (a new backend, a keyring upgrade) changes its
        # folder's mtime. The working directory is left out: it changes with every `cd`.
        "paths": [
            [entry, _mtime(entry)]
            for entry in sys.path
            if entry and entry != os.getcwd() and os.path.isdir(entry)
        ],
    }


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _keyring_version() -> str | None:
    """The installed keyring's version, from its dist-info folder (no import of keyring)."""
    import importlib.util

    spec = importlib.util.find_spec("keyring")
    if spec is None or not spec.origin:
        return None
    for dist in Path(spec.origin).parent.parent.glob("keyring-*.dist-info"):
        return dist.name.removeprefix("keyring-").removesuffix(".dist-info")
    return None


def _load_saved(cache_file: Path) -> Any:
    """The backend saved for this environment if keyring's config file is unchanged and the
    backend still loads; else None (NO_KEYRING when the choice was no backend)."""
    now = environment()
    saved = next((c for c in _choices(cache_file) if c.get("environment") == now), None)
    if saved is None:
        logger.debug("keyring: no choice saved in %s for this environment", cache_file)
        return None
    name, config = saved.get("backend"), saved.get("keyring_config")
    if not isinstance(name, str) or not _CLASS_PATH.fullmatch(name):
        return None
    if not (isinstance(config, list) and config and config == _config_state(config[0])):
        logger.debug("keyring: its config file changed since %s was saved", cache_file)
        return None
    if name == NO_KEYRING:
        logger.debug("keyring: no backend (saved in %s)", cache_file)
        return NO_KEYRING  # nothing to import: the keyring is skipped
    try:
        found = _instantiate(name)
    except Exception as exc:  # whatever a backend raises, discovery is the fallback
        logger.debug("keyring: saved backend %s no longer loads (%s); discovering", name, exc)
        return None
    logger.debug("keyring: using %s (saved in %s)", name, cache_file)
    return found


def _config_state(path: Any) -> list[Any]:
    """keyring's config file and its mtime (None: absent), as saved."""
    return [path, _mtime(path) if isinstance(path, str) else None]


def _instantiate(name: str) -> Any:
    """Load a backend class by name, as keyring does for PYTHON_KEYRING_BACKEND."""
    import importlib

    from keyring.backend import KeyringBackend

    module_name, _, class_name = name.rpartition(".")
    kind = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(kind, type) and issubclass(kind, KeyringBackend)):
        raise TypeError(f"{name} is not a keyring backend")
    kind.priority  # noqa: B018 - raises when the backend cannot run here (as keyring checks)
    return kind()


def _choices(cache_file: Path) -> list[dict[str, Any]]:
    """The saved choices, newest first, if the file is ours and private (it names code we
    import); one per environment, so cron jobs without D-Bus and a desktop session do not
    keep replacing each other's."""
    try:
        with open(cache_file, "rb") as fh:
            info = os.fstat(fh.fileno())
            if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
                logger.debug(
                    "keyring: ignoring %s (not owned by you, or writable by others)", cache_file
                )
                return []
            data = json.loads(fh.read(MAX_BYTES))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return []
    choices = data.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _save(cache_file: Path, found: Any) -> None:
    """Remember `found`; a data dir we cannot write only costs the next run a discovery."""
    from . import files
    from .paths import ensure_private_dir

    now = environment()
    choice = {
        "backend": class_path(found),
        "environment": now,
        "keyring_config": _config_state(_keyring_config_file()),
    }
    others = [c for c in _choices(cache_file) if c.get("environment") != now]
    data = {"format": FORMAT, "choices": [choice, *others][:MAX_CHOICES]}
    try:
        ensure_private_dir(cache_file.parent)
        files.replace_file(cache_file, json.dumps(data, indent=1).encode())
    except OSError as exc:
        logger.debug("keyring: cannot save the backend choice in %s: %s", cache_file, exc)
    else:
        logger.debug("keyring: found %s; saved in %s", choice["backend"], cache_file)


def _keyring_config_file() -> str | None:
    """keyring's own config file (keyringrc.cfg), which can name the backend."""
    try:
        from keyring.util import platform_

        return str(platform_.config_root() / "keyringrc.cfg")
    except Exception:  # pragma: no cover - an older or newer keyring without this helper
        return None
