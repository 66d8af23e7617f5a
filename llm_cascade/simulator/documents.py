"""JSON answers the simulator gives when a request asks for JSON and nothing is scripted: a
small document valid under the schema asked for (or `{"answer": ...}` for plain JSON mode)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_MAX_DEPTH = 16  # nested $refs and objects: a recursive schema ends in its simplest value


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """A request that asks for JSON: `schema` as the vendor received it (None: any JSON)."""

    schema: Mapping[str, Any] | None = None


def example(
    schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, depth: int = 0
) -> Any:
    """A small value valid under `schema`: required properties only, minimal sizes, the first
    of an enum or of `anyOf`. Types may be upper case (Gemini's `responseSchema`)."""
    root = schema if root is None else root
    if depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for step in ref[2:].split("/"):
            target = target.get(step, {}) if isinstance(target, Mapping) else {}
        return example(target if isinstance(target, Mapping) else {}, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], Mapping):
            return example(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower() if kind is not None else ("object" if "properties" in schema else "")
    return _typed(kind, schema, root, depth)


def _typed(kind: str, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) else []
        return {
            n: example(
                properties.get(n, {}) if isinstance(properties.get(n), Mapping) else {},
                root,
                depth + 1,
            )
            for n in names
        }
    if kind == "array":
        items = schema.get("items")
        count = schema.get("minItems")
        count = count if isinstance(count, int) and count > 0 else 0
        item = items if isinstance(items, Mapping) else {}
        return [example(item, root, depth + 1) for _ in range(min(count, 100))]
    if kind == "string":
        length = schema.get("minLength")
        return "x" * (length if isinstance(length, int) and 0 < length <= 1000 else 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        return low if isinstance(low, int | float) and not isinstance(low, bool) else 0
    if kind == "boolean":
        return False
    return None


def default_document(answer: JsonAnswer, text: str) -> Any:
    """The unscripted answer to a JSON request: an example of its schema, or the echo text."""
    schema = answer.schema
    if schema is None or (
        str(schema.get("type", "")).lower() == "object"
        and not schema.get("properties")
        and schema.get("additionalProperties") is not False
    ):  # any JSON, or any object (Anthropic's JSON mode is a tool taking one)
        return {"answer": text}
    return example(schema)
