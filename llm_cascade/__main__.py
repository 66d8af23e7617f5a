"""`python -m llm_cascade` runs the CLI."""

from .cli import main

main()
