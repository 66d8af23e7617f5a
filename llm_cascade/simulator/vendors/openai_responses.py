"""Simulated OpenAI Responses API (`POST /v1/responses`): `input` items checked as the API
checks them (every `function_call_output` answers an earlier `function_call` by `call_id`,
and every call is answered), `output` items in the reply, semantic SSE events in a stream."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from ..behaviours import Empty, Reply, Stream
from ..documents import JsonAnswer
from ..wire import Event, StreamParts, cut
from .base import SimRequest, Vendor, body_model, check_image_url, check_key, require
from .openai import bearer

KNOWN_FIELDS = {
    "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature",
    "top_p", "store", "stream", "stream_options", "metadata", "parallel_tool_calls",
    "previous_response_id", "reasoning", "text", "truncation", "user", "include", "service_tier",
    "background", "prompt", "prompt_cache_key", "safety_identifier", "max_tool_calls",
    "top_logprobs", "conversation",
}  # fmt: skip
ROLES = {"user", "assistant", "system", "developer"}
PART_TYPES = {"input_text", "input_image", "input_file", "output_text", "refusal"}
STATUS_CODES = {429: "rate_limit_exceeded", 400: "invalid_request_error"}


def _check_message(item: Mapping[str, Any], where: str) -> None:
    require(item.get("role") in ROLES, f"Invalid value: '{item.get('role')}'. ({where}.role)")
    content = item.get("content")
    if isinstance(content, str):
        return
    require(isinstance(content, list), f"Invalid type for '{where}.content'.")
    for j, part in enumerate(content or ()):
        kind = part.get("type") if isinstance(part, Mapping) else None
        require(kind in PART_TYPES, f"Invalid value: '{kind}'. ({where}.content[{j}].type)")
        if kind == "input_image":
            require(item.get("role") == "user", f"{where}: images go in user messages")
            check_image_url(part.get("image_url"), f"{where}.content[{j}].image_url")
        elif kind == "input_text":
            require(isinstance(part.get("text"), str), f"Missing '{where}.content[{j}].text'.")


def _check_input(items: Any) -> None:
    if isinstance(items, str):
        return
    require(isinstance(items, list), "Invalid type for 'input': expected a string or an array.")
    calls: set[str] = set()
    for i, item in enumerate(items):
        where = f"input[{i}]"
        require(isinstance(item, Mapping), f"Invalid type for '{where}': expected an object.")
        kind = item.get("type", "message")
        if kind == "message":
            _check_message(item, where)
        elif kind == "function_call":
            require(
                isinstance(item.get("call_id"), str) and isinstance(item.get("name"), str),
                f"Missing required parameter: '{where}.call_id' or '{where}.name'.",
            )
            require(
                isinstance(item.get("arguments"), str),
                f"Invalid type for '{where}.arguments': expected a string.",
            )
            calls.add(item["call_id"])
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            require(
                call_id in calls,
                f"No tool call found for function call output with call_id {call_id}.",
            )
            require(
                isinstance(item.get("output"), str),
                f"Invalid type for '{where}.output': expected a string.",
            )
            calls.discard(call_id)
        else:
            require(False, f"Invalid value: '{kind}'. ({where}.type)")
    require(not calls, f"No tool output found for function call {', '.join(sorted(calls))}.")


def _check_tools(tools: Any) -> None:
    require(isinstance(tools, list), "Invalid type for 'tools': expected an array.")
    for i, tool in enumerate(tools):
        require(
            isinstance(tool, Mapping)
            and tool.get("type") == "function"
            and isinstance(tool.get("name"), str),
            f"Missing required parameter: 'tools[{i}].name'.",
        )


def _check_text_format(text: Any) -> None:
    """`text.format`: text, JSON mode, or a named schema given flat (not under `json_schema`)."""
    fmt = text.get("format", {"type": "text"}) if isinstance(text, Mapping) else None
    require(isinstance(fmt, Mapping), "Invalid type for 'text.format': expected an object.")
    assert isinstance(fmt, Mapping)
    kind = fmt.get("type")
    require(
        kind in ("text", "json_object", "json_schema"),
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', 'json_schema'.",
    )
    if kind == "json_schema":
        require(isinstance(fmt.get("name"), str), "Missing required parameter: 'text.format.name'.")
        require(
            isinstance(fmt.get("schema"), Mapping),
            "Missing required parameter: 'text.format.schema'.",
        )


class ResponsesVendor(Vendor):
    name = "openai_responses"

    def model_for(self, path: str, body: Any) -> str | None:
        if not path.endswith("/responses"):
            return None
        return body_model(body)

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        check_key(bearer(request), api_key)
        body = request.body
        require(isinstance(body, Mapping), "the body must be a JSON object")
        for field in sorted(set(body) - KNOWN_FIELDS):
            require(False, f"Unknown parameter: '{field}'.")
        require(
            isinstance(body.get("model"), str) and bool(body["model"]),
            "Missing required parameter: 'model'.",
        )
        require("input" in body, "Missing required parameter: 'input'.")
        _check_input(body["input"])
        if "tools" in body:
            _check_tools(body["tools"])
        require(
            isinstance(body.get("stream", False), bool),
            "Invalid type for 'stream': expected a boolean.",
        )
        if "text" in body:
            _check_text_format(body["text"])

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        fmt = (request.body.get("text") or {}).get("format") or {}
        if fmt.get("type") == "json_object":
            return JsonAnswer()
        return JsonAnswer(fmt.get("schema") or {}) if fmt.get("type") == "json_schema" else None

    def last_user_text(self, body: Any) -> str:
        items = body.get("input")
        if isinstance(items, str):
            return items
        for item in reversed(items or []):
            if isinstance(item, Mapping) and item.get("role") == "user":
                content = item.get("content")
                if isinstance(content, str):
                    return content
                parts = content if isinstance(content, list) else ()
                return "".join(p.get("text", "") for p in parts if isinstance(p, Mapping))
        return ""

    # --- whole replies -----------------------------------------------------------------------

    def _response(
        self, request: SimRequest, serial: int, output: list[Any], reply: Reply, status: str
    ) -> dict[str, Any]:
        incomplete = None
        if reply.stop_reason is not None:
            status, incomplete = "incomplete", {"reason": reply.stop_reason}
        return {
            "id": f"resp_sim_{serial}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": request.model,
            "output": output,
            "usage": {
                "input_tokens": reply.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": reply.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": reply.input_tokens + reply.output_tokens,
            },
            "incomplete_details": incomplete,
            "error": None,
        }

    @staticmethod
    def _message(serial: int, text: str) -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": []}
        return {
            "type": "message",
            "id": f"msg_sim_{serial}",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }

    @staticmethod
    def _calls(reply: Reply, serial: int) -> list[dict[str, Any]]:
        return [
            {
                "type": "function_call",
                "id": f"fc_sim_{serial}_{i}",
                "call_id": c.id or f"call_sim_{serial}_{i}",
                "name": c.name,
                "arguments": json.dumps(c.arguments),
                "status": "completed",
            }
            for i, c in enumerate(reply.tool_calls)
        ]

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        output = [self._message(serial, text)] if text else []
        return self._response(
            request, serial, output + self._calls(reply, serial), reply, "completed"
        )

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        output: list[Any] = []
        if empty.reason.lower() == "refusal":
            refusal = {"type": "refusal", "refusal": "I can't help with that."}
            output = [
                {
                    "type": "message",
                    "id": "msg_sim_refusal",
                    "status": "completed",
                    "role": "assistant",
                    "content": [refusal],
                }
            ]
        return self._response(request, 0, output, Reply(output_tokens=0), "completed")

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        code = code or STATUS_CODES.get(status)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    # --- streams -----------------------------------------------------------------------------

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """`response.created`, `response.in_progress`; a message item with its text deltas;
        per call an `output_item.added` (arguments "") and its arguments deltas; last
        `response.completed` with the usage (`response.incomplete` for a scripted stop)."""
        final = self.reply(reply, "".join(pieces), request, serial)
        opening = {**final, "status": "in_progress", "output": [], "usage": None}
        head = [
            _event("response.created", response=opening),
            _event("response.in_progress", response=opening),
        ]
        body: list[Event] = []
        index = 0
        if pieces:
            item = {**self._message(serial, ""), "status": "in_progress", "content": []}
            body.append(_event("response.output_item.added", output_index=0, item=item))
            body += [
                _event(
                    "response.output_text.delta",
                    content=True,
                    output_index=0,
                    content_index=0,
                    item_id=item["id"],
                    delta=piece,
                )
                for piece in pieces
            ]
            body.append(
                _event(
                    "response.output_text.done",
                    output_index=0,
                    content_index=0,
                    item_id=item["id"],
                    text="".join(pieces),
                )
            )
            index = 1
        for call in self._calls(reply, serial):
            added = {**call, "arguments": "", "status": "in_progress"}
            body.append(
                _event("response.output_item.added", content=True, output_index=index, item=added)
            )
            body += [
                _event(
                    "response.function_call_arguments.delta",
                    content=True,
                    output_index=index,
                    item_id=call["id"],
                    delta=piece,
                )
                for piece in cut(call["arguments"], options.tool_fragments)
            ]
            body.append(_event("response.output_item.done", output_index=index, item=call))
            index += 1
        done = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        tail = [_event(done, response=final)] if options.terminator else []
        return StreamParts(head, body, tail)

    def stream_empty(self, empty: Empty, request: SimRequest) -> StreamParts:
        response = self.empty(empty, request)
        if response["output"]:  # a refusal streams as its own delta
            delta = _event(
                "response.refusal.delta",
                output_index=0,
                content_index=0,
                item_id="msg_sim_refusal",
                delta="I can't help with that.",
            )
            return StreamParts(tail=[delta, _event("response.completed", response=response)])
        return StreamParts(tail=[_event("response.completed", response=response)])

    def stream_error(self, status: int, message: str, code: str | None) -> Event:
        code = code or STATUS_CODES.get(status) or ("server_error" if status >= 500 else None)
        return _event("error", code=code, message=message, param=None)

    def malformed(self) -> Event:
        from ..wire import MALFORMED

        return Event(MALFORMED, "response.output_text.delta", raw=True)


def _event(kind: str, *, content: bool = False, **fields: Any) -> Event:
    """An event whose SSE name is its `type`, as every Responses stream event is."""
    return Event({"type": kind, **fields}, kind, content=content)


VENDOR = ResponsesVendor()
