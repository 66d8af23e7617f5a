"""The ollama provider against the simulated native chat API over loopback."""

from __future__ import annotations

import pytest

from llm_cascade.simulator import Empty, Fail, Reply, SimToolCall
from llm_cascade.types import Conversation, Message, TextBlock, ToolCall, ToolDefinition

from ..support import SIM_KEY, run_engine
from .helpers import WEATHER_TOOL, post, round_trip, vendor_config


def test_request_is_non_streaming_keyless_with_options(tmp_path, sim, clock):
    cfg = vendor_config(
        tmp_path,
        sim,
        "ollama",
        "llama3.2",
        fallback=False,
        max_tokens=128,
        temperature=0.1,
        extra={"options": {"num_ctx": 8192}, "keep_alive": "10m"},
    )
    conversation = Conversation(
        [Message.system("Be terse."), Message.user("hi")], [ToolDefinition(**WEATHER_TOOL)]
    )

    result = run_engine(cfg, "x", conversation, clock=clock)

    assert result.text == "Simulated answer from llama3.2: hi"
    request = sim.requests[0]
    assert request.path == "/api/chat"
    assert "authorization" not in request.headers
    assert SIM_KEY not in str(request.headers)
    assert request.body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be terse."},  # system turns stay inline
            {"role": "user", "content": "hi"},
        ],
        "stream": False,
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
        "options": {"num_predict": 128, "temperature": 0.1, "num_ctx": 8192},
        "keep_alive": "10m",
    }


def test_tool_round_trip_sends_argument_objects_and_tool_names(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "ollama", fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text.endswith("Which is warmer?")  # the simulator accepted the shape
    messages = sim.requests[0].body["messages"]
    assert messages[3]["tool_calls"] == [
        {
            "type": "function",
            "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}},
        },
        {
            "type": "function",
            "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Oslo"}},
        },
    ]
    assert messages[4] == {
        "role": "tool",
        "content": '{"temp": 21}',
        "tool_name": "get_weather",
        "tool_call_id": "call_1",
    }


def test_response_tool_calls_tokens_and_done_reason(tmp_path, sim, clock):
    calls = (
        SimToolCall("get_weather", {"city": "Oslo"}),
        SimToolCall("get_weather", {"city": "Oslo"}),
    )
    sim.script("m", Reply("On it.", tool_calls=calls, input_tokens=40, output_tokens=12))
    cfg = vendor_config(tmp_path, sim, "ollama", fallback=False)

    response = run_engine(cfg, "x", clock=clock).response

    text, first, second = response.content
    assert text == TextBlock("On it.")
    assert (first.name, first.arguments) == ("get_weather", '{"city":"Oslo"}')
    assert first.id and second.id and first.id != second.id  # Ollama sends none: minted
    assert (response.input_tokens, response.output_tokens) == (40, 12)
    assert (response.stop_reason, response.model) == ("stop", "m")


def test_a_tool_call_id_sent_by_the_server_is_kept(tmp_path, sim, clock):
    sim.script("m", Reply("", tool_calls=(SimToolCall("f", {}, id="call_abc"),)))
    cfg = vendor_config(tmp_path, sim, "ollama", fallback=False)
    assert run_engine(cfg, "x", clock=clock).response.content == (ToolCall("call_abc", "f", "{}"),)


def test_length_done_reason_is_reported(tmp_path, sim, clock):
    sim.script("m", Reply("cut", stop_reason="length"))
    cfg = vendor_config(tmp_path, sim, "ollama", fallback=False)
    assert run_engine(cfg, "x", clock=clock).response.stop_reason == "length"


def test_model_not_pulled_is_a_caller_error_with_ollamas_text(tmp_path, sim, clock):
    sim.script("m", Fail(404, 'model "m" not found, try pulling it first'))
    cfg = vendor_config(tmp_path, sim, "ollama")
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert (first.rule, first.cooldown_until) == ("caller_error", None)
    assert first.detail == 'HTTP 404: model "m" not found, try pulling it first'


def test_a_load_only_reply_is_an_empty_answer(tmp_path, sim, clock):
    sim.script("m", Empty("load"))
    cfg = vendor_config(tmp_path, sim, "ollama")
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert first.rule == "empty_response"
    assert "done_reason: load" in first.detail


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "cannot unmarshal string into Go struct field ToolCallFunction",
        ),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "cannot unmarshal array"),
        ({"model": ""}, "model is required"),
        ({"options": {"num_predict": 1.5}}, 'option "num_predict" must be of type integer'),
        ({"stream": "no"}, "cannot unmarshal string into Go struct field ChatRequest.stream"),
    ],
)
def test_simulator_rejects_what_the_ollama_server_rejects(sim, change, message):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    response = post(sim, "/api/chat", {**body, **change}, {})
    assert response.status_code == 400
    assert message in response.json()["error"]
