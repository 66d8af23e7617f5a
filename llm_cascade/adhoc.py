"""Cascades given as a list instead of a config table: `LLMCascade([("openai", "gpt-4o")])`
in Python, `-m openai/gpt-4o` on the command line (one resolution for both).

Each entry names a provider of the config (if there is one) or else a provider *type*, which
then gets its type's defaults: base URL, the vendor's key variable (`OPENAI_API_KEY`... used, as
for any provider, only with the vendor's own URL) and keyring username = the type name. The
options of an entry may set provider fields (`base_url`, `api_key_env`, `api_key_service`,
`type`, and `name` to name the provider this makes) and any entry option (`timeout`,
`retries`, `max_tokens`, `supports`...). Everything is validated by the config's own checks,
so an unknown provider or a bad value is a ConfigError before anything runs.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import (
    OPTION_KEYS,
    AppConfig,
    CascadeConfig,
    CascadeEntry,
    ProviderConfig,
    _Parser,
    parse_config,
)
from .providers import PROVIDER_TYPES
from .types import shown

# Fields of a provider an entry's options may set; everything else is an entry option.
PROVIDER_FIELDS = ("type", "base_url", "api_key_env", "api_key_service", "name")
Spec = str | Sequence[Any]
DEFAULT_NAME = "library"  # the cascade LLMCascade makes, in the log and on saved prompts
ADHOC_CASCADE = "adhoc"  # the cascade `run -m` makes


def adhoc_config(
    specs: Iterable[Spec],
    base: AppConfig | None = None,
    *,
    name: str = DEFAULT_NAME,
    label: str = "entries",
    database_path: Path | None = None,
    failure_dir: Path | None = None,
) -> AppConfig:
    """`base` (or the built-in defaults) with one more cascade, `name`, made of `specs`.

    A spec is `"provider/model"`, `(provider, model)` or `(provider, model, {options})`.
    Providers made from a type (or changed by an entry's provider fields) are added. Errors
    name the spec as `<label>: entries[i]`. Raises ConfigError for an empty list, a malformed
    spec, an unknown provider or type, a bad option, or one provider name given two ways.
    """
    config = base if base is not None else parse_config({})
    parser = _Parser(None, label=label)
    providers = dict(config.providers)
    made: dict[str, ProviderConfig] = {}
    entries: list[CascadeEntry] = []
    specs = list(specs)
    for i, spec in enumerate(specs):
        where = shown(spec) if isinstance(spec, str) else f"entries[{i}]"
        provider, model, options = _split(parser, spec, where)
        fields = {k: options.pop(k) for k in PROVIDER_FIELDS if k in options}
        _check_known(parser, options, where)
        chosen = _provider(parser, where, provider, fields, config.providers)
        earlier = made.get(chosen.name)
        if earlier is not None and earlier != chosen:
            raise parser.fail(
                where,
                f"provider '{chosen.name}' is given two different ways; name one of them with"
                " the option `name`",
            )
        made[chosen.name] = providers[chosen.name] = chosen
        table = {"provider": chosen.name, "model": model, **options}
        entry = parser.entry(where, table, providers)
        if any(e.key == entry.key for e in entries):
            raise parser.fail(where, f"{entry.key} is given twice")
        entries.append(entry)
    if not entries:
        raise parser.fail("entries", "give at least one (provider, model) entry")
    kept = _as_json(specs)
    return replace(
        config,
        providers=providers,
        cascades={**config.cascades, name: CascadeConfig(name, tuple(entries), specs=kept)},
        database_path=database_path or config.database_path,
        failure_dir=failure_dir or config.failure_dir,
    )


def _as_json(specs: Iterable[Spec]) -> tuple[Any, ...] | None:
    """The specs as JSON values (a tuple becomes a list), or None if one holds something JSON
    cannot (then a saved prompt is retried through a cascade named with -C)."""
    out = tuple(s if isinstance(s, str) else list(s) for s in specs)
    try:
        json.dumps(out)
    except (TypeError, ValueError):
        return None
    return out


def _split(parser: _Parser, spec: Any, where: str) -> tuple[str, str, dict[str, Any]]:
    """(provider, model, options) from `"p/m"`, `(p, m)` or `(p, m, {options})`."""
    if isinstance(spec, str):  # split at the first `/`: `openrouter/meta-llama/llama-3` is one
        provider, _, model = (part.strip() for part in spec.partition("/"))
        if not provider or not model:
            raise parser.fail(
                where, "expected PROVIDER/MODEL, e.g. openai/gpt-4o-mini or ollama/llama3"
            )
        return provider, model, {}
    ok = isinstance(spec, Sequence) and len(spec) in (2, 3)
    if ok and len(spec) == 3 and not isinstance(spec[2], Mapping):
        ok = False
    if not ok or not all(isinstance(part, str) and part for part in spec[:2]):
        raise parser.fail(
            where,
            f"expected (provider, model) or (provider, model, {{options}}), got {shown(spec)}",
        )
    options = dict(spec[2]) if len(spec) == 3 else {}
    return spec[0], spec[1], options


def _check_known(parser: _Parser, options: Mapping[str, Any], where: str) -> None:
    """An option nobody knows is a mistake in code: refuse it (a config only warns)."""
    known = sorted(OPTION_KEYS | set(PROVIDER_FIELDS))
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise parser.fail(where, f"unknown option {shown(key)}{hint}")


def _provider(
    parser: _Parser,
    where: str,
    provider: str,
    fields: dict[str, Any],
    configured: Mapping[str, ProviderConfig],
) -> ProviderConfig:
    """The provider an entry uses: the config's, a type with its defaults, either changed by
    the entry's provider fields (and named `name`, if given)."""
    new_name = fields.pop("name", provider)
    if not isinstance(new_name, str):
        raise parser.fail(f"{where}.name", "must be a string")
    existing = configured.get(provider)
    if existing is None and provider not in PROVIDER_TYPES and "type" not in fields:
        names = ", ".join(sorted(configured)) or "none"
        raise parser.fail(
            where,
            f"{shown(provider)} is neither a provider of the config (defined: {names}) nor a"
            f" provider type ({', '.join(PROVIDER_TYPES)})",
        )
    if existing is not None and not fields and new_name == provider:
        return existing
    if existing is not None and "type" in fields:
        raise parser.fail(f"{where}.type", f"'{provider}' is a provider of the config: it has one")
    table = {"type": existing.type if existing else fields.get("type", provider), **fields}
    parsed = parser.provider(new_name, table, prefix=f"{where}.")
    if existing is None:
        return parsed
    changed = {k: getattr(parsed, k) for k in fields}
    return replace(existing, name=new_name, **changed)
