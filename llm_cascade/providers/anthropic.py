"""Anthropic Messages API (`POST /v1/messages`): tool round trips, max_tokens, stop reasons."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..types import (
    ContentBlock,
    Conversation,
    LlmResponse,
    Message,
    TextBlock,
    ToolCall,
    compact_json,
)
from .base import (
    Adapter,
    CallOptions,
    WireRequest,
    arguments_object,
    count,
    deep_merge,
    joined_system,
    merge_turns,
    obj,
)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # the original's fixed value, now only the default
_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")


def _tool_id(call_id: str | None) -> str:
    """A call id in the alphabet the API accepts; calls and results map the same way.

    Some OpenAI-compatible servers mint ids such as `functions.get_weather:0`.
    """
    return _UNSAFE_ID.sub("_", call_id or "")


def _blocks(msg: Message) -> tuple[str, list[dict[str, Any]]]:
    """One message as (role, content blocks); a tool result is a user turn."""
    if msg.role == "tool":
        block = {
            "type": "tool_result",
            "tool_use_id": _tool_id(msg.tool_call_id),
            "content": msg.content,
        }
        return "user", [block]
    # The API rejects empty text blocks, so a turn that only calls tools carries none.
    blocks: list[dict[str, Any]] = [{"type": "text", "text": msg.content}] if msg.content else []
    blocks += [
        {"type": "tool_use", "id": _tool_id(c.id), "name": c.name, "input": arguments_object(c)}
        for c in msg.tool_calls
    ]
    return msg.role, blocks


def _content(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A lone text block as a plain string (the shape most requests use), else the blocks."""
    if not blocks:
        return ""
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return str(blocks[0]["text"])
    return blocks


def messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The `messages` array: system turns removed, consecutive turns of one role merged.

    Merging puts every tool result answering one assistant turn into the single user turn the
    API requires (tool results first, then any text that followed them).
    """
    turns = merge_turns(_blocks(m) for m in conversation.messages if m.role != "system")
    return [{"role": role, "content": _content(blocks)} for role, blocks in turns]


def _tools(conversation: Conversation) -> list[dict[str, Any]]:
    out = []
    for t in conversation.tools or ():
        tool: dict[str, Any] = {"name": t.name, "input_schema": {"type": "object", **t.parameters}}
        if t.description:
            tool["description"] = t.description
        out.append(tool)
    return out


def _parse_block(raw: Any) -> ContentBlock | None:
    block = obj(raw)
    if block.get("type") == "text":
        text = block.get("text")
        return TextBlock(text) if isinstance(text, str) and text else None
    if block.get("type") == "tool_use":
        args = block.get("input")
        return ToolCall(
            str(block.get("id") or ""), str(block.get("name") or ""), compact_json(args or {})
        )
    return None  # thinking, redacted_thinking, server tool blocks: not mapped


def _input_tokens(usage: Mapping[str, Any]) -> int | None:
    """All input the request consumed: uncached plus cache writes and reads."""
    base = count(usage.get("input_tokens"))
    if base is None:
        return None
    cached = (
        count(usage.get(k)) or 0 for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return count(base + sum(cached))


class AnthropicAdapter(Adapter):
    """The Messages API."""

    type_name = "anthropic"

    def build_request(self, conversation: Conversation, options: CallOptions) -> WireRequest:
        body: dict[str, Any] = {
            "model": options.model,
            "max_tokens": options.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages(conversation),
        }
        system = joined_system(conversation)
        if system is not None:
            body["system"] = system
        if conversation.tools:
            body["tools"] = _tools(conversation)
        if options.temperature is not None:
            body["temperature"] = options.temperature
        headers = {"anthropic-version": API_VERSION}
        if options.api_key:
            headers["x-api-key"] = options.api_key
        return WireRequest(
            f"{options.base_url}/v1/messages", deep_merge(body, options.extra), headers
        )

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        self.reject_error_body(data)  # an error event inside a 200
        content = data.get("content")
        if not isinstance(content, list):
            raise self.malformed("response has no content array")
        parsed = (_parse_block(b) for b in content)
        stop = data.get("stop_reason")
        stop_reason = stop if isinstance(stop, str) else None
        if stop_reason == "refusal":  # like a Gemini safety block: let another entry answer
            raise self.empty("the model refused (stop_reason: refusal)")
        usage = obj(data.get("usage"))
        response = LlmResponse(
            content=tuple(b for b in parsed if b is not None),
            model=str(data.get("model") or options.model),
            input_tokens=_input_tokens(usage),
            output_tokens=count(usage.get("output_tokens")),
            stop_reason=stop_reason,
        )
        if not response.has_content():
            raise self.empty(f"no text or tool calls (stop_reason: {stop_reason})")
        return response


ADAPTER = AnthropicAdapter()
