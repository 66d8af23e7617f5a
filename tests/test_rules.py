"""The decision table: which rule a failure hits, how long it cools the entry, whether it is
retried in place; user rules first; the backoff sequence and its overflow guard."""

from __future__ import annotations

import math
from typing import get_args

import pytest

from llm_cascade.errors import ErrorKind, ProviderError
from llm_cascade.rules import (
    BUILTIN_RULES,
    MAX_SECONDS,
    CooldownPolicy,
    Rule,
    decide,
    parse_rule,
)

POLICY = CooldownPolicy()


def http(status: int, code: str | None = None, retry_after_s: float | None = None) -> ProviderError:
    return ProviderError("http", "x", status=status, code=code, retry_after_s=retry_after_s)


def kind(name: ErrorKind) -> ProviderError:
    return ProviderError(name, "x")


@pytest.mark.parametrize(
    ("err", "provider_type", "rule", "cooldown_s", "retry"),
    [
        (http(429), "openai", "rate_limited", 30.0, True),
        (http(429, retry_after_s=45), "openai", "rate_limited", 45.0, True),
        (http(429, "insufficient_quota"), "openai", "quota_exhausted", 3600.0, False),
        (http(429, "INSUFFICIENT_QUOTA"), "openai", "quota_exhausted", 3600.0, False),
        (
            http(429, "enforced_spend_limit_reached"),
            "anthropic",
            "anthropic_spend_limit",
            3600.0,
            False,
        ),
        # The spend-limit code means nothing special from another vendor.
        (http(429, "enforced_spend_limit_reached"), "openai", "rate_limited", 30.0, True),
        (http(429, "ModelNotReadyException"), "bedrock", "model_not_ready", 30.0, True),
        (http(429, "ThrottlingException"), "bedrock", "rate_limited", 30.0, True),
        (
            http(400, "ServiceQuotaExceededException"),
            "bedrock",
            "bedrock_service_quota",
            30.0,
            False,
        ),
        (http(400, "ValidationException"), "bedrock", "caller_error", None, False),
        (http(424, "ModelErrorException"), "bedrock", "model_error", 30.0, False),
        (http(429, "trial_key_monthly_limit"), "cohere", "cohere_trial_limit", 3600.0, False),
        (http(429, "trial_key_monthly_limit"), "openai", "rate_limited", 30.0, True),
        (http(499), "cohere", "cohere_cancelled", 30.0, True),
        (http(499), "gemini", "client_error", None, False),
        # Azure's filter refused the prompt: the entry is fine, another vendor may answer.
        (http(400, "content_filter"), "azure", "content_filtered", None, False),
        (http(529), "anthropic", "overloaded", 30.0, True),
        (http(529, retry_after_s=12), "anthropic", "overloaded", 12.0, True),
        (http(503), "openai", "unavailable", 30.0, True),
        (http(503, retry_after_s=7), "openai", "unavailable", 7.0, True),
        (http(500), "openai", "server_error", 30.0, True),
        (http(500, retry_after_s=300), "openai", "server_error", 30.0, True),  # not honoured
        (http(502), "gemini", "server_error", 30.0, True),
        (http(504), "ollama", "server_error", 30.0, True),
        (http(599), "openai", "server_error", 30.0, True),
        (http(408), "openai", "request_timeout", 30.0, True),
        (http(409), "openai", "conflict", 30.0, True),
        (http(401), "openai", "auth", 3600.0, False),
        (http(403), "gemini", "auth", 3600.0, False),
        (http(402), "openai", "payment_required", 3600.0, False),
        (http(400), "openai", "caller_error", None, False),
        (http(404), "openai", "caller_error", None, False),
        (http(413), "anthropic", "caller_error", None, False),
        (http(422), "openai", "caller_error", None, False),
        (http(307), "openai", "redirect", None, False),
        (http(301), "openai", "redirect", None, False),
        (http(418), "openai", "client_error", None, False),
        (http(451), "openai", "client_error", None, False),
        (kind("timeout"), "openai", "timeout", 30.0, True),
        (kind("connect"), "openai", "connect", 30.0, True),
        (kind("transport"), "openai", "connect", 30.0, True),
        (kind("invalid_response"), "openai", "invalid_response", 30.0, False),
        (kind("empty_response"), "gemini", "empty_response", None, False),
        # Far past any real answer: a broken endpoint, cooled down; not asked again in place.
        (
            ProviderError("response_too_large", "x", status=200),
            "openai",
            "response_too_large",
            30.0,
            False,
        ),
        (kind("missing_key"), "openai", "missing_key", None, False),
        # A stream cut before its end marker: a broken connection, retried and backed off.
        (ProviderError("truncated", "x", status=200), "anthropic", "truncated", 30.0, True),
        (http(200), "openai", "other", 30.0, False),  # nothing else matches
    ],
)
def test_builtin_decision_table(err, provider_type, rule, cooldown_s, retry):
    chosen = decide(err, provider_type)
    assert chosen.name == rule
    assert chosen.cooldown_s(err, 1, POLICY) == cooldown_s
    assert chosen.retry is retry
    assert chosen.action == "failover"  # built-ins stop the cascade only when it was cancelled


def test_a_cancelled_attempt_stops_the_cascade_without_cooling_the_entry():
    # The caller gave up: that says nothing about the entry, and nobody waits for the next one.
    err = kind("cancelled")
    chosen = decide(err, "openai")
    assert (chosen.name, chosen.action, chosen.retry) == ("cancelled", "stop", False)
    assert chosen.cooldown_s(err, 3, POLICY) is None


def test_an_answer_that_is_not_the_json_asked_for_fails_over_without_a_cooldown():
    err = kind("invalid_output")
    chosen = decide(err, "openai")
    assert (chosen.name, chosen.action, chosen.retry) == ("invalid_output", "failover", False)
    assert chosen.cooldown_s(err, 1, POLICY) is None


@pytest.mark.parametrize("status", [400, 413])
def test_a_prompt_over_the_context_window_fails_over_under_its_own_rule(status):
    err = http(status, "context_length_exceeded")
    chosen = decide(err, "openai")
    assert (chosen.name, chosen.action) == ("context_length_exceeded", "failover")
    assert chosen.cooldown_s(err, 1, POLICY) is None


def test_every_error_kind_can_be_named_by_a_user_rule():
    for name in get_args(ErrorKind):
        assert parse_rule({"kind": name}, "r").kinds == frozenset({name})


def test_auth_and_missing_key_rules_say_how_to_fix_the_key():
    for err in (http(401), kind("missing_key")):
        hint = decide(err, "openai").hint
        assert hint is not None
        assert "{key_fix}" in hint  # keys.key_fix(): `key set` only when the keyring is on


def test_every_builtin_rule_is_reachable():
    # A rule shadowed by an earlier, broader one would be dead code in the table.
    samples = [
        (http(429, "enforced_spend_limit_reached"), "anthropic"),
        (http(429, "insufficient_quota"), "openai"),
        (http(429, "trial_key_monthly_limit"), "cohere"),
        (http(429, "ModelNotReadyException"), "bedrock"),
        (http(400, "ServiceQuotaExceededException"), "bedrock"),
        (http(424), "bedrock"),
        (http(429), "openai"),
        (http(499), "cohere"),
        (http(400, "content_filter"), "azure"),
        (http(529), "openai"),
        (http(503), "openai"),
        (http(500), "openai"),
        (http(408), "openai"),
        (http(409), "openai"),
        (http(401), "openai"),
        (http(402), "openai"),
        (http(400), "openai"),
        (http(302), "openai"),
        (http(418), "openai"),
        (kind("timeout"), "openai"),
        (kind("connect"), "openai"),
        (kind("invalid_response"), "openai"),
        (kind("empty_response"), "openai"),
        (kind("response_too_large"), "openai"),
        (kind("missing_key"), "openai"),
        (kind("truncated"), "openai"),
        (kind("cancelled"), "openai"),
        (kind("invalid_output"), "openai"),
        (http(400, "context_length_exceeded"), "openai"),
        (http(200), "openai"),
    ]
    assert {decide(err, t).name for err, t in samples} == {r.name for r in BUILTIN_RULES}


# --- user rules ------------------------------------------------------------------------------


def test_user_rules_come_before_the_builtins():
    mine = Rule("mine", statuses=frozenset({500}), cooldown=5.0, action="stop")
    chosen = decide(http(500), "openai", [mine])
    assert chosen is mine
    assert chosen.cooldown_s(http(500), 1, POLICY) == 5.0
    assert decide(http(502), "openai", [mine]).name == "server_error"  # no match: built-in


def test_provider_rules_come_before_global_rules():
    provider_rule = Rule("provider", statuses=frozenset({429}))
    global_rule = Rule("global", statuses=frozenset({429, 500}))
    assert decide(http(429), "openai", [provider_rule], [global_rule]) is provider_rule
    assert decide(http(500), "openai", [provider_rule], [global_rule]) is global_rule
    assert decide(http(503), "openai", [provider_rule], [global_rule]).name == "unavailable"


def test_within_one_list_the_first_match_wins():
    first = Rule("first", kinds=frozenset({"timeout"}))
    second = Rule("second", kinds=frozenset({"timeout"}), cooldown="none")
    assert decide(kind("timeout"), "openai", [first, second]) is first


def test_a_rule_matches_on_all_of_its_fields():
    rule = Rule(
        "quota",
        statuses=frozenset({429}),
        codes=frozenset({"quota_exceeded"}),
        provider_types=frozenset({"gemini"}),
    )
    assert rule.matches(http(429, "QUOTA_EXCEEDED"), "gemini")
    assert not rule.matches(http(429, "QUOTA_EXCEEDED"), "openai")
    assert not rule.matches(http(429, "other"), "gemini")
    assert not rule.matches(http(429), "gemini")
    assert not rule.matches(http(500, "quota_exceeded"), "gemini")


# --- cooldowns -------------------------------------------------------------------------------


def test_backoff_doubles_from_base_up_to_the_cap():
    assert [POLICY.backoff(level) for level in range(1, 11)] == [
        30.0,
        60.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1920.0,
        3600.0,
        3600.0,
        3600.0,
    ]


@pytest.mark.parametrize("level", [0, -1, -(10**9)])
def test_backoff_below_level_one_is_the_base(level):
    assert POLICY.backoff(level) == 30.0


@pytest.mark.parametrize("level", [64, 1025, 10**6, 10**18])
def test_backoff_exponent_is_guarded_against_overflow(level):
    assert POLICY.backoff(level) == 3600.0
    unbounded = CooldownPolicy(base_s=1.0, cap_s=math.inf)
    assert math.isfinite(unbounded.backoff(level))


def test_custom_policy_constants_are_used():
    policy = CooldownPolicy(base_s=5.0, cap_s=15.0, long_s=99.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 15.0, 15.0]
    assert decide(http(401), "openai").cooldown_s(http(401), 1, policy) == 99.0


@pytest.mark.parametrize(
    ("retry_after_s", "expected"),
    [(0.0, 0.0), (2.5, 2.5), (-30.0, 0.0), (3600.0, 3600.0), (1e20, 3600.0), (math.inf, 3600.0)],
)
def test_a_honoured_retry_after_is_clamped_to_zero_and_the_cap(retry_after_s, expected):
    err = http(429, retry_after_s=retry_after_s)
    assert decide(err, "openai").cooldown_s(err, 5, POLICY) == expected


def test_a_honoured_retry_after_replaces_the_escalated_backoff():
    err = http(429, retry_after_s=10)
    assert decide(err, "openai").cooldown_s(err, 6, POLICY) == 10.0
    without = http(429)
    assert decide(without, "openai").cooldown_s(without, 6, POLICY) == 960.0


def test_fixed_and_long_cooldowns_ignore_the_level():
    fixed = Rule("fixed", statuses=frozenset({500}), cooldown=5.0)
    assert [fixed.cooldown_s(http(500), n, POLICY) for n in (1, 9)] == [5.0, 5.0]
    long = decide(http(402), "openai")
    assert [long.cooldown_s(http(402), n, POLICY) for n in (1, 9)] == [3600.0, 3600.0]


@pytest.mark.parametrize(
    "rule",
    [
        Rule("fixed", statuses=frozenset({500}), cooldown=1e300),
        Rule("long", statuses=frozenset({500}), cooldown="long"),
        Rule("backoff", statuses=frozenset({500}), cooldown="backoff"),
    ],
)
def test_no_cooldown_exceeds_the_maximum_even_if_the_config_check_is_bypassed(rule):
    huge = CooldownPolicy(base_s=1e300, cap_s=1e300, long_s=1e300)
    seconds = rule.cooldown_s(http(500), 3, huge)
    assert seconds == MAX_SECONDS
