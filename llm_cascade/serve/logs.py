"""The gateway's stderr: its own lines, uvicorn's, and one access line per request.

Plain lines for people, or one JSON object per line (`--json-logs`) for log shippers. Every
line passes through the redaction of known secrets and has its control characters escaped;
the access line holds the method, path, status, time, size, cascade and entry: never a
prompt, an answer or a credential.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from .. import redaction, untrusted

ACCESS = logging.getLogger("llm_cascade.serve.access")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
# uvicorn's own complaint when a client that stopped reading was dropped mid-response: the
# access line already says so.
_DROPPED = "ASGI callable returned without completing response."


def _stamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Safe(logging.Formatter):
    """Secrets out, control characters escaped, whatever a record holds."""

    def __init__(self, *, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        message = untrusted.escape_controls(redaction.redact(record.getMessage()))
        fields: dict[str, Any] = getattr(record, "fields", {})
        if self.as_json:
            line = {"ts": _stamp(record.created), "level": record.levelname.lower()}
            line.update(logger=record.name, msg=message, **fields)
            return json.dumps(line, ensure_ascii=False)
        shown: dict[str, Any] = getattr(record, "shown", fields)
        extra = " ".join(f"{k}={v}" for k, v in shown.items() if v is not None)
        level = record.levelname.lower()
        return f"{_stamp(record.created)} {level:<7} {message}{' ' + extra if extra else ''}"


def _not_dropped(record: logging.LogRecord) -> bool:
    return record.getMessage() != _DROPPED


def setup(*, json_lines: bool) -> None:
    """Send our loggers and uvicorn's to stderr in one format: the access lines and the
    server's own, and the engine's warnings (its attempts too with LLM_CASCADE_LOG=info)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Safe(as_json=json_lines))
    handler.addFilter(_not_dropped)
    engine = _LEVELS.get(os.environ.get("LLM_CASCADE_LOG", "").strip().lower(), logging.WARNING)
    levels = {"llm_cascade": engine, ACCESS.name: logging.INFO, "uvicorn": logging.INFO}
    for name, level in levels.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # ours says more, and no query string
    logging.getLogger("httpx").setLevel(logging.WARNING)


def access(
    method: str, path: str, status: int, ms: float, sent: int, **fields: str | int | None
) -> None:
    """One line per request: `POST /v1/chat/completions 200 12.3ms 456B cascade=... entry=...`."""
    core = {"method": method, "path": path, "status": status, "ms": round(ms, 1), "bytes": sent}
    message = f"{method} {path} {status} {ms:.1f}ms {sent}B"
    ACCESS.info(message, extra={"fields": {**core, **fields}, "shown": fields})
