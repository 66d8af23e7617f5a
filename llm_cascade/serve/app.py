"""The ASGI application: routes, the token, body limits, and the engine's runs as responses.

Thin on purpose: a request's body is read within its limit, translated by the wire module of
its vendor format, run by one shared `Cascade`, and the result or stream translated back. A
client that goes away (noticed by a watcher on `receive`, or a stream it stops reading for
`write_timeout_s`) cancels the run at once: the engine closes the upstream request and records
it as cancelled, with no cooldown. An answer counts as delivered (its saved prompt removed)
only once its last byte was handed to the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import redaction
from ..cascade import Cascade
from ..config import AppConfig, ProviderConfig, load_config
from ..errors import CascadeFailed, LlmCascadeError, UsageError
from ..events import Done, EntryStarted
from ..keys import ResolvedKey, lookup_for, resolve_key
from ..results import CascadeResult, RunOptions
from . import anthropic_wire, dashboard, logs, openai_wire, seams
from .wire import BadRequest, GatewayRequest, decode_body

logger = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SETTINGS_ENV = "LLM_CASCADE_SERVE_SETTINGS"  # how the runner hands settings to each worker
TOKEN_ENV = "LLM_CASCADE_SERVE_TOKEN"
MAX_BODY_BYTES = 32 << 20  # as a provider reply may be: far above any real request
WRITE_TIMEOUT_S = 30.0
KEY_TTL_S = 60.0
CLIENT_GONE = 499  # what the access log says of a client that left (nginx's convention)
JSON = b"application/json"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass(frozen=True, slots=True)
class Settings:
    """How one gateway runs. The token is not among the fields handed over in the
    environment's JSON: it travels in its own variable, as an operator sets it."""

    config_path: str | None = None
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = MAX_BODY_BYTES
    cors_origins: tuple[str, ...] = ()
    health_interval_s: float | None = None
    write_timeout_s: float = WRITE_TIMEOUT_S
    json_logs: bool = False

    def to_env(self) -> str:
        values = asdict(self)
        values.pop("token")
        return json.dumps(values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        values = json.loads(environ.get(SETTINGS_ENV) or "{}")
        values["cors_origins"] = tuple(values.get("cors_origins") or ())
        return cls(token=environ.get(TOKEN_ENV) or None, **values)


def create_app() -> Gateway:
    """uvicorn's factory, called in each worker: settings from the environment."""
    settings = Settings.from_env()
    logs.setup(json_lines=settings.json_logs)
    redaction.register(settings.token)
    return Gateway(settings, load_config(settings.config_path))


class ClientGone(Exception):
    """The client disconnected, or stopped reading its stream for too long."""


class KeyCache:
    """Provider keys looked up at most once a minute, not on every request: a keyring call
    can take seconds. A key set with `llm-cascade key set` is used within a minute."""

    def __init__(self, config: AppConfig, ttl_s: float = KEY_TTL_S) -> None:
        self.config = config
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[float, ResolvedKey]] = {}
        self._keyring_failed = False

    def __call__(self, provider: ProviderConfig) -> ResolvedKey:
        now = time.monotonic()
        cached = self._keys.get(provider.name)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        use_keyring = self.config.keyring and not self._keyring_failed
        key = resolve_key(lookup_for(provider), use_keyring=use_keyring)
        self._keyring_failed = self._keyring_failed or key.keyring_failed
        self._keys[provider.name] = (now, key)
        return key


@dataclass(frozen=True, slots=True)
class _Dialect:
    """One vendor format: its request parser, renderings and error shape."""

    name: str
    parse: Callable[[Mapping[str, Any], Mapping[str, object], Mapping[str, str]], GatewayRequest]
    render: Callable[[CascadeResult], dict[str, Any]]
    stream: Callable[[GatewayRequest], openai_wire.ChunkStream | anthropic_wire.EventStream]
    error: Callable[[int, str, str | None, str | None], dict[str, Any]]


OPENAI = _Dialect(
    "openai",
    openai_wire.parse_request,
    openai_wire.completion,
    lambda r: openai_wire.ChunkStream(r.cascade, include_usage=r.include_usage),
    lambda status, message, param, code: openai_wire.error(status, message, param=param, code=code),
)
ANTHROPIC = _Dialect(
    "anthropic",
    anthropic_wire.parse_request,
    anthropic_wire.message,
    lambda r: anthropic_wire.EventStream(r.cascade),
    lambda status, message, _param, _code: anthropic_wire.error(status, message),
)


class Exchange:
    """One request and its response as they happen: what the access line reports."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        self.receive = receive
        self._send = send
        self.dialect = ANTHROPIC if self.path == "/v1/messages" else OPENAI
        self.status = 0
        self.sent = 0
        self.gone = False  # the client disconnected
        self.complete = False  # the last bytes are being handed over: no more watching
        self.fields: dict[str, str | int | None] = {}
        self.extra_headers: list[tuple[bytes, bytes]] = []  # CORS

    @property
    def started(self) -> bool:
        return self.status != 0

    async def body(self, limit: int) -> bytes:
        """The whole request body; a 413 past `limit`, counted as it arrives."""
        declared = self.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _too_large(limit)
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers + self.extra_headers,
            }
        )

    async def write(self, data: bytes, *, more: bool = True, timeout: float | None = None) -> None:
        """Hand `data` to the server; a client that does not take it within `timeout` is gone
        (the server waits for a full socket buffer to drain before taking more)."""
        self.sent += len(data)
        message = {"type": "http.response.body", "body": data, "more_body": more}
        try:
            async with asyncio.timeout(timeout):
                await self._send(message)
        except TimeoutError:
            self.gone = True
            raise ClientGone from None
        if self.gone:
            raise ClientGone

    async def respond(
        self, status: int, body: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        length = str(len(body)).encode()
        await self.start(
            status, [(b"content-type", content_type), (b"content-length", length), *headers]
        )
        await self.write(body, more=False)

    async def json(
        self, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await self.respond(status, json.dumps(data).encode(), JSON, headers or [])

    async def fail(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """The vendor's error object for this request's format."""
        self.fields.setdefault("error", code or status)
        await self.json(status, self.dialect.error(status, message, param, code), headers)


def _too_large(limit: int) -> BadRequest:
    return BadRequest(
        f"the request body is larger than this gateway accepts ({limit} bytes; see --max-body)",
        status=413,
        code="request_too_large",
    )


class Gateway:
    """The ASGI application of one worker: one engine, one key cache, one config."""

    def __init__(self, settings: Settings, config: AppConfig) -> None:
        self.settings = settings
        self.config = config
        self.keys = KeyCache(config)
        self.engine = Cascade(config, key_resolver=self.keys)
        self.started_at = int(time.time())
        self._snapshot: tuple[float, bytes] | None = None
        self._health: asyncio.Task[None] | None = None
        self._routes: dict[tuple[str, str], Callable[[Exchange], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._complete,
            ("POST", "/v1/messages"): self._complete,
            ("GET", "/v1/models"): self._models,
            ("GET", "/readyz"): self._ready,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/"): self._dashboard,
            ("GET", "/dashboard.json"): self._dashboard_json,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(Exchange(scope, receive, send))
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # --- lifecycle ------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.settings.health_interval_s:
                    self._health = asyncio.create_task(self._health_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._health is not None:
                    self._health.cancel()
                await self.engine.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health_loop(self) -> None:
        """Probe every entry every `health_interval_s`, so breakers are fresh before a
        request needs them; a failing check costs a warning, never the gateway."""
        interval = self.settings.health_interval_s or 0.0
        while True:
            await asyncio.sleep(interval)
            try:
                await seams.check_health(self.config)
            except (LlmCascadeError, OSError) as exc:
                logger.warning("background health check failed: %s", exc)

    # --- one request ----------------------------------------------------------------------

    async def _http(self, ex: Exchange) -> None:
        began = time.perf_counter()
        try:
            await self._dispatch(ex)
        except ClientGone:
            ex.fields["outcome"] = "client_gone"
        except BadRequest as exc:
            headers = [(b"connection", b"close")] if exc.status == 413 else []
            if not ex.started:
                await ex.fail(
                    exc.status, exc.message, param=exc.param, code=exc.code, headers=headers
                )
        except UsageError as exc:  # the engine refused before sending: no entry can serve it
            if not ex.started:
                await ex.fail(400, str(exc), code="unsupported_request")
        except Exception as exc:  # a bug must not become a traceback or a hung client
            logger.error(
                "internal error on %s %s: %s: %s", ex.method, ex.path, type(exc).__name__, exc
            )
            if not ex.started:
                await ex.fail(500, "internal error in llm-cascade serve (see its log)")
        finally:
            status = CLIENT_GONE if ex.gone else ex.status
            logs.access(
                ex.method,
                ex.path,
                status,
                (time.perf_counter() - began) * 1000,
                ex.sent,
                **ex.fields,
            )

    async def _dispatch(self, ex: Exchange) -> None:
        if ex.method == "GET" and ex.path == "/healthz":  # liveness: no token, nothing read
            await ex.json(200, {"status": "ok"})
            return
        if await self._cors(ex):
            return
        if not self._authorized(ex.headers):
            ex.fields["error"] = "unauthorized"
            challenge = [(b"www-authenticate", b'Basic realm="llm-cascade"')]
            message = "missing or wrong token (Authorization: Bearer TOKEN or x-api-key)"
            await ex.fail(401, message, code="invalid_api_key", headers=challenge)
            return
        handler = self._routes.get((ex.method, ex.path))
        if handler is not None:
            await handler(ex)
            return
        allowed = sorted(m for m, p in self._routes if p == ex.path)
        if allowed:
            methods = ", ".join(allowed)
            message = f"{ex.method} is not allowed here (use {methods})"
            await ex.fail(405, message, headers=[(b"allow", methods.encode())])
        else:
            await ex.fail(404, f"no endpoint {ex.path} (see docs/serve.md)", code="not_found")

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        """The token, compared in constant time, from `Authorization: Bearer`, `x-api-key`
        (what each vendor's SDK sends) or Basic auth's password (what a browser sends)."""
        token = self.settings.token
        if token is None:
            return True
        offered = _offered_token(headers)
        return offered is not None and hmac.compare_digest(offered.encode(), token.encode())

    async def _cors(self, ex: Exchange) -> bool:
        """Allow the configured origins (none by default); True if this was a preflight."""
        origin = ex.headers.get("origin")
        allowed = self.settings.cors_origins
        if origin is None or not (origin in allowed or "*" in allowed):
            return False
        ex.extra_headers = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"origin")]
        if ex.method != "OPTIONS":
            return False
        asked = ex.headers.get("access-control-request-headers", "")
        await ex.start(
            204,
            [
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", asked.encode() if asked.isprintable() else b""),
                (b"access-control-max-age", b"600"),
            ],
        )
        await ex.write(b"", more=False)
        return True

    # --- the vendor APIs ------------------------------------------------------------------

    def _options(self, request: GatewayRequest) -> RunOptions:
        """A stream's bytes cannot be taken back: a broken one is continued (where the
        cascade's policy and an entry allow it) or ends with the vendor's error event."""
        cascade = self.config.cascades[request.cascade]
        return RunOptions(
            on_midstream=None if cascade.on_midstream else "continue",
            can_restart=not request.stream,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            vendor_headers=request.vendor_headers,
        )

    async def _complete(self, ex: Exchange) -> None:
        """`/v1/chat/completions` and `/v1/messages`: parse, run, answer in the same format."""
        raw = await ex.body(self.settings.max_body_bytes)
        request = ex.dialect.parse(decode_body(raw), self.config.cascades, ex.headers)
        ex.fields["cascade"] = request.cascade
        async with _watching(ex):
            if request.stream:
                await self._stream(ex, request)
            else:
                await self._whole(ex, request)

    async def _whole(self, ex: Exchange, request: GatewayRequest) -> None:
        try:
            answer = await self.engine.answer(
                request.cascade, request.conversation, self._options(request)
            )
        except CascadeFailed as exc:
            await self._failed(ex, exc)
            return
        result = answer.result
        ex.fields["entry"] = result.entry
        ex.complete = True
        try:
            await ex.json(200, ex.dialect.render(result), _entry_header(result.entry))
        finally:
            if ex.gone:
                answer.undelivered("the client went away before the answer was written")
            else:
                answer.delivered()

    async def _stream(self, ex: Exchange, request: GatewayRequest) -> None:
        out = ex.dialect.stream(request)
        timeout = self.settings.write_timeout_s
        events = self.engine.stream(request.cascade, request.conversation, self._options(request))
        try:
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, EntryStarted):
                        ex.fields["entry"] = event.entry
                    data = out.feed(event)
                    if not data:
                        continue
                    if not ex.started:
                        await ex.start(200, SSE_HEADERS + _entry_header(ex.fields.get("entry")))
                    if isinstance(event, Done):
                        ex.complete = True
                        try:
                            await ex.write(b"".join(data), more=False, timeout=timeout)
                        except ClientGone:
                            event.answer.undelivered("the client went away before the end")
                            raise
                        return  # closing the stream after Done: the answer was delivered
                    await ex.write(b"".join(data), timeout=timeout)
        except CascadeFailed as exc:
            if not ex.started:
                await self._failed(ex, exc)
                return
            ex.fields["outcome"] = "failed"
            ex.complete = True
            await ex.write(type(out).error(_failure_text(exc)), more=False, timeout=timeout)

    async def _failed(self, ex: Exchange, exc: CascadeFailed) -> None:
        """503 in the vendor's error shape, with Retry-After when every entry is cooling (or
        when the cascade's spent budget resets: code `budget_exceeded`)."""
        ex.fields["outcome"] = exc.outcome
        headers = []
        if exc.retry_after_s is not None:
            headers.append((b"retry-after", str(max(math.ceil(exc.retry_after_s), 1)).encode()))
        if exc.saved.path:
            ex.fields["saved"] = Path(exc.saved.path).stem
            headers.append((b"x-llm-cascade-saved-prompt", Path(exc.saved.path).stem.encode()))
        code = "cascade_failed" if exc.outcome == "failed" else exc.outcome
        await ex.fail(503, _failure_text(exc), code=code, headers=headers)

    async def _models(self, ex: Exchange) -> None:
        names = list(self.config.cascades)
        if "anthropic-version" in ex.headers:  # an Anthropic client lists models its own way
            await ex.json(200, anthropic_wire.models(names))
        else:
            await ex.json(200, openai_wire.models(names, self.started_at))

    # --- operations -----------------------------------------------------------------------

    async def _ready(self, ex: Exchange) -> None:
        """200 when every cascade has an entry with a key that is not cooling down."""
        ready = self.readiness()
        body = {"ready": all(ready.values()), "cascades": ready}
        await ex.json(200 if body["ready"] else 503, body)

    def readiness(self) -> dict[str, bool]:
        now = self.engine.clock.now()
        keys = [e.key for c in self.config.cascades.values() for e in c.entries]
        store = self.engine.state_store()
        try:
            states = store.states(keys) if store is not None else {}
        except sqlite3.Error:  # the engine fails open without the database: so does this
            states = {}
        out = {}
        for cascade in self.config.cascades.values():
            out[cascade.name] = any(
                self.keys(self.config.providers[e.provider]).source != "missing"
                and not (e.key in states and states[e.key].is_cooling(now))
                for e in cascade.entries
            )
        return out

    async def _metrics(self, ex: Exchange) -> None:
        text = seams.render_metrics(self.config, self.engine.clock.now())
        await ex.respond(200, text.encode(), seams.METRICS_CONTENT_TYPE.encode(), [])

    def _dashboard_data(self) -> dict[str, Any]:
        return dashboard.snapshot(self.config, self.engine.state_store(), self.engine.clock.now())

    async def _dashboard(self, ex: Exchange) -> None:
        page = dashboard.page(self._dashboard_data())
        await ex.respond(200, page, b"text/html; charset=utf-8", _NO_STORE)

    async def _dashboard_json(self, ex: Exchange) -> None:
        await ex.respond(200, json.dumps(self._dashboard_data()).encode(), JSON, _NO_STORE)


_NO_STORE = [(b"cache-control", b"no-store")]


def _entry_header(entry: str | int | None) -> list[tuple[bytes, bytes]]:
    return [(b"x-llm-cascade-entry", str(entry).encode())] if isinstance(entry, str) else []


def _failure_text(exc: CascadeFailed) -> str:
    """What the client is told: every entry's failure, and where the prompt waits (its id
    for `llm-cascade failed retry`, not a path on this machine)."""
    head = (
        f"every entry of cascade '{exc.cascade_name}' failed: {'; '.join(exc.message.splitlines())}"
        if exc.outcome == "failed"
        else exc.message
    )
    if exc.saved.path:
        ident = Path(exc.saved.path).stem
        return f"{head}. The prompt is saved on the gateway: llm-cascade failed retry {ident}"
    return f"{head}. The prompt could not be saved: {exc.saved.error}"


def _offered_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return headers.get("x-api-key")


@asynccontextmanager
async def _watching(ex: Exchange) -> AsyncIterator[None]:
    """Cancel the work inside when the client disconnects: the engine then closes the
    upstream request at once. (The server reports the disconnect only to `receive`.)"""
    task = asyncio.current_task()
    assert task is not None

    async def watch() -> None:
        while True:
            message = await ex.receive()
            if message["type"] == "http.disconnect":
                if not ex.complete:  # a finished response also reads as a disconnect
                    ex.gone = True
                    task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not ex.gone:
            raise  # a shutdown past its grace period: the engine kept the prompt
        task.uncancel()
        raise ClientGone from None
    finally:
        watcher.cancel()
