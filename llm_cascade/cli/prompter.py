"""Terminal questions: the rich-backed `Prompter` of the wizard and the hidden key prompt.

The whole dialogue (explanations, menus and prompts) goes to stderr, so redirecting stdout
never hides a question; stdout carries only results. Answers come from stdin. EOFError
and KeyboardInterrupt propagate so the caller can abort with nothing written.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

MAX_PIPED_KEY_CHARS = 65_536


def interactive() -> bool:
    """True when a person can answer: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


class RichPrompter:
    """Questions on stderr via rich, answers from stdin (hidden for secrets on a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console: Console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.hide = sys.stdin.isatty()

    def _prompt(self, prompt: str) -> Text:
        from rich.text import Text

        return Text(prompt, style="bold")  # a Text, so `[y/N]` is not read as markup

    def ask(self, prompt: str) -> str:
        return self.console.input(self._prompt(prompt)).strip()

    def ask_secret(self, prompt: str) -> str:
        if not self.hide:  # piped input is not echoed anyway
            return self.ask(prompt)
        import getpass

        # getpass turns echo off before it writes the prompt, so nothing typed after the
        # prompt appears can be echoed.
        return getpass.getpass(prompt).strip()

    def say(self, text: str = "") -> None:
        self.console.print(text, markup=False, emoji=False)

    def warn(self, text: str) -> None:
        self.console.print(text, style="yellow", markup=False, emoji=False)


def read_key(prompt: str, *, from_stdin: bool) -> str:
    """A key from a hidden prompt on a terminal, else (or with --stdin) the whole of stdin.

    Raises EOFError (stdin closed at the prompt) and KeyboardInterrupt.
    """
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.read(MAX_PIPED_KEY_CHARS)
    import getpass

    return getpass.getpass(prompt)
