"""docs/library.md, run as a reader would: every ```python block, top to bottom, in one
process, against the simulator. The providers the page names (anthropic, openai, gemini,
ollama) are defined in a config at the default path, aimed at the simulator, so the page's
code stays the code a reader runs against the real vendors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomli_w

from llm_cascade.simulator import Fail

from .providers.helpers import ALL_TYPES, provider_table
from .support import SIM_KEY

DOC = Path(__file__).parent.parent / "docs" / "library.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_every_snippet_of_the_library_page_runs(tmp_path, sim):
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 10  # the page is what is tested
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "llm-cascade" / "config.toml"
    config.parent.mkdir(parents=True)
    doc = {
        "providers": {kind: provider_table(sim, kind) for kind in ALL_TYPES},
        "cascades": {"fast_task": {"entries": [{"provider": "openai", "model": "gpt-4o-mini"}]}},
    }
    config.write_text(tomli_w.dumps(doc))
    sim.script("claude-sonnet-4-20250514", Fail(529))  # the first call fails over
    sim.script("always-down", Fail(500))
    done = subprocess.run(
        [sys.executable, "-c", "\n\n".join(blocks)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "SIM_KEY": SIM_KEY},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Simulated answer from gpt-4o: Summarise this" in out
    assert "openai gpt-4o 11 7" in out and "['failed', 'ok']" in out
    assert "['ollama/llama3', 'groq/llama-3.3-70b-versatile', 'openai/gpt-4o-mini']" in out
    assert "unknown option 'timout' (did you mean 'timeout'?)" in out
    assert "dict {'answer':" in out  # get_json_response
    assert "Invoice 0" in out  # the pydantic model
    assert "is not valid JSON Schema: $.type" in out
    assert "saved in /" in out and "('openai/always-down', 'failed', 'server_error')" in out
    assert "ollama/llama3 skipped capability does not support tool use" in out
    assert "cannot serve this request, nothing was sent" in out
    assert "5 answers" in out
    assert "ollama/backup\n{'ok': True}" in out
