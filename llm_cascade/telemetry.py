"""OpenTelemetry spans for cascade runs and their attempts, when the process traces.

llm-cascade never imports OpenTelemetry itself: a process that traces has imported it and set
a tracer provider (an application with the SDK, or `opentelemetry-instrument llm-cascade
...`); only then does a run become a span (`cascade {name}`) with one CLIENT span per attempt
(`chat {model}`) carrying the GenAI attributes. Otherwise every call here is a dictionary
lookup and a no-op, and `pip install llm-cascade[otel]` is all it takes to have the API.

The spans are started and ended by hand, never made current: a run is an async generator,
and a current span would leak into the caller's code between its events.
"""

from __future__ import annotations

import sys
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


def _trace_api() -> Any | None:
    """`opentelemetry.trace` if the process imported it and set a provider, else None."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # the API alone, nobody set a provider: nothing would be recorded
    return trace


def _failed(span: Any, trace: Any, error: BaseException) -> None:
    if isinstance(error, ProviderError):
        span.set_attribute("error.type", str(error.status) if error.status else error.kind)
        if error.status:
            span.set_attribute("http.response.status_code", error.status)
        description = error.display()
    else:
        span.set_attribute("error.type", type(error).__name__)
        description = str(error).split("\n", 1)[0]
    span.set_status(trace.Status(trace.StatusCode.ERROR, description))


class AttemptSpan:
    """The span of one request; use as a context manager around it, and say `answered`."""

    def __init__(self, trace: Any = None, span: Any = None) -> None:
        self._trace = trace
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

    def __enter__(self) -> AttemptSpan:
        return self

    def __exit__(self, kind: object, error: BaseException | None, _: object) -> None:
        if self.span is None:
            return
        if error is not None:
            _failed(self.span, self._trace, error)
        self.span.end()


class RunTrace:
    """The span of one cascade run, and the parent of its attempts' spans."""

    def __init__(self, cascade: str, run_id: str) -> None:
        self._trace: Any = _trace_api()
        self._tracer: Any = None
        self.span: Any = None
        if self._trace is not None:
            self._tracer = self._trace.get_tracer("llm_cascade", __version__)
            attributes = {"llm_cascade.cascade": cascade, "llm_cascade.run_id": run_id}
            self.span = self._tracer.start_span(f"cascade {cascade}", attributes=attributes)

    def attempt(
        self, provider_type: str, entry: str, model: str, base_url: str, try_number: int
    ) -> AttemptSpan:
        """A CLIENT span `chat {model}` for one request, child of the run's span."""
        if self.span is None:
            return AttemptSpan()
        trace: Any = self._trace
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
        span = self._tracer.start_span(
            f"chat {model}",
            context=trace.set_span_in_context(self.span),
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
        )
        return AttemptSpan(trace, span)

    def end(self, error: BaseException | None = None) -> None:
        """End the run's span (once), failed when `error` is given."""
        if self.span is None:
            return
        if error is not None:
            _failed(self.span, self._trace, error)
        self.span.end()
        self.span = None
