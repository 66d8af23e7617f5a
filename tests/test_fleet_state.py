"""The breaker semantics, one suite run against every backend: the embedded SQLite database
and real Redis and PostgreSQL servers (started by the fixtures in conftest.py). Instants come
from the caller, so every lease and cooldown here is judged on a chosen `now`: nothing sleeps.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from llm_cascade.breakers import Breakers
from llm_cascade.config import StateConfig
from llm_cascade.store import EntryState, Failure, Store

from .state_servers import PostgresServer, RedisServer

BACKENDS = ["sqlite", "redis", "postgres"]
T0 = 1_800_000_000.0


def redis_config(server: RedisServer, **more: object) -> StateConfig:
    prefix = f"t{secrets.token_hex(4)}"  # tests share the server, never each other's keys
    return StateConfig("redis", server.url, prefix=prefix, **more)  # type: ignore[arg-type]


def postgres_config(server: PostgresServer, **more: object) -> StateConfig:
    import psycopg

    with psycopg.connect(server.url, autocommit=True) as conn:  # an empty schema per test
        conn.execute("DROP TABLE IF EXISTS llm_cascade_breakers, llm_cascade_schema")
    return StateConfig("postgres", server.url, **more)  # type: ignore[arg-type]


def open_breakers(kind: str, request: pytest.FixtureRequest, tmp_path) -> Breakers:
    if kind == "sqlite":
        return Store(tmp_path / "db.sqlite")
    from llm_cascade.breakers import open_backend

    if kind == "redis":
        return open_backend(redis_config(request.getfixturevalue("redis_server")))
    return open_backend(postgres_config(request.getfixturevalue("postgres_server")))


@pytest.fixture(params=BACKENDS)
def breakers(request: pytest.FixtureRequest, tmp_path) -> Iterator[Breakers]:
    backend = open_breakers(request.param, request, tmp_path)
    try:
        yield backend
    finally:
        backend.close()


def fail(
    breakers: Breakers, key: str, now: float, cooldown_for, rule: str, owner: str | None = None
) -> tuple[float | None, int]:
    return breakers.fail_breaker(Failure(key, now, cooldown_for, rule, owner))


def cooldown(seconds: float | None):
    return lambda _level: seconds


def by_level(level: int) -> float:
    return 10.0 * level


def test_an_unknown_entry_is_closed(breakers):
    assert breakers.states(["p/a", "p/b"]) == {"p/a": EntryState("p/a"), "p/b": EntryState("p/b")}
    assert breakers.all_states() == []


def test_a_failure_opens_the_breaker_with_its_level_and_reason(breakers):
    assert fail(breakers, "p/a", T0, by_level, "rate_limited") == (T0 + 10, 1)
    assert fail(breakers, "p/a", T0 + 1, by_level, "server_error") == (T0 + 21, 2)
    state = breakers.states(["p/a"])["p/a"]
    assert (state.cooldown_until, state.failures, state.reason) == (T0 + 21, 2, "server_error")
    assert state.phase(T0 + 5) == "open"
    assert state.phase(T0 + 30) == "half-open"
    assert [s.key for s in breakers.all_states()] == ["p/a"]


def test_a_shorter_cooldown_never_replaces_a_longer_one(breakers):
    fail(breakers, "p/a", T0, cooldown(600), "quota")
    until, level = fail(breakers, "p/a", T0 + 1, cooldown(5), "server_error")
    assert (until, level) == (T0 + 600, 2)
    assert breakers.states(["p/a"])["p/a"].cooldown_until == T0 + 600


def test_a_failure_without_a_cooldown_counts_nothing(breakers):
    assert fail(breakers, "p/a", T0, cooldown(None), "caller") == (None, 1)
    assert breakers.states(["p/a"])["p/a"] == EntryState("p/a")


def test_a_success_resets_the_failures_and_ends_the_cooldown(breakers):
    fail(breakers, "p/a", T0, cooldown(60), "server_error")
    fail(breakers, "p/a", T0 + 1, cooldown(60), "server_error")
    breakers.reset_breaker("p/a", T0 + 2, T0 + 3)
    state = breakers.states(["p/a"])["p/a"]
    assert (state.failures, state.reason, state.phase(T0 + 3)) == (0, None, "closed")
    assert state.cooldown_until == T0 + 3
    assert fail(breakers, "p/a", T0 + 4, by_level, "x") == (T0 + 14, 1)


def test_an_answer_to_an_older_request_keeps_a_newer_failure(breakers):
    fail(breakers, "p/a", T0 + 5, cooldown(600), "rate_limited")
    breakers.reset_breaker("p/a", T0, T0 + 6)  # sent before that failure was recorded
    state = breakers.states(["p/a"])["p/a"]
    assert (state.failures, state.cooldown_until) == (1, T0 + 605)


def test_exactly_one_claim_of_a_half_open_entry_and_the_lease_lapses(breakers):
    assert not breakers.claim_probe("p/a", "run1", T0, 30)  # closed: nothing to probe
    fail(breakers, "p/a", T0, cooldown(10), "server_error")
    assert not breakers.claim_probe("p/a", "run1", T0 + 5, 30)  # still cooling
    assert breakers.claim_probe("p/a", "run1", T0 + 11, 30)
    assert not breakers.claim_probe("p/a", "run2", T0 + 12, 30)
    state = breakers.states(["p/a"])["p/a"]
    assert state.probe_until == T0 + 41 and state.phase(T0 + 12) == "probing"
    # The holder died: once its lease has lapsed, another run may probe.
    assert breakers.claim_probe("p/a", "run2", T0 + 42, 30)
    assert not breakers.claim_probe("p/a", "run3", T0 + 43, 30)


def test_only_the_holder_gives_its_lease_back(breakers):
    fail(breakers, "p/a", T0, cooldown(10), "server_error")
    assert breakers.claim_probe("p/a", "run1", T0 + 11, 30)
    breakers.release_probe("p/a", "run2")
    assert not breakers.claim_probe("p/a", "run2", T0 + 12, 30)
    breakers.release_probe("p/a", "run1")
    assert breakers.claim_probe("p/a", "run2", T0 + 12, 30)


def test_a_verdict_ends_the_lease(breakers):
    fail(breakers, "p/a", T0, cooldown(10), "server_error")
    assert breakers.claim_probe("p/a", "run1", T0 + 11, 30)
    # A caller error (no cooldown) frees the probe for the next run...
    assert fail(breakers, "p/a", T0 + 12, cooldown(None), "bad_request", owner="run1") == (
        None,
        2,
    )
    assert breakers.claim_probe("p/a", "run2", T0 + 13, 30)
    # ...a failure cools it down again, with the lease gone...
    assert fail(breakers, "p/a", T0 + 14, by_level, "server_error", owner="run2") == (T0 + 34, 2)
    assert breakers.states(["p/a"])["p/a"].probe_until is None
    assert breakers.claim_probe("p/a", "run3", T0 + 35, 30)
    # ...and an answer closes the breaker.
    breakers.reset_breaker("p/a", T0 + 35, T0 + 36)
    state = breakers.states(["p/a"])["p/a"]
    assert (state.probe_until, state.phase(T0 + 36)) == (None, "closed")
    assert not breakers.claim_probe("p/a", "run4", T0 + 37, 30)


def test_clearing_some_or_all(breakers):
    for key in ("p/a", "p/b", "p/c"):
        fail(breakers, key, T0, cooldown(60), "server_error")
    assert breakers.clear_cooldowns(["p/a"]) == 1
    assert [s.key for s in breakers.all_states()] == ["p/b", "p/c"]
    assert breakers.clear_cooldowns() == 2
    assert breakers.all_states() == []
    assert breakers.clear_cooldowns() == 0


def test_putting_states_copies_them(breakers):
    copied = [EntryState("p/a", T0 + 60, 3, None, "quota"), EntryState("p/b", T0 - 5, 1)]
    assert breakers.put_states(copied) == 2
    assert breakers.all_states() == copied
    assert fail(breakers, "p/a", T0, cooldown(1), "x") == (T0 + 60, 4)


def test_one_read_of_many_entries(breakers):
    fail(breakers, "p/b", T0, cooldown(60), "server_error")
    keys = ["p/a", "p/b", "p/c", "p/b"]
    assert list(breakers.states(keys)) == ["p/a", "p/b", "p/c"]
