"""`setup` (template mode), `config check` and `config path` as a user runs them."""

from __future__ import annotations

import json
import sqlite3
import stat
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from llm_cascade.simulator import Fail

from .support import run_cli, write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def test_setup_writes_the_template_folders_and_database(home):
    done = run_cli("setup", stdin="")  # not a terminal: no question, no waiting
    assert done.returncode == 0, done.stderr
    config = home / ".config" / "llm-cascade" / "config.toml"
    data = home / ".local" / "share" / "llm-cascade"
    template = resources.files("llm_cascade").joinpath("config_template.toml").read_text()
    assert config.read_text() == template  # the default data dir is the template's
    assert mode(config) == 0o600 and mode(config.parent) == 0o700
    assert mode(data) == 0o700 and mode(data / "failed_prompts") == 0o700
    tables = {
        row[0]
        for row in sqlite3.connect(data / "db.sqlite").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {"attempt_log", "cooldown"} <= tables
    assert f"Created config: {config}" in done.stdout
    # The tests' null keyring keeps nothing, so the variable is the only fix offered.
    assert "  openai: set OPENAI_API_KEY" in done.stdout
    assert "llm-cascade key set" not in done.stdout
    assert "llm-cascade config check" in done.stdout
    assert "Store API keys" not in done.stdout + done.stderr
    assert not list(config.parent.glob(".*.tmp"))  # the temp file is gone


def test_setup_twice_leaves_the_first_config_untouched(home):
    assert run_cli("setup", stdin="").returncode == 0
    config = home / ".config" / "llm-cascade" / "config.toml"
    config.write_text(config.read_text() + "# my edit\n")
    before = config.stat()
    done = run_cli("setup", stdin="")
    assert done.returncode == 0
    assert f"Config file already exists at '{config}'" in done.stderr
    assert "llm-cascade config check" in done.stderr
    assert config.read_text().endswith("# my edit\n")
    assert config.stat().st_mtime_ns == before.st_mtime_ns
    assert run_cli("setup", "-i", stdin="").returncode == 0  # the wizard asks nothing either


@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_xdg_variables_count_as_unset(home, empty):
    done = run_cli("setup", stdin="", env={"XDG_CONFIG_HOME": empty, "XDG_DATA_HOME": empty})
    assert done.returncode == 0, done.stderr
    config = home / ".config" / "llm-cascade" / "config.toml"
    assert tomllib.loads(config.read_text())["database"]["path"] == (
        "~/.local/share/llm-cascade/db.sqlite"
    )
    assert (home / ".local" / "share" / "llm-cascade" / "db.sqlite").exists()
    assert run_cli("config", "path", env={"XDG_CONFIG_HOME": empty}).stdout == f"{config}\n"


def test_setup_follows_xdg_dirs_outside_home(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_DATA_HOME": str(tmp_path / "data")}
    done = run_cli("setup", stdin="", env=env)
    assert done.returncode == 0, done.stderr
    config = tomllib.loads((tmp_path / "cfg" / "llm-cascade" / "config.toml").read_text())
    data = tmp_path / "data" / "llm-cascade"
    assert config["database"]["path"] == str(data / "db.sqlite")  # not ~/.local/share
    assert config["failure_persistence"]["dir"] == str(data / "failed_prompts")
    assert (data / "db.sqlite").exists() and (data / "failed_prompts").is_dir()
    assert f"Created data directory: {data}\n" in done.stdout
    assert not (tmp_path / "home" / ".local").exists()


def test_config_option_and_env_var_choose_where_setup_writes(tmp_path):
    target = tmp_path / "new" / "deeper" / "mine.toml"
    assert run_cli("setup", "-c", str(target), stdin="").returncode == 0
    assert target.is_file() and mode(target.parent) == 0o700
    other = tmp_path / "other.toml"
    done = run_cli("setup", stdin="", env={"LLM_CASCADE_CONFIG": str(other)})
    assert done.returncode == 0 and other.is_file()
    assert run_cli("config", "path", env={"LLM_CASCADE_CONFIG": str(other)}).stdout == (
        f"{other}\n"
    )


def test_setup_refuses_a_directory_where_the_config_should_be(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    done = run_cli("setup", "-c", str(tmp_path / "dir.toml"), stdin="")
    assert done.returncode == 2 and "is a directory" in done.stderr and "-c FILE" in done.stderr


def test_config_check_says_which_cascades_cannot_run_and_how_to_fix_them(home):
    assert run_cli("setup", stdin="").returncode == 0
    done = run_cli("config", "check")
    assert done.returncode == 2
    assert f"Config:         {home / '.config' / 'llm-cascade' / 'config.toml'}" in done.stdout
    assert f"Database:       {home / '.local/share/llm-cascade/db.sqlite'}" in done.stdout
    assert "Failed prompts: " in done.stdout and "Keyring:        null Keyring" in done.stdout
    assert "fast_task       1  ollama/llama3" in done.stdout
    assert "cascade 'creative_task' cannot run: no entry has an API key" in done.stdout
    assert "cannot run: no entry has an API key. set OPENAI_API_KEY;" in done.stdout
    assert "llm-cascade key set" not in done.stdout  # the null keyring keeps nothing
    with_keyring = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
    done = run_cli("config", "check", env=with_keyring)
    assert "run `llm-cascade key set openai` or set OPENAI_API_KEY" in done.stdout
    assert done.stdout.rstrip().endswith("2 of 3 cascades can run; fix the errors above.")

    env = {"OPENAI_API_KEY": "sk-0123456789abcdef"}
    done = run_cli("config", "check", env=env)
    assert done.returncode == 0, done.stdout
    assert "creative_task   1  openai/gpt-4o                       env var OPENAI_API_KEY" in (
        done.stdout
    )
    assert done.stdout.rstrip().endswith("OK: 3 of 3 cascades can run.")
    report = json.loads(run_cli("config", "check", "--json", env=env).stdout)
    assert report["runnable"] is True
    assert report["cascades"][0]["entries"][1] == {
        "entry": "anthropic/claude-sonnet-4-20250514",
        "provider": "anthropic",
        "key": "missing",
        "env_var": "ANTHROPIC_API_KEY",
        "cooling": False,
        "cooldown_until": None,
        "failures": 0,
        "reason": None,
    }
    assert "sk-0123456789abcdef" not in json.dumps(report)


def test_config_check_shows_cooldowns_without_failing(tmp_path, sim):
    sim.script("a", Fail(503, retry_after="600"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi").returncode == 0
    done = run_cli("config", "check", "-c", str(cfg))
    assert done.returncode == 0, done.stdout
    line = next(x for x in done.stdout.splitlines() if "sim/a" in x)
    assert "env var SIM_KEY" in line and "until " in line and "unavailable" in line
    report = json.loads(run_cli("config", "check", "-c", str(cfg), "--json").stdout)
    assert report["cascades"][0]["entries"][0]["cooling"] is True


@pytest.mark.parametrize(
    ("toml", "code", "message"),
    [
        ('[providers.a]\ntype = "gtp"\n', 2, "providers.a.type: unknown 'gtp'"),
        ('[providers.a]\ntype = "ollama"\n', 2, "no cascades defined: add a [cascades.NAME]"),
    ],
)
def test_config_check_exits_2_for_configs_that_cannot_run(tmp_path, toml, code, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    done = run_cli("config", "check", "-c", str(cfg))
    assert done.returncode == code
    assert message in done.stdout + done.stderr


def test_config_check_without_a_config_says_how_to_create_one():
    done = run_cli("config", "check")
    assert done.returncode == 2 and "run `llm-cascade setup`" in done.stderr
