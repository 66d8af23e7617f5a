"""`health`, `stats` and `metrics`: what an operator asks of the shared state."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import (
    ConfigOption,
    JsonOption,
    LocalOption,
    complete_cascades,
    echo,
    format_table,
    say,
)

if TYPE_CHECKING:
    from ..health import ProbeResult
    from ..stats import CascadeStats, HostsReport, StatsReport

CascadeOption = Annotated[
    str | None,
    typer.Option(
        "--cascade",
        "-C",
        help="Only this cascade.",
        show_default=False,
        autocompletion=complete_cascades,
    ),
]


def health(
    cascade: CascadeOption = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Ask each entry for one token instead of its model.")
    ] = False,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Let the verdicts move the breakers: a failure cools the entry down, a good"
            " probe closes a half-open breaker.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds for all probes together.", min=0.1, max=3600),
    ] = 10.0,
    slow: Annotated[
        float,
        typer.Option("--slow", help="An answer slower than this many seconds is slow.", min=0),
    ] = 5.0,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Probe every entry at once (its model listing, or --deep a one-token answer).

    Exit 0 when every probed entry is healthy, 1 when one is not, 2 for usage errors.
    """
    from ..config import load_config
    from ..errors import UsageError
    from ..health import HealthOptions, check

    if not 0.1 <= timeout <= 3600:  # also nan, which passes typer's range check
        raise UsageError(f"--timeout: expected seconds from 0.1 to 3600, got {timeout}")
    if not 0 <= slow <= 3600:
        raise UsageError(f"--slow: expected seconds from 0 to 3600, got {slow}")
    options = HealthOptions(deep=deep, update=update, timeout_s=timeout, slow_s=slow)
    app_config = load_config(config)
    results = check(app_config, cascade, options)
    if json_output:
        echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        echo(_health_table(results))
    if app_config.state.shared:
        from ..breakers import backend_status

        state = backend_status(app_config)
        health = "reachable" if state.reachable else f"unreachable: {state.detail}"
        say(f"State backend: {state.backend} at {state.where}: {health}")
    if app_config.log.shared:
        from ..breakers import log_status

        log = log_status(app_config)
        health = "reachable" if log.reachable else f"unreachable: {log.detail}"
        say(f"Attempt log backend: {log.backend} at {log.where}: {health}")
    if not all(r.healthy for r in results):
        raise typer.Exit(1)


def _health_table(results: list[ProbeResult]) -> str:
    from ..text import shorten

    rows = [
        [r.entry, r.verdict, str(r.latency_ms) if r.latency_ms else "-", shorten(r.reason, 100)]
        for r in results
    ]
    return format_table(["ENTRY", "VERDICT", "MS", "REASON"], rows, min_width=2)


def stats(
    since: Annotated[
        str,
        typer.Option("--since", help="Window: a span (90m, 24h, 7d, 2w) or a date (2026-01-31)."),
    ] = "24h",
    cascade: CascadeOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    local: LocalOption = False,
    by_host: Annotated[
        bool,
        typer.Option(
            "--by-host", help='Each host apart, from the fleet\'s log ([log] backend = "postgres").'
        ),
    ] = False,
) -> None:
    """Per entry over a window: attempts, success rate, failovers, latency, tokens, cooldowns."""
    import time

    from ..config import load_config
    from ..stats import collect, collect_by_host, parse_since

    now = time.time()
    start = parse_since(since, now)
    app_config = load_config(config)
    if by_host:
        hosts = collect_by_host(app_config, start, now, cascade, local=local)
        echo(json.dumps(hosts.to_dict(), indent=2) if json_output else _hosts_text(hosts))
        return
    report = collect(app_config, start, now, cascade, local=local)
    if json_output:
        echo(json.dumps(report.to_dict(), indent=2))
        return
    echo(_stats_text(report))
    if not report.has_database:
        say(f"(no database yet at {app_config.database_path})")


def _ms(value: float | None) -> str:
    return "-" if value is None else str(math.ceil(value))


def _percent(part: int, whole: int) -> str:
    return "-" if not whole else f"{100 * part / whole:.1f}%"


def _since_line(since: float) -> str:
    from ..clock import format_human

    return f"Since {format_human(since)} (whole UTC hours), until now."


def _stats_text(report: StatsReport) -> str:
    blocks = [_since_line(report.since)]
    for cascade in report.cascades:
        blocks.append(_cascade_text(cascade, report.has_ttft, report.has_cost))
    return "\n\n".join(blocks)


def _hosts_text(report: HostsReport) -> str:
    """Each host's cascades, as `_stats_text` shows the fleet's (the same columns for all)."""
    ttft = any(part.has_ttft for _, part in report.hosts)
    cost = any(part.has_cost for _, part in report.hosts)
    blocks = [_since_line(report.since)]
    for host, part in report.hosts:
        blocks.append(f"Host {host or '(unknown: counted before hosts were kept apart)'}")
        blocks += [_cascade_text(cascade, ttft, cost) for cascade in part.cascades]
    if not report.hosts:
        blocks.append("No host logged an attempt in this window.")
    return "\n\n".join(blocks)


def _cascade_text(cascade: CascadeStats, ttft: bool, cost: bool = False) -> str:
    headers = ["ENTRY", "STATE", "ATTEMPTS", "OK", "FAILOVERS", "P50 MS", "P95 MS", "P99 MS"]
    headers += ["TTFT P50", "TTFT P95"] if ttft else []
    headers += ["TOKENS IN", "TOKENS OUT", "COOLDOWNS"]
    headers += ["COST"] if cost else []
    rows = []
    for e in cascade.entries:
        row = [
            e.entry if e.in_config else f"{e.entry} (not in config)",
            e.state,
            str(e.attempts),
            _percent(e.successes, e.attempts),
            str(e.failovers),
            *(_ms(e.latency_ms.get(p)) for p in ("p50", "p95", "p99")),
        ]
        row += [_ms(e.ttft_ms.get(p)) for p in ("p50", "p95")] if ttft else []
        row += [str(e.input_tokens), str(e.output_tokens), str(e.cooldowns)]
        row += ["-" if e.cost is None else f"{e.cost:.6g}"] if cost else []  # cents to micros
        rows.append(row)
    title = f"Cascade {cascade.name}" + ("" if cascade.in_config else " (not in config)")
    summary = (
        f"runs {cascade.runs}: answered by the first entry {cascade.first_answered}"
        f" ({_percent(cascade.first_answered, cascade.runs)}), failed {cascade.failed}"
        f" ({_percent(cascade.failed, cascade.runs)})"
    )
    return "\n".join([title, format_table(headers, rows, min_width=2), summary])


def metrics(
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile",
            metavar="PATH",
            help="Write to PATH atomically (node_exporter's textfile collector) instead of stdout.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    local: LocalOption = False,
) -> None:
    """Print the Prometheus text exposition: counters, breaker gauges, latency histograms."""
    import time

    from ..config import load_config
    from ..metrics import render, write_textfile

    text = render(load_config(config), time.time(), local=local)
    if textfile is None:
        echo(text.rstrip("\n"))
        return
    write_textfile(textfile, text)
