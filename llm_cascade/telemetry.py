"""OpenTelemetry spans for cascade runs and their attempts, when the process traces.

llm-cascade never imports OpenTelemetry itself: a process that traces has imported it and set
a tracer provider (an application with the SDK, or `opentelemetry-instrument llm-cascade
...`); only then does a run become a span (`cascade {name}`) with one CLIENT span per attempt
(`chat {model}`) carrying the GenAI attributes. Otherwise every call here is a dictionary
lookup and a no-op, and `pip install llm-cascade[otel]` is all it takes to have the API.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._version import __version__
from .errors import ProviderError

if TYPE_CHECKING:
    from .types import LlmResponse

# gen_ai.provider.name for each provider type (an OpenAI-compatible base_url keeps `openai`).
GEN_AI_PROVIDER = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
}


def _tracer() -> Any | None:
    """The tracer of a provider the process configured, or None (no import is attempted)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # the API alone, nobody set a provider: nothing would be recorded
    return provider.get_tracer("llm_cascade", __version__)


def run_span(cascade: str, run_id: str) -> Any:
    """The span of one cascade run (the current span while it lasts), or a no-op."""
    tracer = _tracer()
    if tracer is None:
        return nullcontext()
    attributes = {"llm_cascade.cascade": cascade, "llm_cascade.run_id": run_id}
    return tracer.start_as_current_span(f"cascade {cascade}", attributes=attributes)


class AttemptSpan:
    """The span of one request, told how it ended."""

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def answered(self, response: LlmResponse, status: int) -> None:
        if self.span is None:
            return
        attributes: dict[str, Any] = {
            "gen_ai.response.model": response.model,
            "http.response.status_code": status,
        }
        if response.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = response.input_tokens
        if response.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = response.output_tokens
        if response.stop_reason:
            attributes["gen_ai.response.finish_reasons"] = [response.stop_reason]
        self.span.set_attributes(attributes)


@contextmanager
def attempt_span(
    provider_type: str, entry: str, model: str, base_url: str, try_number: int
) -> Iterator[AttemptSpan]:
    """A CLIENT span `chat {model}` around one request, under the run's span; a failure
    sets `error.type` (the HTTP status, else the kind: timeout, connect...)."""
    tracer = _tracer()
    if tracer is None:
        yield AttemptSpan()
        return
    from opentelemetry.trace import SpanKind, StatusCode  # imported already: see _tracer

    url = urlsplit(base_url)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": GEN_AI_PROVIDER.get(provider_type, provider_type),
        "gen_ai.request.model": model,
        "server.address": url.hostname or "",
        "llm_cascade.entry": entry,
        "llm_cascade.try_number": try_number,
    }
    if url.port:
        attributes["server.port"] = url.port
    with tracer.start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        try:
            yield AttemptSpan(span)
        except ProviderError as err:
            span.set_attribute("error.type", str(err.status) if err.status else err.kind)
            if err.status:
                span.set_attribute("http.response.status_code", err.status)
            span.set_status(StatusCode.ERROR, err.display())
            raise
