"""The engine: try entries in order, skip cooled-down ones, apply the rules, record everything.

For each entry: skip it while its breaker is open; when its cooldown has expired, let exactly
one process probe it (a lease claimed in SQLite); resolve its key; send, retrying in place
only for rules that allow it; then record the attempt and any cooldown in one transaction.
The conversation is on disk before the first request and removed once an entry answers.
"""

from __future__ import annotations

import logging
import random
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from . import rules as rules_mod
from .clock import Clock, SystemClock, format_human
from .config import AppConfig, CascadeConfig, CascadeEntry, ProviderConfig
from .errors import CascadeFailed, ProviderError, SaveOutcome, UsageError
from .failures import FailureStore, PendingPrompt
from .keys import ResolvedKey, lookup_for, missing_key_message, resolve_key
from .providers import get_adapter
from .providers.base import CallOptions
from .store import AttemptRecord, EntryState, Store
from .types import Conversation, LlmResponse

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "failed", "retrying", "skipped", "missing_key", "deadline"]
KeyResolver = Callable[[ProviderConfig], ResolvedKey]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened to one entry (or one try of it), for --explain, --json and the log."""

    entry: str
    outcome: Outcome
    detail: str = ""
    status: int | None = None
    kind: str | None = None
    rule: str | None = None
    cooldown_until: float | None = None
    level: int | None = None  # consecutive failures, this one included
    latency_ms: int = 0
    try_number: int = 1
    probe: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in _fields(self).items() if v is not None}

    def error_text(self) -> str:
        """`<key>: <error>` as in the original's Failed entries list (§6.4)."""
        return f"{self.entry}: {self.detail}"


def _fields(attempt: Attempt) -> dict[str, Any]:
    return {name: getattr(attempt, name) for name in Attempt.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """An answer and how it was reached."""

    response: LlmResponse
    cascade_name: str
    entry: str
    provider: str
    status: int
    latency_ms: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.response.text

    def to_dict(self) -> dict[str, Any]:
        r = self.response
        return {
            "ok": True,
            "text": r.text,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.parsed_arguments()}
                for c in r.tool_calls
            ],
            "cascade": self.cascade_name,
            "entry": self.entry,
            "provider": self.provider,
            "model": r.model,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "stop_reason": r.stop_reason,
            "latency_ms": self.latency_ms,
            "attempts": [a.to_dict() for a in self.attempts],
            "response": r.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-run behaviour on top of the config."""

    deadline_s: float | None = None  # whole-cascade budget; None: the cascade's `deadline`
    ignore_cooldown: bool = False
    wait_cooldown_s: float | None = None  # wait up to this long for the soonest cooling entry


class Cascade:
    """Runs cascades from one config against one database. Reusable across runs."""

    def __init__(
        self,
        config: AppConfig,
        *,
        store: Store | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        key_resolver: KeyResolver | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._owns_store = store is None
        self.store = store if store is not None else Store(config.database_path)
        self.failures = FailureStore(config.failure_dir)
        self.client = client
        self._owns_client = client is None
        self.clock: Clock = clock or SystemClock()
        self.resolve = key_resolver or (
            lambda p: resolve_key(lookup_for(p), use_keyring=config.keyring)
        )
        self.jitter = jitter

    async def aclose(self) -> None:
        """Close the HTTP client and the database if the engine opened them."""
        if self.client is not None and self._owns_client:
            await self.client.aclose()
            self.client = None
        if self._owns_store:
            self.store.close()

    async def __aenter__(self) -> Cascade:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(
        self,
        cascade_name: str,
        conversation: Conversation,
        options: RunOptions | None = None,
        *,
        saved: PendingPrompt | None = None,
    ) -> CascadeResult:
        """Answer `conversation` with the first entry that can; raise CascadeFailed otherwise.

        `saved` is a prompt already on disk (a replay): it is used instead of saving a new one,
        removed on success and rewritten with this run's errors on failure.
        """
        cascade = self.config.cascades.get(cascade_name)
        if cascade is None:
            defined = ", ".join(sorted(self.config.cascades)) or "none"
            raise UsageError(
                f"Cascade '{cascade_name}' not found in configuration (defined: {defined})"
            )
        if not conversation.messages:
            raise UsageError("the conversation has no messages")
        run = _Run(self, cascade, conversation, options or RunOptions())
        return await run.execute(saved)


class _Run:
    """The state of one cascade call."""

    def __init__(
        self, engine: Cascade, cascade: CascadeConfig, conversation: Conversation, opts: RunOptions
    ) -> None:
        self.e = engine
        self.cascade = cascade
        self.conversation = conversation
        self.opts = opts
        self.id = secrets.token_hex(8)
        self.attempts: list[Attempt] = []
        self.keys: dict[str, ResolvedKey] = {}
        self.stopped = False
        self.started = engine.clock.monotonic()
        deadline = opts.deadline_s if opts.deadline_s is not None else cascade.deadline
        self.deadline_at = None if deadline is None else self.started + deadline
        self.db_warned = False

    # --- the whole run ---------------------------------------------------------------------

    async def execute(self, existing: PendingPrompt | None) -> CascadeResult:
        pending, save_error = (existing, None) if existing is not None else self._presave()
        try:
            result = await self._passes()
        except BaseException:  # Ctrl-C or cancellation: the prompt stays on disk
            saved = self._finish(pending, save_error, "interrupted")
            where = f"saved in {saved.path}" if saved.path else f"NOT saved: {saved.error}"
            logger.warning("interrupted; the prompt is %s", where)
            raise
        if result is not None:
            if pending is not None:
                pending.done()
            return result
        saved = self._finish(pending, save_error, "failed")
        raise CascadeFailed(
            self.cascade.name,
            self._message(),
            attempts=self.attempts,
            saved=saved,
            retry_after_s=self._retry_after(),
        )

    def _presave(self) -> tuple[PendingPrompt | None, str | None]:
        """Put the conversation on disk before any request: the configured dir, else a fallback."""
        problems = []
        for store in (self.e.failures, self.e.failures.fallback()):
            try:
                pending = store.begin(
                    self.cascade.name, self.conversation, self.e.clock.now(), run_id=self.id
                )
            except OSError as exc:
                problems.append(f"{store.dir}: {exc.strerror or exc}")
                continue
            if problems:
                logger.warning(
                    "could not save the prompt in %s; saved it in %s", problems[0], store.dir
                )
            return pending, None
        logger.warning("could not save the prompt before sending it: %s", "; ".join(problems))
        return None, "; ".join(problems)

    def _finish(
        self, pending: PendingPrompt | None, save_error: str | None, status: str
    ) -> SaveOutcome:
        """Leave the prompt on disk with its final status and this run's errors."""
        if pending is not None:
            try:
                return SaveOutcome(str(pending.finish(status, self._errors())))
            except OSError as exc:  # the file written before the first attempt is still there
                logger.warning("could not add the errors to %s: %s", pending.path, exc)
                return SaveOutcome(str(pending.path))
        problems = [save_error] if save_error else []
        for store in (self.e.failures, self.e.failures.fallback()):
            try:
                path = store.save(
                    self.cascade.name, self.conversation, self.e.clock.now(), self._errors(), status
                )
            except OSError as exc:
                problems.append(f"{store.dir}: {exc.strerror or exc}")
                continue
            return SaveOutcome(str(path))
        return SaveOutcome(None, "; ".join(problems))

    async def _passes(self) -> CascadeResult | None:
        """Run the entries; with --wait-cooldown, wait for the soonest cooling one and go again."""
        entries = list(self.cascade.entries)
        waited = 0.0
        while True:
            result = await self._pass(entries)
            if result is not None or self.stopped or self.opts.wait_cooldown_s is None:
                return result
            skipped = {a.entry for a in self.attempts if a.outcome == "skipped"}
            entries = [e for e in entries if e.key in skipped]
            wake = self._soonest_free(entries)
            if wake is None:
                return None
            pause = max(wake - self.e.clock.now(), 0.0) + 0.01
            remaining = self._remaining()
            if waited + pause > self.opts.wait_cooldown_s or (
                remaining is not None and pause >= remaining
            ):
                return None
            logger.info(
                "every entry is cooling down; waiting %.1f s for the first to free up", pause
            )
            await self.e.clock.sleep(pause)
            waited += pause
            self.attempts = [a for a in self.attempts if a.outcome != "skipped"]

    async def _pass(self, entries: list[CascadeEntry]) -> CascadeResult | None:
        for entry in entries:
            if self.stopped:
                break
            result = await self._entry(entry)
            if result is not None:
                return result
        return None

    # --- one entry -------------------------------------------------------------------------

    async def _entry(self, entry: CascadeEntry) -> CascadeResult | None:
        provider = self.e.config.providers[entry.provider]
        now = self.e.clock.now()
        state = self._state(entry.key)
        probe = False
        if not self.opts.ignore_cooldown:
            if state.is_cooling(now):
                self._skip(
                    entry,
                    state,
                    f"cooling down until {format_human(state.cooldown_until or now)}"
                    f" (level {state.failures}, {state.reason or 'failure'})",
                )
                return None
            if state.is_half_open(now):
                if not self._claim_probe(entry):
                    self._skip(entry, state, "half-open: another process is probing it")
                    return None
                probe = True
        key = self.keys.get(provider.name)
        if key is None:
            key = self.keys[provider.name] = self.e.resolve(provider)
            if key.warning:
                logger.warning("%s", key.warning)
        if key.source == "missing":
            self._missing_key(entry, provider, probe)
            return None
        return await self._tries(entry, provider, key, probe)

    async def _tries(
        self, entry: CascadeEntry, provider: ProviderConfig, key: ResolvedKey, probe: bool
    ) -> CascadeResult | None:
        from .providers import _http  # httpx is imported only when a request is made

        opts = entry.options
        adapter = get_adapter(provider.type)
        call = _call_options(entry, provider, key)
        client = await self._client()
        for try_number in range(1, opts.retries + 2):
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self._deadline(entry, probe, try_number)
                return None
            total = opts.timeout if remaining is None else min(opts.timeout, remaining)
            budget = _http.Budget(
                total=total,
                connect=min(opts.connect_timeout, total),
                first_byte=min(opts.first_byte_timeout or total, total),
            )
            logger.info("attempting %s%s", entry.key, " (probe)" if probe else "")
            started = self.e.clock.monotonic()
            try:
                reply = await _http.send(
                    client, adapter, self.conversation, call, budget, self.e.clock.now()
                )
            except ProviderError as err:
                latency = _ms(self.e.clock.monotonic() - started)
                if err.kind == "timeout" and total < opts.timeout and self._remaining() is not None:
                    self._deadline(entry, probe, try_number, latency)  # our budget, not its fault
                    return None
                rule = rules_mod.decide(err, provider.type, provider.rules, self.e.config.rules)
                wait = self._retry_wait(rule, err, try_number, entry)
                self._failed(
                    entry,
                    provider,
                    err,
                    rule,
                    latency,
                    try_number,
                    probe,
                    retrying=wait is not None,
                )
                if wait is None:
                    self.stopped = rule.action == "stop"
                    return None
                await self.e.clock.sleep(wait)
                continue
            latency = _ms(self.e.clock.monotonic() - started)
            return self._succeeded(entry, reply.response, reply.status, latency, try_number, probe)
        return None  # pragma: no cover - the last try always returns above

    def _retry_wait(
        self, rule: rules_mod.Rule, err: ProviderError, try_number: int, entry: CascadeEntry
    ) -> float | None:
        """Seconds to wait before trying this entry again, or None to move on."""
        opts = entry.options
        if not rule.retry or try_number > opts.retries:
            return None
        jitter = 0.75 + 0.25 * float(self.e.jitter())  # 75-100 % of the step, as the vendor SDKs
        wait: float = min(0.5 * 2 ** (try_number - 1), opts.max_wait) * jitter
        if rule.honor_retry_after and err.retry_after_s is not None:
            if err.retry_after_s > opts.max_wait:
                return None  # the server asks for longer than we wait in place: fail over
            wait = max(err.retry_after_s, 0.0)
        remaining = self._remaining()
        if remaining is not None and wait >= remaining:
            return None
        return wait

    # --- recording -------------------------------------------------------------------------

    def _record(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def _row(self, attempt: Attempt, status: int | None = None) -> AttemptRecord:
        return AttemptRecord(
            cascade_name=self.cascade.name,
            provider_model=attempt.entry,
            http_status=attempt.status if status is None else status,
            latency_ms=attempt.latency_ms,
            input_tokens=attempt.input_tokens,
            output_tokens=attempt.output_tokens,
            outcome=attempt.outcome,
            error_kind=attempt.kind,
            error_message=attempt.detail[:500] if attempt.outcome != "ok" else None,
            rule=attempt.rule,
            run_id=self.id,
            try_number=attempt.try_number,
        )

    def _db(self, what: str, action: Callable[[], Any]) -> Any:
        """Run a store call; a database problem must not cost the user the answer (fail open)."""
        try:
            return action()
        except sqlite3.Error as exc:
            if not self.db_warned:
                logger.warning(
                    "database error while %s (%s); cooldowns not shared this run", what, exc
                )
                self.db_warned = True
            return None

    def _state(self, key: str) -> EntryState:
        states = self._db("reading cooldowns", lambda: self.e.store.states([key]))
        return states[key] if states else EntryState(key)

    def _claim_probe(self, entry: CascadeEntry) -> bool:
        opts = entry.options
        lease = (opts.retries + 1) * opts.timeout + opts.retries * opts.max_wait + 5.0
        claimed = self._db(
            "claiming a probe",
            lambda: self.e.store.claim_probe(entry.key, self.id, self.e.clock.now(), lease),
        )
        return bool(claimed) or claimed is None  # on a database error, fail open

    def _skip(self, entry: CascadeEntry, state: EntryState, why: str) -> None:
        attempt = Attempt(
            entry.key,
            "skipped",
            why,
            level=state.failures or None,
            cooldown_until=state.cooldown_until,
        )
        logger.info("skipping %s: %s", entry.key, why)
        self._record(attempt)
        self._db(
            "logging a skip",
            lambda: self.e.store.log_attempt(self._row(attempt), self.e.clock.now()),
        )

    def _missing_key(self, entry: CascadeEntry, provider: ProviderConfig, probe: bool) -> None:
        detail = missing_key_message(lookup_for(provider))
        attempt = Attempt(entry.key, "missing_key", detail, kind="missing_key", rule="missing_key")
        logger.info("%s: %s", entry.key, detail)
        self._record(attempt)
        self._log_without_cooldown(attempt, probe)

    def _deadline(
        self, entry: CascadeEntry, probe: bool, try_number: int, latency: int = 0
    ) -> None:
        attempt = Attempt(
            entry.key,
            "deadline",
            "cascade deadline reached",
            kind="timeout",
            rule="deadline",
            latency_ms=latency,
            try_number=try_number,
        )
        self._record(attempt)
        self._log_without_cooldown(attempt, probe)
        self.stopped = True

    def _log_without_cooldown(self, attempt: Attempt, probe: bool) -> None:
        owner = self.id if probe else None
        self._db(
            "logging an attempt",
            lambda: self.e.store.record_failure(
                self._row(attempt), self.e.clock.now(), lambda _level: None, owner=owner
            ),
        )

    def _failed(
        self,
        entry: CascadeEntry,
        provider: ProviderConfig,
        err: ProviderError,
        rule: rules_mod.Rule,
        latency: int,
        try_number: int,
        probe: bool,
        *,
        retrying: bool,
    ) -> None:
        detail = err.display()
        if rule.hint:
            detail += f" ({rule.hint.format(provider=provider.name)})"
        attempt = Attempt(
            entry.key,
            "retrying" if retrying else "failed",
            detail,
            status=err.status,
            kind=err.kind,
            rule=rule.name,
            latency_ms=latency,
            try_number=try_number,
            probe=probe,
        )
        policy = self.e.config.cooldown

        def cooldown_for(level: int) -> float | None:
            return None if retrying else rule.cooldown_s(err, level, policy)

        outcome = self._db(
            "recording a failure",
            lambda: self.e.store.record_failure(
                self._row(attempt),
                self.e.clock.now(),
                cooldown_for,
                owner=self.id if probe else None,
            ),
        )
        if outcome is not None:
            until, level = outcome
            attempt = replace(attempt, cooldown_until=until, level=level if until else None)
        logger.info("%s failed: %s [rule %s]", entry.key, detail, rule.name)
        self._record(attempt)

    def _succeeded(
        self,
        entry: CascadeEntry,
        response: LlmResponse,
        status: int,
        latency: int,
        try_number: int,
        probe: bool,
    ) -> CascadeResult:
        attempt = Attempt(
            entry.key,
            "ok",
            f"answered in {latency} ms",
            status=status,
            latency_ms=latency,
            try_number=try_number,
            probe=probe,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
        )
        self._record(attempt)
        self._db(
            "recording a success",
            lambda: self.e.store.record_success(self._row(attempt), self.e.clock.now()),
        )
        logger.info(
            "success from %s (%d ms, tokens in=%s out=%s)",
            entry.key,
            latency,
            response.input_tokens,
            response.output_tokens,
        )
        return CascadeResult(
            response=response,
            cascade_name=self.cascade.name,
            entry=entry.key,
            provider=entry.provider,
            status=status,
            latency_ms=_ms(self.e.clock.monotonic() - self.started),
            attempts=self.attempts,
        )

    # --- helpers ---------------------------------------------------------------------------

    async def _client(self) -> httpx.AsyncClient:
        if self.e.client is None:
            from .http_client import new_client

            self.e.client = new_client()
        return self.e.client

    def _remaining(self) -> float | None:
        if self.deadline_at is None:
            return None
        return self.deadline_at - self.e.clock.monotonic()

    def _soonest_free(self, entries: list[CascadeEntry]) -> float | None:
        """When the first of `entries` stops cooling (or its probe lease lapses)."""
        now = self.e.clock.now()
        times = []
        for entry in entries:
            state = self._state(entry.key)
            if state.is_cooling(now) and state.cooldown_until is not None:
                times.append(state.cooldown_until)
            elif state.probe_in_flight(now) and state.probe_until is not None:
                times.append(state.probe_until)
            else:
                times.append(now)
        return min(times, default=None)

    def _retry_after(self) -> float | None:
        """Seconds until some entry of this cascade can be tried again, if all are cooling."""
        wake = self._soonest_free(list(self.cascade.entries))
        if wake is None:
            return None
        delay = wake - self.e.clock.now()
        return round(delay, 3) if delay > 0 else None

    def _errors(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.attempts if a.outcome != "ok"]

    def _message(self) -> str:
        """The original's text (§6.4): skipped keys, then each failed entry's error."""
        skipped = [a.entry for a in self.attempts if a.outcome == "skipped"]
        failed = [a.error_text() for a in self.attempts if a.outcome not in ("skipped", "retrying")]
        head = f"Skipped (on cooldown): {', '.join(skipped)}\n" if skipped else ""
        return f"{head}Failed entries: {'; '.join(failed)}"


def _call_options(entry: CascadeEntry, provider: ProviderConfig, key: ResolvedKey) -> CallOptions:
    opts = entry.options
    return CallOptions(
        model=entry.model,
        base_url=provider.effective_base_url,
        api_key=key.value,
        max_tokens=opts.max_tokens,
        temperature=opts.temperature,
        extra=opts.extra,
        headers=opts.headers,
    )


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)


async def run_cascade(
    cascade_name: str,
    conversation: Conversation,
    config: AppConfig,
    store: Store | None = None,
    options: RunOptions | None = None,
) -> LlmResponse:
    """Answer `conversation` with the named cascade (the original's library entry point).

    Opens the config's database unless `store` is given, uses one HTTP client for the whole
    run, and raises CascadeFailed (with the saved prompt's path) when no entry answers.
    """
    async with Cascade(config, store=store) as engine:
        return (await engine.run(cascade_name, conversation, options)).response
