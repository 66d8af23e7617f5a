"""The engine against the simulator over loopback, a real SQLite file and a manual clock."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from llm_cascade.cascade import RunOptions
from llm_cascade.clock import format_ts
from llm_cascade.config import load_config
from llm_cascade.errors import CascadeFailed, UsageError
from llm_cascade.simulator import Close, Empty, Fail, Hang, HtmlError, InvalidJson, Redirect, Reply
from llm_cascade.store import AttemptRecord, Store

from .support import SIM_KEY, entry, run_engine, saved_files, write_config


def cooldown_rows(tmp_path: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        rows = conn.execute("SELECT provider_model, cooldown_until, failures FROM cooldown")
        return {r[0]: (r[1], r[2]) for r in rows}


def log_rows(tmp_path: Path) -> list[dict[str, object]]:
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM attempt_log ORDER BY id")]


def test_rate_limited_primary_fails_over_and_cools_down_for_retry_after(tmp_path, sim, clock):
    sim.script("a", Fail(429, retry_after="45"))
    sim.script("b", Reply("from b"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})

    result = run_engine(cfg, "x", clock=clock)

    assert result.text == "from b"
    assert result.entry == "sim/b"
    assert [a.outcome for a in result.attempts] == ["failed", "ok"]
    assert result.attempts[0].rule == "rate_limited"
    assert cooldown_rows(tmp_path)["sim/a"] == (format_ts(clock.now() + 45), 1)
    rows = log_rows(tmp_path)
    assert [(r["provider_model"], r["http_status"], r["outcome"]) for r in rows] == [
        ("sim/a", 429, "failed"),
        ("sim/b", 200, "ok"),
    ]
    assert rows[1]["input_tokens"] == 11 and rows[1]["output_tokens"] == 7


def test_cooling_entry_is_skipped_without_a_request_until_it_expires(tmp_path, sim, clock):
    sim.script("a", Fail(503, retry_after="60"), Reply("a is back"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    run_engine(cfg, "x", clock=clock)

    clock.advance(59)
    second = run_engine(cfg, "x", clock=clock)
    assert sim.count("a") == 1
    assert second.attempts[0].outcome == "skipped"
    assert "cooling down until" in second.attempts[0].detail

    clock.advance(2)
    third = run_engine(cfg, "x", clock=clock)
    assert third.text == "a is back"
    assert third.attempts[0].probe is True
    assert cooldown_rows(tmp_path)["sim/a"][1] == 0  # success closed the breaker


def test_backoff_doubles_per_consecutive_failure_up_to_the_cap(tmp_path, sim, clock):
    sim.script("a", Fail(500))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    durations = []
    for _ in range(9):
        result = run_engine(cfg, "x", clock=clock)
        attempt = result.attempts[0]
        assert attempt.outcome == "failed"
        durations.append(round(attempt.cooldown_until - clock.now()))
        clock.advance(durations[-1] + 1)
    assert durations == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_success_resets_the_backoff_level(tmp_path, sim, clock):
    sim.script("a", Fail(500), Fail(500), Reply("ok"), Fail(500))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    seen = []
    for _ in range(4):
        attempt = run_engine(cfg, "x", clock=clock).attempts[0]
        seen.append((attempt.outcome, attempt.level))
        clock.advance(3600)
    assert seen == [("failed", 1), ("failed", 2), ("ok", None), ("failed", 1)]


@pytest.mark.parametrize(
    ("behaviour", "expected_s"),
    [
        (Fail(429, retry_after="120"), 120),
        (Fail(503, retry_after="7"), 7),
        (Fail(429, retry_after="99999999999999999999"), 3600),  # clamped before arithmetic
        (Fail(429, retry_after="soon"), 30),  # unreadable: computed backoff
        (Fail(500, retry_after="300"), 30),  # only 429/503/529 carry a Retry-After rule
        (Fail(529, retry_after="12"), 12),
    ],
)
def test_retry_after_sets_the_cooldown(tmp_path, sim, clock, behaviour, expected_s):
    sim.script("a", behaviour)
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    attempt = run_engine(cfg, "x", clock=clock).attempts[0]
    assert round(attempt.cooldown_until - clock.now()) == expected_s


def test_retry_after_as_http_date(tmp_path, sim):
    # The server computes the date from real time, so this test uses the real clock.
    future = datetime.now(UTC).timestamp() + 600
    sim.script(
        "a",
        Fail(429, retry_after=format_datetime(datetime.fromtimestamp(future, UTC), usegmt=True)),
    )
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    from llm_cascade.clock import SystemClock

    attempt = run_engine(cfg, "x", clock=SystemClock()).attempts[0]  # type: ignore[arg-type]
    assert abs(attempt.cooldown_until - future) < 2


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_caller_errors_fail_over_without_a_cooldown(tmp_path, sim, clock, status):
    sim.script("a", Fail(status, "bad request"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    first = run_engine(cfg, "x", clock=clock)
    assert first.entry == "sim/b"
    assert first.attempts[0].rule == "caller_error"
    assert first.attempts[0].cooldown_until is None
    assert "sim/a" not in cooldown_rows(tmp_path)
    run_engine(cfg, "x", clock=clock)
    assert sim.count("a") == 2  # tried again: a bad request says nothing about the provider


def test_auth_failure_cools_down_long_and_names_the_key_to_fix(tmp_path, sim, clock):
    sim.require_key("the-right-key")
    sim.script("b", Reply("unreachable"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    attempt = caught.value.attempts[0]
    assert attempt.status == 401 and attempt.rule == "auth"
    assert round(attempt.cooldown_until - clock.now()) == 3600
    assert "llm-cascade key set sim" in attempt.detail


def test_a_longer_cooldown_set_elsewhere_is_never_shortened(tmp_path, sim, clock):
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    config = load_config(cfg)
    with Store(config.database_path) as store:  # another process set an hour
        store.record_failure(
            AttemptRecord("x", "sim/a", 429, 5, outcome="failed"), clock.now(), lambda _: 3600.0
        )
    sim.script("a", Fail(500))
    attempt = run_engine(cfg, "x", clock=clock, options=RunOptions(ignore_cooldown=True)).attempts[
        0
    ]
    assert attempt.outcome == "failed"
    assert round(attempt.cooldown_until - clock.now()) == 3600


@pytest.mark.parametrize(
    ("behaviour", "kind", "rule", "cools"),
    [
        (Empty(), "empty_response", "empty_response", False),
        (InvalidJson(), "invalid_response", "invalid_response", True),
        (HtmlError(502), "http", "server_error", True),
        (Close(), "transport", "connect", True),
        (Redirect(), "http", "redirect", False),
    ],
)
def test_broken_answers_fail_over(tmp_path, sim, clock, behaviour, kind, rule, cools):
    sim.script("a", behaviour)
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    result = run_engine(cfg, "x", clock=clock)
    first = result.attempts[0]
    assert result.entry == "sim/b"
    assert (first.kind, first.rule) == (kind, rule)
    assert (first.cooldown_until is not None) == cools
    assert len(first.detail) < 400  # an HTML page is summarised, never dumped


def test_redirect_is_not_followed(tmp_path, sim, clock):
    sim.script("a", Redirect(location=sim.base_url("openai") + "/chat/completions"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    run_engine(cfg, "x", clock=clock)
    assert sim.count("a") == 1


def test_hanging_provider_fails_over_within_its_timeout(tmp_path, sim, clock):
    sim.script("a", Hang(seconds=30))
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", timeout=0.3), "b"]})
    result = run_engine(cfg, "x", clock=clock)
    assert result.entry == "sim/b"
    assert result.attempts[0].kind == "timeout"
    assert result.attempts[0].rule == "timeout"


def test_first_byte_timeout_is_its_own_budget(tmp_path, sim, clock):
    sim.script("a", Hang(seconds=30))
    cfg = write_config(
        tmp_path, sim, {"x": [entry("sim", "a", timeout=60, first_byte_timeout=0.2), "b"]}
    )
    first = run_engine(cfg, "x", clock=clock).attempts[0]
    assert "first_byte_timeout" in first.detail


def test_a_silent_provider_fails_over_when_a_cascade_deadline_is_set(tmp_path, sim, clock):
    sim.script("a", Hang(seconds=30))
    cfg = write_config(
        tmp_path, sim, {"x": [entry("sim", "a", timeout=60, first_byte_timeout=0.2), "b"]}
    )
    result = run_engine(cfg, "x", clock=clock, options=RunOptions(deadline_s=30))
    assert result.entry == "sim/b"  # 30 s of the deadline were left: the provider is at fault
    first = result.attempts[0]
    assert (first.outcome, first.rule) == ("failed", "timeout")
    assert "first_byte_timeout" in first.detail
    assert "sim/a" in cooldown_rows(tmp_path)


def test_cascade_deadline_stops_without_blaming_the_entry(tmp_path, sim):
    sim.script("a", Hang(seconds=30))
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", timeout=60), "b"]})
    from llm_cascade.clock import SystemClock

    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=SystemClock(), options=RunOptions(deadline_s=0.3))  # type: ignore[arg-type]
    outcomes = [a.outcome for a in caught.value.attempts]
    assert outcomes == ["deadline"]
    assert sim.count("b") == 0
    assert "sim/a" not in cooldown_rows(tmp_path)


def test_missing_key_is_logged_and_skipped_without_a_request(tmp_path, sim, clock, monkeypatch):
    monkeypatch.delenv("SIM_KEY")
    cfg = write_config(
        tmp_path,
        sim,
        {"x": ["a", entry("other", "b")]},
        providers={
            "other": {
                "type": "openai",
                "base_url": sim.base_url("openai"),
                "api_key_env": "OTHER_KEY",
            }
        },
    )
    monkeypatch.setenv("OTHER_KEY", "  sk-other-key  ")
    result = run_engine(cfg, "x", clock=clock)
    assert [a.outcome for a in result.attempts] == ["missing_key", "ok"]
    assert "llm-cascade key set sim" in result.attempts[0].detail
    assert sim.count("a") == 0
    assert sim.requests[0].headers["authorization"] == "Bearer sk-other-key"  # stripped
    assert log_rows(tmp_path)[0]["outcome"] == "missing_key"


def test_empty_env_var_counts_as_missing(tmp_path, sim, clock, monkeypatch):
    monkeypatch.setenv("SIM_KEY", "   ")
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    assert caught.value.attempts[0].outcome == "missing_key"
    assert sim.count() == 0


def test_vendor_default_key_is_never_sent_to_a_third_party_url(tmp_path, sim, clock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    cfg = write_config(
        tmp_path,
        sim,
        {"x": [entry("proxy", "a")]},
        providers={"proxy": {"type": "openai", "base_url": sim.base_url("openai")}},
    )
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    assert sim.count() == 0
    assert "OPENAI_API_KEY is not sent to a custom base_url" in caught.value.attempts[0].detail


def test_keyring_key_wins_over_the_env_var(tmp_path, sim, clock, isolated_env):
    isolated_env.set_password("llm-cascade", "sim", "sk-from-keyring")
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    run_engine(cfg, "x", clock=clock)
    assert sim.requests[0].headers["authorization"] == "Bearer sk-from-keyring"


def test_total_failure_saves_the_conversation_with_errors(tmp_path, sim, clock):
    sim.script("a", Fail(503, "down"))
    sim.script("b", Fail(400, "bad"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", "keep me", clock=clock)
    exc = caught.value
    assert str(exc).startswith(
        "All providers in cascade 'x' failed: Failed entries: sim/a: HTTP 503: server_error: down;"
        " sim/b: HTTP 400: invalid_request_error: bad\nFailed prompt persisted to: "
    )
    path = Path(exc.failed_prompt_path)
    assert path.is_absolute() and path.parent == tmp_path / "failed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())
    assert list(saved)[:3] == ["cascade_name", "timestamp", "conversation"]
    assert saved["conversation"] == {"messages": [{"role": "user", "content": "keep me"}]}
    assert saved["status"] == "failed"
    assert [(e["entry"], e["status"], e["rule"]) for e in saved["errors"]] == [
        ("sim/a", 503, "unavailable"),
        ("sim/b", 400, "caller_error"),
    ]


def test_skipped_entries_are_listed_first_in_the_failure_message(tmp_path, sim, clock):
    sim.script("a", Fail(429, retry_after="60"))
    sim.script("b", Fail(500, "oops"))
    cfg = write_config(tmp_path, sim, {"x": ["a"], "y": ["a", "b"]})
    with pytest.raises(CascadeFailed):
        run_engine(cfg, "x", clock=clock)
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "y", clock=clock)
    assert caught.value.message == (
        "Skipped (on cooldown): sim/a\nFailed entries: sim/b: HTTP 500: server_error: oops"
    )


def test_success_leaves_no_saved_prompt(tmp_path, sim, clock):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    run_engine(cfg, "x", clock=clock)
    assert saved_files(tmp_path / "failed") == []


def test_unknown_cascade_is_a_usage_error_that_sends_and_saves_nothing(tmp_path, sim, clock):
    cfg = write_config(tmp_path, sim, {"x": ["a"], "y": ["b"]})
    with pytest.raises(UsageError, match=r"Cascade 'nope' not found .*\(defined: x, y\)"):
        run_engine(cfg, "nope", clock=clock)
    assert sim.count() == 0
    assert not (tmp_path / "failed").exists()


def test_retries_inside_an_entry_back_off_with_jitter(tmp_path, sim, clock):
    sim.script("a", Fail(500), Fail(502), Reply("third time"))
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", retries=2), "b"]})
    result = run_engine(cfg, "x", clock=clock)
    assert result.text == "third time"
    assert [(a.outcome, a.try_number) for a in result.attempts] == [
        ("retrying", 1),
        ("retrying", 2),
        ("ok", 3),
    ]
    first, second = clock.slept
    assert 0.375 <= first <= 0.5 and 0.75 <= second <= 1.0
    assert "sim/a" not in cooldown_rows(tmp_path)  # retried failures set no cooldown


def test_retry_honours_a_short_retry_after_and_moves_on_from_a_long_one(tmp_path, sim, clock):
    sim.script("a", Fail(429, retry_after="3"), Fail(429, retry_after="600"))
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", retries=3, max_wait=10), "b"]})
    result = run_engine(cfg, "x", clock=clock)
    assert clock.slept == [3.0]
    assert [a.outcome for a in result.attempts] == ["retrying", "failed", "ok"]
    assert round(result.attempts[1].cooldown_until - clock.now()) == 600


def test_caller_errors_are_not_retried(tmp_path, sim, clock):
    sim.script("a", Fail(400))
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", retries=3), "b"]})
    run_engine(cfg, "x", clock=clock)
    assert sim.count("a") == 1


def test_user_rule_can_stop_the_cascade(tmp_path, sim, clock):
    sim.script("a", Fail(400, "context too long"))
    cfg = write_config(
        tmp_path,
        sim,
        {"x": ["a", "b"]},
        providers={
            "sim": {
                "type": "openai",
                "base_url": sim.base_url("openai"),
                "api_key_env": "SIM_KEY",
                "rules": [
                    {"name": "bad_prompt", "status": 400, "action": "stop", "cooldown": "none"}
                ],
            }
        },
    )
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    assert [a.rule for a in caught.value.attempts] == ["bad_prompt"]
    assert sim.count("b") == 0


def test_user_rule_overrides_a_builtin_cooldown(tmp_path, sim, clock):
    sim.script("a", Fail(500))
    rules = [{"status": "5xx", "cooldown": 5}]
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]}, extra={"rules": rules})
    attempt = run_engine(cfg, "x", clock=clock).attempts[0]
    assert attempt.rule == "rules[0]"
    assert round(attempt.cooldown_until - clock.now()) == 5


def test_only_one_run_probes_a_half_open_entry(tmp_path, sim, clock):
    sim.script("a", Fail(500), Reply("recovered"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    run_engine(cfg, "x", clock=clock)
    clock.advance(31)
    config = load_config(cfg)
    with Store(config.database_path) as store:  # another process claims the probe first
        assert store.claim_probe("sim/a", "other-run", clock.now(), lease_s=20)
        assert not store.claim_probe("sim/a", "third-run", clock.now(), lease_s=20)
    skipped = run_engine(cfg, "x", clock=clock).attempts[0]
    assert skipped.outcome == "skipped" and "probing" in skipped.detail
    assert sim.count("a") == 1

    clock.advance(21)  # the other prober died: its lease lapses
    probed = run_engine(cfg, "x", clock=clock)
    assert probed.text == "recovered" and probed.attempts[0].probe


def test_failed_probe_reopens_with_a_longer_cooldown(tmp_path, sim, clock):
    sim.script("a", Fail(500))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    run_engine(cfg, "x", clock=clock)
    clock.advance(31)
    probe = run_engine(cfg, "x", clock=clock).attempts[0]
    assert probe.probe and probe.level == 2
    assert round(probe.cooldown_until - clock.now()) == 60


def test_wait_cooldown_waits_for_the_soonest_entry(tmp_path, sim, clock):
    sim.script("a", Fail(429, retry_after="40"), Reply("after the wait"))
    sim.script("b", Fail(429, retry_after="90"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    assert caught.value.retry_after_s == pytest.approx(40)

    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock, options=RunOptions(wait_cooldown_s=10))
    assert clock.slept == []
    assert caught.value.retry_after_s == pytest.approx(40)

    result = run_engine(cfg, "x", clock=clock, options=RunOptions(wait_cooldown_s=60))
    assert result.text == "after the wait"
    assert clock.slept and 40 <= clock.slept[0] < 41


def test_ignore_cooldown_tries_cooling_entries(tmp_path, sim, clock):
    sim.script("a", Fail(429, retry_after="600"), Reply("tried anyway"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    with pytest.raises(CascadeFailed):
        run_engine(cfg, "x", clock=clock)
    result = run_engine(cfg, "x", clock=clock, options=RunOptions(ignore_cooldown=True))
    assert result.text == "tried anyway"
    assert cooldown_rows(tmp_path)["sim/a"] == (format_ts(clock.now()), 0)


def test_no_secret_reaches_the_database_or_saved_prompt(tmp_path, sim, clock):
    sim.require_key("something-else")
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    with pytest.raises(CascadeFailed) as caught:
        run_engine(cfg, "x", clock=clock)
    blob = (tmp_path / "state" / "db.sqlite").read_bytes()
    assert SIM_KEY.encode() not in blob
    assert SIM_KEY not in Path(caught.value.failed_prompt_path).read_text()
    assert SIM_KEY not in str(caught.value)
    assert os.environ["SIM_KEY"] == SIM_KEY
