"""Failed prompts on disk, so nothing is lost.

A run writes its conversation here *before* the first attempt (status `pending`): appended to
its process's in-flight log (`inflight.py`), which the process holds locked while it lives.
Once the answer reached its reader (`PromptKeeper.delivered`) the log marks it ended;
otherwise the prompt is saved as a file of its own with what each entry did (status `failed`,
`interrupted`, or `undelivered` with the answer that could not be written). The prompts of a
process that was killed are turned into files by the next reader (`failed list`, `status`,
the dashboard): shown as interrupted, and `failed retry` can answer them. The same prompt of
the same cascade saved again while one waits (a cron job firing during an outage) takes that
file over and holds its lock while it runs. Files are created exclusively (no overwrite, even
within one second), written through a temporary file, and readable by the owner only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import files, inflight
from .clock import format_ts, json_time
from .errors import ConversationError, SaveOutcome, UsageError
from .paths import ensure_private_dir
from .types import MAX_CONVERSATION_BYTES, Conversation, compact_json, too_deep
from .untrusted import MAX_NESTING

logger = logging.getLogger(__name__)

# A saved prompt is a conversation (at most MAX_CONVERSATION_BYTES as input) re-encoded with
# indentation and escapes, plus what each entry did: room for four times that.
MAX_SAVED_BYTES = 4 * MAX_CONVERSATION_BYTES


def sanitize_name(name: str) -> str:
    """Keep `[A-Za-z0-9._-]` so a cascade name can never leave the directory."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:64]
    return cleaned or "cascade"


def prompt_digest(cascade_name: str, conversation: Conversation) -> str:
    """A hash naming what a run asks, so the same prompt saved twice is recognised."""
    text = compact_json({"cascade": cascade_name, "conversation": conversation.to_dict()})
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _render(envelope: Mapping[str, Any], *, pretty: bool = True) -> bytes:
    """The file's bytes: indented for people, or compact (the C encoder: several times faster)
    for a pending file that is removed again in the common case."""
    if pretty:
        return json.dumps(envelope, indent=2, ensure_ascii=False).encode()
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def _unprintable(envelope: dict[str, Any]) -> str | None:
    """Why `failed show --json` could not print this envelope, or None."""
    if too_deep(envelope, MAX_NESTING + 1) is not None:  # the conversation is one level down
        return f"nested more than {MAX_NESTING} levels deep"
    try:
        json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a "\ud800" escape decodes to text no output can hold
        return "holds text that is not valid Unicode (a lone \\uD800-\\uDFFF escape)"
    return None


def _json_instants(data: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {
        k: json_time(v) if k in keys and isinstance(v, str | int | float) else v
        for k, v in data.items()
    }


def write_private(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to `path` owner-only and atomically (a temp file, fsync, then rename)."""
    ensure_private_dir(path.parent)
    files.replace_file(path, _render(data))


@dataclass(slots=True)
class SavedPrompt:
    """A conversation on disk, as `failed list/show/retry` see it.

    The file may have been written by the original tool or edited by hand: every field is
    read with the type it should have, and a value of another type counts as missing.
    """

    path: Path
    envelope: dict[str, Any] = field(repr=False)
    in_flight: bool = False
    size: int = 0  # bytes, as read

    @property
    def id(self) -> str:
        return self.path.stem

    def _text(self, key: str) -> str | None:
        value = self.envelope.get(key)
        return value if isinstance(value, str) else None

    @property
    def cascade_name(self) -> str:
        return self._text("cascade_name") or ""

    @property
    def entries(self) -> list[Any] | None:
        """The entries of the ad-hoc cascade it was saved from (`run -m`, a library list)."""
        value = self.envelope.get("entries")
        return value if isinstance(value, list) and value else None

    @property
    def timestamp(self) -> str | None:
        return self._text("timestamp")

    @property
    def retries(self) -> int:
        value = self.envelope.get("retries")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    @property
    def status(self) -> str:
        """failed, interrupted (its run died) or running (a run or a retry holds it)."""
        if self.in_flight:
            return "running"
        status = self._text("status") or "failed"
        return "interrupted" if status == "pending" else status

    @property
    def errors(self) -> list[dict[str, Any]]:
        """What each entry did: objects as saved, a bare string as its `detail`, else nothing."""
        errors = self.envelope.get("errors")
        if not isinstance(errors, list):
            return []
        return [
            e if isinstance(e, dict) else {"detail": e} for e in errors if isinstance(e, dict | str)
        ]

    def conversation(self) -> Conversation:
        return Conversation.from_dict(self.envelope.get("conversation"))

    def json_errors(self) -> list[dict[str, Any]]:
        """`errors` as JSON output shows them: instants in RFC 3339, whoever wrote the file."""
        return [_json_instants(e, ("cooldown_until",)) for e in self.errors]

    def json_envelope(self) -> dict[str, Any]:
        """The file as `failed show --json` prints it: instants in RFC 3339 and tool-call
        arguments as JSON text, as this version writes them, also in files others wrote."""
        out = _json_instants(self.envelope, ("timestamp", "last_tried"))
        if "errors" in out:
            out["errors"] = self.json_errors()
        with contextlib.suppress(ConversationError):  # else as it is: `failed show` says why
            out["conversation"] = self.conversation().to_dict()
        return out


class PendingPrompt:
    """A conversation saved for a run in progress; the open descriptor holds its lock."""

    def __init__(self, store: FailureStore, path: Path, fd: int, envelope: dict[str, Any]) -> None:
        self.store = store
        self.path = path
        self.envelope = envelope
        # The lock lasts until the run ends, or until this object is collected: an answer its
        # caller dropped unsettled must not hold the prompt, and a descriptor, for the rest of
        # the process. The file stays, and reads as interrupted.
        self._close = weakref.finalize(self, os.close, fd)

    def done(self) -> None:
        """The run answered: the file is no longer needed."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._release()

    def finish(self, status: str, errors: Sequence[Mapping[str, Any]], **fields: Any) -> Path:
        """Rewrite the file with its final status and the per-entry errors; returns the path."""
        self.envelope.update(status=status, errors=list(errors), **fields)
        try:
            self.store.replace(self.path, self.envelope)
        finally:
            self._release()
        return self.path

    def rewrite(self) -> None:
        """Write the envelope over the file while the run goes on; the lock moves with it."""
        fd = files.replace_locked(self.path, _render(self.envelope, pretty=False))
        self._close()
        self._close = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        """Give the prompt back as it was, unsent (a retry that could not be routed)."""
        self._release()

    def _release(self) -> None:
        self._close()  # once: later calls do nothing


class InflightPrompt:
    """A conversation written ahead in the process's in-flight log for a run in progress."""

    def __init__(
        self, store: FailureStore, ident: int, envelope: dict[str, Any], saved_at: float
    ) -> None:
        self.store = store
        self.ident = ident
        self.envelope = envelope
        self.saved_at = saved_at
        self.path = store.inflight_log.where
        # Dropped unsettled (an answer its caller never used): saved as a file, interrupted.
        self._dropped = weakref.finalize(
            self, store.abandon, ident, envelope, saved_at, os.getpid()
        )

    def done(self) -> None:
        """The run answered: the log marks it ended."""
        self._dropped.detach()
        self.store.inflight_log.end(self.ident)

    def finish(self, status: str, errors: Sequence[Mapping[str, Any]], **fields: Any) -> Path:
        """Save it as a file with its final status and the per-entry errors; returns the path.
        Raises OSError, and then the log still holds it."""
        self.envelope.update(status=status, errors=list(errors), **fields)
        path = self.store.write_file(self.envelope, self.saved_at)
        self.done()
        return path

    def release(self) -> None:
        """Nothing was sent: the prompt needs no keeping."""
        self.done()


class FailureStore:
    """The failed-prompts directory."""

    def __init__(self, directory: Path, *, owner_only: bool = False) -> None:
        self.dir = directory
        self.owner_only = owner_only  # refuse a directory others could read (shared /tmp)
        self._made = False  # the folder was there at the last write: skip the checks
        self._listing: tuple[int, list[str]] | None = None  # (folder mtime, names) for twins
        self._log: inflight.InflightLog | None = None

    @property
    def inflight_log(self) -> inflight.InflightLog:
        """This process's in-flight log in the folder."""
        if self._log is None:
            self._log = inflight.log_for(self.dir / inflight.FOLDER)
        return self._log

    def fallback(self) -> FailureStore:
        """A private directory under the system temp dir, for when `dir` cannot be written."""
        uid = getattr(os, "getuid", lambda: 0)()
        try:
            temp = tempfile.gettempdir()
        except OSError:  # no temp dir can be written either (a full disk): saving will say so
            temp = os.environ.get("TMPDIR") or "/tmp"
        base = Path(temp) / f"llm-cascade-{uid}" / "failed_prompts"
        return FailureStore(base, owner_only=True)

    def _ensure_dir(self) -> None:
        ensure_private_dir(self.dir)
        if self.owner_only and hasattr(os, "getuid"):
            for folder in (self.dir, self.dir.parent):
                info = folder.lstat()
                if info.st_uid != os.getuid() or info.st_mode & 0o077:
                    raise PermissionError(f"{folder} is not private to this user; not using it")

    def begin(
        self, cascade_name: str, conversation: Conversation, now: float, **extra: Any
    ) -> PendingPrompt | InflightPrompt:
        """Save the conversation before the first attempt and lock it. Raises OSError.

        An identical prompt of the same cascade already waiting here (a cron job that keeps
        firing during an outage) is taken over instead of saved once more.
        """
        digest = prompt_digest(cascade_name, conversation)
        twin = self._adopt_twin(cascade_name, digest, now)
        if twin is not None:
            twin.envelope.update(extra)
            with contextlib.suppress(OSError):  # a full disk: the copy there holds the question
                twin.rewrite()
            return twin
        envelope = self._envelope(cascade_name, conversation, now, status="pending", **extra)
        envelope["digest"] = digest
        self._check_dir()
        data = _render(envelope, pretty=False)
        try:
            ident = self.inflight_log.begin(data, now)
        except OSError as exc:  # no log here (say, a file took its name): a locked file
            logger.debug("cannot write ahead in %s (%s); saving a file", self.dir, exc)
            path, fd = self._create(
                cascade_name, envelope, now, keep_locked=True, tag=digest[:6], pretty=False
            )
            return PendingPrompt(self, path, fd, envelope)
        return InflightPrompt(self, ident, envelope, now)

    def write_file(self, envelope: Mapping[str, Any], saved_at: float) -> Path:
        """Save an in-flight prompt's envelope as a file of its own. Raises OSError."""
        digest = envelope.get("digest")
        tag = digest[:6] if isinstance(digest, str) else None
        name = str(envelope.get("cascade_name", ""))
        path, fd = self._create(name, envelope, saved_at, keep_locked=False, tag=tag)
        os.close(fd)
        return path

    def abandon(self, ident: int, envelope: dict[str, Any], saved_at: float, pid: int) -> None:
        """An in-flight prompt no run will settle: saved as a file (read as interrupted).
        Not in a forked child (`pid` began it): the parent still runs it, a copy would be sent
        twice."""
        if pid != os.getpid():
            return
        try:
            self.write_file(envelope, saved_at)
        except OSError as exc:  # still in the log: a later reader saves it
            logger.warning("could not save an unsettled prompt: %s", exc)
            return
        self.inflight_log.end(ident)

    def _recover(self, prompt: inflight.Open) -> None:
        """Save a dead process's in-flight prompt as a file, unless one holds it already."""
        digest = prompt.envelope.get("digest")
        name = str(prompt.envelope.get("cascade_name", ""))
        if isinstance(digest, str):
            for path in self._named_like(name, digest[:6]):
                saved = self.load(path)
                if saved is not None and saved.envelope.get("digest") == digest:
                    return  # saved once already (the run died just after saving it)
        self.write_file(prompt.envelope, prompt.saved_at)

    def _in_flight(self) -> list[SavedPrompt]:
        """Recover dead processes' prompts; the live ones', as running prompts."""
        running = []
        for prompt in inflight.survey(self.dir / inflight.FOLDER, self._recover):
            digest = prompt.envelope.get("digest")
            tag = digest[:6] if isinstance(digest, str) else "000000"
            cascade = str(prompt.envelope.get("cascade_name", ""))
            name = self._file_name(cascade, prompt.saved_at, tag)
            running.append(SavedPrompt(self.dir / name, prompt.envelope, in_flight=True))
        return running

    def _named_like(self, cascade_name: str, tag: str) -> list[Path]:
        """Files of this cascade whose name ends with `tag` (no glob: a pattern per digest
        would compile a new regex on every run)."""
        prefix = f"{sanitize_name(cascade_name)}_"
        names = [
            n
            for n in self._names()
            if n.startswith(prefix) and (n.endswith(f"_{tag}.json") or f"_{tag}-" in n)
        ]
        return [self.dir / name for name in names]

    def _names(self) -> list[str]:
        """The folder's file names, sorted; listed again only when the folder changed (its
        mtime), and not kept when it changed in the last second (a coarse clock tick could
        hide a later change)."""
        try:
            mtime = os.stat(self.dir).st_mtime_ns
            if self._listing is not None and self._listing[0] == mtime:
                return self._listing[1]
            names = sorted(e.name for e in os.scandir(self.dir))
        except OSError:  # no folder yet: no twin
            return []
        settled = time.time_ns() - mtime > 1_000_000_000
        self._listing = (mtime, names) if settled else None
        return names

    def _adopt_twin(self, cascade_name: str, digest: str, now: float) -> PendingPrompt | None:
        """Lock a saved prompt with this digest that no run holds, or None."""
        for path in self._named_like(cascade_name, digest[:6]):
            held = self._lock_fresh(path)
            if held is None:
                continue
            fd, envelope = held
            if envelope.get("digest") != digest or envelope.get("status") == "undelivered":
                os.close(fd)  # an answer waits in an undelivered one: never overwrite it
                continue
            repeats = envelope.get("repeats")
            envelope.update(
                status="pending",
                repeats=(repeats if isinstance(repeats, int) else 0) + 1,
                last_tried=format_ts(now),
            )
            return PendingPrompt(self, path, fd, envelope)
        return None

    def save(
        self,
        cascade_name: str,
        conversation: Conversation,
        now: float,
        errors: Sequence[Mapping[str, Any]] = (),
        status: str = "failed",
        **fields: Any,
    ) -> Path:
        """Save a failed conversation in one step. Raises OSError."""
        envelope = self._envelope(cascade_name, conversation, now, status=status, **fields)
        envelope["errors"] = list(errors)
        path, fd = self._create(cascade_name, envelope, now, keep_locked=False)
        os.close(fd)
        return path

    def _envelope(
        self, cascade_name: str, conversation: Conversation, now: float, **extra: Any
    ) -> dict[str, Any]:
        # The original's three keys first, in its order; the rest are additive.
        return {
            "cascade_name": cascade_name,
            "timestamp": format_ts(now),
            "conversation": conversation.to_dict(),
            "pid": os.getpid(),
            **extra,
        }

    def _create(
        self,
        cascade_name: str,
        envelope: Mapping[str, Any],
        now: float,
        *,
        keep_locked: bool,
        tag: str | None = None,
        pretty: bool = True,
    ) -> tuple[Path, int]:
        """Write a new file under a name nobody has, atomically, and return it with its fd.

        The name ends with `tag` (a digest prefix, to find twins by name) when it is free,
        else with random hex.
        """
        self._check_dir()
        data = _render(envelope, pretty=pretty)
        while True:
            unique = tag or secrets.token_hex(3)
            tag = None if tag is None else f"{tag}-{secrets.token_hex(2)}"
            final = (self.dir / self._file_name(cascade_name, now, unique)).absolute()
            try:  # never overwrite, even within one second
                return final, files.create_new(final, data, locked=keep_locked)
            except FileExistsError:
                continue
            except FileNotFoundError:  # the folder went away since the last write
                if not self._made:
                    raise
                self._made = False
                self._ensure_dir()
                self._made = True

    def _check_dir(self) -> None:
        if not self._made or self.owner_only:
            self._ensure_dir()
            self._made = True

    @staticmethod
    def _file_name(cascade_name: str, now: float, unique: str) -> str:
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d_%H%M%S")
        return f"{sanitize_name(cascade_name)}_{stamp}_{unique}.json"

    def replace(self, path: Path, envelope: Mapping[str, Any]) -> None:
        """Atomically rewrite an existing file."""
        write_private(path, envelope)

    # --- listing and replay ----------------------------------------------------------------

    def list(self) -> list[SavedPrompt]:
        """Every saved conversation, oldest first; unreadable files are skipped."""
        if not self.dir.is_dir():
            return []
        running = self._in_flight()
        dated = []
        for path in self.dir.glob("*.json"):
            try:
                dated.append((path.stat().st_mtime, path.name, path))
            except FileNotFoundError:
                continue  # a retry that just answered removed it
        found = []
        for _, _, path in sorted(dated):
            saved = self.load(path)
            if saved is not None:
                found.append(saved)
        return found + running

    def count_waiting(self) -> int:
        """How many saved prompts wait for a retry: files no running run holds. Counted by
        name, without reading them, so a dashboard can ask every second."""
        self._in_flight()  # a killed run's prompts become files that wait
        try:
            names = [e.name for e in os.scandir(self.dir) if e.name.endswith(".json")]
        except OSError:  # no folder yet
            return 0
        return sum(1 for n in names if not n.startswith(".") and not files.is_locked(self.dir / n))

    def load(self, path: Path) -> SavedPrompt | None:
        """The saved prompt in `path`, or None if it is not one. Only a regular file of at most
        MAX_SAVED_BYTES is read: a FIFO, a device or a huge file is skipped with a warning."""
        try:
            data = files.read_bounded(path, MAX_SAVED_BYTES, regular_only=True)
        except files.ReadRefused as exc:
            logger.warning("skipped %s: %s", path.name, exc)
            return None
        except OSError:
            return None
        try:
            envelope = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(envelope, dict) or "conversation" not in envelope:
            return None
        problem = _unprintable(envelope)
        if problem:
            logger.warning("skipped %s: %s", path.name, problem)
            return None
        return SavedPrompt(path, envelope, in_flight=files.is_locked(path), size=len(data))

    def find(self, ident: str) -> SavedPrompt:
        """A saved prompt by id, file name, path or unambiguous id prefix/suffix."""
        candidate = Path(ident)
        if candidate.suffix == ".json" and candidate.exists():
            saved = self.load(candidate)
            if saved is not None:
                return saved
        stem = candidate.name.removesuffix(".json")
        listed = self.list()
        matches = [s for s in listed if s.id == stem]
        if not matches:
            matches = [s for s in listed if s.id.startswith(stem) or s.id.endswith(stem)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(
                f"no saved prompt '{ident}' in {self.dir} (see `llm-cascade failed list`)"
            )
        raise UsageError(f"'{ident}' matches {len(matches)} saved prompts; give more of the id")

    def _lock_fresh(self, path: Path) -> tuple[int, dict[str, Any]] | None:
        """Lock `path` (non-blocking) and read it as it is now; None if held, gone or not ours.

        The file is read again once locked: another run may have rewritten it (a new file
        under the same name) since it was listed, and the lock must be on the file the name
        now points to, or two runs could both send it.
        """
        for _ in range(3):
            try:  # never open a FIFO or a device that took the name (opening can block)
                if not stat.S_ISREG(os.stat(path).st_mode):
                    return None
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            except OSError:
                return None
            if not files.lock(fd, blocking=False):
                os.close(fd)
                return None
            try:
                fresh = None
                info = os.fstat(fd)
                if os.stat(path).st_ino == info.st_ino and info.st_size <= MAX_SAVED_BYTES:
                    with open(fd, "rb", closefd=False) as locked:
                        fresh = json.loads(locked.read(MAX_SAVED_BYTES + 1))
            except (OSError, ValueError, RecursionError):  # e.g. answered and removed meanwhile
                os.close(fd)
                return None
            if isinstance(fresh, dict) and "conversation" in fresh:
                return fd, fresh
            os.close(fd)  # replaced between open and lock: look again
        return None

    def claim(self, saved: SavedPrompt) -> PendingPrompt | None:
        """Lock a saved prompt for a retry; None if another run holds it or it is gone."""
        held = self._lock_fresh(saved.path)
        if held is None:
            return None
        fd, saved.envelope = held
        try:
            if not saved.conversation().messages:  # the original saved those too
                raise ConversationError("$.conversation.messages", "is empty: nothing to send")
        except ConversationError:
            os.close(fd)
            raise
        previous = saved.envelope.get("retries", 0)
        retries = (previous if isinstance(previous, int) else 0) + 1
        saved.envelope.update(retries=retries)
        return PendingPrompt(self, saved.path, fd, saved.envelope)

    def remove(self, saved: SavedPrompt) -> bool:
        """Delete a saved prompt unless a run holds it; True if it was deleted."""
        held = self._lock_fresh(saved.path)
        if held is None:
            return False
        fd, _ = held
        try:
            saved.path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        return True


class PromptKeeper:
    """The one owner of a run's conversation on disk: saved before the first request, removed
    only once the answer was delivered, otherwise left with its status and what each entry
    did. Falls back to a private temp dir when the configured one cannot be written, and says
    so rather than claiming a save."""

    def __init__(
        self,
        store: FailureStore,
        cascade_name: str,
        conversation: Conversation,
        now: Callable[[], float],
        existing: PendingPrompt | InflightPrompt | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.cascade_name = cascade_name
        self.fields = dict(fields or {})  # saved with the prompt, whichever save writes it
        self.conversation = conversation
        self.now = now
        self.pending: PendingPrompt | InflightPrompt | None = existing
        self.problems: list[str] = []

    def save_before(self, **extra: Any) -> None:
        """Write the conversation (status pending) unless this run replays a saved one."""
        if self.pending is not None:
            return
        for store in self._stores():
            try:
                self.pending = store.begin(
                    self.cascade_name, self.conversation, self.now(), **self.fields, **extra
                )
            except OSError as exc:
                self.problems.append(f"{store.dir}: {exc.strerror or exc}")
                continue
            if self.problems:
                logger.warning(
                    "could not save the prompt in %s; saved it in %s", self.problems[0], store.dir
                )
            return
        logger.warning(
            "could not save the prompt before sending it (%s); it is kept only if a later"
            " save works",
            "; ".join(self.problems),
        )

    def _stores(self) -> Iterator[FailureStore]:
        """The configured folder, then (only if that one failed) the private fallback."""
        yield self.store
        yield self.store.fallback()

    def delivered(self) -> None:
        """The answer reached its reader: the saved conversation is no longer needed."""
        if self.pending is not None:
            self.pending.done()
            self.pending = None

    def keep(self, status: str, errors: Sequence[Mapping[str, Any]], **fields: Any) -> SaveOutcome:
        """Leave the prompt on disk with its final status, this run's errors and `fields`."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            try:
                return SaveOutcome(str(pending.finish(status, errors, **fields)))
            except OSError as exc:  # the file written before the first request is still there
                logger.warning("could not add the errors to %s: %s", pending.path, exc)
                return SaveOutcome(str(pending.path))
        for store in self._stores():
            try:
                path = store.save(
                    self.cascade_name,
                    self.conversation,
                    self.now(),
                    errors,
                    status,
                    **self.fields,
                    **fields,
                )
                return SaveOutcome(str(path))
            except OSError as exc:
                self.problems.append(f"{store.dir}: {exc.strerror or exc}")
        return SaveOutcome(None, "; ".join(dict.fromkeys(self.problems)))
