"""Hostile config, conversation and saved-prompt files, through the installed CLI: each is one
line on stderr and exit 2 (or a skipped file in a listing), never a traceback, a hang or
unbounded memory."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from llm_cascade.cli import failed_cmd
from llm_cascade.errors import UsageError
from llm_cascade.failures import FailureStore
from llm_cascade.simulator import Fail

from .support import SIM_KEY, cli_command, error_line, run_cli, saved_files, write_config

# --- numbers too large to name an instant ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"cooldown": {"long": 1e12}}, "cooldown.long"),
        ({"rules": [{"status": 401, "cooldown": 1e300}]}, "rules[0]"),
    ],
)
def test_a_cooldown_too_long_for_a_timestamp_is_a_config_error(tmp_path, sim, extra, key):
    sim.script("a", Fail(401, "bad key"))  # the long cooldown would be set here
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra=extra)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': {key}: "), done.stderr
    assert "31536000" in done.stderr
    assert error_line(done.stderr)
    assert sim.count() == 0


def test_a_request_timeout_too_long_for_a_probe_lease_is_a_config_error(tmp_path, sim):
    providers: dict[str, Any] = {"slow": {"type": "openai", "timeout": 1e300}}
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, providers=providers)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': providers.slow.timeout: "), done.stderr


# --- nesting that a recursive walk cannot survive --------------------------------------------


def test_tool_parameters_nested_965_deep_are_a_usage_error_naming_the_path(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    parameters = '{"a": ' * 965 + "1" + "}" * 965  # json.loads reads it; json.dumps cannot
    conv = tmp_path / "deep.json"
    conv.write_text(
        '{"messages": [{"role": "user", "content": "hi"}],'
        f' "tools": [{{"name": "t", "parameters": {parameters}}}]}}'
    )
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-f", str(conv))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        f"Error: parsing conversation JSON from '{conv}': $.tools[0].parameters.a"
    ), done.stderr
    assert "nested more than 64 levels deep" in done.stderr
    assert error_line(done.stderr)
    assert sim.count() == 0


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("extra." + ".".join(["a"] * 500) + " = 1", "providers.sim.extra.a.a.a…"),
        ("headers." + ".".join(["a"] * 500) + " = 1", "providers.sim.headers.a.a.a…"),
    ],
)
def test_a_config_table_nested_500_deep_is_a_config_error(tmp_path, sim, line, key):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    text = cfg.read_text().replace('api_key_env = "SIM_KEY"', f'api_key_env = "SIM_KEY"\n{line}')
    cfg.write_text(text)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': {key}: nested more than 64 levels"), done.stderr
    assert error_line(done.stderr)
    assert sim.count() == 0


# --- base URLs that only fail inside the HTTP client -----------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "BASE\n",  # pasted with its line end
        "https://user:tok-secret@xn--a.com/v1",
        "https://" + "a" * 64 + ".com/v1",
        "https://ex\u00e4mple\u200d.com/v1",
    ],
    ids=["newline", "bad-a-label", "long-label", "idna-refused"],
)
def test_a_base_url_the_http_client_would_refuse_is_a_config_error(tmp_path, sim, url):
    url = url.replace("BASE", sim.base_url("openai"))
    providers = {"sim": {"type": "openai", "base_url": url, "api_key_env": "SIM_KEY"}}
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, providers=providers)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': providers.sim.base_url: "), done.stderr
    assert error_line(done.stderr)
    assert "tok-secret" not in done.stderr
    assert sim.count() == 0


# --- files that never end, or never start ----------------------------------------------------

CONVERSATION = '{"messages": [{"role": "user", "content": "from a pipe"}]}'
QUICK = {"LLM_CASCADE_PIPE_TIMEOUT": "0.5"}  # a FIFO nobody writes to gives up after this


def run_with_stdin(args: list[str], stdin: Any) -> subprocess.CompletedProcess[str]:
    """Like run_cli, with a file (a device, a big file) as stdin."""
    done = subprocess.run(
        [*cli_command(), *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "SIM_KEY": SIM_KEY},
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def bash(script: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`script` in bash (for <(...), <&- and pipes); `{cli}` in it is the installed CLI."""
    done = subprocess.run(
        ["bash", "-c", script.replace("{cli}", shlex.join(cli_command()))],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "SIM_KEY": SIM_KEY},
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_config_that_never_ends_is_refused_at_the_size_limit(tmp_path):
    done = run_cli("run", "-C", "x", "-c", "/dev/zero", "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "Error: Failed to read config file '/dev/zero': larger than the 1 MiB limit\n"
    )


def test_a_config_over_the_size_limit_is_refused(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    cfg.write_text(cfg.read_text() + "#" * (1 << 20) + "\n")
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert "larger than the 1 MiB limit" in done.stderr
    assert sim.count() == 0


def test_a_conversation_that_never_ends_is_refused_at_the_size_limit(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-f", "/dev/zero")
    assert done.returncode == 2, done.stderr
    assert (
        error_line(done.stderr) == "Error: reading file '/dev/zero': larger than the 16 MiB limit"
    )
    with open("/dev/zero", "rb") as zeros:
        piped = run_with_stdin(["run", "-C", "x", "-c", str(cfg), "-f", "-"], zeros)
    assert piped.returncode == 2, piped.stderr
    assert "stdin: larger than the 16 MiB limit" in piped.stderr
    assert sim.count() == 0


def test_a_prompt_on_stdin_over_the_size_limit_is_refused(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (16 << 20) + b"!")
    for args in ([], ["-p", "-"]):
        with big.open("rb") as stdin:
            done = run_with_stdin(["run", "-C", "x", "-c", str(cfg), *args], stdin)
        assert done.returncode == 2, done.stderr
        assert "stdin: larger than the 16 MiB limit" in done.stderr
    assert sim.count() == 0


@pytest.mark.parametrize("flag", ["-c", "-f"])
def test_a_fifo_nobody_writes_to_is_refused_after_a_time_limit(tmp_path, sim, flag):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = ["-c", str(fifo), "-p", "hi"] if flag == "-c" else ["-c", str(cfg), "-f", str(fifo)]
    done = run_cli("run", "-C", "x", *args, env=QUICK, timeout=20)
    assert done.returncode == 2, done.stderr
    assert "nothing arrived for 0.5 s (a FIFO nobody writes to?)" in done.stderr
    assert error_line(done.stderr)
    assert sim.count() == 0


def test_a_fifo_someone_writes_to_is_read(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    config_fifo, conversation_fifo = tmp_path / "config.fifo", tmp_path / "conv.fifo"
    os.mkfifo(config_fifo)
    os.mkfifo(conversation_fifo)

    def write(fifo: Path, text: str) -> None:
        with fifo.open("w") as out:  # opening blocks until the CLI opens it to read
            out.write(text)

    writers = [
        threading.Thread(target=write, args=(config_fifo, cfg.read_text()), daemon=True),
        threading.Thread(target=write, args=(conversation_fifo, CONVERSATION), daemon=True),
    ]
    for writer in writers:
        writer.start()
    done = run_cli("run", "-C", "x", "-c", str(config_fifo), "-f", str(conversation_fifo))
    assert done.returncode == 0, done.stderr
    assert sim.requests[-1].body["messages"][-1]["content"] == "from a pipe"


@pytest.mark.parametrize(
    "file_arg", ["<(cat conv.json)", "/dev/stdin < conv.json", "- < conv.json", "/dev/stdin"]
)
def test_process_substitution_and_dev_stdin_still_work(tmp_path, sim, file_arg):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    (tmp_path / "conv.json").write_text(CONVERSATION)
    pipe = "cat conv.json | " if file_arg == "/dev/stdin" else ""
    done = bash(f"{pipe}{{cli}} run -C x -c {shlex.quote(str(cfg))} -f {file_arg}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert sim.requests[-1].body["messages"][-1]["content"] == "from a pipe"


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "no prompt: give it as an argument or with -p TEXT"), (["-f", "-"], "cannot read stdin")],
)
def test_a_closed_stdin_is_a_usage_error(tmp_path, sim, args, message):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = bash(f"{{cli}} run -C x -c {shlex.quote(str(cfg))} {' '.join(args)} <&-")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and error_line(done.stderr)


# --- files in the failed-prompts folder that are not saved prompts ---------------------------


def _plant_traps(folder: Path) -> dict[str, str]:
    """A FIFO, a link to /dev/zero and a sparse 65 MiB file, named like saved prompts."""
    fifo, zero, huge = (f"x_20200101_00000{i}_{name}" for i, name in enumerate(("ff", "z", "b")))
    os.mkfifo(folder / f"{fifo}.json")
    (folder / f"{zero}.json").symlink_to("/dev/zero")
    with (folder / f"{huge}.json").open("wb") as out:
        out.truncate(65 << 20)
    return {fifo: "not a regular file", zero: "not a regular file", huge: "larger than the 64 MiB"}


def test_failed_list_show_and_retry_skip_fifos_devices_and_huge_files(tmp_path, sim):
    sim.script("a", Fail(400, "not now"))  # saved, and no cooldown to wait out for the retry
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "keep me").returncode == 1
    [real] = (tmp_path / "failed").glob("*.json")
    traps = _plant_traps(tmp_path / "failed")

    listed = run_cli("failed", "list", "--json", "-c", str(cfg), timeout=20)
    assert listed.returncode == 0, listed.stderr
    assert [e["id"] for e in json.loads(listed.stdout)] == [real.stem]
    for name, reason in traps.items():
        assert f"skipped {name}.json: {reason}" in listed.stderr

    table = run_cli("failed", "list", "-c", str(cfg), timeout=20)
    assert table.returncode == 0 and real.stem in table.stdout

    shown = run_cli("failed", "show", real.stem, "-c", str(cfg), timeout=20)
    assert shown.returncode == 0 and "keep me" in shown.stdout
    for name in traps:
        refused = run_cli("failed", "show", name, "-c", str(cfg), timeout=20)
        assert refused.returncode == 2 and f"no saved prompt '{name}'" in refused.stderr

    sim.script("a")  # answers again
    retried = run_cli("failed", "retry", "--all", "-c", str(cfg), timeout=20)
    assert retried.returncode == 0, retried.stderr
    assert "Retried 1: 1 answered" in retried.stderr
    assert not real.exists()


# --- saved prompts with wrong-typed fields ---------------------------------------------------


def _saved_by_hand(folder: Path, name: str, envelope: dict[str, Any]) -> Path:
    path = folder / f"x_20200101_000000_{name}.json"
    path.write_text(json.dumps(envelope))
    return path


def test_a_saved_prompt_whose_errors_are_not_objects_breaks_no_listing(tmp_path, sim):
    sim.script("a", Fail(400, "not now"))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "keep me").returncode == 1
    [real] = (tmp_path / "failed").glob("*.json")
    odd = json.loads(real.read_text())
    odd["errors"] = [1, "x", None]
    odd_path = _saved_by_hand(tmp_path / "failed", "odd", odd)

    listed = run_cli("failed", "list", "-c", str(cfg))
    assert listed.returncode == 0, listed.stderr
    assert real.stem in listed.stdout and odd_path.stem in listed.stdout
    as_json = run_cli("failed", "list", "--json", "-c", str(cfg))
    assert as_json.returncode == 0, as_json.stderr
    [odd_summary] = [e for e in json.loads(as_json.stdout) if e["id"] == odd_path.stem]
    assert odd_summary["errors"] == [{"detail": "x"}]
    for ident in (real.stem, odd_path.stem):
        shown = run_cli("failed", "show", ident, "-c", str(cfg))
        assert shown.returncode == 0, shown.stderr
        assert "keep me" in shown.stdout


def test_a_saved_prompt_nested_too_deeply_or_not_unicode_is_skipped_not_a_crash(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    folder = tmp_path / "failed"
    folder.mkdir()
    conversation = {"messages": [{"role": "user", "content": "hi"}]}
    good = _saved_by_hand(folder, "good", {"cascade_name": "x", "conversation": conversation})
    deep = '{"a": ' * 500 + "1" + "}" * 500  # json.loads reads it; json.dumps(indent=2) cannot
    (folder / "x_20200101_000000_deep.json").write_text(
        f'{{"cascade_name": "x", "conversation": {json.dumps(conversation)}, "errors": [{deep}]}}'
    )
    _saved_by_hand(folder, "lone", {"cascade_name": "x\ud800", "conversation": conversation})
    for args in (["failed", "list"], ["failed", "list", "--json"]):
        done = run_cli(*args, "-c", str(cfg))
        assert done.returncode == 0, done.stderr
        assert good.stem in done.stdout
        assert "deep" not in done.stdout and "lone" not in done.stdout
        assert "skipped x_20200101_000000_deep.json: nested more than" in done.stderr
        assert "skipped x_20200101_000000_lone.json: holds text that is not" in done.stderr


FULL_ENVELOPE: dict[str, Any] = {
    "cascade_name": "x",
    "timestamp": "2026-01-01T00:00:00.000000+00:00",
    "conversation": {"messages": [{"role": "user", "content": "hi"}]},
    "pid": 123,
    "status": "failed",
    "retries": 2,
    "errors": [{"entry": "sim/a", "outcome": "failed", "detail": "HTTP 500", "status": 500}],
}
HOSTILE_JSON: list[Any] = [
    None,
    True,
    -1,
    1.5,
    1e308,
    "",
    "x" * 5000,
    [],
    [1, "x", None],
    {},
    {"a": [1, {"b": None}]},
    json.loads('{"a": ' * 30 + "1" + "}" * 30),
]


def _envelope_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _envelope_paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _envelope_paths(child, (*path, i))
    return found


def test_saved_prompts_of_any_shape_are_listed_and_shown_never_a_crash(tmp_path, sim, capsys):
    """Property: whatever type each field of a saved prompt has, list and show keep working."""
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    folder = tmp_path / "failed"
    folder.mkdir()
    count = 0
    for path in _envelope_paths(FULL_ENVELOPE):
        for value in HOSTILE_JSON:
            envelope = json.loads(json.dumps(FULL_ENVELOPE))
            node = envelope
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
            _saved_by_hand(folder, f"{count:04d}", envelope)
            count += 1

    for saved in FailureStore(folder).list():
        assert isinstance(saved.cascade_name, str) and isinstance(saved.status, str)
        assert saved.timestamp is None or isinstance(saved.timestamp, str)
        assert isinstance(saved.retries, int) and saved.retries >= 0
        assert all(isinstance(e, dict) for e in saved.errors)
    for args in (["failed", "list"], ["failed", "list", "--json"]):
        done = run_cli(*args, "-c", str(cfg))
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("x_20200101_000000_") >= count
    for saved_file in saved_files(folder):
        for as_json in (False, True):
            # A conversation that is not one is a UsageError: exit 2, one line.
            with contextlib.suppress(UsageError):
                failed_cmd.show(str(saved_file), config=cfg, json_output=as_json)
            capsys.readouterr().out.encode("utf-8")


@pytest.mark.parametrize(
    "model", ["m" * 70_000, "line\nbreak", "nul\u0000"], ids=["long", "nl", "nul"]
)
def test_a_model_id_no_request_can_carry_is_a_config_error(tmp_path, sim, model):
    providers = {
        "g": {"type": "gemini", "base_url": sim.base_url("gemini"), "api_key_env": "SIM_KEY"}
    }
    cfg = write_config(
        tmp_path, sim, {"x": [{"provider": "g", "model": model}]}, providers=providers
    )
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: '{cfg}': cascades.x.entries[0].model: "), done.stderr
    assert error_line(done.stderr)
    assert sim.count() == 0


@pytest.mark.parametrize(("table", "key"), [("database", "path"), ("failure_persistence", "dir")])
def test_a_path_with_a_nul_character_is_a_config_error(tmp_path, sim, table, key):
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra={table: {key: str(tmp_path / "a\0b")}})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"Error: '{cfg}': {table}.{key}: must not contain a NUL character\n"
    assert sim.count() == 0
