"""Simulated Mistral chat completions (`POST /mistral/v1/chat/completions`) with Mistral's own
rules: unknown fields are a 422 with validation details, tool-call ids are 9 letters or
digits, a final assistant turn needs `prefix: true`, `tool_choice` takes `any`; errors are
`{"object": "error", ...}`, a 429 names its wait in `ratelimitbysize-reset`; tool calls stream
whole; the last chunk carries the usage."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..behaviours import Reply, Stream
from ..wire import Event, StreamParts
from .base import Invalid, SimRequest, check_image_url, check_key, require
from .openai import OpenAIVendor, bearer, chat_usage

PATH = "/mistral/v1/chat/completions"
KNOWN_FIELDS = {
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n",
    "prediction", "parallel_tool_calls", "prompt_mode", "safe_prompt", "metadata",
}  # fmt: skip
TOOL_CHOICES = {"auto", "none", "any", "required"}
TOOL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limited"}


def _extra_forbidden(field: str) -> Invalid:
    detail = [
        {
            "type": "extra_forbidden",
            "loc": ["body", field],
            "msg": "Extra inputs are not permitted",
            "input": None,
        }
    ]
    return Invalid(422, json.dumps({"detail": detail}), "invalid_request_message_error")


def _check_messages(messages: Any) -> None:
    require(isinstance(messages, list) and bool(messages), "messages: at least one is required")
    for i, msg in enumerate(messages):
        require(isinstance(msg, Mapping), f"messages[{i}]: expected an object")
        for call in msg.get("tool_calls") or ():
            call_id = call.get("id") if isinstance(call, Mapping) else None
            require(
                isinstance(call_id, str) and bool(TOOL_ID.match(call_id)),
                f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, with a length of 9.",
            )
        if msg.get("role") == "tool":
            call_id = msg.get("tool_call_id")
            require(
                isinstance(call_id, str) and bool(TOOL_ID.match(call_id)),
                f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, with a length of 9.",
            )
        content = msg.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, Mapping) and part.get("type") == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, Mapping) else url
                check_image_url(url, f"messages[{i}].content[{j}].image_url")
    last = messages[-1]
    require(
        last.get("role") in ("user", "tool")
        or (last.get("role") == "assistant" and last.get("prefix") is True),
        "Expected last role User or Tool (or Assistant with prefix True) for serving but got"
        f" {last.get('role')}",
    )


class MistralVendor(OpenAIVendor):
    name = "mistral"

    def model_for(self, path: str, body: Any) -> str | None:
        return super().model_for(path, body) if path == PATH else None

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        check_key(bearer(request), api_key)
        body = request.body
        require(isinstance(body, Mapping), "the body must be a JSON object")
        for field in sorted(set(body) - KNOWN_FIELDS):
            raise _extra_forbidden(field)
        _check_messages(body.get("messages"))
        # Besides the checks above, Mistral's messages follow OpenAI's rules (roles, each tool
        # call answered); its string `image_url` is put in OpenAI's form for them.
        shared = {k: v for k, v in body.items() if k in ("model", "tools", "max_tokens", "stream")}
        messages = [{**m, "content": _openai_parts(m.get("content"))} for m in body["messages"]]
        self.check_body({**shared, "messages": messages})
        choice = body.get("tool_choice")
        if isinstance(choice, str):
            require(choice in TOOL_CHOICES, f"tool_choice: Input should be {sorted(TOOL_CHOICES)}")

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        body = super().reply(_with_ids(reply, serial), text, request, serial)
        body["choices"][0]["message"]["prefix"] = False
        return body

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """A role chunk, content chunks, each tool call whole in one chunk, the finish with the
        usage, `[DONE]`."""
        reply = _with_ids(reply, serial)
        meta = {
            "id": f"sim-{serial}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**meta, "choices": [choice], **more}

        head = [Event(chunk({"role": "assistant", "content": ""}))]
        body = [Event(chunk({"content": piece}), content=True) for piece in pieces]
        for i, call in enumerate(reply.tool_calls):
            fn = {"name": call.name, "arguments": json.dumps(call.arguments)}
            delta = {"tool_calls": [{"id": call.id, "function": fn, "index": i}]}
            body.append(Event(chunk(delta), content=True))
        finish = reply.stop_reason or ("tool_calls" if reply.tool_calls else "stop")
        tail = [Event(chunk({"content": ""}, finish, usage=chat_usage(reply)))]
        if options.terminator:
            tail.append(Event("[DONE]", raw=True))
        return StreamParts(head, body, tail)

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        if status == 401:
            return {"message": "Unauthorized", "request_id": "sim"}
        if status == 422 and message.startswith("{"):
            detail: Any = json.loads(message)
            return {"object": "error", "message": detail, "type": code, "param": None, "code": None}
        kind = code or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request")
        number = "1300" if status == 429 else None
        return {"object": "error", "message": message, "type": kind, "param": None, "code": number}


def _openai_parts(content: Any) -> Any:
    """Mistral's image parts (`image_url` a string) as OpenAI's, for the shared checks."""
    if not isinstance(content, list):
        return content
    return [
        {**p, "image_url": {"url": p["image_url"]}}
        if isinstance(p, Mapping) and isinstance(p.get("image_url"), str)
        else p
        for p in content
    ]


def _with_ids(reply: Reply, serial: int) -> Reply:
    """The reply's tool calls with Mistral-shaped ids where the script gave none."""
    calls = tuple(
        replace(c, id=c.id or f"S{serial % 100000:05d}{i:03d}")
        for i, c in enumerate(reply.tool_calls)
    )
    return replace(reply, tool_calls=calls)


VENDOR = MistralVendor()
