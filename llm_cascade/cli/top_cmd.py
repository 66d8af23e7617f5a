"""`top`: the dashboard drawn with rich, refreshed once a second; `q` or Ctrl-C quits.

The model (`dashboard.snapshot`) is the library's; this module only draws it and reads keys.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import ConfigOption, LocalOption, echo

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ..config import AppConfig
    from ..dashboard import EntryRow, Snapshot

REFRESH_S = 1.0
STATE_STYLE = {"closed": "green", "half-open": "yellow", "probing": "cyan", "open": "bold red"}
NO_TERMINAL = (
    "top needs a terminal; use `llm-cascade status` or `llm-cascade stats`"
    " (or `llm-cascade top --once` for one frame)"
)


def top(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame and exit (no terminal needed).")
    ] = False,
    local: LocalOption = False,
) -> None:
    """A live view of every entry: state, cooldown countdown, last hour, last error."""
    from ..errors import UsageError

    if not once and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(NO_TERMINAL)
    from ..config import load_config

    app_config = load_config(config)
    if once:
        echo(_frame_text(app_config, local))
        return
    _live(app_config, local)


def _frame_text(config: AppConfig, local: bool = False) -> str:
    """One frame as plain text, as wide as the terminal (or 120 columns)."""
    import io
    import shutil
    import time

    from rich.console import Console

    from ..dashboard import snapshot

    out = io.StringIO()
    width = shutil.get_terminal_size((120, 24)).columns
    console = Console(file=out, width=width, color_system=None, force_terminal=False)
    console.print(_render(snapshot(config, time.time(), local=local), live=False))
    return out.getvalue().rstrip("\n")


def _live(config: AppConfig, local: bool = False) -> None:
    """Redraw every second until `q` or Ctrl-C; the terminal is restored either way."""
    import os
    import select
    import termios
    import time
    import tty

    from rich.live import Live

    from ..dashboard import snapshot

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)  # keys one at a time, unechoed; Ctrl-C still interrupts
        with Live(auto_refresh=False, screen=True, redirect_stderr=False) as live:
            next_draw = 0.0
            while True:
                now = time.monotonic()
                if now >= next_draw:
                    live.update(_render(snapshot(config, time.time(), local=local)), refresh=True)
                    next_draw = now + REFRESH_S
                ready, _, _ = select.select([fd], [], [], max(next_draw - time.monotonic(), 0))
                if ready and os.read(fd, 1) in (b"q", b"Q"):
                    return
    except KeyboardInterrupt:
        return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _countdown(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = max(int(seconds + 0.999), 0)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _cells(row: EntryRow) -> list[str]:
    rate = "-" if row.success_rate is None else f"{100 * row.success_rate:.1f}%"
    p50 = "-" if row.p50_ms is None else f"{row.p50_ms:.0f}"
    entry = row.entry if row.in_config else f"{row.entry} (not in config)"
    return [entry, row.phase, _countdown(row.cooldown_left), str(row.attempts), rate, p50]


def _render(snap: Snapshot, live: bool = True) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from ..clock import format_human

    table = Table(
        title=f"llm-cascade top  {format_human(snap.taken_at)}",
        caption_justify="left",
        expand=False,
    )
    for header in ("ENTRY", "STATE", "COOLDOWN", "TRIES 1H", "OK 1H", "P50 MS", "PROBE"):
        table.add_column(header, no_wrap=True)
    table.add_column("LAST ERROR", overflow="fold")
    for row in snap.rows:
        cells = [Text(c) for c in _cells(row)]  # Text: provider text is never rich markup
        cells[1].stylize(STATE_STYLE.get(row.phase, ""))
        probe = "-" if row.probe_left is None else f"{_countdown(row.probe_left)} left"
        error = row.last_error or "-"
        if row.last_error_at:
            error = f"{row.last_error_at[:19].replace('T', ' ')}  {error}"
        table.add_row(*cells, Text(probe), Text(error))
    footer = Text(
        f"pending failed prompts: {snap.pending_prompts}   database: {snap.database}"
        f"{'' if snap.has_database else ' (none yet)'}"
        f"{f'   fleet log: {snap.fleet}' if snap.fleet else ''}   last hour from"
        f" {format_human(snap.window_start)}{'   q quits' if live else ''}"
    )
    parts: list[RenderableType] = [table, footer]
    if snap.problem:
        parts.append(Text(snap.problem, style="bold red"))
    return Group(*parts)
