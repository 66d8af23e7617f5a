"""OpenAI Chat Completions, and every OpenAI-compatible `base_url`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

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
    function_tools,
    is_object,
    names_in,
    obj,
    with_stream,
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


def image_url_part(image: ImagePart) -> dict[str, Any]:
    """An image as a Chat Completions content part: its URL, or a `data:` URL."""
    return {"type": "image_url", "image_url": {"url": image.data_url}}


def message_content(
    msg: Message, image_part: Callable[[ImagePart], dict[str, Any]] = image_url_part
) -> str | list[dict[str, Any]]:
    """A turn's `content`: its text, or (with images) text and image parts in order."""
    if not msg.images:
        return msg.text
    return [
        image_part(p) if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
        for p in msg.parts
    ]


def chat_message(
    msg: Message,
    call_id: Callable[[str], str] = str,
    image_part: Callable[[ImagePart], dict[str, Any]] = image_url_part,
) -> dict[str, Any]:
    """One turn as a Chat Completions message; `call_id` maps tool-call ids and `image_part`
    shapes images, for compatible APIs that differ there (Mistral)."""
    out: dict[str, Any] = {"role": msg.role, "content": message_content(msg, image_part)}
    if msg.tool_calls:
        out["content"] = msg.text or None  # a tool-calling turn may have no text
        out["tool_calls"] = [
            {
                "id": call_id(c.id),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in msg.tool_calls
        ]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = call_id(msg.tool_call_id)
    return out


def chat_body(
    conversation: Conversation,
    options: CallOptions,
    message: Callable[[Message], dict[str, Any]] = chat_message,
) -> dict[str, Any]:
    """The Chat Completions body: model, messages and tools."""
    body: dict[str, Any] = {
        "model": options.model,
        "messages": [message(m) for m in conversation.messages],
    }
    if conversation.tools:  # an empty list is rejected by the API, so omit it
        body["tools"] = function_tools(conversation.tools)
    return body


# JSON mode is refused unless a message says "json": this one is added when none does.
JSON_HINT = "Answer with a JSON object."
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def subschemas(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The schemas directly inside `schema` (under properties, items, anyOf, $defs...)."""
    found: list[Any] = []
    for key in _SUBSCHEMA_MAPS:
        found += list(obj(schema.get(key)).values())
    for key in _SUBSCHEMA_LISTS:
        value = schema.get(key)
        found += value if isinstance(value, list) else []
    found += [schema.get(key) for key in _SUBSCHEMAS]
    return [s for s in found if isinstance(s, Mapping)]


def strict_compatible(schema: Mapping[str, Any]) -> bool:
    """Whether OpenAI's strict mode takes this schema: an object at the root, and every object
    in it closed (`additionalProperties: false`) with all its properties required. Other
    schemas are sent without `strict`: the answer is checked locally either way."""
    if schema.get("type") != "object":
        return False
    stack = [schema]
    while stack:
        node = stack.pop()
        if node.get("type") == "object" or "properties" in node:
            properties = obj(node.get("properties"))
            required = node.get("required", [])
            if node.get("additionalProperties") is not False or not isinstance(required, list):
                return False
            if set(required) != set(properties):
                return False
        stack += subschemas(node)
    return True


def response_format(output: OutputFormat) -> dict[str, Any]:
    """`response_format`: JSON mode, or a named JSON Schema (strict when it qualifies)."""
    spec = json_spec(output)
    return {"type": "json_object"} if spec is None else {"type": "json_schema", "json_schema": spec}


def json_spec(output: OutputFormat) -> dict[str, Any] | None:
    """The named schema (strict when it qualifies) of a schema'd output; None: JSON mode."""
    if output.wire_schema is None:
        return None
    schema = dict(output.wire_schema)
    return {"name": output.name, "schema": schema, "strict": strict_compatible(schema)}


def needs_json_hint(conversation: Conversation, output: OutputFormat) -> bool:
    """JSON mode is refused unless a message says "json": True when one must be added."""
    return output.wire_schema is None and not any(
        "json" in m.text.lower() for m in conversation.messages
    )


def ask_for_output(
    body: dict[str, Any], conversation: Conversation, output: OutputFormat, wire: dict[str, Any]
) -> None:
    """A chat body's `response_format` (`wire`, in its vendor's shape), with the system line
    JSON mode needs."""
    body["response_format"] = wire
    if needs_json_hint(conversation, output):
        body["messages"].insert(0, {"role": "system", "content": JSON_HINT})


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


def _arguments(value: Any, missing: str) -> str:
    """Arguments as JSON text: a string as sent, an object (some compatibles) serialised."""
    if isinstance(value, str):
        return value
    return missing if value is None else compact_json(value)


def _tool_call(raw: Any) -> ToolCall:
    raw = obj(raw)
    fn = obj(raw.get("function"))
    args = _arguments(fn.get("arguments"), "{}")
    return ToolCall(str(raw.get("id") or ""), str(fn.get("name") or ""), args)


def _usage(data: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens from a reply's or a chunk's `usage`."""
    usage = obj(data.get("usage"))
    return count(usage.get("prompt_tokens")), count(usage.get("completion_tokens"))


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def bearer_auth(options: CallOptions) -> dict[str, str]:
    return {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}


def models_probe(options: CallOptions) -> tuple[ProbeRequest, ...]:
    """`GET /models/{id}`; servers without it (vLLM, some proxies) answer the listing."""
    own = f"{options.base_url}/models/{quote(options.model, safe='')}"
    auth = bearer_auth(options)
    return ProbeRequest(own, auth), ProbeRequest(f"{options.base_url}/models", auth, True)


def models_listed(data: Any, options: CallOptions) -> bool:
    return options.model in names_in(data, "data", "id")


class OpenAIAdapter(Adapter):
    type_name = "openai"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body = chat_body(conversation, options)
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if stream and options.stream_usage:
            body["stream_options"] = {"include_usage": True}  # else a stream has no usage
        if options.output is not None:
            ask_for_output(body, conversation, options.output, response_format(options.output))
        body = with_stream(deep_merge(body, options.extra), stream)
        return WireRequest(f"{options.base_url}/chat/completions", body, bearer_auth(options))

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
        refusal = message_obj.get("refusal")  # structured outputs: a refusal instead of content
        if not text and isinstance(refusal, str) and refusal:
            raise self.empty(f"the model refused: {refusal}")
        calls = message_obj.get("tool_calls")
        blocks += [_tool_call(c) for c in calls] if isinstance(calls, list) else []
        stop = choice.get("finish_reason")
        return self.answer(
            blocks,
            str(data.get("model") or options.model),
            _usage(data),
            stop if isinstance(stop, str) else None,
            f"no text or tool calls (finish_reason: {stop})",
        )

    # --- health probes ---------------------------------------------------------------------

    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        return models_probe(options)

    def listed(self, data: Any, options: CallOptions) -> bool:
        return models_listed(data, options)

    # --- streaming (SSE) ---------------------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return OpenAIStreamParser(self)


class OpenAIStreamParser(StreamParser):
    """`chat.completion.chunk` events, then `data: [DONE]`.

    Usage comes in an extra chunk with `choices: []` (earlier chunks have `usage: null`) when
    `stream_options.include_usage` was asked for. Only the first choice is read, as in a whole
    reply. Tool-call pieces are keyed by their `index`; the assembler tells apart the calls of
    servers that number every parallel call 0.
    """

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self._adapter = adapter

    def feed(self, event: StreamEvent) -> list[Delta]:
        if event.data.strip() == "[DONE]":
            return [EndOfStream()]
        data = event_json(event)
        if not is_object(data):
            raise self._adapter.malformed("stream event is not a JSON object")
        if "error" in data or "type" in data:  # `data: {"error": {...}}` mid-stream
            self._adapter.reject_error_body(data)
        model = data.get("model")  # repeated in every chunk: told once
        deltas = [] if model == self._model else self.model_delta(model)
        usage = data.get("usage")
        if usage is not None and is_object(usage):
            deltas.append(UsageDelta(*_usage(data)))
        choices = data.get("choices")
        if choices and isinstance(choices, list):
            for choice in choices:  # one that is no object carries nothing
                if is_object(choice) and choice.get("index", 0) == 0:
                    _choice_deltas(choice, deltas)
        return deltas


def _choice_deltas(choice: Mapping[str, Any], deltas: list[Delta]) -> None:
    """The deltas of one choice, added to `deltas`."""
    delta = obj(choice.get("delta"))
    content = delta.get("content")
    text = content if isinstance(content, str) else _text(content)
    if text:
        deltas.append(TextDelta(text))
    calls = delta.get("tool_calls")
    if calls and isinstance(calls, list):
        _call_deltas(calls, deltas)
    stop = choice.get("finish_reason")
    if isinstance(stop, str):
        deltas.append(StopDelta(stop))


def _call_deltas(calls: list[Any], deltas: list[Delta]) -> None:
    for position, raw in enumerate(calls):
        call = obj(raw)
        fn = obj(call.get("function"))
        index = call.get("index")
        deltas.append(
            ToolCallDelta(
                index if isinstance(index, int) and not isinstance(index, bool) else position,
                _text_or_none(call.get("id")),
                _text_or_none(fn.get("name")),
                _arguments(fn.get("arguments"), ""),
            )
        )


ADAPTER = OpenAIAdapter()
