"""Private Redis and PostgreSQL servers for the breaker-state tests: real engines, started on
free loopback ports in temp dirs, stopped by their fixtures. PostgreSQL refuses to run as
root: then its files belong to `nobody` and its commands run through `runuser`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], limit_s: float = 20.0) -> None:
    """Poll until the server accepts a connection (or it exited, or the limit passed)."""
    give_up = time.monotonic() + limit_s
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)  # polling a starting server, not waiting for time to pass
    raise RuntimeError(f"nothing listens on port {port} after {limit_s} s")


class RedisServer:
    """`redis-server` with no persistence, on its own port and directory."""

    def __init__(self, password: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="llmc-redis-"))
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL cluster made by `initdb`, run by `pg_ctl` on its own port and socket dir.
    With `password`, user `postgres` must give it (scram-sha-256); else anyone is trusted."""

    def __init__(self, password: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="llmc-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.running = False
        self.password = password

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = ["runuser", "-u", "nobody", "--", *argv] if self.as_root else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def _bin(self, name: str) -> str:
        for folder in PG_BIN_DIRS:
            if (folder / name).exists():
                return str(folder / name)
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed (apt-get install postgresql)")
        return found

    def start(self) -> PostgresServer:
        if self.as_root:
            if shutil.which("runuser") is None:
                pytest.skip("PostgreSQL refuses root and there is no runuser to drop it")
            os.chown(self.dir, 65534, 65534)  # nobody
        if not self.data.exists():
            auth = ["-A", "trust"]
            if self.password is not None:
                pwfile = self.dir / "pwfile"
                pwfile.write_text(self.password + "\n")
                if self.as_root:
                    os.chown(pwfile, 65534, 65534)
                auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
            self._run(
                self._bin("initdb"),
                "-D",
                str(self.data),
                *auth,
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            )
        options = (
            f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=60"
        )
        self._run(
            self._bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "-l",
            str(self.dir / "log"),
            "start",
        )
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._run(self._bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
            self.running = False

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
