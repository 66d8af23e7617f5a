"""Nothing lost, replay, and the single half-open probe, with real processes and signals."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from llm_cascade.config import load_config
from llm_cascade.simulator import Fail, Hang, Reply
from llm_cascade.store import AttemptRecord, Store

from . import support
from .support import SIM_KEY, cli_command, entry, run_cli, write_config


def start_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SIM_KEY": SIM_KEY}
    return subprocess.Popen(
        [*cli_command(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def saved_files(tmp_path: Path) -> list[Path]:
    return support.saved_files(tmp_path / "failed")


def failed_list(cfg: Path) -> list[dict[str, object]]:
    done = run_cli("failed", "list", "--json", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_keeps_the_prompt_and_exits_with_the_signal_code(tmp_path, sim, sig, code):
    sim.script("a", Hang(seconds=60))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    proc = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "interrupted question")
    assert sim.wait_for(1, "a")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert "Traceback" not in stderr
    [path] = saved_files(tmp_path)
    assert f"interrupted; the prompt is saved in {path}" in stderr
    envelope = json.loads(path.read_text())
    assert envelope["status"] == "interrupted"
    assert envelope["conversation"]["messages"][0]["content"] == "interrupted question"


def test_kill_9_leaves_the_prompt_and_failed_retry_answers_it(tmp_path, sim):
    sim.script("a", Hang(seconds=60))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    proc = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "survive kill -9")

    assert sim.wait_for(1, "a")
    [running] = failed_list(cfg)
    assert running["status"] == "running"  # its process still holds the lock
    assert run_cli("failed", "retry", "--all", "-c", str(cfg)).returncode == 0
    assert sim.count("a") == 1  # a running prompt is never replayed

    proc.kill()
    proc.communicate(timeout=30)
    [entry] = failed_list(cfg)
    assert entry["status"] == "interrupted"
    path = Path(str(entry["path"]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    sim.script("a", Reply("answered after the crash"))
    done = run_cli("failed", "retry", "--all", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "answered after the crash\n"
    assert f"{path.stem}: answered by sim/a" in done.stderr
    assert saved_files(tmp_path) == []
    assert sim.requests[-1].body["messages"] == [{"role": "user", "content": "survive kill -9"}]


def test_failed_list_show_and_retry_with_another_cascade(tmp_path, sim):
    sim.script("a", Fail(500, "down"))
    sim.script("b", Reply("from the other cascade"))
    cfg = write_config(tmp_path, sim, {"x": ["a"], "y": ["b"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "replay me").returncode == 1
    [entry] = failed_list(cfg)
    assert (entry["cascade"], entry["status"], entry["retries"]) == ("x", "failed", 0)
    assert entry["errors"][0]["rule"] == "server_error"

    table = run_cli("failed", "list", "-c", str(cfg)).stdout
    assert entry["id"] in table and "sim/a: HTTP 500" in table
    shown = run_cli("failed", "show", str(entry["id"])[-6:], "-c", str(cfg))
    assert "user: replay me" in shown.stdout and "sim/a: failed: HTTP 500" in shown.stdout

    still = run_cli("failed", "retry", str(entry["id"]), "-c", str(cfg))
    assert still.returncode == 1  # cascade x is still down (and cooling): the file stays
    [again] = failed_list(cfg)
    assert again["retries"] == 1

    answers = tmp_path / "answers"
    done = run_cli(
        "failed",
        "retry",
        str(entry["id"]),
        "-C",
        "y",
        "--answers-dir",
        str(answers),
        "-c",
        str(cfg),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from the other cascade\n"
    answer = answers / f"{entry['id']}.json"
    assert stat.S_IMODE(answer.stat().st_mode) == 0o600
    assert json.loads(answer.read_text())["result"]["text"] == "from the other cascade"
    assert failed_list(cfg) == []


def test_files_written_by_the_original_load_and_replay(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"creative_task": ["a"]})
    folder = tmp_path / "failed"
    folder.mkdir()
    original = {
        "cascade_name": "creative_task",
        "timestamp": "2026-04-14T12:15:02.123456789+02:00",
        "conversation": {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather in Tokyo?"},
            ]
        },
    }
    (folder / "creative_task_20260414_121502.json").write_text(json.dumps(original, indent=2))
    [entry] = failed_list(cfg)
    assert entry["status"] == "failed"
    done = run_cli("failed", "retry", "creative_task_20260414_121502", "--json", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert sim.requests[0].body["messages"][0] == {"role": "system", "content": "You are terse."}


def test_failed_rm_and_usage_errors(tmp_path, sim):
    sim.script("a", Fail(500))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    run_cli("run", "-C", "x", "-c", str(cfg), "-p", "one")
    assert run_cli("failed", "retry", "-c", str(cfg)).returncode == 2
    missing = run_cli("failed", "show", "nope", "-c", str(cfg))
    assert missing.returncode == 2 and "no saved prompt 'nope'" in missing.stderr
    assert run_cli("failed", "rm", "--all", "-c", str(cfg)).returncode == 0
    assert saved_files(tmp_path) == []


def assert_one_probe(sim, procs: list[subprocess.Popen[str]]) -> None:
    """Of six runs started on a half-open `a` (held) with `b` behind it: one probed a, while
    five skipped it for b; then each got its answer."""
    assert sim.wait_for(5, "b", timeout=120)  # five processes skipped the probing entry...
    assert sim.count("a") == 1  # ...and only one request reached the recovering provider
    sim.release()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert sim.count("a") == 1
    assert sorted(outputs) == ["fallback\n"] * 5 + ["probe answered\n"]
    assert all(p.returncode == 0 for p in procs)


def test_one_probe_reaches_a_recovering_provider_from_many_processes(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    config = load_config(cfg)
    with Store(config.database_path) as store:  # a failure whose 30 s cooldown is over
        store.record_failure(
            AttemptRecord("x", "sim/a", 500, 3, outcome="failed"), time.time() - 100, lambda _: 30
        )
    sim.script("a", Reply("probe answered", hold=True))
    sim.script("b", Reply("fallback"))
    procs = [start_cli("run", "-C", "x", "-c", str(cfg), "-p", f"p{i}") for i in range(6)]

    assert_one_probe(sim, procs)
    with Store(config.database_path) as store:
        assert store.states(["sim/a"])["sim/a"].failures == 0  # the probe closed the breaker


def _two_saved_prompts(tmp_path: Path, sim) -> tuple[Path, list[dict[str, object]]]:
    sim.script("a", Fail(500, "down"))
    cfg = write_config(tmp_path, sim, {"x": ["a"], "y": ["b"]})
    for prompt in ("first", "second"):
        assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", prompt).returncode == 1
    return cfg, failed_list(cfg)


def test_failed_retry_refuses_an_answers_dir_it_cannot_use_before_sending(tmp_path, sim):
    cfg, saved = _two_saved_prompts(tmp_path, sim)
    not_a_dir = tmp_path / "answers"
    not_a_dir.write_text("a file")
    done = run_cli(
        "failed", "retry", "--all", "-C", "y", "--answers-dir", str(not_a_dir), "-c", str(cfg)
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: --answers-dir: cannot use '{not_a_dir}'")
    assert sim.count("b") == 0
    assert [e["id"] for e in failed_list(cfg)] == [e["id"] for e in saved]


def test_an_answer_that_cannot_be_kept_keeps_its_prompt_and_the_queue_goes_on(tmp_path, sim):
    cfg, saved = _two_saved_prompts(tmp_path, sim)
    answers = tmp_path / "answers"
    (answers / f"{saved[0]['id']}.json").mkdir(parents=True)  # the answer file cannot be made
    done = run_cli(
        "failed", "retry", "--all", "-C", "y", "--answers-dir", str(answers), "-c", str(cfg)
    )
    assert done.returncode == 1
    assert "internal error" not in done.stderr
    assert sim.count("b") == 2  # the second prompt was still sent
    assert (answers / f"{saved[1]['id']}.json").is_file()
    [kept] = failed_list(cfg)
    path = Path(str(kept["path"]))
    assert f"the prompt and the answer are kept in {path}" in done.stderr
    envelope = json.loads(path.read_text())
    assert envelope["conversation"]["messages"] == [{"role": "user", "content": "first"}]
    assert envelope["status"] == "undelivered"
    assert envelope["answer"]["entry"] == "sim/b"  # the answer it paid for is not lost
    assert "Is a directory" in envelope["errors"][-1]["detail"]


def test_one_unreadable_saved_prompt_does_not_block_the_queue(tmp_path, sim):
    cfg, saved = _two_saved_prompts(tmp_path, sim)
    broken = Path(str(saved[0]["path"]))
    envelope = json.loads(broken.read_text())
    envelope["conversation"]["messages"][0]["role"] = "robot"  # edited by hand
    broken.write_text(json.dumps(envelope))
    os.utime(broken, (1, 1))  # still the first in the queue
    done = run_cli("failed", "retry", "--all", "-C", "y", "-c", str(cfg))
    assert done.returncode == 1
    assert f"{saved[0]['id']}: cannot retry: $.messages[0].role" in done.stderr
    assert sim.count("b") == 1  # the next prompt was answered
    assert done.stdout.startswith("Simulated answer from b: second")
    assert [e["id"] for e in failed_list(cfg)] == [saved[0]["id"]]


def test_a_probe_retried_in_place_keeps_its_lease(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": [entry("sim", "a", retries=1), "b"]})
    config = load_config(cfg)
    with Store(config.database_path) as store:  # a failure whose 30 s cooldown is over
        store.record_failure(
            AttemptRecord("x", "sim/a", 500, 3, outcome="failed"), time.time() - 100, lambda _: 30
        )
    sim.script("a", Fail(500, "still warming up"), Reply("probe answered", hold=True))
    sim.script("b", Reply("fallback"))
    prober = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "probe")
    assert sim.wait_for(2, "a")  # its first try failed; its retry is in flight
    others = [start_cli("run", "-C", "x", "-c", str(cfg), "-p", f"p{i}") for i in range(4)]
    assert sim.wait_for(2 + 4, timeout=120)  # every process has sent its request
    assert sim.count("a") == 2  # the others kept skipping the entry being probed
    sim.release()
    assert prober.communicate(timeout=60)[0] == "probe answered\n"
    assert [p.communicate(timeout=60)[0] for p in others] == ["fallback\n"] * 4


def test_an_answer_to_an_older_request_does_not_end_a_newer_cooldown(tmp_path, sim):
    sim.script("a", Reply("slow answer", hold=True), Fail(429, retry_after="600"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]})
    slow = start_cli("run", "-C", "x", "-c", str(cfg), "-p", "sent first")
    assert sim.wait_for(1, "a")
    limited = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "sent second")
    assert limited.returncode == 0  # 429 with Retry-After: 600, then b answered
    sim.release()
    assert slow.communicate(timeout=60)[0] == "slow answer\n"
    status = json.loads(run_cli("status", "--json", "-c", str(cfg)).stdout)
    [a] = [s for s in status if s["entry"] == "sim/a"]
    assert a["state"] == "open" and a["retry_after"] > 500  # the rate limit still holds


def test_a_saved_prompt_with_no_messages_does_not_block_the_queue(tmp_path, sim):
    cfg, _ = _two_saved_prompts(tmp_path, sim)
    empty = {
        "cascade_name": "x",
        "timestamp": "2026-04-14T12:15:02+02:00",
        "conversation": {"messages": []},
    }  # the original saved these too
    path = tmp_path / "failed" / "x_20260414_121502.json"
    path.write_text(json.dumps(empty))
    os.utime(path, (1, 1))  # first in the queue
    done = run_cli("failed", "retry", "--all", "-C", "y", "-c", str(cfg))
    assert done.returncode == 1, done.stderr
    assert "x_20260414_121502: cannot retry" in done.stderr
    assert sim.count("b") == 2
    assert [e["id"] for e in failed_list(cfg)] == ["x_20260414_121502"]


def test_a_prompt_of_a_cascade_no_longer_configured_does_not_block_the_queue(tmp_path, sim):
    sim.script("a", Fail(500, "down"))
    old = write_config(tmp_path, sim, {"gone": ["a"], "x": ["a"]}, name="old.toml")
    assert run_cli("run", "-C", "gone", "-c", str(old), "-p", "from a removed cascade").returncode
    assert run_cli("run", "-C", "x", "-c", str(old), "-p", "still routable").returncode
    sim.script("a", Reply("back"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})  # same folders, cascade 'gone' removed
    assert run_cli("reset", "--all", "-c", str(cfg)).returncode == 0
    done = run_cli("failed", "retry", "--all", "-c", str(cfg))
    assert done.returncode == 1, done.stderr
    assert "cascade 'gone' is not in the config; pass -C/--cascade" in done.stderr
    assert done.stdout == "back\n"
    [left] = failed_list(cfg)
    assert left["cascade"] == "gone"
    named = run_cli("failed", "retry", str(left["id"]), "-c", str(cfg))
    assert named.returncode == 2  # asked for by id: a usage error, as before
