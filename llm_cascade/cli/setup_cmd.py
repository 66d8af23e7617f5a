"""`setup [-i]`: first run. Ask everything first, then write, so an abort leaves nothing.

Default mode writes the original's template; `-i` runs the wizard. Either way the config is
created exclusively and atomically (0600), never over an existing one, then the state folders
(0700) and the database are made and any keys typed are stored. Questions are asked only when
a person is there (stdin and stderr are terminals), so a script is never blocked on a prompt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, ConfigError, LlmCascadeError
from ._common import ConfigOption, echo, say

if TYPE_CHECKING:
    from ..config import AppConfig
    from ..wizard import Prompter

InteractiveOption = Annotated[
    bool,
    typer.Option("--interactive", "-i", help="Choose providers and cascades step by step."),
]


def setup(config: ConfigOption = None, interactive: InteractiveOption = False) -> None:
    """Create the config, its data folders and the database.

    Without -i: the commented template (on a terminal you may also store API keys).

    With -i: a wizard asks for providers, cascades and keys.

    Nothing is written until the last answer; an existing config is never touched.
    """
    from ..paths import config_path, default_data_dir

    path = config_path(config)
    if os.path.lexists(path):
        if path.is_dir():
            raise ConfigError(f"'{path}' is a directory, not a config file: pass -c FILE")
        say(f"Config file already exists at '{path}'; left untouched.")
        say("Check it with `llm-cascade config check`, or move it away to start over.")
        return
    data_dir = default_data_dir()
    if not (path.is_absolute() and data_dir.is_absolute() and data_dir.anchor):
        raise ConfigError("cannot tell where your home directory is: set HOME, or pass -c FILE")
    try:
        text, keys = _wizard(path, data_dir) if interactive else _template(path, data_dir)
    except EOFError:
        say("\nAborted: input ended before setup finished; nothing was written.")
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        say("\nAborted; nothing was written.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    try:
        app_config = _commit(path, text, keys)
    except KeyboardInterrupt:
        say(
            f"\nInterrupted while writing; `llm-cascade config check -c {path}`"
            " shows what is there."
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if interactive:
        echo()
        echo(f"Wrote {path}:")
        echo()
        echo(text.rstrip())
    _next_steps(app_config)


def _parse(text: str, path: Path) -> AppConfig:
    import tomllib

    from ..config import parse_config

    return parse_config(tomllib.loads(text), path)


def _template(path: Path, data_dir: Path) -> tuple[str, dict[str, str]]:
    from ..bootstrap import template_text
    from .prompter import RichPrompter, interactive

    text = template_text(data_dir)
    keys = _offer_keys(RichPrompter(), _parse(text, path)) if interactive() else {}
    return text, keys


def _wizard(path: Path, data_dir: Path) -> tuple[str, dict[str, str]]:
    from ..bootstrap import state_paths, template_path
    from ..wizard import build_document, render_config, run_wizard
    from .prompter import RichPrompter

    io = RichPrompter()
    io.say("=== llm-cascade interactive setup ===")
    io.say(f"The config will be written to {path} at the end; Ctrl-C aborts, writing nothing.")
    io.say()
    answers = run_wizard(io)
    text = render_config(build_document(answers, *state_paths(data_dir)), template_path())
    io.say()
    return text, _offer_keys(io, _parse(text, path))


def _offer_keys(io: Prompter, app_config: AppConfig) -> dict[str, str]:
    """Ask for keys if the keyring can keep them; otherwise say which variables to set."""
    from ..keys import env_names, keyring_backend, lookup_for
    from ..wizard import ask_keys

    lookups = [lookup_for(app_config.providers[n]) for n in sorted(app_config.providers)]
    needing = [lk for lk in lookups if lk.needs_key]
    if not needing:
        return {}
    backend = keyring_backend()
    if backend.problem:
        names = ", ".join(env_names(lk) or lk.provider for lk in needing)
        io.say(f"No usable keyring ({backend.problem}); keys will come from env vars: {names}.")
        return {}
    return ask_keys(io, needing, backend.name)


def _commit(path: Path, text: str, keys: dict[str, str]) -> AppConfig:
    """Write the config, then the state folders, the database and the keys."""
    from ..bootstrap import prepare_state, write_new_file
    from ..config import load_config

    try:
        write_new_file(path, text)
    except FileExistsError:
        say(f"A config appeared at '{path}' while setup ran; left it untouched, wrote nothing.")
        raise typer.Exit(EXIT_FAILED) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LlmCascadeError(
            f"Failed to write config file '{path}': {reason}; check that folder's"
            " permissions, or pass -c FILE to write elsewhere"
        ) from None
    echo(f"Created config: {path}")
    app_config = load_config(path)
    try:
        for folder in prepare_state(app_config):
            echo(f"Created data directory: {folder}")
    except (OSError, LlmCascadeError) as exc:
        say(f"Warning: could not create the database or failed-prompt folder: {exc}")
        say(f"  Fix the permissions, or change [database] / [failure_persistence] in {path}.")
    _store_keys(app_config, keys)
    return app_config


def _store_keys(app_config: AppConfig, keys: dict[str, str]) -> None:
    from ..keys import KeyringUnavailable, key_fix, lookup_for, store_key

    for provider, secret in sorted(keys.items()):
        lookup = lookup_for(app_config.providers[provider])
        try:
            store_key(lookup, secret)
        except KeyringUnavailable as exc:  # the keyring just refused: offer the variable
            say(f"Warning: could not store the key for '{provider}': {exc}")
            say(f"  To fix: {key_fix(lookup, use_keyring=False)}.")
        else:
            echo(f"API key for '{provider}' stored in keyring.")
    keys.clear()


def _next_steps(app_config: AppConfig) -> None:
    from ..keys import key_fix, key_statuses, keyring_in_use, lookup_for

    lookups = [lookup_for(app_config.providers[n]) for n in sorted(app_config.providers)]
    statuses, _ = key_statuses(lookups, use_keyring=app_config.keyring)
    missing = [s.lookup for s in statuses if s.source == "missing"]
    default = app_config.default_cascade
    echo()
    echo(f"Setup complete. Edit '{app_config.path}' to customize providers and cascades.")
    if missing:
        in_use = keyring_in_use(app_config.keyring)
        echo("API keys missing now:")
        for lookup in missing:
            echo(f"  {lookup.provider}: {key_fix(lookup, use_keyring=in_use)}")
    echo("Next:")
    echo("  llm-cascade config check        which cascades can run, and why not")
    if default:
        echo('  llm-cascade run "Hello"           the default cascade, ' + default)
    elif app_config.cascades:
        echo(f'  llm-cascade run -C {next(iter(app_config.cascades))} "Hello"')
