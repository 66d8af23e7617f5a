"""Every `llm-cascade` line of README.md's shell blocks runs as written, against the simulator.

The config the lines use is README's own TOML blocks merged, with each provider they name
pointed at the simulator (key from SIM_KEY, every model in its listings) and the state in the
test's folder. The lines run in bash, in order, in a folder holding the files they name
(`conversation.json`, `notes.txt`), with stdin at /dev/null. Three need what a person or a
host gives: `key set openai` (a hidden prompt) gets its key on stdin; `top` (a live view)
runs in a pseudo-terminal and is quit with `q`; `metrics --textfile` writes into
node_exporter's folder under /var/lib, which a test does not create: the same line runs with
that folder moved into the test's; `serve` runs until it answers, on a free port. `setup` and
`setup -i` meet the existing config and leave it alone, as they do for a user who has one.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from llm_cascade.providers import PROVIDER_TYPES
from llm_cascade.simulator import Reply

from .support import SIM_KEY, cli_command

README = Path(__file__).parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
COMMENT = re.compile(r"\s+#\s.*$")


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == kind]


def invocations() -> list[str]:
    """The shell lines that run llm-cascade, without their trailing comments, and the
    alternatives a comment offers (`# ..., or: printf %s "$KEY" | llm-cascade key set ...`)."""
    lines = []
    for body in blocks("sh"):
        for raw in body.splitlines():
            comment = COMMENT.search(raw)
            alternative = re.search(r"\bor: (.*)$", comment.group()) if comment else None
            for line in (COMMENT.sub("", raw), alternative.group(1) if alternative else ""):
                if re.search(r"(^|\|\s*)llm-cascade\b", line.strip()):
                    lines.append(line.strip())
    return lines


def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def readme_config(tmp_path: Path, sim: Any) -> Path:
    doc: dict[str, Any] = {}
    for body in blocks("toml"):
        merge(doc, tomllib.loads(body))
    providers = doc.setdefault("providers", {})
    for cascade in doc["cascades"].values():
        for item in cascade["entries"]:
            name = item["provider"]
            providers.setdefault(name, {"type": name if name in PROVIDER_TYPES else "openai"})
    for table in providers.values():
        table.update(base_url=sim.base_url(table["type"]), api_key_env="SIM_KEY")
    for cascade in doc["cascades"].values():
        for item in cascade["entries"]:
            sim.script_probe(item["model"], Reply())  # `health` finds it in the listing
    doc["database"] = {"path": str(tmp_path / "state" / "db.sqlite")}
    doc["failure_persistence"] = {"dir": str(tmp_path / "failed")}
    path = tmp_path / "readme-config.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def test_the_readme_has_the_lines_this_test_runs():
    lines = invocations()
    assert len(lines) >= 20, lines  # not vacuous: the blocks were found
    for expected in (
        'llm-cascade run -C fast_task -p "Hello"',
        'cat notes.txt | llm-cascade run "Summarise"',
        'llm-cascade run -m ollama/llama3 -m openai/gpt-4o-mini "hi"',
        "llm-cascade failed retry --all --answers-dir ~/answers",
        'printf %s "$KEY" | llm-cascade key set openai',
    ):
        assert expected in lines


def test_every_invocation_in_the_readme_runs_as_written(tmp_path, sim):
    cfg = readme_config(tmp_path, sim)
    work = tmp_path / "work"
    work.mkdir()
    (work / "conversation.json").write_text(
        '{"messages": [{"role": "user", "content": "from a file"}]}'
    )
    (work / "notes.txt").write_text("Notes to summarise.\n")
    env = {
        **os.environ,
        "LLM_CASCADE_CONFIG": str(cfg),
        "PATH": f"{Path(cli_command()[0]).parent}:{os.environ['PATH']}",
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "SIM_KEY": SIM_KEY,
        "KEY": "sk-readme-0123456789",
    }
    textfile = "/var/lib/node_exporter/textfile/"
    (tmp_path / "textfile").mkdir()
    failures = []
    (work / "config.toml").write_text(cfg.read_text())  # the file `serve -c config.toml` names
    for line in invocations():
        if line == "llm-cascade top":
            failures += _top(work, env)
            continue
        if line.startswith("llm-cascade serve"):
            failures += _serve(line, work, env)
            continue
        line = line.replace(textfile, f"{tmp_path}/textfile/")
        stdin = "sk-readme-0123456789\n" if line == "llm-cascade key set openai" else ""
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=work,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0 or "Traceback" in done.stderr:
            failures.append(f"{line}\n  exit {done.returncode}: {done.stderr.strip()}")
    assert not failures, "\n".join(failures)
    assert sim.count() >= 8  # the runs reached the simulator
    assert (tmp_path / "textfile" / "llm_cascade.prom").exists()


def _serve(line: str, work: Path, env: dict[str, str]) -> list[str]:
    """`llm-cascade serve` until it answers /healthz, then SIGTERM, as a service manager
    stops it. On a free port rather than 8787, which may be taken."""
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {line} --port {port}"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)  # waiting for the server to start, not for time to pass
        else:
            return [f"{line}\n  never answered /healthz"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    return [f"{line}\n  {err.strip()}"] if "Traceback" in err else []


def _top(work: Path, env: dict[str, str]) -> list[str]:
    """`llm-cascade top` in a pseudo-terminal, quit with `q` as a person quits it."""
    import pexpect

    child = pexpect.spawn(
        "bash",
        ["-c", "llm-cascade top"],
        cwd=str(work),
        env={**env, "TERM": "xterm"},
        dimensions=(30, 200),
        timeout=20,
        encoding="utf-8",
    )
    try:
        child.expect("groq/llama-3.3-70b-versatile")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    return [] if child.exitstatus == 0 else [f"llm-cascade top\n  exit {child.exitstatus}"]
