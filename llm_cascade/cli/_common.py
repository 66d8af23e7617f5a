"""Shared CLI plumbing: options, logging, stderr messages and loading the config."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .. import redaction, untrusted
from ..errors import EXIT_PIPE, EXIT_USAGE, LlmCascadeError, UsageError


# Shell completion of names from the config: these run only while the shell completes a word,
# and import the code that reads the config only then.
def complete_cascades(ctx: typer.Context, incomplete: str) -> list[str]:
    from .completion import config_names

    return config_names(ctx, "cascades", incomplete)


def complete_templates(ctx: typer.Context, incomplete: str) -> list[str]:
    from .completion import config_names

    return config_names(ctx, "templates", incomplete)


def complete_providers(ctx: typer.Context, incomplete: str) -> list[str]:
    from .completion import config_names

    return config_names(ctx, "providers", incomplete)


def complete_models(ctx: typer.Context, incomplete: str) -> list[str]:
    from .completion import model_specs

    return model_specs(ctx, incomplete)


def complete_entries(ctx: typer.Context, incomplete: str) -> list[str]:
    from .completion import entry_keys

    return entry_keys(ctx, incomplete)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file. Default: $LLM_CASCADE_CONFIG, else the platform config dir"
        " (see `llm-cascade config path`).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
LocalOption = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Read this host's attempt log, not the fleet's ([log] backend = \"postgres\").",
    ),
]
# A counted flag: `-v`, `-vv` or `--verbose --verbose`; the empty metavar and no default keep
# typer's help from advertising a value (`--verbose INTEGER`) that the parser would refuse.
VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        metavar="",
        show_default=False,
        help="Log attempts on stderr; repeat for more (-vv: also HTTP requests).",
    ),
]

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def setup_logging(verbosity: int, default: int = logging.WARNING) -> None:
    """Log to stderr: -v/-vv, else LLM_CASCADE_LOG or RUST_LOG (a level name), else `default`."""
    level = default
    env = (os.environ.get("LLM_CASCADE_LOG") or os.environ.get("RUST_LOG") or "").strip().lower()
    if env in _LEVELS:
        level = _LEVELS[env]
    if verbosity:
        level = logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger("llm_cascade")
    root.setLevel(level)
    root.propagate = False
    handler = _SafeHandler(sys.stderr)
    if level <= logging.INFO:
        handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)-5s %(message)s"))
    else:
        handler.setFormatter(_ShortFormatter("llm-cascade: %(levelname)s: %(message)s"))
    root.handlers[:] = [handler]
    # httpx logs every request (method, URL, status; never headers) at INFO; show it at -vv.
    # It needs the same handler: its own logger has none, and Python's fallback drops INFO.
    http = logging.getLogger("httpx")
    http.setLevel(logging.INFO if verbosity >= 2 else logging.WARNING)
    http.propagate = False
    http.handlers[:] = [handler]


class _SafeHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """stderr, where no line shows a known secret, drives the terminal or fails to encode,
    whatever a record holds (httpx logs the provider's reason phrase, for one)."""

    def format(self, record: logging.LogRecord) -> str:
        line = redaction.redact(super().format(record))
        return untrusted.escape_controls(untrusted.encodable(line))


class _ShortFormatter(logging.Formatter):
    """`llm-cascade: warning: ...` for the few lines a quiet run prints."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


class _UtcFormatter(logging.Formatter):
    """Timestamps as in the original: UTC with microseconds and a Z."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StdoutClosed(LlmCascadeError):
    """The reader of stdout went away (`| head -1`): exit quietly, as SIGPIPE would."""

    exit_code = EXIT_PIPE


class StdoutFailed(LlmCascadeError):
    """stdout cannot take what we write (a full disk, an I/O error)."""


def write_stdout(text: str) -> None:
    """Write `text` to stdout in full and flush it; raise StdoutClosed or StdoutFailed.

    A plain `sys.stdout.write` of a large text can stop after the part the pipe took and
    drop the rest silently when the reader goes away; this loops until every byte is out,
    so a reader that leaves early is seen and nothing is half-delivered unnoticed. Text
    that cannot be encoded raises UnicodeEncodeError before anything is written.
    """
    data = text.encode(sys.stdout.encoding or "utf-8")
    try:
        sys.stdout.flush()
        out = sys.stdout.buffer
        view = memoryview(data)
        while view:
            view = view[out.write(view) or 0 :]
            out.flush()
    except BrokenPipeError:
        silence_stdout()
        raise StdoutClosed("") from None
    except OSError as exc:
        silence_stdout()
        raise StdoutFailed(f"cannot write to stdout: {exc.strerror or exc}") from None


def echo(text: str = "") -> None:
    """A line on stdout (results), written in full or an error that says why not."""
    write_stdout(text + "\n")


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the exit-time flush of what could not be written fails
    no more (Python would print "Exception ignored" and exit 120)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def say(message: str) -> None:
    """A line on stderr (progress, hints)."""
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `Error: message` on stderr and exit with `code`."""
    say(f"Error: {message}")
    raise typer.Exit(code)


def usage(message: str) -> NoReturn:
    raise UsageError(message)


def format_table(headers: list[str], rows: list[list[str]], min_width: int = 8) -> str:
    """Plain aligned columns, as the original's `key list`: two spaces apart, padded."""
    widths = [max([min_width, len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
