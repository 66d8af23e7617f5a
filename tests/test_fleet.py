"""A fleet sharing its breakers on Redis or PostgreSQL: real servers, real CLI processes, each
"host" with its own local database, so only the shared backend can carry what they agree on.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.breakers import open_backend
from llm_cascade.cascade import Cascade, CascadeResult
from llm_cascade.clock import ManualClock
from llm_cascade.config import AppConfig, load_config
from llm_cascade.errors import CascadeFailed
from llm_cascade.simulator import Fail, Reply
from llm_cascade.store import EntryState, Failure, Store
from llm_cascade.types import Conversation

from .state_servers import PostgresServer, RedisServer, free_port
from .support import error_line, run_async, run_cli, write_config
from .test_fleet_state import postgres_config, redis_config
from .test_resilience import assert_one_probe, start_cli

SHARED = ["redis", "postgres"]


def shared_table(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "redis":
        state = redis_config(request.getfixturevalue("redis_server"))
        return {"backend": "redis", "url": state.url, "prefix": state.prefix}
    state = postgres_config(request.getfixturevalue("postgres_server"))
    return {"backend": "postgres", "url": state.url}


def host_config(tmp_path: Path, sim, table: dict[str, Any], host: str, entries=("a", "b")) -> Path:
    """One host's config: the shared [state], its own local database."""
    return write_config(
        tmp_path,
        sim,
        {"x": list(entries)},
        extra={"state": table, "database": {"path": str(tmp_path / host / "db.sqlite")}},
        name=f"{host}.toml",
    )


@pytest.fixture(params=SHARED)
def fleet(request: pytest.FixtureRequest) -> dict[str, Any]:
    return shared_table(request.param, request)


def shared_states(cfg: Path, *keys: str) -> dict[str, EntryState]:
    backend = open_backend(load_config(cfg).state)
    try:
        return backend.states(keys)
    finally:
        backend.close()


def half_open(cfg: Path, key: str) -> None:
    """`key` failed long enough ago that its cooldown is over: the next run may probe it."""
    backend = open_backend(load_config(cfg).state)
    try:
        backend.put_states([EntryState(key, time.time() - 60, 1, None, "server_error")])
    finally:
        backend.close()


async def run_on_backend(config: AppConfig, clock: ManualClock) -> CascadeResult:
    """One run in-process, on the store its config names, with a manual clock."""
    async with Cascade(config, clock=clock) as engine:
        return await engine.run("x", Conversation.single_user_prompt("q"))


def test_one_probe_reaches_a_recovering_provider_from_six_hosts(tmp_path, sim, fleet):
    configs = [host_config(tmp_path, sim, fleet, f"host{i}") for i in range(6)]
    half_open(configs[0], "sim/a")
    sim.script("a", Reply("probe answered", hold=True))
    sim.script("b", Reply("fallback"))
    procs = [
        start_cli("run", "-C", "x", "-c", str(c), "-p", f"p{i}") for i, c in enumerate(configs)
    ]

    assert_one_probe(sim, procs)  # exactly one request reached the recovering provider
    assert shared_states(configs[0], "sim/a")["sim/a"].failures == 0  # the probe closed it
    for host in range(6):  # the breakers never touched the local databases
        with sqlite3.connect(tmp_path / f"host{host}" / "db.sqlite") as conn:
            assert conn.execute("SELECT count(*) FROM cooldown").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM attempt_log").fetchone()[0] >= 1


def test_a_cooldown_one_host_sets_is_seen_by_another(tmp_path, sim, fleet):
    first, second = (host_config(tmp_path, sim, fleet, h) for h in ("one", "two"))
    sim.script("a", Fail(429, retry_after="600"))
    assert run_cli("run", "-C", "x", "-c", str(first), "-p", "q").stdout == (
        "Simulated answer from b: q\n"
    )
    done = run_cli("run", "-C", "x", "-c", str(second), "-p", "q", "-v")
    assert done.returncode == 0, done.stderr
    assert sim.count("a") == 1  # the second host did not send to the cooling entry
    assert "skipping sim/a" in done.stderr
    state = shared_states(first, "sim/a")["sim/a"]
    assert state.failures == 1 and state.is_cooling(time.time())


def test_killing_the_probe_holder_lets_its_lease_lapse(tmp_path, sim, fleet):
    cfg = host_config(tmp_path, sim, fleet, "one", entries=("a",))
    half_open(cfg, "sim/a")
    sim.script("a", Reply("never delivered", hold=True), Reply("second probe"))
    holder = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "q")
    assert sim.wait_for(1, "a")
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=30)
    lease = shared_states(cfg, "sim/a")["sim/a"].probe_until
    assert lease is not None and lease > time.time()  # the dead run still holds the lease

    other = load_config(host_config(tmp_path, sim, fleet, "two", entries=("a",)))
    with pytest.raises(CascadeFailed, match="probe"):
        run_async(run_on_backend(other, ManualClock(start=time.time())))
    assert sim.count("a") == 1
    result = run_async(run_on_backend(other, ManualClock(start=lease + 1)))  # it lapsed
    assert result.response.text == "second probe"
    assert sim.count("a") == 2
    assert shared_states(cfg, "sim/a")["sim/a"].failures == 0


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def own_server(request: pytest.FixtureRequest) -> Iterator[RedisServer | PostgresServer]:
    """A private server of the kind asked for, which the test may stop."""
    server = (RedisServer() if request.param == "redis" else PostgresServer()).start()
    try:
        yield server
    finally:
        server.close()


def own_table(server: RedisServer | PostgresServer) -> dict[str, Any]:
    kind = "redis" if isinstance(server, RedisServer) else "postgres"
    return {"backend": kind, "url": server.url, "timeout": 1}


@pytest.mark.parametrize("own_server", SHARED, indirect=True)
def test_a_server_stopped_mid_run_falls_back_to_the_local_state(tmp_path, sim, own_server, caplog):
    cfg = host_config(tmp_path, sim, own_table(own_server), "one")
    config = load_config(cfg)
    sim.script("a", Fail(500), Reply("held answer", hold=True))

    async def scenario() -> tuple[CascadeResult, CascadeResult, CascadeResult]:
        async with Cascade(config) as engine:
            first = await engine.run("x", Conversation.single_user_prompt("one"))
            assert shared_states(cfg, "sim/a")["sim/a"].failures == 1  # on the server
            engine.store.clear_cooldowns()  # let the next run try a again
            running = asyncio.create_task(engine.run("x", Conversation.single_user_prompt("two")))
            assert await asyncio.to_thread(sim.wait_for, 2, "a")
            own_server.stop()  # while the request is in flight
            sim.release()
            second = await running
            third = await engine.run("x", Conversation.single_user_prompt("three"))
            return first, second, third

    first, second, third = run_async(scenario())
    assert first.entry == "sim/b" and second.response.text == "held answer"
    assert third.entry == "sim/a"  # on the local breakers, closed
    warnings = [r.getMessage() for r in caplog.records if "state backend" in r.getMessage()]
    assert len(warnings) == 1, warnings  # said once, not per operation
    assert "uses the local breaker state" in warnings[0]
    with sqlite3.connect(config.database_path) as conn:
        rows = conn.execute("SELECT backend, reason FROM state_fallback").fetchall()
        assert [r[0] for r in rows] == [own_table(own_server)["backend"]]
        logged = conn.execute("SELECT outcome FROM attempt_log ORDER BY id").fetchall()
    assert [r[0] for r in logged] == ["failed", "ok", "ok", "ok"]  # every attempt kept locally


@pytest.mark.parametrize("kind", SHARED)
def test_a_server_that_never_answers_costs_one_timeout_not_the_answer(tmp_path, sim, kind):
    silent = SilentServer()
    try:
        scheme = "redis" if kind == "redis" else "postgresql"
        table = {"backend": kind, "url": f"{scheme}://127.0.0.1:{silent.port}/0", "timeout": 0.5}
        cfg = host_config(tmp_path, sim, table, "one")
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q", timeout=30)
    finally:
        silent.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Simulated answer from a: q\n"
    [line] = [x for x in done.stderr.splitlines() if "state backend" in x]
    assert f"127.0.0.1:{silent.port}" in line and "local breaker state" in line


def test_an_unreachable_backend_is_reported_by_config_check(tmp_path, sim):
    port = free_port()
    table = {"backend": "redis", "url": f"redis://:hunter2@127.0.0.1:{port}/0", "timeout": 0.5}
    cfg = host_config(tmp_path, sim, table, "one")
    done = run_cli("config", "check", "-c", str(cfg))
    assert "hunter2" not in done.stdout + done.stderr
    assert f"redis at redis://:***@127.0.0.1:{port}/0" in done.stdout
    assert "unreachable" in done.stdout


def test_status_and_reset_work_on_the_shared_backend(tmp_path, sim, fleet):
    first, second = (host_config(tmp_path, sim, fleet, h) for h in ("one", "two"))
    sim.script("a", Fail(429, retry_after="600"))
    assert run_cli("run", "-C", "x", "-c", str(first), "-p", "q").returncode == 0
    status = run_cli("status", "--json", "-c", str(second))  # another host sees it
    assert status.returncode == 0, status.stderr
    rows = {row["entry"]: row for row in json.loads(status.stdout)}
    assert rows["sim/a"]["state"] == "open" and rows["sim/a"]["failures"] == 1
    assert rows["sim/b"]["state"] == "closed"
    done = run_cli("reset", "sim/a", "-c", str(second))
    assert done.returncode == 0 and "Reset 1 entry." in done.stderr
    assert shared_states(first, "sim/a")["sim/a"] == EntryState("sim/a")


def test_status_says_so_when_the_backend_is_unreachable(tmp_path, sim):
    table = {"backend": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "timeout": 0.5}
    cfg = host_config(tmp_path, sim, table, "one")
    for args in (["status"], ["reset", "--all"]):
        done = run_cli(*args, "-c", str(cfg))
        assert done.returncode == 1
        assert error_line(done.stderr).startswith("Error: Redis at redis://127.0.0.1:")


def test_migrate_copies_the_local_breakers_into_the_backend(tmp_path, sim, fleet):
    local_cfg = write_config(tmp_path, sim, {"x": ["a", "b", "c"]}, name="local.toml")
    sim.script("a", Fail(429, retry_after="600"))
    sim.script("b", Fail(500))
    assert run_cli("run", "-C", "x", "-c", str(local_cfg), "-p", "q").returncode == 0
    with Store(load_config(local_cfg).database_path) as store:
        local = {s.key: s for s in store.all_states()}
    shared_cfg = write_config(
        tmp_path, sim, {"x": ["a", "b", "c"]}, extra={"state": fleet}, name="shared.toml"
    )
    backend = open_backend(load_config(shared_cfg).state)
    try:  # the fleet already cools b down for longer: the copy must not shorten it
        backend.fail_breaker(Failure("sim/b", time.time(), lambda _level: 3600, "quota"))
    finally:
        backend.close()
    done = run_cli("state", "migrate", "-c", str(shared_cfg))
    assert done.returncode == 0, done.stderr
    assert "Copied 1 breaker from" in done.stderr and "kept 1 longer cooldown" in done.stderr
    there = shared_states(shared_cfg, "sim/a", "sim/b", "sim/c")
    assert there["sim/a"].cooldown_until == pytest.approx(local["sim/a"].cooldown_until)
    assert there["sim/a"].failures == 1 and there["sim/a"].reason == local["sim/a"].reason
    assert there["sim/b"].reason == "quota"
    assert there["sim/c"] == EntryState("sim/c")


def test_migrate_needs_a_shared_backend(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("state", "migrate", "-c", str(cfg))
    assert done.returncode == 2
    assert "[state] backend is 'sqlite'" in error_line(done.stderr)


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"backend": "redis"}, "state.url: is required"),
        ({"backend": "redis", "url": "http://127.0.0.1/"}, "must start with redis://"),
        ({"backend": "postgres", "url": "postgresql://h:99999999/db"}, "not a valid URL"),
        ({"backend": "mysql", "url": "mysql://h/db"}, "state.backend: must be one of"),
        ({"backend": "redis", "url": "redis://127.0.0.1/", "timeout": 0}, "state.timeout"),
    ],
)
def test_a_bad_state_table_is_a_config_error(tmp_path, sim, table, problem):
    cfg = host_config(tmp_path, sim, table, "one")
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q")
    assert done.returncode == 2
    assert problem in error_line(done.stderr)
    assert sim.count() == 0


def test_the_password_comes_from_an_env_var_and_is_never_shown(tmp_path, sim):
    secret = "s3cret-fleet-password"
    server = RedisServer(password=secret).start()
    try:
        table = {"backend": "redis", "url": server.url, "password_env": "FLEET_PW", "timeout": 1}
        cfg = host_config(tmp_path, sim, table, "one", entries=("a",))
        sim.script("a", Fail(500), Reply("ok"))
        env = {"FLEET_PW": secret}
        failed = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q", "-vv", env=env)
        assert failed.returncode == 1 and "state backend" not in failed.stderr
        assert shared_states_with(cfg, secret)["sim/a"].failures == 1  # on the server
        wrong = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q", env={"FLEET_PW": "nope"})
        assert "state backend unreachable" in wrong.stderr  # refused: the local state is used
        assert wrong.stdout == "ok\n"
        check = run_cli("config", "check", "--json", "-c", str(cfg), env=env)
        assert json.loads(check.stdout)["state"]["reachable"] is True
        outputs = failed.stdout + failed.stderr + wrong.stderr + check.stdout
    finally:
        server.close()
    assert secret not in outputs
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def shared_states_with(cfg: Path, password: str) -> dict[str, EntryState]:
    from llm_cascade.breakers.redis import RedisBreakers

    backend = RedisBreakers(load_config(cfg).state, password)
    try:
        return backend.states(["sim/a"])
    finally:
        backend.close()


def test_a_schema_from_a_newer_version_is_refused_clearly(tmp_path, sim, postgres_server):
    import psycopg

    table = {"backend": "postgres", "url": postgres_config(postgres_server).url}  # emptied
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE llm_cascade_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO llm_cascade_schema VALUES (99)")
    cfg = host_config(tmp_path, sim, table, "one")
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "q")
    assert done.returncode == 0 and done.stdout == "Simulated answer from a: q\n"
    [line] = [x for x in done.stderr.splitlines() if "state backend" in x]
    assert "schema is version 99, newer than this llm-cascade's 1: upgrade llm-cascade" in line
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute("DROP TABLE llm_cascade_schema")


def test_health_reports_the_backend_and_its_updates_reach_the_fleet(tmp_path, sim, fleet):
    first, second = (host_config(tmp_path, sim, fleet, h) for h in ("one", "two"))
    sim.script_probe("a", Fail(503, "down for maintenance"))
    sim.script_probe("b", Reply())
    done = run_cli("health", "--update", "-c", str(first))
    assert done.returncode == 1  # a is not healthy
    assert f"State backend: {fleet['backend']} at {fleet['url']}: reachable" in done.stderr
    rows = {
        row["entry"]: row
        for row in json.loads(run_cli("status", "--json", "-c", str(second)).stdout)
    }
    assert rows["sim/a"]["state"] == "open"  # the other host sees the verdict


def test_the_templates_commented_state_table_loads_once_uncommented():
    import tomllib
    from importlib import resources

    from llm_cascade.config import parse_config

    text = resources.files("llm_cascade").joinpath("config_template.toml").read_text()
    block = text[text.index("# [state]") :]
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith("# ")]
    state = parse_config(tomllib.loads("\n".join(lines))).state
    assert (state.backend, state.password_env) == ("redis", "LLM_CASCADE_STATE_PASSWORD")


@pytest.mark.parametrize("own_server", SHARED, indirect=True)
def test_after_a_fallback_the_backend_is_used_again_once_it_is_back(tmp_path, sim, own_server):
    from llm_cascade.breakers import RETRY_S, SharedStore

    config = load_config(host_config(tmp_path, sim, own_table(own_server), "one"))
    ticks = [0.0]
    store = SharedStore(config.database_path, config.state, monotonic=lambda: ticks[0])
    try:
        failure = Failure("sim/a", time.time(), lambda _level: 600, "server_error")
        own_server.stop()
        assert store.fail_breaker(failure)[1] == 1  # on the local breakers
        assert store.falling_back
        own_server.start()
        assert store.states(["sim/a"])["sim/a"].failures == 1  # still local: not retried yet
        ticks[0] += RETRY_S
        assert store.states(["sim/a"])["sim/a"].failures == 0  # the server's view again
        assert not store.falling_back
        assert store.fail_breaker(failure)[1] == 1
        backend = open_backend(config.state)
        assert backend.states(["sim/a"])["sim/a"].failures == 1
        backend.close()
    finally:
        store.close()
