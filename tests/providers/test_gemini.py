"""The gemini provider against the simulated generateContent API over loopback."""

from __future__ import annotations

import pytest

from llm_cascade.errors import CascadeFailed
from llm_cascade.providers import get_adapter
from llm_cascade.providers.base import CallOptions
from llm_cascade.simulator import Empty, Fail, Reply, SimToolCall
from llm_cascade.types import Conversation, Message, TextBlock, ToolCall, ToolDefinition

from ..support import SIM_KEY, run_engine
from .helpers import WEATHER_TOOL, post, round_trip, vendor_config

ADAPTER = get_adapter("gemini")
OPTIONS = CallOptions(model="gemini-x", base_url="http://127.0.0.1:9", api_key="secret-key")
GENERATE = "/v1beta/models/m:generateContent"


def test_key_travels_in_a_header_and_never_in_the_url(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "gemini", "gemini-2.0-flash", fallback=False)
    run_engine(cfg, "x", clock=clock)
    request = sim.requests[0]
    assert request.headers["x-goog-api-key"] == SIM_KEY
    assert request.target == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert SIM_KEY not in request.target


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini/evil?x#y", "/v1beta/models/gemini%2Fevil%3Fx%23y:generateContent"),
        ("models/gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent"),
        ("tunedModels/my-tune", "/v1beta/tunedModels/my-tune:generateContent"),
    ],
)
def test_model_id_is_one_percent_encoded_path_segment(tmp_path, sim, clock, model, path):
    cfg = vendor_config(tmp_path, sim, "gemini", model, fallback=False)
    result = run_engine(cfg, "x", clock=clock)
    assert sim.requests[0].target == path
    expected = model.removeprefix("models/")
    assert sim.requests[0].model == expected
    assert result.text.startswith(f"Simulated answer from {expected}")


def test_request_joins_system_messages_and_maps_options(tmp_path, sim, clock):
    cfg = vendor_config(
        tmp_path,
        sim,
        "gemini",
        fallback=False,
        max_tokens=256,
        temperature=0.3,
        extra={"generationConfig": {"topK": 3}, "safetySettings": []},
    )
    conversation = Conversation(
        [
            Message.system("Be terse."),
            Message.user("hi"),
            Message.assistant("hello"),
            Message.system("No emoji."),
            Message.user("bye"),
        ],
        [ToolDefinition(**WEATHER_TOOL), ToolDefinition("ping", "No arguments")],
    )

    run_engine(cfg, "x", conversation, clock=clock)

    body = sim.requests[0].body
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse.\n\nNo emoji."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "hello"}]},
        {"role": "user", "parts": [{"text": "bye"}]},
    ]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                WEATHER_TOOL,
                {"name": "ping", "description": "No arguments"},  # no empty OBJECT schema
            ]
        }
    ]
    assert body["generationConfig"] == {"maxOutputTokens": 256, "temperature": 0.3, "topK": 3}
    assert body["safetySettings"] == []


def test_tool_round_trip_sends_function_responses_with_the_real_name(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "gemini", fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text.endswith("Which is warmer?")  # the simulator accepted the shape
    contents = sim.requests[0].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Tokyo"}, "id": "call_1"}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_2"}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}, "id": "call_1"}},
        {
            "functionResponse": {
                "name": "get_weather",
                "response": {"output": "4 degrees"},
                "id": "call_2",
            }
        },
        {"text": "Which is warmer?"},
    ]


def test_a_tool_message_name_is_used_when_no_call_carries_its_id():
    conversation = Conversation(
        [
            Message.user("go"),
            Message.assistant("", [ToolCall("", "lookup", "{}")]),
            Message.tool("found", "call_9", name="lookup"),
        ]
    )
    contents = ADAPTER.build_request(conversation, OPTIONS).body["contents"]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"output": "found"}, "id": "call_9"}}
    ]


def test_an_old_file_without_tool_calls_names_the_function_by_its_call_id():
    # Files written for the original put the function name in tool_call_id for Gemini.
    conversation = Conversation([Message.user("go"), Message.tool("found", "lookup")])
    contents = ADAPTER.build_request(conversation, OPTIONS).body["contents"]
    assert contents[0]["parts"][1] == {
        "functionResponse": {"name": "lookup", "response": {"output": "found"}}
    }


def test_response_text_function_calls_usage_and_finish_reason(tmp_path, sim, clock):
    calls = (
        SimToolCall("get_weather", {"city": "Oslo"}, id="fc-1"),
        SimToolCall("get_weather", {"city": "Rome"}),
        SimToolCall("get_weather", {"city": "Oslo"}),
    )
    sim.script("m", Reply("Checking.", tool_calls=calls, input_tokens=30, output_tokens=9))
    cfg = vendor_config(tmp_path, sim, "gemini", fallback=False)

    response = run_engine(cfg, "x", clock=clock).response

    text, *tool_calls = response.content
    assert text == TextBlock("Checking.")
    assert tool_calls[0] == ToolCall("fc-1", "get_weather", '{"city":"Oslo"}')  # id kept
    ids = [c.id for c in tool_calls]
    assert len(set(ids)) == 3 and all(i for i in ids)  # missing ids are unique
    assert (response.input_tokens, response.output_tokens) == (30, 9)
    assert (response.stop_reason, response.model) == ("STOP", "m")


def test_max_tokens_finish_is_reported_not_failed(tmp_path, sim, clock):
    sim.script("m", Reply("partial", stop_reason="MAX_TOKENS"))
    cfg = vendor_config(tmp_path, sim, "gemini", fallback=False)
    response = run_engine(cfg, "x", clock=clock).response
    assert (response.text, response.stop_reason) == ("partial", "MAX_TOKENS")


def test_thought_parts_are_not_answer_text():
    data = {
        "candidates": [
            {
                "content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "42"}]},
                "finishReason": "STOP",
            }
        ]
    }
    assert ADAPTER.parse_response(data, OPTIONS).text == "42"


@pytest.mark.parametrize(
    ("reason", "detail"),
    [
        ("SAFETY", "answer blocked (finishReason: SAFETY)"),
        ("RECITATION", "answer blocked (finishReason: RECITATION)"),
        ("prompt", "prompt blocked (SAFETY)"),
        ("empty", "no candidates"),
    ],
)
def test_blocked_or_empty_answers_fail_over_without_cooldown(tmp_path, sim, clock, reason, detail):
    sim.script("m", Empty(reason))
    cfg = vendor_config(tmp_path, sim, "gemini")
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert result.entry == "sim/b"  # never an empty success
    assert (first.kind, first.rule, first.cooldown_until) == (
        "empty_response",
        "empty_response",
        None,
    )
    assert detail in first.detail


def test_wrong_key_is_a_400_that_still_counts_as_an_auth_failure(tmp_path, sim, clock):
    sim.require_key("another-key")
    cfg = vendor_config(tmp_path, sim, "gemini", fallback=False)
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    first = caught.value.attempts[0]
    assert (first.status, first.rule) == (400, "auth")
    assert first.detail.startswith("HTTP 400: API_KEY_INVALID: API key not valid.")
    assert round(first.cooldown_until - clock.now()) == 3600
    assert SIM_KEY not in first.detail


def test_quota_429_waits_for_the_retry_delay_named_in_the_body(tmp_path, sim, clock):
    sim.script("m", Fail(429, "Quota exceeded", retry_after="37"))
    cfg = vendor_config(tmp_path, sim, "gemini")
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert first.detail.startswith("HTTP 429: RESOURCE_EXHAUSTED: Quota exceeded")
    assert first.rule == "rate_limited"
    assert round(first.cooldown_until - clock.now()) == 37


def test_connection_failure_text_holds_no_key(tmp_path, sim, clock):
    cfg = vendor_config(
        tmp_path, sim, "gemini", provider_options={"base_url": "http://127.0.0.1:9"}
    )
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert first.kind == "connect"
    assert SIM_KEY not in first.detail


def _call(name: str = "f") -> dict[str, object]:
    return {"functionCall": {"name": name, "args": {}}}


def _response(name: str = "f") -> dict[str, object]:
    return {"functionResponse": {"name": name, "response": {"output": 1}}}


USER = {"role": "user", "parts": [{"text": "hi"}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": []}, "contents is not specified"),
        (
            {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
            "valid role: user, model",
        ),
        ({"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty"),
        (
            {
                "contents": [
                    USER,
                    {"role": "model", "parts": [_call(), _call()]},
                    {"role": "user", "parts": [_response()]},
                ]
            },
            "number of function response parts is equal to the number of function call parts",
        ),
        (
            {"contents": [USER, {"role": "user", "parts": [_response()]}]},
            "function response turn comes immediately after a function call turn",
        ),
        (
            {
                "contents": [USER],
                "tools": [
                    {"functionDeclarations": [{"name": "f", "parameters": {"type": "object"}}]}
                ],
            },
            "should be non-empty for OBJECT type",
        ),
        ({"contents": [USER], "generationConfig": {"max_tokens": 5}}, 'Unknown name "max_tokens"'),
        ({"contents": [USER], "model": "x"}, 'Unknown name "model"'),
    ],
)
def test_simulator_rejects_what_generate_content_rejects(sim, body, message):
    response = post(sim, GENERATE, body, {"x-goog-api-key": "k"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert message in error["message"]


def test_simulator_refuses_a_request_without_any_key(sim):
    response = post(sim, GENERATE, {"contents": [USER]}, {})
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"
