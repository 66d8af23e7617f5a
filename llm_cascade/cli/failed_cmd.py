"""`llm-cascade failed list|show|retry|rm`: see and replay the prompts no entry answered.

A cron line such as `llm-cascade failed retry --all --answers-dir ~/answers` drains the queue
after an outage: each saved conversation is sent again and removed once answered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..clock import json_time
from ..errors import EXIT_FAILED, UsageError
from ..text import shorten
from ._common import (
    ConfigOption,
    JsonOption,
    VerboseOption,
    complete_cascades,
    echo,
    format_table,
    say,
    setup_logging,
    write_stdout,
)

if TYPE_CHECKING:
    from ..cascade import CascadeResult
    from ..config import AppConfig
    from ..failures import FailureStore, SavedPrompt

app = typer.Typer(
    help="See and replay saved prompts (every entry failed, or the run was killed).",
    no_args_is_help=True,
)


def _store(config_path: Path | None) -> tuple[AppConfig, FailureStore]:
    from ..config import load_config
    from ..replay import prompt_store

    config = load_config(config_path)
    return config, prompt_store(config)


def _last_error(saved: SavedPrompt) -> str:
    errors = saved.errors
    if not errors:
        return "-"
    last = errors[-1]
    return shorten(f"{last.get('entry', '?')}: {last.get('detail', last.get('outcome', ''))}", 60)


def _summary(saved: SavedPrompt) -> dict[str, Any]:
    return {
        "id": saved.id,
        "path": str(saved.path),
        "cascade": saved.cascade_name,
        "saved_at": json_time(saved.timestamp),
        "status": saved.status,
        "retries": saved.retries,
        "size": saved.size,
        "errors": saved.json_errors(),
    }


@app.command("list")
def list_(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """List saved prompts: id, cascade, time, status, retries, size and the last error."""
    app_config, store = _store(config)
    saved = store.list()
    if json_output:
        echo(json.dumps([_summary(s) for s in saved], indent=2))
        return
    if not saved:
        say(f"no saved prompts in {app_config.failure_dir}")
        return
    rows = [
        [
            s.id,
            s.cascade_name,
            (s.timestamp or "?")[:19].replace("T", " "),
            s.status,
            str(s.retries),
            str(s.size),
            _last_error(s),
        ]
        for s in saved
    ]
    echo(
        format_table(
            ["ID", "CASCADE", "SAVED (UTC)", "STATUS", "RETRIES", "BYTES", "LAST ERROR"], rows, 2
        )
    )


@app.command()
def show(
    ident: Annotated[
        str, typer.Argument(metavar="ID", help="An id from `failed list` (or a prefix).")
    ],
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one saved prompt: what each entry did, then the conversation."""
    _, store = _store(config)
    saved = store.find(ident)
    if json_output:
        echo(json.dumps(saved.json_envelope(), indent=2, ensure_ascii=False))
        return
    echo(f"id:       {saved.id}\npath:     {saved.path}\ncascade:  {saved.cascade_name}")
    echo(f"saved at: {saved.timestamp}\nstatus:   {saved.status}")
    echo(f"retries:  {saved.retries}")
    if saved.errors:
        echo("errors:")
        for err in saved.errors:
            echo(f"  {err.get('entry', '?')}: {err.get('outcome', '')}: {err.get('detail', '')}")
    echo("conversation:")
    for msg in saved.conversation().messages:
        extra = f" [tool_call_id={msg.tool_call_id}]" if msg.tool_call_id else ""
        calls = f" [calls {', '.join(c.name for c in msg.tool_calls)}]" if msg.tool_calls else ""
        images = f" [{len(msg.images)} image(s)]" if msg.images else ""
        echo(f"  {msg.role}{extra}{calls}{images}: {msg.text}")


@app.command()
def retry(
    idents: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Ids to retry.")
    ] = None,
    all_prompts: Annotated[bool, typer.Option("--all", help="Retry every saved prompt.")] = False,
    cascade: Annotated[
        str | None,
        typer.Option(
            "--cascade",
            "-C",
            help="Use this cascade instead of the saved one.",
            autocompletion=complete_cascades,
        ),
    ] = None,
    answers_dir: Annotated[
        Path | None,
        typer.Option("--answers-dir", help="Also write each answer to DIR/<id>.json (0600)."),
    ] = None,
    config: ConfigOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per prompt.")
    ] = False,
    verbose: VerboseOption = 0,
) -> None:
    """Send saved prompts again; each one answered is removed (exit 1 if any still fails)."""
    if not idents and not all_prompts:
        raise UsageError("name the prompts to retry (see `llm-cascade failed list`) or pass --all")
    setup_logging(verbose)
    app_config, store = _store(config)
    from ..replay import check_answers_dir

    if answers_dir is not None:
        check_answers_dir(answers_dir)
    chosen = store.list() if all_prompts else [store.find(i) for i in idents or []]
    chosen = [s for s in chosen if s.status != "running"]  # another run still owns those
    from ..replay import routing_problem, with_saved_cascades

    routes: dict[str, str] = {}
    if cascade is None:  # -C sends every prompt through that cascade instead
        app_config, routes = with_saved_cascades(app_config, chosen)
    if not all_prompts:  # named prompts: a cascade that is gone is a usage error up front
        for saved in chosen:
            problem = routing_problem(app_config, saved, cascade, routes)
            if problem:
                raise UsageError(problem)
    import asyncio

    failures = asyncio.run(
        _retry_all(app_config, store, chosen, cascade, routes, answers_dir, json_output)
    )
    say(f"Retried {len(chosen)}: {len(chosen) - failures} answered, {failures} still failing.")
    if failures:
        raise typer.Exit(EXIT_FAILED)


async def _retry_all(
    config: AppConfig,
    store: FailureStore,
    chosen: list[SavedPrompt],
    cascade: str | None,
    routes: dict[str, str],
    answers_dir: Path | None,
    json_output: bool,
) -> int:
    from ..cascade import Cascade
    from ..replay import replay

    def deliver(saved: SavedPrompt, result: CascadeResult) -> None:
        _emit(saved, result, answers_dir, json_output)

    failures = 0
    async with Cascade(config) as engine:
        async for done in replay(engine, store, chosen, deliver, cascade=cascade, routes=routes):
            failures += done.failed
            if done.verdict == "answered":
                continue  # _emit said it
            if done.verdict != "taken":
                say(done.detail)
            if json_output and done.verdict == "failing":
                echo(json.dumps({"id": done.saved.id, "ok": False, "error": done.detail}))
    return failures


def _emit(
    saved: SavedPrompt, result: CascadeResult, answers_dir: Path | None, json_output: bool
) -> None:
    from . import render

    if answers_dir is not None:
        from ..replay import write_answer

        write_answer(answers_dir, saved, result)
    if json_output:
        write_stdout(json.dumps({"id": saved.id, **result.to_dict()}, ensure_ascii=False) + "\n")
    else:
        say(f"{saved.id}: answered by {result.entry}")
        write_stdout(render.result_text(result, terminal=sys.stdout.isatty()) + "\n")


@app.command("rm")
def remove(
    idents: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Ids to delete.")
    ] = None,
    all_prompts: Annotated[bool, typer.Option("--all", help="Delete every saved prompt.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete saved prompts you no longer need (running ones are left alone)."""
    if not idents and not all_prompts:
        raise UsageError("name the prompts to delete or pass --all")
    _, store = _store(config)
    chosen = store.list() if all_prompts else [store.find(i) for i in idents or []]
    removed = sum(store.remove(saved) for saved in chosen)
    say(f"Deleted {removed} saved prompt{'s' if removed != 1 else ''}.")
