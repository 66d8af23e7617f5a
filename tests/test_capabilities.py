"""Routing by capability: entries that cannot serve a request are skipped before anything is
sent (tools, JSON, a schema, a prompt over the context window), and a vendor's "context length
exceeded" fails over under its own rule. Real HTTP against the simulator, a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.config import load_config
from llm_cascade.errors import CascadeFailed, ConfigError, UsageError
from llm_cascade.simulator import Fail, Reply
from llm_cascade.types import Conversation, OutputFormat, ToolDefinition

from .providers.helpers import WEATHER_TOOL, provider_table
from .support import entry, run_cli, run_engine, saved_files, write_config

SCHEMA = OutputFormat({"type": "object", "properties": {"a": {"type": "integer"}}})


def log_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        return conn.execute(
            "SELECT provider_model, outcome, rule, error_message FROM attempt_log ORDER BY id"
        ).fetchall()


def cfg(tmp_path: Path, sim: Any, *entries: dict[str, Any]) -> Path:
    return write_config(tmp_path, sim, {"x": list(entries)})


def test_an_entry_without_structured_output_is_skipped_and_logged(tmp_path, sim, clock):
    sim.script("b", Reply('{"a": 1}'))
    path = cfg(tmp_path, sim, entry("sim", "a", supports=["json", "stream"]), entry("sim", "b"))
    conversation = Conversation.single_user_prompt("hi").with_output(SCHEMA)
    result = run_engine(path, "x", conversation, clock=clock)
    assert result.entry == "sim/b"
    assert sim.count("a") == 0  # nothing sent to it
    skipped = result.attempts[0]
    assert (skipped.outcome, skipped.rule) == ("skipped", "capability")
    assert skipped.detail == "does not support structured output (a JSON Schema)"
    assert log_rows(tmp_path)[0] == ("sim/a", "skipped", "capability", skipped.detail)


def test_an_entry_without_tool_use_is_skipped_when_tools_are_given(tmp_path, sim, clock):
    path = cfg(tmp_path, sim, entry("sim", "a", supports=["stream"]), entry("sim", "b"))
    tool = ToolDefinition(WEATHER_TOOL["name"], parameters=WEATHER_TOOL["parameters"])
    conversation = Conversation.single_user_prompt("weather?").with_tools([tool])
    result = run_engine(path, "x", conversation, clock=clock)
    assert result.entry == "sim/b"
    assert result.attempts[0].detail == "does not support tool use"
    # without tools, the same entry serves
    assert run_engine(path, "x", "plain", clock=clock).entry == "sim/a"


def test_a_prompt_over_the_context_window_skips_the_entry(tmp_path, sim, clock):
    path = cfg(
        tmp_path,
        sim,
        entry("sim", "small", context_window=1000),
        entry("sim", "large", context_window=128000),
    )
    long_prompt = "word " * 1000  # 5000 bytes: about 1250 tokens
    result = run_engine(path, "x", long_prompt, clock=clock)
    assert result.entry == "sim/large"
    assert result.attempts[0].detail == (
        "the prompt (about 1250 tokens) is over its context window (1000 tokens)"
    )
    assert run_engine(path, "x", "short", clock=clock).entry == "sim/small"


def test_max_tokens_counts_against_the_context_window(tmp_path, sim, clock):
    path = cfg(
        tmp_path,
        sim,
        entry("sim", "small", context_window=1000, max_tokens=900),
        entry("sim", "large"),
    )
    result = run_engine(path, "x", "word " * 100, clock=clock)  # about 125 tokens
    assert result.entry == "sim/large"
    assert "plus max_tokens 900" in result.attempts[0].detail


def test_no_entry_that_can_serve_is_a_usage_error_before_anything_is_sent(tmp_path, sim, clock):
    path = cfg(
        tmp_path,
        sim,
        entry("sim", "a", supports=["json"]),
        entry("sim", "b", supports=["tools", "json"]),
    )
    conversation = Conversation.single_user_prompt("hi").with_output(SCHEMA)
    with pytest.raises(UsageError) as caught:
        run_engine(path, "x", conversation, clock=clock)
    assert str(caught.value) == (
        "cascade 'x' cannot serve this request, nothing was sent: no entry supports"
        " structured output (a JSON Schema)"
    )
    assert sim.count() == 0
    assert saved_files(tmp_path / "failed") == []


def test_the_error_says_what_each_entry_lacked_when_they_differ(tmp_path, sim, clock):
    path = cfg(
        tmp_path,
        sim,
        entry("sim", "a", supports=["tools"]),
        entry("sim", "b", context_window=10),
    )
    conversation = Conversation.single_user_prompt("x" * 400).with_output(SCHEMA)
    with pytest.raises(UsageError) as caught:
        run_engine(path, "x", conversation, clock=clock)
    message = str(caught.value)
    assert "sim/a: does not support structured output (a JSON Schema)" in message
    assert "sim/b: the prompt (about" in message and "(10 tokens)" in message


def test_the_cli_explains_a_capability_skip_and_exits_2_when_none_can_serve(tmp_path, sim):
    path = write_config(
        tmp_path,
        sim,
        {
            "x": [entry("sim", "a", context_window=5), entry("sim", "b")],
            "tiny": [entry("sim", "a", context_window=5)],
        },
    )
    done = run_cli("run", "-C", "x", "-c", str(path), "-p", "a prompt of some length", "--explain")
    assert done.returncode == 0, done.stderr
    assert "sim/a  skipped, cannot serve this request: the prompt (about 6 tokens)" in done.stderr
    failed = run_cli("run", "-C", "tiny", "-c", str(path), "-p", "a prompt of some length")
    assert failed.returncode == 2
    assert "cannot serve this request, nothing was sent" in failed.stderr
    assert sim.count("a") == 0


def test_a_capability_skip_is_not_a_cooldown(tmp_path, sim, clock):
    sim.script("b", Fail(500))
    path = cfg(tmp_path, sim, entry("sim", "a", context_window=1), entry("sim", "b"))
    with pytest.raises(CascadeFailed) as caught:
        run_engine(path, "x", "hello there", clock=clock)
    message = caught.value.message
    assert message.startswith("Skipped (cannot serve this request): sim/a: the prompt")
    assert "on cooldown" not in message and "Failed entries: sim/b: HTTP 500" in message


def test_context_window_must_be_a_positive_integer(tmp_path, sim):
    path = cfg(tmp_path, sim, entry("sim", "a", context_window=0))
    with pytest.raises(ConfigError, match="context_window: must be an integer number of tokens"):
        load_config(path)


# --- a vendor's own "the prompt is too long" ------------------------------------------------

TOO_LONG = {
    "openai": Fail(
        400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"
    ),
    "anthropic": Fail(400, "prompt is too long: 210000 tokens > 200000 maximum"),
    "gemini": Fail(
        400,
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    ),
    "ollama": Fail(400, "input length exceeds the context length"),
}


@pytest.mark.parametrize("kind", sorted(TOO_LONG))
def test_context_length_exceeded_fails_over_without_a_cooldown(tmp_path, sim, clock, kind):
    sim.script("m", TOO_LONG[kind])
    sim.script("b", Reply("from b"))
    path = write_config(
        tmp_path,
        sim,
        {"x": [entry(kind, "m"), "b"]},
        providers={kind: provider_table(sim, kind)},
    )
    result = run_engine(path, "x", clock=clock)
    assert result.text == "from b"
    first = result.attempts[0]
    assert (first.rule, first.cooldown_s, first.status) == ("context_length_exceeded", None, 400)
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM cooldown").fetchone() == (0,)
