"""Failed prompts on disk: unique names, atomic private files, and the
pending/running/interrupted life cycle that `failed list/retry` rely on."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_cascade import inflight
from llm_cascade.errors import UsageError
from llm_cascade.failures import FailureStore, sanitize_name
from llm_cascade.types import Conversation

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: 2025-12-31 19:00 in New York
NAME = re.compile(r"^(?P<cascade>.+)_(?P<stamp>\d{8}_\d{6})_(?P<hex>[0-9a-f]+)\.json$")


def prompt(text: str = "keep me") -> Conversation:
    return Conversation.single_user_prompt(text)


def leftovers(folder: Path) -> list[str]:
    """Names that are neither saved prompts nor in-flight logs (temp files, say)."""
    logs = folder / inflight.FOLDER
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if not NAME.match(p.name) and p != logs and not (p.parent == logs and p.suffix == ".log")
    )


@pytest.fixture
def local_time_behind_utc() -> Iterator[None]:
    """A local time zone five hours behind UTC, so a local-time file name would show."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "EST5"  # POSIX form: needs no tz database
    time.tzset()
    try:
        assert time.localtime(T0).tm_hour == 19
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.fixture
def failures(tmp_path: Path) -> FailureStore:
    return FailureStore(tmp_path / "failed")


# --- names and files -------------------------------------------------------------------------


def test_file_name_is_cascade_utc_stamp_and_hex(failures, local_time_behind_utc):
    path = failures.save("creative_task", prompt(), T0)
    match = NAME.match(path.name)
    assert match, path.name
    assert match["cascade"] == "creative_task"
    assert match["stamp"] == "20260101_000000"  # UTC, not New York's 20251231_190000
    assert len(match["hex"]) >= 6
    assert path.is_absolute() and path.parent == failures.dir


def test_envelope_starts_with_the_originals_keys(failures):
    path = failures.save("x", prompt("hello"), T0 + 0.25, errors=[{"entry": "a/m"}])
    envelope = json.loads(path.read_text())
    assert list(envelope)[:3] == ["cascade_name", "timestamp", "conversation"]
    assert envelope["timestamp"] == "2026-01-01T00:00:00.250000+00:00"
    assert envelope["conversation"] == {"messages": [{"role": "user", "content": "hello"}]}
    assert (envelope["status"], envelope["errors"]) == ("failed", [{"entry": "a/m"}])


def test_saves_in_the_same_second_never_overwrite_each_other(failures):
    paths = [failures.save("x", prompt(f"prompt {i}"), T0) for i in range(40)]
    assert len(set(paths)) == 40
    texts = {json.loads(p.read_text())["conversation"]["messages"][0]["content"] for p in paths}
    assert texts == {f"prompt {i}" for i in range(40)}


def test_saves_from_many_threads_at_once_are_all_kept(failures):
    start = threading.Barrier(8)
    saved: list[Path] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        start.wait()
        for i in range(15):
            path = failures.save("x", prompt(f"{n}-{i}"), T0)
            with lock:
                saved.append(path)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    files = sorted(failures.dir.glob("*.json"))
    assert len(files) == len(set(saved)) == 120
    contents = {json.loads(p.read_text())["conversation"]["messages"][0]["content"] for p in files}
    assert contents == {f"{n}-{i}" for n in range(8) for i in range(15)}
    assert leftovers(failures.dir) == []


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("../../x", "_.._x"),
        ("a/b c", "a_b_c"),
        ("..", "cascade"),
        ("", "cascade"),
        (".hidden", "hidden"),
        ("día", "d_a"),
        ("ok-name_1.2", "ok-name_1.2"),
    ],
)
def test_cascade_names_are_sanitised(name, clean):
    assert sanitize_name(name) == clean


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "..", "a/../../b", "x\x00y"])
def test_a_hostile_cascade_name_stays_inside_the_directory(tmp_path, name):
    failures = FailureStore(tmp_path / "deep" / "failed")
    path = failures.save(name, prompt(), T0)
    assert path.parent == failures.dir
    assert path.resolve().parent == failures.dir.resolve()
    assert not path.name.startswith(".")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [path.name]
    assert json.loads(path.read_text())["cascade_name"] == name  # the envelope keeps the truth


def test_a_long_cascade_name_is_cut(failures):
    path = failures.save("n" * 500, prompt(), T0)
    assert len(path.name) < 100


def test_files_are_0600_and_new_directories_0700(tmp_path):
    failures = FailureStore(tmp_path / "a" / "b")
    saved = failures.save("x", prompt(), T0)
    pending = failures.begin("x", prompt(), T0)
    rewritten = pending.finish("failed", [])
    for path in (saved, rewritten):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_no_temporary_files_are_left_behind(failures):
    failures.save("x", prompt("1"), T0)
    failures.begin("x", prompt("2"), T0).finish("failed", [{"entry": "a/m"}])
    failures.begin("x", prompt("3"), T0).done()
    kept = failures.begin("x", prompt("4"), T0)
    assert leftovers(failures.dir) == []
    kept.done()
    assert len(list(failures.dir.glob("*.json"))) == 2


# --- pending, running, interrupted -----------------------------------------------------------


def test_a_run_in_progress_is_listed_as_running(failures):
    pending = failures.begin("x", prompt(), T0, run_id="r1")
    [saved] = failures.list()
    assert saved.path.parent == failures.dir
    assert saved.envelope["status"] == "pending"
    assert saved.envelope["run_id"] == "r1"
    assert saved.in_flight and saved.status == "running"
    pending.done()
    assert failures.list() == []


def test_finish_rewrites_the_file_with_its_status_and_errors(failures):
    pending = failures.begin("x", prompt(), T0)
    path = pending.finish("failed", [{"entry": "a/m", "status": 503}])
    [saved] = failures.list()
    assert saved.path == path
    assert (saved.status, saved.in_flight) == ("failed", False)
    assert saved.errors == [{"entry": "a/m", "status": 503}]
    assert saved.conversation() == prompt()


CRASHING_RUN = """
import os, signal, sys
from pathlib import Path
from llm_cascade.failures import FailureStore
from llm_cascade.types import Conversation
pending = FailureStore(Path(sys.argv[1])).begin("x", Conversation.single_user_prompt("lost?"), 0.0)
os.kill(os.getpid(), signal.SIGKILL)
"""  # ...killed before done() or finish()


def test_a_pending_file_whose_run_is_gone_is_interrupted(failures):
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, str(failures.dir)],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == -signal.SIGKILL
    [saved] = failures.list()  # the dead process's in-flight prompt, saved as a file
    assert saved.path.is_file() and saved.path.parent == failures.dir
    assert list((failures.dir / inflight.FOLDER).iterdir()) == []  # its log is gone
    assert saved.envelope["status"] == "pending"
    assert (saved.in_flight, saved.status) == (False, "interrupted")
    assert saved.conversation() == prompt("lost?")


def test_claim_refuses_a_file_another_run_holds(failures):
    pending = failures.begin("x", prompt(), T0)
    [saved] = failures.list()
    assert failures.claim(saved) is None
    pending.done()


def test_claim_locks_an_idle_file_and_counts_the_retry(failures):
    path = failures.save("x", prompt(), T0)
    [saved] = failures.list()
    claimed = failures.claim(saved)
    assert claimed is not None and claimed.path == path
    assert claimed.envelope["retries"] == 1
    [during] = failures.list()
    assert during.status == "running"
    assert failures.claim(during) is None  # a second retry must not run it twice

    claimed.finish("failed", [])
    [after] = failures.list()
    assert (after.status, after.envelope["retries"]) == ("failed", 1)
    again = failures.claim(after)
    assert again is not None and again.envelope["retries"] == 2
    again.done()
    assert not path.exists()


def test_claim_of_a_file_that_is_gone_is_none(failures):
    failures.save("x", prompt(), T0)
    [saved] = failures.list()
    saved.path.unlink()
    assert failures.claim(saved) is None


def test_files_that_are_not_saved_prompts_are_skipped(failures):
    good = failures.save("x", prompt(), T0)
    (failures.dir / "broken.json").write_text("{not json")
    (failures.dir / "other.json").write_text('{"hello": 1}')
    (failures.dir / "list.json").write_text("[1, 2]")
    (failures.dir / "notes.txt").write_text("hi")
    assert [s.path for s in failures.list()] == [good]


def test_list_of_a_missing_directory_is_empty(tmp_path):
    assert FailureStore(tmp_path / "nowhere").list() == []


def test_list_survives_files_that_vanish_while_it_runs(failures):
    # Every successful run creates a pending file and deletes it: `failed list` must not
    # trip over one that disappears between the directory scan and reading it.
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            failures.begin("busy", prompt(), T0).done()

    kept = failures.save("kept", prompt(), T0)
    workers = [threading.Thread(target=churn) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(1500):
            assert kept in [s.path for s in failures.list()]
    finally:
        stop.set()
        for worker in workers:
            worker.join()


# --- find ------------------------------------------------------------------------------------


@pytest.fixture
def three(failures):
    return [failures.save(name, prompt(name), T0) for name in ("alpha", "beta", "beta")]


def test_find_by_id_file_name_and_path(failures, three):
    alpha = three[0]
    assert failures.find(alpha.stem).path == alpha
    assert failures.find(alpha.name).path == alpha
    assert failures.find(str(alpha)).path == alpha


def test_find_by_unique_prefix_or_suffix(failures, three):
    alpha, beta, _ = three
    assert failures.find("alph").path == alpha
    hex_suffix = NAME.match(beta.name)["hex"]  # type: ignore[index]
    assert failures.find(hex_suffix).path == beta


def test_an_ambiguous_id_is_a_usage_error(failures, three):
    with pytest.raises(UsageError, match=r"'beta' matches 2 saved prompts; give more of the id"):
        failures.find("beta")


def test_an_unknown_id_is_a_usage_error_that_says_where_it_looked(failures, three):
    with pytest.raises(UsageError, match=r"no saved prompt 'gamma' in .*failed.*failed list"):
        failures.find("gamma")


def test_claim_reads_the_file_as_it_is_now_not_as_it_was_listed(failures):
    failures.save("x", prompt(), T0)
    [listed_early] = failures.list()  # one `failed retry --all` lists the queue...
    [listed] = failures.list()
    first = failures.claim(listed)  # ...another one retries the file meanwhile, in vain
    assert first is not None
    first.finish("failed", [{"entry": "sim/a", "outcome": "failed"}])

    late = failures.claim(listed_early)
    assert late is not None
    assert late.envelope["retries"] == 2
    assert late.envelope["errors"] == [{"entry": "sim/a", "outcome": "failed"}]
    late.finish("failed", [])
    [after] = failures.list()
    assert after.envelope["retries"] == 2
