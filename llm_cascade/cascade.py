"""The engine: try entries in order, skip cooled-down ones, apply the rules, record everything.

For each entry: skip it while its breaker is open; when its cooldown has expired, let exactly
one process probe it (a lease claimed in SQLite); resolve its key; send, retrying in place
only for rules that allow it; then record the attempt and any cooldown (`Journal`). The
conversation is on disk before the first request and removed only once the caller says the
answer was delivered (`Answer`, owned by a `PromptKeeper`). A database that cannot be used
costs one warning, never the answer or the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from . import budgets, hedge, images, policy, routing, telemetry
from . import rules as rules_mod
from .attempts import Attempt
from .breakers import open_store
from .clock import Clock, SystemClock, format_human
from .config import AppConfig, CascadeConfig, CascadeEntry, ProviderConfig
from .errors import BudgetExceeded, CascadeFailed, ProviderError, SaveOutcome, UsageError
from .events import Done, EntryStarted, Reset, StreamEvent, Switched, Text, ToolCallDelta
from .failures import FailureStore, PendingPrompt, PromptKeeper
from .journal import NO_STATE, Journal
from .keys import ResolvedKey, key_fix, lookup_for, missing_key_message, resolve_key
from .mirror import Mirrors
from .providers import get_adapter
from .providers.base import Adapter, Budget, CallOptions
from .results import CascadeResult, Parsed, RunOptions
from .store import EntryState, Store, StoreError
from .types import Conversation, LlmResponse, Message, TextBlock

if TYPE_CHECKING:
    import httpx

    from .providers._http import Reply, StreamReply, WholeReply
    from .structured import OutputCheck

__all__ = ["Answer", "Attempt", "Cascade", "CascadeResult", "RunOptions", "run_cascade"]

logger = logging.getLogger(__name__)

KeyResolver = Callable[[ProviderConfig], ResolvedKey]
# After a stream broke mid-way, a library caller gets a Reset and the next entry starts over:
# it can discard what it showed, and the answer stays one model's. (The CLI picks its own.)
DEFAULT_MIDSTREAM = "restart"


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
        rng: random.Random | None = None,
    ) -> None:
        """`on_request(entry_key, try_number)` is called before each request (progress display).
        `rng` draws the first entry of `weighted` cascades (seed it for repeatable runs).

        Without `store`, the config's database is opened on the first run; if it cannot be
        used, runs go on without shared state (one warning) and it is tried again next run.
        """
        self.config = config
        self._owns_store = store is None
        self.store = store
        self.failures = FailureStore(config.failure_dir)
        self.client = client
        self._owns_client = client is None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None]  # set with the client it closes
        self.clock: Clock = clock or SystemClock()
        self._keyring_failed = False
        self.resolve = key_resolver or self._resolve_key
        self.jitter = jitter
        self.on_request = on_request
        self.rng = rng or random.Random()
        self.mirrors = Mirrors(self)  # copies of requests sent in the background
        # Runs not closed yet: a stream its reader left without closing it (a plain `async
        # for` that broke or raised) ends when it is collected, which may be after aclose().
        self._running: weakref.WeakKeyDictionary[AsyncGenerator[_Step, None], _Run]
        self._running = weakref.WeakKeyDictionary()

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
                self.store = open_store(self.config)
            except StoreError as exc:
                logger.warning(
                    "cannot use the database '%s' (%s); %s", exc.path, exc.reason, NO_STATE
                )
        return self.store

    async def aclose(self) -> None:
        """End the runs still open, then close the HTTP client and the database if the engine
        opened them: a run ended first can still log its attempt and close its connection."""
        for events, run in list(self._running.items()):
            if run.reading():  # its stream is being read in another task: not ours to end
                continue
            with contextlib.suppress(RuntimeError):  # running in another task: not ours to end
                await events.aclose()
        await self.mirrors.cancel()
        if self.client is not None and self._owns_client:
            if self._client_loop is asyncio.get_running_loop():
                await self._closer.aclose()
            self.client = None  # opened in a loop that is gone: closed when that loop ended
        if self._owns_store and self.store is not None:
            self.store.close()
            self.store = None

    async def wait_mirrors(self, timeout: float) -> None:
        """Let the mirror requests in flight finish, for at most `timeout` seconds."""
        await self.mirrors.wait(timeout)

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
        run = self._start(cascade_name, conversation, options, saved, stream=False)
        async with aclosing(run) as events:
            async for event in events:
                if isinstance(event, Done):
                    return event.answer
        raise AssertionError("a run ends with Done or raises")  # pragma: no cover

    def stream(
        self,
        cascade_name: str,
        conversation: Conversation,
        options: RunOptions | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Answer as it arrives: `EntryStarted`, `Text`/`ToolCallDelta` pieces, `Reset` or
        `Switched` after a mid-stream failure, and last `Done` with the whole `CascadeResult`.

        Failover before the first piece is exactly that of `run`. After output, the cascade's
        `on_midstream` policy decides (default here: `restart`, announced by `Reset`). Closing
        the iterator early closes the upstream connection at once and records the attempt as
        cancelled (no cooldown); the prompt stays saved. Raises CascadeFailed like `run`.
        """
        return _reading(lambda: self._start(cascade_name, conversation, options, None, stream=True))

    def _start(
        self,
        cascade_name: str,
        conversation: Conversation,
        options: RunOptions | None,
        saved: PendingPrompt | None,
        *,
        stream: bool,
    ) -> AsyncGenerator[_Step, None]:
        """The events of a new run (see `_Run.events`)."""
        cascade = self.config.cascades.get(cascade_name)
        if cascade is None:
            defined = ", ".join(sorted(self.config.cascades)) or "none"
            raise UsageError(
                f"Cascade '{cascade_name}' not found in configuration (defined: {defined})"
            )
        if not conversation.messages:
            raise UsageError("the conversation has no messages")
        conversation = images.inline(conversation)  # files read in before the prompt is saved
        opts = options or RunOptions()
        if opts.entry_options:
            cascade = _with_options(cascade, opts.entry_options)
        needs = policy.needs_of(conversation)
        unfit = {
            e.key: policy.unfit(e.options, needs)
            or images.unfit(
                conversation.images, self.config.providers[e.provider].type, e.options.supports
            )
            for e in cascade.entries
        }
        if all(unfit.values()):  # before anything is saved or sent
            reasons = [(key, why) for key, why in unfit.items() if why]
            raise UsageError(policy.none_can_serve(cascade.name, reasons))
        check = None
        if conversation.output is not None:
            from .structured import OutputCheck  # the validator is imported only if needed

            check = OutputCheck(conversation.output, opts.output_check)
        made_from = {"entries": list(cascade.specs)} if cascade.specs else None
        keeper = PromptKeeper(
            self.failures, cascade.name, conversation, self.clock.now, saved, made_from
        )
        run = _Run(
            self, cascade, conversation, opts, keeper, stream=stream, unfit=unfit, check=check
        )
        events = run.events()
        self._running[events] = run
        return events

    async def http_client(self) -> httpx.AsyncClient:
        """The shared client, opened on first use (httpx is imported only then).

        A client the engine opened in another event loop (an earlier `asyncio.run`) is
        replaced: its connections belong to that loop and cannot be used from this one.
        """
        loop = asyncio.get_running_loop()
        if self.client is not None and self._owns_client and self._client_loop is not loop:
            self.client = None
        if self.client is None:
            from .http_client import new_client

            self.client = new_client()
            self._client_loop = loop
            # An async generator the loop closes when it shuts down (asyncio.run does): the
            # client's connections are closed with their loop even if nobody calls aclose().
            self._closer = _closing(self.client)
            await anext(self._closer)
        return self.client


async def _closing(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Closes `client` when closed itself: by `Cascade.aclose`, or by its loop's shutdown."""
    try:
        yield
    finally:
        await client.aclose()


class Answer:
    """An answer whose prompt is still on disk until the caller says it reached its reader.

    Use as `with answer as result:` (delivered when the block ends normally, kept as
    undelivered, with the answer, if it raises) or call `delivered()` / `undelivered()`.
    """

    def __init__(self, result: CascadeResult, keeper: PromptKeeper) -> None:
        self.result = result
        self._keeper = keeper
        self._kept: SaveOutcome | None = None

    def delivered(self) -> None:
        """The answer reached its reader: remove the saved prompt."""
        self._keeper.delivered()

    def undelivered(self, reason: str) -> SaveOutcome:
        """The answer could not be written out: keep the prompt, with the answer and why.

        Said again, it returns where it was kept: a second copy would be sent twice."""
        if self._kept is not None:
            return self._kept
        failure = Attempt(
            self.result.entry,
            "undelivered",
            f"answered, but the answer was not delivered: {reason}",
        )
        errors = [a.to_dict() for a in (*self.result.attempts, failure) if a.outcome != "ok"]
        self._kept = self._keeper.keep("undelivered", errors, answer=self.result.to_dict())
        return self._kept

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


CANNOT_PICK_UP = (
    "passed over: it cannot continue the partial answer already passed on, and starting over"
    " would repeat it"
)


class _Run:
    """The control flow of one cascade call: one loop for whole answers and streams alike."""

    def __init__(
        self,
        engine: Cascade,
        cascade: CascadeConfig,
        conversation: Conversation,
        opts: RunOptions,
        keeper: PromptKeeper,
        *,
        stream: bool,
        unfit: Mapping[str, str | None],
        check: OutputCheck | None,
    ) -> None:
        self.e = engine
        self.cascade = cascade
        self.conversation = conversation
        self.opts = opts
        self.keeper = keeper
        self.streaming = stream
        self.midstream: policy.Midstream = cast(
            policy.Midstream, opts.on_midstream or cascade.on_midstream or DEFAULT_MIDSTREAM
        )
        self.id = secrets.token_hex(8)
        self.keys: dict[str, ResolvedKey] = {}
        self.stopped = False
        self.result: CascadeResult | None = None
        self.partial: _Partial | None = None  # a stream that broke after output
        self.unfit = unfit  # why an entry cannot serve this request (None: it can)
        self.check = check  # the answer must be this JSON document
        self.route: routing.Route | None = None  # how the strategy ordered the entries
        self.hedged_out: set[str] = set()  # entries cancelled because another answered first
        self.streams: set[_Live] = set()  # the streams open now (a hedged race has several)
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
        self.trace = telemetry.RunTrace(cascade.name, self.id)  # OpenTelemetry, if tracing

    def reading(self) -> bool:
        """True while a stream of this run is being read (by `_reading`, outside the run's
        own generators, which are idle then)."""
        return any(live.reading for live in self.streams)

    async def events(self) -> AsyncGenerator[_Step, None]:
        """The run: its events (deltas only when streaming), then `Done`; or CascadeFailed."""
        self.keeper.save_before(run_id=self.id)
        self._check_budget()  # a cascade over its budget sends nothing
        if self.cascade.mirror:
            self.e.mirrors.start(self.cascade, self.conversation, self.id)
        try:
            async with aclosing(self._passes()) as passes:
                async for event in passes:
                    yield event
        except BaseException as exc:
            # Ctrl-C, cancellation, a caller that stopped: the prompt stays
            self.trace.end(exc)
            self.journal.give_back_probes()
            saved = self.keeper.keep("interrupted", self.journal.errors())
            where = f"saved in {saved.path}" if saved.path else f"NOT saved: {saved.error}"
            logger.warning("interrupted; the prompt is %s", where)
            raise
        if self.result is None:
            failed = CascadeFailed(
                self.cascade.name,
                self.journal.message(),
                attempts=self.journal.attempts,
                saved=self.keeper.keep("failed", self.journal.errors()),
                retry_after_s=self._retry_after(),
                route=self.route,
            )
            self.trace.end(failed)
            raise failed
        self.trace.end()
        yield Done(self.result, Answer(self.result, self.keeper))

    async def _passes(self) -> AsyncGenerator[_Step, None]:
        """Run the entries; with --wait-cooldown, wait for the soonest cooling one and go again."""
        entries = self._routed()
        waited = 0.0
        while True:
            pending = list(entries)
            while pending:
                async with aclosing(self._next(pending)) as steps:
                    async for event in steps:
                        yield event
                if self.result is not None or self.stopped:
                    return
            if self.opts.wait_cooldown_s is None:
                return
            skipped = self.journal.skipped_keys()
            entries = [e for e in entries if e.key in skipped]
            wake = self.journal.soonest_free(e.key for e in entries)
            if wake is None:
                return
            pause = max(wake - self.e.clock.now(), 0.0) + 0.01
            remaining = self._remaining()
            if waited + pause > self.opts.wait_cooldown_s or (
                remaining is not None and pause >= remaining
            ):
                return
            logger.info("every entry is cooling down; waiting %.1f s for the first", pause)
            await self.e.clock.sleep(pause)
            waited += pause
            self.journal.forget_skips()
            self.journal.waited(self._soonest(entries), pause)

    def _next(self, pending: list[CascadeEntry]) -> AsyncGenerator[_Step, None]:
        """The next entry of `pending`; with `hedge_after`, a race of it and the ones after
        it (not to pick up a broken stream: that is one entry's job)."""
        hedge_after = self.cascade.hedge_after
        if hedge_after is None or len(pending) == 1 or self.partial is not None:
            return self._entry(pending.pop(0))
        rules: hedge.Rules[StreamEvent] = hedge.Rules(
            hedge_after=hedge_after,
            max_hedges=self.cascade.max_hedges,
            sleep=self.e.clock.sleep,
            is_output=lambda event: self.streaming and isinstance(event, Text | ToolCallDelta),
            is_request=lambda event: isinstance(event, EntryStarted),
            finished=lambda: self.result is not None or self.stopped or self.partial is not None,
        )
        return hedge.race(
            pending,
            lambda e: _reading(lambda: self._entry(e)),
            rules,
            lambda e: self.hedged_out.add(e.key),
        )

    def _check_budget(self) -> None:
        """Refuse the run (BudgetExceeded, the prompt kept) if the cascade spent its budget."""
        limits = self.cascade.budget
        if limits is None:
            return
        now = self.e.clock.now()
        over = self.journal.over_budget("cascade", self.cascade.name, limits, now)
        if over is None:
            return
        why = f"cascade '{self.cascade.name}' is {over.text(now)}; nothing was sent"
        logger.info("%s", why)
        refused = BudgetExceeded(
            self.cascade.name,
            why,
            saved=self.keeper.keep(
                "budget_exceeded", [{"outcome": "budget_exceeded", "detail": why}]
            ),
            retry_after_s=round(max(over.resets_at - now, 0.0), 3),
        )
        self.trace.end(refused)
        raise refused

    def _routed(self) -> list[CascadeEntry]:
        """The entries in the order the cascade's strategy gives for this run."""
        entries = list(self.cascade.entries)
        if self.cascade.strategy == "ordered":
            return entries
        keys = [e.key for e in entries]
        now = self.e.clock.now()
        stats = self.journal.route_stats(keys)
        states = self.journal.states(keys)
        tokens = policy.estimate_tokens(self.conversation)
        candidates = [
            routing.Candidate(
                e.key,
                e.weight,
                stats[e.key],
                cost=routing.estimated_cost(e.price, tokens, e.options.max_tokens),
                available=not (
                    self.unfit.get(e.key)
                    or (not self.opts.ignore_cooldown and states[e.key].is_cooling(now))
                    or self._entry_over_budget(e, now)
                ),
            )
            for e in entries
        ]
        self.route = routing.route(
            self.cascade.strategy,
            candidates,
            now=now,
            rng=self.e.rng,
            streaming=self.streaming,
            score_weights=self.cascade.score_weights,
        )
        waiting: dict[str, list[CascadeEntry]] = {}
        for e in entries:
            waiting.setdefault(e.key, []).append(e)
        return [waiting[key].pop(0) for key in self.route.order]

    def _entry_over_budget(self, entry: CascadeEntry, now: float) -> budgets.Exceeded | None:
        if entry.budget is None:
            return None
        return self.journal.over_budget("entry", entry.key, entry.budget, now)

    def _soonest(self, entries: list[CascadeEntry]) -> str:
        """The entry that frees up first (the one a --wait-cooldown pause waited for)."""
        states = self.journal.states(e.key for e in entries)
        return min(entries, key=lambda e: states[e.key].cooldown_until or 0.0).key

    async def _entry(self, entry: CascadeEntry) -> AsyncGenerator[_Step, None]:
        """Skip the entry, claim its probe, or try it."""
        unfit = self.unfit.get(entry.key)
        if unfit is not None:  # nothing to learn by sending it, whatever its breaker says
            self.journal.unfit(entry.key, unfit)
            return
        if self._cannot_pick_up(entry):
            return
        provider = self.e.config.providers[entry.provider]
        now = self.e.clock.now()
        over = self._entry_over_budget(entry, now)
        if over is not None:
            self.journal.over_budget_skip(entry.key, over.text(now), over.resets_at)
            return
        state = self.journal.state(entry.key)
        probe = False
        if not self.opts.ignore_cooldown:
            if state.is_cooling(now):
                until = format_human(state.cooldown_until or now)
                reason = state.reason or "failure"
                why = f"cooling down until {until} (level {state.failures}, {reason})"
                self.journal.skipped(entry.key, state, why)
                return
            if state.is_half_open(now):
                if not self.journal.claim_probe(entry.key, policy.probe_lease_s(entry.options)):
                    self.journal.skipped(
                        entry.key, state, "half-open: another process is probing it"
                    )
                    return
                probe = True
        key = self._key(provider)
        if key.source == "missing":
            detail = missing_key_message(lookup_for(provider), use_keyring=self.e.config.keyring)
            self.journal.not_sent(entry.key, "missing_key", detail, probe=probe)
            return
        async with aclosing(self._tries(entry, provider, key, probe, state)) as tries:
            async for event in tries:
                yield event

    def _key(self, provider: ProviderConfig) -> ResolvedKey:
        """The provider's key, looked up once per run."""
        key = self.keys.get(provider.name)
        if key is None:
            key = self.keys[provider.name] = self.e.resolve(provider)
            if key.warning:
                logger.warning("%s", key.warning)
        return key

    def _midstream_mode(self, entry: CascadeEntry) -> policy.Midstream | None:
        """What `entry` would do with a stream an earlier entry broke; None if none did."""
        partial = self.partial
        if partial is None:
            return None
        return policy.midstream_mode(
            self.midstream,
            next_accepts_prefill="prefill" in entry.options.supports,
            continuable=partial.continuable and bool(partial.text.strip()),
        )

    def _cannot_pick_up(self, entry: CascadeEntry) -> bool:
        """True if `entry` could only start over a broken stream the caller cannot take back:
        it is passed over, and a later entry that takes a prefill may continue instead."""
        if self.opts.can_restart or self._midstream_mode(entry) != "restart":
            return False
        self.journal.unfit(entry.key, CANNOT_PICK_UP)
        return True

    def _picking_up(self, entry: CascadeEntry) -> tuple[Conversation, StreamEvent | None]:
        """The conversation this entry answers, after an earlier stream broke mid-way.

        With `continue`, and an entry that takes a prefill, it continues the partial answer;
        otherwise it starts over and the caller is told to discard what it showed.
        """
        partial = self.partial
        mode = self._midstream_mode(entry)
        if partial is None or mode is None:
            return self.conversation, None
        if mode == "continue":
            # Vendors refuse a prefill that ends in whitespace (Anthropic: a 400): it stops at
            # the last word, and the model writes the space again (_Exchange.unseen).
            messages = [*self.conversation.messages, Message.assistant(partial.text.rstrip())]
            picked = self.conversation.with_messages(messages)
            return picked, Switched(partial.entry, entry.key, partial.reason)
        self.partial = None
        return self.conversation, Reset(partial.entry, partial.reason)

    async def _tries(
        self,
        entry: CascadeEntry,
        provider: ProviderConfig,
        key: ResolvedKey,
        probe: bool,
        state: EntryState,
    ) -> AsyncGenerator[_Step, None]:
        """Send, decide, journal, wait: the same loop for a whole answer and a stream."""
        note = _ignored(state, self.e.clock.now()) if self.opts.ignore_cooldown else None
        self.hedged_out.discard(entry.key)  # a loser of an earlier race is tried afresh
        adapter = get_adapter(provider.type)
        # An entry's in-place retries go out with its `retry_with` options laid over its own.
        retried = (
            replace(entry, options=entry.options.merged(entry.retry_with))
            if entry.retry_with
            else entry
        )
        calls = [
            policy.call_options(
                sending,
                provider,
                key.value,
                self.opts,
                output=self.conversation.output,
                region=key.region or provider.region,
            )
            for sending in ((entry, retried) if entry.retry_with else (entry,))
        ]
        conversation, told = self._picking_up(entry)
        prefix = self.partial.text if self.partial is not None else ""
        if told is not None:
            yield told
        client = await self.e.http_client()
        for try_number in range(1, entry.options.retries + 2):
            opts = (entry if try_number == 1 else retried).options
            call = calls[min(try_number, len(calls)) - 1]
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self._deadline(entry, probe, try_number)
                return
            budget = policy.attempt_budget(opts, remaining)
            logger.info("attempting %s%s", entry.key, " (probe)" if probe else "")
            if self.e.on_request is not None:
                self.e.on_request(entry.key, try_number)
            yield EntryStarted(entry.key, try_number, probe)
            sent = _Exchange(self.e.clock.monotonic(), shown_tail=prefix[len(prefix.rstrip()) :])
            try:
                span = self.trace.attempt(
                    provider.type, entry.key, call.model, call.base_url, try_number
                )
                async with aclosing(
                    self._traced(span, client, adapter, conversation, call, budget, sent)
                ) as deltas:
                    async for event in deltas:
                        yield event
            except ProviderError as err:
                if policy.cut_by_deadline(err, budget, opts, self._remaining()):
                    self._deadline(entry, probe, try_number, sent, prefix)  # not its fault
                    return
                wait = self._failed(entry, provider, err, try_number, probe, note, sent, prefix)
                if wait is None:
                    return
                await self.e.clock.sleep(wait)
                continue
            except (asyncio.CancelledError, GeneratorExit):  # the caller went away: no verdict
                lost = entry.key in self.hedged_out  # or another entry answered first
                (self.journal.hedged if lost else self.journal.cancelled)(
                    entry.key,
                    latency_ms=sent.latency_ms(self.e.clock.monotonic()),
                    try_number=try_number,
                    probe=probe,
                    partial=sent.shown(prefix),
                )
                raise
            self._answered(entry, sent, try_number, probe, note, state, prefix)
            return

    async def _traced(
        self,
        span: telemetry.AttemptSpan,
        client: httpx.AsyncClient,
        adapter: Adapter,
        conversation: Conversation,
        call: CallOptions,
        budget: Budget,
        sent: _Exchange,
    ) -> AsyncGenerator[_Step, None]:
        """`_send` as an OpenTelemetry span: the seam for tracing (a no-op unless the process
        traces, see telemetry.py)."""
        with span:
            async with aclosing(
                self._send(client, adapter, conversation, call, budget, sent)
            ) as deltas:
                async for event in deltas:
                    yield event
            if sent.reply is not None:
                span.answered(sent.reply.response, sent.reply.status)

    async def _send(
        self,
        client: httpx.AsyncClient,
        adapter: Adapter,
        conversation: Conversation,
        call: CallOptions,
        budget: Budget,
        sent: _Exchange,
    ) -> AsyncGenerator[_Step, None]:
        """One request: a whole answer, or a stream whose content is passed on as it comes."""
        from .providers import _http  # httpx is imported only when a request is made

        now = self.e.clock.now()
        if self.streaming:
            async with aclosing(
                self._stream(client, adapter, conversation, call, budget, sent)
            ) as events:
                async for event in events:
                    yield event
        else:
            sent.reply = await _http.send(client, adapter, conversation, call, budget, now)
        if self.check is not None:  # an answer that is not the document asked for fails over
            assert sent.reply is not None
            sent.parsed = self.check(sent.reply.response)

    async def _stream(
        self,
        client: httpx.AsyncClient,
        adapter: Adapter,
        conversation: Conversation,
        call: CallOptions,
        budget: Budget,
        sent: _Exchange,
    ) -> AsyncGenerator[_Step, None]:
        """A streamed request: its content passed on as it comes, the reply once it is whole.

        The stream goes up the run's layers once, as a `_Live`: `_reading`, the generator the
        caller iterates, reads it and hands its pieces straight on, then resumes this one
        with what ended the reading (raised here, so every layer sees it as before).
        """
        from .providers import _http

        now = self.e.clock.now()
        async with _http.open_stream(client, adapter, conversation, call, budget, now) as stream:
            sent.live = live = _Live(stream, sent, self.e.clock.monotonic)
            self.streams.add(live)
            try:
                yield live
            finally:
                self.streams.discard(live)
            if live.error is not None:
                raise live.error
            sent.reply = _http.Reply(stream.response(), stream.status)

    def _failed(
        self,
        entry: CascadeEntry,
        provider: ProviderConfig,
        err: ProviderError,
        try_number: int,
        probe: bool,
        note: str | None,
        sent: _Exchange,
        prefix: str,
    ) -> float | None:
        """Journal a failed try; returns how long to wait before trying it again, or None."""
        midstream = sent.content_started  # output reached the caller: never retried in place
        rule = rules_mod.decide(err, provider.type, provider.rules, self.e.config.rules)
        wait = None
        if not midstream:
            wait = policy.retry_delay(
                rule,
                err,
                try_number,
                entry.options,
                jitter=float(self.e.jitter()),
                remaining=self._remaining(),
            )
        detail = err.display()
        if rule.hint:
            fix = key_fix(lookup_for(provider), use_keyring=self.e.config.keyring)
            detail += f" ({rule.hint.format(provider=provider.name, key_fix=fix)})"
        partial = sent.shown(prefix)
        self.journal.failed(
            entry.key,
            err,
            rule,
            detail,
            latency_ms=sent.latency_ms(self.e.clock.monotonic()),
            try_number=try_number,
            probe=probe,
            retrying=wait is not None,
            note=note,
            midstream=midstream,
            ttft_ms=sent.ttft_ms,
            chunks=sent.chunks,
            partial=partial,
        )
        if wait is None:
            self.stopped = rule.action == "stop" or (midstream and self.midstream == "fail")
            if partial is not None:
                # A JSON document is never continued by another model, and one that failed
                # its check is thrown away: the next entry starts over.
                continuable = not sent.has_tool_calls and self.check is None
                self.partial = _Partial(entry.key, partial, continuable, err.display())
        return wait

    def _answered(
        self,
        entry: CascadeEntry,
        sent: _Exchange,
        try_number: int,
        probe: bool,
        note: str | None,
        state: EntryState,
        prefix: str,
    ) -> None:
        reply = sent.reply
        assert reply is not None  # set by _send when it returned without raising
        response = _continued(prefix, reply.response, sent.skipped) if prefix else reply.response
        self.partial = None
        self.journal.answered(
            entry.key,
            response,
            reply.status,
            latency_ms=sent.latency_ms(self.e.clock.monotonic()),
            try_number=try_number,
            probe=probe,
            note=note,
            reset=try_number > 1 or state.phase(self.e.clock.now()) != "closed",
            ttft_ms=sent.ttft_ms,
            chunks=sent.chunks,
            cost=entry.price.cost(response.input_tokens, response.output_tokens)
            if entry.price is not None
            else None,
        )
        if self.result is not None:  # a hedged race: another entry answered a moment before
            return
        self.result = CascadeResult(
            response=response,
            cascade_name=self.cascade.name,
            entry=entry.key,
            provider=entry.provider,
            status=reply.status,
            latency_ms=_ms(self.e.clock.monotonic() - self.started),
            attempts=self.journal.attempts,
            parsed=sent.parsed,
            route=self.route,
        )

    def _deadline(
        self,
        entry: CascadeEntry,
        probe: bool,
        try_number: int,
        sent: _Exchange | None = None,
        prefix: str = "",
    ) -> None:
        """The cascade deadline ends the run: before a try, or during the request `sent`."""
        self.journal.not_sent(
            entry.key,
            "deadline",
            "cascade deadline reached",
            probe=probe,
            try_number=try_number,
            latency_ms=sent.latency_ms(self.e.clock.monotonic()) if sent else 0,
            ttft_ms=sent.ttft_ms if sent else None,
            chunks=sent.chunks if sent else None,
            partial=sent.shown(prefix) if sent else None,
        )
        self.stopped = True

    def _remaining(self) -> float | None:
        if self.deadline_at is None:
            return None
        return self.deadline_at - self.e.clock.monotonic()

    def _retry_after(self) -> float | None:
        """Seconds until some entry of this cascade can be tried again, if all are cooling."""
        usable = (e.key for e in self.cascade.entries if not self.unfit.get(e.key))
        wake = self.journal.soonest_free(usable)
        if wake is None:
            return None
        delay = wake - self.e.clock.now()
        return round(delay, 3) if delay > 0 else None


@dataclass(slots=True)
class _Partial:
    """What a stream that broke after output had shown, for the entry that picks it up."""

    entry: str
    text: str
    continuable: bool  # another entry may continue it (no tool call, no JSON document)
    reason: str


@dataclass(slots=True)
class _Exchange:
    """One request as it happens: the reply once it is whole, and what a stream passed on."""

    started: float  # monotonic
    reply: Reply | None = None
    parsed: Parsed | None = None  # the checked document, when JSON was asked for
    ttft_ms: int | None = None
    live: _Live | None = None  # the stream, when one is read
    shown_tail: str = ""  # whitespace the caller saw past the prefill this entry continues
    skipped: int = 0  # characters received but not passed on: that whitespace, written again

    @property
    def text(self) -> str:
        """The text passed on so far."""
        live = self.live
        if live is None:
            return ""
        text = live.reply.text  # what a break leaves, without a second copy
        return text[self.skipped : len(text) - live.withheld()]

    @property
    def chunks(self) -> int | None:
        """The content events passed on, once there was one."""
        return self.live.shown if self.live is not None and self.content_started else None

    @property
    def has_tool_calls(self) -> bool:
        return self.live is not None and self.live.reply.has_tool_calls

    def unseen(self, pieces: list[Text | ToolCallDelta]) -> list[Text | ToolCallDelta]:
        """`pieces` without the whitespace the caller already saw at the end of the text this
        entry continues (the prefill stops at its last word; the model writes it again)."""
        out = []
        for piece in pieces:
            if self.shown_tail and isinstance(piece, Text):
                text = piece.text
                same = 0
                tail = self.shown_tail
                while same < min(len(text), len(tail)) and text[same] == tail[same]:
                    same += 1
                self.shown_tail = tail[same:] if same == len(text) else ""
                self.skipped += same
                if same == len(text):
                    continue
                if same:
                    piece = Text(text[same:])
            out.append(piece)
        return out

    @property
    def content_started(self) -> bool:
        return self.ttft_ms is not None

    def shown(self, prefix: str) -> str | None:
        """The answer's text the caller has seen (with what the entry continued), if any."""
        return prefix + self.text if self.content_started else None

    def latency_ms(self, now: float) -> int:
        return _ms(now - self.started)


class _Live:
    """A stream being read, and how much of it `_reading` passed on."""

    __slots__ = ("batch", "error", "monotonic", "reading", "reply", "sent", "shown", "taken")

    def __init__(
        self, reply: StreamReply | WholeReply, sent: _Exchange, monotonic: Callable[[], float]
    ) -> None:
        self.reply = reply
        self.sent = sent
        self.monotonic = monotonic
        self.batch: list[Text | ToolCallDelta] = []  # the pieces of the last read
        self.taken = 0  # pieces read
        self.shown = 0  # pieces passed on (counted by `_reading`)
        self.error: BaseException | None = None  # what ended the reading, raised in `_stream`
        self.reading = False  # a read is in progress

    def took(self, pieces: list[Text | ToolCallDelta]) -> list[Text | ToolCallDelta]:
        """The pieces of one read (not none), as they are to be passed on."""
        sent = self.sent
        if sent.shown_tail:
            pieces = sent.unseen(pieces)
            if not pieces:
                return pieces
        if sent.ttft_ms is None:  # the first content: the time to first token
            sent.ttft_ms = sent.latency_ms(self.monotonic())
        self.batch = pieces
        self.taken += len(pieces)
        return pieces

    def withheld(self) -> int:
        """Characters of text read but not passed on: the caller left in the middle of a read."""
        left = self.taken - self.shown
        if not left:
            return 0
        return sum(len(p.text) for p in self.batch[-left:] if isinstance(p, Text))


_Step = StreamEvent | _Live  # what the layers of a run yield (`_Live` only when streaming)


async def _reading(
    start: Callable[[], AsyncGenerator[_Step, None]],
) -> AsyncGenerator[StreamEvent, None]:
    """The events of a run, or of one racer of a hedged race (`start` makes its generator):
    the one generator its reader iterates. Each stream's pieces go from the HTTP reader to the
    reader here, not through every layer of the run (about 2 µs a layer per chunk).

    The answer counts as delivered when this is resumed or closed after `Done`.
    """
    async with aclosing(start()) as steps:
        async for step in steps:
            if isinstance(step, _Live):
                read = step.reply.read
                while True:
                    step.reading = True
                    try:
                        content = await read()
                    except BaseException as exc:  # raised again by `_stream`: see there
                        step.error = exc
                        break
                    finally:
                        step.reading = False
                    if content is None:
                        break
                    if content:  # a read of keep-alives or usage has none
                        for piece in step.took(content):
                            step.shown += 1
                            yield piece
                continue
            if isinstance(step, Done):
                try:
                    yield step
                finally:  # resumed or closed after Done: the caller has the whole answer
                    step.answer.delivered()
                return
            yield step


def _continued(prefix: str, response: LlmResponse, skipped: int) -> LlmResponse:
    """The answer of an entry that continued `prefix`, as it was shown: the text in front,
    less the `skipped` characters of whitespace it wrote again."""
    calls = [b for b in response.content if not isinstance(b, TextBlock)]
    return replace(response, content=(TextBlock(prefix + response.text[skipped:]), *calls))


def _ignored(state: EntryState, now: float) -> str | None:
    """What --ignore-cooldown overrode for this entry, if anything."""
    if state.is_cooling(now) and state.cooldown_until is not None:
        return f"was cooling down until {format_human(state.cooldown_until)}; tried anyway"
    if state.is_half_open(now):
        return "was half-open; tried without claiming the probe"
    return None


def _with_options(cascade: CascadeConfig, overrides: Mapping[str, Any]) -> CascadeConfig:
    """The cascade with this run's entry options laid over every entry's own."""
    entries = tuple(replace(e, options=e.options.merged(overrides)) for e in cascade.entries)
    return replace(cascade, entries=entries)


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
