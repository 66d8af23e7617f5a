"""The `llm-cascade` command line: a thin layer over the library.

Each command group lives in its own module and imports heavy things (httpx, keyring, rich)
only when it runs, so `--help` and short commands start fast. `main()` is the console
script: it turns every expected error into one line on stderr (and, after a usage error, the
hint to the command's help on a second) and an exit status, the parser's errors included.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Annotated

import typer

from .._version import __version__
from ..errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PIPE,
    EXIT_USAGE,
    LlmCascadeError,
    UsageError,
)
from ..keyring_choice import remember_choice
from ._common import echo, setup_logging, silence_stdout

# name: (module, attribute, a sub-app with its own commands?), in the order `--help` lists them
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "run": (".run", "run", False),
    "status": (".state", "status", False),
    "log": (".state", "log", False),
    "reset": (".state", "reset", False),
    "state": (".state", "state_app", True),
    "health": (".views_cmd", "health", False),
    "stats": (".views_cmd", "stats", False),
    "metrics": (".views_cmd", "metrics", False),
    "top": (".top_cmd", "top", False),
    "failed": (".failed_cmd", "app", True),
    "setup": (".setup_cmd", "setup", False),
    "key": (".key_cmd", "key_app", True),
    "config": (".config_cmd", "config_app", True),
    "templates": (".templates_cmd", "templates_app", True),
    "serve": (".serve_cmd", "serve", False),
}


def _version(value: bool) -> None:
    if value:
        echo(f"llm-cascade {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Cascading LLM inference across multiple providers."""
    setup_logging(0)
    remember_choice()  # each run loads the keyring backend found before instead of probing all


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI; with `only`, just that command: typer inspects every command it is given, and
    a `run` in a pipeline should not pay for importing and inspecting all the others."""
    app = typer.Typer(
        name="llm-cascade",
        help="Cascading LLM inference across multiple providers.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion [bash|zsh|fish]
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name, (module, attribute, is_group) in COMMANDS.items():
        if only is None or name == only:
            target = getattr(importlib.import_module(module, __package__), attribute)
            if is_group:
                app.add_typer(target, name=name)
            else:
                app.command(name, help=_reflowed(target.__doc__))(target)
    return app


def _reflowed(doc: str | None) -> str | None:
    """A docstring as help text: its paragraphs, each on one line (rich keeps the docstring's
    line breaks and wraps them again at the terminal's width: ragged lines otherwise)."""
    if doc is None:
        return None
    import inspect

    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


def main() -> None:
    """Console-script entry point: no tracebacks, documented exit statuses."""
    _exit(_delivered(_exit_code()))


def _exit_code() -> int:
    """Run the command; every way it can end becomes an exit status."""
    args = sys.argv[1:]
    command = args[0] if args and args[0] in COMMANDS else None
    try:
        if command == "run":
            from .run import with_optional_values

            args = with_optional_values(args)
        # Not standalone: the parser's errors come here, to be told in our one style.
        done = build_app(command)(args=args, standalone_mode=False)
        return done if isinstance(done, int) else 0  # an Exit's status
    except SystemExit as done:  # shell completion, and sys.exit() anywhere
        if isinstance(done.code, str):  # sys.exit("message"): printed, status 1, as Python does
            print(done.code, file=sys.stderr)
            return EXIT_FAILED
        return done.code or 0
    except _CLICK_ERROR as exc:  # a usage error found by the parser (click, vendored by typer)
        return _parser_error(exc, args)
    except typer.Abort:  # input ended at a prompt
        print("Aborted.", file=sys.stderr)
        return EXIT_FAILED
    except LlmCascadeError as exc:
        return _our_error(exc, args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`... | head -1`): quiet, like SIGPIPE
        silence_stdout()
        return EXIT_PIPE
    except Exception as exc:  # the one catch-all: a bug must still not print a traceback
        if os.environ.get("LLM_CASCADE_DEBUG"):
            raise
        print(
            f"Error: internal error ({type(exc).__name__}: {exc}); rerun with"
            " LLM_CASCADE_DEBUG=1 for a traceback and please report it",
            file=sys.stderr,
        )
        return EXIT_FAILED


# The base class of the parser's errors, reached through the one of them typer exports: typer
# 0.28 vendors click privately, earlier versions use click itself.
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _parser_error(exc: Exception, args: list[str]) -> int:
    """`Error: ...` on one line and the help hint on the next, never a box (also on a
    terminal: one style, whatever the command and wherever stderr goes)."""
    code = getattr(exc, "exit_code", EXIT_FAILED)
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # `llm-cascade key`: the help, as asked
        text = exc.format_message()  # type: ignore[attr-defined]  # rich has printed it already
        if text:
            echo(text.rstrip())
        return int(code)
    print(f"Error: {exc.format_message()}", file=sys.stderr)  # type: ignore[attr-defined]
    if ctx is not None:
        print(f"Try '{ctx.command_path} -h' for help.", file=sys.stderr)
    elif code == EXIT_USAGE:  # an option's missing value is raised without its command
        _hint(args)
    return int(code)


def _our_error(exc: LlmCascadeError, args: list[str]) -> int:
    """An error our code raised: its one line, and the help hint after a usage error."""
    text = str(exc)
    if text:  # StdoutClosed says nothing, like a process killed by SIGPIPE
        print(_error_text(text), file=sys.stderr)
        if isinstance(exc, UsageError):
            _hint(args)
    return exc.exit_code


def _error_text(text: str) -> str:
    """`Error: ...`, also for the original's messages that begin `Error reading file ...`."""
    return text if text.startswith("Error: ") else f"Error: {text.removeprefix('Error ')}"


def _hint(args: list[str]) -> None:
    """The second line of a usage error our own code found: help for the command run."""
    words = ["llm-cascade"]
    if args and args[0] in COMMANDS:
        words.append(args[0])
        if COMMANDS[args[0]][2] and len(args) > 1 and not args[1].startswith("-"):
            words.append(args[1])  # a group's subcommand: `failed retry`
    print(f"Try '{' '.join(words)} -h' for help.", file=sys.stderr)


def _delivered(code: int) -> int:
    """Flush what the command printed now, so a stdout that cannot take it is reported
    (exit 1) instead of Python's "Exception ignored" and exit 120 at shutdown."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        return code or EXIT_PIPE
    except OSError as exc:
        silence_stdout()
        print(f"Error: cannot write to stdout: {exc.strerror or exc}", file=sys.stderr)
        return code or EXIT_FAILED
    return code


def _exit(status: int) -> None:
    """End the process without the interpreter's teardown of every module it imported.

    That teardown is pure overhead for a command that has finished: about a sixth of a `run`
    (every file and database is closed by now; stdout was flushed by `_delivered`). Under a
    profiler or a coverage tracer, which write their data at exit, the normal exit is kept.
    """
    if sys.gettrace() is not None or sys.getprofile() is not None:
        sys.exit(status)
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(status)
