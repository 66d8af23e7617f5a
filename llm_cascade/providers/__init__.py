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
    max_image_bytes: int = 20 << 20  # the largest image (decoded) the vendor documents taking
    image_urls: bool = True  # the vendor fetches an image given by URL
    # Hosts (by suffix) that are the vendor's own besides the default URL: its key variable
    # may be sent there. Empty default URL: every provider of the type must set `base_url`.
    vendor_hosts: tuple[str, ...] = ()
    settings: frozenset[str] = frozenset()  # provider keys only this type takes


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
            max_image_bytes=5 << 20,
        ),
        ProviderType(  # inline data counts, as base64, against a 20 MB request
            "gemini",
            "https://generativelanguage.googleapis.com",
            "GOOGLE_API_KEY",
            "gemini",
            max_image_bytes=14 << 20,
            image_urls=False,
        ),
        ProviderType(  # vision depends on the model pulled: say so per entry
            "ollama",
            "http://localhost:11434",
            None,
            "ollama",
            frozenset({"tools", "json", "schema", "stream"}),
            image_urls=False,
        ),
        ProviderType("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "openai"),
        ProviderType(  # a deployment's URL, or the v1 API under /openai/v1
            "azure",
            "",
            "AZURE_OPENAI_API_KEY",
            "azure",
            vendor_hosts=(".openai.azure.com", ".cognitiveservices.azure.com"),
            settings=frozenset({"api_version"}),
        ),
        ProviderType(  # a final assistant turn marked `prefix` is continued
            "mistral",
            "https://api.mistral.ai/v1",
            "MISTRAL_API_KEY",
            "mistral",
            frozenset({"tools", "json", "schema", "vision", "stream", "prefill"}),
            max_image_bytes=10 << 20,
        ),
        ProviderType(  # vision only on its vision models: say so per entry
            "cohere",
            "https://api.cohere.com",
            "CO_API_KEY",
            "cohere",
            frozenset({"tools", "json", "schema", "stream"}),
            max_image_bytes=20 << 20,
        ),
        ProviderType(  # AWS credentials, not a key (see keys.py); no JSON mode in Converse
            "bedrock",
            "https://bedrock-runtime.{region}.amazonaws.com",
            "AWS_ACCESS_KEY_ID",
            "bedrock",
            max_image_bytes=3_750_000,
            image_urls=False,
            settings=frozenset({"region"}),
        ),
        ProviderType(
            "openai_responses", "https://api.openai.com/v1", "OPENAI_API_KEY", "openai_responses"
        ),
    )
}
AWS_TYPES = frozenset({"bedrock"})  # credentials are an AWS access key pair, signed with SigV4
AWS_KEY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
AWS_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")


def aws_key_parts(value: str) -> tuple[str, str, str | None] | None:
    """An AWS credential kept as one secret, `ACCESS_KEY_ID:SECRET_ACCESS_KEY` or, for
    temporary credentials, `...:SESSION_TOKEN` (none of the three holds a colon); None if
    `value` is not that."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


_ADAPTERS: dict[str, Adapter] = {}


def get_adapter(type_name: str) -> Adapter:
    """The adapter for a provider type, importing its module on first use."""
    adapter = _ADAPTERS.get(type_name)
    if adapter is None:
        module = importlib.import_module(f"{__name__}.{PROVIDER_TYPES[type_name].module}")
        adapter = _ADAPTERS[type_name] = module.ADAPTER
    return adapter
