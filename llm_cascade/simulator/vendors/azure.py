"""Simulated Azure OpenAI: a resource's deployments (`/azure/openai/deployments/{name}/chat/
completions?api-version=...`, key in `api-key`) and the v1 API (`/azure/openai/v1/...`, a
bearer key), with OpenAI's body rules and Azure's own error and content-filter shapes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..behaviours import Empty, Reply, Stream
from ..wire import Event, StreamParts
from .base import Invalid, SimRequest, check_key
from .openai import OpenAIVendor, bearer

DEPLOYMENT = re.compile(r"^/azure/openai/deployments/([^/]+)/chat/completions$")
V1 = "/azure/openai/v1/chat/completions"
FILTERED = "content_filter"
# What Azure puts beside an answer it let through: every category checked, none filtered.
PASSED = {c: {"filtered": False, "severity": "safe"} for c in ("hate", "self_harm", "sexual")}


class AzureVendor(OpenAIVendor):
    name = "azure"

    def model_for(self, path: str, body: Any) -> str | None:
        match = DEPLOYMENT.match(path)
        if match:
            return unquote(match.group(1))
        if path == V1:
            return super().model_for(path, body)
        return None

    def validate(self, request: SimRequest, api_key: str | None) -> None:
        if request.path == V1:
            check_key(bearer(request) or request.headers.get("api-key"), api_key)
            self.check_body(request.body)
            return
        check_key(request.headers.get("api-key"), api_key)
        query = parse_qs(urlsplit(request.target).query)
        if not query.get("api-version"):
            raise Invalid(404, "Resource not found", "404")
        self.check_body(request.body, needs_model=False)

    def reply(self, reply: Reply, text: str, request: SimRequest, serial: int) -> dict[str, Any]:
        body = super().reply(reply, text, request, serial)
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": PASSED}]
        body["choices"][0]["content_filter_results"] = PASSED
        return body

    def stream_parts(
        self, reply: Reply, pieces: list[str], request: SimRequest, serial: int, options: Stream
    ) -> StreamParts:
        """OpenAI's chunks, after the chunk Azure sends first: no choices, only the prompt's
        filter results."""
        parts = super().stream_parts(reply, pieces, request, serial, options)
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": PASSED}],
        }
        return StreamParts([Event(first), *parts.head], parts.body, parts.tail)

    def empty(self, empty: Empty, request: SimRequest) -> dict[str, Any]:
        if empty.reason != FILTERED:
            return super().empty(empty, request)
        message = {"role": "assistant", "content": "Once upon"}  # cut where the filter hit
        choice = {"index": 0, "message": message, "finish_reason": FILTERED}
        return {
            "id": "chatcmpl-sim-filtered",
            "object": "chat.completion",
            "model": request.model,
            "choices": [choice],
        }

    def stream_empty(self, empty: Empty, request: SimRequest) -> StreamParts:
        if empty.reason != FILTERED:
            return super().stream_empty(empty, request)
        chunk = {"object": "chat.completion.chunk", "model": request.model}
        text = {"index": 0, "delta": {"role": "assistant", "content": "Once upon"}}
        cut = {"index": 0, "delta": {}, "finish_reason": FILTERED}
        return StreamParts(
            tail=[
                Event({**chunk, "choices": [text]}, content=True),
                Event({**chunk, "choices": [cut]}),
                Event("[DONE]", raw=True),
            ]
        )

    def error(
        self, status: int, message: str, code: str | None, retry_after: str | None = None
    ) -> dict[str, Any]:
        err: dict[str, Any] = {"code": code or str(status), "message": message}
        if code == FILTERED:
            filtered = {**PASSED, "violence": {"filtered": True, "severity": "high"}}
            err.update(
                param="prompt",
                status=400,
                innererror={
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": filtered,
                },
            )
        return {"error": err}


VENDOR = AzureVendor()
