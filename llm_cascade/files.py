"""Owner-only files written atomically, and files read without trusting what they are.

Readers only ever see no file or a whole file: content goes to a temporary file in the same
folder first. A new file is published with link(), which refuses an existing name, so nothing
is ever overwritten. Advisory locks mark files a live process owns.
Files a user names are read with a size limit and never block forever (`read_bounded`).
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import select
import stat
from pathlib import Path

from .text import size_text

try:  # advisory locks; without fcntl (Windows) every file looks unlocked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # checked before every use


PIPE_TIMEOUT_S = 10.0
PIPE_TIMEOUT_ENV = "LLM_CASCADE_PIPE_TIMEOUT"
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO with no writer must not block
_READ_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class ReadRefused(OSError):
    """A file was not read: too large, not a regular file, or a pipe that stayed silent.
    Its message (`strerror`, also `str()`) says which."""

    def __str__(self) -> str:
        return str(self.strerror)


def pipe_timeout_s() -> float:
    """How long a pipe may stay silent: $LLM_CASCADE_PIPE_TIMEOUT, else 10 s."""
    raw = os.environ.get(PIPE_TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else PIPE_TIMEOUT_S
    except ValueError:
        return PIPE_TIMEOUT_S
    return value if value > 0 and math.isfinite(value) else PIPE_TIMEOUT_S


def too_large(limit: int) -> ReadRefused:
    return ReadRefused(errno.EFBIG, f"larger than the {size_text(limit)} limit")


def read_bounded(path: Path, limit: int, *, regular_only: bool = False) -> bytes:
    """The bytes of `path`, refusing more than `limit`, without ever blocking forever.

    A regular file is read at once. Anything else (a FIFO, `<(...)`, /dev/stdin, a device)
    is opened without blocking and refused if nothing arrives for `pipe_timeout_s()`, so a
    FIFO nobody writes to cannot hang the CLI. With `regular_only` anything but a regular file
    is refused before it is opened: opening a device can have effects. Raises OSError.
    """
    if regular_only and not stat.S_ISREG(os.stat(path).st_mode):
        raise ReadRefused(errno.EINVAL, "not a regular file")
    fd = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if stat.S_ISREG(info.st_mode):
            if info.st_size > limit:
                raise too_large(limit)
            return _read_upto(fd, limit, None)
        if regular_only:  # replaced by something else since the stat
            raise ReadRefused(errno.EINVAL, "not a regular file")
        return _read_upto(fd, limit, pipe_timeout_s())
    finally:
        os.close(fd)


def _read_upto(fd: int, limit: int, silence_s: float | None) -> bytes:
    """Read to the end, at most `limit` bytes; with `silence_s`, wait that long for each chunk."""
    poll = None
    if silence_s is not None and hasattr(select, "poll"):  # no poll on Windows: no FIFOs either
        poll = select.poll()
        poll.register(fd, select.POLLIN)
    elif _NONBLOCK:
        os.set_blocking(fd, True)
    data = bytearray()
    while True:
        if poll is not None and silence_s is not None and not poll.poll(silence_s * 1000):
            raise ReadRefused(
                errno.ETIMEDOUT, f"nothing arrived for {silence_s:g} s (a FIFO nobody writes to?)"
            )
        try:
            chunk = os.read(fd, min(1 << 16, limit + 1 - len(data)))
        except BlockingIOError:  # woken, but another reader took the data
            continue
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise too_large(limit)


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
        fd = os.open(path, _READ_FLAGS)  # never blocks, even if a FIFO took the file's place
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


def replace_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write `data` over `path` (0600 unless told) atomically: temp file, fsync, rename."""
    temp, fd = _temp_beside(path)
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
