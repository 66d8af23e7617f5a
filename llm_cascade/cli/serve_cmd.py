"""`llm-cascade serve`: the OpenAI- and Anthropic-compatible gateway (the `serve` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import ConfigOption

MAX_BODY_DEFAULT = 32 << 20


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; not loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=0, max=65535)] = 8787,
    workers: Annotated[
        int, typer.Option("--workers", help="Processes; they share state via the database.", min=1)
    ] = 1,
    config: ConfigOption = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="LLM_CASCADE_SERVE_TOKEN",
            show_envvar=True,
            help="Clients must send it (Bearer, x-api-key). Prefer the env var: argv is public.",
            show_default=False,
        ),
    ] = None,
    max_body: Annotated[
        int, typer.Option("--max-body", help="Largest request body, in bytes.", min=1)
    ] = MAX_BODY_DEFAULT,
    grace: Annotated[
        float,
        typer.Option("--grace", help="Seconds in-flight requests get to finish on SIGTERM.", min=0),
    ] = 30.0,
    health_interval: Annotated[
        float | None,
        typer.Option(
            "--health-interval",
            help="Probe every entry this often, in seconds (default: off).",
            min=1,
            show_default=False,
        ),
    ] = None,
    write_timeout: Annotated[
        float,
        typer.Option(
            "--write-timeout", help="Drop a client that stops reading for this long.", min=0.1
        ),
    ] = 30.0,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Allow browser calls from this origin (repeatable).",
            show_default=False,
        ),
    ] = None,
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="One JSON object per log line.")
    ] = False,
) -> None:
    """Serve the cascades over the OpenAI and Anthropic APIs, with a web dashboard.

    Each cascade is a model name. Stop with Ctrl-C or SIGTERM.
    """
    from ..config import load_config
    from ..errors import UsageError
    from ..serve.app import Settings
    from ..serve.runner import serve as run_server

    for value, name in ((grace, "--grace"), (health_interval, "--health-interval")):
        if value is not None and value != value:  # nan passes typer's range check
            raise UsageError(f"{name}: expected a number of seconds, got nan")
    app_config = load_config(config)  # a bad config is exit 2 here, not in every worker
    settings = Settings(
        config_path=str(app_config.path) if app_config.path else None,
        token=token or None,
        max_body_bytes=max_body,
        cors_origins=tuple(cors_origin or ()),
        health_interval_s=health_interval,
        write_timeout_s=write_timeout,
        json_logs=json_logs,
    )
    run_server(settings, host=host, port=port, workers=workers, grace_s=grace)
