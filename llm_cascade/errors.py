"""The exception tree. Every message says what failed and, where it can, how to fix it.

LlmCascadeError               base; the CLI catches only this
├── ConfigError               the config file is missing or invalid     -> exit 2
├── UsageError                caller mistake (unknown cascade, bad input) -> exit 2
│   └── ConversationError     a conversation file does not match the schema
├── ProviderError             one attempt at one entry failed; the rules decide what next
└── CascadeFailed             no entry answered; the prompt was saved    -> exit 1
    └── BudgetExceeded        the cascade spent its budget; nothing sent -> exit 1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .attempts import Attempt
    from .routing import Route

ErrorKind = Literal[
    "http",  # a non-2xx status
    "timeout",  # connect, first-byte or total budget exceeded
    "connect",  # connection refused, DNS failure, TLS failure
    "transport",  # the connection broke before a full response arrived
    "invalid_response",  # 2xx whose body is not the JSON the protocol promises
    "empty_response",  # 2xx with no usable content, e.g. a safety block
    "response_too_large",  # 2xx whose decoded body passed max_response_bytes
    "missing_key",  # no API key found in the keyring or the environment
    "truncated",  # a 2xx stream that ended before the vendor's end marker
    "cancelled",  # the caller stopped the attempt (Ctrl-C, a deadline of its own): no verdict
    "invalid_output",  # 2xx whose answer is not the JSON (or not valid under the schema) asked for
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # stdout closed early by its reader, as a shell reports SIGPIPE


class LlmCascadeError(Exception):
    """Base class of every error llm-cascade raises on purpose."""

    exit_code = EXIT_FAILED


class ConfigError(LlmCascadeError):
    """The configuration cannot be used; the message names the file and the key."""

    exit_code = EXIT_USAGE


class UsageError(LlmCascadeError):
    """The caller asked for something that cannot work (unknown cascade, empty prompt...)."""

    exit_code = EXIT_USAGE


class ConversationError(UsageError):
    """A conversation document does not match the schema; `where` is a JSON path."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


class ProviderError(LlmCascadeError):
    """One request to one entry failed.

    It carries facts only (kind, status, vendor code, Retry-After); `rules.decide` turns them
    into a decision. `message` is short and never holds a secret.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(message)

    def __str__(self) -> str:
        return self.display()

    def display(self) -> str:
        """Render the error as the original did (`HTTP 503: oops`, `Request failed: ...`)."""
        if self.kind == "http":
            return f"HTTP {self.status}: {self.message}"
        if self.kind in ("timeout", "connect", "transport", "truncated"):
            return f"Request failed: {self.message}"
        if self.kind == "invalid_response":
            return f"Response parse error: {self.message}"
        if self.kind == "invalid_output":
            return f"Invalid output: {self.message}"
        return self.message


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    """Where a failed prompt went, or why it could not be written."""

    path: str | None
    error: str | None = None


class CascadeFailed(LlmCascadeError):
    """No entry answered. `attempts` says what each entry did; `saved` where the prompt is."""

    exit_code = EXIT_FAILED
    outcome = "failed"  # what `run --json` calls it

    def __init__(
        self,
        cascade_name: str,
        message: str,
        *,
        attempts: list[Attempt] | None = None,
        saved: SaveOutcome | None = None,
        retry_after_s: float | None = None,
        route: Route | None = None,
    ) -> None:
        self.cascade_name = cascade_name
        self.message = message  # attempts.failure_summary of the attempts
        self.attempts = attempts or []
        self.saved = saved or SaveOutcome(None, "not saved")
        self.retry_after_s = retry_after_s
        self.route = route  # how the cascade's strategy ordered the entries, if not `ordered`
        super().__init__(message)

    def __str__(self) -> str:
        return self.display()

    @property
    def failed_prompt_path(self) -> str | None:
        """The absolute path of the saved conversation, if it was written."""
        return self.saved.path

    def display(self) -> str:
        """The original's two-line text, with an honest second line."""
        head = f"All providers in cascade '{self.cascade_name}' failed: {self.message}"
        if self.saved.path:
            return f"{head}\nFailed prompt persisted to: {self.saved.path}"
        return f"{head}\nFailed prompt could not be persisted: {self.saved.error}"


class BudgetExceeded(CascadeFailed):
    """The cascade spent its token or cost budget: nothing was sent; the prompt was saved.
    `retry_after_s` is when the budget resets."""

    outcome = "budget_exceeded"

    def display(self) -> str:
        if self.saved.path:
            return f"{self.message}\nFailed prompt persisted to: {self.saved.path}"
        return f"{self.message}\nFailed prompt could not be persisted: {self.saved.error}"
