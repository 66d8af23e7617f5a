"""A local LLM provider simulator on 127.0.0.1, for the demo, the tests and your own tests.

One server speaks every supported wire format (routed by path), checks each request against
the vendor's documented rules, and answers per model from a script of behaviours:

    with Simulator() as sim:
        sim.script("gpt-4o", Fail(429, retry_after="30"))
        sim.script("backup", Reply("hello"))
        ...  # point providers at sim.base_url("openai")
        assert sim.count("gpt-4o") == 1

Unscripted models answer with an echo of the last user message. A request that asks for a
stream gets its reply streamed in the vendor's format, as the reply's `Stream` scripts it;
`disconnects(model)` counts the clients that went away before their response was complete.
Other processes can script a running simulator with `POST /_sim/script`, read
`GET /_sim/requests` and `POST /_sim/reset`.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import probes
from .behaviours import (
    Behaviour,
    Close,
    Empty,
    ErrorEvent,
    Fail,
    Hang,
    HtmlError,
    InvalidJson,
    Redirect,
    Reply,
    Stream,
    from_json,
    to_json,
)
from .documents import default_document
from .playback import ClientGone, Connection, Player, Stopped, pieces
from .probes import ProbeBook
from .vendors import VENDORS, Invalid, SimRequest, Vendor
from .wire import Event


def phrase(status: int) -> str:
    """The reason phrase of a status, including vendor-only ones such as 529."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {529: "Overloaded"}.get(status, "Error")


BASE_PATHS = {
    "openai": "/v1",
    "anthropic": "",
    "gemini": "",
    "ollama": "",
    "azure": "/azure",  # a resource's deployments; the v1 API is under /azure/openai/v1
    "mistral": "/mistral/v1",
    "openai_responses": "/v1",
    "cohere": "/cohere",
    "bedrock": "/bedrock",
}


@dataclass
class _State:
    scripts: dict[str, list[Behaviour]] = field(default_factory=dict)
    requests: list[SimRequest] = field(default_factory=list)
    api_key: str | None = None
    serial: int = 0


class Simulator:
    """The simulator server, run in a background thread. Use it as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self._state = _State(api_key=api_key)
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._released = threading.Event()
        self._server = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None
        self.probes = ProbeBook()  # `health`'s model pages and listings (probes.py)

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def base_url(self, provider_type: str) -> str:
        """The `base_url` to configure for a provider of this type."""
        return self.url + BASE_PATHS[provider_type]

    def start(self) -> Simulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released and their connections closed."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting -------------------------------------------------------------------------

    def script(self, model: str, *behaviours: Behaviour) -> None:
        """Answer requests for `model` with these behaviours in turn; the last one repeats."""
        with self._lock:
            self._state.scripts[model] = list(behaviours)

    def script_probe(self, model: str, *behaviours: Behaviour) -> None:
        """Answer health probes of `model` (`*`: of a whole listing) with these in turn."""
        self.probes.script(model, *behaviours)

    def scripted(self) -> list[str]:
        """The models the chat scripts name."""
        with self._lock:
            return list(self._state.scripts)

    def require_key(self, api_key: str | None) -> None:
        """Accept only this key (None: any non-empty key)."""
        with self._lock:
            self._state.api_key = api_key

    def reset(self) -> None:
        with self._lock:
            self._state.scripts.clear()
            self._state.requests.clear()
        self.probes.reset()
        self._released.clear()

    def release(self) -> None:
        """Let replies scripted with `hold=True` go out and stalled streams go on (those
        waiting and later ones), until `reset()`."""
        self._released.set()

    def wait_for(self, count: int, model: str | None = None, timeout: float = 30.0) -> bool:
        """Block until `count` requests (for `model`) have arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._count_locked(model) >= count, timeout)

    def wait_for_disconnects(
        self, count: int, model: str | None = None, timeout: float = 30.0
    ) -> bool:
        """Block until `count` clients (of `model`) went away mid-response; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._gone_locked(model) >= count, timeout)

    def disconnects(self, model: str | None = None) -> int:
        """How many clients (of `model`) went away before their response was complete: during
        a delay, a hold, a hang or a stream (noticed while waiting, or by a failed write)."""
        with self._lock:
            return self._gone_locked(model)

    def _count_locked(self, model: str | None) -> int:
        return sum(1 for r in self._state.requests if model is None or r.model == model)

    def _gone_locked(self, model: str | None) -> int:
        return sum(
            1
            for r in self._state.requests
            if r.disconnected and (model is None or r.model == model)
        )

    @property
    def requests(self) -> list[SimRequest]:
        with self._lock:
            return list(self._state.requests)

    def count(self, model: str | None = None) -> int:
        """How many requests arrived (for `model`, or in all)."""
        with self._lock:
            return self._count_locked(model)

    def _next(self, model: str) -> Behaviour:
        with self._lock:
            queue = self._state.scripts.get(model)
            if not queue:
                return Reply()
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _record(self, request: SimRequest) -> int:
        with self._lock:
            self._state.requests.append(request)
            self._state.serial += 1
            self._lock.notify_all()
            return self._state.serial

    def _gone(self, request: SimRequest) -> None:
        with self._lock:
            request.disconnected = True
            self._lock.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: a burst of new connections then overflows it and
    # the client's SYNs are retried after 1 s, 3 s... (a client opening 100 at once waited 15 s).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler: type[_Handler], sim: Simulator) -> None:
        self.sim = sim
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a cancelled hedge, a closed stream) is routine, as for a
        real server; anything else is a simulator bug and is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = 30  # idle keep-alive connections do not linger

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the demo read stdout/stderr

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    # --- plumbing --------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # --- control endpoints -----------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/_sim/requests":
            data = [
                {
                    "vendor": r.vendor,
                    "path": r.path,
                    "target": r.target,
                    "model": r.model,
                    "body": r.body,
                    "disconnected": r.disconnected,
                }
                for r in self.sim.requests
            ]
            self._json(200, data)
        elif not probes.serve(self):
            self._json(404, {"error": {"message": f"no route GET {self.path}"}})

    def _control(self, raw: bytes) -> None:
        if self.path == "/_sim/reset":
            self.sim.reset()
            self._json(200, {"ok": True})
            return
        if self.path == "/_sim/script":
            try:
                parsed = {m: [from_json(i) for i in items] for m, items in json.loads(raw).items()}
                for model, behaviours in parsed.items():  # all or nothing
                    self.sim.script(model, *behaviours)
            except (ValueError, AttributeError, TypeError) as exc:
                self._json(400, {"error": {"message": str(exc)}})
                return
            self._json(200, {"ok": True})
            return
        self._json(404, {"error": {"message": f"no route POST {self.path}"}})

    # --- the vendor APIs -------------------------------------------------------------------

    def do_POST(self) -> None:
        raw = self._body()
        path = self.path.split("?", 1)[0]
        if path.startswith("/_sim/"):
            self._control(raw)
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        for vendor in VENDORS:
            model = vendor.model_for(path, body)
            if model is not None:
                self._serve(vendor, path, model, body, raw)
                return
        self._json(404, {"error": {"message": f"no simulated API at {path}"}})

    def _serve(self, vendor: Vendor, path: str, model: str, body: Any, raw: bytes) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = SimRequest(vendor.name, path, model, headers, body, target=self.path, raw=raw)
        serial = self.sim._record(request)
        if body is None:
            self._json(400, vendor.error(400, "the request body is not valid JSON", None))
            return
        try:
            vendor.validate(request, self.sim._state.api_key)
        except Invalid as exc:
            error = vendor.error(exc.status, exc.message, exc.code)
            self._json(exc.status, error, vendor.error_headers(exc.status, exc.code).items())
            return
        self._act(self.sim._next(model), vendor, request, serial)

    def _act(self, behaviour: Behaviour, vendor: Vendor, request: SimRequest, serial: int) -> None:
        conn = Connection(self.connection, self.wfile, self.sim._stopping, self.sim._released)
        try:
            if isinstance(behaviour, Reply):
                self._reply(behaviour, vendor, request, serial, conn)
            elif isinstance(behaviour, Fail):
                self._fail(behaviour, vendor)
            elif isinstance(behaviour, Hang):
                conn.wait(behaviour.seconds)
                self.close_connection = True
            elif isinstance(behaviour, Close):
                conn.drop()
                self.close_connection = True
            else:
                self._odd_reply(behaviour, vendor, request, conn)
        except ClientGone:
            self.sim._gone(request)
            self.close_connection = True
        except Stopped:
            self.close_connection = True

    def _reply(
        self, reply: Reply, vendor: Vendor, request: SimRequest, serial: int, conn: Connection
    ) -> None:
        if reply.delay:
            conn.wait(reply.delay)
        if reply.hold:
            conn.wait(None, until_released=True)
        options = reply.stream or Stream()
        text = reply.text
        if text is None and options.pieces is not None:
            text = "".join(options.pieces)
        if text is None:
            echo = vendor.last_user_text(request.body)[:80]
            text = f"Simulated answer from {request.model}: {echo}"
            wanted = vendor.answer_format(request)
            if wanted is not None and not reply.tool_calls:  # a document of the shape asked for
                text = json.dumps(default_document(wanted, text))
        if not vendor.streams(request):
            self._json(200, vendor.reply(reply, text, request, serial))
            return
        parts = vendor.stream_parts(reply, pieces(text, options), request, serial, options)
        self._player(vendor, request, conn, options).play(parts)

    def _player(
        self,
        vendor: Vendor,
        request: SimRequest,
        conn: Connection,
        options: Stream,
        error: Event | None = None,
    ) -> Player:
        """Send a streaming 200's headers; the player sends the body. The error event is the
        one `options` scripts unless one is given."""
        if error is None:
            message = options.error_message or phrase(options.error_status)
            error = vendor.stream_error(options.error_status, message, None)
        framing = vendor.framing(request)
        self.send_response(200)
        self.send_header("Content-Type", framing.content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        return Player(
            conn,
            framing,
            options,
            keepalive=vendor.keepalive(request),
            error=error,
            malformed=vendor.malformed(),
        )

    def _odd_reply(
        self, behaviour: Behaviour, vendor: Vendor, request: SimRequest, conn: Connection
    ) -> None:
        """Replies that are not the vendor's answer: broken bodies, HTML pages, redirects, and
        empty answers and error events (streamed to a request that asks for a stream)."""
        streamed = vendor.streams(request)
        if isinstance(behaviour, InvalidJson):
            self._send(behaviour.status, b"this is not json {", "application/json")
        elif isinstance(behaviour, HtmlError):
            page = (
                f"<html><head><title>{behaviour.status} {phrase(behaviour.status)}"
                "</title></head>"
                f"<body>{'<p>upstream error</p>' * 200}</body></html>"
            )
            self._send(behaviour.status, page.encode(), "text/html")
        elif isinstance(behaviour, Empty) and streamed:
            stream = vendor.stream_empty(behaviour, request)
            self._player(vendor, request, conn, Stream()).play(stream)
        elif isinstance(behaviour, Empty):
            self._json(200, vendor.empty(behaviour, request))
        elif isinstance(behaviour, ErrorEvent):
            message = behaviour.message or phrase(behaviour.status)
            if streamed:
                error = vendor.stream_error(behaviour.status, message, behaviour.code)
                self._player(vendor, request, conn, Stream(), error).error_only()
            else:
                self._json(200, vendor.error(behaviour.status, message, behaviour.code))
        elif isinstance(behaviour, Redirect):
            self._send(307, b"", "text/plain", [("Location", behaviour.location)])

    def _fail(self, behaviour: Fail, vendor: Vendor) -> None:
        """The vendor's error body; Retry-After as a header, or in the body where it goes."""
        message = behaviour.message or phrase(behaviour.status)
        headers = {**vendor.error_headers(behaviour.status, behaviour.code), **behaviour.headers}
        in_body = None
        if behaviour.retry_after is not None and vendor.retry_after_header:
            headers["Retry-After"] = behaviour.retry_after
        else:
            in_body = behaviour.retry_after
        body = vendor.error(behaviour.status, message, behaviour.code, in_body)
        self._json(behaviour.status, body, headers.items())


__all__ = ["Simulator", "to_json"]
