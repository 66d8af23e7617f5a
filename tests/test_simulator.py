"""The simulator itself: it must reject what the real OpenAI API rejects (or the tests built on
it prove nothing), play scripts in order, obey its control endpoints, and run standalone."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_cascade.simulator import Fail, Reply, SimToolCall, Simulator

AUTH = {"Authorization": "Bearer sk-test"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}


def chat(sim: Simulator, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        sim.base_url("openai") + "/chat/completions",
        json=body,
        headers=AUTH if headers is None else headers,
        timeout=10,
    )


def body(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **fields}


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def error_message(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's error shape
    return str(error["message"])


# --- request validation ----------------------------------------------------------------------


def test_a_valid_tool_round_trip_is_accepted(sim):
    response = chat(
        sim,
        body(
            {"role": "system", "content": "terse"},
            user("weather?"),
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "4 C", "tool_call_id": "call_1"},
            tools=TOOLS,
            max_tokens=50,
            temperature=0.2,
        ),
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer"}, {"Authorization": "sk-test"}, {"X-Api-Key": "k"}]
)
def test_missing_auth_is_401(sim, headers):
    response = chat(sim, body(user()), headers=headers)
    assert response.status_code == 401
    assert error_message(response) == "missing API key"


def test_a_wrong_key_is_401_when_the_simulator_requires_one(sim):
    sim.require_key("sk-right")
    assert chat(sim, body(user()), {"Authorization": "Bearer sk-wrong"}).status_code == 401
    assert chat(sim, body(user()), {"Authorization": "Bearer sk-right"}).status_code == 200


def test_an_empty_tools_list_is_400(sim):
    response = chat(sim, body(user(), tools=[]))
    assert response.status_code == 400
    assert "[] is too short - 'tools'" in error_message(response)


def test_a_tool_message_without_a_preceding_tool_call_is_400(sim):
    response = chat(
        sim,
        body(
            user(),
            {"role": "assistant", "content": ""},
            {"role": "tool", "content": "4 C", "tool_call_id": "call_abc"},
        ),
    )
    assert response.status_code == 400
    assert "must be a response to a preceding message with 'tool_calls'" in error_message(response)


def test_a_tool_result_for_another_call_is_400(sim):
    response = chat(
        sim,
        body(
            user(),
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "4 C", "tool_call_id": "call_other"},
        ),
    )
    assert response.status_code == 400


def test_tool_calls_not_followed_by_their_results_are_400(sim):
    interrupted = chat(
        sim,
        body(user(), {"role": "assistant", "content": None, "tool_calls": [CALL]}, user("and?")),
    )
    assert interrupted.status_code == 400
    assert "Missing: call_1" in error_message(interrupted)
    unanswered = chat(
        sim, body(user(), {"role": "assistant", "content": None, "tool_calls": [CALL]})
    )
    assert unanswered.status_code == 400
    assert "must be followed by tool messages" in error_message(unanswered)


def test_an_unknown_top_level_argument_is_400(sim):
    response = chat(sim, body(user(), max_tokenz=5, system="x"))
    assert response.status_code == 400
    assert error_message(response) == ("Unrecognized request argument supplied: max_tokenz, system")


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        ({"messages": [user()]}, "you must provide a model parameter"),
        (body(), "'messages' must be a non-empty array"),
        (body({"role": "robot", "content": "x"}), "messages[0].role: invalid value 'robot'"),
        (body({"role": "user", "content": None}), "messages[0].content: expected a string"),
        (body(user(), max_tokens=0), "max_tokens must be a positive integer"),
        (body(user(), temperature=3), "temperature must be between 0 and 2"),
        (body(user(), tools=[{"name": "f"}]), "tools[0]: expected"),
    ],
)
def test_other_malformed_requests_are_400(sim, request_body, fragment):
    response = chat(sim, request_body)
    assert response.status_code == 400
    assert fragment in error_message(response)


def test_a_body_that_is_not_json_is_400(sim):
    response = httpx.post(
        sim.base_url("openai") + "/chat/completions",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400


def test_rejected_requests_are_still_recorded(sim):
    chat(sim, body(user(), tools=[]))
    assert sim.count("m") == 1
    assert sim.requests[0].body["tools"] == []


def test_an_unknown_path_is_404(sim):
    response = httpx.post(sim.url + "/v1/embeddings", json={"model": "m"}, timeout=10)
    assert response.status_code == 404


# --- scripts ---------------------------------------------------------------------------------


def test_scripted_behaviours_play_in_order_and_the_last_repeats(sim):
    sim.script("m", Fail(503, "down", retry_after="7"), Reply("two"), Reply("three"))
    responses = [chat(sim, body(user())) for _ in range(5)]
    assert [r.status_code for r in responses] == [503, 200, 200, 200, 200]
    assert responses[0].headers["retry-after"] == "7"
    assert error_message(responses[0]) == "down"
    texts = [r.json()["choices"][0]["message"]["content"] for r in responses[1:]]
    assert texts == ["two", "three", "three", "three"]


def test_scripts_are_per_model_and_unscripted_models_echo(sim):
    sim.script("a", Fail(500))
    assert chat(sim, {**body(user()), "model": "a"}).status_code == 500
    echo = chat(sim, {**body(user("ping")), "model": "b"})
    assert echo.json()["choices"][0]["message"]["content"] == "Simulated answer from b: ping"
    assert (sim.count("a"), sim.count("b"), sim.count()) == (1, 1, 2)


def test_a_scripted_reply_carries_tool_calls_and_usage(sim):
    sim.script("m", Reply(tool_calls=(SimToolCall("get_weather", {"city": "Oslo"}),)))
    data = chat(sim, body(user())).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert data["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


# --- control endpoints -----------------------------------------------------------------------


def test_control_endpoints_script_list_and_reset(sim):
    script = {
        "m": [{"type": "fail", "status": 429, "retry_after": "30"}, {"type": "reply", "text": "ok"}]
    }
    assert httpx.post(sim.url + "/_sim/script", json=script, timeout=10).json() == {"ok": True}
    assert chat(sim, body(user("one"))).status_code == 429
    assert chat(sim, body(user("two"))).json()["choices"][0]["message"]["content"] == "ok"

    recorded = httpx.get(sim.url + "/_sim/requests", timeout=10).json()
    assert [(r["vendor"], r["path"], r["model"]) for r in recorded] == [
        ("openai", "/v1/chat/completions", "m"),
        ("openai", "/v1/chat/completions", "m"),
    ]
    assert [r["body"]["messages"][0]["content"] for r in recorded] == ["one", "two"]
    assert all("authorization" not in json.dumps(r).lower() for r in recorded)

    assert httpx.post(sim.url + "/_sim/reset", timeout=10).json() == {"ok": True}
    assert httpx.get(sim.url + "/_sim/requests", timeout=10).json() == []
    # The script is gone too: the model echoes again.
    assert chat(sim, body(user("three"))).status_code == 200


@pytest.mark.parametrize(
    "script",
    [
        [1, 2],
        {"m": [{"type": "explode"}]},
        {"m": [{"type": "fail", "status": 500, "colour": "red"}]},
        {"m": "reply"},
    ],
)
def test_a_bad_script_is_400_and_changes_nothing(sim, script):
    sim.script("m", Reply("kept"))
    response = httpx.post(sim.url + "/_sim/script", json=script, timeout=10)
    assert response.status_code == 400
    assert chat(sim, body(user())).json()["choices"][0]["message"]["content"] == "kept"


def test_unknown_control_paths_are_404(sim):
    assert httpx.post(sim.url + "/_sim/nothing", timeout=10).status_code == 404
    assert httpx.get(sim.url + "/_sim/nothing", timeout=10).status_code == 404


# --- as a program ----------------------------------------------------------------------------


def start_simulator(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llm_cascade.simulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_line(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the simulator printed no URL"
    return proc.stdout.readline().strip()


def test_the_simulator_runs_a_script_file_and_stops_on_sigterm(tmp_path: Path):
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps({"gpt-4o": [{"type": "fail", "status": 429, "retry_after": "30"}]})
    )
    proc = start_simulator("--script", str(script), "--api-key", "sk-only")
    try:
        url = first_line(proc)
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [user()]},
            headers={"Authorization": "Bearer sk-only"},
            timeout=10,
        )
        assert response.status_code == 429
        assert response.headers["retry-after"] == "30"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_the_simulator_refuses_a_bad_script_file(tmp_path: Path):
    script = tmp_path / "script.json"
    script.write_text('{"m": [{"type": "explode"}]}')
    proc = start_simulator("--script", str(script))
    try:
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2
    assert "cannot use script" in stderr and "unknown behaviour type 'explode'" in stderr


def test_a_burst_of_new_connections_is_accepted_at_once(sim):
    """socketserver's default backlog of 5 dropped the SYNs of a burst; clients then waited
    1 s, 3 s... to connect, which looked like a cold-start cost of the engine."""
    import asyncio

    import httpx

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(limits=limits) as client:
            url = sim.base_url("openai") + "/chat/completions"
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"Authorization": "Bearer k"}
            replies = await asyncio.gather(
                *(client.post(url, json=body, headers=headers) for _ in range(300))
            )
            return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [200] * 300
