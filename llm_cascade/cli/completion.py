"""Names the shell completes from the config: cascades, templates, providers, entries.

Imported only while a shell asks for completions (see the `complete_*` hooks in _common).
A config that cannot be read completes nothing: a completion must never print an error into
the middle of the line being typed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

    from ..config import AppConfig


def _config(ctx: typer.Context) -> AppConfig | None:
    """The config the command line names (`-c`, else the default), or None."""
    from ..config import load_config
    from ..errors import LlmCascadeError

    logging.getLogger("llm_cascade").disabled = True  # no warning about unknown keys
    path = None
    while ctx is not None and path is None:  # -c may be given to the command or its group
        path = ctx.params.get("config")
        ctx = ctx.parent  # type: ignore[assignment]
    try:
        return load_config(path, optional=True)
    except (LlmCascadeError, OSError, ValueError):
        return None


def config_names(ctx: typer.Context, table: str, incomplete: str) -> list[str]:
    """The names under `[cascades]`, `[templates]` or `[providers]` that start `incomplete`."""
    config = _config(ctx)
    if config is None:
        return []
    names = {
        "cascades": config.cascades,
        "templates": config.templates,
        "providers": config.providers,
    }[table]
    return sorted(name for name in names if name.startswith(incomplete))


def model_specs(ctx: typer.Context, incomplete: str) -> list[str]:
    """`-m` values: the config's entries and `provider/` for each provider and type."""
    from ..providers import PROVIDER_TYPES

    config = _config(ctx)
    keys = [] if config is None else [e.key for c in config.cascades.values() for e in c.entries]
    prefixes = [f"{name}/" for name in (*(config.providers if config else ()), *PROVIDER_TYPES)]
    found = dict.fromkeys([*keys, *prefixes])
    return sorted(spec for spec in found if spec.startswith(incomplete))


def entry_keys(ctx: typer.Context, incomplete: str) -> list[str]:
    """`reset` arguments: every entry of the config."""
    config = _config(ctx)
    if config is None:
        return []
    from ..state import configured_keys

    return [key for key in configured_keys(config) if key.startswith(incomplete)]
