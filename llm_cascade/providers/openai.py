"""OpenAI Chat Completions, and every OpenAI-compatible `base_url`."""

from __future__ import annotations

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
    count,
    deep_merge,
    function_tools,
    obj,
)


def _message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.tool_calls:
        out["content"] = msg.content or None  # a tool-calling turn may have no text
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = msg.tool_call_id
    return out


def chat_body(conversation: Conversation, options: CallOptions) -> dict[str, Any]:
    """The Chat Completions body: model, messages and tools."""
    body: dict[str, Any] = {
        "model": options.model,
        "messages": [_message(m) for m in conversation.messages],
    }
    if conversation.tools:  # an empty list is rejected by the API, so omit it
        body["tools"] = function_tools(conversation.tools)
    return body


def _text(content: Any) -> str:
    """`content` as text: a string, or the text parts some compatible servers send."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def _tool_call(raw: Any) -> ToolCall:
    raw = obj(raw)
    fn = obj(raw.get("function"))
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = "{}" if args is None else compact_json(args)
    return ToolCall(str(raw.get("id") or ""), str(fn.get("name") or ""), args)


class OpenAIAdapter(Adapter):
    type_name = "openai"

    def build_request(self, conversation: Conversation, options: CallOptions) -> WireRequest:
        body = chat_body(conversation, options)
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options.temperature is not None:
            body["temperature"] = options.temperature
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        return WireRequest(
            f"{options.base_url}/chat/completions", deep_merge(body, options.extra), headers
        )

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            self.reject_error_body(data)  # an error-shaped 200, as some proxies send
            raise self.empty("no choices")
        choice = obj(choices[0])
        message_obj = obj(choice.get("message"))
        blocks: list[ContentBlock] = []
        text = _text(message_obj.get("content"))
        if text:
            blocks.append(TextBlock(text))
        calls = message_obj.get("tool_calls")
        blocks += [_tool_call(c) for c in calls] if isinstance(calls, list) else []
        usage = obj(data.get("usage"))
        stop = choice.get("finish_reason")
        response = LlmResponse(
            content=tuple(blocks),
            model=str(data.get("model") or options.model),
            input_tokens=count(usage.get("prompt_tokens")),
            output_tokens=count(usage.get("completion_tokens")),
            stop_reason=stop if isinstance(stop, str) else None,
        )
        if not response.has_content():
            raise self.empty(f"no text or tool calls (finish_reason: {stop})")
        return response


ADAPTER = OpenAIAdapter()
