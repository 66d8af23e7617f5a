"""Simulated Ollama native chat (`POST /api/chat`), with the rules its server enforces.

Ollama takes no key. Its Go server rejects values of the wrong JSON type (tool-call arguments
must be an object, content a string) and ignores unknown fields. Like the real server it
streams unless the request says `"stream": false`: one JSON object a line, tool calls whole in
one message line, the statistics on the last (`"done": true`) line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..behaviours import Empty, Reply, Stream
from ..documents import JsonAnswer
from ..wire import Event, Framing, Ndjson, StreamParts
from .base import SimRequest, Vendor, body_model, check_image_data, require

ROLES = {"system", "user", "assistant", "tool"}
INT_OPTIONS = {"num_predict", "num_ctx", "num_keep", "seed", "top_k", "repeat_last_n", "num_batch"}
FLOAT_OPTIONS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty"}


def _go_type_error(found: str, field: str, expected: str) -> str:
    return f"json: cannot unmarshal {found} into Go struct field {field} of type {expected}"


def _json_kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "number" if isinstance(value, int | float) else "bool"


def _check_messages(messages: Any) -> None:
    require(
        isinstance(messages, list),
        _go_type_error("object", "ChatRequest.messages", "[]api.Message"),
    )
    for i, msg in enumerate(messages):
        require(isinstance(msg, Mapping), f"messages[{i}]: expected an object")
        require(msg.get("role") in ROLES, f"invalid role {msg.get('role')!r} in messages[{i}]")
        content = msg.get("content", "")
        require(
            isinstance(content, str),
            _go_type_error(_json_kind(content), "Message.messages.content", "string"),
        )
        images = msg.get("images", [])
        require(
            isinstance(images, list),
            _go_type_error(_json_kind(images), "Message.messages.images", "[]api.ImageData"),
        )
        for j, image in enumerate(images):  # base64; the server sniffs the format itself
            check_image_data(image, "image/png", f"messages[{i}].images[{j}]")
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, Mapping) else None
            require(
                isinstance(fn, Mapping) and isinstance(fn.get("name"), str),
                "tool_calls: function.name is required",
            )
            args = fn.get("arguments", {}) if isinstance(fn, Mapping) else {}
            require(
                isinstance(args, Mapping),
                _go_type_error(
                    _json_kind(args),
                    "ToolCallFunction.messages.tool_calls.function.arguments",
                    "api.ToolCallFunctionArguments",
                ),
            )


def _check_options(options: Any) -> None:
    require(
        isinstance(options, Mapping),
        _go_type_error(_json_kind(options), "ChatRequest.options", "map[string]interface {}"),
    )
    for key, value in options.items():
        if key in INT_OPTIONS:
            require(
                isinstance(value, int) and not isinstance(value, bool),
                f'option "{key}" must be of type integer',
            )
        if key in FLOAT_OPTIONS:
            require(
                isinstance(value, int | float) and not isinstance(value, bool),
                f'option "{key}" must be of type float32',
            )


class OllamaVendor(Vendor):
    """Ollama /api/chat."""

    name = "ollama"

    def model_for(self, path: str, body: Any) -> str | None:
        if path != "/api/chat":
            return None
        return body_model(body)

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        body = request.body
        require(isinstance(body, Mapping), "the body must be a JSON object")
        require(isinstance(body.get("model"), str) and bool(body["model"]), "model is required")
        stream = body.get("stream", True)
        require(
            isinstance(stream, bool),
            _go_type_error(_json_kind(stream), "ChatRequest.stream", "bool"),
        )
        _check_messages(body.get("messages", []))
        for i, tool in enumerate(body.get("tools") or []):
            fn = tool.get("function") if isinstance(tool, Mapping) else None
            require(
                isinstance(fn, Mapping) and isinstance(fn.get("name"), str),
                f"tools[{i}]: expected {{type: 'function', function: {{name, ...}}}}",
            )
        if "options" in body:
            _check_options(body["options"])
        if "format" in body:  # "json", or a JSON Schema object
            fmt = body["format"]
            require(
                fmt in ("", "json") or isinstance(fmt, Mapping),
                f'invalid format: {fmt!r}: expected "json" or a JSON schema',
            )

    def answer_format(self, request: SimRequest) -> JsonAnswer | None:
        fmt = request.body.get("format")
        if fmt == "json":
            return JsonAnswer()
        return JsonAnswer(fmt) if isinstance(fmt, Mapping) else None

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reply.tool_calls:
            message["tool_calls"] = _tool_calls(reply)
        return self._response(
            request, message, reply.stop_reason or "stop", reply.input_tokens, reply.output_tokens
        )

    def streams(self, request: SimRequest) -> bool:
        return request.body.get("stream", True) is not False

    def framing(self, request: SimRequest) -> Framing:
        return Ndjson()

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        body = [Event(_line(request, {"content": piece}), content=True) for piece in pieces]
        if reply.tool_calls:
            message = {"content": "", "tool_calls": _tool_calls(reply)}
            body.append(Event(_line(request, message), content=True))
        tail = []
        if options.terminator:
            done = reply.stop_reason or "stop"
            last = {"role": "assistant", "content": ""}
            tail.append(
                Event(self._response(request, last, done, reply.input_tokens, reply.output_tokens))
            )
        return StreamParts(body=body, tail=tail)

    def keepalive(self, request: SimRequest) -> Event:
        """Ollama sends no keep-alives; a line with empty content is what a model that thinks
        (or loads) before its first token streams."""
        return Event(_line(request, {"content": ""}))

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        done = empty.reason if empty.reason != "empty" else "stop"
        return self._response(request, {"role": "assistant", "content": ""}, done, 11, 0)

    @staticmethod
    def _response(
        request: SimRequest, message: dict[str, Any], done: str, tokens_in: int, out: int
    ) -> dict[str, Any]:
        return {
            "model": request.model,
            "created_at": _now(),
            "message": message,
            "done_reason": done,
            "done": True,
            "total_duration": 1_000_000,
            "prompt_eval_count": tokens_in,
            "eval_count": out,
        }

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        return {"error": message}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _line(request: SimRequest, message: dict[str, Any]) -> dict[str, Any]:
    """A line of a stream before the last: an assistant message piece, `done: false`."""
    return {
        "model": request.model,
        "created_at": _now(),
        "message": {"role": "assistant", **message},
        "done": False,
    }


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    calls = []
    for i, c in enumerate(reply.tool_calls):
        call: dict[str, Any] = {"function": {"index": i, "name": c.name, "arguments": c.arguments}}
        if c.id:
            call["id"] = c.id
        calls.append(call)
    return calls


VENDOR = OllamaVendor()
