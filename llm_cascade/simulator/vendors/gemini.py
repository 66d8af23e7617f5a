"""Simulated Gemini `generateContent` (v1beta), with its request rules and error shapes.

Routes `POST /v1beta/models/<id>:generateContent` and `:streamGenerateContent` (and
`tunedModels/<id>`); the id is one percent-encoded path segment. A stream is server-sent events
with `?alt=sse` and, as the real API answers without it, one JSON array written element by
element; other `alt` values are refused. The key is read from `x-goog-api-key` (or `?key=`,
which the real API also accepts). A missing key is a 403 and a wrong one a 400 with reason
API_KEY_INVALID, as the real service answers. A 429's wait goes in the body as RetryInfo, not
in a header.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..behaviours import Empty, Reply, Stream
from ..documents import JsonAnswer
from ..wire import Event, Framing, JsonArray, Sse, StreamParts
from .base import Invalid, SimRequest, Vendor, check_image_data, require

ROUTE = re.compile(
    r"^/v1beta/(models|tunedModels)/([^/:]+):(generateContent|streamGenerateContent)$"
)
STREAM_METHOD = ":streamGenerateContent"
KNOWN_FIELDS = {
    "contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
    "generationConfig", "cachedContent",
}  # fmt: skip
CONFIG_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "mediaResolution",
}  # fmt: skip
PART_DATA = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult",
}  # fmt: skip
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
_RPC = "type.googleapis.com/google.rpc."


def _reject_unknown(fields: Any, known: set[str]) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise Invalid(
            400, f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
        )


def _check_part(part: Any, role: str, where: str) -> None:
    require(isinstance(part, Mapping), f"{where}: expected an object")
    data = set(part) & PART_DATA
    require(
        len(data) == 1, f"{where}: a part must hold exactly one of {', '.join(sorted(PART_DATA))}"
    )
    if "text" in part:
        require(isinstance(part["text"], str), f"{where}.text: expected a string")
    if "inlineData" in part:
        blob = part["inlineData"]
        require(isinstance(blob, Mapping), f"{where}.inlineData: expected an object")
        check_image_data(blob.get("data"), blob.get("mimeType"), f"{where}.inlineData")
    if "functionCall" in part:
        fn = part["functionCall"]
        require(role == "model", f"{where}: functionCall parts belong to model turns")
        require(
            isinstance(fn, Mapping) and isinstance(fn.get("name"), str),
            f"{where}.functionCall.name: required",
        )
        require(
            isinstance(fn.get("args", {}), Mapping),
            f"{where}.functionCall.args: expected an object",
        )
    if "functionResponse" in part:
        fn = part["functionResponse"]
        require(role == "user", f"{where}: functionResponse parts belong to user turns")
        require(
            isinstance(fn, Mapping) and isinstance(fn.get("name"), str),
            f"{where}.functionResponse.name: required",
        )
        require(
            isinstance(fn.get("response"), Mapping),
            f"{where}.functionResponse.response: expected an object",
        )


def _count(content: Mapping[str, Any], key: str) -> int:
    return sum(1 for p in content["parts"] if key in p)


def _check_contents(contents: Any) -> None:
    require(
        isinstance(contents, list) and bool(contents),
        "* GenerateContentRequest.contents: contents is not specified",
    )
    for i, content in enumerate(contents):
        where = f"* GenerateContentRequest.contents[{i}]"
        require(isinstance(content, Mapping), f"{where}: expected an object")
        role = content.get("role", "user")
        require(role in ("user", "model"), "Please use a valid role: user, model.")
        parts = content.get("parts")
        require(
            isinstance(parts, list) and bool(parts),
            f"{where}.parts: contents.parts must not be empty.",
        )
        for j, part in enumerate(parts):
            _check_part(part, role, f"{where}.parts[{j}]")
    for i, content in enumerate(contents):
        calls = _count(content, "functionCall")
        responses = _count(content, "functionResponse")
        before = contents[i - 1] if i else None
        after = contents[i + 1] if i + 1 < len(contents) else None
        if calls:
            require(
                before is not None and before.get("role", "user") == "user",
                "Please ensure that function call turn comes immediately after a user turn or"
                " after a function response turn.",
            )
        if responses:
            require(
                before is not None and _count(before, "functionCall") > 0,
                "Please ensure that function response turn comes immediately after a function"
                " call turn.",
            )
        if calls and after is not None:
            require(
                _count(after, "functionResponse") == calls,
                "Please ensure that the number of function response parts is equal to the number"
                " of function call parts of the function call turn.",
            )


def _check_tools(tools: Any) -> None:
    require(isinstance(tools, list), "* GenerateContentRequest.tools: expected a list")
    for i, tool in enumerate(tools):
        require(
            isinstance(tool, Mapping), f"* GenerateContentRequest.tools[{i}]: expected an object"
        )
        for j, decl in enumerate(tool.get("functionDeclarations") or []):
            where = f"* GenerateContentRequest.tools[{i}].function_declarations[{j}]"
            require(isinstance(decl, Mapping), f"{where}: expected an object")
            name = decl.get("name")
            require(
                isinstance(name, str) and bool(FUNCTION_NAME.match(name)),
                f"{where}.name: Invalid function name. Must start with a letter or an underscore."
                " Must be a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, with a"
                " maximum length of 64.",
            )
            params = decl.get("parameters")
            if params is None:
                continue
            require(isinstance(params, Mapping), f"{where}.parameters: expected an object")
            if str(params.get("type", "")).lower() == "object":
                require(
                    bool(params.get("properties")),
                    f"{where}.parameters.properties: should be non-empty for OBJECT type",
                )


MIME_TYPES = {
    "text/plain",
    "application/json",
    "application/xml",
    "application/yaml",
    "text/x.enum",
}
# The OpenAPI subset `responseSchema` takes (`Schema` in the API reference).
SCHEMA_FIELDS = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
    "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
}  # fmt: skip
SCHEMA_TYPES = {
    "TYPE_UNSPECIFIED",
    "STRING",
    "NUMBER",
    "INTEGER",
    "BOOLEAN",
    "ARRAY",
    "OBJECT",
    "NULL",
}


def _check_schema(schema: Any, where: str) -> None:
    """A `responseSchema`: only the Schema object's fields, known types, OBJECTs with
    properties (what the API refuses otherwise)."""
    require(isinstance(schema, Mapping), f"* {where}: expected an object")
    unknown = sorted(set(schema) - SCHEMA_FIELDS)
    if unknown:
        raise Invalid(
            400,
            f'Invalid JSON payload received. Unknown name "{unknown[0]}" at'
            f" '{where}': Cannot find field.",
        )
    kind = schema.get("type")
    if kind is not None:
        require(
            isinstance(kind, str) and kind.upper() in SCHEMA_TYPES,
            f"Invalid value at '{where}.type' ({kind!r}): not a Type",
        )
        if kind.upper() == "OBJECT":
            require(
                bool(schema.get("properties")),
                f"* {where}.properties: should be non-empty for OBJECT type",
            )
    for name, child in (schema.get("properties") or {}).items():
        _check_schema(child, f"{where}.properties[{name}]")
    if "items" in schema:
        _check_schema(schema["items"], f"{where}.items")
    for i, child in enumerate(schema.get("anyOf") or []):
        _check_schema(child, f"{where}.any_of[{i}]")


def _check_output(config: Mapping[str, Any]) -> None:
    mime = config.get("responseMimeType")
    if mime is not None:
        require(
            mime in MIME_TYPES,
            f"* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes"
            f" are {', '.join(sorted(MIME_TYPES))}; got {mime!r}",
        )
    for field in ("responseSchema", "responseJsonSchema"):
        if field in config:
            require(
                mime in ("application/json", "text/x.enum"),
                "* GenerateContentRequest.generation_config.response_mime_type: must be"
                " application/json or text/x.enum when a response schema is set",
            )
    require(
        not ("responseSchema" in config and "responseJsonSchema" in config),
        "* GenerateContentRequest.generation_config: response_schema and"
        " response_json_schema cannot both be set",
    )
    if "responseSchema" in config:
        _check_schema(config["responseSchema"], "generation_config.response_schema")


def _check_config(config: Any) -> None:
    require(isinstance(config, Mapping), "generationConfig: expected an object")
    _reject_unknown(config, CONFIG_FIELDS)
    _check_output(config)
    if "maxOutputTokens" in config:
        n = config["maxOutputTokens"]
        require(isinstance(n, int) and n > 0, "max_output_tokens must be positive")
    if "temperature" in config:
        t = config["temperature"]
        require(isinstance(t, int | float) and 0 <= t <= 2, "temperature must be between 0 and 2")


class GeminiVendor(Vendor):
    """Gemini generateContent."""

    name = "gemini"
    retry_after_header = False

    def model_for(self, path: str, body: Any) -> str | None:
        match = ROUTE.match(path)
        if match is None:
            return None
        name = unquote(match.group(2))
        return name if match.group(1) == "models" else f"tunedModels/{name}"

    def check_auth(self, request: SimRequest, api_key: str | None) -> None:
        query = parse_qs(urlsplit(request.target).query)
        key = request.headers.get("x-goog-api-key") or next(iter(query.get("key", [])), None)
        if not key:
            raise Invalid(
                403,
                "Method doesn't allow unregistered callers (callers without established"
                " identity). Please use API Key or other form of API consumer identity to call"
                " this API.",
            )
        if api_key is not None and key != api_key:
            raise Invalid(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        self.check_auth(request, api_key)
        alt = _alt(request)
        require(
            alt in ("json", "sse"),
            f"the simulator answers alt=json (the default) or alt=sse, not alt={alt}",
        )
        body = request.body
        require(isinstance(body, Mapping), "the body must be a JSON object")
        _reject_unknown(body, KNOWN_FIELDS)
        _check_contents(body.get("contents"))
        system = body.get("systemInstruction")
        if system is not None:
            parts = system.get("parts") if isinstance(system, Mapping) else None
            require(
                isinstance(parts, list)
                and all(isinstance(p, Mapping) and "text" in p for p in parts),
                "* GenerateContentRequest.system_instruction: only text parts are supported",
            )
        if "tools" in body:
            _check_tools(body["tools"])
        if "generationConfig" in body:
            _check_config(body["generationConfig"])

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        for call in reply.tool_calls:
            fn: dict[str, Any] = {"name": call.name, "args": call.arguments}
            if call.id:
                fn["id"] = call.id
            parts.append({"functionCall": fn})
        candidate = {
            "content": {"role": "model", "parts": parts},
            "finishReason": reply.stop_reason or "STOP",
            "index": 0,
        }
        return self._response(request, serial, [candidate], reply.input_tokens, reply.output_tokens)

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        config = request.body.get("generationConfig") or {}
        if config.get("responseMimeType") != "application/json":
            return None
        return JsonAnswer(config.get("responseSchema") or config.get("responseJsonSchema"))

    def streams(self, request: SimRequest) -> bool:
        return request.path.endswith(STREAM_METHOD)

    def framing(self, request: SimRequest) -> Framing:
        if _alt(request) == "sse":
            return Sse(newline="\r\n", content_type="text/event-stream")
        return JsonArray()

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """One `GenerateContentResponse` per text piece or function call, every one with the
        prompt's usage, and a last one with `finishReason` and the full `usageMetadata`
        (no `[DONE]`: the finish ends the stream)."""
        parts: list[dict[str, Any]] = [{"text": piece} for piece in pieces]
        for call in reply.tool_calls:
            fn: dict[str, Any] = {"name": call.name, "args": call.arguments}
            if call.id:
                fn["id"] = call.id
            parts.append({"functionCall": fn})
        final = self._response(request, serial, [], reply.input_tokens, reply.output_tokens)
        prompt_only = {
            "promptTokenCount": reply.input_tokens,
            "totalTokenCount": reply.input_tokens,
        }

        def frame(candidate: dict[str, Any], usage: dict[str, int]) -> dict[str, Any]:
            return {
                "candidates": [{**candidate, "index": 0}],
                "usageMetadata": usage,
                "modelVersion": final["modelVersion"],
                "responseId": final["responseId"],
            }

        body = [
            Event(frame({"content": {"role": "model", "parts": [part]}}, prompt_only), content=True)
            for part in parts
        ]
        finish = reply.stop_reason or "STOP"
        last: dict[str, Any] = {"finishReason": finish}
        if finish in ("STOP", "MAX_TOKENS"):
            last["content"] = {"role": "model", "parts": [{"text": ""}]}
        else:  # a blocked answer ends without content
            last["safetyRatings"] = []
        tail = [Event(frame(last, final["usageMetadata"]))] if options.terminator else []
        return StreamParts(body=body, tail=tail)

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        """`Empty("SAFETY")` (any finish reason) gives a blocked candidate; `Empty("prompt")` a
        blocked prompt; anything else a response with no candidates."""
        reason = empty.reason
        if reason == "prompt":
            out = self._response(request, 0, [], 11, 0)
            out["promptFeedback"] = {"blockReason": "SAFETY"}
            return out
        if reason.isupper():
            candidate = {"finishReason": reason, "index": 0, "safetyRatings": []}
            return self._response(request, 0, [candidate], 11, 0)
        return self._response(request, 0, [], 11, 0)

    @staticmethod
    def _response(
        request: SimRequest, serial: int, candidates: list[Any], tokens_in: int, out: int
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "usageMetadata": {
                "promptTokenCount": tokens_in,
                "candidatesTokenCount": out,
                "totalTokenCount": tokens_in + out,
            },
            "modelVersion": request.model,
            "responseId": f"sim-{serial}-{int(time.time())}",
        }
        if candidates:
            data["candidates"] = candidates
        return data

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        names = set(STATUSES.values())
        default = STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        err: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": code if code in names else default,
        }
        details: list[dict[str, Any]] = []
        if code and code not in names:
            details.append(
                {"@type": _RPC + "ErrorInfo", "reason": code, "domain": "googleapis.com"}
            )
        if retry_after is not None and retry_after.strip().isdigit():
            details.append({"@type": _RPC + "RetryInfo", "retryDelay": f"{retry_after.strip()}s"})
        if details:
            err["details"] = details
        return {"error": err}

    def last_user_text(self, body: Any) -> str:
        for content in reversed(body.get("contents") or []):
            if isinstance(content, Mapping) and content.get("role", "user") == "user":
                texts = [
                    p.get("text") for p in content.get("parts") or () if isinstance(p, Mapping)
                ]
                return "".join(t for t in texts if isinstance(t, str))
        return ""


def _alt(request: SimRequest) -> str:
    """The response format the query asks for (the API's default: json)."""
    values = parse_qs(urlsplit(request.target).query).get("alt")
    return values[-1] if values else "json"


VENDOR = GeminiVendor()
