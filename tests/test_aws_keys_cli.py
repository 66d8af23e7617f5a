"""AWS credentials through `key set|get|list|delete` and `config check`, as a user runs them:
one keyring entry holding ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN], the AWS_*
variables otherwise, a region from the config or AWS_REGION, and the secret never shown."""

from __future__ import annotations

import json

import pytest
from keyrings.alt.file import PlaintextKeyring

from llm_cascade.simulator import Reply
from llm_cascade.simulator.vendors.bedrock import SIM_AWS_ACCESS_KEY_ID, SIM_AWS_SECRET_ACCESS_KEY

from .support import entry, run_cli, write_config

FILE_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
PAIR = f"{SIM_AWS_ACCESS_KEY_ID}:{SIM_AWS_SECRET_ACCESS_KEY}"


@pytest.fixture
def cfg(tmp_path, sim):
    providers = {
        "bedrock": {"type": "bedrock", "base_url": sim.base_url("bedrock"), "region": "us-east-1"},
        "noregion": {"type": "bedrock", "base_url": sim.base_url("bedrock")},
    }
    cascades = {"x": [entry("bedrock", "m")], "y": [entry("noregion", "m")]}
    return write_config(tmp_path, sim, cascades, providers=providers)


def cli(*args, env=None, stdin=None):
    return run_cli(*args, stdin=stdin, env={**FILE_KEYRING, **(env or {})})


def test_key_set_keeps_the_pair_as_one_entry_that_run_signs_with(cfg, sim):
    done = cli("key", "set", "bedrock", "-c", str(cfg), stdin=f" {PAIR}\n")
    assert done.returncode == 0, done.stderr
    assert PlaintextKeyring().get_password("llm-cascade", "bedrock") == PAIR

    sim.script("m", Reply("signed and answered"))
    ran = cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-vv")
    assert (ran.returncode, ran.stdout) == (0, "signed and answered\n"), ran.stderr
    assert SIM_AWS_SECRET_ACCESS_KEY not in ran.stderr

    shown = cli("key", "get", "bedrock", "-c", str(cfg))
    assert shown.returncode == 0
    assert SIM_AWS_SECRET_ACCESS_KEY not in shown.stdout and len(shown.stdout.strip()) < 10


def test_key_set_refuses_a_secret_that_is_not_a_pair(cfg):
    done = cli("key", "set", "bedrock", "-c", str(cfg), stdin="just-the-secret-key")
    assert done.returncode == 2
    assert "AWS credentials are ACCESS_KEY_ID:SECRET_ACCESS_KEY" in done.stderr
    assert "just-the-secret-key" not in done.stderr
    assert PlaintextKeyring().get_password("llm-cascade", "bedrock") is None


def test_key_list_names_the_aws_variables_and_the_missing_region(cfg):
    env = {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret-0123456789"}
    done = cli("key", "list", "-c", str(cfg), "--json", env=env)
    assert done.returncode == 0, done.stderr
    rows = {p["provider"]: p for p in json.loads(done.stdout)["providers"]}
    assert (rows["bedrock"]["env"], rows["bedrock"]["source"]) == ("set", "env")
    assert rows["noregion"]["source"] == "missing"  # credentials without a region cannot sign
    plain = cli("key", "list", "-c", str(cfg), env=env)
    assert "env var AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in plain.stdout
    assert (
        "AWS region not configured for provider 'noregion': set `region` in"
        " [providers.noregion] or AWS_REGION"
    ) in plain.stderr
    assert "env-secret-0123456789" not in plain.stdout + plain.stderr


def test_config_check_says_which_aws_provider_can_run(cfg):
    missing = cli("config", "check", "-c", str(cfg))
    assert missing.returncode == 2
    assert "cascade 'x' cannot run" in missing.stdout
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)" in missing.stdout

    env = {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"}
    ready = cli("config", "check", "-c", str(cfg), "--json", env=env)
    assert ready.returncode == 0, ready.stdout
    data = json.loads(ready.stdout)
    assert all(c["runnable"] for c in data["cascades"])  # AWS_REGION serves `noregion` too


def test_key_delete_removes_the_pair(cfg):
    assert cli("key", "set", "bedrock", "-c", str(cfg), stdin=PAIR).returncode == 0
    done = cli("key", "delete", "bedrock", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert PlaintextKeyring().get_password("llm-cascade", "bedrock") is None


def test_a_run_with_a_session_token_sends_it_signed(tmp_path, sim):
    sim.require_key(f"{PAIR}:the-session-token")
    sim.script("m", Reply("with a token"))
    providers = {"br": {"type": "bedrock", "base_url": sim.base_url("bedrock")}}
    cfg = write_config(
        tmp_path, sim, {"x": [entry("br", "m")]}, providers=providers, extra={"keyring": False}
    )
    env = {
        "AWS_ACCESS_KEY_ID": SIM_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SIM_AWS_SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": "the-session-token",
        "AWS_DEFAULT_REGION": "sa-east-1",
    }

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", env=env)

    assert (done.returncode, done.stdout) == (0, "with a token\n"), done.stderr
    request = sim.requests[0]
    assert request.headers["x-amz-security-token"] == "the-session-token"
    assert "/sa-east-1/bedrock/aws4_request" in request.headers["authorization"]
