"""The gateway as a real process for tests: `llm-cascade serve` on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from .support import SIM_KEY, cli_command

RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class Gateway:
    """A running `llm-cascade serve`; its stderr is collected as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.port: int | None = None
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                found = RUNNING.search(line)
                if found:
                    self.port = int(found.group(1))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        """The first stderr line matching `pattern`, waiting for it."""
        regex = re.compile(pattern)
        with self._seen:
            found: list[str] = []

            def seen() -> bool:
                found[:] = [line for line in self.lines if regex.search(line)]
                return bool(found) or self.proc.poll() is not None

            self._seen.wait_for(seen, timeout)
            assert found, f"no line matching {pattern!r} in:\n" + self.stderr
            return found[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        with self._seen:
            return "\n".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)  # every line of stderr is in `lines`
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


@contextmanager
def gateway(
    config: Path, *args: str, env: Mapping[str, str] | None = None, ready: bool = True
) -> Iterator[Gateway]:
    """Start `llm-cascade serve -c CONFIG --port 0 ARGS`, wait until it listens, stop it after."""
    full_env = {**os.environ, "SIM_KEY": SIM_KEY, **(env or {})}
    proc = subprocess.Popen(
        [*cli_command(), "serve", "-c", str(config), "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    running = Gateway(proc)
    try:
        if ready:
            running.wait_for_line(RUNNING.pattern)
            assert running.port is not None, running.stderr
            _wait_live(running.url)
        yield running
    finally:
        running.stop()
        assert "Traceback" not in running.stderr, running.stderr


def _wait_live(url: str) -> None:
    for _ in range(100):
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("the gateway never answered /healthz")
