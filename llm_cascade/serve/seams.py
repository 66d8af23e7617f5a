"""What the gateway takes from features that live elsewhere, each behind one function.

`/metrics` is the rendering of `llm-cascade metrics` (`llm_cascade.metrics.render`) and the
background health check is `llm-cascade health` (`llm_cascade.health.Prober`): the gateway
has no renderer or prober of its own. In a build without them, `/metrics` answers 501 and
`--health-interval` is refused, each saying so.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config import AppConfig

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _feature(name: str) -> Any | None:
    """The package module `name`, or None in a build that does not have it."""
    try:
        return importlib.import_module(f"llm_cascade.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"llm_cascade.{name}":
            raise  # the module is there but something it needs is not: a real error
        return None


def render_metrics(config: AppConfig, now: float) -> str | None:
    """The Prometheus text of `llm-cascade metrics`, or None where that command is missing."""
    metrics = _feature("metrics")
    return None if metrics is None else str(metrics.render(config, now))


def has_health() -> bool:
    return _feature("health") is not None


async def check_health(config: AppConfig) -> None:
    """Probe every entry once, letting the verdicts move the breakers (`health --update`)."""
    health = _feature("health")
    if health is None:
        return
    await health.Prober(config, health.HealthOptions(update=True)).run(None)
