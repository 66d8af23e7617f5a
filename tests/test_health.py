"""`health` against the simulator's model pages and listings, each vendor scripted to fail
each way, through the installed CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.simulator import Fail, Hang, HtmlError, Reply, Simulator
from llm_cascade.store import Store

from .support import SIM_KEY, cli_command, entry, run_cli, write_config

VENDORS = ("openai", "anthropic", "gemini", "ollama")


def vendor_config(
    tmp_path: Path, sim: Simulator, models: dict[str, list[str]], **opts: Any
) -> Path:
    """One provider per vendor type (named after it), all at the simulator."""
    providers = {
        v: {
            "type": v,
            "base_url": sim.base_url(v),
            **({"api_key_env": "SIM_KEY"} if v != "ollama" else {}),
        }
        for v in VENDORS
    }
    entries = [entry(v, m, **opts) for v, names in models.items() for m in names]
    return write_config(tmp_path, sim, {"all": entries}, providers=providers)


def health(cfg: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    done = run_cli("health", "-c", str(cfg), "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    assert SIM_KEY not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def verdicts(results: list[dict[str, Any]]) -> dict[str, str]:
    return {r["entry"]: r["verdict"] for r in results}


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "gemini"])
def test_each_failure_of_a_model_page_has_its_verdict(tmp_path, sim, vendor):
    sim.script_probe("bad-key", Fail(401))
    sim.script_probe("gone", Fail(404))
    sim.script_probe("busy", Fail(429, retry_after="30"))
    sim.script_probe("down", HtmlError(502))
    sim.script_probe("stuck", Hang())
    models = ["fine", "bad-key", "gone", "busy", "down", "stuck"]
    cfg = vendor_config(tmp_path, sim, {vendor: models}, timeout=1)
    code, results = health(cfg)
    assert code == 1
    assert verdicts(results) == {
        f"{vendor}/fine": "ok",
        f"{vendor}/bad-key": "auth",
        f"{vendor}/gone": "missing-model",
        f"{vendor}/busy": "rate-limited",
        f"{vendor}/down": "unreachable",
        f"{vendor}/stuck": "slow",
    }
    auth = next(r for r in results if r["verdict"] == "auth")
    assert f"llm-cascade key set {vendor}" in auth["reason"]


def test_a_model_not_pulled_into_ollama_is_unhealthy(tmp_path, sim):
    sim.script("llama3", Reply())  # the simulator knows (has pulled) only these
    sim.script_probe("qwen:7b", Reply())
    cfg = vendor_config(tmp_path, sim, {"ollama": ["llama3", "qwen:7b", "mistral"]})
    code, results = health(cfg)
    assert code == 1
    assert verdicts(results) == {
        "ollama/llama3": "ok",  # listed as llama3:latest
        "ollama/qwen:7b": "ok",
        "ollama/mistral": "missing-model",
    }
    assert "not among the models listed" in results[2]["reason"]
    assert all(p.path == "/api/tags" for p in sim.probes.requests)


def test_a_listing_that_fails_fails_every_entry_it_serves(tmp_path, sim):
    sim.script("llama3", Reply())
    sim.script_probe("*", Fail(503))
    code, results = health(vendor_config(tmp_path, sim, {"ollama": ["llama3"]}))
    assert (code, verdicts(results)) == (1, {"ollama/llama3": "unreachable"})


def test_a_compatible_server_without_model_pages_is_asked_for_its_listing(tmp_path, sim):
    sim.script_probe("org/model", Fail(404, code="no_route"))  # no model pages here
    sim.script("org/model", Reply())  # but the listing knows it
    code, results = health(vendor_config(tmp_path, sim, {"openai": ["org/model"]}))
    assert (code, verdicts(results)) == (0, {"openai/org/model": "ok"})
    assert results[0]["reason"].startswith("listed in")
    assert [p.path for p in sim.probes.requests] == ["/v1/models/org%2Fmodel", "/v1/models"]


def test_every_healthy_entry_is_exit_0_and_the_table_names_each(tmp_path, sim):
    cfg = vendor_config(tmp_path, sim, {v: ["m"] for v in VENDORS if v != "ollama"})
    done = run_cli("health", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ENTRY", "VERDICT", "MS", "REASON"]
    assert [line.split()[:2] for line in lines[2:]] == [
        ["openai/m", "ok"],
        ["anthropic/m", "ok"],
        ["gemini/m", "ok"],
    ]


def test_an_answer_slower_than_slow_is_slow(tmp_path, sim):
    sim.script_probe("lazy", Reply(delay=0.5))
    cfg = vendor_config(tmp_path, sim, {"openai": ["lazy"]})
    code, results = health(cfg, "--slow", "0.1")
    assert (code, verdicts(results)) == (1, {"openai/lazy": "slow"})


def test_missing_key_is_auth_without_a_request(tmp_path, sim):
    providers = {
        "nokey": {
            "type": "openai",
            "base_url": sim.base_url("openai"),
            "api_key_env": "NO_SUCH_KEY",
        }
    }
    cfg = write_config(tmp_path, sim, {"c": [entry("nokey", "m")]}, providers=providers)
    code, results = health(cfg)
    assert (code, verdicts(results)) == (1, {"nokey/m": "auth"})
    assert "NO_SUCH_KEY" in results[0]["reason"]
    assert sim.probes.count() == 0


def test_deep_asks_for_one_token(tmp_path, sim):
    sim.script("busy", Fail(429))
    cfg = vendor_config(tmp_path, sim, {"openai": ["fine", "busy"], "anthropic": ["claude"]})
    code, results = health(cfg, "--deep")
    assert (code, verdicts(results)) == (
        1,
        {"openai/fine": "ok", "openai/busy": "rate-limited", "anthropic/claude": "ok"},
    )
    assert {r.body["max_tokens"] for r in sim.requests} == {1}
    assert sim.probes.count() == 0


def test_the_overall_timeout_bounds_every_probe(tmp_path, sim):
    sim.script_probe("stuck", Hang())
    cfg = vendor_config(tmp_path, sim, {"openai": ["stuck", "fine"]})  # entry timeout: 120 s
    code, results = health(cfg, "--timeout", "0.5")
    assert (code, verdicts(results)) == (1, {"openai/stuck": "slow", "openai/fine": "ok"})


def test_probes_run_at_once_not_one_after_another(tmp_path, sim):
    models = [f"m{i}" for i in range(10)]
    for model in models:
        sim.script_probe(model, Reply(hold=True))  # nothing answers until all ten have asked
    cfg = vendor_config(tmp_path, sim, {"openai": models})
    process = subprocess.Popen(
        [*cli_command(), "health", "-c", str(cfg), "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SIM_KEY": SIM_KEY},
    )
    try:
        assert sim.probes.wait_for(10, timeout=30)
    finally:
        sim.release()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.count(" ok ") == 10


def test_unknown_cascade_is_exit_2(tmp_path, sim):
    cfg = vendor_config(tmp_path, sim, {"openai": ["m"]})
    done = run_cli("health", "-c", str(cfg), "-C", "nope")
    assert done.returncode == 2
    assert "Cascade 'nope' not found in configuration (defined: all)" in done.stderr


def test_health_of_one_cascade_probes_only_its_entries(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"a": ["one"], "b": ["two"]})
    code, results = health(cfg, "-C", "b")
    assert (code, verdicts(results)) == (0, {"sim/two": "ok"})


# --- the log and the breakers ------------------------------------------------------------


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "db.sqlite"


def test_probes_are_logged_but_move_no_breaker_without_update(tmp_path, sim):
    sim.script_probe("down", Fail(500))
    cfg = write_config(tmp_path, sim, {"c": ["down", "fine"]})
    assert health(cfg)[0] == 1
    with Store(db_path(tmp_path)) as store:
        rows = store.recent_attempts()
        states = store.states(["sim/down"])
    logged = sorted((r.provider_model, r.outcome, r.http_status, r.rule) for r in rows)
    assert logged == [
        ("sim/down", "probe", 500, "server_error"),
        ("sim/fine", "probe", 200, None),
    ]
    assert states["sim/down"].failures == 0 and states["sim/down"].cooldown_until is None
    stats = json.loads(run_cli("stats", "-c", str(cfg), "--json").stdout)
    entries = stats["cascades"][0]["entries"]
    assert all(e["attempts"] == 0 for e in entries)  # probes are not attempts


def test_update_cools_a_failing_entry_down_by_its_rule(tmp_path, sim):
    sim.script_probe("busy", Fail(429, retry_after="30"))
    cfg = write_config(tmp_path, sim, {"c": ["busy"]})
    code, results = health(cfg, "--update")
    assert code == 1 and results[0]["cooldown_until"] is not None
    status = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert [(s["entry"], s["state"], s["reason"]) for s in status] == [
        ("sim/busy", "open", "rate_limited")
    ]
    assert 25 < status[0]["retry_after"] <= 30


def test_update_closes_a_half_open_breaker_with_a_good_probe(tmp_path, sim):
    sim.script("flaky", Fail(500))
    rules = [{"name": "no_wait", "status": 500, "cooldown": 0}]  # half-open at once
    cfg = write_config(tmp_path, sim, {"c": ["flaky"]}, extra={"rules": rules})
    assert run_cli("run", "-C", "c", "-c", str(cfg), "-p", "hi").returncode == 1
    before = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert before[0]["state"] == "half-open"
    assert health(cfg)[0] == 0  # without --update: logged only
    assert json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)[0]["state"] == "half-open"
    assert health(cfg, "--update")[0] == 0
    after = json.loads(run_cli("status", "-c", str(cfg), "--json").stdout)
    assert (after[0]["state"], after[0]["failures"]) == ("closed", 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "nan"], "--timeout: expected seconds from 0.1 to 3600, got nan"),
        (["--timeout", "0"], "--timeout"),
        (["--slow", "nan"], "--slow: expected seconds from 0 to 3600, got nan"),
    ],
)
def test_bad_limits_are_one_line_and_exit_2(tmp_path, sim, args, message):
    cfg = write_config(tmp_path, sim, {"c": ["m"]})
    done = run_cli("health", "-c", str(cfg), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert sim.probes.count() == 0
