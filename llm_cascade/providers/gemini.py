"""Google Gemini `generateContent`, v1beta: key in a header, escaped model ids, tool round trips."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..types import (
    ContentBlock,
    Conversation,
    ImagePart,
    LlmResponse,
    Message,
    OutputFormat,
    TextBlock,
    ToolCall,
    compact_json,
)
from .base import (
    Adapter,
    CallOptions,
    ProbeRequest,
    WireRequest,
    arguments_object,
    context_code,
    count,
    deep_merge,
    error_summary,
    joined_system,
    json_or_text,
    merge_turns,
    new_call_id,
    obj,
    tool_name,
)
from .streaming import (
    Delta,
    EndOfStream,
    StopDelta,
    StreamEvent,
    StreamParser,
    TextDelta,
    ToolCallDelta,
    UsageDelta,
    event_json,
)

# Finish reasons that mean the answer was withheld: fail over rather than return it.
BLOCKED_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


# `responseSchema` is an OpenAPI 3.0 subset: these keys carry over from a JSON Schema, the rest
# are dropped (the answer is checked against the whole schema locally anyway).
SCHEMA_KEYS = frozenset(
    {
        "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "minimum",
        "maximum", "required",
    }
)  # fmt: skip
_MAX_REF_DEPTH = 32  # nested $ref expansions: deeper means a recursive schema


class _Inexpressible(Exception):
    """The schema needs what `responseSchema` cannot say (a recursive $ref, a free object)."""


def response_schema(schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON Schema in `responseSchema`'s terms, or None if it cannot be said there: then only
    JSON is asked for (`responseMimeType`) and the answer is checked locally."""
    try:
        return _openapi(schema, schema, 0)
    except _Inexpressible:
        return None


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
    """`node` with a local `$ref` (`#/$defs/X`, `#/definitions/X`) replaced by its target."""
    while "$ref" in node:
        ref = node["$ref"]
        if depth > _MAX_REF_DEPTH or not isinstance(ref, str) or not ref.startswith("#/"):
            raise _Inexpressible
        target: Any = root
        for step in ref[2:].split("/"):
            target = obj(target).get(step.replace("~1", "/").replace("~0", "~"))
        if not isinstance(target, Mapping):
            raise _Inexpressible
        node, depth = target, depth + 1
    return node


def _openapi(node: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> dict[str, Any]:
    node = _resolve(node, root, depth)
    out: dict[str, Any] = {k: v for k, v in node.items() if k in SCHEMA_KEYS}
    if "const" in node:
        out["enum"] = [node["const"]]
    if "enum" in out and not all(isinstance(v, str) for v in out["enum"]):
        del out["enum"]  # Gemini enums are strings
    kind = node.get("type")
    kinds = list(kind) if isinstance(kind, list) else [] if kind is None else [kind]
    if "null" in kinds:
        out["nullable"] = True
        kinds.remove("null")
    variants = node.get("anyOf", node.get("oneOf"))
    if isinstance(variants, list):
        out["anyOf"] = [_openapi(obj(v), root, depth + 1) for v in variants]
    elif len(kinds) > 1:
        out["anyOf"] = [_openapi({**node, "type": k}, root, depth + 1) for k in kinds]
        return out
    elif kinds and isinstance(kinds[0], str):
        out["type"] = kinds[0].upper()
    elif "properties" in node:
        out["type"] = "OBJECT"
    else:
        raise _Inexpressible  # no type: any value goes
    properties = obj(node.get("properties"))
    if out.get("type") == "OBJECT":
        if not properties:
            raise _Inexpressible  # Gemini refuses an OBJECT without properties
        out["properties"] = {k: _openapi(obj(v), root, depth + 1) for k, v in properties.items()}
        out["propertyOrdering"] = list(properties)  # keep the schema's order in the answer
    if out.get("type") == "ARRAY" and isinstance(node.get("items"), Mapping):
        out["items"] = _openapi(node["items"], root, depth + 1)
    return out


def generation_output(output: OutputFormat) -> dict[str, Any]:
    """The `generationConfig` fields that ask for JSON, and for the schema where it fits."""
    config: dict[str, Any] = {"responseMimeType": "application/json"}
    wire = output.wire_schema
    schema = response_schema(wire) if wire is not None else None
    if schema is not None:
        config["responseSchema"] = schema
    return config


def model_path(model: str) -> str:
    """`models/<id>` (or `tunedModels/<id>`) with the id percent-encoded as one segment."""
    collection, sep, name = model.partition("/")
    if not (sep and collection in ("models", "tunedModels")):
        collection, name = "models", model
    return f"{collection}/{quote(name, safe='')}"


def _function_response(conversation: Conversation, msg: Message) -> dict[str, Any]:
    name = tool_name(conversation, msg)
    # The API documents `output` as the key for a result; a JSON object is the result itself.
    result = json_or_text(msg.text)
    response: dict[str, Any] = {
        "name": name or msg.tool_call_id or "unknown",  # old files named the function here
        "response": result if isinstance(result, dict) else {"output": result},
    }
    if name and msg.tool_call_id:
        response["id"] = msg.tool_call_id
    return {"functionResponse": response}


def _parts(conversation: Conversation, msg: Message) -> tuple[str, list[dict[str, Any]]]:
    """One message as (role, parts): roles are `user` and `model`; tool results are user parts."""
    if msg.role == "tool":
        return "user", [_function_response(conversation, msg)]
    parts: list[dict[str, Any]] = [
        {"inlineData": {"mimeType": p.media_type, "data": p.data}}
        if isinstance(p, ImagePart)  # URLs are not taken: images.unfit skips the entry
        else {"text": p.text}
        for p in msg.parts
        if isinstance(p, ImagePart) or p.text
    ]
    for call in msg.tool_calls:
        fn: dict[str, Any] = {"name": call.name, "args": arguments_object(call)}
        if call.id:
            fn["id"] = call.id
        parts.append({"functionCall": fn})
    return ("model" if msg.role == "assistant" else "user"), parts


def contents(conversation: Conversation) -> list[dict[str, Any]]:
    """The `contents` array. Consecutive turns of one role are merged, so all responses to one
    function-call turn travel together as the API requires; turns with no parts are dropped
    (the API rejects empty parts)."""
    turns = merge_turns(
        _parts(conversation, m) for m in conversation.messages if m.role != "system"
    )
    return [{"role": role, "parts": parts} for role, parts in turns if parts]


def _declaration(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": name, "description": description}
    # An OBJECT schema without properties is rejected; a function without arguments has none.
    if parameters.get("properties") or parameters.get("type", "object") != "object":
        decl["parameters"] = dict(parameters)
    return decl


def _detail(data: Any, kind: str) -> Mapping[str, Any]:
    """The `google.rpc.<kind>` entry of an error's `details` list, or an empty object."""
    details = obj(obj(data).get("error")).get("details")
    for item in details if isinstance(details, list) else ():
        if str(obj(item).get("@type", "")).endswith(f"google.rpc.{kind}"):
            return obj(item)
    return {}


def _parse_part(raw: Any) -> ContentBlock | None:
    part = obj(raw)
    if part.get("thought") is True:  # a thought summary, not answer text
        return None
    text = part.get("text")
    if isinstance(text, str) and text:
        return TextBlock(text)
    call = part.get("functionCall")
    if isinstance(call, Mapping):
        call_id = call.get("id")
        return ToolCall(
            call_id if isinstance(call_id, str) and call_id else new_call_id(),
            str(call.get("name") or ""),
            compact_json(call.get("args") or {}),
        )
    return None


def _usage(data: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens from `usageMetadata`."""
    usage = obj(data.get("usageMetadata"))
    return count(usage.get("promptTokenCount")), count(usage.get("candidatesTokenCount"))


def _check_prompt(data: Mapping[str, Any]) -> None:
    blocked = obj(data.get("promptFeedback")).get("blockReason")
    if blocked:
        raise Adapter.empty(f"prompt blocked ({blocked})")


def _finish_reason(candidate: Mapping[str, Any]) -> str | None:
    """The candidate's finishReason; raises if it means the answer was withheld."""
    finish = candidate.get("finishReason")
    stop_reason = finish if isinstance(finish, str) else None
    if stop_reason in BLOCKED_FINISH:
        raise Adapter.empty(f"answer blocked (finishReason: {stop_reason})")
    return stop_reason


def _answer_blocks(candidate: Mapping[str, Any]) -> list[ContentBlock]:
    parts = obj(candidate.get("content")).get("parts")
    parsed = (_parse_part(p) for p in (parts if isinstance(parts, list) else ()))
    return [b for b in parsed if b is not None]


def _auth(options: CallOptions) -> dict[str, str]:
    # The key goes in a header: a URL ends up in logs and error texts.
    return {"x-goog-api-key": options.api_key} if options.api_key else {}


class GeminiAdapter(Adapter):
    """Gemini generateContent, v1beta."""

    type_name = "gemini"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body: dict[str, Any] = {"contents": contents(conversation)}
        system = joined_system(conversation)
        if system is not None:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        if conversation.tools:
            decls = [_declaration(t.name, t.description, t.parameters) for t in conversation.tools]
            body["tools"] = [{"functionDeclarations": decls}]
        config: dict[str, Any] = {}
        if options.max_tokens is not None:
            config["maxOutputTokens"] = options.max_tokens
        if options.temperature is not None:
            config["temperature"] = options.temperature
        if options.output is not None:
            config.update(generation_output(options.output))
        if config:
            body["generationConfig"] = config
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{options.base_url}/v1beta/{model_path(options.model)}:{method}"
        return WireRequest(url, deep_merge(body, options.extra), _auth(options))

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        self.reject_error_body(data)
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            _check_prompt(data)
            raise self.empty("no candidates")
        candidate = obj(candidates[0])
        stop_reason = _finish_reason(candidate)
        version = data.get("modelVersion")
        return self.answer(
            _answer_blocks(candidate),
            version if isinstance(version, str) and version else options.model,
            _usage(data),
            stop_reason,
            f"no text or function calls (finishReason: {stop_reason})",
        )

    def parse_error(self, data: Any) -> tuple[str | None, str | None]:
        """Prefer the ErrorInfo reason (e.g. API_KEY_INVALID, sent with a 400) to the status."""
        message, code = error_summary(data)
        reason = _detail(data, "ErrorInfo").get("reason")
        if not isinstance(reason, str) or not reason:
            return message, context_code(message, code)
        text = obj(obj(data).get("error")).get("message")
        return (f"{reason}: {text}" if isinstance(text, str) else reason), reason

    def retry_after(self, data: Any) -> float | None:
        """A 429 names its wait as RetryInfo.retryDelay (e.g. "37s") in the body."""
        match = _DURATION.match(str(_detail(data, "RetryInfo").get("retryDelay", "")))
        return float(match.group(1)) if match else None

    # --- health probes ---------------------------------------------------------------------

    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        """`GET /v1beta/models/{model}`: 404 when the model does not exist."""
        url = f"{options.base_url}/v1beta/{model_path(options.model)}"
        return (ProbeRequest(url, _auth(options)),)

    # --- streaming (SSE) ---------------------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return GeminiStreamParser(self)


class GeminiStreamParser(StreamParser):
    """`streamGenerateContent?alt=sse`: each event is a whole `GenerateContentResponse` frame.

    There is no end marker: the frame with a `finishReason` is the last one, and carries the
    final usage. Function calls arrive whole. A blocked prompt or answer fails as the whole
    reply does, even after text arrived. An error frame carries its HTTP status in
    `error.code` and is the error that status would be.
    """

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self._adapter = adapter
        self._calls = 0  # tool calls seen: each gets the next index

    def feed(self, event: StreamEvent) -> list[Delta]:
        data = event_json(event)
        if not isinstance(data, Mapping):
            raise self._adapter.malformed("stream event is not a JSON object")
        status = obj(data.get("error")).get("code")
        if isinstance(status, int) and 400 <= status <= 599:
            raise self._adapter.error_event(data, status)
        self._adapter.reject_error_body(data)
        deltas = self.model_delta(data.get("modelVersion"))
        if isinstance(data.get("usageMetadata"), Mapping):
            deltas.append(UsageDelta(*_usage(data)))
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            _check_prompt(data)
            return deltas  # a frame with usage only
        candidate = obj(candidates[0])
        stop_reason = _finish_reason(candidate)
        for block in _answer_blocks(candidate):
            if isinstance(block, TextBlock):
                deltas.append(TextDelta(block.text))
            else:
                deltas.append(ToolCallDelta(self._calls, block.id, block.name, block.arguments))
                self._calls += 1
        if stop_reason is not None:
            deltas += [StopDelta(stop_reason), EndOfStream()]
        return deltas


ADAPTER = GeminiAdapter()
