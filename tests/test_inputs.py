"""Hostile config, conversation and saved-prompt files, through the installed CLI: each is one
line on stderr and exit 2 (or a skipped file in a listing), never a traceback, a hang or
unbounded memory."""

from __future__ import annotations

from typing import Any

import pytest

from llm_cascade.simulator import Fail

from .support import run_cli, write_config

# --- numbers too large to name an instant ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"cooldown": {"long": 1e12}}, "cooldown.long"),
        ({"rules": [{"status": 401, "cooldown": 1e300}]}, "rules[0]"),
    ],
)
def test_a_cooldown_too_long_for_a_timestamp_is_a_config_error(tmp_path, sim, extra, key):
    sim.script("a", Fail(401, "bad key"))  # the long cooldown would be set here
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra=extra)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': {key}: "), done.stderr
    assert "31536000" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert sim.count() == 0


def test_a_request_timeout_too_long_for_a_probe_lease_is_a_config_error(tmp_path, sim):
    providers: dict[str, Any] = {"slow": {"type": "openai", "timeout": 1e300}}
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, providers=providers)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': providers.slow.timeout: "), done.stderr


# --- nesting that a recursive walk cannot survive --------------------------------------------


def test_tool_parameters_nested_965_deep_are_a_usage_error_naming_the_path(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    parameters = '{"a": ' * 965 + "1" + "}" * 965  # json.loads reads it; json.dumps cannot
    conv = tmp_path / "deep.json"
    conv.write_text(
        '{"messages": [{"role": "user", "content": "hi"}],'
        f' "tools": [{{"name": "t", "parameters": {parameters}}}]}}'
    )
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-f", str(conv))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        f"Error parsing conversation JSON from '{conv}': $.tools[0].parameters.a"
    ), done.stderr
    assert "nested more than 64 levels deep" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert sim.count() == 0


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("extra." + ".".join(["a"] * 500) + " = 1", "providers.sim.extra.a.a.a…"),
        ("headers." + ".".join(["a"] * 500) + " = 1", "providers.sim.headers.a.a.a…"),
    ],
)
def test_a_config_table_nested_500_deep_is_a_config_error(tmp_path, sim, line, key):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    text = cfg.read_text().replace('api_key_env = "SIM_KEY"', f'api_key_env = "SIM_KEY"\n{line}')
    cfg.write_text(text)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': {key}: nested more than 64 levels"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert sim.count() == 0


# --- base URLs that only fail inside the HTTP client -----------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "BASE\n",  # pasted with its line end
        "https://user:tok-secret@xn--a.com/v1",
        "https://" + "a" * 64 + ".com/v1",
        "https://ex\u00e4mple\u200d.com/v1",
    ],
    ids=["newline", "bad-a-label", "long-label", "idna-refused"],
)
def test_a_base_url_the_http_client_would_refuse_is_a_config_error(tmp_path, sim, url):
    url = url.replace("BASE", sim.base_url("openai"))
    providers = {"sim": {"type": "openai", "base_url": url, "api_key_env": "SIM_KEY"}}
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, providers=providers)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': providers.sim.base_url: "), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "tok-secret" not in done.stderr
    assert sim.count() == 0
