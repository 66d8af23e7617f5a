"""Cascades made on the spot from `provider/model` specs (`run -m`), without editing a config.

`provider` is a provider of the config when it defines one of that name, else a provider type
with its defaults (`openai/gpt-4o-mini` with no `[providers.openai]` means the OpenAI API, the
key from the keyring or OPENAI_API_KEY). Entry keys are `<provider>/<model>` as for any entry,
so cooldowns and the log are shared with configured cascades naming the same pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from .config import (
    AppConfig,
    CascadeConfig,
    CascadeEntry,
    ProviderConfig,
    model_problem,
    parse_entry,
    type_provider,
)
from .errors import ConfigError
from .providers import PROVIDER_TYPES
from .types import shown

ADHOC_CASCADE = "adhoc"  # the name ad-hoc runs have in the log and on saved prompts

# "provider/model", or (provider, model) with optional entry options (`{"retries": 1}`)
Spec = str | tuple[str, str] | tuple[str, str, Mapping[str, Any]]


def split_spec(spec: str) -> tuple[str, str]:
    """`provider/model`, split at the first `/` (so `openrouter/meta-llama/llama-3` keeps its
    model id whole)."""
    provider, slash, model = spec.partition("/")
    if not slash or not provider.strip() or not model.strip():
        raise ConfigError(
            f"-m {shown(spec)}: expected PROVIDER/MODEL, e.g. openai/gpt-4o-mini or ollama/llama3"
        )
    return provider.strip(), model.strip()


def resolve_provider(name: str, config: AppConfig | None) -> ProviderConfig:
    """The config's provider `name`, else the provider type `name` with its defaults."""
    if config is not None and name in config.providers:
        return config.providers[name]
    if name in PROVIDER_TYPES:
        return type_provider(name)
    defined = ", ".join(sorted(config.providers)) if config and config.providers else "none"
    raise ConfigError(
        f"-m {name}/...: {shown(name)} is neither a provider of the config (defined: {defined})"
        f" nor a provider type ({', '.join(PROVIDER_TYPES)})"
    )


def cascade_from_specs(
    specs: Sequence[Spec], config: AppConfig | None = None, name: str = ADHOC_CASCADE
) -> tuple[CascadeConfig, dict[str, ProviderConfig]]:
    """The cascade `name` made of `specs`, in order, and the providers it needs that `config`
    lacks (provider types with their defaults). Raises ConfigError naming the bad spec."""
    if not specs:
        raise ConfigError("an ad-hoc cascade needs at least one provider/model entry")
    providers: dict[str, ProviderConfig] = dict(config.providers) if config else {}
    implied: dict[str, ProviderConfig] = {}
    entries: list[CascadeEntry] = []
    for spec in specs:
        if isinstance(spec, str):
            provider_name, model, options = *split_spec(spec), {}
        else:
            provider_name, model = spec[0], spec[1]
            options = dict(spec[2]) if len(spec) > 2 else {}
        label = f"-m {provider_name}/{model}"
        problem = model_problem(model)
        if problem:
            raise ConfigError(f"{label}: the model {problem}")
        if provider_name not in providers:
            implied[provider_name] = providers[provider_name] = resolve_provider(
                provider_name, config
            )
        entry = parse_entry(
            label, {**options, "provider": provider_name, "model": model}, providers
        )
        if any(e.key == entry.key for e in entries):
            raise ConfigError(f"{label}: given twice")
        entries.append(entry)
    return CascadeConfig(name, tuple(entries)), implied


def with_cascade(
    config: AppConfig, cascade: CascadeConfig, providers: Mapping[str, ProviderConfig] = {}
) -> AppConfig:
    """`config` with `cascade` (replacing one of the same name) and `providers` added."""
    return replace(
        config,
        providers={**config.providers, **providers},
        cascades={**config.cascades, cascade.name: cascade},
    )
