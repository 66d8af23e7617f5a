"""One tool-using conversation file, through the installed CLI, to every provider type."""

from __future__ import annotations

import json

import pytest

from llm_cascade.simulator import Fail, Reply, SimToolCall

from ..support import entry, run_cli, write_config
from .helpers import ALL_TYPES, TOOL_ROUND_TRIP, provider_table


def _conversation_file(tmp_path):
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps(TOOL_ROUND_TRIP))
    return path


def _config(tmp_path, sim, *types):
    providers = {t: provider_table(sim, t) for t in types}
    return write_config(
        tmp_path, sim, {"x": [entry(t, f"{t}-model") for t in types]}, providers=providers
    )


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_tool_results_reach_each_provider_in_its_own_valid_shape(tmp_path, sim, ptype):
    sim.script(f"{ptype}-model", Reply("Tokyo is warmer."))
    cfg = _config(tmp_path, sim, ptype)

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-f", str(_conversation_file(tmp_path)))

    assert done.returncode == 0, done.stderr
    assert done.stdout == "Tokyo is warmer.\n"
    assert [r.vendor for r in sim.requests] == [ptype]  # accepted on the first request


def test_the_same_file_travels_down_a_cascade_of_all_four_types(tmp_path, sim):
    types = ("anthropic", "gemini", "ollama", "openai")
    for t in types[:-1]:
        sim.script(f"{t}-model", Fail(503, "busy"))
    sim.script("openai-model", Reply("Tokyo is warmer."))
    cfg = _config(tmp_path, sim, *types)

    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-f", str(_conversation_file(tmp_path)), "--json"
    )

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    # Every entry took the conversation (503, not a 400 for a malformed request).
    assert [(a["entry"], a["status"]) for a in data["attempts"]] == [
        ("anthropic/anthropic-model", 503),
        ("gemini/gemini-model", 503),
        ("ollama/ollama-model", 503),
        ("openai/openai-model", 200),
    ]
    assert data["text"] == "Tokyo is warmer."


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_new_tool_calls_print_as_pretty_json_and_structured_in_json_mode(tmp_path, sim, ptype):
    call = SimToolCall("get_weather", {"city": "Lima"}, id="call_lima")
    sim.script(f"{ptype}-model", Reply("", tool_calls=(call,)))
    cfg = _config(tmp_path, sim, ptype)
    args = ("run", "-C", "x", "-c", str(cfg), "-f", str(_conversation_file(tmp_path)))

    plain = run_cli(*args)
    as_json = run_cli(*args, "--json")

    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith('{\n  "content": [')
    printed = json.loads(plain.stdout)
    assert printed["content"] == [
        {
            "type": "tool_call",
            "id": "call_lima",
            "name": "get_weather",
            "arguments": '{"city":"Lima"}' if ptype != "openai" else '{"city": "Lima"}',
        }
    ]
    data = json.loads(as_json.stdout)
    # The same shape as the plain output: the arguments' JSON text, whatever the vendor.
    assert data["tool_calls"] == [
        {"id": "call_lima", "name": "get_weather", "arguments": printed["content"][0]["arguments"]}
    ]
    assert json.loads(data["tool_calls"][0]["arguments"]) == {"city": "Lima"}
    assert data["provider"] == ptype
