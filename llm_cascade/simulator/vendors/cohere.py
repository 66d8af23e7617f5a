"""Simulated Cohere v2 chat (`POST /cohere/v2/chat`): its message rules (the system turn
first, every tool result answering a call of the assistant turn before it), `tool_plan` with
tool calls, `usage` with `tokens` and `billed_units`, `{"id", "message"}` errors, and named
SSE events in a stream ending with `message-end`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..behaviours import Empty, Reply, Stream
from ..documents import JsonAnswer
from ..wire import Event, StreamParts, cut
from .base import SimRequest, Vendor, body_model, check_image_url, check_key, require
from .openai import bearer

PATH = "/cohere/v2/chat"
KNOWN_FIELDS = {
    "model", "messages", "tools", "documents", "citation_options", "response_format",
    "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
    "presence_penalty", "k", "p", "return_prompt", "logprobs", "tool_choice", "strict_tools",
    "stream", "thinking", "priority",
}  # fmt: skip
ROLES = {"system", "user", "assistant", "tool"}


def _check_content(content: Any, role: str, where: str) -> None:
    if isinstance(content, str):
        return
    require(isinstance(content, list), f"invalid request: {where}.content must be a string or list")
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        require(kind in ("text", "image_url", "document"), f"invalid request: {where}.content[{j}]")
        if kind == "image_url":
            require(role == "user", f"invalid request: {where}: images go in user messages")
            image = part.get("image_url")
            check_image_url(image.get("url") if isinstance(image, Mapping) else None, where)


def _check_messages(messages: Any) -> None:
    require(isinstance(messages, list) and bool(messages), "invalid request: messages is empty")
    pending: set[str] = set()
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        require(isinstance(msg, Mapping), f"invalid request: {where} must be an object")
        role = msg.get("role")
        require(role in ROLES, f"invalid request: {where}.role {role!r} is not valid")
        require(role != "system" or i == 0, "system turn must be the first in the list")
        if role == "tool":
            call_id = msg.get("tool_call_id")
            require(call_id in pending, f"invalid request: tool call id {call_id} not found")
            pending.discard(call_id)
            continue
        require(not pending, f"invalid request: tool calls {sorted(pending)} have no results")
        calls = msg.get("tool_calls")
        if role == "assistant" and calls:
            for call in calls:
                fn = call.get("function") if isinstance(call, Mapping) else None
                require(
                    isinstance(fn, Mapping)
                    and isinstance(call.get("id"), str)
                    and isinstance(fn.get("arguments"), str),
                    f"invalid request: {where}.tool_calls need id and function.arguments",
                )
                pending.add(call["id"])
            continue
        require("content" in msg, f"invalid request: {where}.content is required")
        _check_content(msg["content"], str(role), where)
    require(not pending, f"invalid request: tool calls {sorted(pending)} have no results")


def _usage(reply: Reply) -> dict[str, Any]:
    # `tokens` counts Cohere's own prompt template too; billing leaves it out.
    return {
        "billed_units": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        "tokens": {"input_tokens": reply.input_tokens + 200, "output_tokens": reply.output_tokens},
    }


def _check_response_format(rf: Any) -> None:
    require(isinstance(rf, Mapping), "invalid request: response_format must be an object")
    require(
        rf.get("type") in ("text", "json_object"),
        "invalid request: response_format.type must be one of text, json_object",
    )
    schema = rf.get("json_schema")
    require(
        schema is None or isinstance(schema, Mapping),
        "invalid request: response_format.json_schema must be an object",
    )


class CohereVendor(Vendor):
    name = "cohere"

    def model_for(self, path: str, body: Any) -> str | None:
        if path != PATH:
            return None
        return body_model(body)

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        check_key(bearer(request), api_key)
        body = request.body
        require(isinstance(body, Mapping), "invalid request: the body must be a JSON object")
        for field in sorted(set(body) - KNOWN_FIELDS):
            require(
                False, f"invalid request: unknown field: parameter {field} is not a valid field"
            )
        require(
            isinstance(body.get("model"), str) and bool(body["model"]),
            "invalid request: model is required",
        )
        _check_messages(body.get("messages"))
        require(isinstance(body.get("stream", False), bool), "invalid request: stream is a bool")
        if "response_format" in body:
            _check_response_format(body["response_format"])

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        rf = request.body.get("response_format") or {}
        return JsonAnswer(rf.get("json_schema")) if rf.get("type") == "json_object" else None

    def last_user_text(self, body: Any) -> str:
        for msg in reversed(body.get("messages") or []):
            if isinstance(msg, Mapping) and msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, str):
                    return content
                parts = content if isinstance(content, list) else ()
                return "".join(p.get("text", "") for p in parts if isinstance(p, Mapping))
        return ""

    @staticmethod
    def _calls(reply: Reply, serial: int) -> list[dict[str, Any]]:
        return [
            {
                "id": c.id or f"{c.name}_sim{serial}{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(reply.tool_calls)
        ]

    @staticmethod
    def _finish(reply: Reply) -> str:
        return reply.stop_reason or ("TOOL_CALL" if reply.tool_calls else "COMPLETE")

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant"}
        if reply.tool_calls:  # the text is the plan before the calls
            message.update(tool_plan=text, tool_calls=self._calls(reply, serial))
        else:
            message["content"] = [{"type": "text", "text": text}] if text else []
        return {
            "id": f"sim-{serial}",
            "finish_reason": self._finish(reply),
            "message": message,
            "usage": _usage(reply),
        }

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        message = {"role": "assistant", "content": []}
        return {
            "id": "sim-empty",
            "finish_reason": "COMPLETE",
            "message": message,
            "usage": _usage(Reply(output_tokens=0)),
        }

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        return {"id": "sim-error", "message": message}

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """`message-start`; text in a content block, or (with tool calls) the plan as
        `tool-plan-delta`s and each call as start, argument deltas, end; `message-end`."""
        head = [
            _event(
                "message-start",
                id=f"sim-{serial}",
                delta={
                    "message": {
                        "role": "assistant",
                        "content": [],
                        "tool_plan": "",
                        "tool_calls": [],
                        "citations": [],
                    }
                },
            )
        ]
        body: list[Event] = []
        if reply.tool_calls:
            body += [
                _event("tool-plan-delta", content=True, delta={"message": {"tool_plan": p}})
                for p in pieces
            ]
            for i, call in enumerate(self._calls(reply, serial)):
                start = {**call, "function": {**call["function"], "arguments": ""}}
                body.append(
                    _event(
                        "tool-call-start",
                        content=True,
                        index=i,
                        delta={"message": {"tool_calls": start}},
                    )
                )
                for piece in cut(call["function"]["arguments"], options.tool_fragments):
                    fn = {"function": {"arguments": piece}}
                    body.append(
                        _event(
                            "tool-call-delta",
                            content=True,
                            index=i,
                            delta={"message": {"tool_calls": fn}},
                        )
                    )
                body.append(_event("tool-call-end", index=i))
        elif pieces:
            start = {"message": {"content": {"type": "text", "text": ""}}}
            body.append(_event("content-start", index=0, delta=start))
            body += [
                _event(
                    "content-delta",
                    content=True,
                    index=0,
                    delta={"message": {"content": {"text": p}}},
                )
                for p in pieces
            ]
            body.append(_event("content-end", index=0))
        end = _event(
            "message-end", delta={"finish_reason": self._finish(reply), "usage": _usage(reply)}
        )
        return StreamParts(head, body, [end] if options.terminator else [])

    def stream_empty(self, empty: Empty, request: SimRequest) -> StreamParts:
        end = _event(
            "message-end",
            delta={"finish_reason": "COMPLETE", "usage": _usage(Reply(output_tokens=0))},
        )
        return StreamParts(tail=[end])

    def stream_error(self, status: int, message: str, code: str | None) -> Event:
        """A stream that fails ends with the finish reason ERROR."""
        return _event("message-end", delta={"finish_reason": "ERROR", "error": message})

    def malformed(self) -> Event:
        from ..wire import MALFORMED

        return Event(MALFORMED, "content-delta", raw=True)


def _event(kind: str, *, content: bool = False, **fields: Any) -> Event:
    return Event({"type": kind, **fields}, kind, content=content)


VENDOR = CohereVendor()
