"""The anthropic provider against the simulated Messages API over loopback."""

from __future__ import annotations

import httpx
import pytest

from llm_cascade.errors import CascadeFailed
from llm_cascade.simulator import Empty, ErrorEvent, Fail, Reply, SimToolCall
from llm_cascade.types import Conversation, Message, TextBlock, ToolCall, ToolDefinition

from ..support import SIM_KEY, run_engine
from .helpers import WEATHER_TOOL, cooldown_rows, post, round_trip, vendor_config

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def test_request_carries_key_version_joined_system_and_default_max_tokens(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "anthropic", "claude-x", fallback=False)
    conversation = Conversation(
        [Message.system("Be terse."), Message.user("hi"), Message.system("No emoji.")],
        [ToolDefinition(**WEATHER_TOOL)],
    )

    result = run_engine(cfg, "x", conversation, clock=clock)

    assert result.text == "Simulated answer from claude-x: hi"
    request = sim.requests[0]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == SIM_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.body == {
        "model": "claude-x",
        "max_tokens": 4096,  # the original's value when none is configured
        "messages": [{"role": "user", "content": "hi"}],
        "system": "Be terse.\n\nNo emoji.",
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather in a city",
                "input_schema": WEATHER_TOOL["parameters"],
            }
        ],
    }


def test_entry_options_override_the_provider_and_extra_is_merged(tmp_path, sim, clock):
    cfg = vendor_config(
        tmp_path,
        sim,
        "anthropic",
        fallback=False,
        provider_options={"max_tokens": 1000, "temperature": 0.9, "extra": {"top_k": 5}},
        max_tokens=200,
        temperature=0.2,
        extra={"metadata": {"user_id": "u-1"}},
    )
    run_engine(cfg, "x", clock=clock)
    body = sim.requests[0].body
    assert (body["max_tokens"], body["temperature"]) == (200, 0.2)
    assert (body["top_k"], body["metadata"]) == (5, {"user_id": "u-1"})


def test_tool_round_trip_uses_tool_use_and_one_user_turn_of_results(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "anthropic", fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text.endswith("Which is warmer?")  # the simulator accepted the shape
    body = sim.requests[0].body
    assert body["system"] == "Be terse.\n\nUse Celsius."
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Tokyo and Oslo?"},
        {
            "role": "assistant",
            "content": [  # no empty text block: the API rejects those
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Tokyo"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [  # results first, then the text that followed them
                {"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp": 21}'},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "4 degrees"},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_response_text_tool_use_usage_and_stop_reason(tmp_path, sim, clock):
    call = SimToolCall("get_weather", {"city": "Oslo"}, id="toolu_01")
    sim.script("m", Reply("Let me check.", tool_calls=(call,), input_tokens=20, output_tokens=5))
    cfg = vendor_config(tmp_path, sim, "anthropic", fallback=False)

    response = run_engine(cfg, "x", clock=clock).response

    assert response.content == (
        TextBlock("Let me check."),
        ToolCall("toolu_01", "get_weather", '{"city":"Oslo"}'),
    )
    assert (response.input_tokens, response.output_tokens) == (20, 5)
    assert response.stop_reason == "tool_use"
    assert response.model == "m"


def test_max_tokens_stop_reason_is_reported(tmp_path, sim, clock):
    sim.script("m", Reply("cut sho", stop_reason="max_tokens"))
    cfg = vendor_config(tmp_path, sim, "anthropic", fallback=False)
    assert run_engine(cfg, "x", clock=clock).response.stop_reason == "max_tokens"


def test_overloaded_529_is_transient_and_honours_retry_after(tmp_path, sim, clock):
    sim.script("m", Fail(529, "Overloaded", retry_after="12"))
    cfg = vendor_config(tmp_path, sim, "anthropic")
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert result.entry == "sim/b"
    assert (first.status, first.rule) == (529, "overloaded")
    assert first.detail.startswith("HTTP 529: overloaded_error: Overloaded")
    assert round(first.cooldown_until - clock.now()) == 12


def test_overloaded_529_is_retried_inside_the_entry(tmp_path, sim, clock):
    sim.script("m", Fail(529), Reply("second try"))
    cfg = vendor_config(tmp_path, sim, "anthropic", retries=1)
    result = run_engine(cfg, "x", clock=clock)
    assert result.text == "second try"
    assert [a.outcome for a in result.attempts] == ["retrying", "ok"]


def test_spend_limit_429_cools_down_long_and_says_how_to_fix_it(tmp_path, sim, clock):
    sim.script(
        "m",
        Fail(429, "You have reached your spend limit", code="enforced_spend_limit_reached"),
    )
    cfg = vendor_config(tmp_path, sim, "anthropic", retries=2)
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert sim.count("m") == 1  # never retried: waiting does not lift a spend limit
    assert first.rule == "anthropic_spend_limit"
    assert round(first.cooldown_until - clock.now()) == 3600
    assert "raise it in the Anthropic console" in first.detail
    assert cooldown_rows(tmp_path)["anthropic/m"] == 1


def test_error_event_inside_a_200_is_a_failure(tmp_path, sim, clock):
    sim.script("m", ErrorEvent(529, "Overloaded"))
    cfg = vendor_config(tmp_path, sim, "anthropic")
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert result.entry == "sim/b"
    assert (first.status, first.kind, first.rule) == (200, "invalid_response", "invalid_response")
    assert "error in a 2xx response: overloaded_error: Overloaded" in first.detail


@pytest.mark.parametrize(("reason", "expected"), [("refusal", "refused"), ("empty", "no text")])
def test_refusal_or_empty_content_fails_over_without_cooldown(
    tmp_path, sim, clock, reason, expected
):
    sim.script("m", Empty(reason))
    cfg = vendor_config(tmp_path, sim, "anthropic")
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert result.entry == "sim/b"
    assert (first.rule, first.cooldown_until) == ("empty_response", None)
    assert expected in first.detail


def test_wrong_key_is_an_auth_failure(tmp_path, sim, clock):
    sim.require_key("another-key")
    cfg = vendor_config(tmp_path, sim, "anthropic", fallback=False)
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    first = caught.value.attempts[0]
    assert (first.status, first.rule) == (401, "auth")
    assert "authentication_error" in first.detail
    assert SIM_KEY not in first.detail


def _ok_messages() -> list[dict[str, object]]:
    return [{"role": "user", "content": "hi"}]


def _tool_use_turn(call_id: str = "t1") -> dict[str, object]:
    block = {"type": "tool_use", "id": call_id, "name": "f", "input": {}}
    return {"role": "assistant", "content": [block]}


def _result(call_id: str = "t1") -> dict[str, object]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": "ok"}


@pytest.mark.parametrize(
    ("change", "headers", "message"),
    [
        ({"max_tokens": None}, HEADERS, "max_tokens: Field required"),
        ({"messages": [{"role": "system", "content": "x"}]}, HEADERS, 'Unexpected role "system"'),
        (
            {"messages": [{"role": "assistant", "content": "x"}]},
            HEADERS,
            'first message must use the "user" role',
        ),
        (
            {"messages": [*_ok_messages(), _tool_use_turn(), {"role": "user", "content": "no"}]},
            HEADERS,
            "`tool_use` ids were found without `tool_result` blocks immediately after: t1",
        ),
        (
            {"messages": [{"role": "user", "content": [_result()]}]},
            HEADERS,
            "unexpected `tool_use_id` found in `tool_result` blocks: t1",
        ),
        (
            {
                "messages": [
                    *_ok_messages(),
                    _tool_use_turn(),
                    {"role": "user", "content": [{"type": "text", "text": "x"}, _result()]},
                ]
            },
            HEADERS,
            "`tool_use` ids were found without `tool_result` blocks",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            HEADERS,
            "text content blocks must be non-empty",
        ),
        ({"tools": [{"name": "f", "parameters": {}}]}, HEADERS, "input_schema: Field required"),
        ({"temperature": 1.5}, HEADERS, "temperature"),
        (
            {"messages": [*_ok_messages(), {"role": "assistant", "content": "Sure, "}]},
            HEADERS,
            "final assistant content cannot end with trailing whitespace",
        ),
        ({"stream_mode": "x"}, HEADERS, "stream_mode: Extra inputs are not permitted"),
        ({}, {"x-api-key": "k"}, "anthropic-version: header is required"),
    ],
)
def test_simulator_rejects_what_the_messages_api_rejects(sim, change, headers, message):
    body = {"model": "m", "max_tokens": 10, "messages": _ok_messages(), **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = post(sim, "/v1/messages", body, headers)
    assert response.status_code == 400
    data = response.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == "invalid_request_error"
    assert message in data["error"]["message"]


def test_simulator_combines_consecutive_turns_as_the_api_does(sim):
    messages = [
        *_ok_messages(),
        _tool_use_turn(),
        {"role": "user", "content": [_result()]},
        {"role": "user", "content": "and now?"},
    ]
    body = {"model": "m", "max_tokens": 10, "messages": messages}
    response = post(sim, "/v1/messages", body, HEADERS)
    assert response.status_code == 200
    assert response.json()["content"][0]["text"].endswith("and now?")


def test_tool_ids_outside_the_apis_alphabet_are_mapped_on_both_sides(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "anthropic", fallback=False)
    conversation = Conversation(
        [
            Message.user("weather?"),
            Message.assistant("", [ToolCall("functions.get_weather:0", "get_weather", "{}")]),
            Message.tool("sunny", "functions.get_weather:0"),
        ]
    )
    run_engine(cfg, "x", conversation, clock=clock)  # raises if the simulator said 400
    messages = sim.requests[0].body["messages"]
    assert messages[1]["content"][0]["id"] == "functions_get_weather_0"
    assert messages[2]["content"][0]["tool_use_id"] == "functions_get_weather_0"


def test_error_event_can_be_scripted_from_another_process(tmp_path, sim, clock):
    script = {"m": [{"type": "error_event", "status": 529, "message": "Overloaded"}]}
    assert httpx.post(sim.url + "/_sim/script", json=script, timeout=5).status_code == 200
    cfg = vendor_config(tmp_path, sim, "anthropic")
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert (first.status, first.rule) == (200, "invalid_response")
    assert "overloaded_error: Overloaded" in first.detail
