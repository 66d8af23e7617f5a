"""`llm-cascade serve` as a real process, used by the vendors' official SDKs, with the
simulator behind it: answers, streams, tools, failover, total failures, bad input, the token,
disconnects and shutdown."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from llm_cascade.simulator import Fail, Hang, Reply, SimToolCall, Simulator, Stream
from llm_cascade.store import Store

from .gateway import gateway
from .support import entry, run_cli, saved_files, write_config

PROMPT = "the secret plan is tangerine"


def sim_config(tmp_path: Path, sim: Simulator, **cascades: list[Any]) -> Path:
    """`sim` (openai type) and `claude` (anthropic type) providers, both on the simulator."""
    providers = {
        "claude": {
            "type": "anthropic",
            "base_url": sim.base_url("anthropic"),
            "api_key_env": "SIM_KEY",
        }
    }
    return write_config(tmp_path, sim, cascades or {"fast": ["a", "b"]}, providers=providers)


_CLIENTS: list[openai.OpenAI | anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _clients_closed() -> Iterator[None]:
    """Every SDK client a test made is closed with its connections (a broken stream's too)."""
    yield
    for client in _CLIENTS:
        client.close()
    _CLIENTS.clear()


def oai(url: str, key: str = "not-a-provider-key") -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    _CLIENTS.append(client)
    return client


def claude(url: str, key: str = "not-a-provider-key") -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
    _CLIENTS.append(client)
    return client


def rows(tmp_path: Path) -> list[Any]:
    with Store(tmp_path / "state" / "db.sqlite") as store:
        return store.recent_attempts(100)


def saved(tmp_path: Path) -> list[Path]:
    return saved_files(tmp_path / "failed")


# --- OpenAI clients -----------------------------------------------------------------------------


def test_the_openai_sdk_gets_an_answer_after_failover(tmp_path, sim):
    sim.script("a", Fail(500))
    sim.script("b", Reply("hello from b"))
    with gateway(sim_config(tmp_path, sim)) as gw:
        reply = oai(gw.url).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": PROMPT}]
        )
    assert reply.choices[0].message.content == "hello from b"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "b" and reply.usage is not None and reply.usage.total_tokens == 18
    assert [r.outcome for r in rows(tmp_path)] == ["failed", "ok"]
    assert saved(tmp_path) == []  # delivered: the prompt is gone
    assert sim.requests[0].headers["authorization"] == "Bearer sim-test-key-0123456789"
    assert all("not-a-provider-key" not in str(r.headers) for r in sim.requests)


def test_the_openai_sdk_streams_with_usage_and_the_cascade_prefix(tmp_path, sim):
    sim.script("a", Fail(503))
    sim.script("b", Reply("one two three", stream=Stream(pieces=("one ", "two ", "three"))))
    with gateway(sim_config(tmp_path, sim)) as gw:
        chunks = list(
            oai(gw.url).chat.completions.create(
                model="cascade/fast",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert saved(tmp_path) == []


@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_tool_calls_round_trip_through_the_openai_sdk(tmp_path, sim, stream):
    sim.script("a", Reply("", tool_calls=(SimToolCall("get_weather", {"city": "Paris"}),)))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    with gateway(sim_config(tmp_path, sim, fast=["a"])) as gw:
        client = oai(gw.url)
        messages = [{"role": "user", "content": "weather in Paris?"}]
        if stream:
            calls: dict[int, dict[str, str]] = {}
            finish = None
            for chunk in client.chat.completions.create(
                model="fast", messages=messages, tools=tools, stream=True
            ):
                for piece in chunk.choices[0].delta.tool_calls or []:
                    call = calls.setdefault(piece.index, {"name": "", "arguments": ""})
                    call["name"] += piece.function.name or ""
                    call["arguments"] += piece.function.arguments or ""
                finish = chunk.choices[0].finish_reason or finish
            assert finish == "tool_calls"
            name, arguments = calls[0]["name"], calls[0]["arguments"]
        else:
            reply = client.chat.completions.create(model="fast", messages=messages, tools=tools)
            assert reply.choices[0].finish_reason == "tool_calls"
            call = reply.choices[0].message.tool_calls[0]
            name, arguments = call.function.name, call.function.arguments
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}
    assert sim.requests[0].body["tools"][0]["function"]["name"] == "get_weather"


def test_an_assistant_tool_call_and_its_result_reach_the_entry(tmp_path, sim):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    with gateway(sim_config(tmp_path, sim, fast=[entry("claude", "c")])) as gw:
        reply = oai(gw.url).chat.completions.create(model="fast", messages=messages)
    assert reply.choices[0].message.content
    sent = sim.requests[0].body
    assert sent["system"] == "be brief"
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "call_1",
        "content": "sunny",
    }


def test_models_lists_the_cascades(tmp_path, sim):
    cfg = sim_config(tmp_path, sim, fast=["a"], careful=[entry("claude", "c")])
    with gateway(cfg) as gw:
        ids = [m.id for m in oai(gw.url).models.list()]
        listed = claude(gw.url).models.list()
    assert ids == ["fast", "careful"]
    assert [m.id for m in listed.data] == ["fast", "careful"]


# --- Anthropic clients --------------------------------------------------------------------------


def test_the_anthropic_sdk_gets_an_answer_after_failover_with_its_headers_passed_on(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="30"))
    sim.script("c", Reply("bonjour"))
    cfg = sim_config(tmp_path, sim, fast=["a", entry("claude", "c")])
    with gateway(cfg) as gw:
        reply = claude(gw.url).messages.create(
            model="fast",
            max_tokens=64,
            system="be brief",
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={
                "anthropic-beta": "some-feature-2025-01-01",
                "anthropic-version": "2024-01-01",
            },
        )
    assert reply.content[0].type == "text" and reply.content[0].text == "bonjour"
    assert reply.stop_reason == "end_turn" and reply.usage.output_tokens == 7
    to_openai, to_anthropic = sim.requests
    assert to_anthropic.headers["anthropic-beta"] == "some-feature-2025-01-01"
    assert to_anthropic.headers["anthropic-version"] == "2024-01-01"  # the client's, not ours
    assert to_anthropic.headers["x-api-key"] == "sim-test-key-0123456789"
    assert to_anthropic.body["max_tokens"] == 64 and to_anthropic.body["system"] == "be brief"
    assert "anthropic-beta" not in to_openai.headers


def test_the_anthropic_sdk_streams_text_and_tool_use(tmp_path, sim):
    calls = (SimToolCall("lookup", {"q": "x"}),)
    sim.script("a", Reply("let me look", tool_calls=calls, stream=Stream(tool_fragments=3)))
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    with (
        gateway(sim_config(tmp_path, sim, fast=["a"])) as gw,
        claude(gw.url).messages.stream(
            model="fast", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "go"}]
        ) as events,
    ):
        final = events.get_final_message()
    text, call = final.content
    assert text.type == "text" and text.text == "let me look"
    assert call.type == "tool_use" and call.name == "lookup" and call.input == {"q": "x"}
    assert final.stop_reason == "tool_use"


def test_an_anthropic_tool_result_turn_reaches_an_openai_entry(tmp_path, sim):
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "tu_1", "name": "w", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "tu_1",
                    "content": [{"type": "text", "text": "rain"}],
                },
                {"type": "text", "text": "so?"},
            ],
        },
    ]
    with gateway(sim_config(tmp_path, sim, fast=["a"])) as gw:
        claude(gw.url).messages.create(model="fast", max_tokens=10, messages=messages)
    sent = sim.requests[0].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "tu_1"
    assert sent[2] == {"role": "tool", "content": "rain", "tool_call_id": "tu_1"}
    assert sent[3] == {"role": "user", "content": "so?"}


# --- every entry fails --------------------------------------------------------------------------


def test_a_total_failure_is_a_503_in_each_vendors_shape_and_the_prompt_waits_for_retry(
    tmp_path, sim
):
    sim.script("a", Fail(500))
    sim.script("b", Fail(502))
    cfg = sim_config(tmp_path, sim)
    with gateway(cfg) as gw:
        with pytest.raises(openai.InternalServerError) as oai_failed:
            oai(gw.url).chat.completions.create(
                model="fast", messages=[{"role": "user", "content": PROMPT}]
            )
        with pytest.raises(anthropic.InternalServerError) as claude_failed:
            claude(gw.url).messages.create(
                model="fast", max_tokens=5, messages=[{"role": "user", "content": PROMPT}]
            )
    assert oai_failed.value.status_code == 503
    assert oai_failed.value.body["code"] == "cascade_failed"  # the SDK hands over `error`
    assert "HTTP 500" in oai_failed.value.message
    assert claude_failed.value.status_code == 503
    assert claude_failed.value.body["type"] == "error"
    assert str(tmp_path) not in oai_failed.value.message  # no path of the gateway's machine
    files = saved(tmp_path)
    assert len(files) == 1  # the same question, asked twice, is one waiting prompt
    envelope = json.loads(files[0].read_text())
    assert envelope["status"] == "failed" and envelope["cascade_name"] == "fast"
    assert files[0].stem == oai_failed.value.response.headers["x-llm-cascade-saved-prompt"]
    sim.reset()
    assert run_cli("reset", "--all", "-c", str(cfg)).returncode == 0  # the outage is over
    done = run_cli("failed", "retry", files[0].stem, "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert saved(tmp_path) == []


def test_every_entry_cooling_gives_retry_after(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="120"))
    sim.script("b", Fail(503, retry_after="60"))
    with gateway(sim_config(tmp_path, sim)) as gw:
        first = httpx.post(f"{gw.url}/v1/chat/completions", json=_chat("one"), timeout=30)
        second = httpx.post(f"{gw.url}/v1/chat/completions", json=_chat("two"), timeout=30)
        ready = httpx.get(f"{gw.url}/readyz")
    assert first.status_code == second.status_code == 503
    assert 50 <= int(second.headers["retry-after"]) <= 60
    assert second.json()["error"]["type"] == "server_error"
    assert sim.count() == 2  # the second run sent nothing
    assert ready.status_code == 503 and ready.json() == {
        "ready": False,
        "cascades": {"fast": False},
    }


def _chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fast", "messages": [{"role": "user", "content": prompt}], **extra}


# --- mid-stream failures ------------------------------------------------------------------------

BROKEN = Reply("alpha beta gamma delta", stream=Stream(drop_after=2))


def test_a_stream_broken_after_output_continues_from_a_prefill(tmp_path, sim):
    sim.script("a", BROKEN)
    sim.script("c", Reply(" gamma delta"))
    cfg = sim_config(tmp_path, sim, fast=["a", "b", entry("claude", "c")])
    with gateway(cfg) as gw:
        chunks = list(
            oai(gw.url).chat.completions.create(
                model="fast", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha beta gamma delta"
    assert sim.count("b") == 0  # it could only have started over
    assert sim.requests[-1].body["messages"][-1] == {"role": "assistant", "content": "alpha beta"}


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_a_stream_nobody_can_continue_ends_with_the_vendors_error_event(tmp_path, sim, vendor):
    sim.script("a", BROKEN)
    with gateway(sim_config(tmp_path, sim)) as gw:
        received = ""
        with pytest.raises((openai.APIError, anthropic.APIStatusError)) as failed:
            if vendor == "openai":
                for chunk in oai(gw.url).chat.completions.create(
                    model="fast", messages=[{"role": "user", "content": "x"}], stream=True
                ):
                    received += chunk.choices[0].delta.content or ""
            else:
                with claude(gw.url).messages.stream(
                    model="fast", max_tokens=5, messages=[{"role": "user", "content": "x"}]
                ) as events:
                    for piece in events.text_stream:
                        received += piece
    assert received == "alpha beta"
    assert "every entry of cascade 'fast' failed" in str(failed.value)
    assert sim.count("b") == 0
    (file,) = saved(tmp_path)
    assert json.loads(file.read_text())["errors"][0]["partial"] == "alpha beta"


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_without_a_cooldown(tmp_path, sim):
    sim.script("a", Reply("one two three four", stream=Stream(stall_after=1)))
    with gateway(sim_config(tmp_path, sim)) as gw:
        with httpx.stream(
            "POST", f"{gw.url}/v1/chat/completions", json=_chat("hi", stream=True), timeout=30
        ) as response:
            first = next(response.iter_lines())
            assert first.startswith("data: ")
        assert sim.wait_for_disconnects(1, "a", timeout=10)
        gw.wait_for_line(r"POST /v1/chat/completions 499 .*outcome=client_gone")
        time.sleep(0)  # nothing to wait for: the attempt row was written before the log line
    (row,) = rows(tmp_path)
    assert row.outcome == "cancelled" and row.cooldown_until is None
    assert sim.count("b") == 0


def test_a_client_that_leaves_a_whole_request_cancels_the_upstream(tmp_path, sim):
    sim.script("a", Hang())
    with gateway(sim_config(tmp_path, sim)) as gw:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{gw.url}/v1/chat/completions", json=_chat("hi"), timeout=1)
        assert sim.wait_for_disconnects(1, "a", timeout=10)
        gw.wait_for_line(r"499 .*outcome=client_gone")
    (row,) = rows(tmp_path)
    assert row.outcome == "cancelled" and row.cooldown_until is None


# --- bad input ----------------------------------------------------------------------------------

BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"model": "nope", "messages": []}).encode(), 404, "not a cascade"),
    (json.dumps({"model": "fast"}).encode(), 400, "messages: is missing"),
    (json.dumps({"model": "fast", "messages": "hi"}).encode(), 400, "must be an array"),
    (json.dumps(_chat("x", temperature="hot")).encode(), 400, "temperature: must be a number"),
    (json.dumps(_chat("x", n=3)).encode(), 400, "n: this parameter is not supported"),
    (json.dumps(_chat("x", logit_bias={"1": 2})).encode(), 400, "logit_bias"),
    (b'{"a":' * 100 + b"1" + b"}" * 100, 400, "nested"),
    (b"\xff\xfe", 400, "not"),
]


@pytest.mark.parametrize(("body", "status", "says"), BAD)
def test_bad_input_is_a_4xx_in_the_vendors_shape_and_nothing_is_sent(
    tmp_path, sim, body, status, says
):
    with gateway(sim_config(tmp_path, sim)) as gw:
        to_openai = httpx.post(f"{gw.url}/v1/chat/completions", content=body)
        to_claude = httpx.post(f"{gw.url}/v1/messages", content=body)
    assert to_openai.status_code == status, to_openai.text
    assert says in to_openai.json()["error"]["message"]
    assert to_claude.status_code == status, to_claude.text
    assert to_claude.json()["type"] == "error"
    assert sim.count() == 0 and saved(tmp_path) == []


def test_a_body_over_the_limit_is_a_413_however_it_arrives(tmp_path, sim):
    big = json.dumps(_chat("x" * 5000)).encode()
    with gateway(sim_config(tmp_path, sim), "--max-body", "1000") as gw:
        declared = httpx.post(f"{gw.url}/v1/chat/completions", content=big)
        chunked = httpx.post(f"{gw.url}/v1/messages", content=iter([big[:900], big[900:]]))
        small = httpx.post(f"{gw.url}/v1/chat/completions", json=_chat("x"))
    assert declared.status_code == 413 and "larger than" in declared.json()["error"]["message"]
    assert chunked.status_code == 413 and chunked.json()["error"]["type"] == "request_too_large"
    assert small.status_code == 200
    assert sim.count() == 1


def test_anthropic_specific_mistakes_are_named(tmp_path, sim):
    cases = [
        (
            {"model": "fast", "messages": [{"role": "user", "content": "x"}]},
            "max_tokens: is missing",
        ),
        (
            {"model": "fast", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "role: must be user or assistant",
        ),
        (
            {
                "model": "fast",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            "source.type: must be base64 or url",
        ),
        (
            {
                "model": "fast",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            '"document" blocks are not supported',
        ),
        ({"model": "fast", "max_tokens": 5, "top_k": 3, "messages": []}, "top_k"),
    ]
    with gateway(sim_config(tmp_path, sim)) as gw:
        for body, says in cases:
            reply = httpx.post(f"{gw.url}/v1/messages", json=body)
            assert reply.status_code == 400, reply.text
            assert says in reply.json()["error"]["message"]
    assert sim.count() == 0


def test_unknown_paths_and_methods_are_4xx(tmp_path, sim):
    with gateway(sim_config(tmp_path, sim)) as gw:
        assert httpx.get(f"{gw.url}/v1/nothing").status_code == 404
        wrong = httpx.get(f"{gw.url}/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


# --- security -----------------------------------------------------------------------------------

TOKEN = "gateway-token-0123456789abcdef"


def test_binding_beyond_loopback_needs_a_token(tmp_path, sim):
    done = run_cli("serve", "-c", str(sim_config(tmp_path, sim)), "--host", "0.0.0.0")
    assert done.returncode == 2
    first, *rest = done.stderr.splitlines()
    assert "LLM_CASCADE_SERVE_TOKEN" in first and rest == ["Try 'llm-cascade serve -h' for help."]


def test_the_token_is_required_everywhere_but_healthz(tmp_path, sim):
    with gateway(sim_config(tmp_path, sim), env={"LLM_CASCADE_SERVE_TOKEN": TOKEN}) as gw:
        assert httpx.get(f"{gw.url}/healthz").status_code == 200
        for path in ("/", "/readyz", "/v1/models", "/dashboard.json"):
            assert httpx.get(f"{gw.url}{path}").status_code == 401, path
        refused = httpx.post(
            f"{gw.url}/v1/chat/completions", json=_chat("x"), headers={"authorization": "Bearer no"}
        )
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert sim.count() == 0
        asked = [{"role": "user", "content": "x"}]
        assert oai(gw.url, TOKEN).chat.completions.create(model="fast", messages=asked)
        assert claude(gw.url, TOKEN).messages.create(model="fast", max_tokens=5, messages=asked)
        page = httpx.get(f"{gw.url}/", auth=("anyone", TOKEN))  # what a browser sends
        assert page.status_code == 200
    assert all(TOKEN not in str(r.headers) for r in sim.requests)  # never sent upstream
    assert TOKEN not in gw.stderr


def test_a_slow_loris_holds_only_its_own_connection(tmp_path, sim):
    with (
        gateway(sim_config(tmp_path, sim)) as gw,
        socket.create_connection(("127.0.0.1", gw.port)) as loris,
        socket.create_connection(("127.0.0.1", gw.port)) as slow_body,
    ):
        loris.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
        slow_body.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        reply = httpx.post(f"{gw.url}/v1/chat/completions", json=_chat("x"), timeout=10)
    assert reply.status_code == 200


def test_a_client_that_never_reads_its_stream_is_dropped_and_the_upstream_closed(tmp_path, sim):
    pieces = tuple("x" * 65536 for _ in range(200))  # 13 MiB: more than every buffer between
    sim.script("big", Reply(stream=Stream(pieces=pieces)))
    cfg = sim_config(tmp_path, sim, fast=["big"], other=["b"])
    body = json.dumps(
        {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    with gateway(cfg, "--write-timeout", "1") as gw, socket.socket() as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", gw.port))
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        reader.sendall(request.encode())
        other = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "other", "messages": [{"role": "user", "content": "y"}]},
            timeout=30,
        )
        assert other.status_code == 200
        assert sim.wait_for_disconnects(1, "big", timeout=30)
        gw.wait_for_line(r"499 .*outcome=client_gone")


# --- operations ---------------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_request_finish(tmp_path, sim):
    sim.script("a", Reply("late but whole", delay=1.0))
    with gateway(sim_config(tmp_path, sim)) as gw, httpx.Client(timeout=30) as client:
        import threading

        result: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: result.append(
                client.post(f"{gw.url}/v1/chat/completions", json=_chat("x"))
            )
        )
        sender.start()
        assert sim.wait_for(1, "a")
        assert gw.stop() in (0, -15)
        sender.join(30)
    assert (
        result[0].status_code == 200
        and result[0].json()["choices"][0]["message"]["content"] == "late but whole"
    )
    assert saved(tmp_path) == []


def test_sigterm_past_the_grace_period_keeps_the_prompt(tmp_path, sim):
    sim.script("a", Hang())
    with gateway(sim_config(tmp_path, sim), "--grace", "1") as gw:
        import threading

        sender = threading.Thread(
            target=lambda: httpx.post(
                f"{gw.url}/v1/chat/completions", json=_chat(PROMPT), timeout=30
            ),
            daemon=True,
        )
        sender.start()
        assert sim.wait_for(1, "a")
        gw.stop()
    (file,) = saved(tmp_path)
    assert json.loads(file.read_text())["status"] == "interrupted"


def test_one_access_line_per_request_without_prompt_text(tmp_path, sim):
    with gateway(sim_config(tmp_path, sim)) as gw:
        httpx.post(f"{gw.url}/v1/chat/completions", json=_chat(PROMPT))
        httpx.post(
            f"{gw.url}/v1/messages",
            json={
                "model": "fast",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": PROMPT}],
            },
        )
        gw.wait_for_line(r"POST /v1/messages 200")
    lines = [line for line in gw.stderr.splitlines() if "POST /v1/" in line]
    assert len(lines) == 2
    assert "cascade=fast entry=sim/a" in lines[0]
    assert "tangerine" not in gw.stderr


def test_json_logs_are_one_object_per_line(tmp_path, sim):
    with gateway(sim_config(tmp_path, sim), "--json-logs") as gw:
        httpx.post(f"{gw.url}/v1/chat/completions", json=_chat(PROMPT))
        gw.wait_for_line(r'"path": "/v1/chat/completions"')
    parsed = [json.loads(line) for line in gw.stderr.splitlines()]
    access = [p for p in parsed if p.get("path") == "/v1/chat/completions"]
    assert access[0]["status"] == 200 and access[0]["entry"] == "sim/a"


def test_workers_share_cooldowns_through_the_database(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="300"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = sim_config(tmp_path, sim)
    with gateway(cfg, "--workers", "2", "--port", str(port)) as gw:
        answers = [
            httpx.post(f"{gw.url}/v1/chat/completions", json=_chat(f"q{i}"), timeout=30)
            for i in range(8)
        ]
    assert all(a.status_code == 200 for a in answers)
    assert sim.count("a") == 1  # the other worker skipped the cooling entry too


def test_metrics_is_the_rendering_of_the_metrics_command(tmp_path, sim):
    from prometheus_client.parser import text_string_to_metric_families

    with gateway(sim_config(tmp_path, sim)) as gw:
        httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
        )
        reply = httpx.get(f"{gw.url}/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(reply.text)}
    assert "llm_cascade_attempts" in names


# --- structured output and images -------------------------------------------------------------

PNG = "iVBORw0KGgo="  # base64 of the PNG signature
INVOICE = {
    "type": "object",
    "properties": {"total": {"type": "number"}},
    "required": ["total"],
    "additionalProperties": False,
}


def test_a_json_schema_response_format_is_checked_and_fails_over_across_vendors(tmp_path, sim):
    sim.script("a", Reply('{"total": "lots"}'))  # JSON, but not valid under the schema
    sim.script("c", Reply('{"total": 6.5}'))
    cfg = sim_config(tmp_path, sim, fast=["a", entry("claude", "c")])
    with gateway(cfg) as gw:
        reply = oai(gw.url).chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "Tea 2.50, cake 4.00"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "invoice", "schema": INVOICE, "strict": True},
            },
        )
    assert json.loads(reply.choices[0].message.content or "") == {"total": 6.5}
    to_openai, to_anthropic = sim.requests
    assert to_openai.body["response_format"]["json_schema"]["schema"] == INVOICE
    assert to_anthropic.body["tool_choice"] == {"type": "tool", "name": "invoice"}
    assert [r.outcome for r in rows(tmp_path)][-2:] == ["invalid_output", "ok"]


def test_json_mode_streams_a_checked_document(tmp_path, sim):
    sim.script("a", Reply('{"ok": true}', stream=Stream(chunks=3)))
    with gateway(sim_config(tmp_path, sim, fast=["a"])) as gw:
        chunks = oai(gw.url).chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "status?"}],
            response_format={"type": "json_object"},
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"ok": True}
    assert sim.requests[0].body["response_format"] == {"type": "json_object"}


def test_images_from_either_sdk_reach_an_entry_of_the_other_vendor(tmp_path, sim):
    cfg = sim_config(tmp_path, sim, to_claude=[entry("claude", "c")], to_openai=["a"])
    data_url = f"data:image/png;base64,{PNG}"
    with gateway(cfg) as gw:
        oai(gw.url).chat.completions.create(
            model="to_claude",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": data_url}},
                    ],
                }
            ],
        )
        claude(gw.url).messages.create(
            model="to_openai",
            max_tokens=20,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "text", "text": "and this?"},
                    ],
                }
            ],
        )
    to_anthropic, to_openai = sim.requests
    blocks = to_anthropic.body["messages"][0]["content"]
    assert {"type": "text", "text": "what is this?"} in blocks
    assert {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    } in blocks
    parts = to_openai.body["messages"][0]["content"]
    assert {"type": "image_url", "image_url": {"url": data_url}} in parts


def test_an_image_no_entry_can_see_is_a_400_and_nothing_is_sent(tmp_path, sim):
    blind = {"type": "ollama", "base_url": sim.base_url("ollama")}
    cfg = write_config(
        tmp_path, sim, {"fast": [entry("blind", "llama3")]}, providers={"blind": blind}
    )
    with gateway(cfg) as gw:
        reply = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={
                "model": "fast",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                        ],
                    }
                ],
            },
        )
    assert reply.status_code == 400, reply.text
    assert "no entry supports images" in reply.json()["error"]["message"]
    assert sim.count() == 0
