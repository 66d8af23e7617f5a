"""Provider types: their defaults, and the adapter for each (imported only when used).

Adding a provider means one module with an `Adapter` subclass and one row here; the engine
does not change.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Adapter

# httpx imports its own command line (with rich and pygments: ~45 ms a run) whenever click is
# installed, and the `serve` extra's uvicorn brings click. Nothing here runs that command:
# this makes httpx take the fallback it has for when click is missing. (The engine imports
# this package before anything of it imports httpx.)
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ProviderType:
    """What the config layer needs to know about a wire protocol, without importing it."""

    name: str
    default_base_url: str
    default_key_env: str | None  # None: the protocol takes no API key
    module: str
    supports: frozenset[str] = frozenset({"tools", "json", "schema", "vision", "stream"})


PROVIDER_TYPES: dict[str, ProviderType] = {
    t.name: t
    for t in (
        ProviderType(
            "anthropic",
            "https://api.anthropic.com",
            "ANTHROPIC_API_KEY",
            "anthropic",
            # A final assistant turn is a prefill the model continues: a broken stream can
            # be picked up where it stopped.
            frozenset({"tools", "json", "schema", "vision", "stream", "prefill"}),
        ),
        ProviderType(
            "gemini", "https://generativelanguage.googleapis.com", "GOOGLE_API_KEY", "gemini"
        ),
        ProviderType(  # vision depends on the model pulled: say so per entry
            "ollama",
            "http://localhost:11434",
            None,
            "ollama",
            frozenset({"tools", "json", "schema", "stream"}),
        ),
        ProviderType("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "openai"),
    )
}

_ADAPTERS: dict[str, Adapter] = {}


def get_adapter(type_name: str) -> Adapter:
    """The adapter for a provider type, importing its module on first use."""
    adapter = _ADAPTERS.get(type_name)
    if adapter is None:
        module = importlib.import_module(f"{__name__}.{PROVIDER_TYPES[type_name].module}")
        adapter = _ADAPTERS[type_name] = module.ADAPTER
    return adapter
