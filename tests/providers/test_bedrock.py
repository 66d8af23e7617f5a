"""The bedrock provider: Converse requests signed with SigV4, AWS credentials and region from
the environment or the keyring, errors by type, and converse-stream's event stream."""

from __future__ import annotations

import json
from calendar import timegm

import pytest

from llm_cascade.config import parse_config
from llm_cascade.errors import CascadeFailed, ProviderError
from llm_cascade.keys import lookup_for, resolve_key
from llm_cascade.providers import get_adapter
from llm_cascade.providers.base import CallOptions
from llm_cascade.simulator import Empty, Fail, Reply, SimToolCall, Stream
from llm_cascade.simulator.vendors.base import Invalid, SimRequest
from llm_cascade.simulator.vendors.bedrock import (
    SIM_AWS_ACCESS_KEY_ID,
    SIM_AWS_SECRET_ACCESS_KEY,
    check_signature,
)
from llm_cascade.types import Conversation, ImagePart, Message, TextPart

from ..support import SIM_AWS_KEY, entry, run_cli, run_engine, tiny_png, write_config
from .helpers import round_trip, stream_engine, vendor_config

ADAPTER = get_adapter("bedrock")
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOW = float(timegm((2026, 3, 1, 9, 30, 0)))


def options(**values) -> CallOptions:
    base = {
        "model": MODEL,
        "base_url": "https://bedrock-runtime.{region}.amazonaws.com",
        "api_key": SIM_AWS_KEY,
        "region": "eu-west-1",
    }
    return CallOptions(**{**base, **values})


# --- the request -------------------------------------------------------------------------------


def test_the_url_is_the_regions_endpoint_with_the_model_id_as_one_segment():
    wire = ADAPTER.build_request(Conversation.single_user_prompt("hi"), options())
    assert wire.url == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
        "anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    )
    streamed = ADAPTER.build_request(Conversation.single_user_prompt("hi"), options(), stream=True)
    assert streamed.url.endswith("/converse-stream")
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v2"
    profile = ADAPTER.build_request(Conversation.single_user_prompt("hi"), options(model=arn))
    assert "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus." in (
        profile.url
    )


def test_a_conversation_maps_to_converse_blocks():
    wire = ADAPTER.build_request(round_trip(), options(max_tokens=500, temperature=0.1))
    assert wire.body == {
        "messages": [
            {"role": "user", "content": [{"text": "Weather in Tokyo and Oslo?"}]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather",
                             "input": {"city": "Tokyo"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "get_weather",
                             "input": {"city": "Oslo"}}},
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": '{"temp": 21}'}],
                                "status": "success"}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "4 degrees"}],
                                "status": "success"}},
                {"text": "Which is warmer?"},
            ]},
        ],
        "system": [{"text": "Be terse.\n\nUse Celsius."}],
        "inferenceConfig": {"maxTokens": 500, "temperature": 0.1},
        "toolConfig": {"tools": [{"toolSpec": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "inputSchema": {"json": round_trip().tools[0].parameters},
        }}]},
    }  # fmt: skip


def test_an_image_is_a_block_of_bytes_with_its_format():
    image = ImagePart(media_type="image/jpeg", data="/9j/4AAQ")
    conversation = Conversation([Message.user([TextPart("What?"), image])])
    assert ADAPTER.build_request(conversation, options()).body["messages"][0]["content"] == [
        {"text": "What?"},
        {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
    ]


def test_the_signature_covers_the_bytes_sent_and_a_session_token_is_sent_and_signed():
    key = f"{SIM_AWS_ACCESS_KEY_ID}:{SIM_AWS_SECRET_ACCESS_KEY}:the-session-token"
    url = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m%3A0/converse"
    headers = {
        "host": "bedrock-runtime.eu-west-1.amazonaws.com",
        "content-type": "application/json",
    }
    added = ADAPTER.sign(url, headers, b'{"messages":[]}', options(api_key=key), NOW)
    assert added["x-amz-date"] == "20260301T093000Z"
    assert added["x-amz-security-token"] == "the-session-token"
    auth = added["authorization"]
    assert auth.startswith(
        f"AWS4-HMAC-SHA256 Credential={SIM_AWS_ACCESS_KEY_ID}/20260301/eu-west-1/bedrock/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
    )
    assert SIM_AWS_SECRET_ACCESS_KEY not in json.dumps(added)


@pytest.mark.parametrize("key", [None, "only-one-part", "a:b:c:d", "id::secret"])
def test_unusable_credentials_are_the_missing_key_error(key):
    with pytest.raises(ProviderError) as caught:
        ADAPTER.sign("https://h/x", {"host": "h"}, b"", options(api_key=key), NOW)
    assert caught.value.kind == "missing_key"


# --- the simulator's signature check -------------------------------------------------------------


def signed_request(
    body: bytes, *, key: str = SIM_AWS_KEY, tamper: bytes | None = None
) -> SimRequest:
    url = "http://127.0.0.1:9/bedrock/model/m%3A0/converse"
    headers = {"host": "127.0.0.1:9", "content-type": "application/json"}
    added = ADAPTER.sign(url, headers, body, options(api_key=key), NOW)
    return SimRequest(
        "bedrock",
        "/bedrock/model/m:0/converse",
        "m:0",
        {**headers, **added},
        json.loads(body),
        target="/bedrock/model/m%3A0/converse",
        raw=tamper or body,
    )


def test_the_simulator_accepts_what_is_signed_with_its_secret():
    check_signature(signed_request(b'{"messages":[]}'), SIM_AWS_KEY)


@pytest.mark.parametrize(
    ("request_", "kind"),
    [
        (lambda: signed_request(b"{}", tamper=b'{"a":1}'), "InvalidSignatureException"),
        (
            lambda: signed_request(b"{}", key=f"{SIM_AWS_ACCESS_KEY_ID}:wrong-secret"),
            "InvalidSignatureException",
        ),
        (
            lambda: signed_request(b"{}", key=f"AKIDOTHER:{SIM_AWS_SECRET_ACCESS_KEY}"),
            "UnrecognizedClientException",
        ),
    ],
)  # fmt: skip
def test_the_simulator_refuses_a_body_changed_a_wrong_secret_or_an_unknown_key(request_, kind):
    with pytest.raises(Invalid) as caught:
        check_signature(request_(), SIM_AWS_KEY)
    assert (caught.value.status, caught.value.code) == (403, kind)


def test_the_simulator_refuses_an_unsigned_request_and_a_missing_session_token():
    unsigned = SimRequest("bedrock", "/x", "m", {"host": "h"}, {}, target="/x")
    with pytest.raises(Invalid, match="Missing Authentication Token"):
        check_signature(unsigned, SIM_AWS_KEY)
    with pytest.raises(Invalid) as caught:  # signed without the token the credentials have
        check_signature(signed_request(b"{}"), f"{SIM_AWS_KEY}:a-token")
    assert caught.value.code == "UnrecognizedClientException"


# --- over HTTP -----------------------------------------------------------------------------------


def test_the_round_trip_is_signed_and_accepted(tmp_path, sim, clock):
    cfg = vendor_config(tmp_path, sim, "bedrock", MODEL, fallback=False)

    result = run_engine(cfg, "x", round_trip(), clock=clock)

    assert result.text == f"Simulated answer from {MODEL}: Which is warmer?"
    request = sim.requests[0]
    assert request.target == f"/bedrock/model/{MODEL.replace(':', '%3A')}/converse"
    assert request.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={SIM_AWS_ACCESS_KEY_ID}/"
    )
    assert "/us-east-1/bedrock/aws4_request" in request.headers["authorization"]
    assert (result.response.input_tokens, result.response.output_tokens) == (11, 7)


def test_a_wrong_secret_is_an_auth_failure_that_never_shows_the_secret(
    tmp_path, sim, clock, monkeypatch
):
    monkeypatch.setenv("WRONG_AWS", f"{SIM_AWS_ACCESS_KEY_ID}:not-the-right-secret-at-all")
    cfg = vendor_config(tmp_path, sim, "bedrock", provider_options={"api_key_env": "WRONG_AWS"})

    first = run_engine(cfg, "x", clock=clock).attempts[0]

    assert (first.rule, first.status) == ("auth", 403)
    assert first.detail.startswith("HTTP 403: InvalidSignatureException: The request signature")
    assert "not-the-right-secret-at-all" not in first.detail


@pytest.mark.parametrize(
    ("behaviour", "rule", "retried"),
    [
        (Fail(429, "Too many requests, please wait before trying again."), "rate_limited", True),
        (Fail(429, "Model is not ready", code="ModelNotReadyException"), "model_not_ready", True),
        (Fail(400, "Malformed input request", code="ValidationException"), "caller_error", False),
        (Fail(400, "Quota exceeded", code="ServiceQuotaExceededException"),
         "bedrock_service_quota", False),
        (Fail(403, "You don't have access to the model"), "auth", False),
        (Fail(424, "The model failed", code="ModelErrorException"), "model_error", False),
        (Fail(503, "Service unavailable"), "unavailable", True),
    ],
)  # fmt: skip
def test_errors_are_named_by_their_type_and_decided_by_the_rules(
    tmp_path, sim, clock, behaviour, rule, retried
):
    sim.script("m", behaviour)
    cfg = vendor_config(tmp_path, sim, "bedrock", retries=1)

    result = run_engine(cfg, "x", clock=clock)

    assert result.attempts[0].rule == rule
    assert (result.attempts[0].outcome == "retrying") is retried
    assert result.entry == "sim/b"
    default = {
        429: "ThrottlingException",
        403: "AccessDeniedException",
        503: "ServiceUnavailableException",
    }
    code = behaviour.code or default[behaviour.status]
    assert result.attempts[0].detail.startswith(f"HTTP {behaviour.status}: {code}: ")


def test_a_tool_call_left_unanswered_is_what_converse_refuses(tmp_path, sim, clock):
    call = round_trip().messages[3].tool_calls[0]
    broken = Conversation([Message.user("hi"), Message.assistant("", [call]), Message.user("so?")])
    cfg = vendor_config(tmp_path, sim, "bedrock", fallback=False)

    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", broken, clock=clock)

    [first] = caught.value.attempts
    assert first.rule == "caller_error"
    assert "Expected toolResult blocks at messages.2.content for the following Ids: call_1" in (
        first.detail
    )


def test_a_history_with_tool_calls_but_no_tools_declares_the_tools_it_used(tmp_path, sim, clock):
    history = Conversation(round_trip().messages)  # the calls and results, no tool list
    cfg = vendor_config(tmp_path, sim, "bedrock", fallback=False)

    run_engine(cfg, "x", history, clock=clock)

    assert sim.requests[0].body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "get_weather",
                    "inputSchema": {"json": {"type": "object"}},
                }
            }
        ]
    }


def test_a_guardrail_that_intervened_fails_over_without_a_cooldown(tmp_path, sim, clock):
    sim.script("m", Empty("guardrail"))
    cfg = vendor_config(tmp_path, sim, "bedrock")
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert (first.rule, first.cooldown_until) == ("empty_response", None)
    assert "guardrail_intervened" in first.detail


def test_a_documented_converse_reply_is_read():
    reply = {
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song",
                         "input": {"sign": "WZPZ"}}},
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 375, "outputTokens": 36, "totalTokens": 411},
        "metrics": {"latencyMs": 2270},
    }  # fmt: skip
    response = ADAPTER.parse_response(reply, options())
    assert response.text == "Let me check."
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song", '{"sign":"WZPZ"}')
    ]
    assert (response.input_tokens, response.output_tokens, response.stop_reason) == (
        375,
        36,
        "tool_use",
    )


# --- streams -------------------------------------------------------------------------------------


def test_a_converse_stream_with_text_and_tool_uses_in_pieces(tmp_path, sim, clock):
    calls = (
        SimToolCall("get_weather", {"city": "Oslo"}, id="tu_1"),
        SimToolCall("get_weather", {"city": "Kyiv"}, id="tu_2"),
    )
    sim.script("m", Reply("Checking.", tool_calls=calls, stream=Stream(tool_fragments=3)))
    cfg = vendor_config(tmp_path, sim, "bedrock", fallback=False)

    result = stream_engine(cfg, clock)

    assert sim.requests[0].path.endswith("/converse-stream")
    response = result.response
    assert response.text == "Checking."
    assert [(c.id, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("tu_1", {"city": "Oslo"}),
        ("tu_2", {"city": "Kyiv"}),
    ]
    assert (response.input_tokens, response.output_tokens, response.stop_reason) == (
        11,
        7,
        "tool_use",
    )
    assert result.attempts[0].chunks is not None


@pytest.mark.parametrize(
    ("status", "rule"), [(429, "rate_limited"), (400, "caller_error"), (529, "server_error")]
)
def test_an_exception_mid_stream_is_the_error_its_type_stands_for(
    tmp_path, sim, clock, status, rule
):
    sim.script("m", Reply("one two three", stream=Stream(error_after=1, error_status=status)))
    cfg = vendor_config(tmp_path, sim, "bedrock")
    first = stream_engine(cfg, clock).attempts[0]
    assert first.rule == rule


@pytest.mark.parametrize(
    ("stream", "rule"),
    [(Stream(terminator=False), "truncated"), (Stream(malformed_after=1), "invalid_response")],
)
def test_a_stream_cut_before_message_stop_or_with_a_bad_payload_fails_over(
    tmp_path, sim, clock, stream, rule
):
    sim.script("m", Reply("one two", stream=stream))
    cfg = vendor_config(tmp_path, sim, "bedrock")
    assert stream_engine(cfg, clock).attempts[0].rule == rule


# --- credentials and region ----------------------------------------------------------------------


def _lookup(env: dict[str, str], monkeypatch, **table):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = parse_config({"providers": {"br": {"type": "bedrock", **table}}}).providers["br"]
    return lookup_for(provider)


def test_the_usual_aws_variables_are_the_credentials_whatever_the_base_url(monkeypatch):
    env = {
        "AWS_ACCESS_KEY_ID": "AKID1",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t/abc",
        "AWS_SESSION_TOKEN": "tok",
        "AWS_REGION": "ap-south-1",
    }
    lookup = _lookup(env, monkeypatch, base_url="https://vpce-1.bedrock-runtime.example.com")
    key = resolve_key(lookup, use_keyring=False)
    assert (key.source, key.value, key.region) == ("env", "AKID1:s3cr3t/abc:tok", "ap-south-1")


def test_the_configured_region_comes_before_the_variables(monkeypatch):
    env = {"AWS_ACCESS_KEY_ID": "AKID1", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "x-1"}
    assert _lookup(env, monkeypatch, region="eu-north-1").region == "eu-north-1"
    assert _lookup(env, monkeypatch).region == "x-1"


def test_the_keyring_holds_both_secrets_as_one_entry(monkeypatch, isolated_env):
    isolated_env.set_password("llm-cascade", "br", "AKIDK:keyring-secret")
    key = resolve_key(_lookup({}, monkeypatch, region="us-east-1"))
    assert (key.source, key.value) == ("keyring", "AKIDK:keyring-secret")


def test_a_keyring_entry_that_is_not_a_pair_is_ignored_with_a_warning(monkeypatch, isolated_env):
    isolated_env.set_password("llm-cascade", "br", "just-a-secret")
    key = resolve_key(_lookup({}, monkeypatch, region="us-east-1"))
    assert key.source == "missing"
    assert "ignored the key in the keyring for 'br'" in (key.warning or "")


@pytest.mark.parametrize(
    ("env", "table", "message"),
    [
        ({"AWS_ACCESS_KEY_ID": "AKID"}, {"region": "us-east-1"},
         "AWS credentials not configured for provider 'bedrock': set AWS_ACCESS_KEY_ID and"
         " AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)"),
        ({"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"}, {},
         "AWS region not configured for provider 'bedrock': set `region` in"
         " [providers.bedrock] or AWS_REGION"),
    ],
)  # fmt: skip
def test_missing_credentials_or_region_skip_the_entry_and_say_how_to_fix_it(
    tmp_path, sim, clock, monkeypatch, env, table, message
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    providers = {"bedrock": {"type": "bedrock", "base_url": sim.base_url("bedrock"), **table}}
    cfg = write_config(
        tmp_path,
        sim,
        {"x": [entry("bedrock", "m"), "b"]},
        providers=providers,
        extra={"keyring": False},
    )

    result = run_engine(cfg, "x", clock=clock)

    first = result.attempts[0]
    assert (first.outcome, result.entry) == ("missing_key", "sim/b")
    assert first.detail == message
    assert sim.count("m") == 0


def test_cli_run_with_the_aws_variables(tmp_path, sim):
    sim.script("m", Reply("Hi from Bedrock."))
    providers = {"br": {"type": "bedrock", "base_url": sim.base_url("bedrock")}}
    cfg = write_config(tmp_path, sim, {"x": [entry("br", "m")]}, providers=providers)
    aws = {
        "AWS_ACCESS_KEY_ID": SIM_AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SIM_AWS_SECRET_ACCESS_KEY,
        "AWS_REGION": "us-west-2",
    }

    for mode in ("--no-stream", "--stream"):
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hello", mode, "-vv", env=aws)
        assert (done.returncode, done.stdout) == (0, "Hi from Bedrock.\n"), done.stderr
        assert SIM_AWS_SECRET_ACCESS_KEY not in done.stderr


def test_cli_image_goes_as_bytes(tmp_path, sim):
    (tmp_path / "cat.png").write_bytes(tiny_png())
    sim.script("m", Reply("A pixel."))
    cfg = vendor_config(tmp_path, sim, "bedrock", fallback=False)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "what?", "-a", str(tmp_path / "cat.png"))
    assert (done.returncode, done.stdout) == (0, "A pixel.\n"), done.stderr
    assert sim.requests[0].body["messages"][0]["content"][1]["image"]["format"] == "png"
