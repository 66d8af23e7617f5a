"""Simulated OpenAI Chat Completions (`POST .../chat/completions`), with its request rules."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from ..behaviours import Empty, Reply, Stream
from ..wire import Event, StreamParts, cut
from .base import Invalid, SimRequest, Vendor, check_key, require

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
    require(
        not open_calls,
        "An assistant message with 'tool_calls' must be followed by tool messages responding to"
        " each 'tool_call_id'.",
    )


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


def _usage(reply: Reply) -> dict[str, int]:
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


class OpenAIVendor(Vendor):
    name = "openai"

    def model_for(self, path: str, body: Any) -> str | None:
        if not path.endswith("/chat/completions"):
            return None
        model = body.get("model") if isinstance(body, Mapping) else None
        return model if isinstance(model, str) else ""

    def check_auth(self, request: SimRequest, api_key: str | None) -> None:
        auth = request.headers.get("authorization", "")
        check_key(
            auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None, api_key
        )

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        self.check_auth(request, api_key)
        body = request.body
        require(isinstance(body, Mapping), "the body must be a JSON object")
        unknown = sorted(set(body) - KNOWN_FIELDS)
        require(not unknown, f"Unrecognized request argument supplied: {', '.join(unknown)}")
        require(
            isinstance(body.get("model"), str) and bool(body["model"]),
            "you must provide a model parameter",
        )
        _check_messages(body.get("messages"))
        _check_stream(body)
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
            "usage": _usage(reply),
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
            tail.append(Event({**meta, "choices": [], "usage": _usage(reply)}))
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
