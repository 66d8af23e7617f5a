"""Prompt templates (`[templates.NAME]` in the config): text with `$variables`, a cascade, options.

`$input` is the text the run was given (a prompt, piped text, or both); any other `$name` comes
from `--var name=VALUE`. Substitution is Python's `string.Template` (`$name`, `${name}`, `$$`
for a dollar sign), done once, so a value that itself contains `$x` is never expanded again.
A leaf module: the config parses templates into these values, the run renders them.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

INPUT = "input"
# Entry options a template may set for every entry of its cascade.
OPTION_KEYS = ("temperature", "max_tokens")


@dataclass(frozen=True, slots=True)
class Template:
    """One `[templates.NAME]` table, validated."""

    name: str
    system: str | None = None
    prompt: str | None = None
    cascade: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # keys from OPTION_KEYS
    # As `run --schema` takes it: inline JSON, or the absolute path of a schema file.
    schema: str | None = None

    @property
    def variables(self) -> list[str]:
        """The `$names` its system and prompt use, in order of first use (`input` included)."""
        found: dict[str, None] = {}
        for text in (self.system, self.prompt):
            if text is not None:
                found.update(dict.fromkeys(string.Template(text).get_identifiers()))
        return list(found)

    def to_dict(self) -> dict[str, Any]:
        """The template as `templates show --json` prints it."""
        out: dict[str, Any] = {"name": self.name}
        for key in ("system", "prompt", "cascade", "schema"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.options)
        out["variables"] = self.variables
        return out


def syntax_problem(text: str) -> str | None:
    """Why `text` is no valid template (a `$` followed by no name), or None."""
    template = string.Template(text)
    if template.is_valid():
        return None
    return "has a '$' that starts no variable name (write $$ for a dollar sign)"


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """`--var name=VALUE` items as a mapping; the value may contain `=`."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.isidentifier():
            raise UsageError(f"--var {pair!r}: expected NAME=VALUE (NAME: letters, digits and _)")
        if name == INPUT:
            raise UsageError(
                "--var input=...: $input is the prompt itself; give it with -p, as the"
                " positional prompt or on stdin"
            )
        values[name] = value
    return values


def render(
    template: Template, text: str | None, values: Mapping[str, str]
) -> tuple[str | None, str]:
    """The (system, user message) of a run of `template` on the input `text`.

    A template without `prompt` sends the input as it is. A prompt that does not use `$input`
    gets the input after it, a blank line between, as piped text follows a prompt: input is
    never dropped. A variable the template uses but was not given, or a `--var` it does not
    use, is a usage error.
    """
    used = template.variables
    unknown = [name for name in values if name not in used]
    if unknown:
        uses = ", ".join(f"${n}" for n in used if n != INPUT) or "no variables"
        raise UsageError(
            f"template '{template.name}' has no variable ${unknown[0]} (it uses {uses})"
        )
    missing = [name for name in used if name != INPUT and name not in values]
    if missing:
        raise UsageError(
            f"template '{template.name}' needs ${missing[0]}: add --var {missing[0]}=VALUE"
        )
    if text is None and (INPUT in used or template.prompt is None):
        raise UsageError(
            f"template '{template.name}' needs $input: give a prompt (-p or positional) or pipe"
            " the text on stdin"
        )
    filled = {**values, INPUT: text or ""}
    system = None if template.system is None else _fill(template.system, filled)
    if template.prompt is None:
        return system, text or ""
    prompt = _fill(template.prompt, filled)
    if text is not None and INPUT not in string.Template(template.prompt).get_identifiers():
        prompt = join_input(prompt, text)
    return system, prompt


def join_input(prompt: str, piped: str) -> str:
    """One user message from a prompt and the text piped with it: the prompt, a blank line,
    then the text (the instruction first, as the best prompt CLIs send it)."""
    return f"{prompt.rstrip()}\n\n{piped}"


def _fill(text: str, values: Mapping[str, str]) -> str:
    return string.Template(text).substitute(values)
