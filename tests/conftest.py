"""Every test runs with its own HOME, XDG dirs, keyring and an idle simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import keyring
import pytest

from llm_cascade.clock import ManualClock
from llm_cascade.simulator import Simulator

from .state_servers import PostgresServer, RedisServer
from .support import SIM_AWS_KEY, SIM_KEY, MemoryKeyring

S = TypeVar("S", RedisServer, PostgresServer)
KEY_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "GROQ_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "MISTRAL_API_KEY",
    "CO_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    """No test sees the developer's home, config, keys or keyring."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.delenv("LLM_CASCADE_CONFIG", raising=False)
    monkeypatch.delenv("LLM_CASCADE_LOG", raising=False)
    monkeypatch.delenv("RUST_LOG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    # Subprocesses use the null backend (so keys come from env vars) unless a test picks another.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SIM_KEY", SIM_KEY)
    monkeypatch.setenv("SIM_AWS_KEY", SIM_AWS_KEY)
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    return memory


@pytest.fixture(scope="session")
def _session_sim() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


@pytest.fixture
def sim(_session_sim: Simulator) -> Simulator:
    """The shared simulator, with no scripts and no recorded requests."""
    _session_sim.reset()
    _session_sim.require_key(None)
    return _session_sim


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _serving(server: S) -> Iterator[S]:
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session; tests keep apart by key prefix."""
    yield from _serving(RedisServer().start())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the session; each test gets an empty schema."""
    yield from _serving(PostgresServer().start())
