"""The wire formats the simulator speaks; each vendor module exposes `VENDOR`."""

from __future__ import annotations

from .anthropic import VENDOR as ANTHROPIC
from .base import Invalid, SimRequest, Vendor
from .gemini import VENDOR as GEMINI
from .ollama import VENDOR as OLLAMA
from .openai import VENDOR as OPENAI

VENDORS: tuple[Vendor, ...] = (OPENAI, ANTHROPIC, GEMINI, OLLAMA)

__all__ = ["VENDORS", "Invalid", "SimRequest", "Vendor"]
