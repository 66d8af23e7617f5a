"""What every simulated vendor implements: route, validate, and render replies and errors."""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..behaviours import Empty, Reply, SimToolCall, Stream
from ..documents import JsonAnswer
from ..wire import MALFORMED, Event, Framing, Sse, StreamParts


@dataclass(slots=True)
class SimRequest:
    """A request as received: path, lower-cased headers and the decoded JSON body.

    `target` is the raw request target, query string included. `disconnected` turns True
    when the client went away before its response was complete (see `Simulator.disconnects`).
    """

    vendor: str
    path: str
    model: str
    headers: Mapping[str, str] = field(repr=False)
    body: Any
    target: str = ""
    disconnected: bool = False
    raw: bytes = field(default=b"", repr=False)  # the body as sent (what a signature covers)


class Invalid(Exception):
    """The request breaks a rule the real service enforces; sent back as the vendor's error."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Vendor(ABC):
    """One wire format."""

    name: str
    retry_after_header = True  # False: the vendor names its wait in the error body instead

    @abstractmethod
    def model_for(self, path: str, body: Any) -> str | None:
        """The model this request is for, or None if the path is not this vendor's."""

    @abstractmethod
    def validate(self, request: SimRequest, api_key: str | None) -> None:
        """Raise Invalid if the real service would reject the request.

        `api_key` is the key the simulator requires, or None to accept any non-empty key.
        """

    def check_auth(self, request: SimRequest, api_key: str | None) -> None:
        """Raise Invalid unless the headers every request needs (the key) are right."""
        return None  # a vendor without keys (Ollama) takes every request

    @abstractmethod
    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        """A successful response body carrying `text` and the reply's tool calls."""

    @abstractmethod
    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        """A 2xx body with no usable answer."""

    @abstractmethod
    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        """The vendor's error body for `status` (`retry_after` only if not sent as a header)."""

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        """The JSON (and schema) this valid request asks for, or None for free text."""
        return None

    def error_headers(self, status: int, code: str | None) -> dict[str, str]:
        """Headers an error response carries besides its body (Bedrock names its type)."""
        return {}

    # --- streaming ---------------------------------------------------------------------------

    def streams(self, request: SimRequest) -> bool:
        """Whether this (valid) request asks for a streamed answer."""
        return isinstance(request.body, Mapping) and request.body.get("stream") is True

    def framing(self, request: SimRequest) -> Framing:
        return Sse()

    @abstractmethod
    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """The events that stream `reply` with its text in `pieces`; `options` says how tool
        calls are cut and whether the stream ends with the vendor's terminator."""

    def stream_empty(self, empty: Empty, request: SimRequest) -> StreamParts:
        """A stream with no usable answer: by default the empty body as the one event."""
        return StreamParts(tail=[Event(self.empty(empty, request))])

    def stream_error(self, status: int, message: str, code: str | None) -> Event:
        """The error event a stream carries inside its 200."""
        return Event(self.error(status, message, code))

    def keepalive(self, request: SimRequest) -> Event | None:
        """The vendor's keep-alive event; None: the framing's comment line."""
        return None

    def malformed(self) -> Event:
        """A data line that is not JSON."""
        return Event(MALFORMED, raw=True)

    def last_user_text(self, body: Any) -> str:
        """The text of the last user turn (the default reply echoes it).

        This reads the `messages` shape shared by OpenAI, Anthropic and Ollama, where content
        is a string or a list of parts with `text`; Gemini overrides it.
        """
        for msg in reversed(body.get("messages") or []):
            if isinstance(msg, Mapping) and msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, str):
                    return content
                texts = [b.get("text", "") for b in content or () if isinstance(b, Mapping)]
                return "".join(t for t in texts if isinstance(t, str))
        return ""


def body_model(body: Any) -> str:
    """The `model` field of a request body ("" when it has none, which `validate` refuses)."""
    model = body.get("model") if isinstance(body, Mapping) else None
    return model if isinstance(model, str) else ""


def require(condition: bool, message: str, status: int = 400, code: str | None = None) -> None:
    """Raise Invalid(status, message) unless `condition` holds."""
    if not condition:
        raise Invalid(status, message, code)


def check_key(presented: str | None, required: str | None, status: int = 401) -> None:
    """Reject a missing key, or one that differs from the key the simulator was told to expect."""
    if not presented:
        raise Invalid(status, "missing API key", "authentication_error")
    if required is not None and presented != required:
        raise Invalid(status, "invalid API key", "authentication_error")


IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def check_image_data(data: Any, media_type: Any, where: str) -> None:
    """An inline image as vision APIs require: a supported media type and valid base64."""
    require(media_type in IMAGE_TYPES, f"{where}: unsupported image media type {media_type!r}")
    require(isinstance(data, str) and bool(data), f"{where}: image data is required")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        require(False, f"{where}: image data is not valid base64")


def check_image_url(url: Any, where: str) -> None:
    """An image URL as OpenAI-style APIs take it: http(s), or a base64 `data:` URL."""
    require(isinstance(url, str), f"{where}: the image URL must be a string")
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type, _, encoding = head.removeprefix("data:").partition(";")
        require(encoding == "base64", f"{where}: a data URL must be base64")
        check_image_data(data, media_type, where)
    else:
        require(url.startswith(("https://", "http://")), f"{where}: invalid image URL")


def as_forced_call(reply: Reply, text: str, name: str | None) -> tuple[Reply, str]:
    """A reply to a request that forces the tool `name` (None: forces none): the text, if it is
    a JSON object, is that tool's input (as the model must answer); any other text stays text."""
    if name is None or reply.tool_calls:
        return reply, text
    try:
        value = json.loads(text)
    except ValueError:
        return reply, text
    if not isinstance(value, dict):
        return reply, text
    stream = replace(reply.stream, pieces=None) if reply.stream is not None else None
    forced = replace(reply, text="", tool_calls=(SimToolCall(name, value),), stream=stream)
    return forced, ""
