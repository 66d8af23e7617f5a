"""Start-up, per-request overhead and failover latency, as ratios to baselines of the same run.

    python bench/bench_cli.py [--runs N] [--peers-venv DIR] [--compare-cli PATH]

Every command is a real process; the simulator runs on 127.0.0.1 in this process. Commands
are timed in rounds (one of each per round) so a change of machine load hits all of them
alike; the table shows medians. Baselines: `python -c "import httpx"` for start-up, and a bare
httpx POST to the same simulator for the in-process cost of one cascade call. Never part of
the test suite; numbers go to bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import llm_cascade
from llm_cascade.cascade import Cascade
from llm_cascade.clock import ManualClock
from llm_cascade.config import load_config
from llm_cascade.simulator import Fail, Reply, Simulator
from llm_cascade.store import AttemptRecord, Store
from llm_cascade.types import Conversation

CLI = str(Path(sys.executable).with_name("llm-cascade"))

CONFIG = """\
keyring = {keyring}
[providers.sim]
type = "openai"
base_url = "{url}"
api_key_env = "BENCH_KEY"

[cascades.one]
entries = [{{ provider = "sim", model = "ok" }}]

[cascades.down]
entries = [{{ provider = "sim", model = "down" }}]

[cascades.failover]
entries = [{{ provider = "sim", model = "down" }}, {{ provider = "sim", model = "ok" }}]

[database]
path = "{dir}/db.sqlite"

[failure_persistence]
dir = "{dir}/failed"
"""


@dataclass
class Case:
    name: str
    command: list[str]
    env: dict[str, str]
    before: Callable[[], None] | None = None
    exit_status: int = 0
    times: list[float] = field(default_factory=list)

    def run_once(self) -> None:
        if self.before:
            self.before()
        start = time.perf_counter()
        done = subprocess.run(  # stdin as for cron: a run with a prompt reads a piped stdin
            self.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.times.append(time.perf_counter() - start)
        if done.returncode != self.exit_status:
            raise SystemExit(f"{self.name}: exit {done.returncode}\n{done.stderr.decode()}")


async def per_request(sim: Simulator, config_path: Path, n: int) -> tuple[float, float]:
    """(bare httpx POST, Cascade.run) median seconds, interleaved, one shared client."""
    config = load_config(config_path)
    body = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": "Bearer bench"}
    url = sim.base_url("openai") + "/chat/completions"
    bare, engine_times = [], []
    async with httpx.AsyncClient() as client:
        with Store(config.database_path) as store:
            engine = Cascade(config, store=store, client=client, clock=ManualClock())
            conversation = Conversation.single_user_prompt("hi")
            for _ in range(n):
                start = time.perf_counter()
                (await client.post(url, json=body, headers=headers)).raise_for_status()
                bare.append(time.perf_counter() - start)
                start = time.perf_counter()
                await engine.run("one", conversation)
                engine_times.append(time.perf_counter() - start)
    return statistics.median(bare), statistics.median(engine_times)


def cases(work: Path, peers: Path | None, other_cli: Path | None = None) -> list[Case]:
    env = {
        **os.environ,
        "BENCH_KEY": "bench-key",
        "LLM_CASCADE_CONFIG": str(work / "config-false.toml"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        # The CLI remembers keyring's backend choice in its data dir: keep that out of $HOME.
        "XDG_DATA_HOME": str(work / "data"),
        "XDG_CONFIG_HOME": str(work / "config"),
    }
    keyring_env = {**env, "LLM_CASCADE_CONFIG": str(work / "config-true.toml")}
    keyring_env.pop("PYTHON_KEYRING_BACKEND")  # let keyring pick its backend, as for a user
    # A headless server: keyring finds no backend (here told so by its own config file).
    headless_env = {**keyring_env, "XDG_CONFIG_HOME": str(work / "headless")}
    rc = work / "headless" / "python_keyring" / "keyringrc.cfg"
    rc.parent.mkdir(parents=True)
    rc.write_text("[backend]\ndefault-keyring=keyring.backends.fail.Keyring\n")
    # No data dir to remember the choice in (a file where it should be): discovery every run.
    (work / "no-data").write_text("")
    discover_env = {**keyring_env, "XDG_DATA_HOME": str(work / "no-data")}

    def closed() -> None:
        with Store(work / "db.sqlite") as store:
            store.clear_cooldowns()

    def cooling() -> None:
        with Store(work / "db.sqlite") as store:
            row = AttemptRecord("bench", "sim/down", 500, 1, outcome="failed")
            store.record_failure(row, time.time(), lambda _level: 3600.0)

    run = [CLI, "run", "-p", "hi", "-C"]
    found = [
        Case("python -c 'import httpx' (baseline)", [sys.executable, "-c", "import httpx"], env),
        Case("python -c 'pass'", [sys.executable, "-c", "pass"], env),
        Case("llm-cascade --version", [CLI, "--version"], env),
        Case("llm-cascade --help", [CLI, "--help"], env),
        Case("llm-cascade run: one entry answers", [*run, "one"], env),
        Case("  same, keyring on (backend remembered)", [*run, "one"], keyring_env),
        Case("  same, keyring on, discovered every run", [*run, "one"], discover_env),
        Case("  same, headless: no keyring backend", [*run, "one"], headless_env),
        Case("llm-cascade run: 500, then failover", [*run, "failover"], env, before=closed),
        Case("llm-cascade run: skip a cooling entry", [*run, "failover"], env, before=cooling),
        Case("llm-cascade run: all cooling, fail fast", [*run, "down"], env, cooling, 1),
    ]
    if other_cli:  # another build (say, the previous commit's venv), timed in the same rounds
        other = str(other_cli)
        found += [
            Case("compare: --version", [other, "--version"], env),
            Case("compare: --help", [other, "--help"], env),
            Case("compare: run, one entry answers", [other, "run", "-p", "hi", "-C", "one"], env),
        ]
    if peers:
        found += [
            Case("peer: llm --version", [str(peers / "bin" / "llm"), "--version"], env),
            Case(
                "peer: python -c 'import litellm'",
                [str(peers / "bin" / "python"), "-c", "import litellm"],
                env,
            ),
        ]
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    parser.add_argument(
        "--peers-venv",
        type=Path,
        help="a venv with `llm` and `litellm` installed, to time their start-up in the same run",
    )
    parser.add_argument(
        "--compare-cli",
        type=Path,
        help="another llm-cascade executable (e.g. a venv of an older commit) to time"
        " --version, --help and a plain run of in the same rounds",
    )
    args = parser.parse_args()
    os.environ["BENCH_KEY"] = "bench-key"
    # Installed packages come with .pyc files; an editable install under
    # PYTHONDONTWRITEBYTECODE would compile every module on every run instead.
    package = Path(llm_cascade.__file__).parent
    compileall.compile_dir(package, quiet=1)
    with tempfile.TemporaryDirectory() as tmp, Simulator() as sim:
        work = Path(tmp)
        sim.script("down", Fail(500))
        sim.script("ok", Reply("fine"))
        for keyring in ("false", "true"):
            text = CONFIG.format(url=sim.base_url("openai"), dir=work, keyring=keyring)
            (work / f"config-{keyring}.toml").write_text(text)
        timed = cases(work, args.peers_venv, args.compare_cli)
        for case in timed:  # warm the OS caches once
            case.run_once()
            case.times.clear()
        for _ in range(args.runs):
            for case in timed:
                case.run_once()
        bare, engine = asyncio.run(per_request(sim, work / "config-false.toml", 300))

    baseline = statistics.median(timed[0].times)
    print(f"{'command':<42} {'median ms':>10} {'x baseline':>11}")
    for case in timed:
        median = statistics.median(case.times)
        print(f"{case.name:<42} {median * 1000:>10.1f} {median / baseline:>11.2f}")
    print()
    print("in-process, one cascade call (median of 300, interleaved, shared client):")
    print(f"  bare httpx POST to the simulator      {bare * 1000:8.2f} ms  (baseline)")
    print(f"  Cascade.run, one entry answers        {engine * 1000:8.2f} ms  x{engine / bare:.2f}")
    print(
        f"  engine overhead per call (SQLite row, prompt file written and removed): "
        f"{(engine - bare) * 1000:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
