"""The `llm-cascade` command line: a thin layer over the library.

Each command group lives in its own module and imports heavy things (httpx, keyring, rich)
only when it runs, so `--help` and short commands start fast. `main()` is the console
script: it turns every expected error into one line on stderr and an exit status.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Annotated

import typer

from .._version import __version__
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PIPE, LlmCascadeError
from ..keyring_choice import remember_choice
from ._common import echo, setup_logging, silence_stdout

# name: (module, attribute, a sub-app with its own commands?), in the order `--help` lists them
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "run": (".run", "run", False),
    "status": (".state", "status", False),
    "log": (".state", "log", False),
    "reset": (".state", "reset", False),
    "health": (".views_cmd", "health", False),
    "stats": (".views_cmd", "stats", False),
    "metrics": (".views_cmd", "metrics", False),
    "top": (".top_cmd", "top", False),
    "failed": (".failed_cmd", "app", True),
    "setup": (".setup_cmd", "setup", False),
    "key": (".key_cmd", "key_app", True),
    "config": (".config_cmd", "config_app", True),
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
        add_completion=False,
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
                app.command(name)(target)
    return app


def main() -> None:
    """Console-script entry point: no tracebacks, documented exit statuses."""
    _exit(_delivered(_exit_code()))


def _exit_code() -> int:
    """Run the command; every way it can end becomes an exit status."""
    try:
        args = sys.argv[1:]
        command = args[0] if args and args[0] in COMMANDS else None
        if command == "run":
            from .run import with_optional_values

            args = with_optional_values(args)
        build_app(command)(args=args)
    except SystemExit as done:  # typer ends every command this way
        if isinstance(done.code, str):  # sys.exit("message"): printed, status 1, as Python does
            print(done.code, file=sys.stderr)
            return EXIT_FAILED
        return done.code or 0
    except LlmCascadeError as exc:
        text = str(exc)
        if text:  # StdoutClosed says nothing, like a process killed by SIGPIPE
            print(text if text.startswith("Error") else f"Error: {text}", file=sys.stderr)
        return exc.exit_code
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
    return 0


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
