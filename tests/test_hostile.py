"""Hostile provider replies and echoed secrets, met the way a user meets them: the installed CLI
against a real loopback server that sends what no vendor should (huge bodies, gzip bombs, lone
surrogates, absurd nesting, terminal escapes, the caller's own secrets sent back)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from keyrings.alt.file import PlaintextKeyring

from llm_cascade import redaction
from llm_cascade.clock import parse_ts
from llm_cascade.config import load_config
from llm_cascade.keys import lookup_for, resolve_key
from llm_cascade.simulator import Fail, Reply, Simulator

from .support import (
    SIM_KEY,
    RawServer,
    cli_command,
    entry,
    run_cli,
    run_in_terminal,
    saved_envelopes,
    write_config,
)

MiB = 1024 * 1024


def openai_reply(content: Any = "from the raw server", **extra: Any) -> bytes:
    """A Chat Completions answer; strings holding lone surrogates go out as `\\udXXX` escapes."""
    message = {"role": "assistant", "content": content, **extra.pop("message", {})}
    data = {"model": "m", "choices": [{"message": message, "finish_reason": "stop"}], **extra}
    return json.dumps(data).encode()


def error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


def raw_then_sim(tmp_path: Path, sim, raw: RawServer, type_: str = "openai", **options: Any):
    """Cascade `x`: `raw/m` on the raw server (with `options`), then `sim/b` on the simulator."""
    base_url = raw.url + ("/v1" if type_ == "openai" else "")
    providers = {"raw": {"type": type_, "base_url": base_url, "api_key_env": "SIM_KEY"}}
    if type_ == "ollama":
        del providers["raw"]["api_key_env"]
    sim.script("b", Reply("from the simulator"))
    return write_config(
        tmp_path, sim, {"x": [entry("raw", "m", **options), "b"]}, providers=providers
    )


def run_json(cfg: Path, *args: str, **kwargs: Any) -> dict[str, Any]:
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--json", *args, **kwargs)
    assert done.stdout, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def attempt_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        return conn.execute(
            "SELECT provider_model, outcome, error_kind, rule, error_message FROM attempt_log"
        ).fetchall()


def saved_prompts(tmp_path: Path) -> list[dict[str, Any]]:
    return saved_envelopes(tmp_path / "failed")


# --- 0. a stream asked for, a whole body sent ----------------------------------------------


def test_a_whole_json_reply_to_a_stream_is_read_whatever_the_case_of_its_media_type(tmp_path, sim):
    """Media types are case-insensitive: `Application/JSON` is JSON, not a broken stream."""
    headers = {"Content-Type": "Application/JSON; charset=UTF-8"}
    with RawServer(openai_reply("whole, not streamed"), headers=headers) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw)
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--stream")
    assert (done.returncode, done.stdout) == (0, "whole, not streamed\n"), done.stderr


# --- 1. response size ------------------------------------------------------------------------


def test_an_oversized_answer_fails_over_and_is_logged(tmp_path, sim):
    with RawServer(openai_reply("x" * (2 * MiB))) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw, max_response_bytes=MiB)
        result = run_json(cfg)
    assert result["ok"] is True and result["entry"] == "sim/b"
    first = result["attempts"][0]
    assert first["rule"] == "response_too_large"
    assert first["detail"].startswith("response larger than 1 MiB")
    # backoff: a broken endpoint is not asked again at once (an RFC 3339 instant, as everywhere)
    assert (parse_ts(first["cooldown_until"]) or 0) > time.time()
    assert attempt_rows(tmp_path)[0][:4] == (
        "raw/m",
        "failed",
        "response_too_large",
        "response_too_large",
    )


def test_an_oversized_error_body_keeps_the_meaning_of_its_status(tmp_path, sim):
    with RawServer(error_body("y" * (2 * MiB)), status=503, headers={"Retry-After": "7"}) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw, max_response_bytes=MiB)
        result = run_json(cfg)
    first = result["attempts"][0]
    assert first["rule"] == "unavailable" and first["status"] == 503
    assert first["detail"] == "HTTP 503: error body larger than 1 MiB"


def gzip_bomb(inflated: int) -> bytes:
    """A valid gzip stream of `inflated` zero bytes (a multiple of 1 MiB) in about 1/1000 the
    size: every 1 MiB of zeros compresses to the same bytes after a full flush."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = packer.compress(bytes(MiB)) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(bytes(MiB)) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.flush()[:-8]  # the final block, without the trailer for 2 MiB
    crc, zeros = 0, bytes(16 * MiB)
    for _ in range(inflated // len(zeros)):
        crc = zlib.crc32(zeros, crc)
    count = inflated // MiB
    return first + block * (count - 1) + end + struct.pack("<II", crc, inflated & 0xFFFFFFFF)


def run_cli_peak_memory(sim: Simulator, *args: str) -> tuple[int, str, str, int]:
    """Run the CLI, whose last request goes to the simulator's model `b` (scripted to hold);
    return its exit status, stdout, stderr and its peak RSS in bytes up to that request.

    The peak is the process's own high-water mark (`VmHWM`, which starts afresh at exec), read
    while `b` holds the reply: `ru_maxrss` would also count the test process's pages that the
    child shared between fork and exec, which grow with every test run before this one.
    """
    with open(os.devnull, "rb") as stdin:
        proc = subprocess.Popen(
            [*cli_command(), *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "SIM_KEY": SIM_KEY},
        )
        try:
            assert sim.wait_for(1, "b"), "the run never asked the fallback entry"
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]
        finally:
            sim.release()
        out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), err.decode(), peak


def test_a_gzip_bomb_is_cut_off_at_the_limit_without_being_inflated(tmp_path, sim):
    bomb = gzip_bomb(1024 * MiB)
    assert len(bomb) < 2 * MiB
    with RawServer(bomb, headers={"Content-Encoding": "gzip"}) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw, max_response_bytes=MiB)
        sim.script("b", Reply("from the simulator", hold=True))
        code, out, err, peak = run_cli_peak_memory(
            sim, "run", "-C", "x", "-c", str(cfg), "-p", "hi", "--json"
        )
    assert code == 0, err
    result = json.loads(out)
    assert result["entry"] == "sim/b"
    assert result["attempts"][0]["detail"].startswith("response larger than 1 MiB")
    assert peak < 200 * MiB, f"peak RSS {peak / MiB:.0f} MiB"  # unbounded: about 2 GiB


def deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "wbits"),
    [("gzip", 16 + zlib.MAX_WBITS), ("deflate", zlib.MAX_WBITS), ("deflate", -zlib.MAX_WBITS)],
    ids=["gzip", "deflate", "raw-deflate"],
)
def test_a_compressed_answer_within_the_limit_is_read_whole(tmp_path, sim, coding, wbits):
    text = "compressed " * 5000  # 55 000 bytes: many reads of the inflater
    with RawServer(deflate(openai_reply(text), wbits), headers={"Content-Encoding": coding}) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw, max_response_bytes=64 * 1024)
        result = run_json(cfg)
    assert result["entry"] == "raw/m"
    assert result["text"] == text


def test_a_body_that_does_not_inflate_is_an_invalid_response(tmp_path, sim):
    with RawServer(b"not gzip at all", headers={"Content-Encoding": "gzip"}) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw)
        result = run_json(cfg)
    assert result["entry"] == "sim/b"
    assert (
        result["attempts"][0]["detail"] == "Response parse error: the gzip body cannot be decoded"
    )
    assert result["attempts"][0]["rule"] == "invalid_response"


# --- 2. lone surrogates ----------------------------------------------------------------------

LONE = "\ud800"


def tool_call_reply(call: dict[str, Any]) -> bytes:
    return openai_reply(None, message={"tool_calls": [{"id": "call_1", **call}]})


@pytest.mark.parametrize(
    ("body", "plain", "as_json"),
    [
        (openai_reply(f"a{LONE}b"), "a\ufffdb", '"text": "a\ufffdb"'),
        (openai_reply("fine", model=f"m{LONE}"), "fine", '"model": "m\ufffd"'),
        (
            tool_call_reply(
                {"id": f"c{LONE}", "function": {"name": f"f{LONE}", "arguments": f'"{LONE}"'}}
            ),
            '"name": "f\ufffd"',
            '"arguments": "\\"\ufffd\\""',
        ),
        (  # an escape inside the arguments string becomes a surrogate only when parsed: the
            # string is kept as sent (plain ASCII), in every output alike
            tool_call_reply({"function": {"name": "f", "arguments": json.dumps({"q": LONE})}}),
            r'"arguments": "{\"q\": \"\\ud800\"}"',
            r'"arguments": "{\"q\": \"\\ud800\"}"',
        ),
    ],
    ids=["text", "model", "tool-call", "escaped-in-arguments"],
)
@pytest.mark.parametrize("mode", ["plain", "json"])
def test_lone_surrogates_in_an_answer_print_as_replacement_characters(
    tmp_path, sim, body, plain, as_json, mode
):
    with RawServer(body) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw)
        done = run_cli(
            "run", "-C", "x", "-c", str(cfg), "-p", "hi", *(["--json"] if mode == "json" else [])
        )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (plain if mode == "plain" else as_json) in done.stdout, done.stdout
    assert "from the simulator" not in done.stdout  # the raw server answered
    assert not saved_prompts(tmp_path)


def test_a_lone_surrogate_in_an_error_message_is_shown_and_saved(tmp_path, sim):
    with RawServer(error_body(f"bad {LONE} request"), status=400) as raw:
        providers = {"raw": {"type": "openai", "base_url": raw.url, "api_key_env": "SIM_KEY"}}
        cfg = write_config(tmp_path, sim, {"x": [entry("raw", "m")]}, providers=providers)
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "keep me", "-v")
    assert done.returncode == 1
    assert "bad \ufffd request" in done.stderr
    assert "Failed prompt persisted to" in done.stderr
    (saved,) = saved_prompts(tmp_path)
    assert saved["conversation"]["messages"][0]["content"] == "keep me"
    assert "bad \ufffd request" in saved["errors"][0]["detail"]
    assert "bad \ufffd request" in attempt_rows(tmp_path)[0][4]


# --- 3. nesting ------------------------------------------------------------------------------

DEEP = 985


@pytest.mark.parametrize(
    ("type_", "body"),
    [
        (
            "openai",
            openai_reply(
                None,
                message={
                    "tool_calls": [
                        {"id": "c", "function": {"name": "f", "arguments": "[" * DEEP + "]" * DEEP}}
                    ]
                },
            ),
        ),
        (
            "ollama",
            b'{"model": "m", "done": true, "message": {"role": "assistant", "content": "",'
            b' "tool_calls": [{"function": {"name": "f", "arguments": {"a": '
            + b"[" * 900
            + b"]" * 900
            + b"}}}]}}",
        ),
    ],
    ids=["arguments-string", "arguments-object"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["plain", "json"])
def test_deeply_nested_tool_arguments_are_an_invalid_reply_that_fails_over(
    tmp_path, sim, type_, body, as_json
):
    with RawServer(body) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw, type_=type_)
        done = run_cli(
            "run",
            "-C",
            "x",
            "-c",
            str(cfg),
            "-p",
            "hi",
            "--explain",
            *(["--json"] if as_json else []),
        )
    assert done.returncode == 0, done.stderr
    assert "from the simulator" in done.stdout
    assert "nested deeper than 64 levels" in done.stderr
    assert "[rule invalid_response]" in done.stderr


# --- 4. control characters -------------------------------------------------------------------

EVIL = "\x1b[2J\x1b]0;pwned\x07 cleared\x9b31m \x00end"


def test_control_characters_in_a_provider_error_are_escaped_everywhere(tmp_path, sim):
    with RawServer(error_body(EVIL), status=400) as raw:
        providers = {"raw": {"type": "openai", "base_url": raw.url, "api_key_env": "SIM_KEY"}}
        cfg = write_config(tmp_path, sim, {"x": [entry("raw", "m")]}, providers=providers)
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-vv", "--explain")
    assert done.returncode == 1
    escaped = "\\x1b[2J\\x1b]0;pwned\\x07 cleared\\x9b31m \\x00end"
    assert escaped in done.stderr
    (saved,) = saved_prompts(tmp_path)
    (row,) = attempt_rows(tmp_path)
    for where in (done.stderr, saved["errors"][0]["detail"], row[4]):
        assert escaped in where
        assert not {"\x1b", "\x07", "\x9b", "\x00"} & set(where), repr(where)


ANSWER = "col1\tcol2\nline \x1b[31mred\x1b[0m\r\nend\x9b"


def test_the_answer_is_byte_faithful_on_a_pipe(tmp_path, sim):
    with RawServer(openai_reply(ANSWER)) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw)
        done = subprocess.run(
            [*cli_command(), "run", "-C", "x", "-c", str(cfg), "-p", "hi"],
            capture_output=True,
            env={**os.environ, "SIM_KEY": SIM_KEY},
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ANSWER.encode() + b"\n"


def test_a_terminal_sees_control_characters_in_the_answer_escaped(tmp_path, sim):
    with RawServer(openai_reply(ANSWER)) as raw:
        cfg = raw_then_sim(tmp_path, sim, raw)
        status, shown = run_in_terminal("run", "-C", "x", "-c", str(cfg), "-p", "hi")
    assert status == 0, shown
    assert shown == "col1\tcol2\nline \\x1b[31mred\\x1b[0m\r\nend\\x9b\n"


# --- 5 and 6. secrets ------------------------------------------------------------------------

KEY = "sk-hostile-key-0123456789abcdef"
HEADER = "hdr-secret-9876543210fedcba"


def echoed(where: str) -> RawServer:
    """A server that sends the key and the header value back in one place of its reply."""
    both = f"{KEY} {HEADER}"
    if where == "reason":
        return RawServer(b"", status=401, reason=f"bad key {both}")
    if where == "body":
        return RawServer(error_body(f"key {both} rejected"), status=401)
    if where == "redirect":
        return RawServer(b"", status=307, headers={"Location": f"http://127.0.0.1:9/?k={both}"})
    return RawServer(f"not json: {both}".encode(), status=200)


def everything_shown_and_written(done: subprocess.CompletedProcess[str], tmp_path: Path) -> bytes:
    """stdout, stderr, every file of the database (WAL too) and of the failed-prompts folder
    (saved prompts and in-flight logs)."""
    files = [*(tmp_path / "state").iterdir(), *(tmp_path / "failed").rglob("*")]
    files = [p for p in files if p.is_file()]
    return (done.stdout + done.stderr).encode() + b"".join(p.read_bytes() for p in files)


@pytest.mark.parametrize("where", ["reason", "body", "redirect", "not-json"])
@pytest.mark.parametrize("source", ["env", "keyring"])
def test_secrets_echoed_by_a_provider_never_reach_output_logs_or_files(
    tmp_path, sim, where, source
):
    provider: dict[str, Any] = {"type": "openai", "headers": {"api-key": HEADER}}
    env = {"RAW_KEY": KEY}
    if source == "env":
        provider["api_key_env"] = "RAW_KEY"
    else:  # a custom base_url and no api_key_env: the key can only come from the keyring
        PlaintextKeyring().set_password("llm-cascade", "raw", KEY)
        env = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
    with echoed(where) as raw:
        provider["base_url"] = raw.url
        cfg = write_config(tmp_path, sim, {"x": [entry("raw", "m")]}, providers={"raw": provider})
        args = ("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-vv", "--explain", "--json")
        done = run_cli(*args, env=env)
        assert raw.count == 1
    assert done.returncode == 1, done.stderr
    assert "[redacted]" in done.stderr  # the echo arrived, and was caught
    shown = everything_shown_and_written(done, tmp_path)
    assert KEY.encode() not in shown
    assert HEADER.encode() not in shown


def test_a_header_secret_echoed_in_an_error_body_by_the_simulator_is_scrubbed(tmp_path, sim):
    sim.script("a", Fail(401, message=f"invalid api-key {HEADER} (key {SIM_KEY})"))
    providers = {
        "sim": {
            "type": "openai",
            "base_url": sim.base_url("openai"),
            "api_key_env": "SIM_KEY",
            "headers": {"api-key": HEADER},
        }
    }
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, providers=providers)
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-vv")
    assert done.returncode == 1
    assert sim.requests[0].headers["api-key"] == HEADER  # it was sent
    assert "invalid api-key [redacted] (key [redacted])" in done.stderr
    shown = everything_shown_and_written(done, tmp_path)
    assert HEADER.encode() not in shown and SIM_KEY.encode() not in shown


def test_the_attempt_log_escapes_rows_written_raw_by_the_original_tool(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi").returncode == 0
    with sqlite3.connect(tmp_path / "state" / "db.sqlite") as conn:
        conn.execute(
            "INSERT INTO attempt_log (timestamp, cascade_name, provider_model, http_status,"
            " latency_ms, error_message) VALUES (?, 'x', 'sim/a', 400, 5, ?)",
            ("2026-01-01T00:00:00.000000+00:00", "HTTP 400: \x1b]0;pwned\x07\nline"),
        )
    done = run_cli("log", "-c", str(cfg))
    assert done.returncode == 0
    assert "HTTP 400: \\x1b]0;pwned\\x07 line" in done.stdout


def test_resolved_keys_and_configured_header_values_are_known_secrets(tmp_path, monkeypatch):
    """Known from the moment they are read, before any request: a log line in between is safe."""
    key, header = "sk-resolved-0123456789abcdef", "hdr-configured-0123456789"
    monkeypatch.setenv("RESOLVED_KEY", key)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[providers.p]\ntype = "openai"\napi_key_env = "RESOLVED_KEY"\n'
        f'headers = {{ api-key = "{header}", x-short = "1" }}\n'
    )
    config = load_config(cfg)
    assert resolve_key(lookup_for(config.providers["p"])).value == key
    assert redaction.redact(f"{key} / {header} / 1") == "[redacted] / [redacted] / 1"
