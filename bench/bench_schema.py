"""The JSON Schema validator: import time, the cost of checking one answer, and correctness.

    python bench/bench_schema.py [--suite PATH/TO/JSON-Schema-Test-Suite] [--runs N]

Import time is `python -c "import X"` minus `python -c "pass"` (medians of N runs each, in
rounds). The per-answer cost is `llm_cascade.structured.OutputCheck` on a typical answer: an
object of 20 fields of four types plus a list of three items (parse + validate), and the
validator alone on the decoded value. With `--suite`, each validator is run on the official
test suite (draft7 and draft2020-12, `optional/` and `refRemote.json` left out: they need a
network or are optional) and the cases it gets right are counted. `jsonschema` and
`fastjsonschema` are measured too when installed, for comparison. Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_cascade.structured import OutputCheck, output_format
from llm_cascade.types import LlmResponse, TextBlock


def typical() -> tuple[dict[str, Any], Any]:
    """A 20-field schema (strings, integers, numbers, booleans) with a list of items."""
    kinds = ["string", "integer", "number", "boolean"]
    properties: dict[str, Any] = {}
    value: dict[str, Any] = {}
    for i in range(20):
        kind = kinds[i % 4]
        properties[f"field_{i}"] = {
            "type": kind,
            **({"maxLength": 200} if kind == "string" else {}),
        }
        value[f"field_{i}"] = {
            "string": f"text {i}",
            "integer": i,
            "number": i + 0.5,
            "boolean": True,
        }[kind]
    item = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
        "required": ["name", "price"],
        "additionalProperties": False,
    }
    properties["items"] = {"type": "array", "items": item}
    value["items"] = [
        {"name": "a", "price": 1.5},
        {"name": "b", "price": 2},
        {"name": "c", "price": 3},
    ]
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return schema, value


def import_ms(module: str, runs: int) -> float:
    base, timed = [], []
    for _ in range(runs):
        for sink, code in ((base, "pass"), (timed, f"import {module}")):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            sink.append(time.perf_counter() - start)
    return (statistics.median(timed) - statistics.median(base)) * 1000


def per_call_us(call: Callable[[], object], n: int = 5000) -> float:
    call()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e6


def _builders() -> dict[str, Callable[[dict[str, Any], str], Callable[[Any], bool]]]:
    """name -> make(schema, draft) -> is_valid, for each validator installed."""
    found: dict[str, Callable[[dict[str, Any], str], Callable[[Any], bool]]] = {}
    import jsonschema_rs

    rs = {
        "draft7": jsonschema_rs.Draft7Validator,
        "draft2020-12": jsonschema_rs.Draft202012Validator,
    }

    def offline(uri: str) -> Any:
        raise ValueError(uri)

    found["jsonschema-rs"] = lambda s, d: rs[d](s, retriever=offline).is_valid
    try:
        import jsonschema

        py = {"draft7": jsonschema.Draft7Validator, "draft2020-12": jsonschema.Draft202012Validator}
        found["jsonschema"] = lambda s, d: py[d](s).is_valid
    except ImportError:
        pass
    try:
        import fastjsonschema

        def fast(schema: dict[str, Any], draft: str) -> Callable[[Any], bool]:
            if draft != "draft7":
                raise ValueError("drafts 4, 6 and 7 only")
            check = fastjsonschema.compile(schema, handlers={"http": offline, "https": offline})

            def valid(value: Any) -> bool:
                try:
                    check(value)
                except fastjsonschema.JsonSchemaValueException:
                    return False
                return True

            return valid

        found["fastjsonschema"] = fast
    except ImportError:
        pass
    return found


def suite(
    path: Path, make: Callable[[dict[str, Any], str], Callable[[Any], bool]], draft: str
) -> str:
    right = wrong = unbuilt = 0
    for file in sorted((path / "tests" / draft).glob("*.json")):
        if file.name == "refRemote.json":
            continue
        for group in json.loads(file.read_text()):
            try:
                valid = make(group["schema"], draft)
            except Exception:
                unbuilt += len(group["tests"])
                continue
            for case in group["tests"]:
                try:
                    ok = valid(case["data"]) == case["valid"]
                except Exception:
                    ok = False
                right, wrong = (right + 1, wrong) if ok else (right, wrong + 1)
    total = right + wrong + unbuilt
    return f"{right}/{total} right ({wrong} wrong, {unbuilt} schemas refused)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, help="a checkout of JSON-Schema-Test-Suite")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    schema, value = typical()
    check = OutputCheck(output_format(schema))
    answer = LlmResponse((TextBlock(json.dumps(value)),), "m")
    assert check(answer).value == value
    cost = per_call_us(lambda: check(answer))
    print(f"OutputCheck, a typical 20-field answer (parse + validate): {cost:.1f} µs")
    makers = _builders()
    for name, make in makers.items():
        draft = "draft7" if name == "fastjsonschema" else "draft2020-12"
        valid = make(schema, draft)
        assert valid(value)
        module = name.replace("-", "_")
        cost = per_call_us(lambda valid=valid: valid(value))  # type: ignore[misc]
        print(f"{name:15} import {import_ms(module, args.runs):6.1f} ms, validate {cost:7.1f} µs")
        if args.suite:
            for draft in ("draft7", "draft2020-12"):
                print(f"{'':15} {draft:13} {suite(args.suite, make, draft)}")


if __name__ == "__main__":
    main()
