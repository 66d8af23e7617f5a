"""What the gateway takes from the operator views: `/metrics` is the rendering of
`llm-cascade metrics`, the background health check is `llm-cascade health --update`.
The gateway has no renderer or prober of its own."""

from __future__ import annotations

from ..config import AppConfig

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(config: AppConfig, now: float) -> str:
    """The Prometheus text of `llm-cascade metrics --local`: each gateway exposes its own
    host's counters (a scraper sums the fleet; the fleet's log would count it once per
    gateway)."""
    from ..metrics import render

    return render(config, now, local=True)


async def check_health(config: AppConfig) -> None:
    """Probe every entry once, letting the verdicts move the breakers (`health --update`)."""
    from ..health import HealthOptions, Prober

    await Prober(config, HealthOptions(update=True)).run(None)
