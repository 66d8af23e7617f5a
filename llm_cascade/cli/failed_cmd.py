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

from ..errors import EXIT_FAILED, UsageError
from ._common import ConfigOption, JsonOption, VerboseOption, format_table, say, setup_logging

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
    from ..failures import FailureStore

    config = load_config(config_path)
    return config, FailureStore(config.failure_dir)


def _last_error(saved: SavedPrompt) -> str:
    errors = saved.errors
    if not errors:
        return "-"
    last = errors[-1]
    text = f"{last.get('entry', '?')}: {last.get('detail', last.get('outcome', ''))}"
    return text if len(text) <= 60 else text[:59] + "…"


def _summary(saved: SavedPrompt) -> dict[str, Any]:
    return {
        "id": saved.id,
        "path": str(saved.path),
        "cascade": saved.cascade_name,
        "saved_at": saved.envelope.get("timestamp"),
        "status": saved.status,
        "retries": saved.envelope.get("retries", 0),
        "size": saved.path.stat().st_size if saved.path.exists() else 0,
        "errors": saved.errors,
    }


@app.command("list")
def list_(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """List saved prompts: id, cascade, time, status, retries, size and the last error."""
    app_config, store = _store(config)
    saved = store.list()
    if json_output:
        print(json.dumps([_summary(s) for s in saved], indent=2))
        return
    rows = [
        [
            s.id,
            s.cascade_name,
            str(s.envelope.get("timestamp", "?"))[:19].replace("T", " "),
            s.status,
            str(s.envelope.get("retries", 0)),
            str(s.path.stat().st_size),
            _last_error(s),
        ]
        for s in saved
    ]
    print(
        format_table(
            ["ID", "CASCADE", "SAVED (UTC)", "STATUS", "RETRIES", "BYTES", "LAST ERROR"], rows, 2
        )
    )
    if not saved:
        say(f"(no saved prompts in {app_config.failure_dir})")


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
        print(json.dumps(saved.envelope, indent=2, ensure_ascii=False))
        return
    print(f"id:       {saved.id}\npath:     {saved.path}\ncascade:  {saved.cascade_name}")
    print(f"saved at: {saved.envelope.get('timestamp')}\nstatus:   {saved.status}")
    print(f"retries:  {saved.envelope.get('retries', 0)}")
    if saved.errors:
        print("errors:")
        for err in saved.errors:
            print(f"  {err.get('entry', '?')}: {err.get('outcome', '')}: {err.get('detail', '')}")
    print("conversation:")
    for msg in saved.conversation().messages:
        extra = f" [tool_call_id={msg.tool_call_id}]" if msg.tool_call_id else ""
        calls = f" [calls {', '.join(c.name for c in msg.tool_calls)}]" if msg.tool_calls else ""
        print(f"  {msg.role}{extra}{calls}: {msg.content}")


@app.command()
def retry(
    idents: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Ids to retry.")
    ] = None,
    all_prompts: Annotated[bool, typer.Option("--all", help="Retry every saved prompt.")] = False,
    cascade: Annotated[
        str | None,
        typer.Option("--cascade", "-C", help="Use this cascade instead of the saved one."),
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
    if answers_dir is not None:
        _check_answers_dir(answers_dir)
    chosen = store.list() if all_prompts else [store.find(i) for i in idents or []]
    chosen = [s for s in chosen if s.status != "running"]  # another run still owns those
    target = cascade
    routable = []
    for s in chosen:
        name = target or s.cascade_name
        if name in app_config.cascades:
            routable.append(s)
            continue
        problem = f"{s.id}: cascade '{name}' is not in the config; pass -C/--cascade to pick one"
        if not all_prompts:
            raise UsageError(problem)
        say(problem)  # --all drains the queue: one stale prompt must not stop the others
    import asyncio

    failures = asyncio.run(
        _retry_all(app_config, store, routable, target, answers_dir, json_output)
    )
    failures += len(chosen) - len(routable)
    say(f"Retried {len(chosen)}: {len(chosen) - failures} answered, {failures} still failing.")
    if failures:
        raise typer.Exit(EXIT_FAILED)


def _check_answers_dir(answers_dir: Path) -> None:
    """Create DIR now: an unusable one must stop the retry before anything is sent."""
    from ..paths import ensure_private_dir

    try:
        ensure_private_dir(answers_dir)
        if not answers_dir.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"--answers-dir: cannot use '{answers_dir}': {reason}") from None


async def _retry_all(
    config: AppConfig,
    store: FailureStore,
    chosen: list[SavedPrompt],
    cascade: str | None,
    answers_dir: Path | None,
    json_output: bool,
) -> int:
    from ..cascade import Cascade
    from ..errors import CascadeFailed, ConversationError

    failures = 0
    async with Cascade(config) as engine:
        for saved in chosen:
            try:
                claim = store.claim(saved)
            except ConversationError as exc:  # one bad file must not stop the queue
                failures += 1
                say(f"{saved.id}: cannot retry: {exc} (fix or remove {saved.path})")
                continue
            if claim is None:
                continue  # another retry took it, or it was removed meanwhile
            name = cascade or saved.cascade_name
            try:
                result = await engine.run(name, saved.conversation(), saved=claim)
            except CascadeFailed as exc:
                failures += 1
                say(f"{saved.id}: still failing ({exc.message.splitlines()[-1]})")
                if json_output:
                    print(json.dumps({"id": saved.id, "ok": False, "error": exc.message}))
                continue
            try:
                _emit(saved, result, answers_dir, json_output)
            except BrokenPipeError:
                raise
            except OSError as exc:  # the answer is lost: keep the prompt and go on
                from .run import keep_undelivered

                failures += 1
                target = str(answers_dir / f"{saved.id}.json") if answers_dir else "stdout"
                keep_undelivered(config, saved.conversation(), result, exc, target)
    return failures


def _emit(
    saved: SavedPrompt, result: CascadeResult, answers_dir: Path | None, json_output: bool
) -> None:
    from . import render

    data = {"id": saved.id, **result.to_dict()}
    if answers_dir is not None:
        from ..failures import write_private

        write_private(
            answers_dir / f"{saved.id}.json",
            {"id": saved.id, "conversation": saved.envelope.get("conversation"), "result": data},
        )
    if json_output:
        print(json.dumps(data, ensure_ascii=False))
    else:
        say(f"{saved.id}: answered by {result.entry}")
        sys.stdout.write(render.answer_text(result.response, terminal=sys.stdout.isatty()) + "\n")
    sys.stdout.flush()


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
    removed = 0
    for saved in chosen:
        if saved.status != "running":
            saved.path.unlink(missing_ok=True)
            removed += 1
    say(f"Deleted {removed} saved prompt{'s' if removed != 1 else ''}.")
