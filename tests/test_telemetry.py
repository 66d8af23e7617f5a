"""OpenTelemetry spans, checked with the SDK's in-memory exporter in a process of their own
(a tracer provider can be set once per process), and no import of it where nobody traces."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from llm_cascade.simulator import Fail, Reply

from .support import run_cli, write_config

TRACED_RUN = """
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from llm_cascade import Cascade, Conversation, load_config

async def main():
    async with Cascade(load_config(sys.argv[1])) as engine:
        if sys.argv[2] == "stream":
            async for _ in engine.stream("main", Conversation.single_user_prompt("hi")):
                pass
        else:
            await engine.run("main", Conversation.single_user_prompt("hi"))

asyncio.run(main())
names = {s.context.span_id: s.name for s in exporter.get_finished_spans()}
print(json.dumps([
    {
        "name": s.name,
        "kind": s.kind.name,
        "parent": names.get(s.parent.span_id) if s.parent else None,
        "status": s.status.status_code.name,
        "attributes": dict(s.attributes),
    }
    for s in exporter.get_finished_spans()
]))
"""


def traced(config: str, mode: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", TRACED_RUN, config, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ["run", "stream"])
def test_a_run_is_a_span_with_one_client_span_per_attempt(tmp_path, sim, mode):
    sim.script("primary", Fail(429))
    sim.script("backup", Reply("fine", input_tokens=11, output_tokens=7))
    cfg = write_config(tmp_path, sim, {"main": ["primary", "backup"]})
    spans = {s["name"]: s for s in traced(str(cfg), mode)}
    assert set(spans) == {"cascade main", "chat primary", "chat backup"}
    run = spans["cascade main"]
    assert run["parent"] is None and run["attributes"]["llm_cascade.cascade"] == "main"
    failed = spans["chat primary"]
    assert (failed["kind"], failed["parent"], failed["status"]) == (
        "CLIENT",
        "cascade main",
        "ERROR",
    )
    assert failed["attributes"] | {"server.port": 0} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "primary",
        "server.address": "127.0.0.1",
        "server.port": 0,
        "llm_cascade.entry": "sim/primary",
        "llm_cascade.try_number": 1,
        "error.type": "429",
        "http.response.status_code": 429,
    }
    answered = spans["chat backup"]
    assert answered["status"] == "UNSET" and answered["parent"] == "cascade main"
    assert answered["attributes"]["gen_ai.usage.input_tokens"] == 11
    assert answered["attributes"]["gen_ai.usage.output_tokens"] == 7
    assert answered["attributes"]["gen_ai.response.model"] == "backup"
    assert "error.type" not in answered["attributes"]


def test_without_a_tracer_opentelemetry_is_never_imported(tmp_path, sim):
    """The SDK is installed here (a dev dependency), yet a run that nobody traces does not
    import it."""
    cfg = write_config(tmp_path, sim, {"x": ["a"]}, extra={"keyring": False})
    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "hi", env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert done.returncode == 0, done.stderr
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "llm_cascade.telemetry" in loaded  # not vacuous
    assert not {m for m in loaded if m.startswith("opentelemetry")}
