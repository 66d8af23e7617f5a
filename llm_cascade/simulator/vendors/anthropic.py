"""Simulated Anthropic Messages API (`POST /v1/messages`), with its request rules.

The rules are the documented ones: `x-api-key` and `anthropic-version` headers, `max_tokens`
required, roles `user`/`assistant` only (system is a top-level field), consecutive turns of
one role combined, every `tool_use` answered by a `tool_result` in the next (user) turn with
the results first, and no `tool_result` without its `tool_use`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..behaviours import Empty, Reply, Stream
from ..documents import JsonAnswer
from ..wire import MALFORMED, Event, StreamParts, cut
from .base import (
    SimRequest,
    Vendor,
    as_forced_call,
    body_model,
    check_image_data,
    check_key,
    require,
)

# Top-level fields of the Messages API; anything else is "Extra inputs are not permitted".
KNOWN_FIELDS = {
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_k", "top_p", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "output_config", "inference_geo",
}  # fmt: skip
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def _blocks(content: Any, where: str) -> list[Mapping[str, Any]]:
    """A message's content as blocks: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    require(isinstance(content, list), f"{where}.content: Input should be a valid list")
    for j, block in enumerate(content):
        require(isinstance(block, Mapping), f"{where}.content.{j}: Input should be an object")
    return list(content)


def _check_block(block: Mapping[str, Any], role: str, where: str) -> None:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        require(isinstance(text, str), f"{where}.text: Field required")
        require(bool(text), "messages: text content blocks must be non-empty")
    elif kind == "tool_use":
        require(
            role == "assistant", f"{where}: tool_use blocks are only allowed in assistant turns"
        )
        require(
            isinstance(block.get("id"), str) and bool(TOOL_USE_ID.match(block["id"])),
            f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
        )
        require(isinstance(block.get("name"), str), f"{where}.name: Field required")
        require(
            isinstance(block.get("input"), Mapping), f"{where}.input: Input should be an object"
        )
    elif kind == "tool_result":
        require(role == "user", f"{where}: tool_result blocks are only allowed in user turns")
        require(isinstance(block.get("tool_use_id"), str), f"{where}.tool_use_id: Field required")
        content = block.get("content", "")
        require(isinstance(content, str | list), f"{where}.content: Input should be a string")
    elif kind == "image":
        require(role == "user", f"{where}: image blocks are only allowed in user turns")
        source = block.get("source")
        require(isinstance(source, Mapping), f"{where}.source: Field required")
        assert isinstance(source, Mapping)  # for the type checker: `require` raised otherwise
        if source.get("type") == "url":
            require(
                isinstance(source.get("url"), str)
                and source["url"].startswith(("https://", "http://")),
                f"{where}.source.url: Input should be a valid URL",
            )
        else:
            require(
                source.get("type") == "base64",
                f"{where}.source.type: Input tag should be 'base64' or 'url'",
            )
            check_image_data(source.get("data"), source.get("media_type"), f"{where}.source")
    elif kind not in ("document", "thinking", "redacted_thinking"):
        require(False, f"{where}.type: Input tag {kind!r} does not match any of the expected tags")


def _combined(messages: list[Any]) -> list[tuple[str, list[Mapping[str, Any]], int]]:
    """Consecutive turns of one role combined into one, as the API does: (role, blocks, index)."""
    turns: list[tuple[str, list[Mapping[str, Any]], int]] = []
    for i, msg in enumerate(messages):
        require(isinstance(msg, Mapping), f"messages.{i}: Input should be an object")
        role = msg.get("role")
        require(
            role != "system",
            'messages: Unexpected role "system". The Messages API accepts a top-level `system`'
            ' parameter, not "system" as an input message role.',
        )
        require(
            role in ("user", "assistant"),
            f"messages.{i}.role: Input should be 'user' or 'assistant'",
        )
        blocks = _blocks(msg.get("content"), f"messages.{i}")
        for j, block in enumerate(blocks):
            _check_block(block, role, f"messages.{i}.content.{j}")
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, list(blocks), i))
    return turns


def _check_messages(messages: Any) -> None:
    require(isinstance(messages, list), "messages: Field required")
    require(bool(messages), "messages: at least one message is required")
    turns = _combined(messages)
    require(turns[0][0] == "user", 'messages: first message must use the "user" role')
    pending: set[str] = set()  # tool_use ids of the previous assistant turn
    for n, (role, blocks, i) in enumerate(turns):
        final_assistant = role == "assistant" and n == len(turns) - 1
        require(
            bool(blocks) or final_assistant,
            f"messages.{i}: all messages must have non-empty content except for the optional"
            " final assistant message",
        )
        if final_assistant and blocks and blocks[-1].get("type") == "text":
            text = str(blocks[-1].get("text", ""))
            require(
                text == text.rstrip(), "final assistant content cannot end with trailing whitespace"
            )
        kinds = [b.get("type") for b in blocks]
        results = [str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result"]
        leading = kinds[: len(results)] == ["tool_result"] * len(results)
        if pending:
            missing = sorted(pending - set(results))
            require(
                not missing and leading,
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately"
                f" after: {', '.join(missing or sorted(pending))}. Each `tool_use` block must have"
                " a corresponding `tool_result` block in the next message.",
            )
        unexpected = sorted(set(results) - pending)
        require(
            not unexpected,
            f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` blocks:"
            f" {', '.join(unexpected)}. Each `tool_result` block must have a corresponding"
            " `tool_use` block in the previous message.",
        )
        pending = {str(b["id"]) for b in blocks if b.get("type") == "tool_use"}


def _check_tools(tools: Any) -> None:
    require(isinstance(tools, list), "tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        require(isinstance(tool, Mapping), f"tools.{i}: Input should be an object")
        if tool.get("type", "custom") != "custom":
            continue  # a server tool (web search, code execution...)
        require(
            isinstance(tool.get("name"), str) and bool(TOOL_NAME.match(tool["name"])),
            f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
        )
        schema = tool.get("input_schema")
        require(isinstance(schema, Mapping), f"tools.{i}.custom.input_schema: Field required")
        require(
            schema.get("type") == "object",
            f"tools.{i}.custom.input_schema.type: Input should be 'object'",
        )


TOOL_CHOICES = ("auto", "any", "tool", "none")


def _check_tool_choice(body: Mapping[str, Any]) -> None:
    choice = body["tool_choice"]
    require(isinstance(choice, Mapping), "tool_choice: Input should be an object")
    kind = choice.get("type")
    require(
        kind in TOOL_CHOICES,
        f"tool_choice: Input tag {kind!r} found using 'type' does not match any of the expected"
        " tags: 'auto', 'any', 'tool', 'none'",
    )
    names = [t.get("name") for t in body.get("tools") or () if isinstance(t, Mapping)]
    if kind in ("any", "tool"):
        require(bool(names), "tool_choice: tools must be provided when tool_choice forces tool use")
        thinking = obj_get(body, "thinking").get("type")
        require(
            thinking != "enabled", "Thinking may not be enabled when tool_choice forces tool use."
        )
    if kind == "tool":
        name = choice.get("name")
        require(isinstance(name, str), "tool_choice.tool.name: Field required")
        require(name in names, f"tool_choice: Tool '{name}' not found in tools")


def obj_get(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, Mapping) else {}


def forced_tool(body: Any) -> str | None:
    """The tool a valid request forces (`tool_choice: {"type": "tool"}`), if any."""
    choice = obj_get(body, "tool_choice") if isinstance(body, Mapping) else {}
    name = choice.get("name")
    return name if choice.get("type") == "tool" and isinstance(name, str) else None


def _check_system(system: Any) -> None:
    if isinstance(system, str):
        return
    require(isinstance(system, list), "system: Input should be a valid string or list")
    for j, block in enumerate(system):
        require(
            isinstance(block, Mapping)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str),
            f"system.{j}: expected a text block",
        )


class AnthropicVendor(Vendor):
    """Anthropic's Messages API."""

    name = "anthropic"

    def model_for(self, path: str, body: Any) -> str | None:
        if path != "/v1/messages":
            return None
        return body_model(body)

    def check_auth(self, request: SimRequest, api_key: str | None) -> None:
        check_key(request.headers.get("x-api-key"), api_key)
        require(
            bool(request.headers.get("anthropic-version")), "anthropic-version: header is required"
        )

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        self.check_auth(request, api_key)
        body = request.body
        require(isinstance(body, Mapping), "the body must be a JSON object")
        unknown = sorted(set(body) - KNOWN_FIELDS)
        require(not unknown, f"{', '.join(unknown)}: Extra inputs are not permitted")
        require(isinstance(body.get("model"), str) and bool(body["model"]), "model: Field required")
        max_tokens = body.get("max_tokens")
        require(max_tokens is not None, "max_tokens: Field required")
        require(
            isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1,
            "max_tokens: Input should be an integer greater than or equal to 1",
        )
        _check_messages(body.get("messages"))
        require(
            isinstance(body.get("stream", False), bool), "stream: Input should be a valid boolean"
        )
        if "system" in body:
            _check_system(body["system"])
        if "tools" in body:
            _check_tools(body["tools"])
        if "tool_choice" in body:
            _check_tool_choice(body)
        if "temperature" in body:
            t = body["temperature"]
            require(
                isinstance(t, int | float) and 0 <= t <= 1,
                "temperature: Input should be less than or equal to 1",
            )

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        name = forced_tool(request.body)
        for tool in request.body.get("tools") or () if name else ():
            if tool.get("name") == name:
                return JsonAnswer(tool.get("input_schema") or {"type": "object"})
        return None

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        reply, text = as_forced_call(reply, text, forced_tool(request.body))
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content += [
            {
                "type": "tool_use",
                "id": c.id or f"toolu_sim_{serial}_{i}",
                "name": c.name,
                "input": c.arguments,
            }
            for i, c in enumerate(reply.tool_calls)
        ]
        stop = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
        return self._message(
            request, serial, content, stop, reply.input_tokens, reply.output_tokens
        )

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        return self._message(request, 0, [], self._empty_stop(empty), 11, 0)

    @staticmethod
    def _empty_stop(empty: Empty) -> str:
        return "refusal" if empty.reason.lower() in ("refusal", "safety") else "end_turn"

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """`message_start`, a ping, a text block of `text_delta`s, one block per tool call
        (`tool_use` with `input: {}`, then `input_json_delta` pieces), `message_delta` with
        the stop reason and output tokens, `message_stop`."""
        reply, text = as_forced_call(reply, "".join(pieces), forced_tool(request.body))
        pieces = pieces if text else []
        body: list[Event] = []
        blocks = 0
        if pieces:
            body.append(_block_start(0, {"type": "text", "text": ""}, content=False))
            body += [_delta(0, {"type": "text_delta", "text": p}) for p in pieces]
            body.append(_event("content_block_stop", index=0))
            blocks = 1
        for i, call in enumerate(reply.tool_calls, start=blocks):
            call_id = call.id or f"toolu_sim_{serial}_{i - blocks}"
            tool = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            body.append(_block_start(i, tool, content=True))
            for piece in cut(json.dumps(call.arguments), options.tool_fragments):
                body.append(_delta(i, {"type": "input_json_delta", "partial_json": piece}))
            body.append(_event("content_block_stop", index=i))
        stop = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
        return self._stream(request, serial, body, stop, reply, options.terminator)

    def stream_empty(self, empty: Empty, request: SimRequest) -> StreamParts:
        return self._stream(request, 0, [], self._empty_stop(empty), Reply(output_tokens=0), True)

    def _stream(
        self,
        request: SimRequest,
        serial: int,
        body: list[Event],
        stop: str,
        reply: Reply,
        terminator: bool,
    ) -> StreamParts:
        start = self._message(request, serial, [], stop, reply.input_tokens, 1)
        start.update(stop_reason=None)
        start["usage"]["output_tokens"] = min(1, reply.output_tokens)
        head = [_event("message_start", message=start), self.keepalive(request)]
        tail = [
            _event(
                "message_delta",
                delta={"stop_reason": stop, "stop_sequence": None},
                usage={"output_tokens": reply.output_tokens},
            )
        ]
        if terminator:
            tail.append(_event("message_stop"))
        return StreamParts(head, body, tail)

    def stream_error(self, status: int, message: str, code: str | None) -> Event:
        error = self.error(status, message, code)
        return _event("error", error=error["error"])

    def keepalive(self, request: SimRequest) -> Event:
        return _event("ping")

    def malformed(self) -> Event:
        return Event(MALFORMED, "content_block_delta", raw=True)

    @staticmethod
    def _message(
        request: SimRequest, serial: int, content: list[Any], stop: str, tokens_in: int, out: int
    ) -> dict[str, Any]:
        return {
            "id": f"msg_sim_{serial}",
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": out},
        }

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        types = set(ERROR_TYPES.values())
        default = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        err: dict[str, Any] = {"type": code if code in types else default, "message": message}
        if code and code not in types:  # e.g. the spend limit's enforced_spend_limit_reached
            err["details"] = {"error_code": code}
        return {"type": "error", "error": err, "request_id": "req_sim"}


def _event(kind: str, *, content: bool = False, **fields: Any) -> Event:
    """An event whose SSE name is its `type`, as every Messages stream event is."""
    return Event({"type": kind, **fields}, kind, content=content)


def _block_start(index: int, block: dict[str, Any], *, content: bool) -> Event:
    return _event("content_block_start", content=content, index=index, content_block=block)


def _delta(index: int, delta: dict[str, Any]) -> Event:
    return _event("content_block_delta", content=True, index=index, delta=delta)


VENDOR = AnthropicVendor()
