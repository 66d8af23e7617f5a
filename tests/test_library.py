"""The library surface: `run_cascade`, `load_config` and the types, as a Python user calls them."""

from __future__ import annotations

import pytest

import llm_cascade
from llm_cascade import CascadeFailed, Conversation, Message, load_config, run_cascade
from llm_cascade.simulator import Fail, Reply

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
