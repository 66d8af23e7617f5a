"""The one shared HTTP client of a run: no redirects, no hidden retries, proxies honoured."""

from __future__ import annotations

import ssl
import urllib.request

import httpx

from ._version import __version__

USER_AGENT = f"llm-cascade/{__version__}"


def new_client() -> httpx.AsyncClient:
    """An AsyncClient for every provider of a run (connections are reused across entries).

    Redirects are not followed (D17) and the transport never retries (the engine is the only
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
    """

    def __init__(self) -> None:
        self._by_scheme: dict[str, httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        transport = self._by_scheme.get(scheme)
        if transport is None:
            transport = self._by_scheme[scheme] = _new_transport(scheme, request)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._by_scheme.values():
            await transport.aclose()
        self._by_scheme.clear()


def _new_transport(scheme: str, request: httpx.Request) -> httpx.AsyncHTTPTransport:
    if scheme != "https":
        # An SSL context that trusts no certificate: never used for http, and if it ever were,
        # it could only refuse. httpx would otherwise load the CA bundle for it.
        return httpx.AsyncHTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    try:
        return httpx.AsyncHTTPTransport()
    except OSError as exc:  # ssl.SSLError too; e.g. SSL_CERT_FILE names a missing file
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise httpx.ConnectError(
            f"cannot set up TLS (certificates: {reason})", request=request
        ) from None
