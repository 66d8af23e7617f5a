"""The gateway's dashboard as a browser shows it: headless Chromium (Debian's package) loads
the page after a failover and a total failure, and the test reads the DOM it rendered."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from llm_cascade.simulator import Fail, Reply

from .gateway import gateway
from .support import write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROMPT = "the secret plan is tangerine"


def rendered(url: str, profile: Path) -> str:
    """The DOM after the page's script ran, as Chromium dumps it."""
    done = subprocess.run(
        [CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def row(dom: str, entry: str) -> list[str]:
    """The cells of the entries table's row for `entry`, as text."""
    found = re.search(rf'<tr data-entry="{re.escape(entry)}">(.*?)</tr>', dom, re.S)
    assert found, dom
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1))]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_dashboard_shows_breakers_attempts_and_waiting_prompts_after_a_failover(tmp_path, sim):
    sim.script("a", Fail(429, retry_after="300"))
    sim.script("b", Reply("fine"))
    sim.script("z", Fail(500))
    cfg = write_config(tmp_path, sim, {"fast": ["a", "b"], "doomed": ["z"]})
    with gateway(cfg) as gw:
        asked = {"messages": [{"role": "user", "content": PROMPT}]}
        assert (
            httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "fast", **asked}).status_code
            == 200
        )
        assert (
            httpx.post(
                f"{gw.url}/v1/chat/completions", json={"model": "doomed", **asked}
            ).status_code
            == 503
        )
        dom = rendered(f"{gw.url}/", tmp_path / "profile")
    entry, breaker, cooldown, failures, rule, attempts, success, _latency = row(dom, "sim/a")
    assert (entry, breaker, failures, rule) == ("sim/a", "open", "1", "rate_limited")
    assert re.fullmatch(r"[45] min \d+ s", cooldown), cooldown
    assert (attempts, success) == ("1", "0 %")
    b = row(dom, "sim/b")
    assert b[1] == "closed" and b[5:7] == ["1", "100 %"] and b[7].endswith(" ms")
    recent = dom[dom.index('id="recent"') : dom.index('id="pending"')]
    assert recent.count(">failed<") == 2 and recent.count(">ok<") == 1
    assert re.search(r'id="pending-count">1<', dom)
    assert "doomed_" in dom[dom.index('id="pending"') :]
    assert "tangerine" not in dom  # no prompt text, ever
    assert "sim-test-key" not in dom
