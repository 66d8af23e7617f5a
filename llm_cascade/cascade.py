"""The engine: try entries in order, skip cooled-down ones, apply the rules, record everything.

For each entry: skip it while its breaker is open; when its cooldown has expired, let exactly
one process probe it (a lease claimed in SQLite); resolve its key; send, retrying in place
only for rules that allow it; then record the attempt and any cooldown (`Journal`). The
conversation is on disk before the first request and removed only once the caller says the
answer was delivered (`Answer`, owned by a `PromptKeeper`). A database that cannot be used
costs one warning, never the answer or the prompt.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import rules as rules_mod
from .attempts import Attempt
from .clock import Clock, SystemClock, format_human
from .config import AppConfig, CascadeConfig, CascadeEntry, ProviderConfig
from .errors import CascadeFailed, ProviderError, SaveOutcome, UsageError
from .failures import FailureStore, PendingPrompt, PromptKeeper
from .journal import NO_STATE, Journal
from .keys import ResolvedKey, key_fix, lookup_for, missing_key_message, resolve_key
from .providers import get_adapter
from .providers.base import CallOptions
from .results import CascadeResult, RunOptions
from .store import EntryState, Store, StoreError
from .types import Conversation, LlmResponse

if TYPE_CHECKING:
    import httpx

__all__ = ["Answer", "Attempt", "Cascade", "CascadeResult", "RunOptions", "run_cascade"]

logger = logging.getLogger(__name__)

KeyResolver = Callable[[ProviderConfig], ResolvedKey]
DEADLINE_SLACK_S = 0.05  # timers fire a little early or late; this close to the end, it is spent


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
        on_request: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_request(entry_key, try_number)` is called before each request (progress display).

        Without `store`, the config's database is opened on the first run; if it cannot be
        used, runs go on without shared state (one warning) and it is tried again next run.
        """
        self.config = config
        self._owns_store = store is None
        self.store = store
        self.failures = FailureStore(config.failure_dir)
        self.client = client
        self._owns_client = client is None
        self.clock: Clock = clock or SystemClock()
        self._keyring_failed = False
        self.resolve = key_resolver or self._resolve_key
        self.jitter = jitter
        self.on_request = on_request

    def _resolve_key(self, provider: ProviderConfig) -> ResolvedKey:
        """Keyring, then env var; after the keyring failed once, env vars only: a locked
        keyring costs one time limit, not one per provider, and cannot eat the deadline."""
        use_keyring = self.config.keyring and not self._keyring_failed
        key = resolve_key(lookup_for(provider), use_keyring=use_keyring)
        self._keyring_failed = self._keyring_failed or key.keyring_failed
        return key

    def state_store(self) -> Store | None:
        """The shared database, opened on first use; None (after a warning) if it is unusable."""
        if self.store is None and self._owns_store:
            try:
                self.store = Store(self.config.database_path)
            except StoreError as exc:
                logger.warning(
                    "cannot use the database '%s' (%s); %s", exc.path, exc.reason, NO_STATE
                )
        return self.store

    async def aclose(self) -> None:
        """Close the HTTP client and the database if the engine opened them."""
        if self.client is not None and self._owns_client:
            await self.client.aclose()
            self.client = None
        if self._owns_store and self.store is not None:
            self.store.close()
            self.store = None

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

        The answer counts as delivered once returned: the saved prompt is removed. Use
        `answer()` to keep it until the answer has really reached its reader.
        """
        with await self.answer(cascade_name, conversation, options, saved=saved) as result:
            return result

    async def answer(
        self,
        cascade_name: str,
        conversation: Conversation,
        options: RunOptions | None = None,
        *,
        saved: PendingPrompt | None = None,
    ) -> Answer:
        """Like `run`, but the prompt stays on disk until `Answer.delivered()` is called.

        `saved` is a prompt already on disk (a replay): it is used instead of saving a new one,
        removed once delivered and rewritten with this run's errors on failure.
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
        keeper = PromptKeeper(self.failures, cascade.name, conversation, self.clock.now, saved)
        return Answer(await run.execute(keeper), keeper)

    async def http_client(self) -> httpx.AsyncClient:
        """The shared client, opened on first use (httpx is imported only then)."""
        if self.client is None:
            from .http_client import new_client

            self.client = new_client()
        return self.client


class Answer:
    """An answer whose prompt is still on disk until the caller says it reached its reader.

    Use as `with answer as result:` (delivered when the block ends normally, kept as
    undelivered, with the answer, if it raises) or call `delivered()` / `undelivered()`.
    """

    def __init__(self, result: CascadeResult, keeper: PromptKeeper) -> None:
        self.result = result
        self._keeper = keeper

    def delivered(self) -> None:
        """The answer reached its reader: remove the saved prompt."""
        self._keeper.delivered()

    def undelivered(self, reason: str) -> SaveOutcome:
        """The answer could not be written out: keep the prompt, with the answer and why."""
        failure = Attempt(
            self.result.entry,
            "undelivered",
            f"answered, but the answer was not delivered: {reason}",
        )
        errors = [a.to_dict() for a in (*self.result.attempts, failure) if a.outcome != "ok"]
        return self._keeper.keep("undelivered", errors, answer=self.result.to_dict())

    def __enter__(self) -> CascadeResult:
        return self.result

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if exc is None:
            self.delivered()
            return
        saved = self.undelivered(_reason(exc))
        where = f"saved in {saved.path}" if saved.path else f"NOT saved: {saved.error}"
        logger.warning("the answer was not delivered (%s); the prompt is %s", _reason(exc), where)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Run:
    """The control flow of one cascade call."""

    def __init__(
        self, engine: Cascade, cascade: CascadeConfig, conversation: Conversation, opts: RunOptions
    ) -> None:
        self.e = engine
        self.cascade = cascade
        self.conversation = conversation
        self.opts = opts
        self.id = secrets.token_hex(8)
        self.keys: dict[str, ResolvedKey] = {}
        self.stopped = False
        self.started = engine.clock.monotonic()
        deadline = opts.deadline_s if opts.deadline_s is not None else cascade.deadline
        self.deadline_at = None if deadline is None else self.started + deadline
        self.journal = Journal(
            engine.state_store(),
            cascade.name,
            self.id,
            engine.clock,
            engine.config.cooldown,
            remaining=self._remaining,
        )

    async def execute(self, keeper: PromptKeeper) -> CascadeResult:
        keeper.save_before(run_id=self.id)
        try:
            result = await self._passes()
        except BaseException:  # Ctrl-C or cancellation: the prompt stays on disk
            saved = keeper.keep("interrupted", self.journal.errors())
            where = f"saved in {saved.path}" if saved.path else f"NOT saved: {saved.error}"
            logger.warning("interrupted; the prompt is %s", where)
            raise
        if result is not None:
            return result
        raise CascadeFailed(
            self.cascade.name,
            self.journal.message(),
            attempts=self.journal.attempts,
            saved=keeper.keep("failed", self.journal.errors()),
            retry_after_s=self._retry_after(),
        )

    async def _passes(self) -> CascadeResult | None:
        """Run the entries; with --wait-cooldown, wait for the soonest cooling one and go again."""
        entries = list(self.cascade.entries)
        waited = 0.0
        while True:
            for entry in entries:
                result = await self._entry(entry)
                if result is not None or self.stopped:
                    return result
            if self.opts.wait_cooldown_s is None:
                return None
            skipped = self.journal.skipped_keys()
            entries = [e for e in entries if e.key in skipped]
            wake = self.journal.soonest_free(e.key for e in entries)
            if wake is None:
                return None
            pause = max(wake - self.e.clock.now(), 0.0) + 0.01
            remaining = self._remaining()
            if waited + pause > self.opts.wait_cooldown_s or (
                remaining is not None and pause >= remaining
            ):
                return None
            logger.info("every entry is cooling down; waiting %.1f s for the first", pause)
            await self.e.clock.sleep(pause)
            waited += pause
            self.journal.forget_skips()
            self.journal.waited(self._soonest(entries), pause)

    def _soonest(self, entries: list[CascadeEntry]) -> str:
        """The entry that frees up first (the one a --wait-cooldown pause waited for)."""
        states = self.journal.states(e.key for e in entries)
        return min(entries, key=lambda e: states[e.key].cooldown_until or 0.0).key

    async def _entry(self, entry: CascadeEntry) -> CascadeResult | None:
        provider = self.e.config.providers[entry.provider]
        now = self.e.clock.now()
        state = self.journal.state(entry.key)
        probe = False
        if not self.opts.ignore_cooldown:
            if state.is_cooling(now):
                until = format_human(state.cooldown_until or now)
                reason = state.reason or "failure"
                why = f"cooling down until {until} (level {state.failures}, {reason})"
                self.journal.skipped(entry.key, state, why)
                return None
            if state.is_half_open(now):
                opts = entry.options
                lease = (opts.retries + 1) * opts.timeout + opts.retries * opts.max_wait + 5.0
                if not self.journal.claim_probe(entry.key, lease):
                    self.journal.skipped(
                        entry.key, state, "half-open: another process is probing it"
                    )
                    return None
                probe = True
        key = self._key(provider)
        if key.source == "missing":
            detail = missing_key_message(lookup_for(provider), use_keyring=self.e.config.keyring)
            self.journal.not_sent(entry.key, "missing_key", detail, probe=probe)
            return None
        return await self._tries(entry, provider, key, probe, state)

    def _key(self, provider: ProviderConfig) -> ResolvedKey:
        """The provider's key, looked up once per run."""
        key = self.keys.get(provider.name)
        if key is None:
            key = self.keys[provider.name] = self.e.resolve(provider)
            if key.warning:
                logger.warning("%s", key.warning)
        return key

    async def _tries(
        self,
        entry: CascadeEntry,
        provider: ProviderConfig,
        key: ResolvedKey,
        probe: bool,
        state: EntryState,
    ) -> CascadeResult | None:
        from .providers import _http  # httpx is imported only when a request is made

        opts = entry.options
        note = _ignored(state, self.e.clock.now()) if self.opts.ignore_cooldown else None
        adapter = get_adapter(provider.type)
        call = _call_options(entry, provider, key)
        client = await self.e.http_client()
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
            if self.e.on_request is not None:
                self.e.on_request(entry.key, try_number)
            started = self.e.clock.monotonic()
            try:
                reply = await _http.send(
                    client, adapter, self.conversation, call, budget, self.e.clock.now()
                )
            except ProviderError as err:
                latency = _ms(self.e.clock.monotonic() - started)
                if err.kind == "timeout" and total < opts.timeout and self._deadline_spent():
                    self._deadline(entry, probe, try_number, latency)  # our budget, not its fault
                    return None
                rule = rules_mod.decide(err, provider.type, provider.rules, self.e.config.rules)
                wait = self._retry_wait(rule, err, try_number, entry)
                detail = err.display()
                if rule.hint:
                    fix = key_fix(lookup_for(provider), use_keyring=self.e.config.keyring)
                    detail += f" ({rule.hint.format(provider=provider.name, key_fix=fix)})"
                self.journal.failed(
                    entry.key,
                    err,
                    rule,
                    detail,
                    latency_ms=latency,
                    try_number=try_number,
                    probe=probe,
                    retrying=wait is not None,
                    note=note,
                )
                if wait is None:
                    self.stopped = rule.action == "stop"
                    return None
                await self.e.clock.sleep(wait)
                continue
            latency = _ms(self.e.clock.monotonic() - started)
            self.journal.answered(
                entry.key,
                reply.response,
                reply.status,
                latency_ms=latency,
                try_number=try_number,
                probe=probe,
                note=note,
                reset=try_number > 1 or state.phase(self.e.clock.now()) != "closed",
            )
            return CascadeResult(
                response=reply.response,
                cascade_name=self.cascade.name,
                entry=entry.key,
                provider=entry.provider,
                status=reply.status,
                latency_ms=_ms(self.e.clock.monotonic() - self.started),
                attempts=self.journal.attempts,
            )
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

    def _deadline(
        self, entry: CascadeEntry, probe: bool, try_number: int, latency: int = 0
    ) -> None:
        self.journal.not_sent(
            entry.key,
            "deadline",
            "cascade deadline reached",
            probe=probe,
            try_number=try_number,
            latency_ms=latency,
        )
        self.stopped = True

    def _deadline_spent(self) -> bool:
        """The cascade deadline is (all but) used up: a timeout now was our budget running out,
        not the provider's first-byte or connect limit firing while time was left."""
        remaining = self._remaining()
        return remaining is not None and remaining <= DEADLINE_SLACK_S

    def _remaining(self) -> float | None:
        if self.deadline_at is None:
            return None
        return self.deadline_at - self.e.clock.monotonic()

    def _retry_after(self) -> float | None:
        """Seconds until some entry of this cascade can be tried again, if all are cooling."""
        wake = self.journal.soonest_free(e.key for e in self.cascade.entries)
        if wake is None:
            return None
        delay = wake - self.e.clock.now()
        return round(delay, 3) if delay > 0 else None


def _ignored(state: EntryState, now: float) -> str | None:
    """What --ignore-cooldown overrode for this entry, if anything."""
    if state.is_cooling(now) and state.cooldown_until is not None:
        return f"was cooling down until {format_human(state.cooldown_until)}; tried anyway"
    if state.is_half_open(now):
        return "was half-open; tried without claiming the probe"
    return None


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
        max_response_bytes=opts.max_response_bytes,
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
