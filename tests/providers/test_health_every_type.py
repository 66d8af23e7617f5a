"""`health` on every provider type through the installed CLI: each type is probed the way
its vendor allows (a model page or listing, or one token where there is none) and a
healthy simulator reads as `ok`."""

from __future__ import annotations

import json

import pytest

from llm_cascade.simulator import Fail, Reply

from ..support import SIM_KEY, run_cli
from .helpers import ALL_TYPES, vendor_config

# Types with no model page for the key in hand (Cohere's and Bedrock's need other grants, an
# Azure deployment has none): health asks for one token.
ONE_TOKEN = {"cohere", "bedrock", "azure"}


def health(cfg, *args):
    done = run_cli("health", "-c", str(cfg), "--json", *args)
    assert SIM_KEY not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout), done


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_a_healthy_entry_of_every_type_is_ok(tmp_path, sim, ptype):
    sim.script_probe("m", Reply())  # known to the listings (Ollama lists what it has pulled)
    cfg = vendor_config(tmp_path, sim, ptype, "m", fallback=False)
    code, results, done = health(cfg)
    assert (code, [(r["entry"], r["verdict"]) for r in results]) == (0, [(f"{ptype}/m", "ok")]), (
        done.stderr
    )
    asked = [r.body for r in sim.requests]
    if ptype in ONE_TOKEN:
        assert len(asked) == 1
    else:
        assert asked == [], "a type with a model page was asked for a completion"


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_a_rate_limited_entry_of_every_type_is_not_ok(tmp_path, sim, ptype):
    sim.script("busy", Fail(429))
    sim.script_probe("busy", Fail(429))
    sim.script_probe("*", Fail(429))  # Ollama's listing
    cfg = vendor_config(tmp_path, sim, ptype, "busy", fallback=False)
    code, results, done = health(cfg)
    assert (code, results[0]["verdict"]) == (1, "rate-limited"), done.stderr


def test_azure_v1_endpoint_is_probed_on_its_model_page(tmp_path, sim):
    sim.script_probe("m", Reply())
    v1 = {"base_url": sim.base_url("azure") + "/openai/v1"}
    cfg = vendor_config(tmp_path, sim, "azure", "m", fallback=False, provider_options=v1)
    code, results, done = health(cfg)
    assert (code, results[0]["verdict"]) == (0, "ok"), done.stderr
    assert [p.path for p in sim.probes.requests] == ["/azure/openai/v1/models/m"]
    assert sim.requests == []
