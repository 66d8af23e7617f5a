"""`make demo`: a scripted outage against the local simulator, run through the real CLI.

No network and no API keys: the simulator listens on 127.0.0.1 and every file goes to a
temporary directory. The primary entry is rate-limited, the secondary returns an HTML error
page, the third answers; a second run skips the two cooling entries without a request; then
the attempt log and the cooldowns are shown, a total outage leaves the prompt on disk,
`failed retry` answers it, and a stream that breaks mid-answer is continued by the next entry.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from .simulator import Fail, HtmlError, Reply, Simulator, Stream

CONFIG = """\
[providers.primary]
type = "openai"
base_url = "{openai}"
api_key_env = "DEMO_PRIMARY_KEY"

[providers.secondary]
type = "anthropic"
base_url = "{anthropic}"
api_key_env = "DEMO_SECONDARY_KEY"

[providers.local]
type = "ollama"
base_url = "{ollama}"

[cascades.demo]
entries = [
    {{ provider = "primary", model = "gpt-4o" }},
    {{ provider = "secondary", model = "claude-sonnet-4" }},
    {{ provider = "local", model = "llama3" }},
]

[providers.claude]
type = "anthropic"
base_url = "{anthropic}"
api_key_env = "DEMO_SECONDARY_KEY"

[cascades.streamed]
entries = [
    {{ provider = "primary", model = "gpt-4o-stream" }},
    {{ provider = "claude", model = "claude-continues" }},
]

[cascades.outage]
entries = [
    {{ provider = "primary", model = "gpt-4o-mini" }},
    {{ provider = "local", model = "llama3-down" }},
]

[database]
path = "state/db.sqlite"

[failure_persistence]
dir = "failed_prompts"
"""


def _banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _cli(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None) -> int:
    shown = " ".join(shlex.quote(a) for a in args)
    print(
        f"$ {'echo ' + shlex.quote(stdin.strip()) + ' | ' if stdin else ''}llm-cascade {shown}",
        flush=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "llm_cascade", *args],
        input=stdin,
        text=True,
        env=env,
        cwd=cwd,
        stdout=sys.stdout,
        stderr=subprocess.STDOUT,
        check=False,
    )
    print(f"(exit status {done.returncode})", flush=True)
    return done.returncode


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="llm-cascade-demo-") as tmp, Simulator() as sim:
        work = Path(tmp)
        urls = {kind: sim.base_url(kind) for kind in ("openai", "anthropic", "ollama")}
        (work / "config.toml").write_text(CONFIG.format(**urls))
        env = {
            **os.environ,
            "LLM_CASCADE_CONFIG": str(work / "config.toml"),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
            "DEMO_PRIMARY_KEY": "sim-demo-key-1",
            "DEMO_SECONDARY_KEY": "sim-demo-key-2",
            "NO_COLOR": "1",
        }
        sim.script("gpt-4o", Fail(429, "Rate limit reached for gpt-4o", retry_after="30"))
        sim.script("claude-sonnet-4", HtmlError(502))
        sim.script("llama3", Reply("Cascades keep answering when providers fail."))
        sim.script("gpt-4o-mini", Fail(503, "overloaded", retry_after="120"))
        sim.script("llama3-down", Fail(500, "model crashed"))
        print(f"Simulator on {sim.url}; config and state in {work}")

        _banner("1. The primary is rate-limited, the secondary is broken, the third answers")
        _cli(["run", "-C", "demo", "--explain"], env, work, stdin="Why use a cascade?\n")

        _banner("2. Run again: the two cooling entries are skipped without a request")
        before = sim.count()
        _cli(["run", "-C", "demo", "--explain", "-p", "And again?"], env, work)
        print(f"(requests sent this run: {sim.count() - before})")

        _banner("3. Every entry fails: the prompt is saved, exit status 1")
        _cli(["run", "-C", "outage", "-p", "Nothing may be lost"], env, work)

        _banner("4. The attempt log (every try, skip and failure) and the cooldowns")
        _cli(["log", "-n", "12"], env, work)
        _cli(["status"], env, work)

        _banner("5. Replay: the saved prompt is listed, then answered through another cascade")
        _cli(["failed", "list"], env, work)
        _cli(["failed", "retry", "--all", "-C", "demo"], env, work)
        left = sorted((work / "failed_prompts").glob("*.json"))
        print(f"(saved prompts left: {len(left)})")

        _banner("6. A stream breaks after three words; the next entry continues the same text")
        words = ("Streams ", "survive ", "failures ")
        sim.script(
            "gpt-4o-stream", Reply("".join(words), stream=Stream(pieces=words, drop_after=3))
        )
        sim.script("claude-continues", Reply("mid-answer, too.", stream=Stream(chunk_delay=0.05)))
        _cli(
            ["run", "-C", "streamed", "--stream", "--explain", "-p", "Do streams fail over?"],
            env,
            work,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
