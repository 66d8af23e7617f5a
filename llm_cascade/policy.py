"""What happens around one attempt, as pure functions beside the rules.

The engine's loop reads send -> decide -> journal -> wait; the numbers it needs for that
(how long this attempt may take, how long a probe's lease lasts, whether and how long to wait
before trying again, what to do when a stream breaks after output) are decided here, from the
entry's options and the facts at hand, with no I/O and no clock of their own.
"""

from __future__ import annotations

from typing import Literal

from .config import CascadeEntry, Options, ProviderConfig
from .errors import ProviderError
from .providers.base import Budget, CallOptions
from .rules import Rule

Midstream = Literal["restart", "continue", "fail"]
MIDSTREAM_POLICIES: tuple[Midstream, ...] = ("restart", "continue", "fail")
PROBE_LEASE_SLACK_S = 5.0
DEADLINE_SLACK_S = 0.05  # timers fire a little early or late; this close to the end, it is spent


def call_options(entry: CascadeEntry, provider: ProviderConfig, api_key: str | None) -> CallOptions:
    """What one request to this entry carries besides the conversation."""
    opts = entry.options
    return CallOptions(
        model=entry.model,
        base_url=provider.effective_base_url,
        api_key=api_key,
        max_tokens=opts.max_tokens,
        temperature=opts.temperature,
        extra=opts.extra,
        headers=opts.headers,
        max_response_bytes=opts.max_response_bytes,
        stream_usage=opts.stream_usage,
    )


def attempt_budget(opts: Options, remaining: float | None) -> Budget:
    """The time limits of one request: the entry's own, cut to what the deadline leaves."""
    total = opts.timeout if remaining is None else min(opts.timeout, remaining)
    return Budget(
        total=total,
        connect=min(opts.connect_timeout, total),
        first_byte=min(opts.first_byte_timeout or total, total),
        idle=min(opts.idle_timeout, total),
    )


def probe_lease_s(opts: Options) -> float:
    """How long a half-open probe may hold the entry: every try, every wait, and some slack.

    Past it, another process may probe; so it must outlast the probe's longest honest run.
    """
    return (opts.retries + 1) * opts.timeout + opts.retries * opts.max_wait + PROBE_LEASE_SLACK_S


def retry_delay(
    rule: Rule,
    err: ProviderError,
    try_number: int,
    opts: Options,
    *,
    jitter: float,
    remaining: float | None,
) -> float | None:
    """Seconds to wait before trying the same entry again, or None to move on.

    Exponential from 0.5 s, capped at `max_wait`, at 75-100 % (`jitter` in [0, 1)) as the
    vendor SDKs do. A Retry-After the rule honours replaces it; one longer than `max_wait`
    fails over at once rather than parking the run. No wait may outlast the deadline.
    """
    if not rule.retry or try_number > opts.retries:
        return None
    wait: float = min(0.5 * 2 ** (try_number - 1), opts.max_wait) * (0.75 + 0.25 * jitter)
    if rule.honor_retry_after and err.retry_after_s is not None:
        if err.retry_after_s > opts.max_wait:
            return None
        wait = max(err.retry_after_s, 0.0)
    if remaining is not None and wait >= remaining:
        return None
    return wait


def cut_by_deadline(
    err: ProviderError, budget: Budget, opts: Options, remaining: float | None
) -> bool:
    """A timeout that was the cascade's deadline running out, not the entry's own limit.

    Such a timeout is no fault of the provider: it sets no cooldown and ends the run.
    """
    return (
        err.kind == "timeout"
        and budget.total < opts.timeout
        and remaining is not None
        and remaining <= DEADLINE_SLACK_S
    )


def midstream_mode(
    policy: Midstream, *, next_accepts_prefill: bool, has_tool_calls: bool
) -> Midstream:
    """What to do when a stream breaks after output reached the caller.

    `continue` hands the partial text to the next entry as an assistant prefill; it needs an
    entry that accepts one, and never applies to a tool call cut in half (its arguments could
    not be continued reliably), so those restart instead.
    """
    if policy == "continue" and (has_tool_calls or not next_accepts_prefill):
        return "restart"
    return policy
