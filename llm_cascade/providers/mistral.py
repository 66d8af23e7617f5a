"""Mistral's chat completions (`POST /v1/chat/completions`): OpenAI's shape, and where it differs.

* Tool-call ids must be 9 letters or digits: ids another vendor minted (`call_...`) are mapped
  to such an id, the same on the call and on its result, so a conversation travels both ways.
* A tool result names its function (`name`); an image part's `image_url` is the URL itself.
* A final assistant turn is sent with `prefix: true` (without it the API refuses the turn).
* OpenAI's `seed` is `random_seed` here and `tool_choice: "required"` is `"any"`: `extra`
  written with OpenAI's names is translated. `stream_options` is never sent (the last chunk
  carries the usage anyway).
* Errors are `{"object": "error", "message", "type", "code"}` (a 422's message is a list of
  validation details); a 429 may say its wait only in `ratelimitbysize-reset`.
* `finish_reason: "error"` means the generation failed: an invalid response, not an answer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ..types import Conversation, ImagePart, LlmResponse, Message
from .base import (
    Adapter,
    CallOptions,
    WireRequest,
    deep_merge,
    obj,
    tool_name,
    with_stream,
)
from .openai import (
    OpenAIAdapter,
    OpenAIStreamParser,
    ask_for_output,
    bearer_auth,
    chat_body,
    chat_message,
    response_format,
)
from .streaming import Delta, StopDelta, StreamEvent, StreamParser

_ID = re.compile(r"^[A-Za-z0-9]{9}$")
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOOL_CHOICE = {"required": "any"}  # OpenAI's word -> Mistral's


def tool_call_id(call_id: str) -> str:
    """`call_id` if Mistral takes it, else 9 letters and digits derived from it (stable)."""
    if _ID.match(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    out = ""
    for _ in range(9):
        number, digit = divmod(number, len(_ALPHABET))
        out += _ALPHABET[digit]
    return out


def _image(image: ImagePart) -> dict[str, Any]:
    return {"type": "image_url", "image_url": image.data_url}


def _message(conversation: Conversation, msg: Message) -> dict[str, Any]:
    out = chat_message(msg, tool_call_id, _image)
    if msg.role == "tool":
        name = tool_name(conversation, msg)
        if name:
            out["name"] = name
    return out


def translated(extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` with OpenAI's names for Mistral's fields renamed (`seed`, `tool_choice`)."""
    out = dict(extra)
    if "seed" in out and "random_seed" not in out:
        out["random_seed"] = out.pop("seed")
    choice = out.get("tool_choice")
    if isinstance(choice, str):
        out["tool_choice"] = _TOOL_CHOICE.get(choice, choice)
    return out


def _detail(message: Any) -> str | None:
    """A 422's `{"detail": [{"loc": [...], "msg": ...}]}` as one line."""
    details = obj(message).get("detail")
    if isinstance(details, str):
        return details
    items = []
    for item in map(obj, details if isinstance(details, list) else ()):
        loc = ".".join(str(p) for p in item.get("loc") or () if isinstance(p, str | int))
        text = item.get("msg")
        if isinstance(text, str):
            items.append(f"{loc}: {text}" if loc else text)
    return "; ".join(items) or None


def _check_finish(stop_reason: str | None) -> None:
    if stop_reason == "error":
        raise Adapter.malformed("the generation failed (finish_reason: error)")


class MistralAdapter(OpenAIAdapter):
    type_name = "mistral"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        body = chat_body(conversation, options, lambda m: _message(conversation, m))
        if body["messages"] and body["messages"][-1]["role"] == "assistant":
            body["messages"][-1]["prefix"] = True  # the model continues this turn
        if options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if options.output is not None:  # the same `response_format` as OpenAI's
            ask_for_output(body, conversation, options.output, response_format(options.output))
        body = with_stream(deep_merge(body, translated(options.extra)), stream)
        return WireRequest(f"{options.base_url}/chat/completions", body, bearer_auth(options))

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        response = super().parse_response(data, options)
        _check_finish(response.stop_reason)
        return response

    def parse_error(self, data: Any) -> tuple[str | None, str | None]:
        """`{"object": "error", "message", "type", "code"}`: the type is the code that says
        something (`code` is a number such as "1300"); `{"message"}` alone for a wrong key."""
        if not isinstance(data, Mapping) or "error" in data:
            return super().parse_error(data)
        kind = data.get("type")
        code = kind if isinstance(kind, str) and kind else None
        message = data.get("message")
        text = message if isinstance(message, str) else _detail(message) or _detail(data)
        if text is None:
            return None, code
        return (f"{code}: {text}" if code else text), code

    def rate_limit_wait(self, headers: Mapping[str, str]) -> float | None:
        """Seconds until the size-based window resets (`ratelimitbysize-reset`)."""
        try:
            value = float(headers.get("ratelimitbysize-reset", ""))
        except ValueError:
            return None
        return value if 0 <= value < float("inf") else None

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return MistralStreamParser(self)


class MistralStreamParser(OpenAIStreamParser):
    """OpenAI's chunks; the chunk with the finish reason carries the usage, then `[DONE]`."""

    def feed(self, event: StreamEvent) -> list[Delta]:
        deltas = super().feed(event)
        for delta in deltas:
            if isinstance(delta, StopDelta):
                _check_finish(delta.reason)
        return deltas


ADAPTER = MistralAdapter()
