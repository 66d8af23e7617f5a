"""`llm-cascade run`: one prompt through one cascade; the answer alone on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    CascadeFailed,
    ConversationError,
    UsageError,
)
from ._common import (
    ConfigOption,
    JsonOption,
    StdoutClosed,
    StdoutFailed,
    VerboseOption,
    complete_cascades,
    complete_models,
    complete_templates,
    echo,
    say,
    setup_logging,
    stderr_is_tty,
    write_stdout,
)

if TYPE_CHECKING:  # imported inside the command, so `--help` does not pay for them
    from collections.abc import Callable

    from ..cascade import Answer, RunOptions
    from ..config import AppConfig
    from ..results import CascadeResult
    from ..templates import Template
    from ..types import Conversation

EXIT_TERMINATED = 143
WAIT_COOLDOWN_DEFAULT = "300"
_TAKES_VALUE = frozenset(
    {"-C", "--cascade", "-p", "--prompt", "-f", "--file", "-s", "--system", "-c", "--config"}
    | {"-m", "--model", "-t", "--template", "--var", "--deadline", "--schema", "-a", "--attach"}
)


def with_optional_values(args: list[str]) -> list[str]:
    """`run ... --wait-cooldown` with no MAX means the default (`--wait-cooldown=300`).

    The option parser typer ships has no options with an optional value: without this, a bare
    `--wait-cooldown` is an error at the end of the line and swallows the next option
    (`--wait-cooldown -p hi`) or the positional prompt elsewhere.
    """
    if args[:1] != ["run"]:
        return args
    out = list(args)
    for i in range(1, len(out)):
        if out[i] == "--":
            break
        following = out[i + 1] if i + 1 < len(out) else None
        if (
            out[i] == "--wait-cooldown"
            and out[i - 1] not in _TAKES_VALUE
            and (following is None or following.startswith("-") or not _is_number(following))
        ):
            out[i] = f"--wait-cooldown={WAIT_COOLDOWN_DEFAULT}"
    return out


def _is_number(text: str) -> bool:
    """A word after a bare `--wait-cooldown` is its MAX only if it is a number: otherwise it
    is the positional prompt (`run --wait-cooldown "Summarise this"`)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_stdin() -> str:
    """All of stdin, up to the conversation size limit. No time limit: a pipe the shell
    connected may take its time (`slow-tool | llm-cascade run ...`)."""
    from ..files import too_large
    from ..types import MAX_CONVERSATION_BYTES

    if sys.stdin is None:  # started with stdin closed (`<&-`)
        raise UsageError("cannot read stdin: it is closed")
    try:
        data = sys.stdin.buffer.read(MAX_CONVERSATION_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read stdin: {exc}") from None
    if len(data) > MAX_CONVERSATION_BYTES:
        raise UsageError(f"stdin: {too_large(MAX_CONVERSATION_BYTES)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"stdin is not valid UTF-8 text (byte {exc.start})") from None


def _check_utf8(text: str, option: str) -> str:
    """Command-line text with bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{option} is not valid UTF-8 text (character {exc.start})") from None
    return text


def _read_conversation(file: str) -> Conversation:
    from ..files import read_bounded
    from ..types import MAX_CONVERSATION_BYTES, Conversation

    if file == "-":
        text, where = _read_stdin(), "stdin"
    else:
        try:
            text = read_bounded(Path(file), MAX_CONVERSATION_BYTES).decode("utf-8")
            where = file
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"Error reading file '{file}': {reason}") from None
    try:
        return Conversation.from_json(text)
    except ConversationError as exc:
        raise UsageError(f"Error parsing conversation JSON from '{where}': {exc}") from None


def _piped_text() -> str | None:
    """stdin when it is not a terminal (a pipe, a file, /dev/null), read to its end."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    return _read_stdin()


def build_conversation(
    prompt: str | None,
    file: str | None,
    system: str | None,
    template: Template | None = None,
    values: dict[str, str] | None = None,
) -> Conversation:
    """The conversation from -p (or the positional prompt), -f or stdin, through a template.

    A prompt (`-p -` aside) and piped stdin make one message: the prompt, then the piped text.
    Everything is checked before anything touches disk or the network.
    """
    from ..invocation import input_text, prompt_conversation
    from ..types import Message

    if file is not None:
        if template is not None:
            raise UsageError(
                "-t/--template takes a prompt (-p, positional or stdin), not -f/--file"
            )
        conversation = _read_conversation(file)
        if not conversation.messages:
            raise UsageError("the conversation has no messages")
        if system:  # with_messages keeps the tools and the output format
            conversation = conversation.with_messages(
                [Message.system(_check_utf8(system, "-s/--system")), *conversation.messages]
            )
        return conversation
    if prompt == "-":
        text: str | None = _read_stdin()
    else:
        given = None if prompt is None else _check_utf8(prompt, "-p/--prompt")
        text = input_text(given, _piped_text())
    if text is None and template is None:  # a template may need no input at all
        raise UsageError(
            "no prompt: give it as an argument or with -p TEXT, -f FILE, or pipe it on stdin"
        )
    return prompt_conversation(
        text,
        system=None if system is None else _check_utf8(system, "-s/--system"),
        template=template,
        values=values,
    )


def _parse_wait(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"--wait-cooldown: expected seconds, got {value!r}") from None
    if not seconds >= 0:  # also nan
        raise UsageError("--wait-cooldown: seconds must be 0 or more")
    return seconds


def run(
    positional: Annotated[
        str | None,
        typer.Argument(
            metavar="[PROMPT]",
            help="The prompt, as with -p ('-': read stdin).",
            show_default=False,
        ),
    ] = None,
    cascade: Annotated[
        str | None,
        typer.Option(
            "--cascade",
            "-C",
            help="Cascade from the config (default: its default_cascade).",
            autocompletion=complete_cascades,
            show_default=False,
        ),
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="The prompt ('-': read stdin).")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="A JSON conversation file ('-': stdin).")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system message.")] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="PROVIDER/MODEL",
            help="Run just these entries, in order (repeatable): a provider of the config or a"
            " provider type (openai, anthropic, gemini, ollama) with its defaults.",
            autocompletion=complete_models,
            show_default=False,
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            help="A [templates.NAME] of the config: its system, prompt, cascade and options.",
            autocompletion=complete_templates,
            show_default=False,
        ),
    ] = None,
    variables: Annotated[
        list[str] | None,
        typer.Option(
            "--var",
            metavar="NAME=VALUE",
            help="Set the template's $NAME (repeatable).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Say on stderr what each entry did and why.")
    ] = False,
    deadline: Annotated[
        float | None,
        typer.Option(
            "--deadline", help="Seconds for the whole cascade (default: its `deadline`).", min=0.001
        ),
    ] = None,
    wait_cooldown: Annotated[
        str | None,
        typer.Option(
            "--wait-cooldown",
            is_flag=False,
            flag_value=WAIT_COOLDOWN_DEFAULT,
            metavar="[MAX]",
            help="If every entry is cooling down, wait up to MAX seconds (default 300)"
            " for the first to free up.",
        ),
    ] = None,
    ignore_cooldown: Annotated[
        bool, typer.Option("--ignore-cooldown", help="Try entries even while they cool down.")
    ] = False,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            metavar="SCHEMA",
            help="Answer with JSON valid under this JSON Schema (a file, or inline JSON):"
            ' the document alone is printed. \'{"type":"object"}\' is any JSON object.',
        ),
    ] = None,
    stream: Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream",
            help="Write the answer as it arrives (default: on a terminal; a pipe gets the"
            " whole answer). With --json: one JSON object per event.",
            show_default=False,
        ),
    ] = None,
    verbose: VerboseOption = 0,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            "--attach",
            "-a",
            metavar="FILE_OR_URL",
            help="Add an image (PNG, JPEG, GIF, WebP file, or http(s) URL) to the prompt;"
            " repeatable.",
        ),
    ] = None,
) -> None:
    """Send a prompt through a cascade and print the answer.

    The prompt is the argument or -p TEXT. Piped into, with a prompt, the run sends one
    message: the prompt, a blank line, then the piped text (`cat doc | llm-cascade run
    "Summarise"`). Piped into without a prompt, stdin is the prompt; `-f -` reads a JSON
    conversation from stdin. In a script whose stdin stays open, add `</dev/null`.

    Without -C: the template's cascade, else the config's default_cascade. -m
    PROVIDER/MODEL (repeatable) runs just those entries instead.

    Exit status: 0 answered, 1 every entry failed (the prompt is saved; stderr says where),
    2 usage or config error, 130 interrupted (the prompt is saved).
    """
    if positional is not None and prompt is not None:
        raise UsageError("give the prompt once: as an argument or with -p/--prompt, not both")
    prompt = positional if prompt is None else prompt
    if prompt is not None and file is not None:
        raise UsageError("a prompt (-p or positional) and -f/--file cannot be used together")
    if models and cascade is not None:
        raise UsageError("-m/--model and -C/--cascade cannot be used together")
    wait_s = _parse_wait(wait_cooldown)
    if deadline is not None and deadline != deadline:  # nan passes the range check
        raise UsageError("--deadline: expected a number of seconds, got nan")
    from ..config import load_config
    from ..invocation import choose_cascade, find_template
    from ..templates import parse_vars

    values = parse_vars(variables or [])
    app_config = load_config(config, optional=bool(models))
    chosen = None if template is None else find_template(app_config, template)
    conversation = build_conversation(prompt, file, system, chosen, values)
    schema = schema if schema is not None else (chosen.schema if chosen else None)
    conversation = _with_extras(conversation, attach or [], file, schema, stream)
    app_config, cascade = choose_cascade(
        app_config, cascade=cascade, models=models or (), template=chosen
    )
    setup_logging(verbose)
    spinner = not verbose and stderr_is_tty()
    import asyncio

    from ..cascade import RunOptions
    from . import render

    terminal = sys.stdout.isatty()
    streaming = (terminal and conversation.output is None) if stream is None else stream
    options = RunOptions(
        deadline_s=deadline,
        ignore_cooldown=ignore_cooldown,
        wait_cooldown_s=wait_s,
        # On a terminal, or a stream into a pipe, what was shown cannot be taken back: let
        # an entry that takes a prefill continue it (the cascade's on_midstream still rules).
        on_midstream=None if app_config.cascades[cascade].on_midstream else "continue",
        # Plain text streamed into a pipe cannot be taken back: an entry that could only start
        # over is passed over (one that takes a prefill may continue); none left: the run fails.
        can_restart=not streaming or terminal or json_output,
    )
    if streaming:
        _stream(app_config, cascade, conversation, options, json_output, explain, wait_s, spinner)
        return

    def finish(answer: Answer) -> None:
        result = answer.result
        if explain:
            for line in render.explain(result.cascade_name, result.attempts, result.route):
                say(line)
        deliver(
            answer,
            lambda: (
                render.result_json(result)
                if json_output
                else render.result_text(result, terminal=sys.stdout.isatty())
            ),
        )

    try:
        asyncio.run(_run(app_config, cascade, conversation, options, spinner, finish))
    except KeyboardInterrupt:  # the engine has logged where the prompt is
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except asyncio.CancelledError:  # SIGTERM
        raise typer.Exit(EXIT_TERMINATED) from None
    except CascadeFailed as exc:
        _report_failure(exc, json_output, explain, wait_s)
        raise typer.Exit(EXIT_FAILED) from None


def _with_extras(
    conversation: Conversation,
    attach: list[str],
    file: str | None,
    schema: str | None,
    stream: bool | None,
) -> Conversation:
    """The conversation with its images read in (the -a ones, and those a -f file names by
    path, relative to its folder) and asking
    for a document valid under `schema` (from --schema or the template). The image and
    schema modules are imported only when used."""
    if attach or any(image.path is not None for image in conversation.images):
        from ..images import attach as with_images

        base_dir = Path(file).parent if file not in (None, "-") else None
        conversation = with_images(conversation, attach, base_dir=base_dir)
    if schema is None:
        return conversation
    if stream:
        raise UsageError("--schema prints the document once it is whole: drop --stream")
    from ..structured import schema_argument

    return conversation.with_output(schema_argument(schema))


def _stream(
    config: AppConfig,
    cascade: str,
    conversation: Conversation,
    options: RunOptions,
    json_output: bool,
    explain: bool,
    wait_s: float | None,
    spinner: bool,
) -> None:
    """`run --stream`: the engine's events written as they come (see cli/streamed.py)."""
    import asyncio

    from ..cascade import CANNOT_PICK_UP
    from . import render
    from .streamed import Terminated, stream_answer

    mirror_wait = config.cascades[cascade].mirror_wait

    async def go() -> CascadeResult:  # stream_answer handles SIGTERM
        from ..cascade import Cascade

        terminal = sys.stdout.isatty()
        if not spinner:
            async with Cascade(config) as engine:
                result = await stream_answer(
                    engine, cascade, conversation, options, as_json=json_output, terminal=terminal
                )
                await engine.wait_mirrors(mirror_wait)
                return result
        from rich.console import Console  # a terminal waits: say which entry is being asked

        with Console(stderr=True).status(f"cascade '{cascade}'") as status:

            def on_request(entry: str, try_number: int) -> None:
                status.update(
                    f"asking {entry}" + (f" (try {try_number})" if try_number > 1 else "")
                )

            async with Cascade(config, on_request=on_request) as engine:
                result = await stream_answer(
                    engine,
                    cascade,
                    conversation,
                    options,
                    as_json=json_output,
                    terminal=terminal,
                    on_output=status.stop,
                )
                await engine.wait_mirrors(mirror_wait)
                return result

    try:
        result = asyncio.run(go())
    except KeyboardInterrupt:  # the engine has logged where the prompt (and what came) is
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (asyncio.CancelledError, Terminated):  # SIGTERM
        raise typer.Exit(EXIT_TERMINATED) from None
    except CascadeFailed as exc:
        _report_failure(exc, False, explain, wait_s)
        if any(a.detail == CANNOT_PICK_UP for a in exc.attempts):
            say(
                "A stream that broke after its text was written can only be continued by an"
                " entry that takes a prefill; use --no-stream to let any entry start over."
            )
        if json_output:  # the last line of the NDJSON, not a pretty object after it
            echo(render.compact_dumps({"event": "failed", **render.failure_json(exc)}))
        raise typer.Exit(EXIT_FAILED) from None
    if explain:
        for line in render.explain(result.cascade_name, result.attempts, result.route):
            say(line)


def deliver(answer: Answer, text: Callable[[], str]) -> None:
    """Write the answer to stdout, then let the engine drop the saved prompt.

    If it cannot be written (a full disk, a reader that went away, text that cannot be
    encoded), the prompt stays on disk with the answer in it and the run fails.
    """
    try:
        write_stdout(text() + "\n")
    except StdoutClosed:  # the reader went away (`| head -1`): quiet, like SIGPIPE
        answer.undelivered("the reader closed stdout before the end of the answer")
        raise
    except (StdoutFailed, ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        saved = answer.undelivered(_reason(exc))
        where = (
            f"the prompt and the answer are saved in {saved.path}"
            if saved.path
            else f"the prompt could not be saved either: {saved.error}"
        )
        head = f"Error: the answer from {answer.result.entry} could not be written to stdout"
        say(f"{head} ({_reason(exc)}); {where}")
        raise typer.Exit(EXIT_FAILED) from None
    answer.delivered()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StdoutFailed):
        return str(exc).removeprefix("cannot write to stdout: ")
    return str(exc) or type(exc).__name__


async def _run(
    config: AppConfig,
    cascade: str,
    conversation: Conversation,
    options: RunOptions,
    spinner: bool,
    finish: Callable[[Answer], None],
) -> None:
    """Answer, hand the answer to `finish`, then give the cascade's mirror requests up to
    its `mirror_wait` to end before the engine closes."""
    import asyncio
    import contextlib
    import signal

    from ..cascade import Cascade

    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    status: Any = contextlib.nullcontext()
    on_request = None
    if spinner:
        from rich.console import Console  # a terminal is watching: say which entry is asked

        status = Console(stderr=True).status(f"cascade '{cascade}'")

        def on_request(entry: str, try_number: int) -> None:
            status.update(f"asking {entry}" + (f" (try {try_number})" if try_number > 1 else ""))

    # The engine opens its HTTP client (and imports httpx) only if a request is made, so a run
    # that finds every entry cooling down answers fast.
    async with Cascade(config, on_request=on_request) as engine:
        with status:
            answer = await engine.answer(cascade, conversation, options)
        finish(answer)
        await engine.wait_mirrors(config.cascades[cascade].mirror_wait)


def _report_failure(
    exc: CascadeFailed, json_output: bool, explain: bool, wait_s: float | None
) -> None:
    from ..clock import SystemClock
    from . import render

    now = SystemClock().now()
    if explain:
        for line in render.explain(exc.cascade_name, exc.attempts, exc.route):
            say(line)
    say(str(exc))
    hint = render.failure_hint(exc, now, wait_s)
    if hint:
        say(hint)
    if json_output:
        echo(render.dumps(render.failure_json(exc)))
