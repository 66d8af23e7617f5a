"""Simulated AWS Bedrock Converse (`POST /bedrock/model/{modelId}/converse` and
`converse-stream`), which checks each request's SigV4 signature against a known secret.

The signature is recomputed from the request exactly as received (method, path as sent,
query, the signed headers' values, a hash of the body) with the secret of the credentials the
simulator knows: `SIM_AWS_KEY` by default, or `Simulator.require_key("ID:SECRET[:TOKEN]")`.
A missing or malformed `Authorization`, an unknown access key, a wrong service, a token that
is not sent, a date that differs from the credential scope or a signature that does not
match are the 403s Bedrock answers. The body follows Converse's rules: turns alternate and
start with the user, blocks are not blank, every `toolUse` is answered by a `toolResult` in
the next turn, and tool blocks need a `toolConfig`. Errors carry `x-amzn-ErrorType`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from ...providers import aws_key_parts, sigv4
from ..behaviours import Empty, Reply, Stream
from ..documents import JsonAnswer
from ..wire import MALFORMED, Event, EventStream, Framing, StreamParts, cut
from .base import Invalid, SimRequest, Vendor, as_forced_call, require

SIM_AWS_ACCESS_KEY_ID = "AKIDSIMULATOR0000001"
SIM_AWS_SECRET_ACCESS_KEY = "sim/Bedrock+secret/0123456789abcdefEXAMPLE"
SIM_AWS_KEY = f"{SIM_AWS_ACCESS_KEY_ID}:{SIM_AWS_SECRET_ACCESS_KEY}"
PATH = re.compile(r"^/bedrock/model/([^/]+)/(converse|converse-stream)$")
NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$"
)
BODY_FIELDS = {
    "messages", "system", "inferenceConfig", "toolConfig", "additionalModelRequestFields",
    "additionalModelResponseFieldPaths", "guardrailConfig", "promptVariables",
    "requestMetadata", "performanceConfig",
}  # fmt: skip
BLOCK_KINDS = {
    "text",
    "image",
    "document",
    "video",
    "toolUse",
    "toolResult",
    "guardContent",
    "reasoningContent",
    "cachePoint",
}
IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
ERROR_TYPES = {
    400: "ValidationException", 401: "UnrecognizedClientException",
    403: "AccessDeniedException", 404: "ResourceNotFoundException",
    408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
    500: "InternalServerException", 503: "ServiceUnavailableException",
}  # fmt: skip
STREAM_EXCEPTIONS = {
    400: "validationException",
    424: "modelStreamErrorException",
    429: "throttlingException",
    503: "serviceUnavailableException",
}


def _denied(kind: str, message: str) -> Invalid:
    return Invalid(403, message, kind)


def check_signature(request: SimRequest, known: str) -> None:
    """Raise the 403 Bedrock sends unless the request is signed with the `known` credentials."""
    parts = aws_key_parts(known)
    assert parts is not None, "the simulator's AWS key must be ID:SECRET[:TOKEN]"
    key_id, secret, token = parts
    match = AUTHORIZATION.match(request.headers.get("authorization", ""))
    if match is None:
        raise _denied("MissingAuthenticationTokenException", "Missing Authentication Token")
    given_id, day, region, service, signed, given = match.groups()
    if given_id != key_id:
        raise _denied(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if service != "bedrock":
        raise _denied(
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'bedrock'.",
        )
    names = signed.split(";")
    date = request.headers.get("x-amz-date", "")
    if "host" not in names or "x-amz-date" not in names or date[:8] != day:
        raise _denied(
            "IncompleteSignatureException",
            "Date and host must be signed, the date that of the credential scope.",
        )
    if token is not None and (
        request.headers.get("x-amz-security-token") != token or "x-amz-security-token" not in names
    ):
        raise _denied(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    target = urlsplit(request.target)
    headers = [(n, request.headers.get(n, "")) for n in names]
    canonical, _ = sigv4.canonical_request(
        "POST", target.path, target.query, headers, hashlib.sha256(request.raw).hexdigest()
    )
    to_sign = sigv4.string_to_sign(date, sigv4.scope(date, region, service), canonical)
    expected = sigv4.signature(secret, date, region, service, to_sign)
    if not hmac.compare_digest(expected, given):
        raise _denied(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided."
            " Check your AWS Secret Access Key and signing method.",
        )


def _check_image(image: Any, where: str) -> None:
    require(
        isinstance(image, Mapping) and image.get("format") in IMAGE_FORMATS,
        f"{where}.image.format: must be one of {sorted(IMAGE_FORMATS)}",
    )
    data = (
        image.get("source", {}).get("bytes") if isinstance(image.get("source"), Mapping) else None
    )
    try:
        base64.b64decode(data or "", validate=True)
    except (binascii.Error, ValueError):
        data = None
    require(bool(data), f"{where}.image.source.bytes: must be base64 image bytes")


def _check_block(block: Any, role: str, where: str) -> None:
    require(
        isinstance(block, Mapping) and len(set(block) & BLOCK_KINDS) == 1,
        f"{where}: a ContentBlock holds exactly one member",
    )
    if "text" in block:
        require(
            isinstance(block["text"], str) and bool(block["text"].strip()),
            f"The text field in the ContentBlock object at {where} is blank. Add text to the"
            " text field, and try again.",
        )
    elif "image" in block:
        require(role == "user", f"{where}: images go in user turns")
        _check_image(block["image"], where)
    elif "toolUse" in block:
        use = block["toolUse"]
        require(role == "assistant", f"{where}: toolUse blocks go in assistant turns")
        require(
            isinstance(use, Mapping)
            and isinstance(use.get("toolUseId"), str)
            and bool(TOOL_ID.match(use["toolUseId"]))
            and isinstance(use.get("name"), str)
            and isinstance(use.get("input"), Mapping),
            f"{where}.toolUse: toolUseId, name and an object input are required",
        )
    elif "toolResult" in block:
        require(role == "user", f"{where}: toolResult blocks go in user turns")


def _check_messages(messages: Any, tool_config: Any) -> None:
    require(isinstance(messages, list) and bool(messages), "messages: at least one is required")
    pending: list[str] = []
    tools_used = False
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        require(
            isinstance(msg, Mapping) and msg.get("role") in ("user", "assistant"),
            f"{where}.role: must be user or assistant",
        )
        role = msg["role"]
        require(
            i > 0 or role == "user",
            "A conversation must start with a user message. Try"
            " again with a conversation that starts with a user message.",
        )
        require(
            i == 0 or messages[i - 1].get("role") != role,
            "A conversation must alternate between user and assistant roles. Make sure the"
            " conversation alternates between user and assistant roles and try again.",
        )
        content = msg.get("content")
        require(isinstance(content, list) and bool(content), f"{where}.content: must not be empty")
        for j, block in enumerate(content):
            _check_block(block, role, f"{where}.content.{j}")
        results = [b["toolResult"].get("toolUseId") for b in content if "toolResult" in b]
        if pending:
            missing = [p for p in pending if p not in results]
            require(
                not missing,
                f"Expected toolResult blocks at {where}.content for the following"
                f" Ids: {', '.join(missing)}",
            )
        stray = [r for r in results if r not in pending]
        require(not stray, f"{where}.content: toolResult ids {stray} answer no toolUse")
        pending = [b["toolUse"]["toolUseId"] for b in content if "toolUse" in b]
        tools_used = tools_used or bool(pending or results)
    require(
        not tools_used or isinstance(tool_config, Mapping),
        "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
    )


def obj_get(body: Any, key: str) -> Mapping[str, Any]:
    value = body.get(key) if isinstance(body, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def forced_tool(body: Any) -> str | None:
    """The tool a request forces (`toolConfig.toolChoice.tool.name`), if any."""
    name = obj_get(obj_get(obj_get(body, "toolConfig"), "toolChoice"), "tool").get("name")
    return name if isinstance(name, str) else None


def _check_tool_choice(tool_config: Any) -> None:
    choice = obj_get(tool_config, "toolChoice")
    if not choice:
        return
    require(
        len(choice) == 1 and next(iter(choice)) in ("auto", "any", "tool"),
        "toolConfig.toolChoice: exactly one of auto, any, tool",
    )
    name = forced_tool({"toolConfig": tool_config})
    if "tool" in choice:
        names = {obj_get(t, "toolSpec").get("name") for t in tool_config.get("tools") or ()}
        require(name in names, f"toolConfig.toolChoice.tool.name: no tool named {name!r}")


class BedrockVendor(Vendor):
    name = "bedrock"

    def model_for(self, path: str, body: Any) -> str | None:
        match = PATH.match(path)
        return unquote(match.group(1)) if match else None

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        check_signature(request, api_key if api_key and aws_key_parts(api_key) else SIM_AWS_KEY)
        body = request.body
        require(isinstance(body, Mapping), "the body must be a JSON object")
        unknown = sorted(set(body) - BODY_FIELDS)
        require(
            not unknown,
            f"1 validation error detected: unknown field '{unknown[0]}'" if unknown else "",
        )
        _check_messages(body.get("messages"), body.get("toolConfig"))
        _check_tool_choice(body.get("toolConfig"))
        for block in body.get("system") or ():
            require(
                isinstance(block, Mapping) and isinstance(block.get("text"), str),
                "system: text blocks only",
            )
        config = body.get("inferenceConfig") or {}
        require(
            isinstance(config, Mapping)
            and set(config) <= {"maxTokens", "temperature", "topP", "stopSequences"},
            "inferenceConfig: unknown field",
        )

    def streams(self, request: SimRequest) -> bool:
        return request.path.endswith("/converse-stream")

    def framing(self, request: SimRequest) -> Framing:
        return EventStream()

    def last_user_text(self, body: Any) -> str:
        for msg in reversed(body.get("messages") or []):
            if isinstance(msg, Mapping) and msg.get("role") == "user":
                content = msg.get("content")
                blocks = content if isinstance(content, list) else []
                return "".join(b.get("text", "") for b in blocks if isinstance(b, Mapping))
        return ""

    @staticmethod
    def _uses(reply: Reply, serial: int) -> list[dict[str, Any]]:
        return [
            {"toolUseId": c.id or f"tooluse_sim{serial}_{i}", "name": c.name, "input": c.arguments}
            for i, c in enumerate(reply.tool_calls)
        ]

    @staticmethod
    def _stop(reply: Reply) -> str:
        return reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")

    @staticmethod
    def _usage(reply: Reply) -> dict[str, int]:
        return {
            "inputTokens": reply.input_tokens,
            "outputTokens": reply.output_tokens,
            "totalTokens": reply.input_tokens + reply.output_tokens,
        }

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        name = forced_tool(request.body)
        for tool in obj_get(request.body, "toolConfig").get("tools") or () if name else ():
            spec = obj_get(tool, "toolSpec")
            if spec.get("name") == name:
                return JsonAnswer(obj_get(spec, "inputSchema").get("json") or {"type": "object"})
        return None

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        reply, text = as_forced_call(reply, text, forced_tool(request.body))
        content: list[dict[str, Any]] = [{"text": text}] if text else []
        content += [{"toolUse": use} for use in self._uses(reply, serial)]
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self._stop(reply),
            "usage": self._usage(reply),
            "metrics": {"latencyMs": 42},
        }

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        stop = "guardrail_intervened" if empty.reason.lower() == "guardrail" else "end_turn"
        content = [{"text": "Sorry, the model cannot answer this."}] if stop != "end_turn" else []
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": self._usage(Reply(output_tokens=0)),
        }

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        return {"message": message}

    def error_headers(self, status: int, code: str | None) -> dict[str, str]:
        kind = code or ERROR_TYPES.get(status, "InternalServerException")
        return {"x-amzn-ErrorType": f"{kind}:{NAMESPACE}"}

    # --- streams -----------------------------------------------------------------------------

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """`messageStart`; text as `contentBlockDelta`s of block 0; per tool use a
        `contentBlockStart` naming it and its input in pieces; `contentBlockStop` after each
        block; `messageStop` with the stop reason, then `metadata` with the usage."""
        reply, text = as_forced_call(reply, "".join(pieces), forced_tool(request.body))
        pieces = pieces if text else []
        head = [Event({"role": "assistant"}, "messageStart")]
        body: list[Event] = []
        index = 0
        if pieces:
            body += [
                Event(
                    {"contentBlockIndex": 0, "delta": {"text": p}},
                    "contentBlockDelta",
                    content=True,
                )
                for p in pieces
            ]
            body.append(Event({"contentBlockIndex": 0}, "contentBlockStop"))
            index = 1
        for use in self._uses(reply, serial):
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            body.append(
                Event(
                    {"contentBlockIndex": index, "start": start}, "contentBlockStart", content=True
                )
            )
            for piece in cut(json.dumps(use["input"]), options.tool_fragments):
                delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
                body.append(Event(delta, "contentBlockDelta", content=True))
            body.append(Event({"contentBlockIndex": index}, "contentBlockStop"))
            index += 1
        tail = [
            Event({"stopReason": self._stop(reply)}, "messageStop"),
            Event({"usage": self._usage(reply), "metrics": {"latencyMs": 42}}, "metadata"),
        ]
        return StreamParts(head, body, tail if options.terminator else [])

    def stream_empty(self, empty: Empty, request: SimRequest) -> StreamParts:
        whole = self.empty(empty, request)
        text = [
            Event({"contentBlockIndex": 0, "delta": {"text": b["text"]}}, "contentBlockDelta")
            for b in whole["output"]["message"]["content"]
        ]
        return StreamParts(
            tail=[
                Event({"role": "assistant"}, "messageStart"),
                *text,
                Event({"stopReason": whole["stopReason"]}, "messageStop"),
                Event({"usage": whole["usage"]}, "metadata"),
            ]
        )

    def stream_error(self, status: int, message: str, code: str | None) -> Event:
        kind = STREAM_EXCEPTIONS.get(status, "internalServerException")
        return Event({"message": message}, kind, message_type="exception")

    def malformed(self) -> Event:
        return Event(MALFORMED, "contentBlockDelta", raw=True)


VENDOR = BedrockVendor()
