"""`LLMCascade`: a cascade from a list and three methods, on the same engine as the CLI.

    async with LLMCascade([("anthropic", "claude-sonnet-4-20250514"), ("openai", "gpt-4o")]) as llm:
        response = await llm.get_response("Summarise this", system_prompt="Be concise.")
        data = await llm.get_json_response("Three colours as a JSON list")
        invoice = await llm.get_structured_json_response(Invoice, "Read this invoice: ...")

Every guarantee of a CLI run holds: cooldowns shared through the same database, the attempt
log, the prompt saved before the first request and kept when every entry fails
(`CascadeFailed` says where). One object serves any number of concurrent calls over one HTTP
client; it may be used from one event loop after another (each `asyncio.run`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths
from .adhoc import DEFAULT_NAME, Spec, adhoc_config
from .attempts import Attempt
from .cascade import Cascade
from .config import AppConfig, _Parser, load_config
from .errors import ConfigError, UsageError
from .results import CascadeResult, RunOptions
from .types import Conversation, Message, OutputFormat, ToolCall, ToolDefinition

if TYPE_CHECKING:
    import httpx

    from .clock import Clock

__all__ = ["LLMCascade", "Response"]

# Per-call options that shape the run rather than the requests.
_RUN_OPTIONS = {"deadline": "deadline_s", "wait_cooldown": "wait_cooldown_s"}
_RUN_FLAGS = {"ignore_cooldown"}


@dataclass(frozen=True, slots=True)
class Response:
    """What `get_response` returns: the answer and where it came from."""

    content: str  # the answer's text
    tool_calls: list[ToolCall]
    provider: str  # the provider's name (the config's, or the type's for a type)
    model: str  # the model that answered, as the vendor names it
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: int  # the whole cascade call, failovers included
    attempts: list[Attempt] = field(default_factory=list)
    entry: str = ""  # `provider/model` of the entry that answered
    stop_reason: str | None = None
    result: CascadeResult | None = field(default=None, repr=False)  # everything the engine said

    @classmethod
    def of(cls, result: CascadeResult) -> Response:
        r = result.response
        return cls(
            content=r.text,
            tool_calls=r.tool_calls,
            provider=result.provider,
            model=r.model,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            latency_ms=result.latency_ms,
            attempts=result.attempts,
            entry=result.entry,
            stop_reason=r.stop_reason,
            result=result,
        )


class LLMCascade:
    """An ordered list of (provider, model) entries, asked in turn until one answers."""

    def __init__(
        self,
        entries: Iterable[Spec] | str,
        *,
        config: str | Path | AppConfig | None = None,
        db_path: str | Path | None = None,
        failed_dir: str | Path | None = None,
        name: str = DEFAULT_NAME,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        """`entries`: `(provider, model)` pairs, or `(provider, model, {options})`, or
        `"provider/model"` strings; or the name of a cascade of the config.

        `provider` is a provider of the config (`config`: a path or a loaded config; else the
        file at the default path, if there is one) or else a provider type with its defaults.
        Options may set provider fields (`base_url`, `api_key_env`, `api_key_service`, `name`)
        and entry options (`timeout`, `retries`, `max_tokens`, `supports`...). State goes to
        `db_path` and failed prompts to `failed_dir`, else to the config's, else to the
        platform data directory. `name` names the cascade in the attempt log and saved
        prompts. Raises ConfigError for an empty or malformed list or an unknown provider.
        """
        base = _config(config)
        db = Path(db_path).expanduser() if db_path is not None else None
        failed = Path(failed_dir).expanduser() if failed_dir is not None else None
        if isinstance(entries, str):
            if base is None or entries not in base.cascades:
                defined = ", ".join(sorted(base.cascades)) if base else "no config"
                raise ConfigError(f"no cascade '{entries}' in the config (defined: {defined})")
            app, name = base, entries
            if db or failed:
                app = replace(
                    base,
                    database_path=db or base.database_path,
                    failure_dir=failed or base.failure_dir,
                )
        else:
            app = adhoc_config(
                entries, base, name=name, label="LLMCascade", database_path=db, failure_dir=failed
            )
        self.config = app
        self.name = name
        self.engine = Cascade(app, client=client, clock=clock)
        self._formats: dict[type, OutputFormat] = {}

    # --- the three calls ---------------------------------------------------------------------

    async def get_response(
        self,
        user_prompt: str | None = None,
        *,
        system_prompt: str | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        tools: Sequence[ToolDefinition | Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> Response:
        """The first answer an entry gives. `messages` is the conversation so far (our
        `Message`s or `{"role", "content"}` dicts), `user_prompt` the new user turn after it;
        `tools` the functions the model may call (`ToolDefinition`s, or dicts in our shape or
        OpenAI's). `options`: `deadline`, `wait_cooldown` (seconds), `ignore_cooldown`, and
        entry options for this call (`max_tokens`, `temperature`, `timeout`...).

        Raises CascadeFailed (with the saved prompt's path) when no entry answers; UsageError
        for a bad request (nothing is sent).
        """
        conversation = conversation_of(user_prompt, system_prompt, messages, tools)
        result = await self.engine.run(self.name, conversation, self._run_options(options))
        return Response.of(result)

    async def get_json_response(
        self,
        user_prompt: str | None = None,
        *,
        system_prompt: str | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> Any:
        """The answer as a parsed JSON value, asked for in each vendor's JSON mode. An answer
        that is not JSON fails over to the next entry (no cooldown, outcome
        `invalid_output`)."""
        return await self._document(
            OutputFormat(), None, user_prompt, system_prompt, messages, options
        )

    async def get_structured_json_response(
        self,
        schema: Mapping[str, Any] | type,
        user_prompt: str | None = None,
        *,
        system_prompt: str | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> Any:
        """The answer, valid under `schema` (a JSON Schema dict, or a pydantic model class):
        the decoded value, or the model instance. Each vendor's structured output is used
        where it has one, and every answer is checked here too; one that breaks the schema
        fails over like invalid JSON, the error naming the path (`$.items[2].price: expected
        number`). A schema that is not valid JSON Schema is a UsageError before any request.
        """
        from . import structured  # the validator is imported only by calls with a schema

        if structured.pydantic_model(schema):
            assert isinstance(schema, type)
            output = self._formats.get(schema)
            if output is None:
                output = self._formats[schema] = structured.output_format(schema)
            check = schema.model_validate  # type: ignore[attr-defined]
            return await self._document(
                output, check, user_prompt, system_prompt, messages, options
            )
        output = structured.output_format(schema)
        return await self._document(output, None, user_prompt, system_prompt, messages, options)

    async def _document(
        self,
        output: OutputFormat,
        check: Any,
        user_prompt: str | None,
        system_prompt: str | None,
        messages: Sequence[Message | Mapping[str, Any]] | None,
        options: dict[str, Any],
    ) -> Any:
        conversation = conversation_of(user_prompt, system_prompt, messages, None)
        run = self._run_options(options, output_check=check)
        result = await self.engine.run(self.name, conversation.with_output(output), run)
        assert result.parsed is not None  # the engine checked the document
        return result.parsed.checked

    def _run_options(self, options: dict[str, Any], **extra: Any) -> RunOptions:
        """Per-call options: those of the run, then entry options, checked as the config's."""
        values: dict[str, Any] = dict(extra)
        entry_options = {}
        for key, value in options.items():
            if key in _RUN_OPTIONS:
                if value is not None and not _seconds(value):
                    raise UsageError(f"{key}: expected a number of seconds, got {value!r}")
                values[_RUN_OPTIONS[key]] = None if value is None else float(value)
            elif key in _RUN_FLAGS:
                values[key] = bool(value)
            else:
                entry_options[key] = value
        if entry_options:
            values["entry_options"] = entry_options_of(entry_options)
        return RunOptions(**values)

    # --- lifetime ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP client and the database (`async with` does it on leaving)."""
        await self.engine.aclose()

    async def __aenter__(self) -> LLMCascade:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def entry_options_of(options: Mapping[str, Any]) -> dict[str, Any]:
    """Entry options given to one call, checked as a config's are (UsageError if bad)."""
    from .adhoc import _check_known

    parser = _Parser(None, label="options")
    try:
        _check_known(parser, options, "options")
        return parser.options(options, "")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _config(config: str | Path | AppConfig | None) -> AppConfig | None:
    """The config given, else the one at the default path if there is a file there."""
    if isinstance(config, AppConfig):
        return config
    if config is not None:
        return load_config(config)
    path = paths.default_config_path()
    return load_config(path) if path.exists() else None


def conversation_of(
    user_prompt: str | None,
    system_prompt: str | None,
    messages: Sequence[Message | Mapping[str, Any]] | None,
    tools: Sequence[ToolDefinition | Mapping[str, Any]] | None,
) -> Conversation:
    """The conversation of one call: system prompt, earlier messages, the user prompt last."""
    if user_prompt is not None and not isinstance(user_prompt, str):
        raise UsageError(f"user_prompt must be a string, not {type(user_prompt).__name__}")
    listed = [m.to_dict() if isinstance(m, Message) else m for m in messages or ()]
    if system_prompt:
        listed.insert(0, {"role": "system", "content": system_prompt})
    if user_prompt is not None:
        listed.append({"role": "user", "content": user_prompt})
    if not any(m.get("role") != "system" for m in listed if isinstance(m, Mapping)):
        raise UsageError("nothing to ask: give user_prompt or messages")
    document: dict[str, Any] = {"messages": listed}
    if tools is not None:
        document["tools"] = [_tool(t) for t in tools]
    return Conversation.from_dict(document)  # ConversationError (a UsageError) names the path


def _tool(tool: ToolDefinition | Mapping[str, Any]) -> Any:
    """A tool as our dict shape; OpenAI's `{"type": "function", "function": {...}}` too."""
    if isinstance(tool, ToolDefinition):
        return tool.to_dict()
    if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
        return tool["function"]
    return tool
