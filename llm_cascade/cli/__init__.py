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
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, LlmCascadeError
from ..keyring_choice import remember_choice
from . import failed_cmd, state
from . import run as run_module
from ._common import setup_logging
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
        print(f"llm-cascade {__version__}")
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
    remember_choice()  # each run loads the keyring backend found before instead of probing all


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
    try:
        app(args=run_module.with_optional_values(sys.argv[1:]))
    except LlmCascadeError as exc:
        text = str(exc)
        print(text if text.startswith("Error") else f"Error: {text}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # the reader went away (`... | head -1`): quiet, like SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except Exception as exc:  # the one catch-all: a bug must still not print a traceback
        if os.environ.get("LLM_CASCADE_DEBUG"):
            raise
        print(
            f"Error: internal error ({type(exc).__name__}: {exc}); rerun with"
            " LLM_CASCADE_DEBUG=1 for a traceback and please report it",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILED)
