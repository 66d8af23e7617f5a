"""What one `run` asks for, resolved against the config: the cascade and the conversation.

The cascade is, in this order: ad-hoc `provider/model` entries, the one named, the template's,
the config's `default_cascade`. The user message is the prompt, the text piped with it, or
both (the prompt first, a blank line, then the piped text), rendered through a template when
one is used; a template's options apply to every entry of the run's cascade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from .adhoc import ADHOC_CASCADE, Spec, adhoc_config
from .config import AppConfig
from .errors import UsageError
from .templates import Template, join_input, render
from .types import Conversation, Message


def find_template(config: AppConfig, name: str) -> Template:
    template = config.templates.get(name)
    if template is None:
        defined = ", ".join(sorted(config.templates)) or "none"
        where = f" in '{config.path}'" if config.path else ""
        raise UsageError(f"unknown template '{name}'{where} (defined: {defined})")
    return template


def choose_cascade(
    config: AppConfig,
    *,
    cascade: str | None = None,
    models: Sequence[Spec] = (),
    template: Template | None = None,
) -> tuple[AppConfig, str]:
    """The config to run with and the name of the cascade to run in it.

    The config returned holds the ad-hoc cascade (with the providers it implies) or the named
    cascade with the template's options applied; `config` itself is not changed.
    """
    if models:
        config = adhoc_config(models, config, name=ADHOC_CASCADE, label="-m")
        chosen = config.cascades[ADHOC_CASCADE]
    else:
        name = cascade or (template.cascade if template else None) or config.default_cascade
        if name is None:
            raise UsageError(_no_cascade(config))
        if name not in config.cascades:
            defined = ", ".join(sorted(config.cascades)) or "none"
            raise UsageError(f"Cascade '{name}' not found in configuration (defined: {defined})")
        chosen = config.cascades[name]
    if template is not None and template.options:
        entries = tuple(
            replace(e, options=e.options.merged(template.options)) for e in chosen.entries
        )
        chosen = replace(chosen, entries=entries)
        config = replace(config, cascades={**config.cascades, chosen.name: chosen})
    return config, chosen.name


def _no_cascade(config: AppConfig) -> str:
    where = f"'{config.path}'" if config.path else "the config"
    if not config.cascades:
        return f"no cascade: {where} defines none; give -m PROVIDER/MODEL, or add [cascades.NAME]"
    defined = ", ".join(sorted(config.cascades))
    return (
        f'no cascade: give -C NAME or set default_cascade = "NAME" at the top of {where}'
        f" (defined: {defined})"
    )


def input_text(prompt: str | None, piped: str | None) -> str | None:
    """The text a run was given: the prompt, the piped text, or both as one message (the
    prompt first, then the piped text after a blank line). Empty piped text counts as none."""
    if piped is not None and not piped.strip():
        piped = None
    if prompt is None:
        return piped
    return prompt if piped is None else join_input(prompt, piped)


def prompt_conversation(
    text: str | None,
    *,
    system: str | None = None,
    template: Template | None = None,
    values: Mapping[str, str] | None = None,
) -> Conversation:
    """One user turn from the input `text` (through `template` with `values` when given),
    after `system` (else the template's system, if it has one)."""
    if template is not None:
        template_system, message = render(template, text, values or {})
        system = system or template_system
    elif values:
        raise UsageError("--var needs -t/--template: it sets a template's variable")
    else:
        message = text or ""
    if not message.strip():
        raise UsageError("the prompt is empty")
    return Conversation([*([Message.system(system)] if system else []), Message.user(message)])
