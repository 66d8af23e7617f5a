"""Every native provider's error paths fail over with the decision the rules table gives."""

from __future__ import annotations

import pytest

from llm_cascade.simulator import Empty, Fail, HtmlError, InvalidJson

from ..support import run_engine
from .helpers import NATIVE, vendor_config

# (behaviour, kind, rule, cooldown in seconds or None)
PATHS = [
    (Fail(401, "invalid x-api-key"), "http", "auth", 3600),
    (Fail(404, "model not found"), "http", "caller_error", None),
    (Fail(429, "slow down", retry_after="45"), "http", "rate_limited", 45),
    (Fail(500, "boom"), "http", "server_error", 30),
    (Fail(503, "busy", retry_after="20"), "http", "unavailable", 20),
    (InvalidJson(), "invalid_response", "invalid_response", 30),
    (HtmlError(502), "http", "server_error", 30),
    (Empty(), "empty_response", "empty_response", None),
]


@pytest.mark.parametrize("ptype", NATIVE)
@pytest.mark.parametrize(("behaviour", "kind", "rule", "cooldown_s"), PATHS)
def test_error_fails_over_with_the_rule_decision(
    tmp_path, sim, clock, ptype, behaviour, kind, rule, cooldown_s
):
    sim.script("m", behaviour)
    cfg = vendor_config(tmp_path, sim, ptype)

    result = run_engine(cfg, "x", clock=clock)

    first = result.attempts[0]
    assert result.entry == "sim/b"
    assert (first.kind, first.rule) == (kind, rule)
    if cooldown_s is None:
        assert first.cooldown_until is None
    else:
        assert round(first.cooldown_until - clock.now()) == cooldown_s
    assert len(first.detail) < 400  # summarised, never the whole body
    assert sim.requests[0].vendor == ptype


@pytest.mark.parametrize("ptype", NATIVE)
def test_vendor_error_body_becomes_a_short_message(tmp_path, sim, clock, ptype):
    sim.script("m", Fail(404, "model 'm' not found"))
    cfg = vendor_config(tmp_path, sim, ptype)
    detail = run_engine(cfg, "x", clock=clock).attempts[0].detail
    expected = {
        "anthropic": "HTTP 404: not_found_error: model 'm' not found",
        "gemini": "HTTP 404: NOT_FOUND: model 'm' not found",
        "ollama": "HTTP 404: model 'm' not found",
        "azure": "HTTP 404: model 'm' not found",  # its code "404" only repeats the status
        "mistral": "HTTP 404: invalid_request_error: model 'm' not found",
        "cohere": "HTTP 404: model 'm' not found",
        "bedrock": "HTTP 404: ResourceNotFoundException: model 'm' not found",
        "openai_responses": "HTTP 404: invalid_request_error: model 'm' not found",
    }[ptype]
    assert detail.startswith(expected)


@pytest.mark.parametrize("ptype", NATIVE)
def test_html_error_page_is_named_by_its_title(tmp_path, sim, clock, ptype):
    sim.script("m", HtmlError(502))
    cfg = vendor_config(tmp_path, sim, ptype)
    detail = run_engine(cfg, "x", clock=clock).attempts[0].detail
    assert detail.startswith("HTTP 502: HTML error page: 502 Bad Gateway")
