"""`key set|get|list|delete`: API keys exactly where the runtime looks for them.

One resolution for everything (keys.lookup_for): keyring service `llm-cascade`, username =
the provider's `api_key_service` or its name, then the env var. Keys are read from a hidden
prompt or stdin, never from argv, and stripped; shown masked unless --show-full.
A locked, missing or failing keyring costs one warning line, never a hang.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, ConfigError, LlmCascadeError, UsageError
from ._common import ConfigOption, JsonOption, complete_providers, echo, format_table, say

if TYPE_CHECKING:
    from ..config import AppConfig, ProviderConfig
    from ..keys import KeyLookup

key_app = typer.Typer(
    help="Store, show and check API keys (OS keyring, env var fallback).",
    no_args_is_help=True,
)

ProviderArg = Annotated[
    str,
    typer.Argument(
        help="Provider name from the config.", metavar="PROVIDER", autocompletion=complete_providers
    ),
]


def _load(config: Path | None, name: str) -> tuple[AppConfig, ProviderConfig, KeyLookup]:
    from ..config import load_config
    from ..keys import lookup_for

    app_config = load_config(config)
    provider = app_config.providers.get(name)
    if provider is None:
        defined = ", ".join(sorted(app_config.providers)) or "none"
        raise UsageError(
            f"Provider '{name}' not found in config '{app_config.path}' (defined: {defined});"
            f" check the spelling or add a [providers.{name}] table"
        )
    return app_config, provider, lookup_for(provider)


def _env_hint(lookup: KeyLookup) -> str:
    from ..keys import env_names

    if lookup.env_var:
        return f"export {env_names(lookup)} instead"
    return f"set api_key_env for provider '{lookup.provider}' and export that variable instead"


def _require_keyring(app_config: AppConfig, lookup: KeyLookup) -> None:
    """Refuse early, before asking for a key, when it could not be kept."""
    from ..keys import keyring_backend

    if not app_config.keyring:
        raise ConfigError(
            f"the keyring is off in '{app_config.path}' (keyring = false): {_env_hint(lookup)},"
            " or remove `keyring = false`"
        )
    backend = keyring_backend()
    if backend.problem:
        raise LlmCascadeError(
            f"no usable keyring ({backend.name}: {backend.problem}): unlock or install one"
            " (on a headless machine: `pip install keyrings.alt` and"
            " PYTHON_KEYRING_BACKEND=keyrings.alt.file.PlaintextKeyring),"
            f" or {_env_hint(lookup)}"
        )


def set_key(
    ctx: typer.Context,
    provider: ProviderArg,
    config: ConfigOption = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the key from stdin even on a terminal.")
    ] = False,
) -> None:
    """Store PROVIDER's API key in the OS keyring.

    On a terminal the key is asked for with hidden input; otherwise it is read from stdin.

    Example: printf %s "$KEY" | llm-cascade key set openai

    Surrounding whitespace is removed. The key is never an argument (it would reach history).
    """
    from ..keys import (
        KeyringUnavailable,
        check_key,
        env_names,
        env_value,
        keyring_backend,
        store_key,
    )
    from .prompter import read_key

    app_config, provider_config, lookup = _load(config, provider)
    if ctx.args:  # caught here so the usual "unexpected argument (sk-...)" never echoes a key
        how = (
            f"run `llm-cascade key set {provider}` and paste the key at the prompt, or"
            f' printf %s "$KEY" | llm-cascade key set {provider}'
            if app_config.keyring
            else f"the keyring is off (keyring = false), so {_env_hint(lookup)}"
        )
        raise UsageError(
            f"`key set` takes no key argument (it stays in shell history; consider removing it):"
            f" {how}"
        )
    if not lookup.needs_key:
        raise UsageError(
            f"Provider '{provider}' (type {provider_config.type}) does not use an API key;"
            " nothing to store"
        )
    _require_keyring(app_config, lookup)
    try:
        what = (
            "AWS credentials (ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN])"
            if lookup.aws
            else "API key"
        )
        secret = check_key(lookup, read_key(f"Enter {what} for {provider}: ", from_stdin=stdin))
    except ValueError as exc:
        raise UsageError(
            f"{exc}: type or paste it at the prompt, or pipe it:"
            f' printf %s "$KEY" | llm-cascade key set {provider}'
        ) from None
    except EOFError:
        say("\nAborted: input ended; no key stored.")
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        say("\nAborted; no key stored.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    try:
        store_key(lookup, secret)
    except KeyringUnavailable as exc:
        raise LlmCascadeError(
            f"Failed to store key for '{provider}' (keyring username '{lookup.keyring_user}'):"
            f" {exc}; {_env_hint(lookup)}"
        ) from None
    echo(f"API key for '{provider}' stored in keyring.")
    backend = keyring_backend()
    say(f"Keyring: {backend.name}; service 'llm-cascade', username '{lookup.keyring_user}'.")
    if backend.note:
        say(f"Note: {backend.note}.")
    if env_value(lookup):
        say(f"Note: {env_names(lookup)} is set too; the keyring key is used first.")
    _clear_auth_cooldowns(app_config, provider)


def _clear_auth_cooldowns(app_config: AppConfig, provider: str) -> None:
    """A rejected key (401/403) cools its entries for an hour; a new key should not wait."""
    import sqlite3

    from ..state import clear_auth_cooldowns

    try:
        keys = clear_auth_cooldowns(app_config, provider)
    except (LlmCascadeError, sqlite3.Error) as exc:
        say(f"Warning: could not clear the auth cooldowns of '{provider}': {exc}")
        say(f"  `llm-cascade reset {provider}/<model>` clears one by hand.")
        return
    if keys:
        say(f"Cleared the auth cooldown of {', '.join(keys)}; the next run tries the new key.")


def get_key(
    provider: ProviderArg,
    config: ConfigOption = None,
    show_full: Annotated[bool, typer.Option("--show-full", help="Print the whole key.")] = False,
) -> None:
    """Show PROVIDER's API key as a run would find it, masked unless --show-full.

    The key alone goes to stdout; where it came from (keyring or env var) goes to stderr.
    """
    from ..keys import (
        env_names,
        keyring_backend,
        keyring_in_use,
        mask_key,
        missing_key_message,
        resolve_key,
    )

    app_config, _, lookup = _load(config, provider)
    if not lookup.needs_key:
        echo(f"Provider '{provider}' does not use an API key.")
        return
    resolved = resolve_key(lookup, use_keyring=app_config.keyring)
    if resolved.warning:
        say(f"Warning: {resolved.warning}")
    if resolved.value is None:
        in_use = keyring_in_use(app_config.keyring)
        raise LlmCascadeError(missing_key_message(lookup, use_keyring=in_use))
    echo(resolved.value if show_full else mask_key(resolved.value))
    if resolved.source == "keyring":
        say(f"(from the keyring: {keyring_backend().name}, username '{lookup.keyring_user}')")
    else:
        say(f"(from env var {env_names(lookup)})")


def delete_key(provider: ProviderArg, config: ConfigOption = None) -> None:
    """Delete PROVIDER's API key from the OS keyring."""
    from ..keys import KeyringUnavailable, env_names, env_value, keyring_delete

    app_config, _, lookup = _load(config, provider)
    if not lookup.needs_key or not lookup.keyring_user:
        echo(f"Provider '{provider}' does not use an API key.")
        return
    _require_keyring(app_config, lookup)
    try:
        deleted = keyring_delete(lookup.keyring_user)
    except KeyringUnavailable as exc:
        raise LlmCascadeError(f"Failed to delete key for '{provider}': {exc}") from None
    if not deleted:
        raise LlmCascadeError(
            f"No key for '{provider}' in the keyring (username '{lookup.keyring_user}');"
            " nothing deleted. `llm-cascade key list` shows where each key comes from"
        )
    echo(f"API key for '{provider}' deleted from keyring.")
    if env_value(lookup):
        say(f"Note: {env_names(lookup)} is still set, so runs keep using that key.")


def list_keys(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """List every provider and where its key would come from right now.

    KEYRING and ENV VAR: what each source holds (set, not set, error, off, n/a).

    SOURCE: what a run would use. The keyring backend and the fix for each missing key follow.
    """
    from ..config import load_config
    from ..keys import key_statuses, keyring_backend, lookup_for, missing_key_message

    app_config = load_config(config)
    names = sorted(app_config.providers)
    lookups = [lookup_for(app_config.providers[n]) for n in names]
    backend = keyring_backend() if app_config.keyring else None
    statuses, warning = key_statuses(lookups, use_keyring=app_config.keyring)
    if json_output:
        data = {
            "keyring": {
                "enabled": app_config.keyring,
                "backend": backend.name if backend else None,
                "problem": backend.problem if backend else None,
                "note": backend.note if backend else None,
                "warning": warning,
            },
            "providers": [
                {
                    "provider": s.lookup.provider,
                    "type": app_config.providers[s.lookup.provider].type,
                    "keyring": s.keyring,
                    "keyring_username": s.lookup.keyring_user,
                    "env_var": s.lookup.env_var,
                    "env": None if s.env_set is None else ("set" if s.env_set else "not set"),
                    "source": s.source,
                }
                for s in statuses
            ],
        }
        echo(json.dumps(data, indent=2))
        return
    if not statuses:
        say(f"no providers in {app_config.path}: add a [providers.NAME] table")
        return
    rows = [
        [
            s.lookup.provider,
            s.keyring,
            "n/a" if s.env_set is None else ("set" if s.env_set else "not set"),
            s.where,
        ]
        for s in statuses
    ]
    echo(format_table(["PROVIDER", "KEYRING", "ENV VAR", "SOURCE"], rows))
    if backend is None:
        say("Keyring: off (keyring = false in the config); keys come from env vars only.")
    else:
        problem = (
            f" (unusable: {backend.problem}); keys come from env vars only"
            if backend.problem
            else ""
        )
        say(f"Keyring backend: {backend.name}{problem}")
        if backend.note:
            say(f"Note: {backend.note}.")
    if warning:
        say(f"Warning: {warning}")
    in_use = backend is not None and backend.problem is None
    for status in statuses:
        if status.source == "missing":
            say(missing_key_message(status.lookup, use_keyring=in_use))


# Extra arguments reach set_key, which refuses them without echoing what may be a key.
key_app.command("set", context_settings={"allow_extra_args": True})(set_key)
key_app.command("get")(get_key)
key_app.command("list")(list_keys)
key_app.command("delete")(delete_key)
