"""Ollama's native chat API (`POST /api/chat`, `stream: false`), tool round trips included.

Ollama takes no API key. Its messages look like Chat Completions with two differences that
matter: tool-call arguments are a JSON object, not a string, and a tool result names the
function it answers (`tool_name`).
"""

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
    arguments_object,
    count,
    deep_merge,
    function_tools,
    new_call_id,
    obj,
    tool_name,
)


def _message(conversation: Conversation, msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.tool_calls:
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {"index": i, "name": c.name, "arguments": arguments_object(c)},
            }
            for i, c in enumerate(msg.tool_calls)
        ]
    if msg.role == "tool":
        name = tool_name(conversation, msg)
        if name:
            out["tool_name"] = name
        if msg.tool_call_id is not None:  # unknown fields are ignored by older servers
            out["tool_call_id"] = msg.tool_call_id
    return out


def _tool_call(raw: Any) -> ToolCall:
    call = obj(raw)
    fn = obj(call.get("function"))
    args = fn.get("arguments")
    call_id = call.get("id")
    return ToolCall(
        call_id if isinstance(call_id, str) and call_id else new_call_id(),  # usually absent
        str(fn.get("name") or ""),
        args if isinstance(args, str) else compact_json(args or {}),
    )


class OllamaAdapter(Adapter):
    """Ollama's native chat API."""

    type_name = "ollama"

    def build_request(self, conversation: Conversation, options: CallOptions) -> WireRequest:
        body: dict[str, Any] = {
            "model": options.model,
            "messages": [_message(conversation, m) for m in conversation.messages],
            "stream": False,
        }
        if conversation.tools:
            body["tools"] = function_tools(conversation.tools)
        model_options: dict[str, Any] = {}
        if options.max_tokens is not None:
            model_options["num_predict"] = options.max_tokens
        if options.temperature is not None:
            model_options["temperature"] = options.temperature
        if model_options:
            body["options"] = model_options
        return WireRequest(f"{options.base_url}/api/chat", deep_merge(body, options.extra))

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        self.reject_error_body(data)
        message = obj(data.get("message"))
        blocks: list[ContentBlock] = []
        text = message.get("content")
        if isinstance(text, str) and text:
            blocks.append(TextBlock(text))
        calls = message.get("tool_calls")
        blocks += [_tool_call(c) for c in calls] if isinstance(calls, list) else []
        done = data.get("done_reason")
        stop_reason = done if isinstance(done, str) else None
        model = data.get("model")
        response = LlmResponse(
            content=tuple(blocks),
            model=model if isinstance(model, str) and model else options.model,
            input_tokens=count(data.get("prompt_eval_count")),
            output_tokens=count(data.get("eval_count")),
            stop_reason=stop_reason,
        )
        if not response.has_content():
            raise self.empty(f"no text or tool calls (done_reason: {stop_reason})")
        return response


ADAPTER = OllamaAdapter()
