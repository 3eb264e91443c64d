"""The plant board: `GET /`, one page for a phone or a control-room screen.

Every PLC with its collector state, every metric as a trend against its baseline band, the
open drift responses and what they wait for, recent PLC writes, work orders and messages.

Browser authentication is a token login form that sets the token in an HttpOnly,
SameSite=Strict cookie: a browser's EventSource (the live updates) cannot send an
Authorization header, and a token in a URL would end in logs and the history. HttpOnly keeps
it from page scripts; SameSite=Strict keeps other sites' pages from riding on it. The board
only reads, and admits the same roles as every read endpoint (api/auth.py, READ). A bearer
token works too (scripts, the benchmark). Without a valid token the answer is the login page
with a 401, never data.

Live updates are server-sent events. One PostgreSQL listener per API process (`BoardHub`)
wakes on the ingest writer's `samples_written` NOTIFY (at most a few times a second), reads
what changed once, and fans the same encoded event out to every open browser: the database
sees one reader per API process, not one per browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import asyncpg
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError

from activities.cmms import work_order_label
from api.auth import READ, AccessGuard
from factorylm.api_tokens import ApiClient
from factorylm.channels import SAMPLES_CHANNEL
from factorylm.plant import Plant, load_plant
from factorylm.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

COOKIE = "flm_board"
COOKIE_MAX_AGE_S = 12 * 3600  # one shift; then the token is asked for again
RANGES: dict[str, int] = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_RANGE = "15m"
# A chart is at most a control-room screen wide; one point per two pixels is all it can show.
MIN_WIDTH, MAX_WIDTH, DEFAULT_WIDTH = 60, 4000, 600
RECENT_ROWS = 12
MAX_TOKEN_CHARS = 512
# Live points: the hub sends 1 s buckets of the last few seconds on every tick, so a browser
# that missed a tick (a reconnect, a slow flush) is filled in by the next one.
LIVE_BUCKET_S = 1
LIVE_LOOKBACK_S = 4
# Ticks: at most every half second (a busy writer flushes more often), at least every two
# (collector ages, approval countdowns and work orders change without new samples too).
MIN_TICK_S = 0.5
IDLE_TICK_S = 2.0
# uvicorn's graceful shutdown waits for every open response: an event stream ends by itself
# after this long and the browser reconnects (`retry`), so an open board never holds the API's
# shutdown for longer than this.
STREAM_LIFETIME_S = 10.0
STREAM_RETRY_MS = 300
# Without browsers the listener stops after this long (longer than a reconnect takes).
HUB_IDLE_STOP_S = 20.0
SUBSCRIBER_QUEUE = 8  # events a slow browser may lag behind before it is dropped (it reconnects)
TEMPORAL_TIMEOUT = timedelta(seconds=2)
RESPONSES_CACHE_S = 2.0
FRESH_LOOKBACK_S = 30
MAX_OPEN_RESPONSES = 25
# The approval code is for the approver's eyes; a viewer's board never shows it.
_CODE = re.compile(r"\s*\(code \d{4}\)")

STATIC_DIR = Path(__file__).parent / "board"
_STATIC: dict[str, tuple[Path, str]] = {
    "board.js": (STATIC_DIR / "board.js", "text/javascript"),
    "board.css": (STATIC_DIR / "board.css", "text/css"),
    # The charting library, installed from the npm registry by `make setup` (package.json).
    "uplot.js": (PROJECT_ROOT / "node_modules/uplot/dist/uPlot.iife.min.js", "text/javascript"),
    "uplot.css": (PROJECT_ROOT / "node_modules/uplot/dist/uPlot.min.css", "text/css"),
}
# No external requests, no inline script: everything the page loads comes from this API.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _epoch(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def _clip(text: str | None, limit: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- pages -------------------------------------------------------------------------------------
def _page(
    title: str, body: str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    doc = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="/board/static/uplot.css">
<link rel="stylesheet" href="/board/static/board.css">
</head>
{body}
</html>
"""
    return Response(
        doc, status, media_type="text/html; charset=utf-8", headers={**_HEADERS, **(headers or {})}
    )


def login_page(message: str, status: int = 401) -> Response:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<body class="login">
<main>
<h1>FactoryLM plant board</h1>
{note}
<form method="post" action="/board/login">
<label for="token">API token (viewer, approver or admin)</label>
<input id="token" name="token" type="password" autocomplete="current-password" required
       maxlength="{MAX_TOKEN_CHARS}" autofocus>
<button type="submit">Open the board</button>
</form>
<p class="hint">Make one with <code>factorylm tokens add NAME --role viewer</code>.</p>
</main>
</body>"""
    return _page("FactoryLM — sign in", body, status)


def board_page(plant: Plant, client: ApiClient) -> Response:
    ranges = "".join(
        f'<option value="{k}"{" selected" if k == DEFAULT_RANGE else ""}>{k}</option>'
        for k in RANGES
    )
    rows = "".join(
        f'<tr data-plc="{html.escape(p.id)}"><th scope="row">{html.escape(p.id)}</th>'
        f"<td>{html.escape(str(p.protocol))}</td>"
        f'<td class="state">…</td><td class="age">…</td></tr>'
        for p in plant.plcs
    )
    body = f"""<body>
<header>
<h1>{html.escape(plant.name)} <span class="sub">plant board</span></h1>
<div class="controls">
<label for="range">Trend range</label>
<select id="range">{ranges}</select>
<span id="live" class="live" role="status" aria-live="polite">connecting…</span>
<span class="who">{html.escape(client.name)} ({html.escape(str(client.role))})</span>
<form method="post" action="/board/logout"><button type="submit">Sign out</button></form>
</div>
</header>
<main>
<section aria-labelledby="h-plcs" class="plcs">
<h2 id="h-plcs">PLCs</h2>
<table id="plcs">
<thead><tr><th scope="col">PLC</th><th scope="col">Protocol</th>
<th scope="col">Collector</th><th scope="col">Last sample</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</section>
<section aria-labelledby="h-responses" class="responses">
<h2 id="h-responses">Open drift responses</h2>
<div id="responses" aria-live="polite"><p class="empty">none</p></div>
</section>
<section aria-labelledby="h-trends" class="trends">
<h2 id="h-trends">Trends</h2>
<p class="legend">line: value · dashed: baseline mean · band: ±threshold · red: drift alarm ·
orange: hard limit</p>
<div id="trends"></div>
</section>
<section aria-labelledby="h-writes">
<h2 id="h-writes">Recent PLC writes</h2>
<div id="writes"><p class="empty">none</p></div>
</section>
<section aria-labelledby="h-wos">
<h2 id="h-wos">Recent work orders</h2>
<div id="work-orders"><p class="empty">none</p></div>
</section>
<section aria-labelledby="h-messages" class="wide">
<h2 id="h-messages">Messages sent</h2>
<div id="messages"><p class="empty">none</p></div>
</section>
</main>
<script src="/board/static/uplot.js"></script>
<script src="/board/static/board.js"></script>
</body>"""
    return _page(f"{plant.name} — FactoryLM board", body)


# -- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    plc_id: str
    metric: str
    unit: str
    mean: float | None
    std: float | None
    threshold_sigma: float
    min: float | None
    max: float | None


class BoardData:
    """What the board shows, read with a few bounded queries (each list has a LIMIT, each
    trend is bucketed in the database to the chart's width)."""

    def __init__(
        self, settings: Settings, client: Client, pool: asyncpg.Pool, plant: Plant
    ) -> None:
        self._settings = settings
        self._client = client
        self._pool = pool
        self.plant = plant
        self._plc_ids = [p.id for p in plant.plcs]
        self._responses: tuple[float, list[tuple[Any, str]]] | None = None
        self._message_state: tuple[float, str | None] | None = None

    # -- trends ------------------------------------------------------------------------------
    async def metrics(self) -> list[MetricInfo]:
        # Baselines computed by the baseline workflow win over the plant file's starting ones.
        rows = await self._pool.fetch(
            """SELECT DISTINCT ON (plc_id, metric) plc_id, metric, mean, std
               FROM baselines WHERE plc_id = ANY($1::text[])
               ORDER BY plc_id, metric, computed_at DESC, id DESC""",
            self._plc_ids,
        )
        learned = {(r["plc_id"], r["metric"]): r for r in rows}
        out: list[MetricInfo] = []
        for plc in self.plant.plcs:
            for m in plc.metrics:
                row = learned.get((plc.id, m.name))
                mean = _finite(row["mean"]) if row else (m.baseline.mean if m.baseline else None)
                std = _finite(row["std"]) if row else (m.baseline.std if m.baseline else None)
                out.append(
                    MetricInfo(
                        plc.id,
                        m.name,
                        m.unit,
                        mean,
                        std,
                        m.drift_threshold_sigma or self._settings.drift_threshold_sigma,
                        m.min,
                        m.max,
                    )
                )
        return out

    async def _rollups_until(self) -> Any:
        """How far the 1-minute rollups reach, or None where there are none (yet)."""
        if await self._pool.fetchval("SELECT to_regclass('data_lifecycle') IS NULL"):
            return None
        return await self._pool.fetchval("SELECT rolled_up_to FROM data_lifecycle LIMIT 1")

    async def series(self, range_s: int, width: int) -> dict[str, Any]:
        points = max(MIN_WIDTH, min(width, MAX_WIDTH)) // 2
        step = max(1, math.ceil(range_s / points))
        span = timedelta(seconds=range_s)
        bucket = timedelta(seconds=step)
        acc: dict[tuple[str, str], dict[float, list[float]]] = {}
        raw_from = None
        if step >= 60:
            rolled = await self._rollups_until()
            if rolled is not None:
                # Minutes already rolled up come from the rollups (one row per minute instead
                # of hundreds of samples); the rest from the raw samples.
                rows = await self._pool.fetch(
                    """SELECT plc_id, metric,
                              extract(epoch FROM time_bucket($1::interval, bucket))::float8 AS t,
                              sum(mean * samples) AS s, sum(samples)::float8 AS n
                       FROM samples_1m
                       WHERE bucket > now() - $2::interval AND bucket < $3
                         AND plc_id = ANY($4::text[])
                       GROUP BY 1, 2, 3""",
                    bucket,
                    span,
                    rolled,
                    self._plc_ids,
                )
                for r in rows:
                    acc.setdefault((r["plc_id"], r["metric"]), {})[r["t"]] = [r["s"], r["n"]]
                raw_from = rolled
        rows = await self._pool.fetch(
            """SELECT plc_id, metric,
                      extract(epoch FROM time_bucket($1::interval, time))::float8 AS t,
                      sum(value) AS s, count(*)::float8 AS n
               FROM samples
               WHERE time > greatest(now() - $2::interval, coalesce($3::timestamptz, '-infinity'::timestamptz))
                 AND plc_id = ANY($4::text[])
               GROUP BY 1, 2, 3""",
            bucket,
            span,
            raw_from,
            self._plc_ids,
        )
        for r in rows:
            cell = acc.setdefault((r["plc_id"], r["metric"]), {}).setdefault(r["t"], [0.0, 0.0])
            cell[0] += r["s"]
            cell[1] += r["n"]
        out = []
        for info in await self.metrics():
            cells = acc.get((info.plc_id, info.metric), {})
            ts = sorted(cells)
            values = [_finite(cells[t][0] / cells[t][1]) for t in ts]
            out.append(
                {
                    "plc": info.plc_id,
                    "metric": info.metric,
                    "unit": info.unit,
                    "mean": info.mean,
                    "std": info.std,
                    "threshold_sigma": info.threshold_sigma,
                    "min": info.min,
                    "max": info.max,
                    "t": ts,
                    "v": values,
                }
            )
        return {"range_s": range_s, "step_s": step, "series": out}

    async def markers(self, range_s: int) -> list[dict[str, Any]]:
        """Where drift alarms fired: the ingest's outbox holds every alarm (delivered to
        Temporal or not yet), the drift events the ones a workflow recorded."""
        rows = await self._pool.fetch(
            """SELECT plc_id, metric, t, max(sigma) AS sigma, workflow_id FROM (
                   SELECT alert->>'plc_id' AS plc_id, alert->>'metric' AS metric,
                          extract(epoch FROM detected_at)::float8 AS t,
                          (alert->>'sigma')::float8 AS sigma, workflow_id
                   FROM alarm_outbox WHERE detected_at > now() - $1::interval
                   UNION ALL
                   SELECT plc_id, metric, extract(epoch FROM detected_at)::float8,
                          magnitude_sigma, workflow_id
                   FROM drift_events WHERE detected_at > now() - $1::interval
               ) alarms GROUP BY plc_id, metric, t, workflow_id ORDER BY t DESC LIMIT 200""",
            timedelta(seconds=range_s),
        )
        return [
            {
                "plc": r["plc_id"],
                "metric": r["metric"],
                "t": r["t"],
                "sigma": _finite(r["sigma"]),
                "workflow_id": r["workflow_id"],
            }
            for r in rows
        ]

    async def live_points(self) -> list[list[Any]]:
        rows = await self._pool.fetch(
            """SELECT plc_id, metric,
                      extract(epoch FROM time_bucket($1::interval, time))::float8 AS t,
                      avg(value) AS v
               FROM samples WHERE time > now() - $2::interval AND plc_id = ANY($3::text[])
               GROUP BY 1, 2, 3 ORDER BY 3""",
            timedelta(seconds=LIVE_BUCKET_S),
            timedelta(seconds=LIVE_LOOKBACK_S),
            self._plc_ids,
        )
        return [[r["plc_id"], r["metric"], r["t"], _finite(r["v"])] for r in rows]

    # -- status ------------------------------------------------------------------------------
    def history_link(self, workflow_id: str, run_id: str | None = None) -> str:
        s = self._settings
        base = f"{s.temporal_ui_url}/namespaces/{s.temporal_namespace}/workflows/{workflow_id}"
        return f"{base}/{run_id}/history" if run_id else base

    async def collectors(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            """SELECT plc_id, protocol, state, consecutive_errors, last_error,
                      extract(epoch FROM now() - last_good_at)::float8 AS age
               FROM collector_status WHERE plc_id = ANY($1::text[])""",
            self._plc_ids,
        )
        by_id = {r["plc_id"]: r for r in rows}
        # The status row is written every few seconds; the samples table knows the last
        # sample to the poll (a short look-back on the time index, one row per PLC).
        fresh = await self._pool.fetch(
            """SELECT plc_id, extract(epoch FROM now() - max(time))::float8 AS age FROM samples
               WHERE time > now() - $1::interval AND plc_id = ANY($2::text[])
               GROUP BY plc_id""",
            timedelta(seconds=FRESH_LOOKBACK_S),
            self._plc_ids,
        )
        fresh_age = {r["plc_id"]: r["age"] for r in fresh}
        out = []
        for plc in self.plant.plcs:
            r = by_id.get(plc.id)
            out.append(
                {
                    "plc": plc.id,
                    "protocol": str(plc.protocol),
                    "state": r["state"] if r else "no collector",
                    "age_s": _finite(
                        min(
                            (
                                a
                                for a in (fresh_age.get(plc.id), r["age"] if r else None)
                                if a is not None
                            ),
                            default=None,
                        )
                    ),
                    "errors": r["consecutive_errors"] if r else 0,
                    "last_error": _clip(r["last_error"], 200) if r else "",
                }
            )
        return out

    async def responses(self) -> dict[str, Any]:
        """Running drift workflows from Temporal's visibility with their status queries, and
        what they wait for from the database."""
        try:
            running = await self._running()
        except (RPCError, TimeoutError) as exc:
            log.warning("board: Temporal unreachable: %s", exc)
            return {"items": [], "error": "Temporal is unreachable: open responses unknown"}
        return {"items": await self._open_responses(running), "error": None}

    async def _running(self) -> list[tuple[Any, str]]:
        """The Temporal part, cached briefly: every browser's update shares it, and the list
        and the queries are the dearest reads of a tick."""
        now = time.monotonic()
        if self._responses is not None and now - self._responses[0] < RESPONSES_CACHE_S:
            return self._responses[1]
        running = []
        async for wf in self._client.list_workflows(
            "WorkflowType = 'DriftResponseWorkflow' AND ExecutionStatus = 'Running'",
            limit=MAX_OPEN_RESPONSES,
            rpc_timeout=TEMPORAL_TIMEOUT,
        ):
            running.append(wf)
        statuses = await asyncio.gather(
            *(self._status_of(wf.id, wf.run_id) for wf in running), return_exceptions=True
        )
        found = [
            (wf, _CODE.sub("", st) if isinstance(st, str) else "running")
            for wf, st in zip(running, statuses, strict=True)
        ]
        self._responses = (now, found)
        return found

    async def _open_responses(self, found: list[tuple[Any, str]]) -> list[dict[str, Any]]:
        if not found:
            return []
        running = [wf for wf, _ in found]
        ids = [wf.id for wf in running]
        pending = await self._pool.fetch(
            """SELECT DISTINCT ON (workflow_id) workflow_id, run_id, recipient, action,
                      extract(epoch FROM requested_at)::float8 AS requested_at,
                      extract(epoch FROM expires_at)::float8 AS expires_at
               FROM approval_requests WHERE status = 'pending' AND workflow_id = ANY($1::text[])
               ORDER BY workflow_id, requested_at DESC""",
            ids,
        )
        asks = {r["workflow_id"]: r for r in pending}
        events = await self._pool.fetch(
            """SELECT DISTINCT ON (workflow_id) workflow_id, plc_id, metric, magnitude_sigma,
                      extract(epoch FROM detected_at)::float8 AS detected_at
               FROM drift_events WHERE workflow_id = ANY($1::text[])
               ORDER BY workflow_id, detected_at DESC""",
            ids,
        )
        event_of = {r["workflow_id"]: r for r in events}
        # The agents' summary travels in the approval request the people got.
        notes = await self._pool.fetch(
            """SELECT DISTINCT ON (workflow_id) workflow_id, body FROM notifications
               WHERE workflow_id = ANY($1::text[]) AND dedup_key LIKE 'approval/%'
               ORDER BY workflow_id, sent_at DESC""",
            ids,
        )
        summary_of = {r["workflow_id"]: _agents_summary(r["body"]) for r in notes}
        # A work order is keyed by the run that opened it (workflows/drift_response.py).
        orders = await self._pool.fetch(
            "SELECT id, external_key FROM work_orders WHERE external_key = ANY($1::text[])",
            [f"{wf.id}/{wf.run_id}" for wf in running],
        )
        order_of = {r["external_key"]: work_order_label(r["id"]) for r in orders}
        items = []
        for wf, status in found:
            ask = asks.get(wf.id)
            event = event_of.get(wf.id)
            ask_run = ask["run_id"] if ask else None
            expires = ask["expires_at"] if ask else None
            if ask and expires is None:
                expires = ask["requested_at"] + self._settings.approval_timeout_s
            items.append(
                {
                    "workflow_id": wf.id,
                    "run_id": wf.run_id,
                    "started_at": _epoch(wf.start_time),
                    # The query is cached a moment; the database says when the ask is over.
                    "status": "approval answered"
                    if ask is None and status.startswith("waiting for")
                    else status,
                    "plc": event["plc_id"] if event else None,
                    "metric": event["metric"] if event else None,
                    "sigma": _finite(event["magnitude_sigma"]) if event else None,
                    "waiting_for": ask["recipient"] if ask else None,
                    "action": ask["action"] if ask else None,
                    "expires_at": expires if ask_run in (None, "", wf.run_id) else None,
                    "summary": summary_of.get(wf.id, ""),
                    "work_order": order_of.get(f"{wf.id}/{wf.run_id}"),
                    "history": self.history_link(wf.id, wf.run_id),
                }
            )
        return items

    async def _status_of(self, workflow_id: str, run_id: str | None) -> str:
        handle = self._client.get_workflow_handle(workflow_id, run_id=run_id)
        status: str = await handle.query("status", rpc_timeout=TEMPORAL_TIMEOUT)
        return status

    async def _state_column(self) -> str | None:
        """Outbound messages may carry a delivery state (a later migration): shown when the
        column is there."""
        now = time.monotonic()
        if self._message_state is not None and now - self._message_state[0] < 60:
            return self._message_state[1]
        cols = await self._pool.fetch(
            """SELECT column_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'notifications'"""
        )
        names = {c["column_name"] for c in cols}
        found = next(
            (c for c in ("delivery_state", "delivery_status", "status", "state") if c in names),
            None,
        )
        self._message_state = (now, found)
        return found

    async def recent(self) -> dict[str, Any]:
        writes = await self._pool.fetch(
            """SELECT action, plc_id, target, approved_by, value_before, value_written,
                      value_read_back, status, workflow_id,
                      extract(epoch FROM requested_at)::float8 AS at
               FROM plc_writes ORDER BY requested_at DESC LIMIT $1""",
            RECENT_ROWS,
        )
        orders = await self._pool.fetch(
            """SELECT id, external_key, title, priority, status, asset_id, description,
                      extract(epoch FROM created_at)::float8 AS at
               FROM work_orders ORDER BY created_at DESC, id DESC LIMIT $1""",
            RECENT_ROWS,
        )
        state = await self._state_column()
        # The column name comes from the catalog, among four fixed names: safe to interpolate.
        state_sql = f", {state}::text AS state" if state else ""
        messages = await self._pool.fetch(
            f"""SELECT channel, recipient, body, workflow_id{state_sql},
                       extract(epoch FROM sent_at)::float8 AS at
                FROM notifications ORDER BY sent_at DESC, id DESC LIMIT $1""",
            RECENT_ROWS,
        )
        return {
            "writes": [
                {
                    "at": r["at"],
                    "action": r["action"],
                    "plc": r["plc_id"],
                    "target": r["target"],
                    "by": r["approved_by"] or "auto",
                    "before": _finite(r["value_before"]),
                    "written": _finite(r["value_written"]),
                    "read_back": _finite(r["value_read_back"]),
                    "status": r["status"],
                    "workflow_id": r["workflow_id"],
                }
                for r in writes
            ],
            "work_orders": [self._work_order(r) for r in orders],
            "messages": [
                {
                    "at": r["at"],
                    "channel": r["channel"],
                    "to": r["recipient"],
                    "body": _clip(r["body"], 280),
                    "workflow_id": r["workflow_id"],
                    **({"state": r["state"]} if state else {}),
                }
                for r in messages
            ],
            "message_state": state is not None,
        }

    def _work_order(self, r: asyncpg.Record) -> dict[str, Any]:
        wf, _, run = str(r["external_key"]).partition("/")
        return {
            "id": work_order_label(r["id"]),
            "at": r["at"],
            "title": r["title"],
            "priority": r["priority"],
            "status": r["status"],
            "asset": r["asset_id"],
            "description": _clip(r["description"], 600),
            "history": self.history_link(wf, run or None) if wf.startswith("drift-") else None,
        }

    async def status(self) -> dict[str, Any]:
        return {
            "now": time.time(),
            "collectors": await self.collectors(),
            "responses": await self.responses(),
            **(await self.recent()),
        }

    async def initial(self, range_s: int, width: int) -> dict[str, Any]:
        return {
            "plant": self.plant.name,
            **(await self.series(range_s, width)),
            "markers": await self.markers(range_s),
            **(await self.status()),
        }


def _agents_summary(body: str) -> str:
    for line in body.splitlines():
        if line.startswith("Agents ("):
            return _clip(line, 600)
    return ""


# -- live updates ------------------------------------------------------------------------------
class BoardHub:
    """One LISTEN connection and one reader per API process; every browser gets the same
    encoded event. Started by the first browser, stopped a while after the last one left."""

    def __init__(self, settings: Settings, data: BoardData) -> None:
        self._settings = settings
        self._data = data
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_event: bytes | None = None
        self.ticks = 0
        self.notifications = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        if self._last_event is not None:
            queue.put_nowait(self._last_event)  # a reconnecting browser is current at once
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="board-hub")
        self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._subscribers.discard(queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def _notified(self, *_args: object) -> None:
        self.notifications += 1
        self._wake.set()

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        idle_since: float | None = None
        last_tick = 0.0
        try:
            while True:
                if conn is None or conn.is_closed():
                    try:
                        conn = await asyncpg.connect(self._settings.pg_dsn, timeout=5)
                        await conn.add_listener(SAMPLES_CHANNEL, self._notified)
                    except (OSError, asyncpg.PostgresError) as exc:
                        log.warning("board: cannot listen for samples (%s); ticking on time", exc)
                        conn = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_TICK_S)
                self._wake.clear()
                if not self._subscribers:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > HUB_IDLE_STOP_S:
                        return
                    continue
                idle_since = None
                # A rate limit, not a poll: a writer flushing many times a second is read at
                # most twice a second for all browsers together.
                wait = MIN_TICK_S - (time.monotonic() - last_tick)
                if wait > 0:
                    await asyncio.sleep(wait)
                last_tick = time.monotonic()
                try:
                    event = await self.build_event()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("board: update failed: %s", exc)
                    continue
                self.publish(event)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def build_event(self) -> bytes:
        payload = {
            "points": await self._data.live_points(),
            "markers": await self._data.markers(LIVE_LOOKBACK_S * 15),
            **(await self._data.status()),
        }
        self.ticks += 1
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        return f"event: update\ndata: {data}\n\n".encode()

    def publish(self, event: bytes) -> None:
        self._last_event = event
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A browser this far behind gets nothing more on this stream: its EventSource
                # reconnects and starts from the latest event.
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)


# -- routes ------------------------------------------------------------------------------------
class BoardRoutes:
    def __init__(
        self, settings: Settings, client: Client, pool: asyncpg.Pool, guard: AccessGuard
    ) -> None:
        self._settings = settings
        self._guard = guard
        self._plant: Plant | None = None
        self._data: BoardData | None = None
        self._hub: BoardHub | None = None
        self._client = client
        self._pool = pool
        self._secure = settings.public_url.startswith("https://")

    @property
    def data(self) -> BoardData:
        """Loaded on first use: an API without a readable plant file still serves the rest."""
        if self._data is None:
            self._plant = load_plant(self._settings.plant_file)
            self._data = BoardData(self._settings, self._client, self._pool, self._plant)
        return self._data

    @property
    def hub(self) -> BoardHub:
        if self._hub is None:
            self._hub = BoardHub(self._settings, self.data)
        return self._hub

    async def _client_of(self, request: Request) -> ApiClient | None:
        found = await self._guard.client(request)
        if found is not None:
            return found
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > MAX_TOKEN_CHARS:
            return None
        return await self._check_token(cookie)

    async def _check_token(self, token: str) -> ApiClient | None:
        # The same check as a bearer header, so a cookie admits exactly who a header would.
        try:
            raw = b"Bearer " + token.encode("latin-1")
        except UnicodeEncodeError:
            return None
        return await self._guard.client(
            Request({"type": "http", "headers": [(b"authorization", raw)]})
        )

    async def _reader(self, request: Request) -> ApiClient | Response:
        client = await self._client_of(request)
        if client is None:
            return JSONResponse({"error": "sign in at / with a viewer token"}, 401)
        if client.role not in READ:
            return JSONResponse({"error": f"token {client.name!r} may not read the board"}, 403)
        return client

    async def page(self, request: Request) -> Response:
        client = await self._client_of(request)
        if client is None:
            return login_page("" if COOKIE not in request.cookies else "Please sign in again.")
        if client.role not in READ:
            return login_page(
                f"Token {client.name!r} ({client.role}) may not read the board: use a viewer, "
                "approver or admin token.",
                403,
            )
        return board_page(self.data.plant, client)

    async def login(self, request: Request) -> Response:
        body = (await request.body())[: 4 * MAX_TOKEN_CHARS]
        try:
            form = parse_qs(body.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            return login_page("The form could not be read.", 400)
        token = (form.get("token") or [""])[0].strip()
        client = await self._check_token(token) if 0 < len(token) <= MAX_TOKEN_CHARS else None
        if client is None:
            return login_page("That token was not accepted.")
        if client.role not in READ:
            return login_page(f"Token {client.name!r} ({client.role}) may not read the board.", 403)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self._secure,
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def board_data(self, request: Request) -> Response:
        who = await self._reader(request)
        if isinstance(who, Response):
            return who
        key = request.query_params.get("range", DEFAULT_RANGE)
        if key not in RANGES:
            return JSONResponse({"error": f"range is one of {', '.join(RANGES)}"}, 400)
        try:
            width = int(request.query_params.get("width", DEFAULT_WIDTH))
        except ValueError:
            return JSONResponse({"error": "width is a number of pixels"}, 400)
        payload = await self.data.initial(RANGES[key], width)
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    async def events(self, request: Request) -> Response:
        who = await self._reader(request)
        if isinstance(who, Response):
            return who
        hub = self.hub
        queue = hub.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            deadline = time.monotonic() + STREAM_LIFETIME_S
            try:
                yield f"retry: {STREAM_RETRY_MS}\n\n".encode()
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        event = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    if event is None:
                        break
                    yield event
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def static(self, request: Request) -> Response:
        entry = _STATIC.get(request.path_params["name"])
        if entry is None:
            return PlainTextResponse("not found", 404)
        path, media = entry
        if not path.is_file():
            log.error("board: %s is missing (run `make setup`)", path)
            return PlainTextResponse(f"{path.name} is not installed: run make setup", 503)
        return FileResponse(path, media_type=media, headers={"cache-control": "max-age=300"})

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page),
            Route("/board/login", self.login, methods=["POST"]),
            Route("/board/logout", self.logout, methods=["POST"]),
            Route("/board/data", self.board_data),
            Route("/board/events", self.events),
            Route("/board/static/{name}", self.static),
        ]
