"""The wire formats the simulator speaks; each vendor module exposes `VENDOR`."""

from __future__ import annotations

from .base import Invalid, SimRequest, Vendor
from .openai import VENDOR as OPENAI

VENDORS: tuple[Vendor, ...] = (OPENAI,)

__all__ = ["VENDORS", "Invalid", "SimRequest", "Vendor"]
