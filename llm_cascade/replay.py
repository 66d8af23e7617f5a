"""Send saved prompts again: the queue an outage left behind, drained by `failed retry`.

Each prompt is locked before it is sent (a prompt another run holds is never sent twice),
answered through the same engine as any run, handed to the caller's `deliver`, and removed
only once that returned. Prompts that cannot be sent are reported, never dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .adhoc import ADHOC_CASCADE, adhoc_config
from .cascade import Cascade, CascadeResult
from .config import AppConfig
from .errors import CascadeFailed, ConfigError, ConversationError, UsageError
from .failures import FailureStore, SavedPrompt, write_private
from .paths import ensure_private_dir
from .types import compact_json

Verdict = Literal["answered", "failing", "unroutable", "unreadable", "taken", "undelivered"]


def prompt_store(config: AppConfig) -> FailureStore:
    """The failed-prompts folder of a config."""
    return FailureStore(config.failure_dir)


@dataclass(frozen=True, slots=True)
class Replayed:
    """What became of one saved prompt."""

    saved: SavedPrompt
    verdict: Verdict
    result: CascadeResult | None = None
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.verdict == "answered"

    @property
    def failed(self) -> bool:
        """Still on disk and not being handled by another run."""
        return self.verdict not in ("answered", "taken")


def check_answers_dir(answers_dir: Path) -> None:
    """Create DIR now: an unusable one must stop a retry before anything is sent."""
    try:
        ensure_private_dir(answers_dir)
        if not answers_dir.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"--answers-dir: cannot use '{answers_dir}': {reason}") from None


def write_answer(answers_dir: Path, saved: SavedPrompt, result: CascadeResult) -> Path:
    """`DIR/<id>.json` (0600): the conversation and the `run --json` object of its answer."""
    path = answers_dir / f"{saved.id}.json"
    data = {"id": saved.id, **result.to_dict()}
    write_private(
        path, {"id": saved.id, "conversation": saved.envelope.get("conversation"), "result": data}
    )
    return path


def with_saved_cascades(
    config: AppConfig, prompts: Iterable[SavedPrompt]
) -> tuple[AppConfig, dict[str, str]]:
    """`config` with the ad-hoc cascades (`run -m`, `LLMCascade([...])`) the prompts were saved
    from made again from the entries saved with them, and which cascade sends which prompt.

    The saved entries win over a config cascade of the same name. Two lists saved under one
    name (two different `-m` runs) become two cascades, the second named with a digest of its
    list. Entries the config cannot resolve any more are left out (the prompt is unroutable).
    """
    routes: dict[str, str] = {}
    made: dict[str, str] = {}  # cascade name -> its entries as JSON
    for saved in prompts:
        specs = saved.entries
        if specs is None:
            continue
        key = compact_json(specs)
        name = saved.cascade_name or ADHOC_CASCADE
        if made.get(name, key) != key or (name in config.cascades and name not in made):
            name = f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:6]}"
        if name not in made:
            try:
                config = adhoc_config(specs, config, name=name, label=saved.id)
            except ConfigError:
                continue
            made[name] = key
        routes[saved.id] = name
    return config, routes


def routing_problem(
    config: AppConfig,
    saved: SavedPrompt,
    cascade: str | None,
    routes: Mapping[str, str] | None = None,
) -> str | None:
    """Why `saved` cannot be sent with this config (its cascade is gone), or None."""
    name = _route(saved, cascade, routes)
    if name in config.cascades:
        return None
    return f"{saved.id}: cascade '{name}' is not in the config; pass -C/--cascade to pick one"


def _route(saved: SavedPrompt, cascade: str | None, routes: Mapping[str, str] | None) -> str:
    """The cascade that sends `saved`: the one asked for, else its own (made again)."""
    return cascade or (routes or {}).get(saved.id) or saved.cascade_name


async def replay(
    engine: Cascade,
    store: FailureStore,
    prompts: Iterable[SavedPrompt],
    deliver: Callable[[SavedPrompt, CascadeResult], None],
    *,
    cascade: str | None = None,
    routes: Mapping[str, str] | None = None,
) -> AsyncIterator[Replayed]:
    """Retry each prompt in turn (through `cascade`, else its own: `routes` names the ones
    `with_saved_cascades` made again) and say what became of it.

    `deliver(saved, result)` writes the answer out. If it raises, the prompt stays on disk,
    with the answer, as undelivered; an OSError (e.g. an answers file that cannot be made)
    moves on to the next prompt, anything else stops the queue.
    """
    for saved in prompts:
        problem = routing_problem(engine.config, saved, cascade, routes)
        if problem is not None:
            yield Replayed(saved, "unroutable", detail=problem)
            continue
        try:
            claim = store.claim(saved)
        except ConversationError as exc:  # one bad file must not stop the queue
            detail = f"{saved.id}: cannot retry: {exc} (fix or remove {saved.path})"
            yield Replayed(saved, "unreadable", detail=detail)
            continue
        if claim is None:
            yield Replayed(saved, "taken", detail=f"{saved.id}: another run holds it")
            continue
        try:
            answer = await engine.answer(
                _route(saved, cascade, routes), saved.conversation(), saved=claim
            )
        except CascadeFailed as exc:
            last = exc.message.splitlines()[-1]
            yield Replayed(saved, "failing", detail=f"{saved.id}: still failing ({last})")
            continue
        except UsageError as exc:  # this cascade cannot take it (images, no vision): the next
            claim.release()
            yield Replayed(saved, "unroutable", detail=f"{saved.id}: cannot be sent: {exc}")
            continue
        try:
            deliver(saved, answer.result)
        except Exception as exc:  # the answer could not be written: keep it with the prompt
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            where = answer.undelivered(reason or type(exc).__name__)
            if not isinstance(exc, OSError) or isinstance(exc, BrokenPipeError):
                raise  # stdout itself is gone or broken: stop the queue
            kept = (
                f"the prompt and the answer are kept in {where.path}"
                if where.path
                else f"the prompt could not be kept: {where.error}"
            )
            detail = f"{saved.id}: answered, but the answer could not be written ({reason}); {kept}"
            yield Replayed(saved, "undelivered", answer.result, detail)
            continue
        answer.delivered()
        yield Replayed(
            saved, "answered", answer.result, f"{saved.id}: answered by {answer.result.entry}"
        )
