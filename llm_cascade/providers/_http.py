"""The one place that talks HTTP: budgets, status handling, Retry-After, error bodies.

No retries happen here (the engine owns the only retry loop) and redirects are never
followed. Every failure becomes a `ProviderError` whose message is short, has every
known secret scrubbed out and its control characters escaped, so no httpx type,
secret or terminal escape leaks upward. The body is read within `max_response_bytes`, decoded
JSON enters our types only through `untrusted.loads` (no lone surrogates, bounded nesting).
"""

from __future__ import annotations

import asyncio
import math
import re
import zlib
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .. import redaction, untrusted
from ..errors import ProviderError
from ..text import shorten, size_text
from ..types import Conversation, LlmResponse
from .base import Adapter, CallOptions

MAX_MESSAGE_CHARS = 300
ACCEPT_ENCODING = "gzip, deflate"  # what `_Inflater` decodes within a size limit


@dataclass(frozen=True, slots=True)
class Budget:
    """Time limits for one request, in seconds."""

    total: float
    connect: float
    first_byte: float


@dataclass(frozen=True, slots=True)
class Reply:
    """A parsed answer and the real HTTP status it came with."""

    response: LlmResponse
    status: int


def parse_retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP-date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:  # "-0000": UTC with no stated zone, never local time
            moment = moment.replace(tzinfo=UTC)
        value = moment.timestamp() - now
    return max(value, 0.0) if math.isfinite(value) else None


def scrub(text: str) -> str:
    """Provider text fit for a message: known secrets out, one line, control characters
    escaped, cut to a readable length."""
    return shorten(
        untrusted.escape_controls(" ".join(redaction.redact(text).split())), MAX_MESSAGE_CHARS
    )


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _Inflater:
    """Undoes a gzip or deflate Content-Encoding without ever producing more than asked for,
    so a small body that inflates to gigabytes costs no more memory than the limit."""

    def __init__(self, header: str) -> None:
        codings = [c.strip().lower() for c in header.split(",")]
        codings = [c for c in codings if c in _WBITS]  # like httpx: others pass as they are
        if len(codings) > 1:
            raise ProviderError(
                "invalid_response", f"stacked Content-Encoding {header.strip()!r} not supported"
            )
        self.coding = codings[0] if codings else None
        self._zlib = zlib.decompressobj(_WBITS[self.coding]) if self.coding else None
        self._first = True

    def __call__(self, data: bytes, most: int) -> bytes:
        """Up to `most` bytes decoded from `data` (and what came before it)."""
        if self._zlib is None:
            return data
        first, self._first = self._first, False
        try:
            return self._zlib.decompress(data, most)
        except zlib.error:
            if first and self.coding == "deflate":  # raw deflate without the zlib header
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self(data, most)
            raise ProviderError(
                "invalid_response", f"the {self.coding} body cannot be decoded"
            ) from None


async def _read_body(response: httpx.Response, limit: int) -> bytes | None:
    """The decoded body, or None as soon as it grows past `limit` bytes (the rest is not read)."""
    inflate = _Inflater(response.headers.get("content-encoding", ""))
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += inflate(chunk, limit + 1 - len(body))
        if len(body) > limit:
            return None
    return bytes(body)


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _decode(body: bytes) -> tuple[str, Any, str]:
    """The body as text; as JSON, or None if it is no JSON we accept; and why not."""
    text = body.decode("utf-8", errors="replace")
    try:
        return text, untrusted.loads(text), ""
    except untrusted.NestedTooDeep as exc:  # too deep for our readers and printers
        return text, None, f"is JSON {exc}"
    except ValueError:
        return text, None, "is not JSON"


def _describe_body(adapter: Adapter, text: str, data: Any) -> tuple[str, str | None]:
    """A short message and vendor code for an error body: JSON, an HTML page or plain text."""
    message, code = adapter.parse_error(data) if data is not None else (None, None)
    if message:
        return message, code
    if text.lstrip()[:1] == "<":
        title = _TITLE.search(text)
        return f"HTML error page{': ' + title.group(1).strip() if title else ''}", code
    return (text.strip() or "(empty body)"), code


async def send(
    client: httpx.AsyncClient,
    adapter: Adapter,
    conversation: Conversation,
    options: CallOptions,
    budget: Budget,
    now: float,
) -> Reply:
    """POST one request within `budget` and parse it; raises ProviderError on any failure."""
    redaction.register(options.api_key, *options.headers.values())  # whatever we send
    wire = adapter.build_request(conversation, options)
    headers = httpx.Headers({"Accept-Encoding": ACCEPT_ENCODING})
    headers.update(wire.headers)
    headers.update(options.headers)
    request = client.build_request(
        "POST",
        wire.url,
        json=wire.body,
        headers=headers,
        timeout=httpx.Timeout(budget.total, connect=budget.connect),
    )
    try:
        async with asyncio.timeout(budget.total) as total_cm:
            try:
                async with asyncio.timeout(budget.first_byte) as first_cm:
                    response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    body = await _read_body(response, options.max_response_bytes)
                finally:
                    await response.aclose()
            except TimeoutError:
                if first_cm.expired() and not total_cm.expired():
                    raise ProviderError(
                        "timeout", f"no response within first_byte_timeout {budget.first_byte:g} s"
                    ) from None
                raise
    except TimeoutError:
        raise ProviderError("timeout", f"no complete response within {budget.total:g} s") from None
    except httpx.TimeoutException as exc:
        phase = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        raise ProviderError("timeout", f"{phase} timed out") from None
    except httpx.ConnectError as exc:
        raise ProviderError("connect", f"connection failed: {scrub(str(exc))}") from None
    except httpx.HTTPError as exc:
        detail = scrub(str(exc)) or type(exc).__name__
        raise ProviderError("transport", f"connection broken: {detail}") from None
    return _interpret(adapter, options, response, body, now)


def _interpret(
    adapter: Adapter, options: CallOptions, response: httpx.Response, body: bytes | None, now: float
) -> Reply:
    """Turn a status and a body (None: larger than allowed) into a Reply or a ProviderError."""
    status = response.status_code
    if 300 <= status < 400:
        target = response.headers.get("location", "?")
        raise ProviderError(
            "http",
            f"redirect to {scrub(target)} not followed; set base_url to the final URL",
            status=status,
        )
    ok = 200 <= status < 300
    if body is None:
        over = f"larger than {size_text(options.max_response_bytes)}"
        if ok:
            raise ProviderError("response_too_large", f"response {over}", status=status)
        text, data, why = f"error body {over}", None, ""  # the status still says what happened
    else:
        text, data, why = _decode(body)
    if not ok:
        message, code = _describe_body(adapter, text, data)
        retry_after = parse_retry_after(response.headers, now)
        if retry_after is None and data is not None:
            retry_after = adapter.retry_after(data)
        raise ProviderError(
            "http", scrub(message), status=status, code=code, retry_after_s=retry_after
        )
    if data is None:
        message, _ = _describe_body(adapter, text, data)
        raise ProviderError(
            "invalid_response", f"HTTP {status} body {why}: {scrub(message)}", status=status
        )
    try:
        reply = adapter.parse_response(data, options)
        _check_arguments(reply)
    except ProviderError as exc:
        exc.status = status
        exc.message = scrub(exc.message)
        raise
    return Reply(reply, status)


def _check_arguments(response: LlmResponse) -> None:
    """Tool-call arguments are JSON inside a string: bound their nesting as the reply's own,
    so no consumer (ours: --json, the next request) can run out of stack on them."""
    for call in response.tool_calls:
        try:
            untrusted.loads(call.arguments)
        except untrusted.NestedTooDeep as exc:
            raise ProviderError(
                "invalid_response", f"tool call '{call.name}' arguments are {exc}"
            ) from None
        except ValueError:
            pass  # not JSON: kept as the model wrote it
