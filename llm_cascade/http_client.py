"""The one shared HTTP client of a run: no redirects, no hidden retries, proxies honoured."""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator

import httpx

from ._version import __version__

USER_AGENT = f"llm-cascade/{__version__}"
MAX_CONNECTIONS = 100
# Keep as many idle connections as may be open: with httpx's default of 20, a burst of
# concurrent calls closes 80 connections as they fall idle and opens new ones for the calls
# still queued.
LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)


def new_client() -> httpx.AsyncClient:
    """An AsyncClient for every provider of a run (connections are reused across entries).

    Redirects are not followed and the transport never retries (the engine is the only
    retry layer). Proxy variables are honoured, except for loopback hosts such as a local
    Ollama, which a proxy cannot reach.
    """
    direct = TransportOnFirstUse()
    # httpx reads the proxy variables only when it makes its own transport, so with proxies
    # set it does (with its SSL context), and ours serves just the loopback hosts.
    proxied = bool(urllib.request.getproxies())
    return httpx.AsyncClient(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        transport=None if proxied else direct,
        mounts={f"all://{host}": direct for host in LOOPBACK} if proxied else None,
    )


LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


class TransportOnFirstUse(httpx.AsyncBaseTransport):
    """httpx's own transport, made by the first request that needs it, one per scheme.

    The https one is httpx's default (certificate checks, SSL_CERT_FILE/SSL_CERT_DIR honoured);
    building it loads the CA bundle (~20 ms), which a run that only talks plain http, to a local
    Ollama or the simulator, no longer pays. The plain one only ever carries http:// requests.

    At most MAX_CONNECTIONS requests are inside it at once, from sending to closing the
    response; the others wait here. httpcore's pool rescans every queued request against every
    connection on each change, so 500 calls at once used to cost seconds of CPU before the
    first connection was even open.
    """

    def __init__(self) -> None:
        self._by_scheme: dict[str, httpx.AsyncHTTPTransport] = {}
        self._slots: asyncio.Semaphore | None = None  # made in the loop that uses it

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        transport = self._by_scheme.get(scheme)
        if transport is None:
            transport = self._by_scheme[scheme] = _new_transport(scheme, request)
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        slots = self._slots
        await slots.acquire()
        try:
            response = await transport.handle_async_request(request)
        except BaseException:
            slots.release()
            raise
        response.stream = _ReleasingStream(response.stream, slots)
        return response

    async def aclose(self) -> None:
        for transport in self._by_scheme.values():
            await transport.aclose()
        self._by_scheme.clear()


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its slot back once it is closed."""

    def __init__(
        self, inner: httpx.AsyncByteStream | httpx.SyncByteStream, slots: asyncio.Semaphore
    ) -> None:
        self._inner = inner
        self._slots: asyncio.Semaphore | None = slots

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:  # type: ignore[union-attr]  # a transport's stream is async
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()  # type: ignore[union-attr]  # as above
        finally:
            if self._slots is not None:
                self._slots.release()
                self._slots = None


def _new_transport(scheme: str, request: httpx.Request) -> httpx.AsyncHTTPTransport:
    if scheme != "https":
        # An SSL context that trusts no certificate: never used for http, and if it ever were,
        # it could only refuse. httpx would otherwise load the CA bundle for it.
        return httpx.AsyncHTTPTransport(
            verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), limits=LIMITS
        )
    try:
        return httpx.AsyncHTTPTransport(limits=LIMITS)
    except OSError as exc:  # ssl.SSLError too; e.g. SSL_CERT_FILE names a missing file
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise httpx.ConnectError(
            f"cannot set up TLS (certificates: {reason})", request=request
        ) from None
