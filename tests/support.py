"""Test helpers: configs aimed at the simulator, the CLI as a subprocess, a memory keyring."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from keyring.backend import KeyringBackend

from llm_cascade.cascade import Cascade, CascadeResult, RunOptions
from llm_cascade.clock import ManualClock
from llm_cascade.config import AppConfig, load_config
from llm_cascade.failures import FailureStore
from llm_cascade.simulator import Simulator
from llm_cascade.simulator.vendors.bedrock import SIM_AWS_KEY as SIM_BEDROCK_KEY
from llm_cascade.store import Store
from llm_cascade.types import Conversation

T = TypeVar("T")
SIM_KEY = "sim-test-key-0123456789"
SIM_AWS_KEY = SIM_BEDROCK_KEY  # `ACCESS_KEY_ID:SECRET` the simulated Bedrock checks signatures with


def tiny_png() -> bytes:
    """A valid one-pixel PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps entries in a dict."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        from keyring.errors import PasswordDeleteError

        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError("not found")


def entry(provider: str, model: str, **options: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **options}


def write_config(
    tmp_path: Path,
    sim: Simulator,
    cascades: Mapping[str, Iterable[str | dict[str, Any]]],
    *,
    providers: Mapping[str, dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    name: str = "config.toml",
) -> Path:
    """A config whose providers all point at the simulator. Cascade entries given as plain
    model names use the provider `sim` (openai type, key from SIM_KEY)."""
    provider_tables: dict[str, Any] = {
        "sim": {"type": "openai", "base_url": sim.base_url("openai"), "api_key_env": "SIM_KEY"}
    }
    for pname, table in (providers or {}).items():
        provider_tables[pname] = table
    doc: dict[str, Any] = {
        "providers": provider_tables,
        "cascades": {
            cname: {"entries": [e if isinstance(e, dict) else entry("sim", e) for e in entries]}
            for cname, entries in cascades.items()
        },
        "database": {"path": str(tmp_path / "state" / "db.sqlite")},
        "failure_persistence": {"dir": str(tmp_path / "failed")},
    }
    for key, value in (extra or {}).items():
        doc[key] = value
    path = tmp_path / name
    path.write_text(tomli_w.dumps(doc))
    return path


HELP_HINT = re.compile(r"Try 'llm-cascade( [a-z]+)* -h' for help\.")


def error_line(stderr: str) -> str:
    """The `Error: ...` line of a command that failed, checked for the one style every command
    has: that one line, then, for a usage error, the hint to the command's help; nothing else."""
    lines = stderr.strip().splitlines()
    assert lines and lines[0].startswith("Error: "), stderr
    assert len(lines) == 1 or (len(lines) == 2 and HELP_HINT.fullmatch(lines[1])), stderr
    return lines[0]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _run_engine(
    config: AppConfig,
    cascade: str,
    conversation: Conversation,
    clock: ManualClock,
    options: RunOptions,
) -> CascadeResult:
    with Store(config.database_path) as store:
        async with Cascade(config, store=store, clock=clock) as engine:
            return await engine.run(cascade, conversation, options)


def run_engine(
    config_path: Path,
    cascade: str,
    prompt: str | Conversation = "hello",
    *,
    clock: ManualClock | None = None,
    options: RunOptions | None = None,
) -> CascadeResult:
    """Run one cascade in-process with a manual clock (nothing sleeps)."""
    conversation = (
        prompt if isinstance(prompt, Conversation) else Conversation.single_user_prompt(prompt)
    )
    config = load_config(config_path)
    return run_async(
        _run_engine(config, cascade, conversation, clock or ManualClock(), options or RunOptions())
    )


def cli_command() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).with_name("llm-cascade")
    if script.exists():
        return [str(script)]
    found = shutil.which("llm-cascade")
    return [found] if found else [sys.executable, "-m", "llm_cascade"]


def run_in_terminal(*args: str) -> tuple[int | None, str]:
    """Run the CLI in a pseudo-terminal to its end: its exit status and what it showed, with
    the terminal's own CRLF line ends read back as LF (a CRLF the answer wrote stays CRLF)."""
    import pexpect

    child = pexpect.spawn(
        cli_command()[0],
        list(args),
        env={**os.environ, "SIM_KEY": SIM_KEY},
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect(pexpect.EOF)
        shown = child.before.replace("\r\n", "\n")
    finally:
        child.close(force=True)
    return child.exitstatus, shown


def run_cli(
    *args: str,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `llm-cascade ARGS` in a subprocess; a traceback on stderr fails the test.

    Without `stdin`, stdin is /dev/null, as for a cron job: never the test runner's own.
    """
    full_env = {**os.environ, "SIM_KEY": SIM_KEY, "SIM_AWS_KEY": SIM_AWS_KEY, **(env or {})}
    done = subprocess.run(
        [*cli_command(), *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


class RawServer:
    """A real HTTP server on 127.0.0.1 that answers every POST with fixed bytes.

    For replies no vendor sends on purpose (absurd numbers, deep nesting, broken bytes), which
    the simulator's vendors never produce.
    """

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`reason` replaces the status line's reason phrase; `headers` are sent as given (a
        Content-Type among them replaces application/json); with `tls` it serves https with
        the certificate the context holds."""
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.body = body
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})
        self.count = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.count += 1
                self.send_response(outer.status, outer.reason)
                if not any(name.lower() == "content-type" for name in outer.headers):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                for name, value in outer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(outer.body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:  # https, with the certificate the context holds
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def saved_files(folder: Path) -> list[Path]:
    """The saved prompts in `folder`, sorted by name, as `failed list` finds them: the prompts
    a killed process had in flight are saved as files first."""
    FailureStore(folder).list()
    return sorted(folder.glob("*.json"))


def saved_envelopes(folder: Path) -> list[dict[str, Any]]:
    """What each saved prompt file in `folder` holds (see `saved_files`)."""
    return [json.loads(p.read_text("utf-8")) for p in saved_files(folder)]
