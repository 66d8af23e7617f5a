"""The OpenAI Responses API (`POST /v1/responses`), for OpenAI and servers that only speak it.

A conversation becomes `instructions` (the system text) and `input` items: user and assistant
messages, a `function_call` item per tool call and a `function_call_output` item per result,
tied by `call_id`. The answer is read from the `output` items (`message` with `output_text`
parts, `function_call`), skipping the kinds not mapped (reasoning, built-in tools). Requests
say `store: false`: the whole conversation is sent each time, so nothing needs keeping on
OpenAI's side (`extra = { store = true }` to keep it anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ProviderError
from ..types import (
    ContentBlock,
    Conversation,
    ImagePart,
    LlmResponse,
    Message,
    OutputFormat,
    TextBlock,
    ToolCall,
    compact_json,
)
from .base import (
    Adapter,
    CallOptions,
    ProbeRequest,
    WireRequest,
    count,
    deep_merge,
    joined_system,
    obj,
    with_stream,
)
from .openai import (
    JSON_HINT,
    bearer_auth,
    json_spec,
    models_listed,
    models_probe,
    needs_json_hint,
)
from .streaming import (
    Delta,
    EndOfStream,
    StopDelta,
    StreamEvent,
    StreamParser,
    TextDelta,
    ToolCallDelta,
    UsageDelta,
    event_json,
)

# The HTTP status a failure named only by its code (a failed response, an `error` event)
# stands for, so the same rules decide as for an error reply.
CODE_STATUS = {"rate_limit_exceeded": 429, "insufficient_quota": 429, "server_error": 500}
WITHHELD = "content_filter"


def _content(msg: Message) -> str | list[dict[str, Any]]:
    if not msg.images:
        return msg.text
    return [
        {"type": "input_image", "image_url": p.data_url}
        if isinstance(p, ImagePart)
        else {"type": "input_text", "text": p.text}
        for p in msg.parts
    ]


def _items(msg: Message) -> list[dict[str, Any]]:
    """The input items of one (non-system) turn."""
    if msg.role == "tool":
        return [{"type": "function_call_output", "call_id": msg.tool_call_id, "output": msg.text}]
    items: list[dict[str, Any]] = []
    if msg.text or msg.images:
        items.append({"role": msg.role, "content": _content(msg)})
    items += [
        {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
        for c in msg.tool_calls
    ]
    return items


def input_items(conversation: Conversation) -> list[dict[str, Any]]:
    return [item for m in conversation.messages if m.role != "system" for item in _items(m)]


def _tools(conversation: Conversation) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": dict(t.parameters),
        }
        for t in conversation.tools or ()
    ]


def _usage(response: Mapping[str, Any]) -> tuple[int | None, int | None]:
    usage = obj(response.get("usage"))
    return count(usage.get("input_tokens")), count(usage.get("output_tokens"))


def _stop_reason(response: Mapping[str, Any]) -> str | None:
    """`completed`, or why an incomplete answer stopped (`max_output_tokens`...); a failed or
    filtered response raises."""
    status = response.get("status")
    if status == "failed":
        raise failure(obj(response.get("error")))
    if status == "incomplete":
        reason = obj(response.get("incomplete_details")).get("reason")
        if reason == WITHHELD:
            raise Adapter.empty(
                "answer withheld by the content filter (incomplete: content_filter)"
            )
        return reason if isinstance(reason, str) else "incomplete"
    return status if isinstance(status, str) else None


def failure(error: Mapping[str, Any]) -> ProviderError:
    """A failure named by its code (`rate_limit_exceeded`, `server_error`...): the error a
    reply with the status it stands for would be; an unknown code is an invalid response."""
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    text = f"{code}: {message}" if code and message else message or code or "the response failed"
    status = CODE_STATUS.get(code or "")
    if status is None:
        return ProviderError("invalid_response", f"the response failed: {text}", code=code)
    return ProviderError("http", text, status=status, code=code)


def _function_call(item: Mapping[str, Any]) -> ToolCall:
    call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise Adapter.malformed("a function_call output item has no call_id or name")
    if isinstance(args, Mapping):  # some compatible servers send the object itself
        args = compact_json(args)
    if not isinstance(args, str):
        raise Adapter.malformed(f"function_call '{name}' has no arguments string")
    return ToolCall(call_id, name, args or "{}")


def _message_text(item: Mapping[str, Any]) -> tuple[list[str], bool]:
    """The output_text of a message item, and whether it holds a refusal."""
    content = item.get("content")
    if not isinstance(content, list):
        raise Adapter.malformed("a message output item has no content list")
    texts, refused = [], False
    for part in content:
        if not isinstance(part, Mapping):
            raise Adapter.malformed("a message content part is not an object")
        if part.get("type") == "output_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        refused = refused or part.get("type") == "refusal"
    return texts, refused


def output_blocks(output: Any) -> list[ContentBlock]:
    """Text and tool calls of the `output` items, in order; raises for a malformed item or a
    refusal with nothing else."""
    if not isinstance(output, list):
        raise Adapter.malformed("response has no output list")
    blocks: list[ContentBlock] = []
    refused = False
    for item in output:
        if not isinstance(item, Mapping):
            raise Adapter.malformed("an output item is not an object")
        if item.get("type") == "message":
            texts, refusal = _message_text(item)
            blocks += [TextBlock(t) for t in texts if t]
            refused = refused or refusal
        elif item.get("type") == "function_call":
            blocks.append(_function_call(item))
        # reasoning, web_search_call, file_search_call...: not mapped
    if refused and not blocks:
        raise Adapter.empty("the model refused")
    return blocks


def text_format(output: OutputFormat) -> dict[str, Any]:
    """`text.format`: JSON mode, or the named schema flat in the format object."""
    spec = json_spec(output)
    return {"type": "json_object"} if spec is None else {"type": "json_schema", **spec}


class OpenAIResponsesAdapter(Adapter):
    type_name = "openai_responses"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body: dict[str, Any] = {
            "model": options.model,
            "input": input_items(conversation),
            "store": False,
        }
        system = joined_system(conversation)
        if system is not None:
            body["instructions"] = system
        if conversation.tools:
            body["tools"] = _tools(conversation)
        if options.max_tokens is not None:
            body["max_output_tokens"] = options.max_tokens
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if options.output is not None:
            body["text"] = {"format": text_format(options.output)}
            if needs_json_hint(conversation, options.output):
                body["instructions"] = "\n\n".join(filter(None, (JSON_HINT, system)))
        body = with_stream(deep_merge(body, options.extra), stream)
        return WireRequest(f"{options.base_url}/responses", body, bearer_auth(options))

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        if data.get("status") != "failed":  # a failed response's `error` is read below
            self.reject_error_body(data)
        stop_reason = _stop_reason(data)
        model = data.get("model")
        return self.answer(
            output_blocks(data.get("output")),
            model if isinstance(model, str) and model else options.model,
            _usage(data),
            stop_reason,
            f"no text or function calls (status: {stop_reason})",
        )

    # Health asks the same `/models` endpoints as chat completions.
    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        return models_probe(options)

    def listed(self, data: Any, options: CallOptions) -> bool:
        return models_listed(data, options)

    # --- streaming (SSE) ---------------------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return ResponsesStreamParser(self)


class ResponsesStreamParser(StreamParser):
    """Semantic events named by their `type`: `response.output_text.delta`, a function call's
    `response.output_item.added` then `response.function_call_arguments.delta` pieces (keyed
    by `output_index`), and last `response.completed` or `response.incomplete` with the usage.
    `response.failed` and `error` events are the errors their codes stand for."""

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self._adapter = adapter

    def feed(self, event: StreamEvent) -> list[Delta]:
        data = event_json(event)
        if not isinstance(data, Mapping):
            raise self._adapter.malformed("stream event is not a JSON object")
        kind = data.get("type", event.name)
        if kind == "error":
            raise failure(data)
        if kind in ("response.created", "response.in_progress"):
            return self.model_delta(obj(data.get("response")).get("model"))
        if kind == "response.output_text.delta":
            text = data.get("delta")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind == "response.refusal.delta":
            raise self._adapter.empty("the model refused")
        if kind == "response.output_item.added":
            return self._item_added(data)
        if kind == "response.function_call_arguments.delta":
            index, piece = data.get("output_index"), data.get("delta")
            if isinstance(index, int) and isinstance(piece, str):
                return [ToolCallDelta(index, arguments=piece)]
            return []
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = obj(data.get("response"))
            stop = _stop_reason(response)  # raises for a failed or filtered response
            return [UsageDelta(*_usage(response)), StopDelta(stop), EndOfStream()]
        return []  # content parts added and done, reasoning, built-in tools, keep-alives

    def _item_added(self, data: Mapping[str, Any]) -> list[Delta]:
        item, index = obj(data.get("item")), data.get("output_index")
        if item.get("type") != "function_call" or not isinstance(index, int):
            return []
        start = item.get("arguments")
        start = start if isinstance(start, str) else ""  # usually "": the pieces follow
        call = _function_call({**item, "arguments": start})
        return [ToolCallDelta(index, call.id, call.name, start)]


ADAPTER = OpenAIResponsesAdapter()
