"""200 concurrent requests through the gateway while 30 % of upstream requests fail: every one
is answered, or gets a 503 whose prompt is on disk for `failed retry`. Nothing is lost."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from llm_cascade.simulator import Fail, Reply

from .gateway import gateway
from .support import saved_files, write_config

REQUESTS = 200


@pytest.mark.slow
def test_200_concurrent_requests_with_30_percent_failures_are_all_answered_or_saved(tmp_path, sim):
    rng = random.Random(15)
    for model in ("a", "b", "c"):  # each upstream request fails with a chance of 30 %
        sim.script(model, *[Fail(500) if rng.random() < 0.3 else Reply("ok") for _ in range(400)])
    # A flaky upstream that is not down: its failures set no cooldown, so every request sees
    # the 30 % (instead of the first failure taking the entry out for everyone).
    rules = [{"name": "flaky", "status": 500, "action": "failover", "cooldown": "none"}]
    cfg = write_config(tmp_path, sim, {"fast": ["a", "b", "c"]}, extra={"rules": rules})

    async def ask(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {
            "model": "fast",
            "stream": i % 2 == 1,
            "messages": [{"role": "user", "content": f"q{i}"}],
        }
        return await client.post("/v1/chat/completions", json=body)

    async def burst(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=REQUESTS)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(ask(client, i) for i in range(REQUESTS)))

    with gateway(cfg) as gw:
        replies = asyncio.run(burst(gw.url))
    answered = [r for r in replies if r.status_code == 200]
    failed = [r for r in replies if r.status_code == 503]
    assert len(answered) + len(failed) == REQUESTS, {r.status_code for r in replies}
    assert all(r.text.startswith("data: ") or r.json()["choices"] for r in answered)
    assert all(
        r.text.rstrip().endswith("data: [DONE]") for r in answered if r.text.startswith("data")
    )
    saved = {p.stem: json.loads(p.read_text()) for p in saved_files(tmp_path / "failed")}
    assert set(saved) == {r.headers["x-llm-cascade-saved-prompt"] for r in failed}
    assert all(s["status"] == "failed" and len(s["errors"]) == 3 for s in saved.values())
    assert sim.count("a") == REQUESTS
