"""`config check` and `config path`: is the config valid and runnable, and where do files live."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from ..errors import EXIT_USAGE
from ._common import ConfigOption, JsonOption, echo, format_table, say

if TYPE_CHECKING:
    from ..readiness import Report

config_app = typer.Typer(
    help="Check the config and show where its files live.", no_args_is_help=True
)


def show_path(config: ConfigOption = None) -> None:
    """Print the config file in use (-c, else $LLM_CASCADE_CONFIG, else the platform default)."""
    from ..paths import config_path

    path = config_path(config)
    echo(str(path))
    if not path.exists():
        say("(no file there yet: `llm-cascade setup` creates it)")


def check(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Validate the config and say whether each cascade can run.

    Shows the resolved paths, then every entry with its key source and cooldown.

    Exit status: 0 runnable, 2 when the config is invalid or a cascade cannot run.
    """
    import time

    from ..config import load_config
    from ..readiness import check as check_config

    report = check_config(load_config(config), time.time())
    if json_output:
        echo(json.dumps(_as_json(report, time.time()), indent=2))
    else:
        _print(report, time.time())
    if not report.runnable:
        raise typer.Exit(EXIT_USAGE)


def _cooldown(state: Any, now: float) -> str:
    from ..clock import format_human

    if not state.is_cooling(now):
        return "-"
    why = f", {state.reason}" if state.reason else ""
    return f"until {format_human(state.cooldown_until)} ({state.failures} failures{why})"


def _keyring_line(report: Report) -> str:
    if report.keyring is None:
        return "off (keyring = false); keys come from env vars"
    if report.keyring.problem:
        return (
            f"{report.keyring.name} (unusable: {report.keyring.problem}); keys come from env vars"
        )
    note = f" ({report.keyring.note})" if report.keyring.note else ""
    return f"{report.keyring.name}{note}"


def _state_line(state: Any) -> str:
    health = "reachable" if state.reachable else "unreachable"
    last = f"; last fell back {state.last_fallback}" if state.last_fallback else ""
    return f"{state.backend} at {state.where} ({health}{last})"


def _print(report: Report, now: float) -> None:
    db_note = "" if report.database_exists else " (not created yet; the first run creates it)"
    echo(f"Config:         {report.config_path}")
    echo(f"Database:       {report.database_path}{db_note}")
    echo(f"Failed prompts: {report.failure_dir}")
    echo(f"Keyring:        {_keyring_line(report)}")
    if report.state is not None and report.state.where is not None:
        echo(f"State:          {_state_line(report.state)}")
    if report.log is not None:
        echo(f"Attempt log:    {_state_line(report.log)}")
    if report.cascades:
        rows = [
            [c.name, str(i), e.key, e.key_status.where, _cooldown(e.state, now)]
            for c in report.cascades
            for i, e in enumerate(c.entries, 1)
        ]
        echo()
        echo(format_table(["CASCADE", "#", "ENTRY", "KEY", "COOLDOWN"], rows, min_width=1))
    for title, lines in (("Warnings:", report.warnings), ("Errors:", report.problems)):
        if lines:
            echo()
            echo(title)
            for line in lines:
                echo(f"  - {line}")
    total = len(report.cascades)
    ready = sum(c.runnable for c in report.cascades)
    echo()
    if report.runnable:
        echo(f"OK: {ready} of {total} cascades can run.")
    else:
        echo(f"Not runnable: {ready} of {total} cascades can run; fix the errors above.")


def _as_json(report: Report, now: float) -> dict[str, Any]:
    from ..clock import json_time

    backend = report.keyring
    return {
        "runnable": report.runnable,
        "config": str(report.config_path),
        "database": str(report.database_path),
        "database_exists": report.database_exists,
        "failed_prompts": str(report.failure_dir),
        "keyring": None
        if backend is None
        else {"backend": backend.name, "problem": backend.problem, "note": backend.note},
        "cascades": [
            {
                "name": c.name,
                "runnable": c.runnable,
                "entries": [
                    {
                        "entry": e.key,
                        "provider": e.provider,
                        "key": e.key_status.source,
                        "env_var": e.key_status.lookup.env_var,
                        "cooling": e.state.is_cooling(now),
                        "cooldown_until": json_time(e.state.cooldown_until)
                        if e.state.is_cooling(now)
                        else None,
                        "failures": e.state.failures,
                        "reason": e.state.reason,
                    }
                    for e in c.entries
                ],
            }
            for c in report.cascades
        ],
        "state": _status_json(report.state),
        "log": _status_json(report.log),
        "problems": list(report.problems),
        "warnings": list(report.warnings),
        "config_warnings": list(report.config_warnings),
    }


def _status_json(status: Any) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "backend": status.backend,
        "url": status.where,
        "reachable": status.reachable,
        "detail": status.detail,
        "last_fallback": status.last_fallback,
    }


config_app.command("check")(check)
config_app.command("path")(show_path)
