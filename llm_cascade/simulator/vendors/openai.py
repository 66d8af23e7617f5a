"""Simulated OpenAI Chat Completions (`POST .../chat/completions`), with its request rules."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from ..behaviours import Empty, Reply, Stream
from ..documents import JsonAnswer
from ..wire import Event, StreamParts, cut
from .base import Invalid, SimRequest, Vendor, body_model, check_image_url, check_key, require

ROLES = {"system", "developer", "user", "assistant", "tool"}
# Chat Completions rejects arguments it does not know ("Unrecognized request argument").
KNOWN_FIELDS = {
    "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "n", "stop", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "seed",
    "response_format", "stream", "stream_options", "metadata", "store", "reasoning_effort",
    "service_tier", "modalities", "audio", "prediction", "web_search_options", "verbosity",
    "prompt_cache_key", "safety_identifier",
}  # fmt: skip
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


def _check_messages(messages: Any) -> None:
    require(isinstance(messages, list) and bool(messages), "'messages' must be a non-empty array")
    open_calls: set[str] = set()
    for i, msg in enumerate(messages):
        require(isinstance(msg, Mapping), f"messages[{i}] must be an object")
        role = msg.get("role")
        require(role in ROLES, f"messages[{i}].role: invalid value {role!r}")
        content = msg.get("content")
        if role == "tool":
            call_id = msg.get("tool_call_id")
            require(isinstance(call_id, str), f"messages[{i}]: 'tool_call_id' is required")
            require(
                call_id in open_calls,
                "Invalid parameter: messages with role 'tool' must be a response to a preceding"
                " message with 'tool_calls'.",
            )
            open_calls.discard(call_id)
        else:
            require(
                not open_calls,
                "An assistant message with 'tool_calls' must be followed by tool messages"
                f" responding to each 'tool_call_id'. Missing: {', '.join(sorted(open_calls))}",
            )
        calls = msg.get("tool_calls")
        if role == "assistant" and calls is not None:
            require(isinstance(calls, list) and bool(calls), f"messages[{i}].tool_calls: empty")
            for call in calls:
                fn = call.get("function") if isinstance(call, Mapping) else None
                require(
                    isinstance(fn, Mapping)
                    and call.get("type") == "function"
                    and isinstance(call.get("id"), str)
                    and isinstance(fn.get("name"), str)
                    and isinstance(fn.get("arguments"), str),
                    f"messages[{i}].tool_calls: each needs id, type 'function' and"
                    " function.name/arguments (a string)",
                )
                open_calls.add(call["id"])
        else:
            require(
                isinstance(content, str | list),
                f"messages[{i}].content: expected a string, got {type(content).__name__}",
            )
            if isinstance(content, list):
                _check_parts(content, role, f"messages[{i}].content")
    require(
        not open_calls,
        "An assistant message with 'tool_calls' must be followed by tool messages responding to"
        " each 'tool_call_id'.",
    )


def _check_parts(parts: list[Any], role: Any, where: str) -> None:
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        require(kind in ("text", "image_url"), f"{at}.type: invalid content part type {kind!r}")
        if kind == "text":
            require(isinstance(part.get("text"), str), f"{at}.text: expected a string")
            continue
        require(role == "user", f"{at}: Image URLs are only allowed for messages with role 'user'")
        image = part.get("image_url")
        require(isinstance(image, Mapping), f"{at}.image_url: expected an object")
        check_image_url(image.get("url"), f"{at}.image_url.url")


def _check_stream(body: Mapping[str, Any]) -> None:
    stream = body.get("stream")
    require(
        stream is None or isinstance(stream, bool),
        f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__} instead.",
    )
    options = body.get("stream_options")
    if options is None:
        return
    require(
        stream is True, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    )
    require(isinstance(options, Mapping), "Invalid type for 'stream_options': expected an object.")
    require(
        isinstance(options.get("include_usage", False), bool),
        "Invalid type for 'stream_options.include_usage': expected a boolean.",
    )


FORMAT_TYPES = ("text", "json_object", "json_schema")
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
JSON_SCHEMA_FIELDS = {"name", "description", "schema", "strict"}


def _mentions_json(messages: list[Any]) -> bool:
    for msg in messages:
        content = msg.get("content") if isinstance(msg, Mapping) else None
        parts = content if isinstance(content, list) else [content]
        for part in parts:
            text = part.get("text") if isinstance(part, Mapping) else part
            if isinstance(text, str) and "json" in text.lower():
                return True
    return False


def _strict_problem(schema: Any) -> str | None:
    """What strict mode refuses in `schema`: a root that is no object, an object that is not
    closed or does not require every property. (The API refuses more; these are the rules a
    client has to know to choose `strict`.)"""
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        kind = schema.get("type") if isinstance(schema, Mapping) else None
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{kind}\"'."
    stack: list[tuple[Mapping[str, Any], tuple[str, ...]]] = [(schema, ())]
    while stack:
        node, context = stack.pop()
        properties = node.get("properties")
        if node.get("type") == "object" or isinstance(properties, Mapping):
            where = f"In context=({', '.join(repr(c) for c in context)})"
            if node.get("additionalProperties") is not False:
                return (
                    f"{where}, 'additionalProperties' is required to be supplied and to be false."
                )
            names = list(properties) if isinstance(properties, Mapping) else []
            listed = node.get("required")
            required = listed if isinstance(listed, list) else []
            missing = [n for n in names if n not in required]
            if missing:
                return (
                    f"{where}, 'required' is required to be supplied and to be an array"
                    f" including every key in properties. Missing '{missing[0]}'."
                )
        for key in ("properties", "$defs", "definitions"):
            children = node.get(key)
            if isinstance(children, Mapping):
                stack += [
                    (v, (*context, key, k)) for k, v in children.items() if isinstance(v, Mapping)
                ]
        for key in ("items", "anyOf"):
            value = node.get(key)
            for i, child in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(child, Mapping):
                    stack.append((child, (*context, key, str(i))))
    return None


def _check_response_format(body: Mapping[str, Any]) -> None:
    rf = body.get("response_format")
    if rf is None:
        return
    require(isinstance(rf, Mapping), "Invalid type for 'response_format': expected an object.")
    kind = rf.get("type")
    require(
        kind in FORMAT_TYPES,
        f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object', and 'json_schema'.",
    )
    if kind == "json_object":
        require(
            _mentions_json(body.get("messages") or []),
            "'messages' must contain the word 'json' in some form, to use 'response_format' of"
            " type 'json_object'.",
        )
    if kind != "json_schema":
        return
    spec = rf.get("json_schema")
    require(isinstance(spec, Mapping), "Missing required parameter: 'response_format.json_schema'.")
    unknown = sorted(set(spec) - JSON_SCHEMA_FIELDS)
    require(not unknown, f"Unrecognized request argument supplied: {', '.join(unknown)}")
    name = spec.get("name")
    require(
        isinstance(name, str) and bool(SCHEMA_NAME.match(name)),
        "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a"
        " string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
    )
    schema = spec.get("schema")
    require(
        schema is None or isinstance(schema, Mapping),
        "Invalid type for 'response_format.json_schema.schema': expected an object.",
    )
    strict = spec.get("strict", False)
    require(
        strict is None or isinstance(strict, bool),
        "Invalid type for 'response_format.json_schema.strict': expected a boolean.",
    )
    if strict:
        problem = _strict_problem(schema)
        require(problem is None, f"Invalid schema for response_format '{name}': {problem}")


def chat_usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def _check_tools(tools: Any) -> None:
    require(isinstance(tools, list), "'tools' must be an array")
    require(bool(tools), "[] is too short - 'tools'")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        require(
            isinstance(fn, Mapping)
            and tool.get("type") == "function"
            and isinstance(fn.get("name"), str),
            f"tools[{i}]: expected {{type: 'function', function: {{name, ...}}}}",
        )


def bearer(request: SimRequest) -> str | None:
    """The key of an `Authorization: Bearer` header."""
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None


class OpenAIVendor(Vendor):
    name = "openai"

    def model_for(self, path: str, body: Any) -> str | None:
        if not path.endswith("/chat/completions"):
            return None
        return body_model(body)

    def check_auth(self, request: SimRequest, api_key: str | None) -> None:
        check_key(bearer(request), api_key)

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        self.check_auth(request, api_key)
        self.check_body(request.body)

    def check_body(self, body: Any, *, needs_model: bool = True) -> None:
        """The Chat Completions rules for a request body."""
        require(isinstance(body, Mapping), "the body must be a JSON object")
        unknown = sorted(set(body) - KNOWN_FIELDS)
        require(not unknown, f"Unrecognized request argument supplied: {', '.join(unknown)}")
        require(
            not needs_model or (isinstance(body.get("model"), str) and bool(body["model"])),
            "you must provide a model parameter",
        )
        _check_messages(body.get("messages"))
        _check_stream(body)
        _check_response_format(body)
        if "tools" in body:
            _check_tools(body["tools"])
        if "max_tokens" in body:
            require(
                isinstance(body["max_tokens"], int) and body["max_tokens"] > 0,
                "max_tokens must be a positive integer",
            )
        if "temperature" in body:
            t = body["temperature"]
            require(
                isinstance(t, int | float) and 0 <= t <= 2, "temperature must be between 0 and 2"
            )

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        rf = request.body.get("response_format") or {}
        if rf.get("type") == "json_object":
            return JsonAnswer()
        if rf.get("type") == "json_schema":
            return JsonAnswer(rf["json_schema"].get("schema") or {})
        return None

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        calls = [
            {
                "id": c.id or f"call_sim_{serial}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(reply.tool_calls)
        ]
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        finish = reply.stop_reason or ("tool_calls" if calls else "stop")
        return {
            "id": f"chatcmpl-sim-{serial}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": chat_usage(reply),
        }

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """`chat.completion.chunk`s: the role, content pieces, tool-call fragments (id and
        name first, then the arguments in pieces), the finish, the usage if asked, `[DONE]`."""
        stream_options = request.body.get("stream_options") or {}
        with_usage = stream_options.get("include_usage") is True
        meta = {
            "id": f"chatcmpl-sim-{serial}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data: dict[str, Any] = {**meta, "choices": [choice]}
            if with_usage:
                data["usage"] = None  # as every chunk before the usage chunk says
            return data

        def content(delta: dict[str, Any]) -> Event:
            return Event(chunk(delta), content=True)

        head = [Event(chunk({"role": "assistant", "content": "" if pieces else None}))]
        body = [content({"content": piece}) for piece in pieces]
        for i, call in enumerate(reply.tool_calls):
            index = 0 if options.reuse_index_zero else i
            function = {"name": call.name, "arguments": ""}
            call_id = call.id or f"call_sim_{serial}_{i}"
            first = {"index": index, "id": call_id, "type": "function", "function": function}
            body.append(content({"tool_calls": [first]}))
            for piece in cut(json.dumps(call.arguments), options.tool_fragments):
                body.append(
                    content({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        finish = reply.stop_reason or ("tool_calls" if reply.tool_calls else "stop")
        tail = [Event(chunk({}, finish))]
        if with_usage:
            tail.append(Event({**meta, "choices": [], "usage": chat_usage(reply)}))
        if options.terminator:
            tail.append(Event("[DONE]", raw=True))
        return StreamParts(head, body, tail)

    def stream_empty(self, empty: Empty, request: SimRequest) -> StreamParts:
        chunk = {**self.empty(empty, request), "object": "chat.completion.chunk"}
        return StreamParts(tail=[Event(chunk), Event("[DONE]", raw=True)])

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        return {
            "id": "chatcmpl-sim-empty",
            "object": "chat.completion",
            "model": request.model,
            "choices": [],
        }

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


VENDOR = OpenAIVendor()

__all__ = ["VENDOR", "Invalid"]
