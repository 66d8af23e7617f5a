"""The `llm-cascade` command line: a thin layer over the library.

Each command group lives in its own module and imports heavy things (httpx, keyring, rich)
only when it runs, so `--help` and short commands start fast. `main()` is the console
script: it turns every expected error into one line on stderr and an exit status.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .._version import __version__
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PIPE, LlmCascadeError
from . import failed_cmd, state
from . import run as run_module
from ._common import echo, setup_logging, silence_stdout
from .config_cmd import config_app
from .key_cmd import key_app
from .setup_cmd import setup

app = typer.Typer(
    name="llm-cascade",
    help="Cascading LLM inference across multiple providers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        echo(f"llm-cascade {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Cascading LLM inference across multiple providers."""
    setup_logging(0)


app.command("run")(run_module.run)
app.command("status")(state.status)
app.command("log")(state.log)
app.command("reset")(state.reset)
app.add_typer(failed_cmd.app, name="failed")
app.command("setup")(setup)
app.add_typer(key_app, name="key")
app.add_typer(config_app, name="config")


def main() -> None:
    """Console-script entry point: no tracebacks, documented exit statuses."""
    sys.exit(_delivered(_exit_code()))


def _exit_code() -> int:
    """Run the command; every way it can end becomes an exit status."""
    try:
        app(args=run_module.with_optional_values(sys.argv[1:]))
    except SystemExit as done:  # typer ends every command this way
        return done.code if isinstance(done.code, int) else EXIT_FAILED if done.code else 0
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
        return _internal(exc)
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
        return _cannot_write(exc)
    return code


def _cannot_write(exc: OSError) -> int:
    silence_stdout()
    print(f"Error: cannot write to stdout: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_FAILED


def _internal(exc: Exception) -> int:
    if os.environ.get("LLM_CASCADE_DEBUG"):
        raise exc
    print(
        f"Error: internal error ({type(exc).__name__}: {exc}); rerun with"
        " LLM_CASCADE_DEBUG=1 for a traceback and please report it",
        file=sys.stderr,
    )
    return EXIT_FAILED
