"""Small text helpers shared by messages and tables (a leaf module)."""

from __future__ import annotations


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the last one an ellipsis when something was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def size_text(n: int) -> str:
    """`32 MiB`, `64 KiB` or `1000 bytes`: a limit as the user probably wrote it."""
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if n % unit == 0 and n >= unit:
            return f"{n // unit} {name}"
    return f"{n} bytes"
