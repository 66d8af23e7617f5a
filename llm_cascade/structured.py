"""JSON answers: the schema a caller gives, checked before any request, and every answer
checked against it before it counts as one.

A schema is checked against its meta-schema and compiled once per run; each answer is parsed
within bounds (size, nesting) and validated, and a failure is a `ProviderError` of kind
`invalid_output` (rule `invalid_output`: the next entry is asked, no cooldown) whose message
names the path that failed: `$.items[2].price: expected number`. The validator
(`jsonschema_rs`) is imported only when a schema is used; pydantic is never imported here: a
model class is recognised by its methods and the caller's copy of pydantic does the work.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import files, redaction, untrusted
from .errors import ProviderError, UsageError
from .results import Parsed
from .text import shorten
from .types import OUTPUT_NAME, LlmResponse, OutputFormat, path_text, too_deep
from .untrusted import MAX_NESTING

if TYPE_CHECKING:
    import jsonschema_rs

MAX_DOCUMENT_CHARS = 8 << 20  # far above any model's longest answer; a bound on parsing work
MAX_SCHEMA_BYTES = 1 << 20  # a schema file (`run --schema PATH`)
_FENCE = re.compile(r"^```[A-Za-z]*[ \t]*\r?\n(.*)\r?\n```$", re.DOTALL)
_QUOTE_CHARS = 60  # of an answer quoted in an error


def invalid(message: str) -> ProviderError:
    """An answer that is not the document asked for: fails over, no cooldown."""
    return ProviderError("invalid_output", message)


# --- the schema, before any request ------------------------------------------------------------


def check_schema(schema: Any, where: str = "the schema") -> dict[str, Any]:
    """`schema` as a JSON Schema object, or a UsageError saying why it is none."""
    if not isinstance(schema, Mapping):
        raise UsageError(
            f"{where} must be a JSON object (a JSON Schema), not {type(schema).__name__}"
        )
    deep = too_deep(schema)
    if deep is not None:
        raise UsageError(
            f"{where}: {path_text(deep, '$')} is nested more than {MAX_NESTING} levels"
        )
    try:
        text = json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where} is not JSON ({exc})") from None
    compile_schema(schema, where)  # meta-schema and $refs: refused now, not at the first answer
    return dict(json.loads(text))


def _offline(uri: str) -> Any:
    raise ValueError(f"remote $ref {uri} is not fetched: put the schema under $defs")


def compile_schema(schema: Mapping[str, Any], where: str = "the schema") -> jsonschema_rs.Validator:
    """A validator for `schema`; a UsageError if it is not valid JSON Schema. Remote `$ref`s
    are refused (nothing is fetched: a schema must not make requests of its own). Compiled
    validators are kept for the schemas used last, so a schema asked for again and again
    (every call of a program) is checked and compiled once."""
    import jsonschema_rs  # only runs that use a schema pay for it

    try:
        return _compiled(json.dumps(schema, ensure_ascii=False))
    except jsonschema_rs.ValidationError as exc:
        at = path_text(tuple(exc.instance_path), "$", shown=12)
        raise UsageError(f"{where} is not valid JSON Schema: {at}: {_clean(exc.message)}") from None
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        raise UsageError(f"{where} is not valid JSON Schema: {_clean(str(exc))}") from None


@functools.lru_cache(maxsize=64)
def _compiled(text: str) -> jsonschema_rs.Validator:
    """The validator of a schema given as JSON text (the cache key); raises as jsonschema_rs
    does (an error is not cached)."""
    import jsonschema_rs

    raw = json.loads(text)
    jsonschema_rs.meta.validate(raw)
    return jsonschema_rs.validator_for(raw, retriever=_offline, mask="value")


def _clean(text: str) -> str:
    return untrusted.escape_controls(shorten(" ".join(redaction.redact(text).split()), 200))


def output_format(
    schema: Any = None, name: str | None = None, where: str = "the schema"
) -> OutputFormat:
    """What `get_json_response` (no schema) and `get_structured_json_response` ask for: a
    JSON Schema dict, or a pydantic model class (its `model_json_schema()`)."""
    if schema is None:
        return OutputFormat()
    if pydantic_model(schema):
        try:
            produced = schema.model_json_schema()
        except Exception as exc:  # pydantic's own errors: a field type with no JSON Schema
            raise UsageError(
                f"{schema.__name__} cannot produce a JSON Schema: {_clean(str(exc))}"
            ) from None
        name = name or schema.__name__
        schema = produced
    checked = check_schema(schema, where)
    name = name or checked.get("title") or "answer"
    if not isinstance(name, str) or not OUTPUT_NAME.match(name):
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(name))[:64] or "answer"
    return OutputFormat(checked, name)


def pydantic_model(value: Any) -> bool:
    """True for a pydantic model class (pydantic is only looked at if the caller imported it)."""
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None and isinstance(value, type) and issubclass(value, pydantic.BaseModel)
    )


def schema_argument(value: str) -> OutputFormat:
    """`run --schema`: inline JSON (it starts with `{`) or the path of a JSON file."""
    where = "--schema"
    if value.lstrip().startswith("{"):
        text = value
    else:
        try:
            text = files.read_bounded(Path(value), MAX_SCHEMA_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"--schema: cannot read '{value}': {reason}") from None
        where = f"--schema '{value}'"
    try:
        schema = untrusted.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where} is not JSON ({_clean(str(exc))})") from None
    return output_format(schema, where=where)


# --- each answer ---------------------------------------------------------------------------------


class OutputCheck:
    """Checks one run's answers: JSON, valid under the schema, then the caller's own check."""

    def __init__(self, output: OutputFormat, extra: Callable[[Any], Any] | None = None) -> None:
        self.output = output
        self._validator = compile_schema(output.schema) if output.schema is not None else None
        self._extra = extra

    def __call__(self, response: LlmResponse) -> Parsed:
        value = document(response)
        if self._validator is not None:
            error = next(iter(self._validator.iter_errors(value)), None)
            if error is not None:
                raise invalid(_violation(error))
        if self._extra is None:
            return Parsed(value, value)
        try:
            return Parsed(value, self._extra(value))
        except ValueError as exc:  # pydantic's ValidationError is one
            raise invalid(_described(exc)) from None


def document(response: LlmResponse) -> Any:
    """The JSON document an answer holds (a surrounding ``` fence is allowed), or an
    `invalid_output` error: not JSON, too large, nested too deeply, a tool call instead."""
    text = response.text.strip()
    if not text and response.tool_calls:
        raise invalid("the answer called a tool instead of giving a JSON document")
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if len(text) > MAX_DOCUMENT_CHARS:
        raise invalid(f"the JSON answer is larger than {MAX_DOCUMENT_CHARS >> 20} MiB")
    try:
        return untrusted.loads(text)
    except untrusted.NestedTooDeep as exc:
        raise invalid(f"the JSON answer is {exc}") from None
    except ValueError as exc:
        quoted = _clean(repr(shorten(text, _QUOTE_CHARS)))
        raise invalid(f"the answer is not JSON ({_clean(str(exc))}): {quoted}") from None


def _violation(error: jsonschema_rs.ValidationError) -> str:
    """`$.items[2].price: expected number`, from the validator's first error."""
    at = path_text(tuple(error.instance_path), "$", shown=12)
    kind = error.kind
    name = type(kind).__name__
    if name == "Type":
        what = f"expected {' or '.join(map(str, getattr(kind, 'types', ())))}"
    elif name == "Required":
        what = f"missing required property {json.dumps(getattr(kind, 'property', '?'))}"
    elif name == "AdditionalProperties":
        extra = ", ".join(json.dumps(p) for p in getattr(kind, "unexpected", ()))
        what = f"unexpected property {extra}"
    else:
        what = error.message
    return f"{at}: {_clean(what)}"


def _described(exc: ValueError) -> str:
    """A pydantic ValidationError as `$.path: message`; any other ValueError as its text."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = path_text(tuple(first.get("loc", ())), "$", shown=12)
            return f"{where}: {_clean(str(first.get('msg', 'invalid')))}"
        except (TypeError, IndexError, AttributeError, KeyError):
            pass
    return _clean(str(exc) or type(exc).__name__)
