"""The CLI remembers keyring's backend choice between runs, and re-discovers when it must.

These runs let keyring choose (no PYTHON_KEYRING_BACKEND). On Linux with the D-Bus session
pointed nowhere, keyring's discovery can only find the keyrings.alt file backend, kept under the
test's XDG_DATA_HOME, so no test touches a real keyring.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from llm_cascade.simulator import Simulator

from .support import SIM_KEY, run_cli, write_config

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="discovery would find the machine's real keyring"
)
STORED = "sk-stored-in-the-keyring-0123"
DISCOVERY = "keyring.backends.macOS"  # imported only when keyring probes every backend
NO_BUS = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/llm-cascade-test-bus"}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
    for name, value in NO_BUS.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "home"


@pytest.fixture
def cache(home) -> Path:
    return home / ".local" / "share" / "llm-cascade" / "keyring-backend.json"


@pytest.fixture
def cfg(tmp_path, sim: Simulator, home) -> Path:
    """A cascade whose only entry accepts only the key in the keyring, not SIM_KEY."""
    sim.require_key(STORED)
    path = write_config(tmp_path, sim, {"x": ["a"]})
    stored = run_cli("key", "set", "sim", "-c", str(path), stdin=STORED)
    assert stored.returncode == 0, stored.stderr
    return path


def run(cfg: Path, *args: str, env: dict[str, str] | None = None):
    return run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", *args, env=env)


def discovered(cfg: Path, env: dict[str, str] | None = None) -> bool:
    """Run once and say whether keyring probed every backend (import times on stderr)."""
    done = run(cfg, env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    assert done.returncode == 0, done.stderr
    return DISCOVERY in done.stderr


def saved_backend(cache: Path) -> str:
    """The backend saved for the newest environment."""
    return json.loads(cache.read_text())["choices"][0]["backend"]


def write_keyringrc(home: Path, backend: str) -> None:
    rc = home / ".config" / "python_keyring" / "keyringrc.cfg"
    rc.parent.mkdir(parents=True, exist_ok=True)
    rc.write_text(f"[backend]\ndefault-keyring={backend}\n")


def test_a_run_loads_the_remembered_backend_instead_of_probing_them_all(cfg, cache):
    # `key set` discovered the backend and remembered it, owner-only.
    assert saved_backend(cache) == "keyrings.alt.file.PlaintextKeyring"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert not discovered(cfg)  # and the key came from that backend: the simulator took it
    done = run(cfg, "-vv")
    assert "keyring: using keyrings.alt.file.PlaintextKeyring (saved in" in done.stderr
    assert STORED not in done.stderr


def test_a_run_without_a_saved_choice_discovers_and_saves_it(cfg, cache):
    cache.unlink()
    assert discovered(cfg)
    assert saved_backend(cache) == "keyrings.alt.file.PlaintextKeyring"
    assert not discovered(cfg)


def test_a_new_d_bus_session_means_a_fresh_discovery_once(cfg, cache):
    assert not discovered(cfg)
    other_bus = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/another-bus"}
    assert discovered(cfg, other_bus)
    assert not discovered(cfg, other_bus)
    # Each environment keeps its own choice: a desktop session and cron jobs take turns.
    assert not discovered(cfg)
    assert not discovered(cfg, other_bus)


def test_an_installed_package_means_a_fresh_discovery(cfg, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    env = {"PYTHONPATH": str(site)}
    assert discovered(cfg, env)  # a new folder on sys.path
    assert not discovered(cfg, env)
    (site / "keyrings_new_backend.py").write_text("")  # like `pip install` into that folder
    assert discovered(cfg, env)


def test_keyrings_own_config_file_is_honoured_over_the_saved_choice(cfg, home):
    assert run(cfg).returncode == 0
    write_keyringrc(home, "keyring.backends.null.Keyring")
    done = run(cfg, "--ignore-cooldown")
    assert done.returncode == 1 and "401" in done.stderr  # SIM_KEY was sent: no keyring
    assert SIM_KEY not in done.stderr


def test_python_keyring_backend_is_honoured_over_the_saved_choice(cfg):
    assert run(cfg).returncode == 0
    done = run(cfg, env={"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"})
    assert done.returncode == 1 and "401" in done.stderr


@pytest.mark.parametrize(
    "spoil",
    [
        lambda path: path.write_text(
            path.read_text().replace("keyrings.alt.file.PlaintextKeyring", "gone.Keyring")
        ),
        lambda path: path.write_text("{not json"),
        lambda path: path.chmod(0o666),  # others could make us import their code
    ],
    ids=["backend-gone", "corrupt", "writable-by-others"],
)
def test_a_saved_choice_that_cannot_be_used_means_a_fresh_discovery(cfg, cache, spoil):
    spoil(cache)
    assert discovered(cfg)
    assert saved_backend(cache) == "keyrings.alt.file.PlaintextKeyring"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert not discovered(cfg)


def test_no_backend_is_remembered_and_then_the_keyring_is_not_even_imported(
    tmp_path, sim, home, cache
):
    """A headless machine: keyring finds nothing; runs use env vars, quietly and fast."""
    write_keyringrc(home, "keyring.backends.fail.Keyring")  # what discovery finds there
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    first = run(cfg)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    assert saved_backend(cache) == "keyring.backends.fail.Keyring"
    timed = run(cfg, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert timed.returncode == 0
    imported = {line.split("|")[-1].strip() for line in timed.stderr.splitlines()}
    assert "keyring" not in imported and "keyring.core" not in imported
    assert run(cfg).stderr == ""
    listed = run_cli("key", "list", "-c", str(cfg))  # and `key list` still says so
    assert "no keyring backend is installed or reachable" in listed.stderr


def test_a_data_dir_that_cannot_be_written_only_costs_a_discovery(cfg, cache):
    data_dir = cache.parent
    cache.unlink()
    data_dir.rmdir()
    data_dir.write_text("")  # a file where the folder should be: not even root can write there
    assert discovered(cfg)
    assert discovered(cfg)
