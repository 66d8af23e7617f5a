"""The azure provider: a resource's deployments and the v1 API, against the simulator."""

from __future__ import annotations

import json

import pytest

from llm_cascade.config import parse_config
from llm_cascade.errors import ConfigError
from llm_cascade.keys import lookup_for
from llm_cascade.providers import get_adapter
from llm_cascade.providers.base import CallOptions
from llm_cascade.simulator import Empty, Fail, Reply, SimToolCall, Stream
from llm_cascade.types import Conversation, Message

from ..support import SIM_KEY, run_cli, run_engine
from .helpers import cooldown_rows, post, round_trip, stream_engine, vendor_config

ADAPTER = get_adapter("azure")
HI = Conversation([Message.user("hi")])


def options(base_url: str, **values) -> CallOptions:
    return CallOptions(model="gpt-4o-prod", base_url=base_url, api_key="azure-key", **values)


def test_a_resource_url_posts_to_the_deployment_with_api_version_and_api_key():
    wire = ADAPTER.build_request(HI, options("https://contoso.openai.azure.com"))
    assert wire.url == (
        "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions"
        "?api-version=2024-10-21"
    )
    assert wire.headers == {"api-key": "azure-key"}
    assert wire.body == {"messages": [{"role": "user", "content": "hi"}]}  # no model: the URL


def test_the_api_version_is_configurable():
    wire = ADAPTER.build_request(
        HI, options("https://contoso.openai.azure.com", api_version="2025-04-01-preview")
    )
    assert wire.url.endswith("?api-version=2025-04-01-preview")


def test_a_v1_url_is_openais_shape_with_a_bearer_key():
    wire = ADAPTER.build_request(HI, options("https://contoso.openai.azure.com/openai/v1"))
    assert wire.url == "https://contoso.openai.azure.com/openai/v1/chat/completions"
    assert wire.headers == {"Authorization": "Bearer azure-key"}
    assert wire.body["model"] == "gpt-4o-prod"


def test_a_documented_reply_with_filter_results_is_read():
    reply = {  # the shape of Azure's chat completions reference example
        "id": "chatcmpl-7R1nGnsXO8n4oi9UPz2f3UHdgAYMn",
        "created": 1686676106,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Ok."},
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            }
        ],
        "usage": {"completion_tokens": 557, "prompt_tokens": 33, "total_tokens": 590},
        "model": "gpt-4o-2024-08-06",
        "object": "chat.completion",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    response = ADAPTER.parse_response(reply, options("https://x.openai.azure.com"))
    assert (response.text, response.input_tokens, response.output_tokens) == ("Ok.", 33, 557)
    assert response.model == "gpt-4o-2024-08-06"


def test_the_request_reaches_the_deployment_the_simulator_checks(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "azure", "prod-4o", fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text == "Simulated answer from prod-4o: Which is warmer?"
    request = sim.requests[0]
    assert request.path == "/azure/openai/deployments/prod-4o/chat/completions"
    assert request.target.endswith("?api-version=2024-10-21")
    assert request.headers["api-key"] == SIM_KEY
    assert "authorization" not in request.headers


def test_the_v1_endpoint_takes_the_model_in_the_body(tmp_path, sim, clock):
    cfg = vendor_config(
        tmp_path,
        sim,
        "azure",
        "gpt-4o",
        fallback=False,
        provider_options={"base_url": sim.url + "/azure/openai/v1"},
    )
    assert run_engine(cfg, "x", clock=clock).text == "Simulated answer from gpt-4o: hello"
    assert sim.requests[0].headers["authorization"] == f"Bearer {SIM_KEY}"


def test_the_simulator_refuses_a_deployment_request_without_api_version_or_key(sim):
    path = "/azure/openai/deployments/d/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    no_version = post(sim, path, body, {"api-key": "k"})
    no_key = post(sim, path + "?api-version=2024-10-21", body, {"Authorization": "Bearer k"})
    assert (no_version.status_code, no_version.json()["error"]["code"]) == (404, "404")
    assert no_key.status_code == 401
    assert post(sim, path + "?api-version=2024-10-21", body, {"api-key": "k"}).status_code == 200


def test_a_filtered_prompt_fails_over_without_a_cooldown(tmp_path, sim, clock):
    sim.script("m", Fail(400, "The response was filtered", code="content_filter"))
    cfg = vendor_config(tmp_path, sim, "azure")

    result = run_engine(cfg, "x", clock=clock)

    first = result.attempts[0]
    assert (result.entry, first.rule, first.cooldown_until) == ("sim/b", "content_filtered", None)
    assert "content_filter: The response was filtered" in first.detail
    assert cooldown_rows(tmp_path) == {}


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_the_filter_withheld_fails_over_even_after_text(tmp_path, sim, clock, stream):
    sim.script("m", Empty("content_filter"))
    cfg = vendor_config(tmp_path, sim, "azure")

    result = stream_engine(cfg, clock) if stream else run_engine(cfg, "x", clock=clock)

    first = result.attempts[0]
    assert (first.kind, first.rule) == ("empty_response", "empty_response")
    assert "withheld by the content filter" in first.detail
    assert result.entry == "sim/b"


def test_retry_after_ms_sets_the_cooldown(tmp_path, sim, clock):
    sim.script("m", Fail(429, "Rate limit is exceeded", headers={"retry-after-ms": "1500"}))
    cfg = vendor_config(tmp_path, sim, "azure")

    first = run_engine(cfg, "x", clock=clock).attempts[0]

    assert first.rule == "rate_limited"
    assert first.cooldown_s == 1.5


def test_a_stream_that_opens_with_filter_results_and_no_choices_is_read(tmp_path, sim, clock):
    call = SimToolCall("get_weather", {"city": "Oslo"}, id="call_9")
    sim.script("m", Reply("Checking.", tool_calls=(call,), stream=Stream(tool_fragments=3)))
    cfg = vendor_config(tmp_path, sim, "azure", fallback=False)

    result = stream_engine(cfg, clock)

    assert result.response.text == "Checking."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in result.response.tool_calls] == [
        ("call_9", "get_weather", {"city": "Oslo"})
    ]
    assert (result.response.input_tokens, result.response.output_tokens) == (11, 7)


def test_cli_run_against_a_deployment(tmp_path, sim):
    sim.script("prod", Reply("Bonjour."))
    cfg = vendor_config(tmp_path, sim, "azure", "prod", fallback=False)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hello")
    assert (done.returncode, done.stdout) == (0, "Bonjour.\n"), done.stderr


# --- config and keys ---------------------------------------------------------------------------


def _provider(**table):
    raw = {"providers": {"az": {"type": "azure", **table}}}
    return parse_config(raw).providers["az"]


def test_an_azure_provider_needs_a_base_url():
    with pytest.raises(ConfigError, match=r"providers\.az\.base_url: is required for type azure"):
        _provider()


def test_api_version_must_be_one_word():
    with pytest.raises(ConfigError, match=r"providers\.az\.api_version: must be letters"):
        _provider(base_url="https://c.openai.azure.com", api_version="2024 10")
    assert _provider(base_url="https://c.openai.azure.com", api_version="v1").api_version == "v1"


@pytest.mark.parametrize(
    ("base_url", "env_var"),
    [
        ("https://contoso.openai.azure.com", "AZURE_OPENAI_API_KEY"),
        ("https://contoso.openai.azure.com/openai/v1", "AZURE_OPENAI_API_KEY"),
        ("https://contoso.cognitiveservices.azure.com", "AZURE_OPENAI_API_KEY"),
        ("https://azure-proxy.example.com", None),  # never sent to a third party
    ],
)
def test_the_azure_key_variable_goes_only_to_azure_hosts(base_url, env_var):
    assert lookup_for(_provider(base_url=base_url)).env_var == env_var
