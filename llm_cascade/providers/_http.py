"""The one place that talks HTTP: budgets, status handling, Retry-After, error bodies.

No retries happen here (the engine owns the only retry loop) and redirects are never
followed. Every failure becomes a `ProviderError` whose message is short, has every
known secret scrubbed out and its control characters escaped, so no httpx type,
secret or terminal escape leaks upward. The body is read within `max_response_bytes`, decoded
JSON enters our types only through `untrusted.loads` (no lone surrogates, bounded nesting).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .. import redaction, untrusted
from ..errors import ProviderError
from ..text import shorten, size_text
from ..types import Conversation, LlmResponse
from . import streaming
from .base import Adapter, Budget, CallOptions

MAX_MESSAGE_CHARS = 300
ACCEPT_ENCODING = "gzip, deflate"  # what `_Inflater` decodes within a size limit
JSON = "application/json"


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


def _describe_body(
    adapter: Adapter, text: str, data: Any, headers: httpx.Headers
) -> tuple[str, str | None]:
    """A short message and vendor code for an error body: JSON, an HTML page or plain text."""
    message, code = adapter.error_details(data, headers)
    if message:
        return message, code
    if text.lstrip()[:1] == "<":
        title = _TITLE.search(text)
        return f"HTML error page{': ' + title.group(1).strip() if title else ''}", code
    return (text.strip() or "(empty body)"), code


def _request(
    client: httpx.AsyncClient,
    adapter: Adapter,
    conversation: Conversation,
    options: CallOptions,
    budget: Budget,
    now: float,
    *,
    stream: bool,
) -> httpx.Request:
    wire = adapter.build_request(conversation, options, stream=stream)
    request = _built(client, "POST", wire.url, wire.headers, options, budget, wire.body)
    request.headers.update(
        adapter.sign(str(request.url), request.headers, request.content, options, now)
    )
    return request


def _built(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    wire_headers: dict[str, str],
    options: CallOptions,
    budget: Budget,
    body: dict[str, Any] | None = None,
) -> httpx.Request:
    # Whatever we send is a secret; a compound credential (AWS: `ID:SECRET:TOKEN`) piece by
    # piece too, since a vendor may echo one piece alone.
    key = options.api_key or ""
    redaction.register(key, *key.split(":"), *options.headers.values())
    headers = httpx.Headers({"Accept-Encoding": ACCEPT_ENCODING})
    headers.update(wire_headers)
    headers.update(options.passed_headers)
    headers.update(options.headers)
    content = None
    if body is not None:  # serialised here, as httpx would, so a signature covers these bytes
        headers.setdefault("Content-Type", JSON)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        content = text.encode("utf-8")
    return client.build_request(
        method,
        url,
        content=content,
        headers=headers,
        timeout=httpx.Timeout(budget.total, connect=budget.connect),
    )


def transport_error(exc: httpx.HTTPError) -> ProviderError:
    """One of httpx's failures as a ProviderError, with nothing secret in its text."""
    if isinstance(exc, httpx.TimeoutException):
        phase = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        return ProviderError("timeout", f"{phase} timed out")
    if isinstance(exc, httpx.ConnectError):
        return ProviderError("connect", f"connection failed: {scrub(str(exc))}")
    detail = scrub(str(exc)) or type(exc).__name__
    return ProviderError("transport", f"connection broken: {detail}")


@contextmanager
def _transport_errors() -> Iterator[None]:
    """httpx's failures as ProviderErrors (`transport_error`)."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise transport_error(exc) from None


async def send(
    client: httpx.AsyncClient,
    adapter: Adapter,
    conversation: Conversation,
    options: CallOptions,
    budget: Budget,
    now: float,
) -> Reply:
    """POST one request within `budget` and parse it; raises ProviderError on any failure."""
    request = _request(client, adapter, conversation, options, budget, now, stream=False)
    response, body = await _exchange(client, request, budget, options.max_response_bytes)
    return _interpret(adapter, options, response, body, now)


async def _exchange(
    client: httpx.AsyncClient, request: httpx.Request, budget: Budget, limit: int
) -> tuple[httpx.Response, bytes | None]:
    """Send and read the whole body (None: over `limit`) within `budget`; transport failures
    and timeouts become ProviderErrors."""
    try:
        with _transport_errors():
            async with asyncio.timeout(budget.total) as total_cm:
                try:
                    async with asyncio.timeout(budget.first_byte) as first_cm:
                        response = await client.send(request, stream=True, follow_redirects=False)
                    try:
                        body = await _read_body(response, limit)
                    finally:
                        await response.aclose()
                except TimeoutError:
                    if first_cm.expired() and not total_cm.expired():
                        raise ProviderError(
                            "timeout",
                            f"no response within first_byte_timeout {budget.first_byte:g} s",
                        ) from None
                    raise
    except TimeoutError:
        raise ProviderError("timeout", f"no complete response within {budget.total:g} s") from None
    return response, body


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    adapter: Adapter,
    conversation: Conversation,
    options: CallOptions,
    budget: Budget,
    now: float,
) -> AsyncIterator[StreamReply | WholeReply]:
    """POST a streamed request; `read()` the reply's content until None, then ask for
    `response()`.

    An error status is raised as for a whole reply, before anything is yielded; a server that
    answers a stream with one JSON body (some compatible ones ignore `stream`) is read whole.
    Leaving the block closes the connection at once, whether the stream was read to its end
    or not.
    """
    request = _request(client, adapter, conversation, options, budget, now, stream=True)
    loop = asyncio.get_running_loop()
    limits = _StreamLimits(budget, loop.time())
    with _transport_errors():
        try:
            async with asyncio.timeout(limits.wait(loop.time(), content=False)):
                response = await client.send(request, stream=True, follow_redirects=False)
        except TimeoutError:
            raise limits.timed_out(loop.time(), content=False) from None
    try:
        whole = adapter.stream_format != "ndjson" and response.headers.get(
            "content-type", ""
        ).lower().startswith(JSON)  # media types are case-insensitive
        if whole or not 200 <= response.status_code < 300:
            # An error, or a server that ignored `stream` and sent the whole answer: read it.
            with _transport_errors():
                try:
                    async with asyncio.timeout(limits.wait(loop.time(), content=False)):
                        body = await _read_body(response, options.max_response_bytes)
                except TimeoutError:
                    raise limits.timed_out(loop.time(), content=False) from None
            reply = _interpret(adapter, options, response, body, now)  # raises for errors
            yield WholeReply(reply)
            return
        stream = StreamReply(response, adapter, options, limits)
        try:
            yield stream
        finally:
            stream.close()
    finally:
        await response.aclose()


class _StreamLimits:
    """The three clocks of a stream: to the first content event, between events, in all."""

    __slots__ = ("_end", "_first", "_idle", "budget", "started")

    def __init__(self, budget: Budget, started: float) -> None:
        self.budget = budget
        self.started = started  # the event loop's clock
        self._end = started + budget.total
        self._first = min(self._end, started + budget.first_byte)
        self._idle = budget.idle

    def due(self, now: float, content: bool) -> float:
        """When a read that starts `now` runs out (the event loop's clock). Until content flows,
        the first-byte clock rules: the idle one would cut a slow first token (a model loading)
        shorter than configured."""
        if not content:
            due = self._first
        elif self._idle is None or now + self._idle > self._end:
            due = self._end
        else:
            due = now + self._idle
        return due if due > now else now

    def wait(self, now: float, *, content: bool) -> float:
        """How long a read that starts `now` may take."""
        return self.due(now, content) - now

    def timed_out(self, now: float, *, content: bool) -> ProviderError:
        """Which limit ran out, in words."""
        b = self.budget
        if now >= self.started + b.total - 0.001:
            return ProviderError("timeout", f"no complete response within {b.total:g} s")
        if not content and now >= self.started + b.first_byte - 0.001:
            return ProviderError(
                "timeout", f"no content within first_byte_timeout {b.first_byte:g} s"
            )
        return ProviderError(
            "timeout", f"the stream stalled: nothing for idle_timeout {b.idle or 0:g} s"
        )


class WholeReply:
    """A whole answer to a streamed request, read as a stream of one read."""

    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self._reply = reply
        self._read = False

    def response(self) -> LlmResponse:
        return self._reply.response

    @property
    def text(self) -> str:
        return self._reply.response.text

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._reply.response.tool_calls)

    async def read(self) -> list[streaming.Content] | None:
        """The whole answer's content at the first read, then None."""
        if self._read:
            return None
        self._read = True
        response = self._reply.response
        pieces: list[streaming.Content] = (
            [streaming.TextDelta(response.text)] if response.text else []
        )
        for i, call in enumerate(response.tool_calls):
            pieces.append(streaming.ToolCallDelta(i, call.id, call.name, call.arguments))
        return pieces


class StreamReply:
    """A 2xx stream being read: its content as it comes, then the whole response.

    Each `read` is one read of the body, framed, parsed and assembled at once: the content
    it carried (none for a keep-alive) goes back in one list, so a caller pays per network
    read, not per layer and event.
    """

    def __init__(
        self,
        response: httpx.Response,
        adapter: Adapter,
        options: CallOptions,
        limits: _StreamLimits,
    ) -> None:
        self.status = response.status_code
        self._response = response
        self._options = options
        self._limits = limits
        self._assembler = streaming.StreamAssembler()
        self._framer = streaming.framer(adapter.stream_format)
        self._parse = adapter.stream_parser(options).feed
        self._limit = options.max_response_bytes
        inflater = _Inflater(response.headers.get("content-encoding", ""))
        self._inflate = inflater if inflater.coding else None
        self._raw = response.aiter_raw()
        self._clock = _ReadClock(limits)
        self._received = 0
        self._content = False  # content has come
        self._ended = False  # the body was read to its end
        self._failure: ProviderError | None = None  # met after content the caller gets first

    @property
    def text(self) -> str:
        """The text that has arrived so far."""
        return self._assembler.text

    @property
    def has_tool_calls(self) -> bool:
        return self._assembler.has_tool_calls

    def response(self) -> LlmResponse:
        """The answer the deltas made (after the stream was read to its end)."""
        try:
            reply = self._assembler.response(self._options)
            _check_arguments(reply)
        except ProviderError as exc:
            raise self._scrubbed(exc) from None
        return reply

    async def read(self) -> list[streaming.Content] | None:
        """The content of the next read of the body (text, tool-call pieces; often none), or
        None after its end. Raises ProviderError: a time limit, a broken connection, an error
        event, a body too large, or one that ended before the vendor's end marker."""
        if self._failure is not None or self._ended:
            self._check_end()
            return None
        content = self._content
        clock = self._clock
        clock.start(content)
        try:
            chunk: bytes | None = await self._raw.__anext__()
        except StopAsyncIteration:
            chunk = None
        except BaseException as exc:
            failure = self._read_failed(exc, content)
            if failure is exc:
                raise
            raise failure from None
        clock.stop()
        return self._content_of(chunk)

    def _check_end(self) -> None:
        """Raise what the stream ended with: an error event after content, or no end marker."""
        if self._failure is not None:
            raise self._failure
        if not self._assembler.ended:
            raise ProviderError(
                "truncated", "the stream ended before the provider's end-of-stream marker"
            )

    def _read_failed(self, exc: BaseException, content: bool) -> BaseException:
        """What a read that raised `exc` raises: a timeout of ours, a transport error, or it."""
        if self._clock.stop() and isinstance(exc, asyncio.CancelledError):
            return self._limits.timed_out(self._clock.now(), content=content)
        if isinstance(exc, httpx.HTTPError):
            return transport_error(exc)
        return exc

    def _content_of(self, chunk: bytes | None) -> list[streaming.Content]:
        """The content of one piece of the body (None: its end), framed, parsed, assembled."""
        if chunk is None:
            self._ended = True
            self._clock.close()
            events = self._framer.finish()
        else:
            limit = self._limit
            if self._inflate is not None:
                chunk = self._inflate(chunk, limit + 1 - self._received)
            self._received += len(chunk)
            if self._received > limit:
                raise ProviderError("response_too_large", f"stream larger than {size_text(limit)}")
            events = self._framer.feed(chunk)
        pieces: list[streaming.Content] = []
        for event in events:
            try:
                deltas = self._parse(event)
            except ProviderError as exc:
                if not pieces:
                    raise self._scrubbed(exc) from None
                self._failure = self._scrubbed(exc)  # raised at the next read, as it came after
                break
            self._assembler.take(deltas, pieces)
        if pieces:
            self._content = True
        return pieces

    def close(self) -> None:
        """Stop the read clock (the stream is left, read to its end or not)."""
        self._clock.close()

    def _scrubbed(self, exc: ProviderError) -> ProviderError:
        exc.status = exc.status or self.status
        exc.message = scrub(exc.message)
        return exc


class _ReadClock:
    """The time limits of a stream's reads, kept by one timer handle. A read only notes when it
    started; the handle, when it fires, works out whether the read in progress is due, and if
    not moves itself to when it will be (most reads start and end without a timer call).

    Between reads (while the caller has the content) nothing is due: the caller's time is not
    the stream's. A read whose time runs out is cancelled, as `asyncio.timeout` does it, and
    `stop` tells it was this clock that cancelled it.
    """

    def __init__(self, limits: _StreamLimits) -> None:
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self.now = self._loop.time
        self._started = math.inf  # when the read in progress started; inf between reads
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: bool | None = None  # the `content` of the reads the handle times
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False

    def start(self, content: bool) -> None:
        """A read starts (`content`: after content came, when the idle clock rules)."""
        self._started = now = self.now()
        if content is not self._armed_for:  # no handle yet, or content just began
            self._arm(self._limits.due(now, content), content)

    def stop(self) -> bool:
        """The read ended; True if it was cancelled because its time ran out."""
        self._started = math.inf
        if not self._expired:
            return False
        self._expired = False
        assert self._task is not None
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_for = None

    def _arm(self, when: float, content: bool) -> None:
        if self._task is None:  # a stream is read by one task, as one `asyncio.timeout` binds
            self._task = asyncio.current_task()
            assert self._task is not None
            self._cancelling = self._task.cancelling()
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._fire)
        self._armed_for = content

    def _fire(self) -> None:
        content, started = self._armed_for, self._started
        self._handle, self._armed_for = None, None
        if started == math.inf or content is None:  # between reads: the next one arms it
            return
        due = self._limits.due(started, content)
        if self.now() < due:  # the read in progress started after it was armed
            self._arm(due, content)
            return
        assert self._task is not None
        self._expired = True
        self._task.cancel()


def _payload(
    adapter: Adapter, options: CallOptions, response: httpx.Response, body: bytes | None, now: float
) -> Any:
    """The decoded JSON of a 2xx; a redirect, an error status or a body that is no JSON we
    accept (or larger than allowed: `body` None) raises the ProviderError that says so."""
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
        message, code = _describe_body(adapter, text, data, response.headers)
        retry_after = parse_retry_after(response.headers, now)
        if retry_after is None:
            retry_after = adapter.rate_limit_wait(response.headers)
        if retry_after is None and data is not None:
            retry_after = adapter.retry_after(data)
        raise ProviderError(
            "http", scrub(message), status=status, code=code, retry_after_s=retry_after
        )
    if data is None:
        message, _ = _describe_body(adapter, text, data, response.headers)
        raise ProviderError(
            "invalid_response", f"HTTP {status} body {why}: {scrub(message)}", status=status
        )
    return data


def _interpret(
    adapter: Adapter, options: CallOptions, response: httpx.Response, body: bytes | None, now: float
) -> Reply:
    """Turn a status and a body (None: larger than allowed) into a Reply or a ProviderError."""
    data = _payload(adapter, options, response, body, now)
    try:
        reply = adapter.parse_response(data, options)
        _check_arguments(reply)
    except ProviderError as exc:
        raise _at(exc, response.status_code) from None
    return Reply(reply, response.status_code)


def _at(exc: ProviderError, status: int) -> ProviderError:
    """An adapter's verdict on a 2xx body, with the status it came with (unless the body named
    its own: a failure inside a 200 keeps the status it stands for) and a safe message."""
    exc.status = exc.status or status
    exc.message = scrub(exc.message)
    return exc


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


# --- health probes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probed:
    """What a health probe found: the status of the request that decided, and whether the
    model is served (False: a listing that does not name it)."""

    status: int
    found: bool
    listing: bool  # the decision came from a listing


async def probe(
    client: httpx.AsyncClient,
    adapter: Adapter,
    options: CallOptions,
    budget: Budget,
    now: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> Probed:
    """GET what the adapter names for a probe, all within `budget`: the model's own page,
    and on a 404 the next request (a listing). Raises ProviderError as `send` does: a 404
    from the last one means the model does not exist."""
    requests = adapter.probe_requests(options)
    started = monotonic()
    for number, wire in enumerate(requests, start=1):
        left = _less(budget, monotonic() - started)
        request = _built(client, "GET", wire.url, wire.headers, options, left)
        response, body = await _exchange(client, request, left, options.max_response_bytes)
        if response.status_code == 404 and number < len(requests):
            continue
        data = _payload(adapter, options, response, body, now)
        try:
            found = adapter.listed(data, options) if wire.listing else True
        except ProviderError as exc:
            raise _at(exc, response.status_code) from None
        return Probed(response.status_code, found, wire.listing)
    raise AssertionError("an adapter names at least one probe request")  # pragma: no cover


def _less(budget: Budget, spent: float) -> Budget:
    """What is left of `budget` after `spent` seconds."""
    total = max(budget.total - spent, 0.0)
    return Budget(total, min(budget.connect, total), min(budget.first_byte, total), budget.idle)
