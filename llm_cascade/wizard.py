"""The `setup --interactive` dialogue: questions, validation, and the config it yields.

Everything talks through a `Prompter` (the CLI passes one backed by rich), so each rule is
testable without a terminal. Nothing is written here: the caller writes the config and stores
the keys after the last answer, so closing stdin or pressing Ctrl-C at any prompt (EOFError,
KeyboardInterrupt, both left to propagate) leaves nothing behind. Answers are
validated as they come: names `[A-Za-z0-9_-]+`, non-empty models, http(s) base URLs,
`y/yes/n/no` in any case; lists are sorted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import tomli_w

from .keys import KeyLookup, check_key, env_names

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
FIRST_CASCADE = "default"


class Prompter(Protocol):
    """Where the questions go and the answers come from."""

    def ask(self, prompt: str) -> str:
        """One answer, stripped. Raises EOFError at end of input, KeyboardInterrupt on Ctrl-C."""
        ...

    def ask_secret(self, prompt: str) -> str:
        """Like `ask`, without echo when the input is a terminal."""
        ...

    def say(self, text: str = "") -> None:
        """A line of explanation."""
        ...

    def warn(self, text: str) -> None:
        """A line saying what was wrong with the last answer."""
        ...


@dataclass(frozen=True, slots=True)
class Question:
    """A setting a preset cannot know (an Azure resource's URL, an AWS region)."""

    key: str
    prompt: str
    parse: Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Preset:
    """A provider the wizard offers by name."""

    name: str
    label: str
    table: Mapping[str, str]
    example_model: str
    questions: tuple[Question, ...] = ()


def parse_region(answer: str) -> str:
    """An AWS region such as `us-east-1`; empty is `us-east-1`."""
    region = answer.strip() or "us-east-1"
    if not REGION_RE.fullmatch(region):
        raise ValueError("An AWS region looks like us-east-1 or eu-west-3.")
    return region


# The first five keep the numbers they always had (answers may be scripted); the native
# types added later follow, sorted by name.
PRESETS: tuple[Preset, ...] = (
    Preset(
        "anthropic",
        "Anthropic (claude-sonnet-4, ...)",
        {"type": "anthropic", "api_key_service": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"},
        "claude-sonnet-4-20250514",
    ),
    Preset(
        "gemini",
        "Google Gemini (gemini-2.0-flash, ...)",
        {"type": "gemini", "api_key_service": "gemini", "api_key_env": "GOOGLE_API_KEY"},
        "gemini-2.0-flash",
    ),
    Preset(
        "groq",
        "Groq (OpenAI-compatible)",
        {
            "type": "openai",
            "api_key_service": "groq",
            "api_key_env": "GROQ_API_KEY",
            "base_url": "https://api.groq.com/openai/v1",
        },
        "llama-3.3-70b-versatile",
    ),
    Preset(
        "ollama",
        "Ollama (local, no API key)",
        {"type": "ollama", "base_url": "http://localhost:11434"},
        "llama3",
    ),
    Preset(
        "openai",
        "OpenAI (gpt-4o, gpt-4o-mini, ...)",
        {"type": "openai", "api_key_service": "openai", "api_key_env": "OPENAI_API_KEY"},
        "gpt-4o-mini",
    ),
    Preset(
        "azure",
        "Azure OpenAI (model = your deployment's name)",
        {"type": "azure", "api_key_service": "azure", "api_key_env": "AZURE_OPENAI_API_KEY"},
        "gpt-4o",
        (
            Question(
                "base_url",
                "  Azure resource URL (https://RESOURCE.openai.azure.com, or .../openai/v1): ",
                lambda answer: check_base_url(answer),  # defined below
            ),
        ),
    ),
    Preset(
        "bedrock",
        "AWS Bedrock (AWS credentials and a region)",
        {"type": "bedrock", "api_key_service": "bedrock"},
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        (Question("region", "  AWS region [us-east-1]: ", parse_region),),
    ),
    Preset(
        "cohere",
        "Cohere (command-a, ...)",
        {"type": "cohere", "api_key_service": "cohere", "api_key_env": "CO_API_KEY"},
        "command-a-03-2025",
    ),
    Preset(
        "mistral",
        "Mistral (mistral-large-latest, ...)",
        {"type": "mistral", "api_key_service": "mistral", "api_key_env": "MISTRAL_API_KEY"},
        "mistral-large-latest",
    ),
    Preset(
        "openai_responses",
        "OpenAI Responses API (same key as openai)",
        {"type": "openai_responses", "api_key_service": "openai", "api_key_env": "OPENAI_API_KEY"},
        "gpt-4.1",
    ),
)
_EXAMPLES = {p.name: p.example_model for p in PRESETS}


@dataclass
class Answers:
    """What the user chose: provider tables by name, cascades as (provider, model) lists."""

    providers: dict[str, dict[str, str]] = field(default_factory=dict)
    cascades: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    default_cascade: str | None = None  # what `run` uses without -C


# --- single answers: pure, each returns the value or raises ValueError with the fix ----------


def parse_yes_no(answer: str, default: bool) -> bool:
    """`y`/`yes`/`n`/`no` in any case; an empty answer takes the default."""
    word = answer.strip().lower()
    if not word:
        return default
    if word in ("y", "yes"):
        return True
    if word in ("n", "no"):
        return False
    raise ValueError("Please answer y or n.")


def parse_selection(answer: str, names: Sequence[str]) -> list[str]:
    """Numbers (1-based) or names, separated by commas or spaces; `all`; `none` for nothing."""
    tokens = [t for t in re.split(r"[,\s]+", answer.strip().lower()) if t]
    if tokens in (["all"], ["a"]):
        return list(names)
    if tokens == ["none"]:
        return []
    if not tokens:
        raise ValueError("Choose at least one provider, or 'none' to add only custom ones.")
    chosen: list[str] = []
    for token in tokens:
        if token.isdigit() and 1 <= int(token) <= len(names):
            name = names[int(token) - 1]
        elif token in names:
            name = token
        else:
            raise ValueError(
                f"Unknown choice '{token}': use 1-{len(names)} or a name from the list."
            )
        if name not in chosen:
            chosen.append(name)
    return chosen


def check_name(name: str, taken: Sequence[str], what: str) -> str:
    """A provider or cascade name: `[A-Za-z0-9_-]+` (entry keys and file names stay clean)."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"A {what} name uses only letters, digits, '-' and '_' (got {name!r})."
            if name
            else f"The {what} name cannot be empty."
        )
    if name in taken:
        raise ValueError(f"There is already a {what} called '{name}'.")
    return name


def check_base_url(url: str) -> str:
    """An http(s) URL with a host, without trailing `/`."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"Cannot read {url!r} as a URL ({exc}).") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError("The base URL must look like https://api.example.com/v1.")
    return url.rstrip("/")


def env_var_for(name: str) -> str:
    """The default key variable of a custom provider: `my-llm` -> `MY_LLM_API_KEY`."""
    return name.upper().replace("-", "_") + "_API_KEY"


def parse_entry(line: str, providers: Sequence[str]) -> tuple[str, str]:
    """`provider:model`, split at the first `:` (so `ollama:llama3:8b` keeps its tag)."""
    provider, colon, model = line.partition(":")
    provider, model = provider.strip(), model.strip()
    if not colon:
        raise ValueError("Format: provider:model (e.g. openai:gpt-4o).")
    if provider not in providers:
        raise ValueError(
            f"Provider '{provider}' is not configured (configured: {', '.join(providers)})."
        )
    if not model:
        raise ValueError(f"The model after ':' is empty (e.g. {provider}:{_example(provider)}).")
    return provider, model


def _example(provider: str) -> str:
    return _EXAMPLES.get(provider, "model-id")


# --- the dialogue --------------------------------------------------------------------------


def _ask_until_valid(io: Prompter, prompt: str, parse: Any, *, secret: bool = False) -> Any:
    """Ask until `parse(answer)` stops raising ValueError; EOF and Ctrl-C propagate."""
    while True:
        try:
            return parse(io.ask_secret(prompt) if secret else io.ask(prompt))
        except ValueError as exc:
            io.warn(f"  {exc}")


def ask_yes_no(io: Prompter, question: str, default: bool = False) -> bool:
    hint = "[Y/n]" if default else "[y/N]"
    return bool(_ask_until_valid(io, f"{question} {hint}: ", lambda a: parse_yes_no(a, default)))


def choose_providers(io: Prompter, answers: Answers) -> None:
    """Step B: presets from a numbered, sorted menu."""
    names = [p.name for p in PRESETS]
    io.say("Providers (numbers or names, separated by commas; 'all'; 'none' for custom only):")
    width = max(len(n) for n in names)
    for number, preset in enumerate(PRESETS, 1):
        io.say(f"  {number}  {preset.name.ljust(width)}  {preset.label}")
    chosen = _ask_until_valid(
        io, f"Providers [1-{len(names)}]: ", lambda a: parse_selection(a, names)
    )
    for preset in PRESETS:
        if preset.name in chosen:
            table = dict(preset.table)
            if preset.questions:
                io.say(f"{preset.name}:")
            for question in preset.questions:
                table[question.key] = _ask_until_valid(io, question.prompt, question.parse)
            answers.providers[preset.name] = table


def add_custom_provider(io: Prompter, answers: Answers) -> None:
    """Step C, once: an OpenAI-compatible endpoint with its own key variable."""
    taken = list(answers.providers)
    name = _ask_until_valid(
        io, "  Name (letters, digits, - and _): ", lambda a: check_name(a, taken, "provider")
    )
    url = _ask_until_valid(io, "  Base URL (e.g. https://api.example.com/v1): ", check_base_url)
    default_env = env_var_for(name)

    def parse_env(answer: str) -> str:
        value = answer or default_env  # a name like `1x` makes a default that is not valid
        if not ENV_RE.fullmatch(value):
            raise ValueError("An env var name uses letters, digits and '_' (e.g. MY_LLM_API_KEY).")
        return value

    env = _ask_until_valid(io, f"  Env var for its key [{default_env}]: ", parse_env)
    answers.providers[name] = {
        "type": "openai",
        "api_key_service": name,
        "api_key_env": env,
        "base_url": url,
    }
    io.say(f"  Added provider '{name}' (OpenAI-compatible, key from the keyring or {env}).")


def add_custom_providers(io: Prompter, answers: Answers) -> None:
    """Step C: as many custom providers as wanted; at least one if no preset was chosen."""
    if not answers.providers:
        io.say("No preset chosen: add a custom OpenAI-compatible provider.")
        add_custom_provider(io, answers)
    question = "Add a custom OpenAI-compatible provider (Together, vLLM, LiteLLM...)?"
    while ask_yes_no(io, question):
        add_custom_provider(io, answers)
        question = "Add another custom provider?"


def define_cascade(io: Prompter, answers: Answers, name: str) -> None:
    """Step D for one cascade: ordered entries, at least one."""
    providers = sorted(answers.providers)
    io.say(f"  Providers: {', '.join(providers)}")
    entries: list[tuple[str, str]] = []

    def parse(line: str) -> tuple[str, str] | None:
        if not line:
            if entries:
                return None
            raise ValueError("A cascade needs at least one entry.")
        entry = parse_entry(line, providers)
        if entry in entries:
            raise ValueError(f"{entry[0]}:{entry[1]} is already in this cascade.")
        return entry

    known = [p for p in providers if p in _EXAMPLES] or providers
    example = f"{known[0]}:{_example(known[0])}"
    while True:
        more = ", Enter to finish" if entries else f", e.g. {example}"
        entry = _ask_until_valid(io, f"  Entry {len(entries) + 1} (provider:model{more}): ", parse)
        if entry is None:
            break
        entries.append(entry)
    answers.cascades[name] = entries


def define_cascades(io: Prompter, answers: Answers) -> None:
    """Step D: named cascades; the first is required and defaults to `default`."""
    io.say()
    io.say("Cascades: an ordered list of provider:model entries; the first that answers wins.")

    def parse_first(answer: str) -> str:
        return check_name(answer or FIRST_CASCADE, [], "cascade")

    def parse_next(answer: str) -> str | None:
        return check_name(answer, list(answers.cascades), "cascade") if answer else None

    name: str | None = _ask_until_valid(io, f"Cascade name [{FIRST_CASCADE}]: ", parse_first)
    while name is not None:
        define_cascade(io, answers, name)
        name = _ask_until_valid(io, "Another cascade name (Enter to finish): ", parse_next)
    choose_default_cascade(io, answers)


def choose_default_cascade(io: Prompter, answers: Answers) -> None:
    """Step E: the cascade `run` uses without -C (Enter: the first one)."""
    names = list(answers.cascades)

    def parse(answer: str) -> str:
        if not answer:
            return names[0]
        if answer not in names:
            raise ValueError(f"Choose one of the cascades: {', '.join(names)}.")
        return answer

    answers.default_cascade = _ask_until_valid(
        io, f"Default cascade, used when `run` has no -C [{names[0]}]: ", parse
    )


def ask_keys(io: Prompter, lookups: Sequence[KeyLookup], backend: str) -> dict[str, str]:
    """Optional hidden input of each key; kept in memory until the config is written."""
    needing = [lk for lk in lookups if lk.needs_key]
    if not needing or not ask_yes_no(io, f"Store API keys in the keyring now ({backend})?"):
        return {}
    io.say("  Input is hidden; press Enter to skip a provider.")

    keys: dict[str, str] = {}
    for lookup in needing:

        def parse(answer: str, lookup: KeyLookup = lookup) -> str | None:
            return check_key(lookup, answer) if answer.strip() else None

        via = f" (or set {env_names(lookup)} later)" if lookup.env_var else ""
        what = "AWS credentials ID:SECRET[:TOKEN]" if lookup.aws else "API key"
        value = _ask_until_valid(io, f"  {what} for {lookup.provider}{via}: ", parse, secret=True)
        if value is not None:
            keys[lookup.provider] = value
    return keys


def run_wizard(io: Prompter, answers: Answers | None = None) -> Answers:
    """Steps B-E: providers, custom providers, cascades, the default one. Keys are asked by
    the caller."""
    answers = answers or Answers()
    choose_providers(io, answers)
    add_custom_providers(io, answers)
    define_cascades(io, answers)
    return answers


def build_document(answers: Answers, db_path: str, failure_dir: str) -> dict[str, Any]:
    """The TOML document: the default cascade, providers sorted by name, cascades in the
    order given."""
    default = {"default_cascade": answers.default_cascade} if answers.default_cascade else {}
    return {
        **default,
        "providers": {name: dict(answers.providers[name]) for name in sorted(answers.providers)},
        "cascades": {
            name: {"entries": [{"provider": p, "model": m} for p, m in entries]}
            for name, entries in answers.cascades.items()
        },
        "database": {"path": db_path},
        "failure_persistence": {"dir": failure_dir},
    }


HEADER = """\
# llm-cascade configuration, written by `llm-cascade setup --interactive`.
# Keys are not kept here: `llm-cascade key set <provider>` stores one in the OS keyring,
# or export the provider's api_key_env variable. `llm-cascade config check` shows what
# can run. Every option is described in the commented template installed with llm-cascade:
# {template}

"""


def render_config(document: Mapping[str, Any], template: str) -> str:
    """The config file text: a short header naming `template`, then tomli-w's TOML.

    `template` is the installed template's path (bootstrap.template_path()): the README,
    docs/ and config.example.toml are not part of a `pip install`."""
    return HEADER.format(template=template) + tomli_w.dumps(dict(document))
