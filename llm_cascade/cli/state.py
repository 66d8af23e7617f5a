"""`status`, `log` and `reset`: the shared state made visible (cooldowns and attempts)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..text import shorten
from ..untrusted import escape_controls
from ._common import (
    ConfigOption,
    JsonOption,
    complete_cascades,
    complete_entries,
    echo,
    format_table,
    say,
)


def status(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Show each entry's breaker: closed, open (cooling down), half-open or probing."""
    import time

    from ..clock import format_human
    from ..config import load_config
    from ..state import entry_views, has_database

    app_config = load_config(config)
    views = entry_views(app_config, time.time())
    if json_output:
        echo(json.dumps([v.to_dict() for v in views], indent=2))
        return
    if not views:
        say("no entries yet: the config defines no cascades")
        return
    rows = []
    for v in views:
        s = v.state
        until = format_human(s.cooldown_until) if v.retry_after and s.cooldown_until else "-"
        rows.append([v.key, v.phase, until, str(s.failures), s.reason or "-"])
    echo(format_table(["ENTRY", "STATE", "UNTIL", "FAILURES", "REASON"], rows))
    if not has_database(app_config):
        say(f"(no database yet at {app_config.database_path})")


def log(
    config: ConfigOption = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="How many rows.", min=1, max=1_000_000_000)
    ] = 20,
    cascade: Annotated[
        str | None,
        typer.Option(
            "--cascade", "-C", help="Only this cascade.", autocompletion=complete_cascades
        ),
    ] = None,
    json_output: JsonOption = False,
    prune: Annotated[
        float | None,
        typer.Option(
            "--prune", metavar="DAYS", help="Instead, delete rows older than DAYS.", min=0
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="With --prune: this host's log only, not also the fleet's"
            ' ([log] backend = "postgres").',
        ),
    ] = False,
) -> None:
    """Show the newest attempts from the attempt log (every try, skip and failure)."""
    if prune is not None and not 0 <= prune <= 100_000:  # also nan and inf
        from ..errors import UsageError

        raise UsageError(f"--prune: DAYS must be a number from 0 to 100000, got {prune}")
    from ..config import load_config
    from ..state import prune_log, recent_attempts

    app_config = load_config(config)
    if prune is not None:
        import time

        pruned = prune_log(app_config, prune, time.time(), local=local)
        count, fleet = pruned.local, pruned.fleet
        deleted = f"{count} attempt row{'s' if count != 1 else ''}"
        also = "" if fleet is None else f", and {fleet} from the fleet's log,"
        say(f"Deleted {deleted}{also} older than {prune:g} days.")
        return
    rows = recent_attempts(app_config, limit, cascade)
    if json_output:
        echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        say(f"no attempts yet{f' for cascade {cascade!r}' if cascade else ''}")
        return
    table = [
        [
            str(r.timestamp)[:19].replace("T", " "),
            r.cascade_name,
            r.provider_model,
            r.outcome,
            str(r.http_status or "-"),
            str(r.latency_ms),
            r.rule or "-",
            shorten(escape_controls(" ".join((r.error_message or "-").split())), 60),
        ]
        for r in rows
    ]
    headers = ["TIME (UTC)", "CASCADE", "ENTRY", "OUTCOME", "STATUS", "MS", "RULE", "DETAIL"]
    echo(format_table(headers, table, min_width=2))


def reset(
    entries: Annotated[
        list[str] | None,
        typer.Argument(help="Entry keys (provider/model).", autocompletion=complete_entries),
    ] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Reset every entry.")] = False,
    config: ConfigOption = None,
) -> None:
    """Close breakers by hand: forget the cooldowns of ENTRIES (or --all)."""
    from ..errors import UsageError

    if not entries and not all_entries:
        raise UsageError("name the entries to reset (provider/model) or pass --all")
    from ..config import load_config
    from ..state import reset_entries

    count = reset_entries(load_config(config), None if all_entries else entries)
    if count is None:
        say("Nothing to reset: no database yet.")
        return
    say(f"Reset {count} entr{'y' if count == 1 else 'ies'}.")


state_app = typer.Typer(
    help="The breakers' shared backend (the config's state table).", no_args_is_help=True
)


@state_app.command("migrate")
def migrate(config: ConfigOption = None) -> None:
    """Copy the breakers of the local database into the shared backend the config's state
    table names (a longer cooldown already there is kept)."""
    from ..config import load_config
    from ..state import migrate_state

    done = migrate_state(load_config(config))
    kept = f"; kept {done.kept} longer cooldown{'s' if done.kept != 1 else ''}" if done.kept else ""
    say(
        f"Copied {done.copied} breaker{'s' if done.copied != 1 else ''}"
        f" from '{done.source}' to {done.target}{kept}."
    )
