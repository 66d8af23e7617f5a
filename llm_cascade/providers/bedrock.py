"""AWS Bedrock's Converse API (`POST /model/{modelId}/converse`, and `converse-stream` as an AWS
event stream), signed with SigV4.

The credential is one secret, `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]` (from the
keyring, `api_key_env` or the AWS_* variables, see keys.py), and the region comes with it;
`sign` adds `x-amz-date`, the session token and the `Authorization` for the very bytes sent,
so a custom `base_url` (a VPC endpoint, a proxy) is signed the same and never sees the secret.

A conversation maps to Converse's own shape: `system` text blocks, alternating `user` and
`assistant` turns of content blocks (`text`, `image` bytes, `toolUse` with an object `input`,
`toolResult` in the next user turn), `inferenceConfig` and `toolConfig.tools[].toolSpec`.
Errors name their type in the `x-amzn-ErrorType` header (`ThrottlingException`,
`ModelNotReadyException`...), which becomes the code the rules match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

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
from . import aws_key_parts, sigv4
from .answer_tool import DESCRIPTION, AnswerStream, answer_schema, document
from .base import (
    Adapter,
    CallOptions,
    StreamFormat,
    WireRequest,
    arguments_object,
    count,
    deep_merge,
    joined_system,
    merge_turns,
    new_call_id,
    obj,
    safe_tool_id,
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

SERVICE = "bedrock"
# Stop reasons that mean the answer was withheld: fail over rather than return it.
WITHHELD = frozenset({"guardrail_intervened", "content_filtered"})
# The HTTP status each exception a stream can carry is documented with.
STREAM_EXCEPTIONS = {
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "throttlingException": 429,
    "serviceUnavailableException": 503,
}


def credentials(options: CallOptions) -> sigv4.Credentials:
    """The AWS credentials in `options.api_key`; raises the missing-key error if unusable."""
    parts = aws_key_parts(options.api_key or "")
    if parts is None or not options.region:
        raise ProviderError(
            "missing_key",
            "AWS credentials are ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN], with a region",
        )
    return sigv4.Credentials(*parts)


def _blocks(msg: Message) -> tuple[str, list[dict[str, Any]]]:
    """One message as (role, content blocks); a tool result is a user turn."""
    if msg.role == "tool":
        result = {
            "toolUseId": safe_tool_id(msg.tool_call_id),
            "content": [{"text": msg.text}] if msg.text else [],
            "status": "success",
        }
        return "user", [{"toolResult": result}]
    blocks: list[dict[str, Any]] = [
        {"image": {"format": p.format, "source": {"bytes": p.data}}}
        if isinstance(p, ImagePart)  # bytes only: images.unfit skips the entry for URLs
        else {"text": p.text}
        for p in msg.parts
        if isinstance(p, ImagePart) or p.text  # Converse rejects blank text blocks
    ]
    blocks += [
        {"toolUse": {"toolUseId": safe_tool_id(c.id), "name": c.name, "input": arguments_object(c)}}
        for c in msg.tool_calls
    ]
    return msg.role, blocks


def messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Alternating turns (consecutive ones of a role merged: tool results share one user
    turn), system turns removed, turns without content dropped."""
    turns = merge_turns(_blocks(m) for m in conversation.messages if m.role != "system")
    return [{"role": role, "content": blocks} for role, blocks in turns if blocks]


def _spec(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "toolSpec": {
            "name": name,
            "description": description or name,  # Converse requires a description
            "inputSchema": {"json": {"type": "object", **parameters}},
        }
    }


def _tool_config(conversation: Conversation) -> dict[str, Any] | None:
    """`toolConfig` for the conversation's tools. Converse refuses tool blocks without one,
    so a conversation that used tools but offers none now declares those it used, with an
    open schema (other vendors take such a history as it is)."""
    if conversation.tools:
        return {"tools": [_spec(t.name, t.description, t.parameters) for t in conversation.tools]}
    used = dict.fromkeys(c.name for m in conversation.messages for c in m.tool_calls)
    return {"tools": [_spec(name, "", {}) for name in used]} if used else None


def _parse_block(raw: Any) -> ContentBlock | None:
    block = obj(raw)
    text = block.get("text")
    if isinstance(text, str) and text:
        return TextBlock(text)
    use = block.get("toolUse")
    if isinstance(use, Mapping):
        call_id = use.get("toolUseId")
        return ToolCall(
            call_id if isinstance(call_id, str) and call_id else new_call_id(),
            str(use.get("name") or ""),
            compact_json(use.get("input") or {}),
        )
    return None  # reasoningContent, citations, guard content: not mapped


def _answer_blocks(content: list[Any], output: OutputFormat) -> list[ContentBlock | None]:
    """The answer tool's input as the answer's only text, or nothing if it was not called."""
    for block in map(obj, content):
        use = obj(block.get("toolUse"))
        if use and use.get("name") == output.name:
            return [TextBlock(document(use.get("input"), output))]
    return []


def _usage(usage: Mapping[str, Any]) -> tuple[int | None, int | None]:
    return count(usage.get("inputTokens")), count(usage.get("outputTokens"))


def _stop_reason(value: Any) -> str | None:
    stop = value if isinstance(value, str) else None
    if stop in WITHHELD:
        raise Adapter.empty(f"answer withheld (stopReason: {stop})")
    return stop


def error_type(headers: Mapping[str, str], data: Any) -> str | None:
    """`ThrottlingException` from `x-amzn-ErrorType` (`Type:namespace-URL`), else the body's
    `__type` (`namespace#Type`) or `code`."""
    raw = headers.get("x-amzn-errortype") or obj(data).get("__type") or obj(data).get("code")
    if not isinstance(raw, str) or not raw:
        return None
    return raw.split(":", 1)[0].rpartition("#")[2] or None


class BedrockAdapter(Adapter):
    type_name = "bedrock"
    stream_format: ClassVar[StreamFormat] = "eventstream"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body: dict[str, Any] = {"messages": messages(conversation)}
        system = joined_system(conversation)
        if system is not None:
            body["system"] = [{"text": system}]
        config: dict[str, Any] = {}
        if options.max_tokens is not None:
            config["maxTokens"] = options.max_tokens
        if options.temperature is not None:
            config["temperature"] = options.temperature
        if config:
            body["inferenceConfig"] = config
        tool_config = _tool_config(conversation)
        if options.output is not None:  # the answer is the input of a tool it must call
            schema, _ = answer_schema(options.output)
            tool_config = tool_config or {"tools": []}
            tool_config["tools"].append(_spec(options.output.name, DESCRIPTION, schema))
            tool_config["toolChoice"] = {"tool": {"name": options.output.name}}
        if tool_config is not None:
            body["toolConfig"] = tool_config
        base = options.base_url.replace("{region}", options.region or "")
        # The model id (an ARN or inference profile may hold `:` and `/`) is one segment.
        url = f"{base}/model/{quote(options.model, safe='')}/"
        url += "converse-stream" if stream else "converse"
        accept = "application/vnd.amazon.eventstream" if stream else "application/json"
        return WireRequest(url, deep_merge(body, options.extra), {"Accept": accept})

    def sign(
        self, url: str, headers: Mapping[str, str], body: bytes, options: CallOptions, now: float
    ) -> dict[str, str]:
        region = options.region or ""
        creds = credentials(options)
        return sigv4.sign(
            "POST", url, headers, body, creds, region=region, service=SERVICE, now=now
        )

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        if not isinstance(data, Mapping):
            raise self.malformed("response is not a JSON object")
        content = obj(obj(data.get("output")).get("message")).get("content")
        if not isinstance(content, list):
            if isinstance(data.get("message"), str):  # an error body inside a 200
                raise self.malformed(f"error in a 2xx response: {data['message']}")
            raise self.malformed("response has no output.message.content list")
        stop_reason = _stop_reason(data.get("stopReason"))
        parsed = [_parse_block(b) for b in content]
        if options.output is not None:  # the answer tool's input is the answer
            parsed = _answer_blocks(content, options.output) or parsed
        return self.answer(
            (b for b in parsed if b is not None),
            options.model,  # Converse does not name it
            _usage(obj(data.get("usage"))),
            stop_reason,
            f"no text or tool use (stopReason: {stop_reason})",
        )

    def error_details(self, data: Any, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
        """`{"message"}` (or `Message`) with the type from `x-amzn-ErrorType`."""
        code = error_type(headers, data)
        body = obj(data)
        message = body.get("message", body.get("Message"))
        if not isinstance(message, str) or not message:
            return (code, code) if code else super().error_details(data, headers)
        return (f"{code}: {message}" if code else message), code

    # --- streaming (AWS event stream) --------------------------------------------------------

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return BedrockStreamParser(self, options.output)


class BedrockStreamParser(StreamParser):
    """`messageStart`, per block `contentBlockStart` (a `toolUse` names its id and tool),
    `contentBlockDelta` (`text`, or the tool's `input` JSON in pieces), `contentBlockStop`,
    `messageStop` with the stop reason (the answer's end), then `metadata` with the usage.
    An exception message is the error its type is documented with (`throttlingException` 429)."""

    def __init__(self, adapter: Adapter, output: OutputFormat | None = None) -> None:
        super().__init__()
        self._adapter = adapter
        self._answer = AnswerStream(output)  # the answer tool's input streams as text

    def feed(self, event: StreamEvent) -> list[Delta]:
        data = event_json(event)
        if not isinstance(data, Mapping):
            raise self._adapter.malformed("stream event is not a JSON object")
        if event.message_type in ("exception", "error"):
            raise self._exception(event.name or "", data)
        index = data.get("contentBlockIndex")
        if event.name == "contentBlockStart" and isinstance(index, int):
            use = obj(obj(data.get("start")).get("toolUse"))
            call_id, name = use.get("toolUseId"), use.get("name")
            if not use or self._answer.starts(index, name):
                return []
            return [
                ToolCallDelta(
                    index,
                    call_id if isinstance(call_id, str) else None,
                    name if isinstance(name, str) else None,
                )
            ]
        if event.name == "contentBlockDelta" and isinstance(index, int):
            delta = obj(data.get("delta"))
            text, piece = delta.get("text"), obj(delta.get("toolUse")).get("input")
            if isinstance(text, str) and text:
                return [TextDelta(text)]
            if self._answer.owns(index):
                return self._answer.piece(piece)
            return [ToolCallDelta(index, arguments=piece)] if isinstance(piece, str) else []
        if event.name == "contentBlockStop":
            return self._answer.stop(index)
        if event.name == "messageStop":
            return [StopDelta(_stop_reason(data.get("stopReason"))), EndOfStream()]
        if event.name == "metadata":
            return [UsageDelta(*_usage(obj(data.get("usage"))))]
        return []  # messageStart, contentBlockStop, reasoning deltas, events added later

    @staticmethod
    def _exception(name: str, data: Mapping[str, Any]) -> ProviderError:
        message = data.get("message", data.get("Message"))
        code = name[:1].upper() + name[1:]  # `throttlingException` is `ThrottlingException`
        text = f"{code}: {message}" if isinstance(message, str) and message else code
        return ProviderError("http", text, status=STREAM_EXCEPTIONS.get(name, 500), code=code)


ADAPTER = BedrockAdapter()
