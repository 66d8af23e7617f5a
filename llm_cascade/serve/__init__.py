"""`llm-cascade serve`: the vendors' own HTTP APIs in front of our cascades.

Requests in the OpenAI Chat Completions and Anthropic Messages formats become a `Conversation`
and `RunOptions` (`openai_wire`, `anthropic_wire`: pure translations, no I/O); the engine's
results and stream events become the vendor's JSON or SSE events again. `app` is the thin ASGI
application around them and `runner` starts it on uvicorn. Only `llm-cascade serve` imports
this package: the rest of the CLI never pays for the server stack (the `serve` extra).
"""
