"""One run's record: the attempts it made and their rows and cooldowns in SQLite.

Every outcome is appended to `attempts` and written as one `attempt_log` row, with the
cooldown it sets, in a single transaction. A database problem never costs the user the
answer: the first one is reported once and the run goes on without shared state (cooldowns
not consulted, attempts kept only in memory and in a saved prompt). Waiting for another
process's lock takes at most the store's busy timeout, and at most a quarter of what is left
of the run's deadline, so a stuck lock cannot eat the time the next entry needs.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from . import budgets
from .attempts import BUDGET, CAPABILITY, Attempt, Outcome, error_list, failure_summary
from .clock import Clock
from .errors import ProviderError
from .routing import RouteStats
from .rules import CooldownPolicy, Rule
from .store import AttemptRecord, EntryState, Store
from .types import LlmResponse

logger = logging.getLogger(__name__)
T = TypeVar("T")
NO_STATE = "this run goes on without shared cooldowns or an attempt log"
DEADLINE_SHARE = 0.25  # of the time left, the most one database wait may take


class Journal:
    """Records what a run did, in memory and in the shared database (when it can be used)."""

    def __init__(
        self,
        store: Store | None,
        cascade_name: str,
        run_id: str,
        clock: Clock,
        policy: CooldownPolicy,
        remaining: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.store = store
        self.cascade_name = cascade_name
        self.run_id = run_id
        self.clock = clock
        self.policy = policy
        self.remaining = remaining  # seconds left of the run's deadline, None without one
        self.attempts: list[Attempt] = []
        self.probing: set[str] = set()  # entries whose probe lease this run holds

    # --- state ----------------------------------------------------------------------------

    def _db(self, what: str, action: Callable[[Store], T]) -> T | None:
        """Run `action` on the store; after the first failure, the run goes on without it."""
        store = self.store
        if store is None:
            return None
        remaining = self.remaining()
        if remaining is not None:
            store.set_busy_timeout(min(store.busy_timeout_s, max(remaining * DEADLINE_SHARE, 0)))
        try:
            return action(store)
        except sqlite3.Error as exc:
            logger.warning("database error while %s (%s); %s", what, exc, NO_STATE)
            self.store = None
            return None
        finally:
            if remaining is not None and self.store is not None:
                store.set_busy_timeout(store.busy_timeout_s)

    def states(self, keys: Iterable[str]) -> dict[str, EntryState]:
        """The breakers of these entries now, in one read (closed if the database is out)."""
        wanted = list(keys)
        found = self._db("reading cooldowns", lambda s: s.states(wanted))
        return found if found is not None else {key: EntryState(key) for key in wanted}

    def route_stats(self, keys: Iterable[str]) -> dict[str, RouteStats]:
        """What routing knows of these entries (nothing if the database is out)."""
        wanted = list(keys)
        found = self._db("reading the routing state", lambda s: s.route_stats(wanted))
        return found if found is not None else {key: RouteStats() for key in wanted}

    def over_budget(
        self, scope: str, name: str, limits: budgets.Limits, now: float
    ) -> budgets.Exceeded | None:
        """The limit `name` (a cascade or an entry) has reached; None if none (or no database:
        without the shared log there is nothing to count)."""
        day, month = budgets.periods(now)
        spent = self._db("reading the spending", lambda s: s.spending(scope, [name], [day, month]))
        if not spent:
            return None
        return budgets.exceeded(limits, {period: v for (_, period), v in spent.items()}, now)

    def state(self, key: str) -> EntryState:
        return self.states([key])[key]

    def claim_probe(self, key: str, lease_s: float) -> bool:
        """Become the one run probing a half-open entry (True on a database error: fail open)."""
        claimed = self._db(
            "claiming a probe", lambda s: s.claim_probe(key, self.run_id, self.clock.now(), lease_s)
        )
        if claimed:
            self.probing.add(key)
        return claimed is None or claimed

    def give_back_probes(self) -> None:
        """The run ends without a verdict on an entry it probes (cancelled while it waited to
        try again, or closed before its request went out): free the lease now, or every
        other process would skip the entry until the lease lapsed."""
        held, self.probing = sorted(self.probing), set()
        for key in held:

            def release(store: Store, key: str = key) -> None:
                store.release_probe(key, self.run_id)

            self._db("giving back a probe", release)

    def soonest_free(self, keys: Iterable[str]) -> float | None:
        """When the first of these entries stops cooling (or its probe lease lapses)."""
        now = self.clock.now()
        times = []
        for state in self.states(keys).values():
            if state.is_cooling(now) and state.cooldown_until is not None:
                times.append(state.cooldown_until)
            elif state.probe_in_flight(now) and state.probe_until is not None:
                times.append(state.probe_until)
            else:
                times.append(now)
        return min(times, default=None)

    # --- outcomes -------------------------------------------------------------------------

    def _row(self, attempt: Attempt) -> AttemptRecord:
        return AttemptRecord(
            cascade_name=self.cascade_name,
            provider_model=attempt.entry,
            http_status=attempt.status,
            latency_ms=attempt.latency_ms,
            input_tokens=attempt.input_tokens,
            output_tokens=attempt.output_tokens,
            outcome=attempt.outcome,
            error_kind=attempt.kind,
            error_message=attempt.detail[:500] if attempt.outcome != "ok" else None,
            rule=attempt.rule,
            run_id=self.run_id,
            try_number=attempt.try_number,
            ttft_ms=attempt.ttft_ms,
            chunks=attempt.chunks,
            cost=attempt.cost,
        )

    def skipped(self, key: str, state: EntryState, why: str) -> None:
        attempt = Attempt(
            key, "skipped", why, level=state.failures or None, cooldown_until=state.cooldown_until
        )
        logger.info("skipping %s: %s", key, why)
        self.attempts.append(attempt)
        self._db("logging a skip", lambda s: s.log_attempt(self._row(attempt), self.clock.now()))

    def unfit(self, key: str, why: str) -> None:
        """The entry cannot serve this request (a capability, the context window): not sent."""
        attempt = Attempt(key, "skipped", why, rule=CAPABILITY)
        logger.info("skipping %s: %s", key, why)
        self.attempts.append(attempt)
        self._db("logging a skip", lambda s: s.log_attempt(self._row(attempt), self.clock.now()))

    def over_budget_skip(self, key: str, why: str, resets_at: float) -> None:
        """The entry spent its budget: skipped like a cooling one, until the budget resets."""
        attempt = Attempt(key, "skipped", why, rule=BUDGET, cooldown_until=resets_at)
        logger.info("skipping %s: %s", key, why)
        self.attempts.append(attempt)
        self._db("logging a skip", lambda s: s.log_attempt(self._row(attempt), self.clock.now()))

    def waited(self, key: str, seconds: float) -> None:
        """The run waited for `key` to cool down (--wait-cooldown); nothing is logged."""
        detail = f"every entry was cooling down; waited {seconds:.1f} s for this one"
        logger.info("%s: %s", key, detail)
        self.attempts.append(Attempt(key, "waited", detail, latency_ms=int(seconds * 1000)))

    def not_sent(
        self,
        key: str,
        outcome: Outcome,
        detail: str,
        *,
        probe: bool,
        try_number: int = 1,
        latency_ms: int = 0,
        ttft_ms: int | None = None,
        chunks: int | None = None,
        partial: str | None = None,
    ) -> None:
        """An entry given up without a provider verdict (missing key, cascade deadline).

        A deadline can end a stream after output: `partial` is the text that was shown."""
        attempt = Attempt(
            key,
            outcome,
            detail,
            kind={"missing_key": "missing_key", "deadline": "timeout"}.get(outcome),
            rule=outcome,
            latency_ms=latency_ms,
            try_number=try_number,
            ttft_ms=ttft_ms,
            chunks=chunks,
            partial=partial,
        )
        logger.info("%s: %s", key, detail)
        self.attempts.append(attempt)
        self._failure(attempt, lambda _level: None, probe)

    def failed(
        self,
        key: str,
        err: ProviderError,
        rule: Rule,
        detail: str,
        *,
        latency_ms: int,
        try_number: int,
        probe: bool,
        retrying: bool,
        note: str | None = None,
        midstream: bool = False,
        ttft_ms: int | None = None,
        chunks: int | None = None,
        partial: str | None = None,
    ) -> None:
        """A provider failure; unless it will be retried in place, the rule's cooldown applies.

        `midstream`: a stream broke after output reached the caller (outcome `truncated`).
        """
        outcome: Outcome = (
            "retrying"
            if retrying
            else "invalid_output"
            if err.kind == "invalid_output"
            else "truncated"
            if midstream
            else "failed"
        )
        attempt = Attempt(
            key,
            outcome,
            detail,
            status=err.status,
            kind=err.kind,
            rule=rule.name,
            latency_ms=latency_ms,
            try_number=try_number,
            probe=probe,
            stopped=rule.action == "stop" and not retrying,
            note=note,
            ttft_ms=ttft_ms,
            chunks=chunks,
            partial=partial,
        )
        decided: list[float | None] = [None]

        def cooldown_for(level: int) -> float | None:
            decided[0] = None if retrying else rule.cooldown_s(err, level, self.policy)
            return decided[0]

        # A probe retried in place keeps its lease: the others must keep skipping the entry.
        recorded = self._failure(attempt, cooldown_for, probe and not retrying)
        if recorded is None:  # no database: the cooldown is still what the rule decided
            cooldown_for(1)
        else:
            until, level = recorded
            attempt = replace(attempt, cooldown_until=until, level=level if until else None)
        attempt = replace(attempt, cooldown_s=decided[0])
        logger.info("%s failed: %s [rule %s]", key, detail, rule.name)
        self.attempts.append(attempt)

    def _failure(
        self, attempt: Attempt, cooldown_for: Callable[[int], float | None], probe: bool
    ) -> tuple[float | None, int] | None:
        if probe:  # a verdict: the store ends the lease (a cooldown, or the probe freed)
            self.probing.discard(attempt.entry)
        return self._db(
            "recording a failure",
            lambda s: s.record_failure(
                self._row(attempt),
                self.clock.now(),
                cooldown_for,
                owner=self.run_id if probe else None,
            ),
        )

    def answered(
        self,
        key: str,
        response: LlmResponse,
        status: int,
        *,
        latency_ms: int,
        try_number: int,
        probe: bool,
        note: str | None = None,
        reset: bool = True,
        ttft_ms: int | None = None,
        chunks: int | None = None,
        cost: float | None = None,
    ) -> None:
        """An answer. `reset=False`: the breaker was closed when read, nothing to close."""
        attempt = Attempt(
            key,
            "ok",
            f"answered in {latency_ms} ms",
            status=status,
            latency_ms=latency_ms,
            try_number=try_number,
            probe=probe,
            note=note,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            ttft_ms=ttft_ms,
            chunks=chunks,
            cost=cost,
        )
        self.attempts.append(attempt)
        self.probing.discard(key)  # a success closes the breaker, and the lease with it
        self._db(
            "recording a success",
            lambda s: s.record_success(self._row(attempt), self.clock.now(), reset=reset),
        )
        logger.info(
            "success from %s (%d ms, tokens in=%s out=%s)",
            key,
            latency_ms,
            response.input_tokens,
            response.output_tokens,
        )

    def cancelled(
        self,
        key: str,
        *,
        latency_ms: int,
        try_number: int,
        probe: bool,
        partial: str | None,
        outcome: Outcome = "cancelled",
    ) -> None:
        """The caller went away mid-request: logged, no cooldown, a probe's lease given back."""
        detail = {
            "cancelled": "cancelled by the caller before the answer was complete",
            "hedged": "cancelled: a hedged request to another entry answered first",
        }[outcome]
        attempt = Attempt(
            key,
            outcome,
            detail,
            kind="cancelled",
            latency_ms=latency_ms,
            try_number=try_number,
            probe=probe,
            partial=partial,
        )
        logger.info("%s: %s", key, attempt.detail)
        self.attempts.append(attempt)
        self._failure(attempt, lambda _level: None, probe)

    def hedged(
        self, key: str, *, latency_ms: int, try_number: int, probe: bool, partial: str | None
    ) -> None:
        """Another entry of a hedged race answered first: cancelled, no cooldown."""
        self.cancelled(
            key,
            latency_ms=latency_ms,
            try_number=try_number,
            probe=probe,
            partial=partial,
            outcome="hedged",
        )

    # --- summaries ------------------------------------------------------------------------

    def forget_skips(self) -> None:
        """Drop skip records before going over the cooling entries again (--wait-cooldown)."""
        self.attempts = [a for a in self.attempts if not a.cooling]

    def skipped_keys(self) -> set[str]:
        """The entries skipped for a cooldown (or another process's probe)."""
        return {a.entry for a in self.attempts if a.cooling}

    def errors(self) -> list[dict[str, Any]]:
        """What each entry did, for the saved prompt's `errors` list."""
        return error_list(self.attempts)

    def message(self) -> str:
        return failure_summary(self.attempts)
