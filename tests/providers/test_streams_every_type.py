"""Every provider type's stream, read by the engine from the simulator over loopback: the
pieces as scripted, and each scripted fault failing over by the rule it stands for."""

from __future__ import annotations

import pytest

from llm_cascade.simulator import Reply, Stream

from .helpers import ALL_TYPES, stream_engine, vendor_config


@pytest.mark.parametrize("ptype", ALL_TYPES)
def test_the_pieces_arrive_in_order_and_make_the_answer(tmp_path, sim, clock, ptype):
    sim.script("m", Reply(stream=Stream(pieces=("Hel", "lo, ", "world"))))
    cfg = vendor_config(tmp_path, sim, ptype, fallback=False)

    result = stream_engine(cfg, clock)

    assert result.response.text == "Hello, world"
    assert result.attempts[0].chunks == 3
    assert (result.response.input_tokens, result.response.output_tokens) == (11, 7)


@pytest.mark.parametrize("ptype", ALL_TYPES)
@pytest.mark.parametrize(
    ("stream", "rule"),
    [
        (Stream(terminator=False), "truncated"),
        (Stream(malformed_after=0), "invalid_response"),
        (Stream(oversized_after=0), "invalid_response"),
    ],
    ids=["no-end-marker", "malformed", "oversized"],
)
def test_a_broken_stream_fails_over_by_its_rule(tmp_path, sim, clock, ptype, stream, rule):
    sim.script("m", Reply("one two", stream=stream))
    cfg = vendor_config(tmp_path, sim, ptype)

    result = stream_engine(cfg, clock)

    assert (result.attempts[0].rule, result.entry) == (rule, "sim/b")
