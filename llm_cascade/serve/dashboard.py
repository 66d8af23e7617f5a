"""The gateway's web dashboard: what it shows (`snapshot`) and the page that shows it (`page`).

Per entry: its breaker and cooldown countdown, success rate and latency over the newest
attempts of the last hour; the newest attempts; the saved prompts waiting for `failed retry`.
Entry keys, outcomes, statuses and rule names only: never prompt text, error text (a vendor
may quote the prompt back) or a key. The page is one HTML document with its script and style
inline (no external assets, no build step); its first data is embedded, so it shows at once,
and it refreshes itself from `/dashboard.json`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..clock import parse_ts
from ..config import AppConfig
from ..failures import FailureStore
from ..store import EntryState, Store

WINDOW_S = 3600.0  # success rate and latency: attempts of the last hour...
WINDOW_ROWS = 2000  # ...among the newest rows, so a refresh costs the same on any log
RECENT_ROWS = 25
PENDING_SHOWN = 20
TRIED = frozenset({"ok", "failed", "retrying", "truncated"})
REFRESH_S = 2


@dataclass(frozen=True, slots=True)
class _Window:
    attempts: int
    ok: int
    latencies: list[int]

    def rate(self) -> float | None:
        return self.ok / self.attempts if self.attempts else None

    def p50(self) -> int | None:
        ordered = sorted(self.latencies)
        return ordered[len(ordered) // 2] if ordered else None


def _windows(rows: Iterable[tuple[str, str, str, int]], since: float) -> dict[str, _Window]:
    counts: dict[str, tuple[int, int, list[int]]] = {}
    for stamp, key, outcome, latency in rows:
        if outcome not in TRIED or (parse_ts(stamp) or 0.0) < since:
            continue
        tried, ok, latencies = counts.setdefault(key, (0, 0, []))
        if outcome == "ok":
            latencies.append(latency)
        counts[key] = (tried + 1, ok + (outcome == "ok"), latencies)
    return {key: _Window(*value) for key, value in counts.items()}


def _entry(state: EntryState, window: _Window | None, now: float) -> dict[str, Any]:
    left = state.retry_after(now)
    return {
        "entry": state.key,
        "state": state.phase(now),
        "failures": state.failures,
        "cooldown_left_s": round(left, 1) if left is not None else None,
        "reason": state.reason,  # a rule name
        "attempts": window.attempts if window else 0,
        "success_rate": window.rate() if window else None,
        "p50_ms": window.p50() if window else None,
    }


def snapshot(config: AppConfig, store: Store | None, now: float) -> dict[str, Any]:
    """Everything the page shows, read fresh; a database that cannot be read is a `problem`."""
    keys = list(dict.fromkeys(e.key for c in config.cascades.values() for e in c.entries))
    states = {key: EntryState(key) for key in keys}
    windows: dict[str, _Window] = {}
    recent: list[dict[str, Any]] = []
    problem = None
    if store is not None:
        try:
            states.update(store.states(keys))
            windows = _windows(store.recent_outcomes(WINDOW_ROWS), now - WINDOW_S)
            recent = [
                {
                    "time": row.timestamp,
                    "cascade": row.cascade_name,
                    "entry": row.provider_model,
                    "outcome": row.outcome,
                    "status": row.http_status,
                    "latency_ms": row.latency_ms,
                    "rule": row.rule,
                }
                for row in reversed(store.recent_attempts(RECENT_ROWS))
            ]
        except sqlite3.Error as exc:
            problem = f"cannot read the database: {exc}"
    saved = FailureStore(config.failure_dir).list()
    pending = [
        {"id": s.id, "cascade": s.cascade_name, "status": s.status, "saved": s.timestamp}
        for s in reversed(saved[-PENDING_SHOWN:])
    ]
    return {
        "now": now,
        "refresh_s": REFRESH_S,
        "cascades": [
            {"name": c.name, "entries": [e.key for e in c.entries]}
            for c in config.cascades.values()
        ],
        "entries": [_entry(states[key], windows.get(key), now) for key in keys],
        "recent": recent,
        "pending": {"count": len(saved), "newest": pending},
        "problem": problem,
    }


def page(data: dict[str, Any]) -> bytes:
    """The dashboard's HTML with `data` embedded (`<` escaped, so no text can end the script)."""
    embedded = json.dumps(data).replace("<", "\\u003c")
    return _PAGE.replace("__DATA__", embedded).encode()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llm-cascade serve</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.2rem}h2{font-size:1rem;margin-top:1.5rem}
table{border-collapse:collapse;background:#fff}
td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
th{background:#eee}.num{text-align:right;font-variant-numeric:tabular-nums}
.closed{color:#176b17}.open{color:#b00020;font-weight:bold}.half-open,.probing{color:#a15c00}
.ok{color:#176b17}.failed,.truncated{color:#b00020}#problem{color:#b00020}
#updated{color:#666;font-size:.85rem}
</style></head><body>
<h1>llm-cascade serve</h1>
<div id="updated"></div><div id="problem"></div>
<h2>Entries</h2>
<table id="entries"><thead><tr><th>Entry</th><th>Breaker</th><th>Cooldown</th>
<th>Failures</th><th>Rule</th><th>Attempts (1 h)</th><th>Success</th><th>p50 latency</th>
</tr></thead><tbody></tbody></table>
<h2>Recent attempts</h2>
<table id="recent"><thead><tr><th>Time (UTC)</th><th>Cascade</th><th>Entry</th><th>Outcome</th>
<th>Status</th><th>Latency</th><th>Rule</th></tr></thead><tbody></tbody></table>
<h2>Pending failed prompts: <span id="pending-count">0</span></h2>
<table id="pending"><thead><tr><th>Id</th><th>Cascade</th><th>Status</th><th>Saved</th></tr>
</thead><tbody></tbody></table>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
let data = JSON.parse(document.getElementById("data").textContent);
let fetchedAt = Date.now();
function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
}
function countdown(seconds) {
  if (seconds === null) return "";
  const left = Math.max(0, Math.round(seconds - (Date.now() - fetchedAt) / 1000));
  const m = Math.floor(left / 60), s = left % 60;
  return (m ? m + " min " : "") + s + " s";
}
function fill(id, rows, draw) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of rows) draw(body.insertRow(), item);
}
function render() {
  fill("entries", data.entries, (r, e) => {
    r.dataset.entry = e.entry;
    cell(r, e.entry); cell(r, e.state, e.state);
    cell(r, countdown(e.cooldown_left_s), "num countdown"); cell(r, e.failures, "num");
    cell(r, e.reason); cell(r, e.attempts, "num");
    cell(r, e.success_rate === null ? "" : Math.round(e.success_rate * 100) + " %", "num");
    cell(r, e.p50_ms === null ? "" : e.p50_ms + " ms", "num");
  });
  fill("recent", data.recent, (r, a) => {
    cell(r, a.time.slice(0, 19).replace("T", " ")); cell(r, a.cascade); cell(r, a.entry);
    cell(r, a.outcome, a.outcome); cell(r, a.status, "num");
    cell(r, a.latency_ms + " ms", "num"); cell(r, a.rule);
  });
  document.getElementById("pending-count").textContent = data.pending.count;
  fill("pending", data.pending.newest, (r, p) => {
    cell(r, p.id); cell(r, p.cascade); cell(r, p.status); cell(r, p.saved);
  });
  document.getElementById("problem").textContent = data.problem || "";
  document.getElementById("updated").textContent =
    "updated " + new Date(fetchedAt).toLocaleTimeString();
}
function tick() {
  document.querySelectorAll("#entries tbody tr").forEach((row, i) => {
    row.querySelector(".countdown").textContent = countdown(data.entries[i].cooldown_left_s);
  });
}
async function refresh() {
  try {
    const reply = await fetch("dashboard.json", {cache: "no-store"});
    if (reply.ok) { data = await reply.json(); fetchedAt = Date.now(); render(); }
  } catch (e) { /* the gateway restarts: keep the last view */ }
}
render();
setInterval(tick, 1000);
setInterval(refresh, data.refresh_s * 1000);
</script></body></html>
"""
