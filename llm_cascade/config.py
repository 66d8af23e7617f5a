"""Read and validate the TOML config in one place; nothing else parses it.

Errors name the file and the key and exit 2 in the CLI; unknown keys are warnings that
suggest the key that was probably meant.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import files, paths, redaction
from .budgets import LIMIT_KEYS, Limits
from .errors import ConfigError
from .providers import PROVIDER_TYPES
from .providers.base import DEFAULT_MAX_RESPONSE_BYTES, deep_merge
from .routing import DEFAULT_SCORE_WEIGHTS, SCORE_PARTS, STRATEGIES, Price
from .rules import MAX_SECONDS, RULE_KEYS, CooldownPolicy, Rule, RuleError, parse_rule
from .templates import OPTION_KEYS as TEMPLATE_OPTION_KEYS
from .templates import Template, syntax_problem
from .types import path_text, shown, too_deep
from .untrusted import MAX_NESTING

logger = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; more is a mistake (or /dev/zero)


@dataclass(frozen=True, slots=True)
class Options:
    """Request settings of a provider; a cascade entry may override any of them."""

    timeout: float = 120.0  # total seconds for one request
    connect_timeout: float = 10.0
    first_byte_timeout: float | None = None  # None: the total timeout
    max_tokens: int | None = None
    temperature: float | None = None
    retries: int = 0  # extra tries inside the entry before failing over (transient errors)
    max_wait: float = 10.0  # longest Retry-After or backoff slept inside an entry
    extra: Mapping[str, Any] = field(default_factory=dict)  # merged into the request body
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # the decoded body; larger fails over
    stream_usage: bool = True  # OpenAI streams ask for usage; some compatible servers refuse
    idle_timeout: float = 30.0  # streams: the longest gap between two events
    # What the entry can do (tools, json, schema, vision, stream, prefill); a provider without
    # `supports` gets its type's defaults.
    supports: frozenset[str] = frozenset()
    # Tokens the model takes in one request; a request estimated larger skips the entry.
    context_window: int | None = None

    def merged(self, overrides: Mapping[str, Any]) -> Options:
        """These options with `overrides` on top; `extra` and `headers` merge key by key."""
        values = dict(overrides)
        if "extra" in values:  # nested tables merge too, as they do into the request body
            values["extra"] = deep_merge(dict(self.extra), values["extra"])
        if "headers" in values:
            values["headers"] = {**self.headers, **values["headers"]}
        return replace(self, **values)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """A named endpoint: protocol type, base URL and where its key comes from."""

    name: str
    type: str
    api_key_service: str | None = None
    api_key_env: str | None = None
    base_url: str | None = None
    options: Options = field(default_factory=Options)
    rules: tuple[Rule, ...] = ()
    api_version: str | None = None  # azure: the `api-version` query parameter
    region: str | None = None  # bedrock: the AWS region (else AWS_REGION, AWS_DEFAULT_REGION)

    @property
    def effective_base_url(self) -> str:
        """The configured base URL without trailing `/`, or the protocol default."""
        return (self.base_url or PROVIDER_TYPES[self.type].default_base_url).rstrip("/")

    @property
    def uses_default_base_url(self) -> bool:
        default = PROVIDER_TYPES[self.type].default_base_url.rstrip("/")
        return self.effective_base_url == default

    @property
    def uses_vendor_url(self) -> bool:
        """True if the requests go to the vendor itself: its default URL or one of its hosts
        (an Azure resource), so its usual key variable may be sent."""
        hosts = PROVIDER_TYPES[self.type].vendor_hosts
        host = urlsplit(self.effective_base_url).hostname or ""
        return self.uses_default_base_url or any(host.endswith(h) for h in hosts)


@dataclass(frozen=True, slots=True)
class CascadeEntry:
    """One (provider, model) pair with its fully merged options."""

    provider: str
    model: str
    options: Options = field(default_factory=Options)
    weight: float = 1.0  # the `weighted` strategy's share
    price: Price | None = None  # currency units per million tokens
    budget: Limits | None = None  # spending of this entry (all cascades) per day and month
    # Options laid over `options` for the entry's in-place retries (try 2 and later).
    retry_with: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The entry key `<provider-name>/<model>` used for cooldowns and the log."""
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class CascadeConfig:
    """An ordered list of entries, with an optional deadline for the whole run."""

    name: str
    entries: tuple[CascadeEntry, ...]
    deadline: float | None = None
    # A stream that breaks after output: restart on the next entry, continue from the partial
    # answer, or fail. None: the caller's default (see RunOptions.on_midstream).
    on_midstream: str | None = None
    strategy: str = "ordered"  # which entry goes first: see routing.py
    score_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SCORE_WEIGHTS)
    budget: Limits | None = None  # spending of this cascade per day and month
    # Start the next entry alongside one that shows nothing for this long (at most
    # `max_hedges` extra requests); the first answer wins, the others are cancelled.
    hedge_after: float | None = None
    max_hedges: int = 1
    # Entries sent a copy of each request in the background, for comparison.
    mirror: tuple[CascadeEntry, ...] = ()
    mirror_save: bool = False  # keep the mirrors' answers under the data dir
    mirror_wait: float = 5.0  # the longest a CLI run waits for its mirrors before exiting
    # The list an ad-hoc cascade (`run -m`, `LLMCascade([...])`) was made from, as JSON values:
    # saved with a prompt no entry answered, so `failed retry` can make the cascade again.
    specs: tuple[Any, ...] | None = None


STATE_BACKENDS = {
    "sqlite": (),
    "redis": ("redis", "rediss"),
    "postgres": ("postgresql", "postgres"),
}
DEFAULT_STATE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class StateConfig:
    """`[state]`: where the breakers live. The password never sits in `url` when it comes
    from `password_env` or the keyring (`password_keyring` names the keyring user)."""

    backend: str = "sqlite"
    url: str | None = None
    password_env: str | None = None
    password_keyring: str | None = None
    timeout_s: float = DEFAULT_STATE_TIMEOUT_S  # connect and every round trip
    prefix: str = "llm-cascade"  # Redis key prefix

    @property
    def shared(self) -> bool:
        return self.backend != "sqlite"


LOG_BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """`[log]`: where the attempt log also goes. Every row stays in the local SQLite log;
    with `server` (a PostgreSQL connection, as `[state]` describes one) it is also written
    there, marked with `host`, and `stats`, `metrics` and `top` read the fleet from it."""

    server: StateConfig | None = None
    host: str | None = None  # the name this host's rows carry (default: its hostname)

    @property
    def shared(self) -> bool:
        return self.server is not None


def safe_url(url: str) -> str:
    """`url` with any password replaced by `***`: the only form that is shown or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return parts._replace(netloc=f"{name}:***@{host}").geturl()


@dataclass(frozen=True, slots=True)
class AppConfig:
    """The whole configuration, validated and with every path absolute."""

    providers: Mapping[str, ProviderConfig]
    cascades: Mapping[str, CascadeConfig]
    database_path: Path
    failure_dir: Path
    path: Path | None = None
    keyring: bool = True
    cooldown: CooldownPolicy = field(default_factory=CooldownPolicy)
    rules: tuple[Rule, ...] = ()
    warnings: tuple[str, ...] = ()
    default_cascade: str | None = None  # what `run` uses without -C
    templates: Mapping[str, Template] = field(default_factory=dict)
    state: StateConfig = field(default_factory=StateConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --- loading -------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, *, optional: bool = False) -> AppConfig:
    """Load and validate the config at `path` (default: `default_config_path()`).

    With `optional`, a missing file at the platform default (no `path`, no
    $LLM_CASCADE_CONFIG) is an empty config, whose state lives in the platform data dir: what
    a run of provider types needs (`run -m openai/gpt-4o-mini`).
    """
    config_path = Path(path).expanduser() if path is not None else paths.default_config_path()
    config_path = config_path.absolute()
    try:
        text = files.read_bounded(config_path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        if optional and path is None and not os.environ.get(paths.CONFIG_ENV, "").strip():
            return parse_config({})
        hint = "run `llm-cascade setup` to create one, or pass -c/--config"
        raise ConfigError(f"no config file at '{config_path}': {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Failed to read config file '{config_path}': {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Failed to parse config file '{config_path}': {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"Failed to parse config file '{config_path}': nested too deeply"
        ) from None
    return parse_config(raw, config_path)


def parse_config(raw: Mapping[str, Any], path: Path | None = None) -> AppConfig:
    """Validate a decoded TOML document; relative paths are taken from the config's folder."""
    parser = _Parser(path)
    deep = too_deep(raw)
    if deep is not None:  # before anything walks it recursively
        raise parser.fail(path_text(deep), f"nested more than {MAX_NESTING} levels deep")
    config = parser.app(raw)
    for warning in config.warnings:
        logger.warning("%s", warning)
    return config


TOP_KEYS = {
    "providers",
    "cascades",
    "database",
    "failure_persistence",
    "keyring",
    "cooldown",
    "rules",
    "default_cascade",
    "templates",
    "state",
    "log",
}
STATE_KEYS = {"backend", "url", "password_env", "password_keyring", "timeout", "prefix"}
LOG_KEYS = {"backend", "url", "password_env", "password_keyring", "timeout", "host"}
PROVIDER_KEYS = {"type", "api_key_service", "api_key_env", "base_url", "rules"}
OPTION_KEYS = {f for f in Options.__dataclass_fields__}
ENTRY_KEYS = {"provider", "model", "weight", "price", "budget", "retry_with"}
CASCADE_KEYS = {"entries", "deadline", "on_midstream", "strategy", "score_weights", "budget"}
CASCADE_KEYS |= {"hedge_after", "max_hedges", "mirror", "mirror_save", "mirror_wait"}
TEMPLATE_KEYS = {"system", "prompt", "cascade", "schema", *TEMPLATE_OPTION_KEYS}
CAPABILITIES = ("tools", "json", "schema", "vision", "stream", "prefill")
MIDSTREAM = ("restart", "continue", "fail")


def _is_number(value: Any) -> bool:
    """A finite number: TOML's inf and nan would crash the time arithmetic or the JSON body."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(value: Any, *, zero_ok: bool = False) -> bool:
    """A number of seconds above 0 (or 0 when `zero_ok`), at most MAX_SECONDS: more could
    not be added to the clock and written as a timestamp."""
    return _is_number(value) and (value >= 0 if zero_ok else value > 0) and value <= MAX_SECONDS


_SECONDS = f"a number of seconds above 0, at most {MAX_SECONDS:.0f} (one year)"


def _json_value(value: Any) -> bool:
    """True if `value` can go in a JSON body: no inf or nan, no TOML dates or times."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_json_value(v) for v in value.values())
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    return isinstance(value, str | int)  # bool is an int


_Check = Callable[[Any], bool]
_OPTION_CHECKS: dict[str, tuple[_Check, str]] = {
    "timeout": (_seconds, _SECONDS),
    "connect_timeout": (_seconds, _SECONDS),
    "first_byte_timeout": (_seconds, _SECONDS),
    "max_tokens": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "an integer above 0",
    ),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number of 0 or more"),
    "retries": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10,
        "an integer from 0 to 10",
    ),
    "max_wait": (
        lambda v: _seconds(v, zero_ok=True),
        f"a number of seconds, 0 or more, at most {MAX_SECONDS:.0f} (one year)",
    ),
    "extra": (
        lambda v: isinstance(v, dict) and _json_value(v),
        "a table of request-body fields (JSON values: no inf, nan, dates or times)",
    ),
    "headers": (
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "a table of header names to string values",
    ),
    "max_response_bytes": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "an integer number of bytes above 0",
    ),
    "stream_usage": (lambda v: isinstance(v, bool), "true or false"),
    "idle_timeout": (_seconds, _SECONDS),
    "supports": (
        lambda v: isinstance(v, list) and all(c in CAPABILITIES for c in v),
        f"a list of capabilities ({', '.join(CAPABILITIES)})",
    ),
    "context_window": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "an integer number of tokens above 0",
    ),
}


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SETTING = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _state_url_problem(url: str | None, schemes: tuple[str, ...]) -> str | None:
    """Why `url` cannot reach a state backend of these schemes; None if it can be tried."""
    if not url:
        return f"is required with this backend (e.g. {schemes[0]}://127.0.0.1/)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (it validates the port)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in schemes:
        return f"must start with {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname and "host=" not in parts.query:
        return f"names no host: {safe_url(url)}"
    return None


def _header_problem(name: str, value: str) -> str | None:
    """Why HTTP cannot carry this header, or None. Never quotes the value: it may be a secret."""
    if not _HEADER_NAME.match(name):
        return "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    if value != value.strip() or not all(c == "\t" or " " <= c <= "~" for c in value):
        return (
            "must be one line of printable ASCII without surrounding spaces"
            " (the value is not shown)"
        )
    return None


MAX_URL_CHARS = 2048
MAX_MODEL_CHARS = 256
_IPV4_LIKE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")


def _url_problem(url: str) -> str | None:
    """Why no request could be sent to `url` + a path, or None. The URL is never repeated: it
    may hold a password. Refuses everything httpx would refuse only when sending."""
    if not url.startswith(("http://", "https://")):
        return "is not an http(s) URL (expected e.g. https://api.example.com/v1)"
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    # urlsplit silently drops tabs and newlines (a value pasted with its line end); httpx
    # refuses every ASCII control character.
    if url != url.strip() or any(c.isascii() and not c.isprintable() for c in url):
        return "must be one line, without control characters or surrounding spaces"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number 0-65535
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if not parts.hostname:
        return "has no host (expected e.g. https://api.example.com/v1)"
    if parts.query or parts.fragment:
        return "must not have a ?query or #fragment: the request path is appended to it"
    return _host_problem(parts.hostname)


def _host_problem(host: str) -> str | None:
    """Why `host` (lower case, without brackets) is no IP address or domain name, or None."""
    if ":" in host or _IPV4_LIKE.match(host):
        import ipaddress

        try:
            ipaddress.ip_address(host)
        except ValueError:
            return "has a host that is not a valid IP address"
        return None
    name = host.removesuffix(".")  # a fully qualified name may end with a dot
    labels = name.split(".")
    if not all(labels):
        return "has an empty label in its host name ('..' or a leading '.')"
    if name.isascii():
        if len(name) > 253 or any(len(label) > 63 for label in labels):
            return "has a host name over 253 characters or a label over 63 (DNS limits)"
        if not any(label.startswith("xn--") for label in labels):
            return None
    import idna  # httpx's own codec, only needed for international names

    try:
        if not name.isascii():
            idna.encode(host)  # as httpx encodes the host before sending
        elif host.startswith("xn--"):
            idna.decode(host)  # as httpx decodes it when building the request
        else:
            for label in labels:
                if label.startswith("xn--"):
                    idna.decode(label)  # Punycode of nothing never resolves
    except (idna.IDNAError, UnicodeError) as exc:
        return f"has a host name IDNA cannot encode ({exc})"
    return None


def model_problem(model: Any) -> str | None:
    """Why `model` cannot name a model (it may go in a URL), or None."""
    if not isinstance(model, str) or not model.strip():
        return "must be a non-empty model id"
    if len(model) > MAX_MODEL_CHARS or not model.isprintable():
        return f"must be one line of at most {MAX_MODEL_CHARS} characters"
    return None


class _Parser:
    """Walks the raw TOML once, collecting warnings and raising the first error."""

    def __init__(self, path: Path | None, label: str | None = None) -> None:
        """`label` names what is parsed in messages when it is not a file (`-m`,
        `LLMCascade`...)."""
        self.path = path
        self.label = label
        self.base_dir = path.parent if path else Path.cwd()
        self.warnings: list[str] = []

    def fail(self, key: str, problem: str) -> ConfigError:
        where = self.label or (f"'{self.path}'" if self.path else "config")
        return ConfigError(f"{where}: {key}: {problem}")

    def check_keys(self, table: Mapping[str, Any], known: set[str], prefix: str) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                where = self.label or (self.path.name if self.path else "config")
                self.warnings.append(f"{where}: unknown key '{prefix}{key}' ignored{hint}")

    def table(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        return value

    def string(self, table: Mapping[str, Any], key: str, prefix: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{prefix}{key}", "must be a string")
        return value

    def path_string(self, table: Mapping[str, Any], key: str, prefix: str) -> str | None:
        value = self.string(table, key, prefix)
        if value is not None and "\0" in value:  # no file system takes it
            raise self.fail(f"{prefix}{key}", "must not contain a NUL character")
        return value

    def app(self, raw: Mapping[str, Any]) -> AppConfig:
        self.check_keys(raw, TOP_KEYS, "")
        data_dir = paths.default_data_dir
        database = self.table(raw.get("database"), "database")
        self.check_keys(database, {"path"}, "database.")
        failures = self.table(raw.get("failure_persistence"), "failure_persistence")
        self.check_keys(failures, {"dir"}, "failure_persistence.")
        db_path = self.path_string(database, "path", "database.")
        fail_dir = self.path_string(failures, "dir", "failure_persistence.")
        keyring = raw.get("keyring", True)
        if not isinstance(keyring, bool):
            raise self.fail("keyring", "must be true or false")
        providers = {
            name: self.provider(name, value)
            for name, value in self.table(raw.get("providers"), "providers").items()
        }
        cascades = {
            name: self.cascade(name, value, providers)
            for name, value in self.table(raw.get("cascades"), "cascades").items()
        }
        default_cascade = self.string(raw, "default_cascade", "")
        if default_cascade is not None and default_cascade not in cascades:
            raise self.fail(
                "default_cascade",
                f"{shown(default_cascade)} is not defined under [cascades]"
                f" (defined: {', '.join(sorted(cascades)) or 'none'})",
            )
        templates = {
            name: self.template(name, value, cascades)
            for name, value in self.table(raw.get("templates"), "templates").items()
        }
        state = self.state(self.table(raw.get("state"), "state"))
        return AppConfig(
            providers=providers,
            cascades=cascades,
            database_path=paths.resolve(db_path, self.base_dir)
            if db_path
            else data_dir() / "db.sqlite",
            failure_dir=paths.resolve(fail_dir, self.base_dir)
            if fail_dir
            else data_dir() / "failed_prompts",
            path=self.path,
            keyring=keyring,
            cooldown=self.cooldown(self.table(raw.get("cooldown"), "cooldown")),
            rules=self.rules(raw.get("rules"), "rules"),
            warnings=tuple(self.warnings),
            default_cascade=default_cascade,
            templates=templates,
            state=state,
            log=self.log(self.table(raw.get("log"), "log"), state),
        )

    def state(self, table: Mapping[str, Any]) -> StateConfig:
        self.check_keys(table, STATE_KEYS, "state.")
        return self.server(table, "state.", tuple(STATE_BACKENDS))

    def server(
        self, table: Mapping[str, Any], prefix: str, backends: tuple[str, ...]
    ) -> StateConfig:
        """A backend table's connection: `backend`, `url`, password sources, `timeout`."""
        backend = self.string(table, "backend", prefix) or "sqlite"
        if backend not in backends:
            raise self.fail(f"{prefix}backend", f"must be one of {', '.join(backends)}")
        url = self.string(table, "url", prefix)
        if backend != "sqlite":
            problem = _state_url_problem(url, STATE_BACKENDS[backend])
            if problem:
                raise self.fail(f"{prefix}url", problem)
        timeout = table.get("timeout", DEFAULT_STATE_TIMEOUT_S)
        if not _seconds(timeout):
            raise self.fail(f"{prefix}timeout", f"must be {_SECONDS}")
        return StateConfig(
            backend=backend,
            url=url,
            password_env=self.string(table, "password_env", prefix),
            password_keyring=self.string(table, "password_keyring", prefix),
            timeout_s=float(timeout),
            prefix=self.string(table, "prefix", prefix) or "llm-cascade",
        )

    def log(self, table: Mapping[str, Any], state: StateConfig) -> LogConfig:
        """`[log]`; without a url, a postgres log takes the `[state]` server, credentials and
        timeout (each key it sets itself wins)."""
        self.check_keys(table, LOG_KEYS, "log.")
        host = self.string(table, "host", "log.")
        if table.get("host") is not None and not host:
            raise self.fail("log.host", "must be a non-empty string")
        if (
            table.get("backend") == "postgres"
            and "url" not in table
            and state.backend == "postgres"
        ):
            inherited = {
                "url": state.url,
                "password_env": state.password_env,
                "password_keyring": state.password_keyring,
                "timeout": state.timeout_s,
            }
            table = {**{k: v for k, v in inherited.items() if v is not None}, **table}
        server = self.server(table, "log.", LOG_BACKENDS)
        return LogConfig(server if server.backend == "postgres" else None, host)

    def template(self, name: str, value: Any, cascades: Mapping[str, CascadeConfig]) -> Template:
        prefix = f"templates.{name}."
        table = self.table(value, f"templates.{name}")
        self.check_keys(table, TEMPLATE_KEYS, prefix)
        texts: dict[str, str | None] = {}
        for key in ("system", "prompt"):
            text = self.string(table, key, prefix)
            problem = syntax_problem(text) if text is not None else None
            if problem:
                raise self.fail(f"{prefix}{key}", problem)
            texts[key] = text
        cascade = self.string(table, "cascade", prefix)
        if cascade is not None and cascade not in cascades:
            raise self.fail(
                f"{prefix}cascade",
                f"{shown(cascade)} is not defined under [cascades]"
                f" (defined: {', '.join(sorted(cascades)) or 'none'})",
            )
        options = {k: table[k] for k in TEMPLATE_OPTION_KEYS if k in table}
        return Template(
            name,
            texts["system"],
            texts["prompt"],
            cascade,
            self.options(options, prefix),
            self.template_schema(table.get("schema"), f"{prefix}schema"),
        )

    def template_schema(self, value: Any, key: str) -> str | None:
        """A template's `schema`: a table (the schema itself), inline JSON, or a file path
        (taken from the config's folder). It is checked as a schema when a run uses it."""
        if value is None:
            return None
        if isinstance(value, Mapping):
            return json.dumps(value)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a JSON Schema: a table, inline JSON or a file path")
        if value.lstrip().startswith("{"):
            return value
        return str(paths.resolve(value, self.base_dir))

    def cooldown(self, table: Mapping[str, Any]) -> CooldownPolicy:
        self.check_keys(table, {"base", "cap", "long"}, "cooldown.")
        values: dict[str, float] = {}
        for key in ("base", "cap", "long"):
            if key in table:
                if not _seconds(table[key]):
                    raise self.fail(f"cooldown.{key}", f"must be {_SECONDS}")
                values[f"{key}_s"] = float(table[key])
        return CooldownPolicy(**values)

    def rules(self, value: Any, prefix: str) -> tuple[Rule, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(prefix, "must be an array of tables ([[...rules]])")
        out = []
        for i, raw in enumerate(value):
            where = f"{prefix}[{i}]"
            rule_table = self.table(raw, where)
            self.check_keys(rule_table, set(RULE_KEYS), f"{where}.")
            try:
                out.append(parse_rule(rule_table, f"{prefix}[{i}]"))
            except RuleError as exc:
                raise self.fail(where, str(exc)) from None
        return tuple(out)

    def options(self, table: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, (check, expected) in _OPTION_CHECKS.items():
            if key in table:
                if not check(table[key]):
                    raise self.fail(f"{prefix}{key}", f"must be {expected}")
                value = table[key]
                if key == "headers":
                    for name, text in value.items():
                        problem = _header_problem(name, text)
                        if problem:
                            raise self.fail(f"{prefix}headers.{name}", problem)
                    redaction.register(*value.values())  # an api-key header is a key too
                if key in (
                    "timeout",
                    "connect_timeout",
                    "first_byte_timeout",
                    "max_wait",
                    "idle_timeout",
                ):
                    value = float(value)
                if key == "supports":
                    value = frozenset(value)
                values[key] = value
        return values

    def provider(self, name: str, value: Any, prefix: str | None = None) -> ProviderConfig:
        prefix = prefix or f"providers.{name}."
        table = self.table(value, prefix.rstrip("."))
        if "/" in name or not name.strip():
            raise self.fail(prefix.rstrip("."), "a provider name must not be empty or contain '/'")
        type_name = table.get("type")
        expected = f"expected {', '.join(PROVIDER_TYPES)}"
        if type_name is None:
            raise self.fail(f"{prefix}type", f"is missing ({expected})")
        if not isinstance(type_name, str):
            raise self.fail(f"{prefix}type", f"must be a string ({expected})")
        if type_name not in PROVIDER_TYPES:
            raise self.fail(f"{prefix}type", f"unknown {shown(type_name)} ({expected})")
        self.check_keys(
            table, PROVIDER_KEYS | OPTION_KEYS | PROVIDER_TYPES[type_name].settings, prefix
        )
        api_key_env = self.string(table, "api_key_env", prefix)
        if api_key_env is not None and not _ENV_NAME.match(api_key_env):
            # Often the key itself pasted in the wrong field: never repeat the value.
            raise self.fail(
                f"{prefix}api_key_env",
                "must be the name of an environment variable (letters, digits and _, e.g."
                " OPENAI_API_KEY), not the key itself; the value is not shown",
            )
        base_url = self.string(table, "base_url", prefix)
        problem = _url_problem(base_url) if base_url is not None else None
        if problem:
            raise self.fail(f"{prefix}base_url", problem)
        kind = PROVIDER_TYPES[type_name]
        if base_url is None and not kind.default_base_url:
            raise self.fail(f"{prefix}base_url", f"is required for type {type_name}")
        return ProviderConfig(
            name=name,
            type=type_name,
            api_key_service=self.string(table, "api_key_service", prefix),
            api_key_env=api_key_env,
            base_url=base_url.rstrip("/") if base_url else None,
            options=Options(supports=kind.supports).merged(self.options(table, prefix)),
            rules=self.rules(table.get("rules"), f"{prefix}rules"),
            api_version=self.setting(table, "api_version", prefix),
            region=self.setting(table, "region", prefix),
        )

    def setting(self, table: Mapping[str, Any], key: str, prefix: str) -> str | None:
        """A type's own provider key (`api_version`, `region`): one word it puts in a URL."""
        value = self.string(table, key, prefix)
        if value is not None and not _SETTING.match(value):
            raise self.fail(f"{prefix}{key}", "must be letters, digits, '.', '_' and '-' only")
        return value

    def cascade(
        self, name: str, value: Any, providers: Mapping[str, ProviderConfig]
    ) -> CascadeConfig:
        prefix = f"cascades.{name}"
        table = self.table(value, prefix)
        self.check_keys(table, CASCADE_KEYS, f"{prefix}.")
        entries = table.get("entries")
        if not isinstance(entries, list):
            raise self.fail(f"{prefix}.entries", "is missing or not an array of {provider, model}")
        if not entries:
            raise self.fail(f"{prefix}.entries", "is empty; list at least one {provider, model}")
        deadline = table.get("deadline")
        if deadline is not None and not _seconds(deadline):
            raise self.fail(f"{prefix}.deadline", f"must be {_SECONDS}")
        on_midstream = table.get("on_midstream")
        if on_midstream is not None and on_midstream not in MIDSTREAM:
            raise self.fail(
                f"{prefix}.on_midstream",
                f"must be one of {', '.join(MIDSTREAM)}, got {shown(on_midstream)}",
            )
        strategy = table.get("strategy", "ordered")
        if strategy not in STRATEGIES:
            raise self.fail(
                f"{prefix}.strategy",
                f"must be one of {', '.join(STRATEGIES)}, got {shown(strategy)}",
            )
        parsed = tuple(
            self.entry(f"{prefix}.entries[{i}]", raw, providers) for i, raw in enumerate(entries)
        )
        hedge_after = table.get("hedge_after")
        if hedge_after is not None and not _seconds(hedge_after):
            raise self.fail(f"{prefix}.hedge_after", f"must be {_SECONDS}")
        if hedge_after is not None and deadline is not None and hedge_after > deadline:
            raise self.fail(
                f"{prefix}.hedge_after",
                f"is {hedge_after:g} s, longer than the cascade's deadline ({deadline:g} s):"
                " no hedge could ever start",
            )
        max_hedges = table.get("max_hedges", 1)
        if isinstance(max_hedges, bool) or not isinstance(max_hedges, int) or max_hedges < 1:
            raise self.fail(f"{prefix}.max_hedges", "must be an integer of 1 or more")
        mirror = table.get("mirror", [])
        if not isinstance(mirror, list):
            raise self.fail(f"{prefix}.mirror", "must be an array of {provider, model}")
        mirror_save = table.get("mirror_save", False)
        if not isinstance(mirror_save, bool):
            raise self.fail(f"{prefix}.mirror_save", "must be true or false")
        mirror_wait = table.get("mirror_wait", 5.0)
        if not _seconds(mirror_wait, zero_ok=True):
            raise self.fail(f"{prefix}.mirror_wait", f"must be 0 or {_SECONDS}")
        return CascadeConfig(
            name,
            parsed,
            float(deadline) if deadline is not None else None,
            on_midstream,
            strategy=strategy,
            score_weights=self.score_weights(table.get("score_weights"), f"{prefix}.score_weights"),
            budget=self.budget(table.get("budget"), f"{prefix}.budget"),
            hedge_after=float(hedge_after) if hedge_after is not None else None,
            max_hedges=max_hedges,
            mirror=tuple(
                self.entry(f"{prefix}.mirror[{i}]", raw, providers) for i, raw in enumerate(mirror)
            ),
            mirror_save=mirror_save,
            mirror_wait=float(mirror_wait),
        )

    def score_weights(self, value: Any, key: str) -> Mapping[str, float]:
        if value is None:
            return DEFAULT_SCORE_WEIGHTS
        table = self.table(value, key)
        self.check_keys(table, set(SCORE_PARTS), f"{key}.")
        weights = dict.fromkeys(SCORE_PARTS, 0.0)
        for part in SCORE_PARTS:
            if part in table:
                if not _is_number(table[part]) or table[part] < 0:
                    raise self.fail(f"{key}.{part}", "must be a number of 0 or more")
                weights[part] = float(table[part])
        if sum(weights.values()) <= 0:
            raise self.fail(key, f"must give some weight to {', '.join(SCORE_PARTS)}: all are 0")
        return weights

    def budget(self, value: Any, key: str) -> Limits | None:
        if value is None:
            return None
        table = self.table(value, key)
        self.check_keys(table, set(LIMIT_KEYS), f"{key}.")
        limits = {}
        for name in LIMIT_KEYS:
            if name in table:
                if not _is_number(table[name]) or table[name] <= 0:
                    raise self.fail(f"{key}.{name}", "must be a number above 0")
                limits[name] = float(table[name])
        return Limits(**limits)

    def price(self, value: Any, key: str) -> Price | None:
        if value is None:
            return None
        table = self.table(value, key)
        self.check_keys(table, {"input", "output"}, f"{key}.")
        values = {}
        for part in ("input", "output"):
            if part not in table:
                raise self.fail(f"{key}.{part}", "is missing (currency units per million tokens)")
            if not _is_number(table[part]) or table[part] < 0:
                raise self.fail(f"{key}.{part}", "must be a number of 0 or more")
            values[part] = float(table[part])
        return Price(**values)

    def entry(self, where: str, raw: Any, providers: Mapping[str, ProviderConfig]) -> CascadeEntry:
        table = self.table(raw, where)
        self.check_keys(table, ENTRY_KEYS | OPTION_KEYS, f"{where}.")
        provider = table.get("provider")
        if not isinstance(provider, str):
            raise self.fail(f"{where}.provider", "is missing or not a string")
        if provider not in providers:
            defined = ", ".join(sorted(providers)) or "none"
            raise self.fail(
                f"{where}.provider",
                f"{shown(provider)} is not defined under [providers] (defined: {defined})",
            )
        model = table.get("model")
        problem = model_problem(model)
        if problem:
            raise self.fail(f"{where}.model", problem)
        assert isinstance(model, str)
        options = providers[provider].options.merged(self.options(table, f"{where}."))
        weight = table.get("weight", 1.0)
        if not _is_number(weight) or weight <= 0:
            raise self.fail(f"{where}.weight", "must be a number above 0")
        retry_with = self.table(table.get("retry_with"), f"{where}.retry_with")
        self.check_keys(retry_with, OPTION_KEYS, f"{where}.retry_with.")
        return CascadeEntry(
            provider,
            model.strip(),
            options,
            weight=float(weight),
            price=self.price(table.get("price"), f"{where}.price"),
            budget=self.budget(table.get("budget"), f"{where}.budget"),
            retry_with=self.options(retry_with, f"{where}.retry_with."),
        )


# --- entries given outside a file ----------------------------------------------------------


def type_provider(type_name: str) -> ProviderConfig:
    """A provider named after its type, with the type's defaults: its vendor's base URL, the
    key from the keyring (username: the type name) or the vendor's variable (OPENAI_API_KEY...)."""
    return ProviderConfig(
        name=type_name,
        type=type_name,
        options=Options(supports=PROVIDER_TYPES[type_name].supports),
    )


def parse_entry(
    label: str, raw: Mapping[str, Any], providers: Mapping[str, ProviderConfig]
) -> CascadeEntry:
    """A cascade entry given outside a config file (`{provider, model, options...}`), checked
    exactly as one in `[cascades]` is; errors start with `label`."""
    parser = _Parser(None, label)
    entry = parser.entry("entry", raw, providers)
    for warning in parser.warnings:
        logger.warning("%s", warning)
    return entry
