"""What happens around one attempt, as pure functions beside the rules.

The engine's loop reads send -> decide -> journal -> wait; the numbers it needs for that
(how long this attempt may take, how long a probe's lease lasts, whether and how long to wait
before trying again, what to do when a stream breaks after output) are decided here, from the
entry's options and the facts at hand, with no I/O and no clock of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .config import CascadeEntry, Options, ProviderConfig
from .errors import ProviderError
from .providers.base import Budget, CallOptions
from .results import RunOptions
from .rules import Rule
from .types import Conversation, OutputFormat

Midstream = Literal["restart", "continue", "fail"]
MIDSTREAM_POLICIES: tuple[Midstream, ...] = ("restart", "continue", "fail")
PROBE_LEASE_SLACK_S = 5.0
DEADLINE_SLACK_S = 0.05  # timers fire a little early or late; this close to the end, it is spent


def call_options(
    entry: CascadeEntry,
    provider: ProviderConfig,
    api_key: str | None,
    run: RunOptions | None = None,
    *,
    output: OutputFormat | None = None,
    region: str | None = None,
) -> CallOptions:
    """What one request to this entry carries besides the conversation.

    A run may bring the caller's own `max_tokens`/`temperature` (the gateway's clients do),
    which win over the entry's, and vendor headers to pass on to entries of that type.
    """
    opts = entry.options
    run = run or RunOptions()
    return CallOptions(
        model=entry.model,
        base_url=provider.effective_base_url,
        api_key=api_key,
        max_tokens=run.max_tokens if run.max_tokens is not None else opts.max_tokens,
        temperature=run.temperature if run.temperature is not None else opts.temperature,
        extra=opts.extra,
        headers=opts.headers,
        max_response_bytes=opts.max_response_bytes,
        stream_usage=opts.stream_usage,
        passed_headers=run.vendor_headers.get(provider.type, {}),
        output=output,
        api_version=provider.api_version,
        region=region or provider.region,
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
    policy: Midstream, *, next_accepts_prefill: bool, continuable: bool
) -> Midstream:
    """What to do when a stream breaks after output reached the caller.

    `continue` hands the partial text to the next entry as an assistant prefill; it needs an
    entry that accepts one, and a partial answer that can be continued: not a tool call cut
    in half (its arguments could not be continued reliably), not a JSON document (another
    model finishing it would be a guess, and one that failed its check must be thrown away),
    so those restart instead.
    """
    if policy == "continue" and (not continuable or not next_accepts_prefill):
        return "restart"
    return policy


# --- can this entry serve this request? ----------------------------------------------------

BYTES_PER_TOKEN = 4  # English averages about 4 characters a token; other scripts take more
CAPABILITY_TEXT = {
    "tools": "tool use",
    "json": "JSON output",
    "schema": "structured output (a JSON Schema)",
    "vision": "images",
    "stream": "streaming",
    "prefill": "prefills",
}


@dataclass(frozen=True, slots=True)
class Needs:
    """What a request asks of an entry: capabilities, and its estimated size in tokens."""

    capabilities: frozenset[str]
    tokens: int


def estimate_tokens(conversation: Conversation) -> int:
    """A cheap estimate of the tokens a request takes: the UTF-8 bytes of its text (messages,
    tool calls, tool definitions, schema) over 4, rounded up.

    It errs low for most text (English is ~4 bytes a token; code and other scripts give more
    tokens a byte), so an entry is skipped only when the prompt is clearly too large for it;
    a vendor that still finds it too long answers 400 and the next entry is tried.
    """
    size = 0
    for msg in conversation.messages:
        size += len(msg.text.encode("utf-8", "surrogatepass"))
        size += sum(
            len(c.name) + len(c.arguments.encode("utf-8", "surrogatepass")) for c in msg.tool_calls
        )
    extras: list[object] = [t.to_dict() for t in conversation.tools or ()]
    if conversation.output is not None and conversation.output.schema is not None:
        extras.append(conversation.output.schema)
    if extras:
        size += len(json.dumps(extras, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return -(-size // BYTES_PER_TOKEN)


def needs_of(conversation: Conversation) -> Needs:
    """The capabilities a request needs (tools given, JSON or a schema asked for) and its size."""
    wanted = set()
    if conversation.tools:
        wanted.add("tools")
    if conversation.output is not None:
        wanted.add(conversation.output.capability)
    return Needs(frozenset(wanted), estimate_tokens(conversation))


def unfit(opts: Options, needs: Needs) -> str | None:
    """Why an entry cannot serve this request (a capability it lacks, a prompt over its
    context window with room for `max_tokens`), or None if it can."""
    missing = sorted(needs.capabilities - opts.supports)
    if missing:
        return f"does not support {' or '.join(CAPABILITY_TEXT[c] for c in missing)}"
    if opts.context_window is not None:
        wanted = needs.tokens + (opts.max_tokens or 0)
        if wanted > opts.context_window:
            room = f" plus max_tokens {opts.max_tokens}" if opts.max_tokens else ""
            return (
                f"the prompt (about {needs.tokens} tokens{room}) is over its context window"
                f" ({opts.context_window} tokens)"
            )
    return None


def none_can_serve(cascade: str, reasons: Iterable[tuple[str, str]]) -> str:
    """The error when no entry of a cascade can serve the request: what was missing where."""
    listed = list(reasons)
    distinct = {reason for _, reason in listed}
    lacks = "does not support "
    if len(distinct) == 1 and (only := distinct.pop()).startswith(lacks):
        why = f"no entry supports {only.removeprefix(lacks)}"
    elif len(listed) > 1 and len(distinct) == 1:
        why = f"every entry: {only}"
    else:
        why = "; ".join(f"{key}: {reason}" for key, reason in listed)
    return f"cascade '{cascade}' cannot serve this request, nothing was sent: {why}"
