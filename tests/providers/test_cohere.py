"""The cohere provider: v2 chat messages, tool_plan, usage and errors, against the simulator."""

from __future__ import annotations

import json

import pytest

from llm_cascade.errors import ProviderError
from llm_cascade.providers import get_adapter
from llm_cascade.providers.base import CallOptions
from llm_cascade.simulator import Empty, Fail, Reply, SimToolCall, Stream
from llm_cascade.types import Conversation, ImagePart, Message, TextBlock, TextPart, ToolCall

from ..support import SIM_KEY, run_cli, run_engine
from .helpers import WEATHER_TOOL, post, round_trip, stream_engine, vendor_config

ADAPTER = get_adapter("cohere")
OPTIONS = CallOptions(model="command-a-03-2025", base_url="https://api.cohere.com", api_key="co")


def test_messages_put_the_system_text_first_and_the_plan_beside_the_calls():
    conversation = Conversation(
        [
            *round_trip().messages[:3],
            Message.assistant("I will look both up.", round_trip().messages[3].tool_calls),
            *round_trip().messages[4:],
        ],
        round_trip().tools,
    )
    wire = ADAPTER.build_request(conversation, OPTIONS)
    assert wire.url == "https://api.cohere.com/v2/chat"
    assert wire.headers == {"Authorization": "Bearer co"}
    assert wire.body["messages"] == [
        {"role": "system", "content": "Be terse.\n\nUse Celsius."},
        {"role": "user", "content": "Weather in Tokyo and Oslo?"},
        {
            "role": "assistant",
            "tool_plan": "I will look both up.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "4 degrees"},
        {"role": "user", "content": "Which is warmer?"},
    ]
    assert wire.body["tools"] == [
        {"type": "function", "function": {**WEATHER_TOOL, "parameters": WEATHER_TOOL["parameters"]}}
    ]


def test_images_are_image_url_parts():
    conversation = Conversation(
        [Message.user([TextPart("what?"), ImagePart(url="https://a/b.png")])]
    )
    assert ADAPTER.build_request(conversation, OPTIONS).body["messages"][0]["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "https://a/b.png"}},
    ]


def test_a_documented_tool_calling_reply_gives_the_plan_as_text_and_billed_usage():
    reply = {
        "id": "7b1e8e4b-9e0b-4d8b-a0a3-2f6e1f2e3b4c",
        "message": {
            "role": "assistant",
            "tool_plan": "I will search for the sales data.",
            "tool_calls": [
                {
                    "id": "query_daily_sales_report_1rqmy6wzz66b",
                    "type": "function",
                    "function": {
                        "name": "query_daily_sales_report",
                        "arguments": '{"day":"2023-09-29"}',
                    },
                }
            ],
        },
        "finish_reason": "TOOL_CALL",
        "usage": {
            "billed_units": {"input_tokens": 37, "output_tokens": 28},
            "tokens": {"input_tokens": 1250, "output_tokens": 77},
        },
    }
    response = ADAPTER.parse_response(reply, OPTIONS)
    assert response.content == (
        TextBlock("I will search for the sales data."),
        ToolCall(
            "query_daily_sales_report_1rqmy6wzz66b",
            "query_daily_sales_report",
            '{"day":"2023-09-29"}',
        ),
    )
    assert (response.input_tokens, response.output_tokens) == (37, 28)
    assert (response.stop_reason, response.model) == ("TOOL_CALL", "command-a-03-2025")


def test_text_items_are_read_and_thinking_items_skipped():
    reply = {
        "finish_reason": "COMPLETE",
        "message": {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me think"},
                {"type": "text", "text": "Paris."},
            ],
        },
        "usage": {"tokens": {"input_tokens": 5, "output_tokens": 2}},
    }
    response = ADAPTER.parse_response(reply, OPTIONS)
    assert (response.text, response.input_tokens) == ("Paris.", 5)  # `tokens` when not billed


@pytest.mark.parametrize("finish", ["ERROR", "TIMEOUT"])
def test_a_failed_generation_is_an_invalid_response(finish):
    reply = {"finish_reason": finish, "message": {"role": "assistant", "content": []}}
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_response(reply, OPTIONS)
    assert caught.value.kind == "invalid_response"


def test_the_round_trip_reaches_the_simulator_which_ties_results_to_calls(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "cohere", "command-a", fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text == "Simulated answer from command-a: Which is warmer?"
    request = sim.requests[0]
    assert (request.path, request.headers["authorization"]) == (
        "/cohere/v2/chat",
        f"Bearer {SIM_KEY}",
    )
    assert (result.response.input_tokens, result.response.output_tokens) == (11, 7)  # billed


def test_the_simulator_refuses_what_cohere_refuses(sim):
    headers = {"Authorization": "Bearer k"}
    late_system = [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}]
    refused = post(sim, "/cohere/v2/chat", {"model": "m", "messages": late_system}, headers)
    assert refused.status_code == 400
    assert refused.json() == {
        "id": "sim-error",
        "message": "system turn must be the first in the list",
    }
    stray = [{"role": "tool", "tool_call_id": "nope", "content": "x"}]
    assert (
        "not found" in post(sim, "/cohere/v2/chat", {"model": "m", "messages": stray}, headers).text
    )


def test_a_tool_call_reply_round_trips_through_the_engine(tmp_path, sim, clock):
    call = SimToolCall("get_weather", {"city": "Lima"}, id="get_weather_abc")
    sim.script("m", Reply("I will check Lima.", tool_calls=(call,)))
    cfg = vendor_config(tmp_path, sim, "cohere", fallback=False)

    response = run_engine(cfg, "x", clock=clock).response

    assert response.text == "I will check Lima."
    assert [(c.id, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("get_weather_abc", {"city": "Lima"})
    ]
    assert response.stop_reason == "TOOL_CALL"


def test_a_trial_keys_spent_monthly_allowance_cools_down_long(tmp_path, sim, clock):
    message = "You are using a Trial key, which is limited to 1000 API calls / month."
    sim.script("m", Fail(429, message))
    cfg = vendor_config(tmp_path, sim, "cohere")

    first = run_engine(cfg, "x", clock=clock).attempts[0]

    assert (first.rule, first.cooldown_s) == ("cohere_trial_limit", 3600)
    assert "use a production key" in first.detail


def test_a_per_minute_429_is_an_ordinary_rate_limit(tmp_path, sim, clock):
    sim.script("m", Fail(429, "You are past the per minute request limit", retry_after="20"))
    cfg = vendor_config(tmp_path, sim, "cohere")
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert (first.rule, first.cooldown_s) == ("rate_limited", 20)


def test_a_499_is_retried_in_place(tmp_path, sim, clock):
    sim.script("m", Fail(499, "request cancelled"), Reply("ok"))
    cfg = vendor_config(tmp_path, sim, "cohere", retries=1, fallback=False)
    result = run_engine(cfg, "x", clock=clock)
    assert [a.rule for a in result.attempts] == ["cohere_cancelled", None]
    assert result.text == "ok"


def test_an_empty_reply_fails_over_without_a_cooldown(tmp_path, sim, clock):
    sim.script("m", Empty())
    cfg = vendor_config(tmp_path, sim, "cohere")
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert (first.rule, first.cooldown_until) == ("empty_response", None)


def test_a_stream_with_a_plan_and_calls_in_pieces(tmp_path, sim, clock):
    calls = (
        SimToolCall("get_weather", {"city": "Oslo"}, id="w1"),
        SimToolCall("get_weather", {"city": "Rome"}, id="w2"),
    )
    sim.script("m", Reply("Checking both.", tool_calls=calls, stream=Stream(tool_fragments=3)))
    cfg = vendor_config(tmp_path, sim, "cohere", fallback=False)

    response = stream_engine(cfg, clock).response

    assert response.text == "Checking both."
    assert [(c.id, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("w1", {"city": "Oslo"}),
        ("w2", {"city": "Rome"}),
    ]
    assert (response.input_tokens, response.output_tokens, response.stop_reason) == (
        11,
        7,
        "TOOL_CALL",
    )


def test_a_stream_that_ends_in_error_fails_over(tmp_path, sim, clock):
    sim.script("m", Reply("one two", stream=Stream(error_after=1)))
    cfg = vendor_config(tmp_path, sim, "cohere")
    result = stream_engine(cfg, clock)
    assert result.attempts[0].rule == "invalid_response"
    assert result.entry == "sim/b"


def test_cli_run_streamed_and_whole(tmp_path, sim):
    sim.script("command-a", Reply("Hola."))
    cfg = vendor_config(tmp_path, sim, "cohere", "command-a", fallback=False)
    for mode in ("--no-stream", "--stream"):
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", mode)
        assert (done.returncode, done.stdout) == (0, "Hola.\n"), done.stderr
