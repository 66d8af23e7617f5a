"""Prompts in flight, written ahead into one append-only log per process.

Before its first request a run appends its saved-prompt envelope to its process's log, under
the failed-prompts folder in `.inflight/`; once the answer is delivered it appends an end mark.
That is two small writes to a file opened once, where a file per run cost creating, locking,
renaming and removing it (about 0.4 ms a run). The process holds a lock on its log while it
lives, so a reader that can take the lock knows the writer died: every prompt begun and never
ended is turned into an ordinary saved prompt (read as interrupted), then the log is removed.
A reader that cannot take it sees the open prompts as running. The log is emptied whenever
nothing is open and it has grown past `COMPACT_BYTES`, and rewritten with only its open
prompts when it has grown past `ROTATE_BYTES` with some open (a gateway is never idle).

Lines: `b ID EPOCH ENVELOPE-JSON` opens a prompt, `e ID` ends it. A line cut short by a full
disk or a crash is ignored, and a begin that could not be written whole raises, so the run
saves its prompt the old way or says it could not.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files
from .paths import ensure_private_dir

logger = logging.getLogger(__name__)

FOLDER = ".inflight"
SUFFIX = ".log"
COMPACT_BYTES = 1 << 20
ROTATE_BYTES = 16 << 20
STALE_TEMP_S = 60.0  # a temp log older than this belongs to a process that died creating it


@dataclass(frozen=True)
class Open:
    """A prompt begun and not ended: its envelope and the instant it was saved."""

    envelope: dict[str, Any]
    saved_at: float


class InflightLog:
    """This process's log in one folder; safe to share between threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = -1
        self._path: Path | None = None
        self._size = 0
        self._next = 0
        self._open: dict[int, bytes] = {}  # id -> its begin line, for a rotation
        self._open_bytes = 0
        self._cut = False  # the last line was cut short: the next starts on a line of its own

    @property
    def where(self) -> Path:
        """The log file (its folder before the first prompt), for messages."""
        return self._path or self.folder

    def begin(self, envelope: bytes, saved_at: float) -> int:
        """Append an open prompt (its envelope, compact JSON); returns its id. Raises OSError."""
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: a log of its own
                if self._fd >= 0:
                    os.close(self._fd)  # the parent's: closing our copy leaves its lock alone
                self._start()
            self._next += 1
            ident = self._next
            line = b"b %d %r %s\n" % (ident, saved_at, envelope)
            self._append(line)
            self._open[ident] = line
            self._open_bytes += len(line)
            return ident

    def end(self, ident: int) -> None:
        """Mark a prompt ended (answered, or saved as a file of its own)."""
        with self._lock:
            line = self._open.pop(ident, None)
            if line is None or self._pid != os.getpid():
                return
            self._open_bytes -= len(line)
            try:
                self._append(b"e %d\n" % ident)
                self._compact()
            except OSError as exc:  # the prompt reads as interrupted later: a copy, not a loss
                logger.debug("could not mark prompt %d ended in %s: %s", ident, self._path, exc)

    def _start(self) -> None:
        """Open a new log, locked before it takes its name so no reader sees it unlocked."""
        ensure_private_dir(self.folder)
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        temp = self.folder / f"tmp-{token}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            files.lock(fd)
            path = self.folder / f"{token}{SUFFIX}"
            os.rename(temp, path)
        except OSError:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        self._fd, self._pid, self._path, self._size = fd, os.getpid(), path, 0
        self._open, self._open_bytes = {}, 0

    def _append(self, line: bytes) -> None:
        if self._cut:  # else this line would be glued to the cut one and skipped with it
            line = b"\n" + line
        written = os.write(self._fd, line)
        self._size += written
        self._cut = written < len(line)
        if self._cut:  # a full disk: the line is cut, readers skip it
            raise OSError(28, "No space left on device")

    def _compact(self) -> None:
        if self._size < COMPACT_BYTES:
            return
        if not self._open:
            os.ftruncate(self._fd, 0)
            self._size = 0
        elif self._size >= max(ROTATE_BYTES, 4 * self._open_bytes):
            # The new log holds the open prompts before the old one goes, and the old one is
            # unlinked before its lock is let go: no reader ever sees them unheld.
            still, old_fd, old_path = self._open, self._fd, self._path
            self._start()
            for line in still.values():
                self._append(line)
            self._open, self._open_bytes = still, sum(map(len, still.values()))
            if old_path is not None:
                old_path.unlink(missing_ok=True)
            os.close(old_fd)

    def close(self) -> None:
        """At exit: an empty log is removed; one with open prompts stays for a reader."""
        with self._lock:
            if self._pid != os.getpid() or self._fd < 0:
                return
            if not self._open and self._path is not None:
                self._path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1


def parse(lines: Iterator[bytes]) -> dict[int, Open]:
    """The prompts a log holds open, by id; lines cut short or garbled are skipped."""
    found: dict[int, Open] = {}
    for line in lines:
        parts = line.rstrip(b"\n").split(b" ", 3)
        try:
            if parts[0] == b"b" and len(parts) == 4:
                envelope = json.loads(parts[3])
                if isinstance(envelope, dict):
                    found[int(parts[1])] = Open(envelope, float(parts[2]))
            elif parts[0] == b"e" and len(parts) == 2:
                found.pop(int(parts[1]), None)
        except (ValueError, RecursionError):
            continue
    return found


def survey(folder: Path, save: Callable[[Open], None]) -> list[Open]:
    """Turn the open prompts of every dead process's log into saved prompts with `save`
    (removing the log once all are saved); returns the open prompts of live processes."""
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:  # no folder: nothing in flight
        return []
    running: list[Open] = []
    for name in names:
        path = folder / name
        if name.endswith(SUFFIX):
            running.extend(_read_log(path, save))
        elif name.startswith("tmp-"):
            _drop_stale_temp(path)
    return running


def _read_log(path: Path, save: Callable[[Open], None]) -> list[Open]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:  # gone, or a symlink planted in its place: never followed
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device: not a log
            return []
        dead = files.lock(fd, blocking=False)
        if dead and os.fstat(fd).st_nlink == 0:
            return []  # its writer rotated it away: the prompts are in the new log
        with open(fd, "rb", closefd=False) as log:
            found = parse(iter(log))
        if not dead:
            return list(found.values())
        for prompt in found.values():
            save(prompt)
        path.unlink(missing_ok=True)
    except OSError as exc:  # a prompt that could not be saved stays in the log for next time
        logger.warning("could not recover the prompts in %s: %s", path, exc)
    finally:
        os.close(fd)
    return []


def _drop_stale_temp(path: Path) -> None:
    try:
        if time.time() - path.stat().st_mtime > STALE_TEMP_S:
            path.unlink()
    except OSError:
        pass


_logs: dict[Path, InflightLog] = {}
_logs_lock = threading.Lock()


def log_for(folder: Path) -> InflightLog:
    """The process's one log in `folder` (every engine of the process shares it)."""
    key = folder.absolute()
    with _logs_lock:
        log = _logs.get(key)
        if log is None:
            if not _logs:
                atexit.register(close_all)
            log = _logs[key] = InflightLog(key)
        return log


def close_all() -> None:
    """Close every log of this process (at exit)."""
    with _logs_lock:
        for log in _logs.values():
            log.close()
