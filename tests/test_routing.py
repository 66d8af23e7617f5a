"""Routing strategies, the routing state SQLite keeps, costs, budgets and retry_with."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from llm_cascade import rollup, routestate, routing
from llm_cascade.cascade import Cascade, RunOptions
from llm_cascade.clock import ManualClock
from llm_cascade.config import load_config
from llm_cascade.errors import BudgetExceeded
from llm_cascade.simulator import Fail, Reply
from llm_cascade.store import AttemptRecord, Store
from llm_cascade.types import Conversation

from .support import entry, error_line, run_cli, run_engine, write_config

T0 = 1_767_225_600.0  # ManualClock's start


def with_strategy(path: Path, cascade: str, **table: object) -> Path:
    """The config at `path` with keys added to one cascade's table."""
    import tomllib

    import tomli_w

    doc = tomllib.loads(path.read_text())
    doc["cascades"][cascade].update(table)
    path.write_text(tomli_w.dumps(doc))
    return path


def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "db.sqlite"


def log(tmp_path: Path, *records: AttemptRecord, now: float = T0) -> None:
    with Store(db(tmp_path)) as store:
        for record in records:
            store.log_attempt(record, now)


def answered(key: str, latency_ms: int, ttft_ms: int | None = None) -> AttemptRecord:
    return AttemptRecord("x", key, 200, latency_ms, 11, 7, ttft_ms=ttft_ms)


def failure(key: str) -> AttemptRecord:
    return AttemptRecord("x", key, 500, 20, outcome="failed", rule="server_error")


# --- the pure strategies ---------------------------------------------------------------------


def test_a_weighted_first_pick_follows_the_weights_within_sampling_error():
    candidates = [routing.Candidate("a", 3.0), routing.Candidate("b", 1.0)]
    rng = random.Random(7)
    draws = 4000
    firsts = [routing.route("weighted", candidates, now=T0, rng=rng).order[0] for _ in range(draws)]
    share = firsts.count("a") / draws
    tolerance = 4 * math.sqrt(0.75 * 0.25 / draws)  # four standard errors
    assert abs(share - 0.75) < tolerance
    assert set(firsts) == {"a", "b"}


def test_a_failure_penalty_shifts_weight_and_decays_as_the_entry_recovers():
    stats = routing.RouteStats(verdicts=3, penalty=0.875, penalty_at=T0)
    a = routing.Candidate("a", 3.0, stats)
    assert routing.effective_weight(a, T0) == pytest.approx(3.0 * 0.125)
    half = T0 + routing.PENALTY_RECOVERY_S * 0.875 / 2
    assert routing.effective_weight(a, half) == pytest.approx(3.0 * (1 - 0.4375))
    assert routing.effective_weight(a, T0 + routing.PENALTY_RECOVERY_S) == 3.0
    ranked = routing.route(
        "weighted", [a, routing.Candidate("b", 1.0)], now=T0, rng=random.Random(1)
    )
    shares = {r.key: r.numbers["share"] for r in ranked.ranked}
    assert shares["b"] > shares["a"]  # 1.0 against 0.375


def test_weighted_never_draws_an_entry_that_cannot_be_tried():
    candidates = [routing.Candidate("a", 100.0, available=False), routing.Candidate("b", 1.0)]
    for seed in range(50):
        route = routing.route("weighted", candidates, now=T0, rng=random.Random(seed))
        assert route.order == ("b", "a")


def test_latency_orders_by_the_moving_average_and_explores_entries_without_data():
    slow = routing.Candidate("slow", stats=routing.RouteStats(5, latency_ms=900.0))
    fast = routing.Candidate("fast", stats=routing.RouteStats(5, latency_ms=120.0))
    new = routing.Candidate("new")
    route = routing.route("latency", [slow, fast, new], now=T0, rng=random.Random())
    assert route.order == ("new", "fast", "slow")
    assert route.ranked[0].note == "no data yet: explored"


def test_streams_are_ranked_by_time_to_first_token_when_known():
    a = routing.Candidate("a", stats=routing.RouteStats(5, latency_ms=100.0, ttft_ms=90.0))
    b = routing.Candidate("b", stats=routing.RouteStats(5, latency_ms=900.0, ttft_ms=30.0))
    assert routing.route("latency", [a, b], now=T0, rng=random.Random()).order == ("a", "b")
    streamed = routing.route("latency", [a, b], now=T0, rng=random.Random(), streaming=True)
    assert streamed.order == ("b", "a")
    assert streamed.ranked[0].numbers == {"ttft_ms": 30.0, "penalty": 0.0}


def test_cost_puts_the_cheapest_first_and_entries_without_a_price_last():
    price = routing.Price(input=2.5, output=10.0)
    cheap = routing.Price(input=0.1, output=0.4)
    candidates = [
        routing.Candidate("none"),
        routing.Candidate("dear", cost=routing.estimated_cost(price, 1000, None)),
        routing.Candidate("cheap", cost=routing.estimated_cost(cheap, 1000, None)),
    ]
    route = routing.route("cost", candidates, now=T0, rng=random.Random())
    assert route.order == ("cheap", "dear", "none")
    assert route.ranked[1].numbers["estimated_cost"] == pytest.approx(
        (1000 * 2.5 + routing.EXPECTED_OUTPUT_TOKENS * 10.0) / 1e6
    )


def test_score_weighs_reliability_latency_and_cost():
    flaky_fast = routing.Candidate(
        "flaky", stats=routing.RouteStats(10, latency_ms=100.0, success=0.2), cost=1.0
    )
    steady_slow = routing.Candidate(
        "steady", stats=routing.RouteStats(10, latency_ms=300.0, success=1.0), cost=1.0
    )
    default = routing.route("score", [flaky_fast, steady_slow], now=T0, rng=random.Random())
    assert default.order == ("steady", "flaky")  # 0.5 reliability outweighs 0.3 latency
    speed = routing.route(
        "score",
        [flaky_fast, steady_slow],
        now=T0,
        rng=random.Random(),
        score_weights={"reliability": 0.1, "latency": 0.9, "cost": 0.0},
    )
    assert speed.order == ("flaky", "steady")
    assert speed.ranked[0].numbers["latency_score"] == 1.0


# --- the state SQLite keeps ------------------------------------------------------------------


def test_the_routing_state_is_kept_as_attempts_are_written(tmp_path):
    log(tmp_path, answered("sim/a", 100, ttft_ms=40), answered("sim/a", 200), failure("sim/a"))
    with Store(db(tmp_path)) as store:
        stats = store.route_stats(["sim/a", "sim/b"])
    a = stats["sim/a"]
    assert a.verdicts == 3
    assert a.latency_ms == pytest.approx(100 + 0.3 * (200 - 100))
    assert a.ttft_ms == 40  # the answer without a first-token time leaves it
    assert a.success == pytest.approx(1.0 + 0.3 * (0.0 - 1.0))
    assert a.penalty == pytest.approx(0.5)
    assert a.penalty_now(T0 + 75) == pytest.approx(0.25)
    assert stats["sim/b"] == routing.RouteStats()


def test_the_penalty_decays_between_rows_and_an_answer_halves_it(tmp_path):
    log(tmp_path, failure("sim/a"), failure("sim/a"))
    log(tmp_path, answered("sim/a", 50), now=T0 + 60)
    with Store(db(tmp_path)) as store:
        a = store.route_stats(["sim/a"])["sim/a"]
    assert a.penalty == pytest.approx((0.75 - 60 / routing.PENALTY_RECOVERY_S) * 0.5)
    assert a.penalty_at == pytest.approx(T0 + 60)


def test_skips_and_cancellations_are_no_verdict(tmp_path):
    log(
        tmp_path,
        AttemptRecord("x", "sim/a", None, 0, outcome="skipped"),
        AttemptRecord("x", "sim/a", None, 5, outcome="cancelled"),
    )
    with Store(db(tmp_path)) as store:
        assert store.route_stats(["sim/a"])["sim/a"] == routing.RouteStats()


def test_rows_the_original_tool_writes_count_and_an_old_log_seeds_the_state(tmp_path):
    path = db(tmp_path)
    path.parent.mkdir(parents=True)
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE attempt_log (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL,"
        " cascade_name TEXT NOT NULL, provider_model TEXT NOT NULL, http_status INTEGER,"
        " latency_ms INTEGER NOT NULL, input_tokens INTEGER, output_tokens INTEGER);"
        " CREATE TABLE cooldown (provider_model TEXT PRIMARY KEY, cooldown_until TEXT NOT NULL);"
    )
    old = "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
    old += " latency_ms, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)"
    raw.execute(old, ("2026-01-01T00:00:00+00:00", "x", "sim/a", 200, 100, 5, 5))
    raw.execute(old, ("2026-01-01T00:00:01+00:00", "x", "sim/a", 200, 300, 5, 5))
    raw.execute(old, ("2026-01-01T00:00:02+00:00", "x", "sim/a", 503, 10, None, None))
    raw.commit()
    Store(path).close()  # migrates: the state starts from the log's aggregates
    raw.execute(old, ("2026-01-01T00:00:03+00:00", "x", "sim/a", 500, 10, None, None))
    raw.commit()  # the original tool knows nothing of the trigger; SQLite fires it anyway
    raw.close()
    with Store(path) as store:
        a = store.route_stats(["sim/a"])["sim/a"]
    assert a.verdicts == 4
    assert a.latency_ms == pytest.approx(200.0)
    assert a.success == pytest.approx(2 / 3 * 0.7)
    assert a.penalty == pytest.approx(0.5)


def _mixed_rows(store: Store, after_each: Callable[[], None] = lambda: None) -> None:
    """Answers, failures, no-verdict rows, tokens and costs, an hour and a day apart, and a
    row as the original tool writes it (no outcome)."""
    for i, now in enumerate((T0, T0 + 40, T0 + 3600, T0 + 86_400)):
        for record, at in (
            (AttemptRecord("x", "sim/a", 200, 100 + i, 5, 6, ttft_ms=30 + i), now),
            (failure("sim/a"), now + 1),
            (AttemptRecord("y", "sim/b", 200, 70, 1, 2, cost=0.25), now + 2),
            (AttemptRecord("y", "sim/b", None, 0, outcome="skipped"), now + 3),
        ):
            store.log_attempt(record, at)
            after_each()
    store.conn.execute(
        "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
        " latency_ms, input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("2026-01-02T01:00:00+00:00", "x", "sim/a", 503, 9, None, None),
    )
    after_each()


def _reads(store: Store) -> tuple[object, ...]:
    periods = ["2026-01-01", "2026-01-02", "2026-01"]
    return (
        store.route_stats(["sim/a", "sim/b", "sim/c"]),
        store.spending("cascade", ["x", "y"], periods),
        store.spending("entry", ["sim/a", "sim/b"], periods),
    )


def test_routing_state_and_spending_read_the_same_before_and_after_a_fold(tmp_path):
    with Store(tmp_path / "each.sqlite") as store:
        _mixed_rows(store, after_each=store.fold_log)
        row_by_row = _reads(store)
    with Store(tmp_path / "batch.sqlite") as store:
        _mixed_rows(store)
        assert store.conn.execute("SELECT COUNT(*) FROM entry_route").fetchone()[0] == 0
        pending = _reads(store)  # nothing folded yet: read from the rows themselves
        store.fold_log()
        assert store.conn.execute("SELECT COUNT(*) FROM entry_route").fetchone()[0] == 2
        folded = _reads(store)
    assert pending == folded == row_by_row
    stats, by_cascade, _ = folded
    assert stats["sim/a"].verdicts == 9  # 4 answers, 4 failures, the original's 503
    assert stats["sim/b"].verdicts == 4  # the skips are no verdict
    assert by_cascade[("y", "2026-01")] == (12, 1.0)
    assert by_cascade[("x", "2026-01-02")] == (11, 0.0)


def test_a_reader_that_remembers_still_sees_every_later_row_of_every_process(tmp_path):
    with Store(db(tmp_path)) as reader, Store(db(tmp_path)) as writer:
        _mixed_rows(writer)
        first = reader.route_stats(["sim/a", "sim/b"])
        writer.log_attempt(answered("sim/a", 900), T0 + 90_000)
        writer.fold_log()
        writer.log_attempt(failure("sim/b"), T0 + 90_001)  # after the fold: not folded yet
        later = reader.route_stats(["sim/a", "sim/b", "sim/c"])
    with Store(db(tmp_path)) as fresh:
        assert later == fresh.route_stats(["sim/a", "sim/b", "sim/c"])
    assert later["sim/a"].verdicts == first["sim/a"].verdicts + 1
    assert later["sim/b"].verdicts == first["sim/b"].verdicts + 1


def test_a_runs_reads_never_walk_the_log(tmp_path):
    with Store(db(tmp_path)) as store:
        _mixed_rows(store)
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        _reads(store)
        store.conn.set_trace_callback(None)
        plans = [
            row[3]
            for sql in statements
            for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}")
            if "attempt_log" in sql
        ]
    # The log is only ever entered by id, after the mark: no scan, no entry index.
    walks = [p for p in plans if p.startswith("SCAN r") and "route_mark" not in p]
    walks += [p for p in plans if "attempt_log_" in p]
    assert plans and not walks, plans
    assert any("INTEGER PRIMARY KEY (rowid>?)" in p for p in plans)


def test_an_older_version_folding_only_the_log_aggregates_leaves_no_row_out(tmp_path):
    with Store(db(tmp_path)) as store:
        _mixed_rows(store)
        exact = _reads(store)
        with store.conn:  # what a schema-5 llm-cascade's fold does on this database
            store.conn.execute("BEGIN")
            rollup.catch_up(store.conn)
        assert _reads(store) == exact
        store.fold_log()
        assert _reads(store) == exact


def test_a_database_whose_triggers_kept_the_routing_state_is_not_counted_twice(tmp_path):
    path = db(tmp_path)
    with Store(path) as store:
        _mixed_rows(store)
        exact = _reads(store)
        # As schema 5 left it: the rows in the routing state and spending (its triggers
        # folded each one as it came), not yet in the rollup, the triggers still there.
        with store.conn:
            store.conn.execute("BEGIN")
            routestate.catch_up(store.conn)
        store.conn.execute("DROP TABLE route_mark")
        for name in routestate.OLD_TRIGGERS:
            store.conn.execute(
                f"CREATE TRIGGER {name} AFTER INSERT ON attempt_log BEGIN SELECT 1; END"
            )
        store.conn.execute("PRAGMA user_version = 5")
    with Store(path) as store:
        assert _reads(store) == exact
        store.fold_log()
        assert _reads(store) == exact
        names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        attempts = store.conn.execute("SELECT SUM(attempts) FROM attempt_totals").fetchone()[0]
    assert not names & set(routestate.OLD_TRIGGERS)
    assert attempts == 17  # the rollup caught up once, too


# --- strategies in runs ----------------------------------------------------------------------


async def _runs(config_path: Path, count: int, seed: int) -> list[str]:
    config = load_config(config_path)
    clock = ManualClock()
    with Store(config.database_path) as store:
        async with Cascade(config, store=store, clock=clock, rng=random.Random(seed)) as engine:
            return [
                (await engine.run("x", Conversation.single_user_prompt("hi"))).entry
                for _ in range(count)
            ]


def test_weighted_runs_split_traffic_by_weight(tmp_path, sim):
    cfg = write_config(
        tmp_path, sim, {"x": [entry("sim", "heavy", weight=3), entry("sim", "light", weight=1)]}
    )
    with_strategy(cfg, "x", strategy="weighted")
    runs = 400
    answered_by = asyncio.run(_runs(cfg, runs, seed=3))
    share = answered_by.count("sim/heavy") / runs
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / runs)
    assert sim.count("heavy") + sim.count("light") == runs  # one request a run: no failover


def test_weighted_traffic_shifts_away_from_a_failing_entry(tmp_path, sim):
    sim.script("heavy", Fail(400))  # fails over without a cooldown, every time
    cfg = write_config(
        tmp_path, sim, {"x": [entry("sim", "heavy", weight=3), entry("sim", "light", weight=1)]}
    )
    with_strategy(cfg, "x", strategy="weighted")
    asyncio.run(_runs(cfg, 60, seed=5))
    # Without the penalty, heavy would go first in three runs of four (45 of 60).
    assert sim.count("heavy") < 25
    assert sim.count("light") == 60


def test_latency_strategy_tries_the_fastest_recorded_entry_and_explains_why(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["slow", "fast"]})
    with_strategy(cfg, "x", strategy="latency")
    log(tmp_path, answered("sim/slow", 900), answered("sim/fast", 150))
    done = run_cli("run", "-c", str(cfg), "-C", "x", "--explain", "--json", "hi")
    assert done.returncode == 0, done.stderr
    assert [r.model for r in sim.requests] == ["fast"]
    assert "strategy latency:" in done.stderr
    assert "1. sim/fast  latency_ms 150" in done.stderr
    ranking = json.loads(done.stdout)["route"]
    assert ranking["strategy"] == "latency"
    assert [r["entry"] for r in ranking["ranking"]] == ["sim/fast", "sim/slow"]


def test_a_new_entry_is_explored_before_the_known_fast_one(tmp_path, sim, clock):
    cfg = write_config(tmp_path, sim, {"x": ["fast", "new"]})
    with_strategy(cfg, "x", strategy="latency")
    log(tmp_path, answered("sim/fast", 10))
    result = run_engine(cfg, "x", clock=clock)
    assert result.entry == "sim/new"
    assert result.route is not None and result.route.ranked[0].note == "no data yet: explored"


def test_cost_strategy_sends_to_the_cheapest_and_records_the_cost(tmp_path, sim, clock):
    dear = entry("sim", "dear", price={"input": 2.5, "output": 10.0})
    cheap = entry("sim", "cheap", price={"input": 0.5, "output": 1.5})
    cfg = write_config(tmp_path, sim, {"x": [dear, cheap]})
    with_strategy(cfg, "x", strategy="cost")
    result = run_engine(cfg, "x", clock=clock)
    assert result.entry == "sim/cheap"
    expected = (11 * 0.5 + 7 * 1.5) / 1e6  # the simulator's 11 tokens in, 7 out
    assert result.cost == pytest.approx(expected)
    assert result.to_dict()["cost"] == pytest.approx(expected)
    with Store(db(tmp_path)) as store:
        (row,) = store.recent_attempts()
    assert row.cost == pytest.approx(expected)


def test_a_cooling_entry_goes_last_and_is_skipped(tmp_path, sim, clock):
    sim.script("fast", Fail(500))
    cfg = write_config(tmp_path, sim, {"x": ["fast", "slow"]})
    with_strategy(cfg, "x", strategy="latency")
    log(tmp_path, answered("sim/fast", 10), answered("sim/slow", 500))
    first = run_engine(cfg, "x", clock=clock)  # fast fails (a cooldown), slow answers
    assert [a.entry for a in first.attempts] == ["sim/fast", "sim/slow"]
    second = run_engine(cfg, "x", clock=clock)
    assert second.route is not None and second.route.order == ("sim/slow", "sim/fast")
    assert second.route.ranked[1].note == "cannot be tried now"
    assert sim.count("fast") == 1


# --- cost and budgets --------------------------------------------------------------------------


def test_json_shows_the_cost_of_each_attempt(tmp_path, sim):
    cfg = write_config(
        tmp_path, sim, {"x": [entry("sim", "a", price={"input": 1000000, "output": 2000000})]}
    )
    done = run_cli("run", "-c", str(cfg), "-C", "x", "--json", "hi")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["cost"] == pytest.approx(11 + 14)
    assert out["attempts"][0]["cost"] == pytest.approx(25)


def test_a_cascade_over_its_budget_refuses_across_processes(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    with_strategy(cfg, "x", budget={"tokens_per_day": 30})
    for _ in range(2):  # 18 tokens a run: the second one crosses the budget
        assert run_cli("run", "-c", str(cfg), "-C", "x", "hi").returncode == 0
    done = run_cli("run", "-c", str(cfg), "-C", "x", "--json", "hi")
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert out["outcome"] == "budget_exceeded"
    assert 0 < out["retry_after"] <= 86400
    assert sim.count() == 2  # nothing was sent
    saved = Path(out["saved_to"])
    assert saved.exists() and json.loads(saved.read_text())["status"] == "budget_exceeded"
    assert "tokens_per_day = 30, spent 36" in done.stderr
    listed = run_cli("failed", "list", "-c", str(cfg))
    assert "budget_exceeded" in listed.stdout, listed.stderr


def test_an_entry_over_its_budget_is_skipped_with_the_reason_and_reset(tmp_path, sim, clock):
    capped = entry("sim", "a", price={"input": 1000, "output": 1000}, budget={"cost_per_day": 0.01})
    cfg = write_config(tmp_path, sim, {"x": [capped, "b"]})
    assert run_engine(cfg, "x", clock=clock).entry == "sim/a"  # spends 0.018
    result = run_engine(cfg, "x", clock=clock)
    assert result.entry == "sim/b"
    skip = result.attempts[0]
    assert (skip.entry, skip.outcome, skip.rule) == ("sim/a", "skipped", "budget")
    assert "cost_per_day = 0.01" in skip.detail and "resets at 2026-01-02 00:00:00Z" in skip.detail
    assert skip.cooldown_until == T0 + 86400
    clock.advance(86400)  # a new UTC day: the budget is whole again
    assert run_engine(cfg, "x", clock=clock).entry == "sim/a"


def test_a_budget_is_counted_in_the_engine_too(tmp_path, sim, clock):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    with_strategy(cfg, "x", budget={"tokens_per_month": 10})
    run_engine(cfg, "x", clock=clock)
    with pytest.raises(BudgetExceeded) as caught:
        run_engine(cfg, "x", clock=clock)
    assert caught.value.outcome == "budget_exceeded"
    assert caught.value.retry_after_s == pytest.approx(31 * 86400)  # to February 1st
    assert caught.value.saved.path is not None


# --- retry_with --------------------------------------------------------------------------------


def test_retry_with_is_merged_into_the_in_place_retries_only(tmp_path, sim, clock):
    sim.script("a", Fail(500), Reply("second try"))
    flaky = entry(
        "sim", "a", retries=1, temperature=0.9, retry_with={"temperature": 0.2, "max_tokens": 64}
    )
    cfg = write_config(tmp_path, sim, {"x": [flaky]})
    assert run_engine(cfg, "x", clock=clock).text == "second try"
    first, second = (r.body for r in sim.requests)
    assert first["temperature"] == 0.9 and "max_tokens" not in first
    assert second["temperature"] == 0.2 and second["max_tokens"] == 64
    sim.reset()
    run_engine(cfg, "x", clock=clock, options=RunOptions())  # a first try: no retry_with
    assert sim.requests[0].body["temperature"] == 0.9


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cascade", "entry_keys", "key"),
    [
        ({"strategy": "fastest"}, {}, "cascades.x.strategy"),
        ({}, {"weight": 0}, "cascades.x.entries[0].weight"),
        ({}, {"weight": -2}, "cascades.x.entries[0].weight"),
        ({"score_weights": {"reliability": 0, "latency": 0}}, {}, "cascades.x.score_weights"),
        ({"budget": {"cost_per_day": 0}}, {}, "cascades.x.budget.cost_per_day"),
        ({"budget": {"tokens_per_month": -5}}, {}, "cascades.x.budget.tokens_per_month"),
        ({}, {"budget": {"tokens_per_day": "lots"}}, "cascades.x.entries[0].budget.tokens_per_day"),
        ({}, {"price": {"input": 1}}, "cascades.x.entries[0].price.output"),
        ({}, {"retry_with": {"temperature": -1}}, "cascades.x.entries[0].retry_with.temperature"),
        ({"hedge_after": 10, "deadline": 5}, {}, "cascades.x.hedge_after"),
        ({"hedge_after": 1, "max_hedges": 0}, {}, "cascades.x.max_hedges"),
        ({"mirror": [{"provider": "nope", "model": "m"}]}, {}, "cascades.x.mirror[0].provider"),
        ({"mirror_save": "yes"}, {}, "cascades.x.mirror_save"),
    ],
)
def test_bad_routing_config_is_a_one_line_error_naming_the_key(
    tmp_path, sim, cascade, entry_keys, key
):
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", **entry_keys)]})
    with_strategy(cfg, "x", **cascade)
    done = run_cli("run", "-c", str(cfg), "-C", "x", "hi")
    assert done.returncode == 2
    assert f": {key}: " in error_line(done.stderr)
    assert sim.count() == 0


# --- hedging -----------------------------------------------------------------------------------


def test_a_hedge_answers_for_a_slow_first_entry_which_is_cancelled(tmp_path, sim, clock):
    sim.script("slow", Reply("too late", hold=True))  # answers only when released
    cfg = write_config(tmp_path, sim, {"x": ["slow", "quick"]})
    with_strategy(cfg, "x", hedge_after=0.5)
    result = run_engine(cfg, "x", clock=clock)
    assert result.entry == "sim/quick"
    outcomes = {a.entry: a.outcome for a in result.attempts}
    assert outcomes == {"sim/slow": "hedged", "sim/quick": "ok"}
    assert sim.wait_for_disconnects(1, "slow")  # the simulator saw the request cancelled
    assert 0.5 in clock.slept
    with Store(db(tmp_path)) as store:
        rows = {r.provider_model: r for r in store.recent_attempts()}
        assert "sim/slow" not in {s.key for s in store.all_states()}  # no cooldown
    assert rows["sim/slow"].outcome == "hedged"


def test_only_the_winners_deltas_reach_a_stream(tmp_path, sim, clock):
    from llm_cascade.events import Done, Text
    from llm_cascade.simulator import Stream

    sim.script("slow", Reply("slow words", hold=True, stream=Stream(chunks=2)))
    sim.script("quick", Reply("quick words here", stream=Stream(chunks=3)))
    cfg = write_config(tmp_path, sim, {"x": ["slow", "quick"]})
    with_strategy(cfg, "x", hedge_after=0.25)
    config = load_config(cfg)

    async def go() -> tuple[str, str]:
        shown = ""
        async with Cascade(config, clock=clock) as engine:
            async for event in engine.stream("x", Conversation.single_user_prompt("hi")):
                if isinstance(event, Text):
                    shown += event.text
                if isinstance(event, Done):
                    return shown, event.answer.result.entry
        raise AssertionError("no Done")

    shown, winner = asyncio.run(go())
    assert (shown, winner) == ("quick words here", "sim/quick")
    assert sim.wait_for_disconnects(1, "slow")


def test_max_hedges_bounds_the_extra_requests(tmp_path, sim, clock):
    for model in ("a", "b", "c"):
        sim.script(model, Reply(model, hold=True))
    sim.script("d", Reply("d"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b", "c", "d"]})
    with_strategy(cfg, "x", hedge_after=1, max_hedges=2, deadline=30)

    async def go() -> str:
        config = load_config(cfg)
        async with Cascade(config, clock=clock) as engine:
            task = asyncio.create_task(engine.run("x", Conversation.single_user_prompt("hi")))
            assert await asyncio.to_thread(sim.wait_for, 3)
            sim.release()
            return (await task).entry

    assert asyncio.run(go()) in {"sim/a", "sim/b", "sim/c"}
    assert sim.count("d") == 0  # the first entry and two hedges: never a fourth request
    assert sim.count() == 3


# --- mirroring ---------------------------------------------------------------------------------


def mirror_rows(tmp_path: Path) -> list[tuple[str, str, int | None]]:
    with Store(db(tmp_path)) as store:
        return [
            (r.provider_model, r.outcome, r.output_tokens)
            for r in store.recent_attempts()
            if r.outcome == "mirror"
        ]


def test_mirrors_get_a_copy_logged_and_saved_but_never_answer(tmp_path, sim, clock):
    sim.script("shadow", Reply("the shadow's answer"))
    cfg = write_config(tmp_path, sim, {"x": ["main"]})
    with_strategy(cfg, "x", mirror=[entry("sim", "shadow")], mirror_save=True)
    config = load_config(cfg)

    async def go() -> str:
        async with Cascade(config, clock=clock) as engine:
            result = await engine.run("x", Conversation.single_user_prompt("compare me"))
            await engine.wait_mirrors(30)
            assert [a.entry for a in result.attempts] == ["sim/main"]
            return result.text

    assert "the shadow" not in asyncio.run(go())
    (seen,) = [r for r in sim.requests if r.model == "shadow"]
    assert "compare me" in json.dumps(seen.body)
    assert mirror_rows(tmp_path) == [("sim/shadow", "mirror", 7)]
    (saved,) = (db(tmp_path).parent / "mirrors").iterdir()
    assert json.loads(saved.read_text())["answer"]["content"][0]["text"] == "the shadow's answer"


def test_the_caller_never_waits_for_a_mirror(tmp_path, sim, clock):
    sim.script("shadow", Reply("late", hold=True))
    cfg = write_config(tmp_path, sim, {"x": ["main"]})
    with_strategy(cfg, "x", mirror=[entry("sim", "shadow")])
    config = load_config(cfg)

    async def go() -> str:
        async with Cascade(config, clock=clock) as engine:
            result = await engine.run("x", Conversation.single_user_prompt("hi"))
            assert await asyncio.to_thread(sim.wait_for, 1, "shadow")
            return result.entry  # answered while the mirror is still held

    assert asyncio.run(go()) == "sim/main"
    assert sim.wait_for_disconnects(1, "shadow")  # closing the engine cancelled it
    sim.release()
    assert mirror_rows(tmp_path) == []


def test_a_cli_run_waits_for_its_mirrors_at_most_mirror_wait(tmp_path, sim):
    sim.script("quick_shadow", Reply("copy"))
    sim.script("stuck_shadow", Reply("never", hold=True))
    cfg = write_config(tmp_path, sim, {"x": ["main"]})
    mirrors = [entry("sim", "quick_shadow"), entry("sim", "stuck_shadow")]
    with_strategy(cfg, "x", mirror=mirrors, mirror_wait=0.5)
    done = run_cli("run", "-c", str(cfg), "-C", "x", "hi")
    sim.release()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Simulated answer")
    assert mirror_rows(tmp_path) == [("sim/quick_shadow", "mirror", 7)]


def test_stats_show_the_cost_of_priced_entries(tmp_path, sim):
    priced = entry("sim", "a", price={"input": 1000, "output": 2000})
    cfg = write_config(tmp_path, sim, {"x": [priced, "b"]})
    for _ in range(2):
        assert run_cli("run", "-c", str(cfg), "-C", "x", "hi").returncode == 0
    done = run_cli("stats", "-c", str(cfg), "--json")
    assert done.returncode == 0, done.stderr
    (cascade,) = json.loads(done.stdout)["cascades"]
    costs = {e["entry"]: e["cost"] for e in cascade["entries"]}
    assert costs == {"sim/a": pytest.approx(2 * (11 * 1000 + 7 * 2000) / 1e6), "sim/b": None}
    text = run_cli("stats", "-c", str(cfg)).stdout
    assert "COST" in text and re.search(r"\s0\.05\s", text), text


def test_stats_show_a_tiny_cost_without_rounding_it_to_zero(tmp_path, sim):
    cheap = entry("sim", "a", price={"input": 1.0, "output": 2.0})  # 25 millionths a run
    cfg = write_config(tmp_path, sim, {"x": [cheap]})
    assert run_cli("run", "-c", str(cfg), "-C", "x", "hi").returncode == 0
    text = run_cli("stats", "-c", str(cfg)).stdout
    assert "2.5e-05" in text, text


def test_the_templates_commented_routing_cascade_loads_once_uncommented():
    """The routing example of the config template is a config that works."""
    import tomllib
    from importlib import resources

    from llm_cascade.config import parse_config

    text = resources.files("llm_cascade").joinpath("config_template.toml").read_text()
    start, end = text.index("# [cascades.routed_task]"), text.index("# --- templates")
    block = text[start:end]
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith("# ")]
    config = parse_config(tomllib.loads(text[:start] + "\n".join(lines) + text[end:]))
    routed = config.cascades["routed_task"]
    assert (routed.strategy, routed.hedge_after, routed.max_hedges) == ("score", 2.0, 1)
    assert routed.budget is not None and routed.budget.cost_per_day == 5.0
    assert [m.key for m in routed.mirror] == ["groq/llama-3.1-8b-instant"]
    first, second = routed.entries
    assert first.price == routing.Price(0.15, 0.6) and first.retry_with == {"temperature": 0.2}
    assert second.budget is not None and second.budget.cost_per_day == 2.0


def test_the_gateway_answers_a_spent_budget_with_503_and_when_it_resets(tmp_path, sim):
    import httpx

    from .gateway import gateway

    cfg = write_config(tmp_path, sim, {"fast": ["a"]})
    with_strategy(cfg, "fast", budget={"tokens_per_day": 10})
    chat = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    with gateway(cfg) as gw:
        first = httpx.post(f"{gw.url}/v1/chat/completions", json=chat, timeout=30)
        second = httpx.post(f"{gw.url}/v1/chat/completions", json=chat, timeout=30)
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.json()["error"]["code"] == "budget_exceeded"
    assert "over its budget (tokens_per_day = 10" in second.json()["error"]["message"]
    assert 0 < int(second.headers["retry-after"]) <= 86400
    assert sim.count() == 1


def test_explain_says_which_hedged_request_was_cancelled(tmp_path, sim):
    sim.script("slow", Reply("too late", delay=20))
    cfg = write_config(tmp_path, sim, {"x": ["slow", "quick"]})
    with_strategy(cfg, "x", hedge_after=0.2)
    done = run_cli("run", "-c", str(cfg), "-C", "x", "--explain", "hi")
    assert done.returncode == 0, done.stderr
    assert "sim/slow   hedged: cancelled after" in done.stderr
    assert "sim/quick  answered in" in done.stderr
    assert sim.wait_for_disconnects(1, "slow")
