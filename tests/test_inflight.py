"""The in-flight log on real files: prompts written ahead by one process, seen as running by
others while it lives, saved as files once it died (once, never twice), kept small by
compaction and rotation, and private to the owner."""

from __future__ import annotations

import gc
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llm_cascade import inflight
from llm_cascade.failures import FailureStore, InflightPrompt
from llm_cascade.types import Conversation

T0 = 1_767_225_600.0


def prompt(text: str) -> Conversation:
    return Conversation.single_user_prompt(text)


def asked(folder: Path) -> list[tuple[str, str]]:
    """(status, question) of every prompt `failed list` shows, in its order."""
    return [
        (s.status, s.conversation().messages[0].content)  # type: ignore[misc]
        for s in FailureStore(folder).list()
    ]


def logs(folder: Path) -> list[Path]:
    return sorted((folder / inflight.FOLDER).glob(f"*{inflight.SUFFIX}"))


def in_child(folder: Path, code: str) -> subprocess.CompletedProcess[bytes]:
    """Run `code` in a new process with `store`, a FailureStore on `folder`, then kill it."""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from llm_cascade.failures import FailureStore\n"
        "from llm_cascade.types import Conversation\n"
        "store = FailureStore(Path(sys.argv[1]))\n"
        f"{code}\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    return done


def test_a_prompt_in_flight_is_running_then_gone_once_answered(tmp_path):
    store = FailureStore(tmp_path)
    held = store.begin("x", prompt("q"), T0)
    assert isinstance(held, InflightPrompt)
    assert asked(tmp_path) == [("running", "q")]
    assert FailureStore(tmp_path).count_waiting() == 0  # running: nobody should retry it
    held.done()
    assert asked(tmp_path) == []
    assert list(tmp_path.glob("*.json")) == []


def test_a_killed_process_leaves_its_open_prompts_for_the_next_reader_once(tmp_path):
    in_child(
        tmp_path,
        "store.begin('x', Conversation.single_user_prompt('lost one'), 1.0)\n"
        "store.begin('x', Conversation.single_user_prompt('answered'), 1.0).done()\n"
        "store.begin('x', Conversation.single_user_prompt('lost two'), 1.0)",
    )
    assert len(logs(tmp_path)) == 1  # nothing read it yet
    assert FailureStore(tmp_path).count_waiting() == 2
    assert logs(tmp_path) == []
    assert sorted(asked(tmp_path)) == [("interrupted", "lost one"), ("interrupted", "lost two")]
    assert len(list(tmp_path.glob("*.json"))) == 2  # a second reader saves nothing again


def test_a_prompt_saved_as_failed_just_before_a_kill_is_not_saved_twice(tmp_path):
    in_child(
        tmp_path,
        "held = store.begin('x', Conversation.single_user_prompt('q'), 1.0)\n"
        "held.envelope.update(status='failed', errors=[])\n"
        "store.write_file(held.envelope, held.saved_at)",  # killed before the end mark
    )
    assert asked(tmp_path) == [("failed", "q")]


def test_a_forked_child_writes_a_log_of_its_own(tmp_path):
    store = FailureStore(tmp_path)
    mine = store.begin("x", prompt("parent"), T0)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        try:
            store.begin("x", prompt("child"), T0)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(child, 0)
    assert len(logs(tmp_path)) == 2
    assert sorted(asked(tmp_path)) == [("interrupted", "child"), ("running", "parent")]
    mine.done()
    assert asked(tmp_path) == [("interrupted", "child")]


def test_an_unsettled_prompt_dropped_by_its_caller_is_saved_as_interrupted(tmp_path):
    store = FailureStore(tmp_path)
    store.begin("x", prompt("dropped"), T0)  # nobody keeps it
    gc.collect()
    assert asked(tmp_path) == [("interrupted", "dropped")]


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_rest_recovered(tmp_path):
    in_child(tmp_path, "store.begin('x', Conversation.single_user_prompt('whole'), 1.0)")
    [log] = logs(tmp_path)
    with log.open("ab") as cut:
        cut.write(b'b 99 1.0 {"cascade_name": "x", "conversa')  # no end of line
    assert asked(tmp_path) == [("interrupted", "whole")]


def test_the_log_is_emptied_when_nothing_is_open(tmp_path, monkeypatch):
    monkeypatch.setattr(inflight, "COMPACT_BYTES", 4096)
    store = FailureStore(tmp_path)
    for i in range(200):
        store.begin("x", prompt(f"question {i}"), T0).done()
    [log] = logs(tmp_path)
    assert log.stat().st_size < 4096
    assert asked(tmp_path) == []


def test_a_log_never_idle_is_rotated_and_keeps_its_open_prompts(tmp_path, monkeypatch):
    monkeypatch.setattr(inflight, "COMPACT_BYTES", 1024)
    monkeypatch.setattr(inflight, "ROTATE_BYTES", 8192)
    store = FailureStore(tmp_path)
    kept = store.begin("x", prompt("long call"), T0)
    first = logs(tmp_path)
    for i in range(200):
        store.begin("x", prompt(f"question {i}"), T0).done()
    [log] = logs(tmp_path)
    assert log != first[0] and log.stat().st_size < 8192
    assert asked(tmp_path) == [("running", "long call")]
    kept.done()
    assert asked(tmp_path) == []


def test_the_folder_and_its_logs_are_owner_only(tmp_path):
    os.umask(0)
    try:
        held = FailureStore(tmp_path / "failed").begin("x", prompt("q"), T0)
    finally:
        os.umask(0o022)
    [log] = logs(tmp_path / "failed")
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    held.done()


@pytest.mark.parametrize("blocker", ["file", "fifo"])
def test_an_inflight_name_taken_by_something_else_falls_back_to_a_file(tmp_path, blocker):
    folder = tmp_path / "failed"
    folder.mkdir(mode=0o700)
    if blocker == "file":
        (folder / inflight.FOLDER).write_text("not a folder")
    else:
        os.mkfifo(folder / inflight.FOLDER)
    held = FailureStore(folder).begin("x", prompt("q"), T0)
    assert asked(folder) == [("running", "q")]
    held.done()
    assert asked(folder) == []


def test_a_forked_child_that_drops_the_parents_prompt_saves_no_copy_of_it(tmp_path):
    store = FailureStore(tmp_path)
    held = store.begin("x", prompt("parent's"), T0)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        try:
            del held  # the child's copy of the parent's run goes away, unsettled
            gc.collect()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert asked(tmp_path) == [("running", "parent's")]  # no waiting copy to send twice
    held.done()
    assert asked(tmp_path) == []


def test_a_symlink_planted_as_a_log_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b'b 1 1.0 {"cascade_name": "x", "status": "pending"}\n')
    folder = tmp_path / "failed"
    FailureStore(folder).begin("x", prompt("q"), T0).done()  # makes the folders
    (folder / inflight.FOLDER / "1-planted.log").symlink_to(outside)
    assert FailureStore(folder).list() == []  # nothing read from outside the folder
    assert list(folder.glob("*.json")) == []
    assert outside.exists()


def test_a_line_cut_by_a_full_disk_does_not_swallow_the_next_prompt(tmp_path):
    in_child(
        tmp_path,
        "import resource\n"
        "log = store.inflight_log\n"
        "store.begin('x', Conversation.single_user_prompt('first'), 1.0).done()\n"
        "limit = os.fstat(log._fd).st_size + 40\n"  # the next line is cut at 40 bytes
        "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    log.begin(b'{' + b' ' * 80 + b'}', 1.0)\n"
        "    sys.exit('the begin was not cut')\n"
        "except OSError:\n"
        "    pass\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)\n"  # space again
        "held = store.begin('x', Conversation.single_user_prompt('second'), 1.0)",
    )
    assert asked(tmp_path) == [("interrupted", "second")]
