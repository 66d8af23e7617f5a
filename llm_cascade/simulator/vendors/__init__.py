"""The wire formats the simulator speaks; each vendor module exposes `VENDOR`."""

from __future__ import annotations

from .anthropic import VENDOR as ANTHROPIC
from .azure import VENDOR as AZURE
from .base import Invalid, SimRequest, Vendor
from .bedrock import VENDOR as BEDROCK
from .cohere import VENDOR as COHERE
from .gemini import VENDOR as GEMINI
from .mistral import VENDOR as MISTRAL
from .ollama import VENDOR as OLLAMA
from .openai import VENDOR as OPENAI
from .openai_responses import VENDOR as OPENAI_RESPONSES

# The first that claims a path serves it: vendors under a prefix of their own (/azure, ...)
# come before OpenAI, whose paths they reuse.
VENDORS: tuple[Vendor, ...] = (
    AZURE,
    MISTRAL,
    OPENAI,
    OPENAI_RESPONSES,
    ANTHROPIC,
    GEMINI,
    OLLAMA,
    COHERE,
    BEDROCK,
)

__all__ = ["VENDORS", "Invalid", "SimRequest", "Vendor"]
