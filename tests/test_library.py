"""The library surface: `run_cascade`, `load_config` and the types, as a Python user calls them."""

from __future__ import annotations

import os

import pytest

import llm_cascade
from llm_cascade import CascadeFailed, Conversation, Message, load_config, run_cascade
from llm_cascade.simulator import Fail, Reply, SimToolCall

from .support import run_async, write_config


def test_run_cascade_answers_with_the_first_working_entry(tmp_path, sim):
    sim.script("a", Fail(503))
    sim.script("b", Reply("library answer", input_tokens=3, output_tokens=2))
    config = load_config(write_config(tmp_path, sim, {"x": ["a", "b"]}))
    conversation = Conversation([Message.system("be brief"), Message.user("hi")])
    response = run_async(run_cascade("x", conversation, config))
    assert (response.text, response.input_tokens, response.output_tokens) == (
        "library answer",
        3,
        2,
    )
    assert response.model == "b" and response.stop_reason == "stop"


def test_run_cascade_raises_with_the_saved_path(tmp_path, sim):
    sim.script("a", Fail(500))
    config = load_config(write_config(tmp_path, sim, {"x": ["a"]}))
    with pytest.raises(CascadeFailed) as caught:
        run_async(run_cascade("x", Conversation.single_user_prompt("hi"), config))
    assert caught.value.failed_prompt_path is not None
    assert caught.value.attempts[0].status == 500


def test_public_names_resolve():
    for name in llm_cascade.__all__:
        assert getattr(llm_cascade, name) is not None
    with pytest.raises(AttributeError):
        _ = llm_cascade.nope  # type: ignore[attr-defined]


# --- LLMCascade: a cascade from a list ---------------------------------------------------------

import asyncio  # noqa: E402
import json  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from llm_cascade import LLMCascade, Response  # noqa: E402
from llm_cascade.errors import ConfigError, UsageError  # noqa: E402
from llm_cascade.keys import lookup_for  # noqa: E402
from llm_cascade.simulator import Simulator  # noqa: E402

from .support import SIM_KEY, entry, run_cli  # noqa: E402

ITEMS = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
                "required": ["name", "price"],
            },
        }
    },
    "required": ["items"],
}


def on_sim(
    sim: Simulator, kind: str, model: str, **options: Any
) -> tuple[str, str, dict[str, Any]]:
    """An entry of provider type `kind` aimed at the simulator."""
    extra = {} if kind == "ollama" else {"api_key_env": "SIM_KEY"}
    return (kind, model, {"base_url": sim.base_url(kind), **extra, **options})


def state(tmp_path: Path) -> dict[str, Any]:
    return {"db_path": tmp_path / "db.sqlite", "failed_dir": tmp_path / "failed"}


def test_a_type_gets_its_defaults_without_any_config_file():
    cascade = LLMCascade([("anthropic", "claude-sonnet-4-20250514"), "gemini/gemini-2.5-flash"])
    claude = cascade.config.providers["anthropic"]
    assert claude.effective_base_url == "https://api.anthropic.com"
    lookup = lookup_for(claude)
    assert (lookup.env_var, lookup.keyring_user) == ("ANTHROPIC_API_KEY", "anthropic")
    assert [e.key for e in cascade.config.cascades["library"].entries] == [
        "anthropic/claude-sonnet-4-20250514",
        "gemini/gemini-2.5-flash",
    ]
    assert "prefill" in cascade.config.cascades["library"].entries[0].options.supports


def test_get_response_answers_and_says_where_from(tmp_path, sim):
    sim.script("down", Fail(503))
    sim.script("up", Reply("library answer", input_tokens=5, output_tokens=3))
    cascade = LLMCascade([on_sim(sim, "openai", "down"), on_sim(sim, "anthropic", "up")])

    async def main() -> Response:
        async with cascade:
            return await cascade.get_response("Summarise this", system_prompt="Be concise.")

    response = asyncio.run(main())
    assert (response.content, response.provider, response.model) == (
        "library answer",
        "anthropic",
        "up",
    )
    assert (response.input_tokens, response.output_tokens, response.tool_calls) == (5, 3, [])
    assert [a.outcome for a in response.attempts] == ["failed", "ok"]
    assert response.latency_ms >= 0 and response.entry == "anthropic/up"
    assert sim.requests[-1].body["system"] == "Be concise."
    # no config file: state goes to the platform data directory
    data = Path(os.environ["XDG_DATA_HOME"]) / "llm-cascade"
    assert (data / "db.sqlite").exists()


def test_every_entry_failing_raises_cascade_failed_with_the_saved_prompt(tmp_path, sim):
    sim.script("a", Fail(500))
    sim.script("b", Fail(401))
    cascade = LLMCascade(
        [on_sim(sim, "openai", "a"), on_sim(sim, "gemini", "b")], **state(tmp_path)
    )
    with pytest.raises(CascadeFailed) as caught:  # never one entry's ProviderError
        asyncio.run(cascade.get_response("hi"))
    saved = Path(caught.value.failed_prompt_path or "")
    assert saved.parent == tmp_path / "failed"
    assert json.loads(saved.read_text())["conversation"]["messages"][-1]["content"] == "hi"


def test_the_cli_retries_a_prompt_the_library_saved_through_the_same_entries(tmp_path, sim):
    sim.script("a", Fail(500), Reply("answered later"))
    cfg = write_config(tmp_path, sim, {"x": ["other"]})  # a config without that cascade
    cascade = LLMCascade(
        [on_sim(sim, "openai", "a")],
        db_path=tmp_path / "state" / "db.sqlite",
        failed_dir=tmp_path / "failed",
    )
    with pytest.raises(CascadeFailed) as caught:
        asyncio.run(cascade.get_response("keep me"))
    kept = Path(caught.value.failed_prompt_path or "").read_text()
    assert json.loads(kept)["entries"] == [list(on_sim(sim, "openai", "a"))]
    assert SIM_KEY not in kept  # the key's variable is saved, never its value
    assert run_cli("reset", "--all", "-c", str(cfg)).returncode == 0
    done = run_cli("failed", "retry", "--all", "-c", str(cfg))
    assert (done.returncode, done.stdout) == (0, "answered later\n"), done.stderr
    assert [r.model for r in sim.requests] == ["a", "a"]


def test_cooldowns_are_shared_with_the_cli_through_the_same_database(tmp_path, sim):
    sim.script("m", Fail(429, retry_after="120"))
    sim.script("b", Reply("from b"))
    config = write_config(
        tmp_path,
        sim,
        {"x": [entry("sim", "m"), "b"]},
    )
    cascade = LLMCascade([("sim", "m"), ("sim", "b")], config=config)
    assert asyncio.run(cascade.get_response("hi")).content == "from b"
    done = run_cli("run", "-C", "x", "-c", str(config), "-p", "hi", "--explain")
    assert done.returncode == 0
    assert "sim/m" in done.stderr and "skipped: cooling down" in done.stderr
    assert sim.count("m") == 1  # the CLI did not ask it again
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        cascades = {r[0] for r in conn.execute("SELECT cascade_name FROM attempt_log")}
    assert cascades == {"library", "x"}


def test_a_config_found_at_the_default_path_names_the_providers(tmp_path, sim):
    config = write_config(tmp_path, sim, {"x": ["b"]})
    default = Path(os.environ["XDG_CONFIG_HOME"]) / "llm-cascade" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text(config.read_text())
    cascade = LLMCascade([("sim", "b")])
    assert cascade.config.providers["sim"].base_url == sim.base_url("openai")
    assert asyncio.run(cascade.get_response("hi")).provider == "sim"
    named = LLMCascade("x")  # or a cascade of the config by name
    assert asyncio.run(named.get_response("hi")).entry == "sim/b"


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([], "give at least one (provider, model) entry"),
        ([("openai",)], "expected (provider, model)"),
        (["gpt-4o"], "expected PROVIDER/MODEL"),
        ([("opnai", "gpt-4o")], "'opnai' is neither a provider of the config"),
        ([("openai", "gpt-4o", {"retries": 99})], "LLMCascade: entries[0].retries: must be"),
        (
            [("openai", "gpt-4o", {"base_url": "ftp://x"})],
            "entries[0].base_url: is not an http(s) URL",
        ),
        (
            [("openai", "gpt-4o", {"timout": 3})],
            "unknown option 'timout' (did you mean 'timeout'?)",
        ),
        (
            [("openai", "a", {"base_url": "http://127.0.0.1:1/v1"}), ("openai", "b")],
            "provider 'openai' is given two different ways",
        ),
    ],
)
def test_bad_entries_are_a_config_error_at_construction(entries, problem):
    with pytest.raises(ConfigError) as caught:
        LLMCascade(entries)
    assert problem in str(caught.value)


def test_a_named_variant_of_a_type_keeps_its_own_cooldowns(sim):
    cascade = LLMCascade(
        [
            (
                "openai",
                "m",
                {"name": "groq", "base_url": sim.base_url("openai"), "api_key_env": "SIM_KEY"},
            )
        ]
    )
    assert [e.key for e in cascade.config.cascades["library"].entries] == ["groq/m"]
    assert lookup_for(cascade.config.providers["groq"]).env_var == "SIM_KEY"


def test_one_object_serves_many_concurrent_calls_over_one_client(tmp_path, sim):
    cascade = LLMCascade([on_sim(sim, "openai", "m")], **state(tmp_path))

    async def main() -> list[Response]:
        async with cascade:
            first = await cascade.get_response("warm up")
            client = cascade.engine.client
            answers = await asyncio.gather(*(cascade.get_response(f"q{i}") for i in range(20)))
            assert cascade.engine.client is client
            return [first, *answers]

    answers = asyncio.run(main())
    assert [a.content for a in answers[1:]] == [f"Simulated answer from m: q{i}" for i in range(20)]


def test_one_object_can_be_used_from_one_event_loop_after_another(tmp_path, sim):
    cascade = LLMCascade([on_sim(sim, "openai", "m")], **state(tmp_path))
    assert asyncio.run(cascade.get_response("one")).content.endswith("one")
    assert asyncio.run(cascade.get_response("two")).content.endswith("two")
    asyncio.run(cascade.aclose())


def test_per_call_options_reach_the_request_and_bad_ones_are_refused(tmp_path, sim):
    cascade = LLMCascade([on_sim(sim, "openai", "m")], **state(tmp_path))
    asyncio.run(cascade.get_response("hi", max_tokens=50, temperature=0.1, deadline=30))
    assert (sim.requests[-1].body["max_tokens"], sim.requests[-1].body["temperature"]) == (50, 0.1)
    for bad, problem in (
        ({"max_tokens": 0}, "max_tokens: must be"),
        ({"colour": 1}, "unknown option 'colour'"),
    ):
        with pytest.raises(UsageError, match=problem):
            asyncio.run(cascade.get_response("hi", **bad))


def test_messages_and_tools_in_dict_shapes(tmp_path, sim):
    sim.script("m", Reply(tool_calls=(SimToolCall("get_weather", {"city": "Oslo"}),)))
    cascade = LLMCascade([on_sim(sim, "openai", "m")], **state(tmp_path))
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi!"}]
    response = asyncio.run(cascade.get_response("weather in Oslo?", messages=history, tools=[tool]))
    assert response.tool_calls[0].name == "get_weather"
    sent = sim.requests[-1].body
    assert [m["content"] for m in sent["messages"]] == ["hello", "hi!", "weather in Oslo?"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    with pytest.raises(UsageError, match=r"\$\.messages\[0\]\.role"):
        asyncio.run(cascade.get_response("x", messages=[{"role": "wizard", "content": "?"}]))
    with pytest.raises(UsageError, match="nothing to ask"):
        asyncio.run(cascade.get_response(system_prompt="only a system prompt"))


def test_get_json_response_fails_over_on_invalid_json(tmp_path, sim):
    sim.script("a", Reply("I think the colours are red and blue."))
    sim.script("b", Reply('{"colours": ["red", "blue"]}'))
    cascade = LLMCascade(
        [on_sim(sim, "gemini", "a"), on_sim(sim, "ollama", "b")], **state(tmp_path)
    )
    value = asyncio.run(cascade.get_json_response("Two colours as JSON"))
    assert value == {"colours": ["red", "blue"]}
    assert sim.requests[0].body["generationConfig"]["responseMimeType"] == "application/json"
    assert sim.requests[1].body["format"] == "json"
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        outcomes = [r[0] for r in conn.execute("SELECT outcome FROM attempt_log ORDER BY id")]
    assert outcomes == ["invalid_output", "ok"]


def test_get_structured_json_response_with_a_schema_dict(tmp_path, sim):
    bad = {
        "items": [{"name": "a", "price": 1}, {"name": "b", "price": 2}, {"name": "c", "price": "x"}]
    }
    good = {"items": [{"name": "tea", "price": 2.5}]}
    sim.script("a", Reply(json.dumps(bad)))
    sim.script("b", Reply(json.dumps(good)))
    cascade = LLMCascade(
        [on_sim(sim, "anthropic", "a"), on_sim(sim, "openai", "b")], **state(tmp_path)
    )
    assert asyncio.run(cascade.get_structured_json_response(ITEMS, "Read the bill")) == good
    with pytest.raises(UsageError, match="not valid JSON Schema"):
        asyncio.run(cascade.get_structured_json_response({"type": "nope"}, "x"))
    assert sim.count() == 2  # the bad schema sent nothing


def test_get_structured_json_response_with_a_pydantic_model(tmp_path, sim):
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        name: str
        price: float

    class Bill(pydantic.BaseModel):
        items: list[Item]

        @pydantic.field_validator("items")
        @classmethod
        def not_empty(cls, items: list[Item]) -> list[Item]:
            if not items:
                raise ValueError("a bill has items")
            return items

    sim.script("a", Reply('{"items": [{"name": "tea", "price": "free"}]}'))
    sim.script("b", Reply('{"items": []}'))
    sim.script("c", Reply('{"items": [{"name": "tea", "price": 2.5}]}'))
    cascade = LLMCascade(
        [on_sim(sim, k, m) for k, m in (("openai", "a"), ("openai", "b"), ("openai", "c"))],
        **state(tmp_path),
    )
    bill = asyncio.run(cascade.get_structured_json_response(Bill, "Read the bill"))
    assert isinstance(bill, Bill) and bill.items[0].price == 2.5
    spec = sim.requests[0].body["response_format"]["json_schema"]
    assert spec["name"] == "Bill" and "$defs" in spec["schema"]
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        details = [r[0] for r in conn.execute("SELECT error_message FROM attempt_log ORDER BY id")]
    assert details[0].startswith("Invalid output: $.items[0].price: expected number")
    assert details[1] == "Invalid output: $.items: Value error, a bill has items"


def test_a_pydantic_model_that_has_no_json_schema_is_a_usage_error(tmp_path, sim):
    pydantic = pytest.importorskip("pydantic")

    class Odd(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        handle: Simulator

    cascade = LLMCascade([on_sim(sim, "openai", "m")], **state(tmp_path))
    with pytest.raises(UsageError, match="Odd cannot produce a JSON Schema"):
        asyncio.run(cascade.get_structured_json_response(Odd, "x"))
    assert sim.count() == 0


WITHOUT_PYDANTIC = """
import asyncio, builtins, json, sys
real_import = builtins.__import__
def blocked(name, *args, **kwargs):
    if name.split(".")[0] == "pydantic":
        raise ImportError("pydantic is not installed here")
    return real_import(name, *args, **kwargs)
builtins.__import__ = blocked
from llm_cascade import LLMCascade
base_url, db = sys.argv[1], sys.argv[2]
cascade = LLMCascade([("openai", "m", {"base_url": base_url, "api_key_env": "SIM_KEY"})],
                     db_path=db + "/db.sqlite", failed_dir=db + "/failed")
schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
value = asyncio.run(cascade.get_structured_json_response(schema, "a number"))
print(json.dumps([value, "pydantic" in sys.modules]))
"""


def test_the_library_works_without_pydantic(tmp_path, sim):
    sim.script("m", Reply('{"n": 7}'))
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYDANTIC, sim.base_url("openai"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SIM_KEY": SIM_KEY},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 7}, False]
