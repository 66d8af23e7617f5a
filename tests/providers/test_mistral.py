"""The mistral provider: OpenAI's shape with Mistral's differences, against the simulator."""

from __future__ import annotations

import json

import pytest

from llm_cascade.providers import get_adapter
from llm_cascade.providers.base import CallOptions
from llm_cascade.providers.mistral import tool_call_id, translated
from llm_cascade.simulator import Fail, Reply, SimToolCall
from llm_cascade.types import Conversation, ImagePart, Message, TextPart

from ..support import SIM_KEY, run_cli, run_engine
from .helpers import post, round_trip, stream_engine, vendor_config

ADAPTER = get_adapter("mistral")
OPTIONS = CallOptions(model="mistral-large-latest", base_url="https://api.mistral.ai/v1")


def test_tool_call_ids_are_mapped_to_nine_letters_or_digits_the_same_on_both_sides():
    assert tool_call_id("D681PevKs") == "D681PevKs"  # one Mistral minted
    mapped = tool_call_id("call_1")
    assert len(mapped) == 9 and mapped.isalnum() and mapped == tool_call_id("call_1")
    assert tool_call_id("call_2") != mapped
    body = ADAPTER.build_request(round_trip(), OPTIONS).body
    [calls] = [m["tool_calls"] for m in body["messages"] if m.get("tool_calls")]
    results = [m for m in body["messages"] if m["role"] == "tool"]
    assert [c["id"] for c in calls] == [r["tool_call_id"] for r in results]
    assert [r["name"] for r in results] == ["get_weather", "get_weather"]


def test_openai_names_in_extra_become_mistrals():
    assert translated({"seed": 7, "tool_choice": "required", "top_p": 0.5}) == {
        "random_seed": 7,
        "tool_choice": "any",
        "top_p": 0.5,
    }
    assert translated({"seed": 1, "random_seed": 2}) == {"seed": 1, "random_seed": 2}


def test_a_final_assistant_turn_is_a_prefix_and_images_are_url_strings():
    image = ImagePart(media_type="image/png", data="iVBORw0KGgo=")
    conversation = Conversation(
        [Message.user([TextPart("Describe"), image]), Message.assistant("It shows")]
    )
    body = ADAPTER.build_request(conversation, OPTIONS).body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            ],
        },
        {"role": "assistant", "content": "It shows", "prefix": True},
    ]


def test_a_streamed_request_sends_no_stream_options():
    body = ADAPTER.build_request(Conversation.single_user_prompt("hi"), OPTIONS, stream=True).body
    assert body["stream"] is True and "stream_options" not in body


def test_a_documented_reply_is_read():
    reply = {
        "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
        "object": "chat.completion",
        "model": "mistral-small-latest",
        "usage": {"prompt_tokens": 16, "completion_tokens": 34, "total_tokens": 50},
        "created": 1702256327,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "D681PevKs",
                            "type": "function",
                            "function": {
                                "name": "retrieve_payment_status",
                                "arguments": '{"transaction_id": "T1001"}',
                            },
                        }
                    ],
                    "prefix": False,
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    response = ADAPTER.parse_response(reply, OPTIONS)
    assert [(c.id, c.name) for c in response.tool_calls] == [
        ("D681PevKs", "retrieve_payment_status")
    ]
    assert (response.input_tokens, response.output_tokens) == (16, 34)


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            {
                "object": "error",
                "message": "Rate limit exceeded",
                "type": "rate_limited",
                "param": None,
                "code": "1300",
            },
            "rate_limited: Rate limit exceeded",
            "rate_limited",
        ),
        (
            {
                "object": "error",
                "message": {
                    "detail": [
                        {
                            "type": "extra_forbidden",
                            "loc": ["body", "stream_options"],
                            "msg": "Extra inputs are not permitted",
                        }
                    ]
                },
                "type": "invalid_request_message_error",
                "param": None,
                "code": None,
            },
            "invalid_request_message_error: body.stream_options: Extra inputs are not permitted",
            "invalid_request_message_error",
        ),
        ({"message": "Unauthorized", "request_id": "abc"}, "Unauthorized", None),
    ],
)
def test_mistral_error_shapes(body, message, code):
    assert ADAPTER.parse_error(body) == (message, code)


def test_the_round_trip_reaches_the_simulator_which_checks_ids_and_roles(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "mistral", "mistral-small", fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text == "Simulated answer from mistral-small: Which is warmer?"
    assert sim.requests[0].path == "/mistral/v1/chat/completions"
    assert sim.requests[0].headers["authorization"] == f"Bearer {SIM_KEY}"


def test_the_simulator_refuses_what_mistral_refuses(sim):
    headers = {"Authorization": "Bearer k"}
    path = "/mistral/v1/chat/completions"
    hi = [{"role": "user", "content": "hi"}]
    extra = post(sim, path, {"model": "m", "messages": hi, "stream_options": {}}, headers)
    assert extra.status_code == 422
    assert extra.json()["message"]["detail"][0]["loc"] == ["body", "stream_options"]
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    bad_id = [*hi, {"role": "assistant", "content": None, "tool_calls": [call]}]
    assert "length of 9" in post(sim, path, {"model": "m", "messages": bad_id}, headers).text
    last_assistant = [*hi, {"role": "assistant", "content": "so"}]
    refused = post(sim, path, {"model": "m", "messages": last_assistant}, headers)
    assert "Expected last role User or Tool" in refused.text
    assert post(sim, path, {"model": "m", "messages": hi}, {}).json() == {
        "message": "Unauthorized",
        "request_id": "sim",
    }


def test_ratelimitbysize_reset_is_the_wait_when_no_retry_after_comes(tmp_path, sim, clock):
    sim.script("m", Fail(429, "Rate limit exceeded", headers={"ratelimitbysize-reset": "12"}))
    cfg = vendor_config(tmp_path, sim, "mistral")

    first = run_engine(cfg, "x", clock=clock).attempts[0]

    assert (first.rule, first.cooldown_s) == ("rate_limited", 12.0)
    assert first.detail.startswith("HTTP 429: rate_limited: Rate limit exceeded")
    assert (first.status, run_engine(cfg, "x", clock=clock).entry) == (429, "sim/b")


def test_a_generation_error_finish_is_a_failed_attempt(tmp_path, sim, clock):
    sim.script("m", Reply("partial", stop_reason="error"))
    cfg = vendor_config(tmp_path, sim, "mistral")

    first = run_engine(cfg, "x", clock=clock).attempts[0]

    assert (first.kind, first.rule) == ("invalid_response", "invalid_response")
    assert "finish_reason: error" in first.detail


def test_tool_calls_stream_whole_and_the_usage_comes_with_the_finish(tmp_path, sim, clock):
    call = SimToolCall("get_weather", {"city": "Oslo"})
    sim.script("m", Reply("Let me check.", tool_calls=(call,)))
    cfg = vendor_config(tmp_path, sim, "mistral", fallback=False)

    result = stream_engine(cfg, clock).response

    assert result.text == "Let me check."
    [made] = result.tool_calls
    assert (len(made.id), made.name, json.loads(made.arguments)) == (
        9,
        "get_weather",
        {"city": "Oslo"},
    )
    assert (result.input_tokens, result.output_tokens) == (11, 7)


def test_cli_run_with_an_image(tmp_path, sim):
    from ..support import tiny_png

    (tmp_path / "cat.png").write_bytes(tiny_png())
    sim.script("pixtral", Reply("A pixel."))
    cfg = vendor_config(tmp_path, sim, "mistral", "pixtral", fallback=False)

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "what?", "-a", str(tmp_path / "cat.png"))

    assert (done.returncode, done.stdout) == (0, "A pixel.\n"), done.stderr
    part = sim.requests[0].body["messages"][0]["content"][1]
    assert part["image_url"].startswith("data:image/png;base64,")
