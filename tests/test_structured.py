"""JSON answers through the engine, over real HTTP against the simulator: each vendor's JSON
mode and structured output on the wire, the local check of every answer, failover on an
invalid one, streams, and bad schemas refused before anything is sent."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.cascade import Cascade, RunOptions
from llm_cascade.config import load_config
from llm_cascade.errors import CascadeFailed, UsageError
from llm_cascade.events import Done, Reset, Text
from llm_cascade.simulator import Reply, Simulator, Stream
from llm_cascade.structured import output_format
from llm_cascade.types import Conversation, OutputFormat

from .providers.helpers import ALL_TYPES, post, provider_table
from .support import SIM_KEY, entry, run_engine, write_config

ITEMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
                "required": ["name", "price"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}
VALID = {"items": [{"name": "tea", "price": 2.5}, {"name": "cake", "price": 4}]}
VIOLATING = {"items": [{"name": "a", "price": 1}, {"name": "b", "price": 2}, {"name": "c"}]}
WRONG_TYPE = {
    "items": [{"name": "a", "price": 1}, {"name": "b", "price": 2}, {"name": "c", "price": "9"}]
}


def config_for(tmp_path: Path, sim: Simulator, *entries: tuple[str, str]) -> Path:
    providers = {t: provider_table(sim, t) for t in {kind for kind, _ in entries}}
    return write_config(
        tmp_path, sim, {"x": [entry(t, m) for t, m in entries]}, providers=providers
    )


def ask(output: OutputFormat | None, prompt: str = "List the items") -> Conversation:
    return Conversation.single_user_prompt(prompt).with_output(output)


def log_rows(tmp_path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM attempt_log ORDER BY id")]


def cooldowns(tmp_path: Path) -> dict[str, Any]:
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        return dict(conn.execute("SELECT provider_model, cooldown_until FROM cooldown"))


# --- each vendor's own way of asking ------------------------------------------------------

CHAT_COMPLETIONS = ("openai", "azure", "mistral")  # OpenAI's `response_format`


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_json_mode_is_asked_for_in_each_vendors_own_field(tmp_path, sim, clock, kind):
    cfg = config_for(tmp_path, sim, (kind, "m"))
    result = run_engine(cfg, "x", ask(OutputFormat(), "Say hi"), clock=clock)
    body = sim.requests[0].body
    if kind in CHAT_COMPLETIONS:
        assert body["response_format"] == {"type": "json_object"}
        # JSON mode is refused unless a message says "json": a system line says it
        assert "json" in body["messages"][0]["content"].lower()
    elif kind == "cohere":
        assert body["response_format"] == {"type": "json_object"}
        assert "json" in body["messages"][0]["content"].lower()
    elif kind == "openai_responses":
        assert body["text"] == {"format": {"type": "json_object"}}
        assert "json" in body["instructions"].lower()
    elif kind == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "answer"}
        assert body["tools"][-1]["input_schema"] == {"type": "object"}
    elif kind == "bedrock":
        assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "answer"}}
        spec = body["toolConfig"]["tools"][-1]["toolSpec"]
        assert spec["inputSchema"] == {"json": {"type": "object"}}
    elif kind == "gemini":
        assert body["generationConfig"] == {"responseMimeType": "application/json"}
    else:
        assert body["format"] == "json"
    assert result.parsed is not None
    assert result.parsed.value == {"answer": "Simulated answer from m: Say hi"}
    assert json.loads(result.text) == result.parsed.value


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_structured_output_sends_the_schema_the_way_each_vendor_takes_it(
    tmp_path, sim, clock, kind
):
    sim.script("m", Reply(json.dumps(VALID)))
    cfg = config_for(tmp_path, sim, (kind, "m"))
    result = run_engine(cfg, "x", ask(output_format(ITEMS_SCHEMA, "invoice")), clock=clock)
    body = sim.requests[0].body
    named = {"name": "invoice", "schema": ITEMS_SCHEMA, "strict": True}
    if kind in CHAT_COMPLETIONS:
        assert body["response_format"] == {"type": "json_schema", "json_schema": named}
    elif kind == "cohere":
        assert body["response_format"] == {"type": "json_object", "json_schema": ITEMS_SCHEMA}
    elif kind == "openai_responses":
        assert body["text"] == {"format": {"type": "json_schema", **named}}
    elif kind == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "invoice"}
        assert body["tools"][-1]["input_schema"] == ITEMS_SCHEMA
    elif kind == "bedrock":
        assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "invoice"}}
        spec = body["toolConfig"]["tools"][-1]["toolSpec"]
        assert spec["inputSchema"] == {"json": ITEMS_SCHEMA}
    elif kind == "gemini":
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        item = config["responseSchema"]["properties"]["items"]["items"]
        assert item["properties"]["price"] == {"type": "NUMBER"}
        assert "additionalProperties" not in item  # not in the OpenAPI subset Gemini takes
    else:
        assert body["format"] == ITEMS_SCHEMA
    assert result.parsed is not None and result.parsed.value == VALID


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_an_unscripted_model_answers_a_schema_with_a_valid_document(tmp_path, sim, clock, kind):
    cfg = config_for(tmp_path, sim, (kind, "m"))
    result = run_engine(cfg, "x", ask(output_format(ITEMS_SCHEMA)), clock=clock)
    assert result.parsed is not None and result.parsed.value == {"items": []}


def test_a_schema_strict_mode_cannot_take_is_sent_without_strict(tmp_path, sim, clock):
    open_schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    sim.script("m", Reply('{"a": 1, "extra": true}'))
    cfg = config_for(tmp_path, sim, ("openai", "m"))
    result = run_engine(cfg, "x", ask(output_format(open_schema)), clock=clock)
    assert sim.requests[0].body["response_format"]["json_schema"]["strict"] is False
    assert result.parsed is not None and result.parsed.value == {"a": 1, "extra": True}


def test_anthropic_wraps_a_document_that_is_no_object_and_unwraps_the_answer(tmp_path, sim, clock):
    schema = {"type": "array", "items": {"$ref": "#/$defs/n"}, "$defs": {"n": {"type": "integer"}}}
    sim.script("m", Reply('{"value": [1, 2, 3]}'))  # the tool input, as the model gives it
    cfg = config_for(tmp_path, sim, ("anthropic", "m"))
    result = run_engine(cfg, "x", ask(output_format(schema)), clock=clock)
    tool = sim.requests[0].body["tools"][-1]
    assert tool["input_schema"] == {
        "type": "object",
        "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
        "required": ["value"],
        "$defs": {"n": {"type": "integer"}},  # where the $ref points
    }
    assert result.text == "[1,2,3]"
    assert result.parsed is not None and result.parsed.value == [1, 2, 3]


def test_gemini_gets_json_mode_alone_for_a_schema_its_subset_cannot_say(tmp_path, sim, clock):
    free = {"type": "object", "additionalProperties": {"type": "integer"}}  # no properties
    sim.script("m", Reply('{"a": 1}'))
    cfg = config_for(tmp_path, sim, ("gemini", "m"))
    result = run_engine(cfg, "x", ask(output_format(free)), clock=clock)
    assert sim.requests[0].body["generationConfig"] == {"responseMimeType": "application/json"}
    assert result.parsed is not None and result.parsed.value == {"a": 1}


# --- every answer checked, failover on an invalid one ---------------------------------------


def test_invalid_json_then_a_schema_violation_fail_over_to_a_valid_answer(tmp_path, sim, clock):
    sim.script("a", Reply("Sure! Here are the items: tea, cake"))
    sim.script("b", Reply(json.dumps(WRONG_TYPE)))
    sim.script("c", Reply(json.dumps(VALID)))
    cfg = config_for(tmp_path, sim, ("openai", "a"), ("anthropic", "b"), ("gemini", "c"))
    result = run_engine(cfg, "x", ask(output_format(ITEMS_SCHEMA)), clock=clock)

    assert result.entry == "gemini/c"
    assert result.parsed is not None and result.parsed.value == VALID
    first, second, third = result.attempts
    assert (first.outcome, first.rule, first.kind) == (
        "invalid_output",
        "invalid_output",
        "invalid_output",
    )
    assert "not JSON" in first.detail and "Sure! Here are" in first.detail
    assert second.outcome == "invalid_output"
    assert second.detail == "Invalid output: $.items[2].price: expected number"
    assert third.outcome == "ok"
    outcomes = [(r["provider_model"], r["outcome"], r["rule"]) for r in log_rows(tmp_path)]
    assert outcomes == [
        ("openai/a", "invalid_output", "invalid_output"),
        ("anthropic/b", "invalid_output", "invalid_output"),
        ("gemini/c", "ok", None),
    ]
    assert cooldowns(tmp_path) == {}  # an entry that answered badly is not cooled down


def test_a_missing_property_names_its_path(tmp_path, sim, clock):
    sim.script("a", Reply(json.dumps(VIOLATING)))
    cfg = config_for(tmp_path, sim, ("ollama", "a"))
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", ask(output_format(ITEMS_SCHEMA)), clock=clock)
    detail = caught.value.attempts[0].detail
    assert detail == 'Invalid output: $.items[2]: missing required property "price"'
    saved = json.loads(Path(caught.value.saved.path or "").read_text())
    assert saved["conversation"]["output"]["schema"] == ITEMS_SCHEMA  # retried for the same shape
    assert saved["errors"][0]["outcome"] == "invalid_output"


def test_a_fenced_json_answer_is_read(tmp_path, sim, clock):
    sim.script("a", Reply('```json\n{"answer": 42}\n```'))
    cfg = config_for(tmp_path, sim, ("openai", "a"))
    result = run_engine(cfg, "x", ask(OutputFormat(), "json please"), clock=clock)
    assert result.parsed is not None and result.parsed.value == {"answer": 42}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 200 + "]" * 200, "nested deeper than 64 levels"),
        ("[" + "1," * (4 << 20) + "1]", "larger than 8 MiB"),
    ],
    ids=["deep", "huge"],
)
def test_a_deep_or_huge_json_answer_is_a_clear_failure(tmp_path, sim, clock, text, problem):
    sim.script("a", Reply(text))
    sim.script("b", Reply('{"ok": true}'))
    cfg = config_for(tmp_path, sim, ("openai", "a"), ("openai", "b"))
    result = run_engine(cfg, "x", ask(OutputFormat(), "json"), clock=clock)
    assert result.entry == "openai/b"
    assert problem in result.attempts[0].detail
    assert len(result.attempts[0].detail) < 300


def test_the_callers_own_check_fails_over_too(tmp_path, sim, clock):
    def positive(value: Any) -> int:
        if value["n"] <= 0:
            raise ValueError("n must be positive")
        return int(value["n"])

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    sim.script("a", Reply('{"n": -1}'))
    sim.script("b", Reply('{"n": 3}'))
    cfg = config_for(tmp_path, sim, ("openai", "a"), ("openai", "b"))
    result = run_engine(
        cfg, "x", ask(output_format(schema)), clock=clock, options=RunOptions(output_check=positive)
    )
    assert result.attempts[0].detail == "Invalid output: n must be positive"
    assert result.parsed is not None and (result.parsed.value, result.parsed.checked) == (
        {"n": 3},
        3,
    )


# --- streams ---------------------------------------------------------------------------------


async def _stream(cfg: Path, conversation: Conversation) -> list[Any]:
    async with Cascade(load_config(cfg)) as engine:
        return [e async for e in engine.stream("x", conversation)]


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_a_streamed_json_answer_is_checked_once_whole(tmp_path, sim, kind):
    document = json.dumps(VALID)
    sim.script("m", Reply(document, stream=Stream(chunks=4, tool_fragments=4)))
    cfg = config_for(tmp_path, sim, (kind, "m"))
    events = asyncio.run(_stream(cfg, ask(output_format(ITEMS_SCHEMA))))
    pieces = [e.text for e in events if isinstance(e, Text)]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == VALID  # text as it came
    done = events[-1]
    assert isinstance(done, Done) and done.result.parsed is not None
    assert done.result.parsed.value == VALID


def test_bedrock_wraps_a_document_that_is_no_object_and_unwraps_it_from_a_stream(tmp_path, sim):
    schema = {"type": "array", "items": {"type": "integer"}}
    sim.script("m", Reply('{"value": [1, 2, 3]}', stream=Stream(chunks=3, tool_fragments=3)))
    cfg = config_for(tmp_path, sim, ("bedrock", "m"))
    events = asyncio.run(_stream(cfg, ask(output_format(schema))))
    spec = sim.requests[0].body["toolConfig"]["tools"][-1]["toolSpec"]
    assert spec["inputSchema"]["json"]["properties"] == {"value": schema}
    assert "".join(e.text for e in events if isinstance(e, Text)) == "[1,2,3]"
    done = events[-1]
    assert isinstance(done, Done) and done.result.parsed is not None
    assert done.result.parsed.value == [1, 2, 3]


def test_a_streamed_answer_that_fails_its_check_resets_to_the_next_entry(tmp_path, sim):
    sim.script("a", Reply(json.dumps(WRONG_TYPE), stream=Stream(chunks=3)))
    sim.script("b", Reply(json.dumps(VALID)))
    cfg = config_for(tmp_path, sim, ("openai", "a"), ("openai", "b"))
    events = asyncio.run(_stream(cfg, ask(output_format(ITEMS_SCHEMA))))
    reset = next(e for e in events if isinstance(e, Reset))
    assert reset.entry == "openai/a" and "expected number" in reset.reason
    done = events[-1]
    assert isinstance(done, Done) and done.result.parsed is not None
    assert done.result.parsed.value == VALID
    assert [r["outcome"] for r in log_rows(tmp_path)] == ["invalid_output", "ok"]


# --- bad schemas: refused before anything is sent ---------------------------------------------


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "objekt"}, "is not valid JSON Schema: $.type"),
        ({"properties": 3}, "is not valid JSON Schema: $.properties"),
        ({"$ref": "#/$defs/missing"}, "is not valid JSON Schema"),
        ({"$ref": "http://127.0.0.1:9/schema.json"}, "remote $ref"),
        (["type", "object"], "must be a JSON object"),
        ({"minimum": float("nan")}, "is not JSON"),
    ],
)
def test_a_schema_that_is_not_json_schema_is_a_usage_error(schema, problem):
    with pytest.raises(UsageError) as caught:
        output_format(schema)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_schema_in_a_conversation_is_refused_before_anything_is_saved(tmp_path, sim, clock):
    cfg = config_for(tmp_path, sim, ("openai", "a"))
    broken = OutputFormat({"type": 12})  # built by hand, around output_format's check
    with pytest.raises(UsageError, match="not valid JSON Schema"):
        run_engine(cfg, "x", ask(broken), clock=clock)
    assert sim.count() == 0
    assert not list((tmp_path / "failed").glob("*.json"))


# --- the simulator refuses what each vendor refuses -----------------------------------------


def openai_post(sim: Simulator, **body: Any) -> Any:
    messages = [{"role": "user", "content": "hi"}]
    payload = {"model": "m", "messages": messages, **body}
    return post(sim, "/v1/chat/completions", payload, {"Authorization": f"Bearer {SIM_KEY}"})


def test_simulated_openai_json_mode_needs_the_word_json_in_the_messages(sim):
    reply = openai_post(sim, response_format={"type": "json_object"})
    assert reply.status_code == 400
    assert "must contain the word 'json'" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "array"}, "must be a JSON Schema of 'type: \"object\"'"),
        ({"type": "object", "properties": {"a": {}}, "required": ["a"]}, "'additionalProperties'"),
        (
            {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
            "Missing 'a'",
        ),
    ],
)
def test_simulated_openai_strict_mode_refuses_what_the_api_refuses(sim, schema, problem):
    spec = {"name": "x", "schema": schema, "strict": True}
    reply = openai_post(sim, response_format={"type": "json_schema", "json_schema": spec})
    assert reply.status_code == 400
    assert problem in reply.json()["error"]["message"]


def test_simulated_openai_refuses_an_unknown_format_and_a_bad_name(sim):
    assert openai_post(sim, response_format={"type": "yaml"}).status_code == 400
    spec = {"name": "no spaces", "schema": {}}
    bad_name = openai_post(sim, response_format={"type": "json_schema", "json_schema": spec})
    assert "does not match pattern" in bad_name.json()["error"]["message"]


def test_simulated_anthropic_checks_the_forced_tool(sim):
    headers = {"x-api-key": SIM_KEY, "anthropic-version": "2023-06-01"}
    base = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    tool = {"name": "answer", "input_schema": {"type": "object"}}
    unknown = {**base, "tools": [tool], "tool_choice": {"type": "tool", "name": "other"}}
    assert "not found in tools" in post(sim, "/v1/messages", unknown, headers).text
    thinking = {
        **base,
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": "answer"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    assert "Thinking may not be enabled" in post(sim, "/v1/messages", thinking, headers).text


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"responseMimeType": "text/html"}, "allowed mimetypes"),
        ({"responseSchema": {"type": "STRING"}}, "must be application/json"),
        (
            {
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "OBJECT",
                    "properties": {"a": {"type": "STRING"}},
                    "additionalProperties": False,
                },
            },
            'Unknown name "additionalProperties"',
        ),
        (
            {"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"}},
            "should be non-empty for OBJECT type",
        ),
    ],
)
def test_simulated_gemini_checks_its_response_schema(sim, config, problem):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": config}
    reply = post(sim, "/v1beta/models/m:generateContent", body, {"x-goog-api-key": SIM_KEY})
    assert reply.status_code == 400 and problem in reply.json()["error"]["message"]


def test_simulated_ollama_takes_json_or_a_schema_as_format(sim):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert post(sim, "/api/chat", {**body, "format": "yaml"}, {}).status_code == 400
    assert post(sim, "/api/chat", {**body, "format": {"type": "object"}}, {}).status_code == 200


def test_a_schema_that_only_says_object_is_json_mode_on_the_wire_and_checked(tmp_path, sim, clock):
    sim.script("a", Reply("[1, 2]"))  # JSON, but no object
    sim.script("b", Reply('{"k": 1}'))
    cfg = config_for(tmp_path, sim, ("openai", "a"), ("openai", "b"))
    result = run_engine(cfg, "x", ask(output_format({"type": "object"})), clock=clock)
    assert sim.requests[0].body["response_format"] == {"type": "json_object"}
    assert result.attempts[0].detail == "Invalid output: $: expected object"
    assert result.parsed is not None and result.parsed.value == {"k": 1}
