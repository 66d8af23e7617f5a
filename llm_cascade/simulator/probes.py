"""The GET routes `health` probes: each vendor's model page and model listing.

- OpenAI `GET /v1/models` and `/v1/models/{id}`; Anthropic the same paths (told apart by the
  `anthropic-version` header every Anthropic request carries); Gemini
  `GET /v1beta/models/{model}` (and the `/v1beta/models` listing); Ollama `GET /api/tags`.
- Scripted per model with `Simulator.script_probe(model, ...)`, apart from the chat scripts:
  `Reply()` (the default: the model is there, `delay`/`hold` for a slow one), `Fail(404)` (the
  model is missing: its page answers 404 and listings leave it out), `Fail(401)`, `Fail(429,
  retry_after=...)`, `Hang()`, and the odd replies. `Fail(404, code="no_route")` (any other
  code) fails the page alone: a compatible server that lists models but has no model pages.
  A listing request names no model: it is scripted as the model `*`, and lists every model
  the simulator was told about.
- The key rules are each vendor's own (`Vendor.check_auth`).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .behaviours import Behaviour, Close, Fail, Hang, HtmlError, InvalidJson, Redirect, Reply
from .vendors import VENDORS, Invalid, SimRequest, Vendor

if TYPE_CHECKING:
    from .server import _Handler

LISTING = "*"  # the script of requests for a whole listing
MISSING = (None, "model_not_found")  # a Fail(404) with another code fails only its page
_VENDORS = {v.name: v for v in VENDORS}


@dataclass(frozen=True, slots=True)
class ProbeSeen:
    vendor: str
    path: str
    model: str  # LISTING for a listing


class ProbeBook:
    """Probe scripts and the probe requests seen (kept apart from the chat requests)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._scripts: dict[str, list[Behaviour]] = {}
        self._seen: list[ProbeSeen] = []

    def script(self, model: str, *behaviours: Behaviour) -> None:
        with self._lock:
            self._scripts[model] = list(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._seen.clear()

    def next(self, model: str) -> Behaviour:
        with self._lock:
            queue = self._scripts.get(model)
            if not queue:
                return Reply()
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def missing(self, model: str) -> bool:
        """Scripted to be absent: its next probe answers 404."""
        with self._lock:
            queue = self._scripts.get(model) or []
            first = queue[0] if queue else None
            return isinstance(first, Fail) and first.status == 404 and first.code in MISSING

    def models(self, also: list[str]) -> list[str]:
        """What a listing shows: the models scripted here or in `also`, not those missing."""
        with self._lock:
            names = [m for m in self._scripts if m != LISTING]
        return [m for m in dict.fromkeys([*also, *names]) if not self.missing(m)]

    def record(self, seen: ProbeSeen) -> None:
        with self._lock:
            self._seen.append(seen)
            self._lock.notify_all()

    @property
    def requests(self) -> list[ProbeSeen]:
        with self._lock:
            return list(self._seen)

    def count(self, model: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._seen if model is None or s.model == model)

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        """Block until `count` probe requests have arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._seen) >= count, timeout)


def route(path: str, headers: dict[str, str]) -> tuple[Vendor, str] | None:
    """The vendor and model (LISTING for a listing) of a probe GET, or None."""
    path = path.split("?", 1)[0]
    if path == "/api/tags":
        return _VENDORS["ollama"], LISTING
    if path == "/v1beta/models":
        return _VENDORS["gemini"], LISTING
    for prefix, name in (("/v1beta/models/", "models/"), ("/v1beta/tunedModels/", "tunedModels/")):
        if path.startswith(prefix) and ":" not in path:
            model = unquote(path.removeprefix(prefix))
            return _VENDORS["gemini"], model if name == "models/" else name + model
    for prefix, name in _MODEL_ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            if name == "openai" and "anthropic-version" in headers:
                name = "anthropic"
            return _VENDORS[name], unquote(path.removeprefix(prefix).removeprefix("/")) or LISTING
    return None


# `GET {prefix}` lists the models, `GET {prefix}/{id}` is one model's page.
_MODEL_ROUTES = (
    ("/v1/models", "openai"),  # Anthropic's too, told apart by its version header
    ("/mistral/v1/models", "mistral"),
    ("/azure/openai/v1/models", "azure"),  # the v1 API; deployments have no model pages
)
# Vendors whose listing and model pages have OpenAI's shape.
_OPENAI_SHAPED = {"openai", "mistral", "azure"}


def serve(handler: _Handler) -> bool:
    """Answer `handler`'s GET if it is a probe route; False if it is not one."""
    headers = {k.lower(): v for k, v in handler.headers.items()}
    found = route(handler.path, headers)
    if found is None:
        return False
    vendor, model = found
    sim = handler.sim
    path = handler.path.split("?", 1)[0]
    request = SimRequest(vendor.name, path, model, headers, None, target=handler.path)
    sim.probes.record(ProbeSeen(vendor.name, path, model))
    try:
        vendor.check_auth(request, sim._state.api_key)
    except Invalid as exc:
        handler._json(exc.status, vendor.error(exc.status, exc.message, exc.code))
        return True
    _act(handler, vendor, request, sim.probes.next(model))
    return True


def _act(handler: _Handler, vendor: Vendor, request: SimRequest, behaviour: Behaviour) -> None:
    sim = handler.sim
    if isinstance(behaviour, Reply):
        if behaviour.delay and sim._stopping.wait(behaviour.delay):
            return
        while behaviour.hold and not sim._released.wait(0.05):
            if sim._stopping.is_set():
                return
        handler._json(200, _body(vendor, request.model, sim.probes.models(sim.scripted())))
    elif isinstance(behaviour, Fail) and behaviour.status == 404:
        message = behaviour.message or f"model '{request.model}' not found"
        handler._json(404, vendor.error(404, message, behaviour.code or "model_not_found"))
    elif isinstance(behaviour, Fail):
        handler._fail(behaviour, vendor)
    elif isinstance(behaviour, Hang):
        sim._stopping.wait(behaviour.seconds)
        handler.close_connection = True
    elif isinstance(behaviour, Close):
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True
    else:
        _odd(handler, behaviour)


def _odd(handler: _Handler, behaviour: Behaviour) -> None:
    """The replies that are not the vendor's JSON; anything meant for chats (an empty answer,
    an error event, a stream) is an empty object here."""
    from .server import phrase

    if isinstance(behaviour, InvalidJson):
        handler._send(behaviour.status, b"this is not json {", "application/json")
    elif isinstance(behaviour, HtmlError):
        title = f"{behaviour.status} {phrase(behaviour.status)}"
        page = f"<html><head><title>{title}</title></head><body>upstream error</body></html>"
        handler._send(behaviour.status, page.encode(), "text/html")
    elif isinstance(behaviour, Redirect):
        handler._send(307, b"", "text/plain", [("Location", behaviour.location)])
    else:
        handler._json(200, {})


def _body(vendor: Vendor, model: str, listed: list[str]) -> dict[str, Any]:
    """A model page, or (for LISTING) the listing of `listed`, in the vendor's shape."""
    if vendor.name == "ollama":
        names = [m if ":" in m else f"{m}:latest" for m in listed]
        return {"models": [{"name": n, "model": n, "size": 1, "digest": "sha256:0"} for n in names]}
    if model != LISTING:
        return _page(vendor, model)
    pages = [_page(vendor, m) for m in listed]
    if vendor.name in _OPENAI_SHAPED:
        return {"object": "list", "data": pages}
    if vendor.name == "gemini":
        return {"models": pages}
    return {"data": pages, "has_more": False, "first_id": listed[0] if listed else None}


def _page(vendor: Vendor, model: str) -> dict[str, Any]:
    if vendor.name in _OPENAI_SHAPED:
        return {"id": model, "object": "model", "created": 1_767_225_600, "owned_by": "simulator"}
    if vendor.name == "gemini":
        name = model if model.startswith("tunedModels/") else f"models/{model}"
        return {
            "name": name,
            "displayName": model,
            "supportedGenerationMethods": ["generateContent"],
        }
    return {
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": "2026-01-01T00:00:00Z",
    }
