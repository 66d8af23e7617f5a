"""The openai_responses provider: input items, output items, semantic stream events."""

from __future__ import annotations

import json

import pytest

from llm_cascade.errors import ProviderError
from llm_cascade.providers import get_adapter
from llm_cascade.providers.base import CallOptions
from llm_cascade.simulator import Empty, Fail, Reply, SimToolCall, Stream
from llm_cascade.types import Conversation, ImagePart, Message, TextPart

from ..support import RawServer, entry, run_cli, run_engine, write_config
from .helpers import post, round_trip, stream_engine, vendor_config

ADAPTER = get_adapter("openai_responses")
OPTIONS = CallOptions(model="gpt-4.1", base_url="https://api.openai.com/v1", api_key="sk")


def test_a_conversation_becomes_instructions_and_input_items():
    options = CallOptions(
        model="gpt-4.1",
        base_url="https://api.openai.com/v1",
        api_key="sk",
        max_tokens=300,
        temperature=0.3,
    )
    wire = ADAPTER.build_request(round_trip(), options)
    assert wire.url == "https://api.openai.com/v1/responses"
    assert wire.headers == {"Authorization": "Bearer sk"}
    assert wire.body == {
        "model": "gpt-4.1",
        "instructions": "Be terse.\n\nUse Celsius.",
        "input": [
            {"role": "user", "content": "Weather in Tokyo and Oslo?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Tokyo"}',
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "get_weather",
                "arguments": '{"city": "Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'},
            {"type": "function_call_output", "call_id": "call_2", "output": "4 degrees"},
            {"role": "user", "content": "Which is warmer?"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": round_trip().tools[0].parameters,
            }
        ],
        "max_output_tokens": 300,
        "temperature": 0.3,
        "store": False,
    }


def test_images_are_input_image_parts():
    image = ImagePart(url="https://example.com/cat.png")
    conversation = Conversation([Message.user([TextPart("What?"), image])])
    assert ADAPTER.build_request(conversation, OPTIONS).body["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What?"},
                {"type": "input_image", "image_url": "https://example.com/cat.png"},
            ],
        }
    ]


DOCUMENTED = {  # the shape of the API reference's example, with a reasoning item
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "In a peaceful grove...", "annotations": []}
            ],
        },
        {
            "type": "function_call",
            "id": "fc_12345xyz",
            "call_id": "call_12345xyz",
            "name": "get_weather",
            "arguments": '{"location":"Paris, France"}',
        },
    ],
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 123,
    },
}


def test_the_documented_reply_gives_text_calls_usage_and_status():
    response = ADAPTER.parse_response(DOCUMENTED, OPTIONS)
    assert response.text == "In a peaceful grove..."
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_12345xyz", "get_weather", '{"location":"Paris, France"}')
    ]
    assert (response.input_tokens, response.output_tokens) == (36, 87)
    assert (response.model, response.stop_reason) == ("gpt-4.1-2025-04-14", "completed")


def test_an_incomplete_answer_is_returned_with_its_reason():
    data = {
        **DOCUMENTED,
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
    }
    assert ADAPTER.parse_response(data, OPTIONS).stop_reason == "max_output_tokens"


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (None, "no output list"),
        ([7], "not an object"),
        ([{"type": "message", "content": "text"}], "no content list"),
        ([{"type": "message", "content": [3]}], "content part is not an object"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "no call_id or name"),
        ([{"type": "function_call", "call_id": "c", "arguments": "{}"}], "no call_id or name"),
        ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": 5}], "arguments"),
    ],
)
def test_a_malformed_output_item_is_an_invalid_response(output, problem):
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_response({**DOCUMENTED, "output": output}, OPTIONS)
    assert caught.value.kind == "invalid_response"
    assert problem in caught.value.message


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ({"type": "function_call", "name": "f", "arguments": "{}"}, "no call_id or name"),
        ("not an item", "not an object"),
    ],
)
def test_a_malformed_output_item_over_http_is_a_failed_attempt_and_the_next_answers(
    tmp_path, sim, clock, item, why
):
    body = json.dumps({**DOCUMENTED, "output": [item]}).encode()
    with RawServer(body) as raw:
        providers = {
            "resp": {"type": "openai_responses", "base_url": raw.url, "api_key_env": "SIM_KEY"}
        }
        cfg = write_config(tmp_path, sim, {"x": [entry("resp", "gpt"), "b"]}, providers=providers)
        result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert (first.kind, first.rule, result.entry) == (
        "invalid_response",
        "invalid_response",
        "sim/b",
    )
    assert why in first.detail


def test_a_failed_response_is_the_error_its_code_stands_for():
    failed = {
        **DOCUMENTED,
        "status": "failed",
        "output": [],
        "error": {"code": "server_error", "message": "The server had an error"},
    }
    with pytest.raises(ProviderError) as caught:
        ADAPTER.parse_response(failed, OPTIONS)
    assert (caught.value.kind, caught.value.status) == ("http", 500)
    assert caught.value.message == "server_error: The server had an error"


def test_the_round_trip_reaches_the_simulator_which_ties_outputs_to_calls(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "openai_responses", "gpt-4.1", fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text == "Simulated answer from gpt-4.1: Which is warmer?"
    assert sim.requests[0].path == "/v1/responses"


def test_the_simulator_refuses_unanswered_calls_and_stray_outputs(sim):
    headers = {"Authorization": "Bearer k"}
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    unanswered = post(sim, "/v1/responses", {"model": "m", "input": [call]}, headers)
    assert unanswered.status_code == 400
    assert "No tool output found for function call c1" in unanswered.text
    stray = {"type": "function_call_output", "call_id": "c9", "output": "x"}
    refused = post(sim, "/v1/responses", {"model": "m", "input": [stray]}, headers)
    assert "No tool call found for function call output with call_id c9" in refused.text
    unknown = post(sim, "/v1/responses", {"model": "m", "input": "hi", "messages": []}, headers)
    assert "Unknown parameter: 'messages'" in unknown.text


def test_a_refusal_fails_over_without_a_cooldown(tmp_path, sim, clock):
    sim.script("m", Empty("refusal"))
    cfg = vendor_config(tmp_path, sim, "openai_responses")
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert (first.rule, first.cooldown_until) == ("empty_response", None)
    assert "refused" in first.detail


def test_a_streamed_answer_with_text_and_calls_in_pieces(tmp_path, sim, clock):
    calls = (
        SimToolCall("get_weather", {"city": "Oslo"}, id="call_a"),
        SimToolCall("get_weather", {"city": "Lima"}, id="call_b"),
    )
    sim.script("m", Reply("Checking both.", tool_calls=calls, stream=Stream(tool_fragments=4)))
    cfg = vendor_config(tmp_path, sim, "openai_responses", fallback=False)

    response = stream_engine(cfg, clock).response

    assert response.text == "Checking both."
    assert [(c.id, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("call_a", {"city": "Oslo"}),
        ("call_b", {"city": "Lima"}),
    ]
    assert (response.input_tokens, response.output_tokens, response.stop_reason) == (
        11,
        7,
        "completed",
    )


@pytest.mark.parametrize(
    ("status", "rule"), [(429, "rate_limited"), (500, "server_error"), (529, "server_error")]
)
def test_an_error_event_mid_stream_is_the_error_its_code_stands_for(
    tmp_path, sim, clock, status, rule
):
    sim.script("m", Reply("one two", stream=Stream(error_after=0, error_status=status)))
    cfg = vendor_config(tmp_path, sim, "openai_responses")

    first = stream_engine(cfg, clock).attempts[0]

    assert first.rule == rule


def test_a_stream_without_response_completed_is_truncated(tmp_path, sim, clock):
    sim.script("m", Reply("one two", stream=Stream(terminator=False)))
    cfg = vendor_config(tmp_path, sim, "openai_responses")
    result = stream_engine(cfg, clock)
    assert result.attempts[0].rule == "truncated"


def test_a_wrong_key_is_an_auth_failure_with_the_fix(tmp_path, sim, clock):
    sim.script("m", Fail(401, "Incorrect API key provided", code="invalid_api_key"))
    cfg = vendor_config(tmp_path, sim, "openai_responses")
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert first.rule == "auth"
    assert first.detail == (
        "HTTP 401: invalid_api_key: Incorrect API key provided (check the key: run"
        " `llm-cascade key set openai_responses` or set SIM_KEY)"
    )


def test_cli_run(tmp_path, sim):
    sim.script("gpt-4.1", Reply("Hello from responses."))
    cfg = vendor_config(tmp_path, sim, "openai_responses", "gpt-4.1", fallback=False)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert (done.returncode, done.stdout) == (0, "Hello from responses.\n"), done.stderr
    streamed = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream")
    assert (streamed.returncode, streamed.stdout) == (0, "Hello from responses.\n")


def test_a_failed_response_inside_a_200_is_decided_by_the_status_its_code_stands_for(
    tmp_path, sim, clock
):
    failed = {
        **DOCUMENTED,
        "status": "failed",
        "output": [],
        "error": {"code": "rate_limit_exceeded", "message": "Slow down"},
    }
    with RawServer(json.dumps(failed).encode()) as raw:
        providers = {
            "resp": {"type": "openai_responses", "base_url": raw.url, "api_key_env": "SIM_KEY"}
        }
        cfg = write_config(tmp_path, sim, {"x": [entry("resp", "gpt"), "b"]}, providers=providers)
        first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert (first.status, first.rule) == (429, "rate_limited")  # not the 200 it came in
