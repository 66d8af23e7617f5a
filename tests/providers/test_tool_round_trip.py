"""One tool-using conversation file, through the installed CLI, to every provider type."""

from __future__ import annotations

import json

import pytest

from llm_cascade.simulator import Fail, Reply, SimToolCall
from llm_cascade.types import Conversation, Message

from ..support import entry, run_cli, run_engine, write_config
from .helpers import ALL_TYPES, STRING_ARGUMENTS, TOOL_ROUND_TRIP, provider_table, round_trip


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


def test_the_same_file_travels_down_a_cascade_of_every_type(tmp_path, sim):
    *failing, last = ALL_TYPES[1:] + ALL_TYPES[:1]  # openai answers, last
    for t in failing:
        sim.script(f"{t}-model", Fail(503, "busy"))
    sim.script(f"{last}-model", Reply("Tokyo is warmer."))
    cfg = _config(tmp_path, sim, *failing, last)

    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-f", str(_conversation_file(tmp_path)), "--json"
    )

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    # Every entry took the conversation (503, not a 400 for a malformed request).
    assert [(a["entry"], a["status"]) for a in data["attempts"]] == [
        *((f"{t}/{t}-model", 503) for t in failing),
        (f"{last}/{last}-model", 200),
    ]
    assert data["text"] == "Tokyo is warmer."


@pytest.mark.parametrize("maker", ALL_TYPES)
def test_a_call_one_type_made_is_answered_through_every_other_type(tmp_path, sim, clock, maker):
    """The tool call a vendor made (its own ids and argument form) and the result that answers
    it are sent on to every type: each accepts the conversation."""
    sim.script("maker", Reply("", tool_calls=(SimToolCall("get_weather", {"city": "Lima"}),)))
    providers = {t: provider_table(sim, t) for t in ALL_TYPES}
    cfg = write_config(
        tmp_path,
        sim,
        {"make": [entry(maker, "maker")], "answer": [entry(t, f"{t}-model") for t in ALL_TYPES]},
        providers=providers,
    )
    asked = round_trip()
    made = run_engine(cfg, "make", asked, clock=clock).response
    [call] = made.tool_calls
    follow_up = Conversation(
        [
            *asked.messages,
            Message.assistant(made.text, made.tool_calls),
            Message.tool('{"temp": 19}', call.id),
        ],
        asked.tools,
    )
    for t in ALL_TYPES[:-1]:
        sim.script(f"{t}-model", Fail(503, "busy"))

    result = run_engine(cfg, "answer", follow_up, clock=clock)

    assert [a.status for a in result.attempts] == [503] * (len(ALL_TYPES) - 1) + [200]


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
            "arguments": '{"city": "Lima"}' if ptype in STRING_ARGUMENTS else '{"city":"Lima"}',
        }
    ]
    data = json.loads(as_json.stdout)
    # The same shape as the plain output: the arguments' JSON text, whatever the vendor.
    assert data["tool_calls"] == [
        {"id": "call_lima", "name": "get_weather", "arguments": printed["content"][0]["arguments"]}
    ]
    assert json.loads(data["tool_calls"][0]["arguments"]) == {"city": "Lima"}
    assert data["provider"] == ptype
