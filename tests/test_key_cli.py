"""`llm-cascade key ...` as a user runs it, against a real file keyring in the test's tmp dir."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest
from keyrings.alt.file import PlaintextKeyring

from llm_cascade.simulator import Fail

from .support import HELP_HINT, cli_command, error_line, run_cli, write_config

FILE_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-abcdef0123456789"
CONFIG = """
[providers.openai]
type = "openai"
api_key_service = "openai"
api_key_env = "OPENAI_API_KEY"

[providers.groq]
type = "openai"
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_API_KEY"

[providers.proxy]
type = "openai"
base_url = "http://127.0.0.1:9/v1"

[providers.ollama]
type = "ollama"

[cascades.x]
entries = [{ provider = "openai", model = "gpt-4o" }]
"""


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def file_keyring(tmp_path):
    """The keyrings.alt file backend, stored under this test's XDG_DATA_HOME."""
    backend = PlaintextKeyring()
    assert Path(backend.file_path).is_relative_to(tmp_path)
    return backend


def key(*args, env=None, stdin=""):
    return run_cli("key", *args, stdin=stdin, env={**FILE_KEYRING, **(env or {})})


def test_key_set_from_a_pipe_is_stripped_and_shown_masked(cfg, file_keyring):
    done = key("set", "openai", "-c", str(cfg), stdin=f"  {SECRET} \n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "API key for 'openai' stored in keyring.\n"
    assert "username 'openai'" in done.stderr
    assert file_keyring.get_password("llm-cascade", "openai") == SECRET  # stripped

    done = key("get", "openai", "-c", str(cfg))
    assert done.returncode == 0 and done.stdout == "sk...89\n"  # 4 characters at most
    assert "from the keyring" in done.stderr
    done = key("get", "openai", "-c", str(cfg), "--show-full")
    assert done.stdout == f"{SECRET}\n"


def test_the_key_stored_by_key_set_is_the_one_run_uses(tmp_path, sim, file_keyring):
    # The `sim` provider has no api_key_service: both sides use the provider name.
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    sim.require_key(SECRET)  # the SIM_KEY env var holds another key, which would get a 401
    assert key("set", "sim", "-c", str(cfg), stdin=SECRET).returncode == 0
    assert file_keyring.get_password("llm-cascade", "sim") == SECRET
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", env=FILE_KEYRING)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_key_set_clears_the_auth_cooldown_left_by_a_rejected_key(tmp_path, sim, file_keyring):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    sim.script("a", Fail(401))
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi").returncode == 1
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert status[0]["state"] == "open" and status[0]["reason"] == "auth"

    done = key("set", "sim", "-c", str(cfg), stdin=SECRET)
    assert done.returncode == 0, done.stderr
    assert "Cleared the auth cooldown of sim/a" in done.stderr
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert status[0]["state"] == "closed"


def test_key_list_keeps_the_original_layout_and_says_where_keys_come_from(cfg, file_keyring):
    file_keyring.set_password("llm-cascade", "openai", SECRET)
    env = {"OPENAI_API_KEY": "sk-env-one-0123456789", "GROQ_API_KEY": "gsk-env-0123456789"}
    done = key("list", "-c", str(cfg), env=env)
    assert done.returncode == 0, done.stderr
    rows = [
        ("PROVIDER", "KEYRING", "ENV VAR", "SOURCE"),
        ("--------", "--------", "--------", "-" * 20),
        ("groq", "not set", "set", "env var GROQ_API_KEY"),
        ("ollama", "n/a", "n/a", "not needed"),
        ("openai", "set", "set", "keyring"),
        ("proxy", "not set", "n/a", "missing"),
    ]
    widths = (8, 8, 8, 20)
    expected = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    assert done.stdout.splitlines() == expected
    assert "Keyring backend: file PlaintextKeyring" in done.stderr
    # The third-party proxy is not offered OPENAI_API_KEY; the fix says what to do.
    assert "set api_key_env for it (OPENAI_API_KEY is not sent to a custom base_url)" in (
        done.stderr
    )
    for secret in (SECRET, *env.values()):
        assert secret not in done.stdout + done.stderr

    data = json.loads(key("list", "-c", str(cfg), "--json", env=env).stdout)
    assert data["keyring"]["backend"] == "file PlaintextKeyring"
    openai = next(p for p in data["providers"] if p["provider"] == "openai")
    assert openai == {
        "provider": "openai",
        "type": "openai",
        "keyring": "set",
        "keyring_username": "openai",
        "env_var": "OPENAI_API_KEY",
        "env": "set",
        "source": "keyring",
    }


def test_key_get_falls_back_to_the_env_var_and_names_the_fix_when_missing(cfg, file_keyring):
    done = key("get", "groq", "-c", str(cfg), env={"GROQ_API_KEY": " gsk-0123456789abcdef "})
    assert done.returncode == 0
    assert done.stdout == "gs...ef\n"
    assert "(from env var GROQ_API_KEY)" in done.stderr

    done = key("get", "groq", "-c", str(cfg))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: API key not configured for provider 'groq':"
        " run `llm-cascade key set groq` or set GROQ_API_KEY"
    )


def test_key_delete_removes_the_key_and_says_when_there_was_none(cfg, file_keyring):
    file_keyring.set_password("llm-cascade", "openai", SECRET)
    done = key("delete", "openai", "-c", str(cfg))
    assert done.returncode == 0 and "deleted from keyring" in done.stdout
    assert file_keyring.get_password("llm-cascade", "openai") is None
    done = key("delete", "openai", "-c", str(cfg))
    assert done.returncode == 1 and "No key for 'openai' in the keyring" in done.stderr


@pytest.mark.parametrize("command", ["get", "delete"])
def test_providers_without_keys_are_not_an_error_for_get_and_delete(cfg, command):
    done = key(command, "ollama", "-c", str(cfg))
    assert done.returncode == 0
    assert done.stdout == "Provider 'ollama' does not use an API key.\n"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["set", "ollama"], SECRET, "does not use an API key"),
        (["set", "opnai"], SECRET, "Provider 'opnai' not found in config"),
        (["set", "openai"], "", "the API key is empty"),
        (["set", "openai"], "sk-one\nsk-two\n", "several lines"),
        (["set", "openai"], "sk-pasted\u201d\n", "non-ASCII"),
        (["get", "nope"], "", "(defined: groq, ollama, openai, proxy)"),
        (["set", "openai", SECRET], "", "takes no key argument"),
    ],
)
def test_key_mistakes_exit_2_with_the_fix(cfg, file_keyring, args, stdin, message):
    done = key(*args, "-c", str(cfg), stdin=stdin)
    assert done.returncode == 2
    assert message in done.stderr and error_line(done.stderr)
    assert SECRET not in done.stdout + done.stderr
    assert not Path(file_keyring.file_path).exists()


def test_a_keyring_that_keeps_nothing_is_refused_with_the_alternative(cfg):
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    done = run_cli("key", "set", "openai", "-c", str(cfg), stdin=SECRET, env=env)
    assert done.returncode == 1
    assert "no usable keyring" in done.stderr and "export OPENAI_API_KEY" in done.stderr
    assert "unusable" in run_cli("key", "list", "-c", str(cfg), env=env).stderr


def test_a_locked_keyring_costs_one_warning_line_and_env_vars_still_work(cfg):
    env = {
        "PYTHON_KEYRING_BACKEND": "tests.keyring_backends.LockedKeyring",
        "PYTHONPATH": str(REPO),
        "OPENAI_API_KEY": "sk-env-0123456789abcdef",
    }
    done = run_cli("key", "get", "openai", "-c", str(cfg), env=env)
    assert done.returncode == 0 and done.stdout == "sk...ef\n"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("Warning")]
    assert len(warnings) == 1 and "KeyringLocked" in warnings[0]
    done = run_cli("key", "list", "-c", str(cfg), env=env)
    assert done.returncode == 0
    assert [line.split()[1] for line in done.stdout.splitlines()[2:]] == [
        "error",
        "n/a",
        "error",
        "error",
    ]


def test_a_keyring_that_never_answers_does_not_hang_the_cli(cfg):
    env = {
        "PYTHON_KEYRING_BACKEND": "tests.keyring_backends.HangingKeyring",
        "PYTHONPATH": str(REPO),
        "LLM_CASCADE_KEYRING_TIMEOUT": "1",  # generous: loading the backend must fit in it
        "OPENAI_API_KEY": "sk-env-0123456789abcdef",
    }
    done = run_cli("key", "list", "-c", str(cfg), env=env, timeout=20)
    assert done.returncode == 0
    assert done.stderr.count("no answer within 1 s") == 1
    done = run_cli("key", "get", "openai", "-c", str(cfg), env=env, timeout=20)
    assert done.returncode == 0 and done.stdout == "sk...ef\n"


def test_keyring_false_in_the_config_means_env_vars_only(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("keyring = false\n" + CONFIG)
    done = run_cli("key", "set", "openai", "-c", str(cfg), stdin=SECRET, env=FILE_KEYRING)
    assert done.returncode == 2
    assert "keyring = false" in done.stderr and "export OPENAI_API_KEY" in done.stderr
    done = run_cli("key", "list", "-c", str(cfg), env=FILE_KEYRING)
    assert done.stdout.splitlines()[4].split()[:2] == ["openai", "off"]
    assert "Keyring: off" in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_key_set_on_a_terminal_reads_the_key_without_echo(cfg, file_keyring):
    child = pexpect.spawn(
        cli_command()[0],
        ["key", "set", "openai", "-c", str(cfg)],
        env={**os.environ, **FILE_KEYRING},
        encoding="utf-8",
        timeout=20,
    )
    child.delaybeforesend = None  # getpass turns echo off before it prints the prompt
    child.expect_exact("Enter API key for openai: ")
    child.sendline(f"  {SECRET}  ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "stored in keyring" in child.before
    assert SECRET not in child.before
    assert file_keyring.get_password("llm-cascade", "openai") == SECRET


def test_with_the_keyring_off_no_hint_suggests_key_set(tmp_path, sim):
    """`keyring = false`: `key set` refuses, so no message may send the user there."""
    sim.require_key("the-right-key")
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra={"keyring": False})
    rejected = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--explain")
    assert rejected.returncode == 1
    assert "401" in rejected.stderr and "set SIM_KEY" in rejected.stderr
    missing = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "hi", "--ignore-cooldown", env={"SIM_KEY": ""}
    )
    assert "API key not configured for provider 'sim': set SIM_KEY" in missing.stderr
    checked = run_cli("config", "check", "-c", str(cfg), env={"SIM_KEY": ""})
    assert checked.returncode == 2 and "set SIM_KEY" in checked.stdout
    got = run_cli("key", "get", "sim", "-c", str(cfg), env={"SIM_KEY": ""})
    listed = run_cli("key", "list", "-c", str(cfg), env={"SIM_KEY": ""})
    argument = run_cli("key", "set", "sim", "sk-pasted-here", "-c", str(cfg))
    assert argument.returncode == 2 and "export SIM_KEY" in argument.stderr
    assert "sk-pasted-here" not in argument.stderr
    for done in (rejected, missing, checked, got, listed, argument):
        said = HELP_HINT.sub("", done.stdout + done.stderr)  # the hint to `-h` is no advice
        assert "llm-cascade key set" not in said, said


def test_with_the_keyring_on_the_auth_hint_offers_key_set_and_the_variable(tmp_path, sim):
    sim.require_key("the-right-key")
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", env=FILE_KEYRING)
    assert done.returncode == 1
    assert "run `llm-cascade key set sim` or set SIM_KEY" in done.stderr


def test_no_keyring_backend_is_the_documented_fallback_not_a_warning_on_every_run(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}  # a headless server
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    verbose = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-v", env=env)
    assert "no keyring backend; the key for 'sim' comes from env vars" in verbose.stderr
    listed = run_cli("key", "list", "-c", str(cfg), env=env)
    assert listed.stdout.splitlines()[2].split()[:3] == ["sim", "no", "backend"]
    assert "no keyring backend is installed or reachable" in listed.stderr
    assert "keys come from env vars only" in listed.stderr and "Warning" not in listed.stderr
    checked = run_cli("config", "check", "-c", str(cfg), env=env)
    assert "reachable); keys come from env vars" in checked.stdout
    assert "Warnings" not in checked.stdout
