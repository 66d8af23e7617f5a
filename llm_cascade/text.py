"""Small text helpers shared by messages and tables (a leaf module)."""

from __future__ import annotations


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the last one an ellipsis when something was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
