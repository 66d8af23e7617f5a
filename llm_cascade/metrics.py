"""Prometheus text exposition of the shared state: `llm-cascade metrics` and a gateway's
`/metrics` render it with `render()`.

Counters come from the all-time aggregates (`rollup.py`), so they only grow while the log is
pruned; gauges from the breakers and the failed-prompts folder. Names follow the
OpenTelemetry GenAI conventions where they have one (`gen_ai_client_operation_duration_seconds`,
`gen_ai_client_token_usage`, with `gen_ai_*` labels), ours are prefixed `llm_cascade_`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import files, rollup
from .config import AppConfig
from .errors import LlmCascadeError
from .failures import FailureStore
from .logsource import log_source
from .state import opened
from .store import EntryState
from .telemetry import GEN_AI_PROVIDER

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# gen_ai.client.operation.duration's advised bounds, in seconds; each is a bound of MS_BOUNDS.
DURATION_BOUNDS_S: tuple[float, ...] = tuple(0.01 * 2**k for k in range(14))  # 0.01 … 81.92
BREAKER_VALUE = {"closed": 0, "half-open": 1, "probing": 1, "open": 2}

Labels = dict[str, str]


@dataclass
class _Family:
    name: str
    kind: str  # counter, gauge or histogram
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, labels: Labels, value: float, suffix: str = "") -> None:
        self.samples.append((suffix, labels, value))

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [
            f"{self.name}{suffix}{_labels(labels)} {_number(value)}"
            for suffix, labels, value in self.samples
        ]
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    shown = [f'{k}="{_escape(v)}"' for k, v in labels.items() if v != ""]
    return "{" + ",".join(shown) + "}" if shown else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Entries:
    """Labels of an entry key `provider/model`, with what the config says of its provider."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config

    def labels(self, key: str, cascade: str | None = None) -> Labels:
        provider, _, model = key.partition("/")
        out = {"cascade": cascade} if cascade is not None else {}
        return {**out, "provider": provider, "model": model}

    def gen_ai(self, key: str, cascade: str) -> Labels:
        provider, _, model = key.partition("/")
        configured = self.config.providers.get(provider)
        return {
            **self.labels(key, cascade),
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": GEN_AI_PROVIDER.get(configured.type, "") if configured else "",
            "gen_ai_request_model": model,
        }


def render(config: AppConfig, now: float, *, local: bool = False) -> str:
    """Every metric of the attempt log (the fleet's when `[log]` puts it on PostgreSQL, unless
    `local`), the breakers and the failed-prompts folder, in the text format."""
    with opened(config) as store, log_source(config, store, local=local) as log:
        counted = log.counts()
        histograms = log.histograms()
        states: dict[str, EntryState] = (
            {} if store is None else {s.key: s for s in store.all_states()}
        )
    entries = _Entries(config)
    families = [
        *_counters(entries, counted),
        *_histograms(entries, histograms),
        *_gauges(entries, config, states, now),
    ]
    return "\n".join(line for f in families if f.samples for line in f.render()) + "\n"


def _counters(entries: _Entries, counted: list[rollup.Counts]) -> list[_Family]:
    attempts = _Family(
        "llm_cascade_attempts_total",
        "counter",
        "Attempt log rows by outcome (ok, failed, retrying, skipped, missing_key, deadline,"
        " probe) and the rule that decided a failure.",
    )
    tokens = _Family("llm_cascade_tokens_total", "counter", "Tokens reported by providers.")
    cooldowns = _Family(
        "llm_cascade_cooldowns_total", "counter", "Failures that put the entry on cooldown."
    )
    failovers = _Family(
        "llm_cascade_failovers_total",
        "counter",
        "Failures after which the run went on to the next entry.",
    )
    runs = _Family("llm_cascade_runs_total", "counter", "Cascade runs started.")
    answered = _Family("llm_cascade_runs_answered_total", "counter", "Cascade runs answered.")
    first = _Family(
        "llm_cascade_runs_answered_by_first_entry_total",
        "counter",
        "Cascade runs answered by the first entry.",
    )
    per_cascade: dict[str, list[int]] = {}
    token_sums: dict[tuple[str, str], list[int]] = {}
    for c in counted:
        labels = entries.labels(c.entry, c.cascade)
        attempts.add({**labels, "outcome": c.outcome, "rule": c.rule}, c.attempts)
        if c.cooldowns:
            cooldowns.add({**labels, "rule": c.rule}, c.cooldowns)
        if c.failovers:
            failovers.add({**labels, "rule": c.rule}, c.failovers)
        sums = token_sums.setdefault((c.cascade, c.entry), [0, 0])
        sums[0] += c.input_tokens
        sums[1] += c.output_tokens
        totals = per_cascade.setdefault(c.cascade, [0, 0, 0])
        totals[0] += c.runs
        totals[1] += c.answered_runs
        totals[2] += c.first_answered
    for (cascade, key), (tokens_in, tokens_out) in token_sums.items():
        if tokens_in or tokens_out:
            tokens.add({**entries.labels(key, cascade), "type": "input"}, tokens_in)
            tokens.add({**entries.labels(key, cascade), "type": "output"}, tokens_out)
    for cascade, (started, done, by_first) in per_cascade.items():
        if started:
            runs.add({"cascade": cascade}, started)
            answered.add({"cascade": cascade}, done)
            first.add({"cascade": cascade}, by_first)
    return [attempts, tokens, cooldowns, failovers, runs, answered, first]


def _histograms(
    entries: _Entries, histograms: Mapping[tuple[str, str, str, str], rollup.Histogram]
) -> list[_Family]:
    duration = _Family(
        "gen_ai_client_operation_duration_seconds",
        "histogram",
        "Duration of requests to providers, failed ones with error_type (the rule).",
    )
    usage = _Family(
        "gen_ai_client_token_usage", "histogram", "Tokens per answered request, by token type."
    )
    ttft = _Family(
        "llm_cascade_time_to_first_token_seconds",
        "histogram",
        "Time to the first content event of streamed answers.",
    )
    ms_bounds = [(round(b, 2), round(b * 1000)) for b in DURATION_BOUNDS_S]
    token_bounds = [(float(b), b) for b in rollup.TOKEN_BOUNDS[:-1]]
    for (cascade, key, metric, error), histogram in sorted(histograms.items()):
        gen_ai = entries.gen_ai(key, cascade)
        if metric == "duration":
            _observe(duration, {**gen_ai, "error_type": error}, histogram, ms_bounds, 1000)
        elif metric == "ttft":
            _observe(ttft, entries.labels(key, cascade), histogram, ms_bounds, 1000)
        else:
            labels = {**gen_ai, "gen_ai_token_type": metric.removesuffix("_tokens")}
            _observe(usage, labels, histogram, token_bounds, 1)
    return [duration, usage, ttft]


def _observe(
    family: _Family,
    labels: Labels,
    histogram: rollup.Histogram,
    bounds: Iterable[tuple[float, int]],
    unit: int,
) -> None:
    """Cumulative `le` buckets at `bounds` (shown, raw), then +Inf, sum and count."""
    scheme = rollup.MS_BOUNDS if unit == 1000 else rollup.TOKEN_BOUNDS
    for shown, raw in bounds:
        below = sum(n for i, n in histogram.buckets.items() if scheme[i] <= raw)
        family.add({**labels, "le": _number(shown)}, below, "_bucket")
    family.add({**labels, "le": "+Inf"}, histogram.count, "_bucket")
    family.add(labels, histogram.total / unit, "_sum")
    family.add(labels, histogram.count, "_count")


def _gauges(
    entries: _Entries, config: AppConfig, states: Mapping[str, EntryState], now: float
) -> list[_Family]:
    breaker = _Family(
        "llm_cascade_breaker_state",
        "gauge",
        "Breaker of each entry: 0 closed, 1 half-open (or probing), 2 open (cooling down).",
    )
    remaining = _Family(
        "llm_cascade_cooldown_remaining_seconds",
        "gauge",
        "Seconds until the entry's cooldown ends (0 when it is not cooling down).",
    )
    failures = _Family(
        "llm_cascade_consecutive_failures",
        "gauge",
        "Failures of the entry since its last success (the backoff level).",
    )
    pending = _Family(
        "llm_cascade_failed_prompts_pending",
        "gauge",
        "Saved prompts waiting for `llm-cascade failed retry`.",
    )
    configured = (e.key for c in config.cascades.values() for e in c.entries)
    for key in dict.fromkeys([*configured, *sorted(states)]):
        state = states.get(key, EntryState(key))
        labels = entries.labels(key)
        breaker.add(labels, BREAKER_VALUE[state.phase(now)])
        remaining.add(labels, round(state.retry_after(now) or 0.0, 3))
        failures.add(labels, state.failures)
    pending.add({}, FailureStore(config.failure_dir).count_waiting())
    return [breaker, remaining, failures, pending]


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (node_exporter must never read half a file),
    readable by all: the collector usually runs as another user, and nothing here is secret.
    On failure the old file is left as it was."""
    try:
        files.replace_file(path, text.encode(), mode=0o644)
    except OSError as exc:
        raise LlmCascadeError(
            f"cannot write the metrics to '{path}': {exc.strerror or exc}"
        ) from None
