"""`run --schema` as a user runs it: the installed CLI in a subprocess, the simulator over
real HTTP, real files for the schema, the database and the saved prompts."""

from __future__ import annotations

import json
from pathlib import Path

from llm_cascade.simulator import Fail, Reply

from .support import run_cli, write_config

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}


def test_the_validated_document_alone_goes_to_stdout(tmp_path, sim):
    sim.script("a", Reply("It is 21 degrees in Tokyo."))
    sim.script("b", Reply('{"city": "Tokyo", "temp": "21"}'))
    sim.script("c", Reply('```json\n{"city": "Tokyo", "temp": 21}\n```'))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b", "c"]})
    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "Weather?", "--schema", json.dumps(SCHEMA)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"city": "Tokyo", "temp": 21}
    assert sim.requests[0].body["response_format"]["json_schema"]["strict"] is True
    assert done.stderr == ""


def test_any_json_object_and_a_schema_file(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--schema", '{"type":"object"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"answer": "Simulated answer from a: hi"}
    assert sim.requests[0].body["response_format"] == {"type": "json_object"}
    path = tmp_path / "weather.schema.json"
    path.write_text(json.dumps(SCHEMA))
    sim.script("a", Reply('{"city": "Oslo", "temp": 4}'))
    from_file = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--schema", str(path))
    assert json.loads(from_file.stdout) == {"city": "Oslo", "temp": 4}


def test_json_output_gains_parsed_and_stdin_works(tmp_path, sim):
    sim.script("a", Reply('{"city": "Rome", "temp": 30}'))
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "--json", "--schema", json.dumps(SCHEMA), stdin="Rome?"
    )
    assert done.returncode == 0, done.stderr
    envelope = json.loads(done.stdout)
    assert envelope["parsed"] == {"city": "Rome", "temp": 30}
    assert envelope["text"] == '{"city": "Rome", "temp": 30}'


def test_bad_schemas_are_one_line_and_exit_2_before_anything_is_sent(tmp_path, sim):
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    cases = [
        ('{"type": "objekt"}', "--schema is not valid JSON Schema: $.type"),
        ("{not json", "--schema is not JSON"),
        (str(tmp_path / "missing.json"), "--schema: cannot read"),
        ('{"$ref": "https://example.com/s.json"}', "remote $ref"),
    ]
    for value, problem in cases:
        done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--schema", value)
        assert done.returncode == 2, (value, done.stderr)
        first, *rest = done.stderr.strip().splitlines()
        assert problem in first and rest == ["Try 'llm-cascade run -h' for help."]
    stream = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "--schema", "{}", "--stream")
    assert stream.returncode == 2 and "drop --stream" in stream.stderr
    assert sim.count() == 0
    assert not (tmp_path / "failed").exists()


def test_the_schema_is_saved_with_the_prompt_and_failed_retry_asks_for_it(tmp_path, sim):
    sim.script("a", Reply('{"city": "Oslo"}'))  # no temp
    cfg = write_config(tmp_path, sim, {"x": ["a"]})
    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "Oslo?", "--schema", json.dumps(SCHEMA))
    assert done.returncode == 1
    assert '$: missing required property "temp"' in done.stderr
    saved = next((tmp_path / "failed").glob("*.json"))
    envelope = json.loads(saved.read_text())
    assert envelope["conversation"]["output"]["schema"] == SCHEMA
    assert envelope["errors"][0]["outcome"] == "invalid_output"

    sim.script("a", Reply('{"city": "Oslo", "temp": 4}'))
    retried = run_cli("failed", "retry", "--all", "-c", str(cfg))
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {"city": "Oslo", "temp": 4}
    assert sim.requests[-1].body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert not list((tmp_path / "failed").glob("*.json"))


def test_a_schema_run_fails_over_past_a_cooling_entry_and_imports_the_validator(tmp_path, sim):
    sim.script("a", Fail(503, retry_after="60"))
    cfg = write_config(tmp_path, sim, {"x": ["a", "b"]}, extra={"keyring": False})
    done = run_cli(
        "run",
        "-C",
        "x",
        "-c",
        str(cfg),
        "-p",
        "hi",
        "--schema",
        '{"type": "object"}',
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert done.returncode == 0
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert {"llm_cascade.structured", "jsonschema_rs"} <= loaded
    assert "pydantic" not in loaded
    stdout = json.loads(done.stdout)
    assert stdout == {"answer": "Simulated answer from b: hi"}
    assert Path(cfg).exists()
