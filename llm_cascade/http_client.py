"""The one shared HTTP client of a run: no redirects, no hidden retries, proxies honoured."""

from __future__ import annotations

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
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    if urllib.request.getproxies():
        for host in ("127.0.0.1", "localhost", "[::1]"):
            mounts[f"all://{host}"] = httpx.AsyncHTTPTransport()
    return httpx.AsyncClient(
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        mounts=mounts or None,
    )
