"""llm-cascade: resilient LLM inference across an ordered list of providers.

The public API is imported lazily, so `import llm_cascade` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .cascade import Attempt, Cascade, CascadeResult, RunOptions, run_cascade
    from .config import AppConfig, load_config
    from .errors import (
        BudgetExceeded,
        CascadeFailed,
        ConfigError,
        ConversationError,
        LlmCascadeError,
        ProviderError,
        UsageError,
    )
    from .library import LLMCascade, Response
    from .types import (
        Conversation,
        LlmResponse,
        Message,
        OutputFormat,
        TextBlock,
        ToolCall,
        ToolDefinition,
    )

logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "Attempt": "cascade",
    "Cascade": "cascade",
    "CascadeResult": "cascade",
    "RunOptions": "cascade",
    "run_cascade": "cascade",
    "AppConfig": "config",
    "load_config": "config",
    "LLMCascade": "library",
    "Response": "library",
    "OutputFormat": "types",
    "BudgetExceeded": "errors",
    "CascadeFailed": "errors",
    "ConfigError": "errors",
    "ConversationError": "errors",
    "LlmCascadeError": "errors",
    "ProviderError": "errors",
    "UsageError": "errors",
    "Conversation": "types",
    "LlmResponse": "types",
    "Message": "types",
    "TextBlock": "types",
    "ToolCall": "types",
    "ToolDefinition": "types",
}

__all__ = [
    "AppConfig",
    "Attempt",
    "BudgetExceeded",
    "Cascade",
    "CascadeFailed",
    "CascadeResult",
    "ConfigError",
    "Conversation",
    "ConversationError",
    "LLMCascade",
    "LlmCascadeError",
    "LlmResponse",
    "Message",
    "OutputFormat",
    "ProviderError",
    "Response",
    "RunOptions",
    "TextBlock",
    "ToolCall",
    "ToolDefinition",
    "UsageError",
    "__version__",
    "load_config",
    "run_cascade",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llm_cascade' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
