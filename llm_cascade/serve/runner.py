"""Start the gateway on uvicorn: check the binding, hand the settings to every worker, run.

uvicorn (with httptools and uvloop when installed) serves the ASGI app; `--workers N` runs N
processes on one socket, which share cooldowns and the attempt log through the database as
CLI processes do. SIGTERM stops accepting, lets in-flight requests finish within `grace_s`,
then cancels them (their prompts stay saved, as `interrupted`).
"""

from __future__ import annotations

import ipaddress
import math
import os

from ..errors import UsageError
from . import logs
from .app import SETTINGS_ENV, TOKEN_ENV, Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_GRACE_S = 30.0
KEEP_ALIVE_S = 75.0  # longer than the idle timeout of the usual client pools and proxies
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Anything but loopback is reachable by others: it needs a token, and a strong one."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise UsageError(f"the token must have at least {MIN_TOKEN_CHARS} characters")
    if token is None and not is_loopback(host):
        raise UsageError(
            f"--host {host} is not a loopback address: set a token with {TOKEN_ENV} (or"
            " --token) so that only your clients can use the gateway"
        )


def serve(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """Run until SIGTERM or Ctrl-C. Raises UsageError for a binding that needs a token."""
    check_binding(host, settings.token)
    try:
        import uvicorn
    except ImportError:
        raise UsageError(
            "`llm-cascade serve` needs the server extra: pip install 'llm-cascade[serve]'"
        ) from None
    os.environ[SETTINGS_ENV] = settings.to_env()  # read by each worker's create_app
    if settings.token is not None:
        os.environ[TOKEN_ENV] = settings.token
    logs.setup(json_lines=settings.json_logs)
    uvicorn.run(
        "llm_cascade.serve.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,  # one line of ours per request instead
        server_header=False,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(grace_s),
        timeout_keep_alive=int(KEEP_ALIVE_S),
    )
