"""The secrets this process knows, and `redact(text)` to take them out of anything shown.

API keys are registered when they are resolved, configured header values when a config is
loaded, and both again when a request carries them (a library caller may bring its own). Error
messages, attempt details and every log line the CLI writes pass through `redact`, so a provider
that echoes a secret back (in a body, a reason phrase, a redirect) cannot make us print or store
it.
"""

from __future__ import annotations

import threading

REDACTED = "[redacted]"
# Shorter values are not credentials (`X-Debug = "1"`, `anthropic-version = "2023-06-01"` is
# longer and harmless to hide) and hiding them would garble every message they occur in.
MIN_SECRET_CHARS = 8

_lock = threading.Lock()
_known: tuple[str, ...] = ()  # longest first, so a secret containing another goes whole


def register(*values: str | None) -> None:
    """Remember these values as secrets for the rest of the process."""
    global _known
    new = {v for v in values if v and len(v) >= MIN_SECRET_CHARS} - set(_known)
    if not new:
        return
    with _lock:
        _known = tuple(sorted({*_known, *new}, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every known secret replaced by `[redacted]`."""
    for secret in _known:  # a tuple swapped whole by `register`: safe to read without the lock
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
