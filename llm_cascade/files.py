"""Owner-only files written atomically: create a new one exclusively, or replace one.

Readers only ever see no file or a whole file: content goes to a temporary file in the same
folder first. A new file is published with link(), which refuses an existing name, so nothing
is ever overwritten (D30, D32, D34, D45). Advisory locks mark files a live process owns.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

try:  # advisory locks; without fcntl (Windows) every file looks unlocked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # checked before every use


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def lock(fd: int, *, blocking: bool = True) -> bool:
    """Take an exclusive advisory lock; False if another process holds it (non-blocking)."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def is_locked(path: Path) -> bool:
    """True if a live process holds a lock on `path` (the kernel drops it when it dies)."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _temp_beside(path: Path) -> tuple[Path, int]:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def create_new(path: Path, data: bytes, *, locked: bool = False, durable: bool = False) -> int:
    """Create `path` (0600) holding `data`, only if nothing is there; return an open fd.

    The fd holds an exclusive lock when `locked`; `durable` fsyncs before publishing.
    Raises FileExistsError if the name is taken, OSError otherwise.
    """
    temp, fd = _temp_beside(path)
    try:
        if locked:
            lock(fd)
        write_all(fd, data)
        if durable:
            os.fsync(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise
        except OSError:
            # No hard links on this file system: claim the name exclusively, then rename the
            # content over the placeholder (still atomic for readers; the lock moves along).
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            os.replace(temp, path)
    except BaseException:
        os.close(fd)
        raise
    finally:
        temp.unlink(missing_ok=True)
    return fd


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` over `path` (0600) atomically: temp file, fsync, rename."""
    temp, fd = _temp_beside(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
