"""Error rules as data: what one failed attempt means for the entry and for the cascade.

A rule matches on the facts of a `ProviderError` (status, kind, vendor code, provider type)
and says whether to fail over or stop, whether the entry may be retried in place, and how long
it cools down. User rules (per provider, then global) are consulted before the built-ins;
the first match wins, and its name is recorded on the attempt row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import Any, Literal, get_args

from .errors import ErrorKind, ProviderError
from .types import shown

Action = Literal["failover", "stop"]
Cooldown = Literal["none", "backoff", "long"] | float
# The longest duration the config may name, and the longest cooldown ever applied: one year
# is beyond any sensible setting, and far from the last instant a timestamp can hold.
MAX_SECONDS = 365 * 24 * 3600.0
KINDS: frozenset[str] = frozenset(get_args(ErrorKind))


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    """Backoff constants: base doubles per consecutive failure up to the cap."""

    base_s: float = 30.0
    cap_s: float = 3600.0
    long_s: float = 3600.0

    def backoff(self, level: int) -> float:
        """`min(base * 2**(level-1), cap)`, with the exponent guarded against overflow."""
        exponent = min(max(level, 1) - 1, 32)
        return min(self.base_s * math.pow(2, exponent), self.cap_s)


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the decision table. A None matcher matches anything."""

    name: str
    statuses: frozenset[int] | None = None
    kinds: frozenset[str] | None = None
    codes: frozenset[str] | None = None
    provider_types: frozenset[str] | None = None
    action: Action = "failover"
    cooldown: Cooldown = "backoff"
    retry: bool = False  # may be retried inside the entry before failing over
    honor_retry_after: bool = False
    hint: str | None = None  # appended to the error; `{provider}` and `{key_fix}` are filled in

    def matches(self, err: ProviderError, provider_type: str) -> bool:
        if self.provider_types is not None and provider_type not in self.provider_types:
            return False
        if self.kinds is not None and err.kind not in self.kinds:
            return False
        if self.statuses is not None and err.status not in self.statuses:
            return False
        return self.codes is None or (err.code or "").lower() in self.codes

    def cooldown_s(self, err: ProviderError, level: int, policy: CooldownPolicy) -> float | None:
        """Seconds this failure cools the entry for, or None for no cooldown.

        `level` is the number of consecutive failures including this one. A Retry-After the
        rule honours replaces the computed backoff; it is clamped before any arithmetic.
        Never more than MAX_SECONDS, whatever the policy says.
        """
        if self.cooldown == "none":
            return None
        if self.cooldown == "long":
            seconds = policy.long_s
        elif isinstance(self.cooldown, float | int):
            seconds = float(self.cooldown)
        elif self.honor_retry_after and err.retry_after_s is not None:
            seconds = min(max(err.retry_after_s, 0.0), policy.cap_s)
        else:
            seconds = policy.backoff(level)
        return seconds if seconds <= MAX_SECONDS else MAX_SECONDS  # also nan


def _codes(lo: int, hi: int) -> frozenset[int]:
    return frozenset(range(lo, hi + 1))


# `{key_fix}` is keys.key_fix(): it offers `key set` only when the keyring is in use.
_KEY_HINT = "check the key: {key_fix}"

BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        "anthropic_spend_limit",
        statuses=frozenset({429}),
        codes=frozenset({"enforced_spend_limit_reached"}),
        provider_types=frozenset({"anthropic"}),
        cooldown="long",
        hint="the Anthropic spend limit is reached; raise it in the Anthropic console",
    ),
    Rule(
        "quota_exhausted",
        statuses=frozenset({429}),
        codes=frozenset({"insufficient_quota"}),
        cooldown="long",
        hint="the account is out of quota or credits; check billing for {provider}",
    ),
    Rule(
        "cohere_trial_limit",
        statuses=frozenset({429}),
        codes=frozenset({"trial_key_monthly_limit"}),
        provider_types=frozenset({"cohere"}),
        cooldown="long",
        hint="the Cohere trial key's monthly calls are spent; use a production key",
    ),
    # Bedrock: a model still loading answers 429 ModelNotReadyException; the SDKs retry it in
    # place, so do we (retries allowing), with the ordinary backoff since it names no wait.
    Rule(
        "model_not_ready",
        statuses=frozenset({429}),
        codes=frozenset({"modelnotreadyexception"}),
        provider_types=frozenset({"bedrock"}),
        retry=True,
    ),
    Rule("rate_limited", statuses=frozenset({429}), retry=True, honor_retry_after=True),
    Rule("overloaded", statuses=frozenset({529}), retry=True, honor_retry_after=True),
    Rule("unavailable", statuses=frozenset({503}), retry=True, honor_retry_after=True),
    Rule("server_error", statuses=_codes(500, 599), retry=True),
    Rule("request_timeout", statuses=frozenset({408}), retry=True),
    # Cohere's 499 "request cancelled" (we did not cancel): its docs say to try again.
    Rule(
        "cohere_cancelled",
        statuses=frozenset({499}),
        provider_types=frozenset({"cohere"}),
        retry=True,
    ),
    Rule("conflict", statuses=frozenset({409}), retry=True),
    Rule("auth", statuses=frozenset({401, 403}), cooldown="long", hint=_KEY_HINT),
    # Gemini answers a wrong key with 400 INVALID_ARGUMENT; only its ErrorInfo reason tells.
    Rule(
        "auth",
        statuses=frozenset({400}),
        codes=frozenset({"api_key_invalid"}),
        cooldown="long",
        hint=_KEY_HINT,
    ),
    Rule(
        "payment_required",
        statuses=frozenset({402}),
        cooldown="long",
        hint="the account is out of credits; check billing for {provider}",
    ),
    # A prompt too long for this model says nothing about the entry, and a later entry (a
    # larger context window) may take it.
    Rule(
        "context_length_exceeded",
        statuses=frozenset({400, 413}),
        codes=frozenset({"context_length_exceeded"}),
        cooldown="none",
    ),
    # Bedrock's account quota for the model (a 400, "resubmit your request later"): a
    # throttle, not the caller's mistake, so the entry backs off.
    Rule(
        "bedrock_service_quota",
        statuses=frozenset({400}),
        codes=frozenset({"servicequotaexceededexception"}),
        provider_types=frozenset({"bedrock"}),
    ),
    # Bedrock's 424 ModelErrorException: the model failed on its side, as a 5xx would.
    Rule("model_error", statuses=frozenset({424}), provider_types=frozenset({"bedrock"})),
    # Azure's content filter refused the prompt: the entry is fine and another vendor's may
    # answer, so fail over without a cooldown, under a name that says why.
    Rule(
        "content_filtered",
        statuses=frozenset({400}),
        codes=frozenset({"content_filter"}),
        cooldown="none",
    ),
    Rule("caller_error", statuses=frozenset({400, 404, 413, 422}), cooldown="none"),
    Rule("redirect", statuses=_codes(300, 399), cooldown="none"),
    Rule("client_error", statuses=_codes(400, 499), cooldown="none"),
    Rule("timeout", kinds=frozenset({"timeout"}), retry=True),
    Rule("connect", kinds=frozenset({"connect", "transport"}), retry=True),
    # A stream cut before its end marker is a connection that broke mid-answer (a proxy's idle
    # timeout, a restarted server): as transient as `transport`, so the same request may be
    # retried in place, and the entry backs off so other processes do not each hit it.
    Rule("truncated", kinds=frozenset({"truncated"}), retry=True),
    # The caller gave up (Ctrl-C, its own deadline): nothing is known about the entry, so it
    # must not cool down, and the cascade stops rather than asking the next entry.
    Rule("cancelled", kinds=frozenset({"cancelled"}), action="stop", cooldown="none"),
    Rule("invalid_response", kinds=frozenset({"invalid_response"})),
    Rule("empty_response", kinds=frozenset({"empty_response"}), cooldown="none"),
    # An answer that is not the JSON asked for (or breaks its schema): the next entry may do
    # better, and the entry is not broken, so it does not cool down.
    Rule("invalid_output", kinds=frozenset({"invalid_output"}), cooldown="none"),
    # No real answer comes near the limit: the endpoint is broken or hostile, so it cools down
    # (other processes need not each pull the limit's worth from it) and is not retried in place
    # (the same request would bring the same flood).
    Rule(
        "response_too_large",
        kinds=frozenset({"response_too_large"}),
        hint="raise max_response_bytes for {provider} if answers this large are expected",
    ),
    Rule(
        "missing_key",
        kinds=frozenset({"missing_key"}),
        cooldown="none",
        hint="no key: {key_fix}",
    ),
    Rule("other", cooldown="backoff"),
)


def decide(err: ProviderError, provider_type: str, *rule_lists: Sequence[Rule]) -> Rule:
    """The first rule, in `rule_lists` order and then the built-ins, that matches `err`."""
    for rules in (*rule_lists, BUILTIN_RULES):
        for rule in rules:
            if rule.matches(err, provider_type):
                return rule
    raise AssertionError("the built-in 'other' rule matches everything")  # pragma: no cover


# --- TOML ----------------------------------------------------------------------------------

RULE_KEYS = frozenset(
    {"name", "status", "kind", "code", "action", "cooldown", "retry", "retry_after", "hint"}
)


class RuleError(ValueError):
    """A user rule is malformed; the message names the key (config.py adds the path)."""


def _parse_statuses(value: Any) -> frozenset[int]:
    items: Iterable[Any] = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)  # "503" means 503
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.add(item)
        elif isinstance(item, str) and len(item) == 3 and item[0] in "12345" and item[1:] == "xx":
            base = int(item[0]) * 100
            out |= _codes(base, base + 99)
        elif isinstance(item, str) and "-" in item:
            lo, _, hi = item.partition("-")
            if not (lo.strip().isdigit() and hi.strip().isdigit()):
                raise RuleError(f"status: cannot read range {shown(item)}")
            if not 100 <= int(lo) <= int(hi) <= 599:
                raise RuleError(f"status: range {shown(item)} must go upwards within 100-599")
            out |= _codes(int(lo), int(hi))
        else:
            raise RuleError(
                f"status: expected a code like 429, '5xx' or '500-504', got {shown(item)}"
            )
    return frozenset(out)


def _parse_cooldown(value: Any) -> Cooldown:
    if value in ("none", "backoff", "long"):
        return value  # type: ignore[no-any-return]  # narrowed by the membership test
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_SECONDS:
        return float(value)
    raise RuleError(
        "cooldown: expected 'none', 'backoff', 'long' or seconds from 0 to"
        f" {MAX_SECONDS:.0f} (one year), got {shown(value)}"
    )


def _parse_hint(hint: Any) -> str | None:
    if hint is None:
        return None
    if not isinstance(hint, str):
        raise RuleError(f"hint: expected a string, got {shown(hint)}")
    # The engine fills it in on failure: a bad placeholder must fail here, not there, and a
    # format spec such as {provider:>999999999} would build a gigabyte string.
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in Formatter().parse(hint)
            if name is not None
        ]
    except ValueError:
        fields = [("", "", None)]
    if any(field not in (("provider", "", None), ("key_fix", "", None)) for field in fields):
        raise RuleError(
            f"hint: {shown(hint)} may only use {{provider}} and {{key_fix}}"
            " (write {{{{ }}}} for literal braces)"
        )
    return hint


def parse_rule(raw: Mapping[str, Any], default_name: str) -> Rule:
    """Build a user rule from its TOML table; unknown keys are the caller's to report."""
    statuses = _parse_statuses(raw["status"]) if "status" in raw else None
    kinds = None
    if "kind" in raw:
        kind_list = raw["kind"] if isinstance(raw["kind"], list) else [raw["kind"]]
        bad = [k for k in kind_list if not isinstance(k, str) or k not in KINDS]
        if bad:
            raise RuleError(f"kind: unknown {shown(bad[0], 8)} (one of {', '.join(sorted(KINDS))})")
        kinds = frozenset(kind_list)
    codes = None
    if "code" in raw:
        code_list = raw["code"] if isinstance(raw["code"], list) else [raw["code"]]
        if not all(isinstance(c, str) for c in code_list):
            raise RuleError(
                f"code: expected a vendor error code or a list of them, got {shown(raw['code'])}"
            )
        codes = frozenset(c.lower() for c in code_list)
    action = raw.get("action", "failover")
    if action not in ("failover", "stop"):
        raise RuleError(f"action: expected 'failover' or 'stop', got {shown(action)}")
    for flag in ("retry", "retry_after"):
        if not isinstance(raw.get(flag, False), bool):
            raise RuleError(f"{flag}: expected true or false")
    if statuses is None and kinds is None and codes is None:
        raise RuleError("a rule needs at least one of status, kind or code to match on")
    name = raw.get("name", default_name)
    if not isinstance(name, str):
        raise RuleError(f"name: expected a string, got {shown(name)}")
    return Rule(
        name=name,
        statuses=statuses,
        kinds=kinds,
        codes=codes,
        action=action,
        cooldown=_parse_cooldown(raw.get("cooldown", "backoff")),
        retry=raw.get("retry", False),
        honor_retry_after=raw.get("retry_after", True),
        hint=_parse_hint(raw.get("hint")),
    )
