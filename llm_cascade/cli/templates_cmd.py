"""`templates list|show`: the prompt templates of the config (`[templates.NAME]`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..text import shorten
from ._common import ConfigOption, JsonOption, complete_templates, echo, format_table, say

templates_app = typer.Typer(
    help="List and show the prompt templates of the config (run -t NAME uses one).",
    no_args_is_help=True,
)


@templates_app.command("list")
def list_templates(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """List the templates: name, cascade, variables and the start of the prompt."""
    from ..config import load_config

    app_config = load_config(config)
    templates = [app_config.templates[name] for name in sorted(app_config.templates)]
    if json_output:
        echo(json.dumps([t.to_dict() for t in templates], indent=2, ensure_ascii=False))
        return
    if not templates:
        say(f"no templates yet: add a [templates.NAME] table to {app_config.path}")
        return
    rows = [
        [
            t.name,
            t.cascade or "-",
            " ".join(f"${v}" for v in t.variables) or "-",
            shorten(" ".join((t.prompt or t.system or "").split()), 50) or "-",
        ]
        for t in templates
    ]
    echo(format_table(["TEMPLATE", "CASCADE", "VARIABLES", "PROMPT"], rows, min_width=2))


@templates_app.command("show")
def show_template(
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="A template name.", autocompletion=complete_templates),
    ],
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one template: its system, prompt, cascade, options and variables."""
    from ..config import load_config
    from ..invocation import find_template

    template = find_template(load_config(config), name)
    if json_output:
        echo(json.dumps(template.to_dict(), indent=2, ensure_ascii=False))
        return
    echo(f"template:  {template.name}")
    echo(f"cascade:   {template.cascade or '(the one given with -C, else default_cascade)'}")
    for key, value in template.options.items():
        echo(f"{key + ':':<10} {value}")
    echo(f"variables: {' '.join(f'${v}' for v in template.variables) or '-'}")
    for key in ("system", "prompt"):
        text = getattr(template, key)
        if text is not None:
            echo(f"{key}:")
            echo("\n".join(f"  {line}" for line in text.splitlines()))
