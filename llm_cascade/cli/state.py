"""`status`, `log` and `reset`: the shared state made visible (cooldowns and attempts)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ._common import ConfigOption, JsonOption, format_table, say


def _load(config_path: Any) -> tuple[Any, Any]:
    from ..config import load_config
    from ..store import Store

    config = load_config(config_path)
    store = Store(config.database_path) if config.database_path.exists() else None
    return config, store


def _state_name(state: Any, now: float) -> str:
    if state.is_cooling(now):
        return "open"
    if state.is_half_open(now):
        return "probing" if state.probe_in_flight(now) else "half-open"
    return "closed"


def status(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Show each entry's breaker: closed, open (cooling down), half-open or probing."""
    import time

    from ..clock import format_human
    from ..store import EntryState

    app_config, store = _load(config)
    now = time.time()
    keys = [e.key for c in app_config.cascades.values() for e in c.entries]
    found = {s.key: s for s in store.all_states()} if store else {}
    ordered = list(dict.fromkeys([*keys, *found]))
    states = [found.get(k, EntryState(k)) for k in ordered]
    if json_output:
        data = [
            {
                "entry": s.key,
                "state": _state_name(s, now),
                "cooldown_until": s.cooldown_until,
                "retry_after": max(s.cooldown_until - now, 0)
                if s.is_cooling(now) and s.cooldown_until
                else None,
                "failures": s.failures,
                "reason": s.reason,
                "in_config": s.key in keys,
            }
            for s in states
        ]
        print(json.dumps(data, indent=2))
        return
    rows = []
    for s in states:
        until = format_human(s.cooldown_until) if s.is_cooling(now) and s.cooldown_until else "-"
        rows.append([s.key, _state_name(s, now), until, str(s.failures), s.reason or "-"])
    print(format_table(["ENTRY", "STATE", "UNTIL", "FAILURES", "REASON"], rows))
    if store is None:
        say(f"(no database yet at {app_config.database_path})")


def log(
    config: ConfigOption = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="How many rows.", min=1, max=1_000_000_000)
    ] = 20,
    cascade: Annotated[
        str | None, typer.Option("--cascade", "-C", help="Only this cascade.")
    ] = None,
    json_output: JsonOption = False,
    prune: Annotated[
        float | None,
        typer.Option(
            "--prune", metavar="DAYS", help="Instead, delete rows older than DAYS.", min=0
        ),
    ] = None,
) -> None:
    """Show the newest attempts from the attempt log (every try, skip and failure)."""
    if prune is not None and not 0 <= prune <= 100_000:  # also nan and inf
        from ..errors import UsageError

        raise UsageError(f"--prune: DAYS must be a number from 0 to 100000, got {prune}")
    store = _load(config)[1]
    if prune is not None:
        import time

        count = store.prune(time.time() - prune * 86400) if store else 0
        say(f"Deleted {count} attempt row{'s' if count != 1 else ''} older than {prune:g} days.")
        return
    rows = store.recent_attempts(limit, cascade) if store else []
    if json_output:
        print(json.dumps(rows, indent=2))
        return
    table = [
        [
            str(r["timestamp"])[:19].replace("T", " "),
            r["cascade_name"],
            r["provider_model"],
            r.get("outcome") or ("ok" if r["http_status"] and r["http_status"] < 400 else "failed"),
            str(r["http_status"] or "-"),
            str(r["latency_ms"]),
            r.get("rule") or "-",
            _short(r.get("error_message")),
        ]
        for r in rows
    ]
    headers = ["TIME (UTC)", "CASCADE", "ENTRY", "OUTCOME", "STATUS", "MS", "RULE", "DETAIL"]
    sys.stdout.write(format_table(headers, table, min_width=2) + "\n")


def _short(value: Any, width: int = 60) -> str:
    """One cell of text; rows the original tool wrote may hold a provider's raw escapes."""
    from ..untrusted import escape_controls

    text = escape_controls(" ".join(str(value or "-").split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def reset(
    entries: Annotated[
        list[str] | None, typer.Argument(help="Entry keys (provider/model).")
    ] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Reset every entry.")] = False,
    config: ConfigOption = None,
) -> None:
    """Close breakers by hand: forget the cooldowns of ENTRIES (or --all)."""
    from ..errors import UsageError

    if not entries and not all_entries:
        raise UsageError("name the entries to reset (provider/model) or pass --all")
    store = _load(config)[1]
    if store is None:
        say("Nothing to reset: no database yet.")
        return
    with store:
        count = store.clear_cooldowns(None if all_entries else entries)
    say(f"Reset {count} entr{'y' if count == 1 else 'ies'}.")
