"""Mirrored requests: a copy of each request sent in the background to a cascade's `mirror`
entries, for comparison. The caller never waits for them nor sees their answers.

Each copy is one whole (not streamed) request with no retries and no cooldowns; it is
logged as an `attempt_log` row with `outcome = mirror` (tokens, latency, cost, or the error),
without the run's id, so it counts as no run's attempt. What mirrors spend counts against
the budgets. With `mirror_save`, each answer is written as JSON under `mirrors/` beside the
database. A CLI run waits at most the cascade's `mirror_wait` for them before exiting;
`Cascade.aclose()` cancels those still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from typing import TYPE_CHECKING

from . import policy
from .errors import ProviderError
from .files import replace_file
from .keys import lookup_for, missing_key_message
from .paths import ensure_private_dir
from .providers import get_adapter
from .store import AttemptRecord

if TYPE_CHECKING:
    from .cascade import Cascade
    from .config import CascadeConfig, CascadeEntry
    from .types import Conversation

logger = logging.getLogger(__name__)


class Mirrors:
    """The mirror requests of one engine, in flight as background tasks."""

    def __init__(self, engine: Cascade) -> None:
        self.engine = engine
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, cascade: CascadeConfig, conversation: Conversation, run_id: str) -> None:
        """Send `conversation` to each of the cascade's mirror entries that can take it."""
        needs = policy.needs_of(conversation)
        for entry in cascade.mirror:
            if policy.unfit(entry.options, needs):
                continue
            task = asyncio.create_task(self._copy(cascade, entry, conversation, run_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def wait(self, timeout: float) -> None:
        """Let the copies in flight finish, for at most `timeout` seconds."""
        if self.tasks and timeout > 0:
            await asyncio.wait(set(self.tasks), timeout=timeout)

    async def cancel(self) -> None:
        """Cancel the copies still in flight (their rows are not written)."""
        tasks = set(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _copy(
        self, cascade: CascadeConfig, entry: CascadeEntry, conversation: Conversation, run_id: str
    ) -> None:
        from .providers import _http

        engine = self.engine
        provider = engine.config.providers[entry.provider]
        key = engine.resolve(provider)
        row = AttemptRecord(cascade.name, entry.key, None, 0, outcome="mirror")
        if key.source == "missing":
            detail = missing_key_message(lookup_for(provider), use_keyring=engine.config.keyring)
            self._log(_failed(row, "missing_key", detail))
            return
        call = policy.call_options(
            entry, provider, key.value, output=conversation.output, region=key.region
        )
        started = engine.clock.monotonic()
        try:
            client = await engine.http_client()
            reply = await _http.send(
                client,
                get_adapter(provider.type),
                conversation,
                call,
                policy.attempt_budget(entry.options, None),
                engine.clock.now(),
            )
        except ProviderError as err:
            latency = _ms(engine.clock.monotonic() - started)
            self._log(_failed(row, err.kind, err.display(), err.status, latency))
            return
        response = reply.response
        price = entry.price
        self._log(
            AttemptRecord(
                cascade.name,
                entry.key,
                reply.status,
                _ms(engine.clock.monotonic() - started),
                response.input_tokens,
                response.output_tokens,
                outcome="mirror",
                cost=price.cost(response.input_tokens, response.output_tokens) if price else None,
            )
        )
        if cascade.mirror_save:
            self._save(entry, run_id, response.to_dict())

    def _log(self, record: AttemptRecord) -> None:
        store = self.engine.state_store()
        if store is None:
            return
        try:
            store.log_attempt(record, self.engine.clock.now())
        except sqlite3.Error as exc:
            logger.warning("database error while logging a mirror request (%s)", exc)

    def _save(self, entry: CascadeEntry, run_id: str, answer: dict[str, object]) -> None:
        folder = self.engine.config.database_path.parent / "mirrors"
        name = f"{run_id}-{entry.key.replace('/', '_')}.json"
        document = {"run_id": run_id, "entry": entry.key, "answer": answer}
        try:
            ensure_private_dir(folder)
            replace_file(folder / name, json.dumps(document, ensure_ascii=False).encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot save the mirror answer of %s (%s)", entry.key, exc)


def _failed(
    row: AttemptRecord,
    kind: str,
    detail: str,
    status: int | None = None,
    latency_ms: int = 0,
) -> AttemptRecord:
    from dataclasses import replace

    return replace(
        row, http_status=status, latency_ms=latency_ms, error_kind=kind, error_message=detail[:500]
    )


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)
