"""The adapter interface: a pure translation between our types and one vendor's JSON.

An adapter does no I/O. `_http.send` posts what `build_request` returns and hands the decoded
reply to `parse_response` (or the error body to `parse_error`), so timeouts, status handling and
Retry-After live in one place for every provider. Streaming will add a `parse_stream_event`
beside `parse_response` without changing the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ProviderError
from ..types import Conversation, LlmResponse


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Everything one request needs besides the conversation."""

    model: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    max_tokens: int | None = None
    temperature: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A POST to send: URL, headers and JSON body."""

    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it; nested tables merge instead of being replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def obj(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one (lenient parsing of vendor replies)."""
    return value if isinstance(value, Mapping) else {}


def count(value: Any) -> int | None:
    """A token count: a non-negative integer, else None."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


def error_summary(data: Any) -> tuple[str | None, str | None]:
    """(message, code) from the common error shapes, or (None, None).

    Covers `{"error": {"message", "type"|"code"|"status", "details"}}` (OpenAI, Anthropic,
    Gemini and most compatibles) and `{"error": "text"}` (Ollama).
    """
    if not isinstance(data, Mapping):
        return None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None
    if not isinstance(err, Mapping):
        return None, None
    details = err.get("details")
    candidates = [details.get("error_code")] if isinstance(details, Mapping) else []
    candidates += [err.get("code"), err.get("type"), err.get("status")]
    code = next((c for c in candidates if isinstance(c, str) and c), None)
    message = err.get("message")
    if not isinstance(message, str):
        return None, code
    return (f"{code}: {message}" if code and code not in message else message), code


class Adapter(ABC):
    """One wire protocol. Subclasses implement the two pure conversions."""

    type_name: ClassVar[str]

    @abstractmethod
    def build_request(self, conversation: Conversation, options: CallOptions) -> WireRequest:
        """The POST for this conversation."""

    @abstractmethod
    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        """Turn a decoded 2xx body into a response; raise ProviderError if it holds no answer."""

    def parse_error(self, data: Any) -> tuple[str | None, str | None]:
        """(short message, vendor code) from a decoded error body."""
        return error_summary(data)

    @staticmethod
    def empty(reason: str) -> ProviderError:
        """A 2xx with nothing usable in it: a failure that fails over (D20)."""
        return ProviderError("empty_response", f"empty response: {reason}")

    @staticmethod
    def malformed(reason: str) -> ProviderError:
        return ProviderError("invalid_response", reason)
