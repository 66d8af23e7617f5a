"""`health`: probe every entry at once, cheaply, and say which could answer now.

A probe asks the vendor's model page or listing (`Adapter.probe_requests`), or with `deep` a
one-token completion, within the entry's own timeouts and never past the overall time limit.
Its verdict is ok, auth, missing-model, rate-limited, slow, unreachable or error. Every probe
is logged (`outcome = probe`); only with `update` does it move the breaker: a failure cools
the entry down by the usual rules, a good probe closes a half-open breaker.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from . import policy
from . import rules as rules_mod
from .breakers import open_store
from .clock import Clock, SystemClock, json_time
from .config import AppConfig, CascadeEntry, ProviderConfig
from .errors import ProviderError, UsageError
from .journal import NO_STATE
from .keys import ResolvedKey, key_fix, lookup_for, missing_key_message, resolve_key
from .providers import get_adapter
from .store import AttemptRecord, Store, StoreError
from .types import Conversation

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

Verdict = Literal["ok", "auth", "missing-model", "rate-limited", "slow", "unreachable", "error"]
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_SLOW_S = 5.0
LEASE_SLACK_S = 5.0
# Every probe's budget ends with the time limit; this lets one whose limit just fired report
# its own timeout rather than be cut off.
REPORT_SLACK_S = 0.2
_RATE_RULES = frozenset(
    {"rate_limited", "quota_exhausted", "anthropic_spend_limit", "overloaded", "payment_required"}
)
PING = Conversation.single_user_prompt("ping")


@dataclass(frozen=True, slots=True)
class HealthOptions:
    deep: bool = False  # a one-token completion instead of the model listing
    update: bool = False  # let the verdicts move the breakers
    timeout_s: float = DEFAULT_TIMEOUT_S  # for every probe together
    slow_s: float = DEFAULT_SLOW_S  # an answer slower than this is `slow`


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One entry's verdict."""

    entry: str
    cascade: str
    verdict: Verdict
    reason: str
    latency_ms: int = 0
    status: int | None = None
    rule: str | None = None  # the rule a failure matched
    cooldown_until: float | None = None  # set by this probe (with update)

    @property
    def healthy(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "cascade": self.cascade,
            "verdict": self.verdict,
            "healthy": self.healthy,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "rule": self.rule,
            "reason": self.reason,
            "cooldown_until": json_time(self.cooldown_until),  # RFC 3339, as in every JSON
        }


def verdict_for(err: ProviderError, rule: rules_mod.Rule) -> Verdict:
    """What a failed probe says of the entry (a pure function of its facts and rule)."""
    if err.kind == "missing_key" or rule.name == "auth" or err.status in (401, 403):
        return "auth"
    if err.status == 404:
        return "missing-model"
    if rule.name in _RATE_RULES or err.status in (402, 429, 529):
        return "rate-limited"
    if err.kind == "timeout":
        return "slow"
    if err.kind in ("connect", "transport") or (err.status or 0) >= 500:
        return "unreachable"
    return "error"


def entries_to_probe(config: AppConfig, cascade: str | None) -> list[tuple[str, CascadeEntry]]:
    """(cascade, entry) for every entry of the config (or of one cascade), each key once."""
    if cascade is not None and cascade not in config.cascades:
        defined = ", ".join(sorted(config.cascades)) or "none"
        raise UsageError(f"Cascade '{cascade}' not found in configuration (defined: {defined})")
    names = [cascade] if cascade is not None else list(config.cascades)
    found: dict[str, tuple[str, CascadeEntry]] = {}
    for name in names:
        for entry in config.cascades[name].entries:
            found.setdefault(entry.key, (name, entry))
    return list(found.values())


def check(
    config: AppConfig, cascade: str | None = None, options: HealthOptions | None = None
) -> list[ProbeResult]:
    """Probe the entries (see `Prober`) in a fresh event loop."""
    return asyncio.run(Prober(config, options or HealthOptions()).run(cascade))


class Prober:
    """One health check: its time limit, its database, its keys, its HTTP client."""

    def __init__(
        self,
        config: AppConfig,
        options: HealthOptions,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        key_resolver: Callable[[ProviderConfig], ResolvedKey] | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.client = client
        self.clock: Clock = clock or SystemClock()
        self.resolve = key_resolver or self._resolve_key
        self.run_id = secrets.token_hex(8)
        self.store: Store | None = None
        self._keys: dict[str, ResolvedKey] = {}
        self._keyring_failed = False
        self._ends = 0.0

    async def run(self, cascade: str | None = None) -> list[ProbeResult]:
        """Every selected entry's verdict, in config order, within `timeout_s` in all."""
        chosen = entries_to_probe(self.config, cascade)
        self._ends = self.clock.monotonic() + self.options.timeout_s
        self.store = self._open_store()
        own_client = self.client is None
        if self.client is None:
            from .http_client import new_client

            self.client = new_client()
        try:
            tasks = [asyncio.ensure_future(self._probe(name, entry)) for name, entry in chosen]
            if tasks:
                await asyncio.wait(tasks, timeout=max(self._left(), 0.0) + REPORT_SLACK_S)
            results = []
            for (name, entry), task in zip(chosen, tasks, strict=True):
                if task.done():
                    results.append(task.result())
                else:  # the overall limit: what is still out there is not healthy
                    task.cancel()
                    why = f"no answer within --timeout {self.options.timeout_s:g} s"
                    results.append(ProbeResult(entry.key, name, "slow", why))
            return results
        finally:
            if own_client:
                await self.client.aclose()
                self.client = None
            if self.store is not None:
                self.store.close()

    def _left(self) -> float:
        return self._ends - self.clock.monotonic()

    def _open_store(self) -> Store | None:
        try:
            return open_store(self.config)
        except StoreError as exc:
            logger.warning("cannot use the database '%s' (%s); %s", exc.path, exc.reason, NO_STATE)
            return None

    def _resolve_key(self, provider: ProviderConfig) -> ResolvedKey:
        """As the engine does: after the keyring failed once, env vars only."""
        use_keyring = self.config.keyring and not self._keyring_failed
        key = resolve_key(lookup_for(provider), use_keyring=use_keyring)
        self._keyring_failed = self._keyring_failed or key.keyring_failed
        return key

    def _key(self, provider: ProviderConfig) -> ResolvedKey:
        key = self._keys.get(provider.name)
        if key is None:
            key = self._keys[provider.name] = self.resolve(provider)
            if key.warning:
                logger.warning("%s", key.warning)
        return key

    # --- one entry ------------------------------------------------------------------------

    async def _probe(self, cascade: str, entry: CascadeEntry) -> ProbeResult:
        provider = self.config.providers[entry.provider]
        key = self._key(provider)
        if key.source == "missing":
            lookup = lookup_for(provider)
            detail = missing_key_message(lookup, use_keyring=self.config.keyring)
            err = ProviderError("missing_key", detail)
            return self._record(cascade, entry, provider, err, latency_ms=0, claimed=False)
        claimed = self._claim(entry)
        started = self.clock.monotonic()
        try:
            found, status, how = await self._ask(entry, provider, key)
        except ProviderError as err:
            latency = _ms(self.clock.monotonic() - started)
            if not (self.options.deep and err.kind == "empty_response"):
                return self._record(cascade, entry, provider, err, latency, claimed)
            found, status, how = True, err.status or 200, "answered (nothing within one token)"
        latency = _ms(self.clock.monotonic() - started)
        if not found:  # decided as the 404 of a model page, logged with the listing's status
            absent = ProviderError("http", "not found", status=404)
            why = f"model '{entry.model}' is not among the models listed (HTTP {status})"
            return self._record(cascade, entry, provider, absent, latency, claimed, status, why)
        verdict: Verdict = "ok"
        reason = f"{how} in {latency} ms"
        if latency > self.options.slow_s * 1000:
            verdict = "slow"
            reason += f", slower than {self.options.slow_s:g} s"
        self._log_success(cascade, entry, status, latency, claimed, reason)
        return ProbeResult(entry.key, cascade, verdict, reason, latency, status)

    async def _ask(
        self, entry: CascadeEntry, provider: ProviderConfig, key: ResolvedKey
    ) -> tuple[bool, int, str]:
        """(model served, status, what was asked), or a ProviderError."""
        from .providers import _http  # httpx is imported only when a probe is sent

        budget = policy.attempt_budget(entry.options, max(self._left(), 0.0))
        call = policy.call_options(entry, provider, key.value, region=key.region or provider.region)
        adapter = get_adapter(provider.type)
        assert self.client is not None
        if self.options.deep or not adapter.probe_requests(call):
            reply = await _http.send(
                self.client, adapter, PING, replace(call, max_tokens=1), budget, self.clock.now()
            )
            return True, reply.status, "answered one token"
        probed = await _http.probe(
            self.client, adapter, call, budget, self.clock.now(), self.clock.monotonic
        )
        return probed.found, probed.status, "listed" if probed.listing else "model found"

    # --- the database ---------------------------------------------------------------------

    def _claim(self, entry: CascadeEntry) -> bool:
        """With update, hold a half-open entry's probe lease, as a run would; False when not
        updating, when the entry is not half-open, or when another process holds it."""
        if not self.options.update:
            return False
        lease = self.options.timeout_s + LEASE_SLACK_S
        now = self.clock.now()
        return bool(self._db(lambda s: s.claim_probe(entry.key, self.run_id, now, lease)))

    def _row(self, cascade: str, entry: CascadeEntry, **fields: Any) -> AttemptRecord:
        return AttemptRecord(
            cascade_name=cascade,
            provider_model=entry.key,
            outcome="probe",
            run_id=self.run_id,
            **fields,
        )

    def _record(
        self,
        cascade: str,
        entry: CascadeEntry,
        provider: ProviderConfig,
        err: ProviderError,
        latency_ms: int,
        claimed: bool,
        status: int | None = None,
        reason: str | None = None,
    ) -> ProbeResult:
        """A failed probe: logged, and with update (unless another process is probing the
        entry) the breaker moves as the rule says."""
        rule = rules_mod.decide(err, provider.type, provider.rules, self.config.rules)
        reason = reason or err.display()
        if rule.hint and err.kind != "missing_key":
            fix = key_fix(lookup_for(provider), use_keyring=self.config.keyring)
            reason += f" ({rule.hint.format(provider=provider.name, key_fix=fix)})"
        status = err.status if status is None else status
        record = self._row(
            cascade,
            entry,
            http_status=status,
            latency_ms=latency_ms,
            error_kind=err.kind,
            error_message=reason[:500],
            rule=rule.name,
        )
        until = None
        if self.options.update and (claimed or not self._half_open(entry)):
            policy = self.config.cooldown
            owner = self.run_id if claimed else None
            outcome = self._db(
                lambda s: s.record_failure(
                    record,
                    self.clock.now(),
                    lambda level: rule.cooldown_s(err, level, policy),
                    owner=owner,
                )
            )
            until = outcome[0] if outcome else None
        else:
            self._db(lambda s: s.log_attempt(record, self.clock.now()))
        verdict = verdict_for(err, rule)
        return ProbeResult(
            entry.key, cascade, verdict, reason, latency_ms, status, rule.name, until
        )

    def _log_success(
        self,
        cascade: str,
        entry: CascadeEntry,
        status: int,
        latency_ms: int,
        claimed: bool,
        reason: str,
    ) -> None:
        record = self._row(
            cascade, entry, http_status=status, latency_ms=latency_ms, error_message=None
        )
        if claimed:  # the half-open breaker this probe held closes
            self._db(lambda s: s.record_success(record, self.clock.now()))
        else:
            self._db(lambda s: s.log_attempt(record, self.clock.now()))
        logger.info("%s: %s", entry.key, reason)

    def _half_open(self, entry: CascadeEntry) -> bool:
        states = self._db(lambda s: s.states([entry.key]))
        return bool(states) and states[entry.key].is_half_open(self.clock.now())

    def _db(self, action: Callable[[Store], Any]) -> Any:
        """Run `action` on the database; after the first error, go on without it."""
        if self.store is None:
            return None
        try:
            return action(self.store)
        except sqlite3.Error as exc:
            logger.warning("database error (%s); probes are not logged", exc)
            self.store.close()
            self.store = None
            return None


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)
