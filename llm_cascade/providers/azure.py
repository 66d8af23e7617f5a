"""Azure OpenAI: Chat Completions on a deployment, or on the newer v1 endpoint.

`base_url = "https://RESOURCE.openai.azure.com"` posts to the deployment named by `model`
(`/openai/deployments/{model}/chat/completions?api-version=...`) with the `api-key` header; a
`base_url` ending in `/openai/v1` is the v1 API: OpenAI's own paths, `model` in the body and a
bearer key. Either way the body and the reply are OpenAI's, with two Azure additions read
here: an answer the content filter withheld (`finish_reason: content_filter`) fails over as
an empty answer, and the `content_filter` error code has its own rule.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..errors import ProviderError
from ..types import Conversation, LlmResponse
from .base import Adapter, CallOptions, ProbeRequest, WireRequest, obj
from .openai import OpenAIAdapter, OpenAIStreamParser
from .streaming import Delta, StopDelta, StreamEvent, StreamParser

DEFAULT_API_VERSION = "2024-10-21"  # the latest generally available data-plane version
FILTERED = "content_filter"


def is_v1(base_url: str) -> bool:
    """The v1 API (`.../openai/v1`) rather than a resource's deployments."""
    return base_url.rstrip("/").endswith("/openai/v1")


def _withheld() -> ProviderError:
    return Adapter.empty("answer withheld by the content filter (finish_reason: content_filter)")


class AzureAdapter(OpenAIAdapter):
    type_name = "azure"

    def build_request(
        self, conversation: Conversation, options: CallOptions, *, stream: bool = False
    ) -> WireRequest:
        wire = super().build_request(conversation, options, stream=stream)
        if is_v1(options.base_url):
            return wire  # OpenAI's paths and bearer key
        body = dict(wire.body)
        body.pop("model", None)  # the deployment in the URL is the model
        version = quote(options.api_version or DEFAULT_API_VERSION, safe="")
        deployment = quote(options.model, safe="")
        url = (
            f"{options.base_url}/openai/deployments/{deployment}/chat/completions"
            f"?api-version={version}"
        )
        headers = {"api-key": options.api_key} if options.api_key else {}
        return WireRequest(url, body, headers)

    def probe_requests(self, options: CallOptions) -> tuple[ProbeRequest, ...]:
        """The v1 API lists models as OpenAI does; a deployment has no page its key can read."""
        return super().probe_requests(options) if is_v1(options.base_url) else ()

    def parse_error(self, data: Any) -> tuple[str | None, str | None]:
        """OpenAI's shape; a code that only repeats the status (`"429"`) is no code."""
        message, code = super().parse_error(data)
        if code is not None and code.isdigit():
            message = obj(obj(data).get("error")).get("message")
            return (message if isinstance(message, str) else None), None
        return message, code

    def parse_response(self, data: Any, options: CallOptions) -> LlmResponse:
        response = super().parse_response(data, options)
        if response.stop_reason == FILTERED:  # cut by the filter: the rest is missing
            raise _withheld()
        return response

    def stream_parser(self, options: CallOptions) -> StreamParser:
        return AzureStreamParser(self)


class AzureStreamParser(OpenAIStreamParser):
    """OpenAI's chunks; a first chunk with `choices: []` carries `prompt_filter_results`, and a
    `content_filter` finish means the answer was withheld, however much of it arrived."""

    def feed(self, event: StreamEvent) -> list[Delta]:
        deltas = super().feed(event)
        if any(isinstance(d, StopDelta) and d.reason == FILTERED for d in deltas):
            raise _withheld()
        return deltas


ADAPTER = AzureAdapter()
