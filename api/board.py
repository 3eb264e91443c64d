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
wakes on the ingest writer's `samples_written` NOTIFY (at most twice a second), reads what
changed once, keeps the last 16 minutes of 1 s buckets in memory (`TrendCache`, which also
serves the default 15 min view) and fans the same encoded event out to every open browser:
the database sees one reader per API process, not one per browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import html
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import asyncpg
import numpy as np
import orjson
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
from api.serving import stopping
from factorylm.api_tokens import ApiClient
from factorylm.channels import SAMPLES_CHANNEL
from factorylm.plant import Plant, PlantConfigError, load_plant
from factorylm.priority import run_idle
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
# Live points: on a writer's notify the hub reads the 1 s buckets from the batch's oldest
# sample on (a late commit lands in its own bucket), and the last few seconds of them at least
# every IDLE_TICK_S (a batch whose notify was lost); it sends only the buckets that are new or
# changed.
LIVE_BUCKET_S = 1
LIVE_LOOKBACK_S = 3
# Ticks: on each notify, one at a time (notifies during a tick make one more), at most ten a
# second (several ingest writers), at least every two (collector ages, approval countdowns and
# work orders change without new samples too).
MIN_TICK_S = 0.1
IDLE_TICK_S = 2.0
# An event stream lives until the server stops (api/serving.py `stopping`) or the browser
# leaves; its token is checked again this often.
TOKEN_RECHECK_S = 30.0
STREAM_RETRY_MS = 300
# Without browsers the listener stops after this long (longer than a reconnect takes).
HUB_IDLE_STOP_S = 20.0
SUBSCRIBER_QUEUE = 8  # events a slow browser may lag behind before it is dropped (it reconnects)
TEMPORAL_TIMEOUT = timedelta(seconds=1)
RESPONSES_CACHE_S = 2.0
# Collector states, responses, writes, work orders and messages change at human pace: in an
# update every this often (a browser's ages and countdowns tick on between).
STATUS_EVERY_S = 1.5
# Browsers loading the same view this close together share one encoding of it, and a stream's
# first event carries the seconds since. A 200-PLC page's 15 minutes are about 10 ms of numpy
# on cores the ingest's polls share: in bench board_p99_ms (a page loaded twice a second) the
# ingest's p99 poll lateness was x1.6 with the board open when computed every second, x1.1
# when never, x1.25 at 5 s.
PAGE_MEMO_S = 5.0
METRICS_CACHE_S = 5.0  # the baseline band of a page: at most this much older than the table
PRIME_WAIT_S = 30.0  # past this the first page reads the database itself
FRESH_LOOKBACK_S = 5
MAX_OPEN_RESPONSES = 25
# The approval code is for the approver's eyes; a viewer's board never shows it.
_CODE = re.compile(r"\s*\(code \d{4}\)")

T = TypeVar("T")


# A page's heavy work (its trends out of the hub's memory, its gzip: about 20 ms of CPU for a
# 200-PLC plant) runs on one thread at SCHED_IDLE: on a host the board shares with the
# collectors it takes only CPU no poll wants, and on a saturated host the board slows before
# the polls do. Both release the GIL for their array and compression work.
_BUILDER = ThreadPoolExecutor(1, "board-build", initializer=run_idle)


async def _in_builder(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_BUILDER, fn, *args)


STATIC_DIR = Path(__file__).parent / "board"


def _uplot_dir() -> Path:
    """The charting library, installed from the npm registry (package.json): by `make setup`
    in the checkout, by the image's build into its working directory (Dockerfile)."""
    for root in (PROJECT_ROOT, Path.cwd()):
        if (root / "node_modules/uplot/dist").is_dir():
            return root / "node_modules/uplot/dist"
    return PROJECT_ROOT / "node_modules/uplot/dist"  # missing: the route says so


_UPLOT = _uplot_dir()
_STATIC: dict[str, tuple[Path, str]] = {
    "board.js": (STATIC_DIR / "board.js", "text/javascript"),
    "board.css": (STATIC_DIR / "board.css", "text/css"),
    "uplot.js": (_UPLOT / "uPlot.iife.min.js", "text/javascript"),
    "uplot.css": (_UPLOT / "uPlot.min.css", "text/css"),
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
<div class="table-wrap"><table id="plcs">
<thead><tr><th scope="col">PLC</th><th scope="col">Protocol</th>
<th scope="col">Collector</th><th scope="col">Last sample</th></tr></thead>
<tbody>{rows}</tbody>
</table></div>
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
        self._responses: tuple[float, list[tuple[Any, str]] | BaseException] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._message_state: tuple[float, str] | None = None
        self._heads: tuple[float, list[tuple[tuple[str, str], bytes]]] | None = None

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

    async def heads(self) -> list[tuple[tuple[str, str], bytes]]:
        """Each series' description (unit, baseline band, limits) as JSON without its closing
        brace, in the page's order. Baselines are recomputed hours apart: read and encoded
        again at most every METRICS_CACHE_S, not for every page."""
        now = time.monotonic()
        if self._heads is not None and now - self._heads[0] < METRICS_CACHE_S:
            return self._heads[1]
        heads = [
            (
                (info.plc_id, info.metric),
                orjson.dumps(
                    {
                        "plc": info.plc_id,
                        "metric": info.metric,
                        "unit": info.unit,
                        "mean": info.mean,
                        "std": info.std,
                        "threshold_sigma": info.threshold_sigma,
                        "min": info.min,
                        "max": info.max,
                    }
                )[:-1],
            )
            for info in await self.metrics()
        ]
        self._heads = (now, heads)
        return heads

    async def series(self, range_s: int, width: int, cache: TrendCache | None = None) -> bytes:
        """Every metric's trend as JSON, bucketed to the chart's width: from the hub's memory
        (numpy, encoded by orjson) for the default view, else PostgreSQL averages the buckets
        and writes the arrays, so the API only splices bytes: a 200-PLC board is thousands
        of arrays, and encoding them one value at a time in Python would be most of the
        request's time."""
        points = max(MIN_WIDTH, min(width, MAX_WIDTH)) // 2
        step = max(1, math.ceil(range_s / points))
        span = timedelta(seconds=range_s)
        bucket = timedelta(seconds=step)
        # The grid every series shares: bucket i starts at t0 + i * step.
        now_s = int(time.time())
        t0 = ((now_s - range_s) // step) * step
        data: dict[tuple[str, str], bytes]
        if cache is not None and cache.covers(range_s, step):
            # In the builder thread: the event loop keeps serving the live updates meanwhile
            # (a torn read of a bucket being written is one stale value for one tick).
            window = await _in_builder(cache.window, range_s, step, t0, now_s)
            data = dict(zip(cache.keys, window, strict=True))
        else:
            data = await self._bucketed(span, bucket, t0, step)
        parts = [
            head + b',"data":' + data.get(k, b'{"i0":0,"v":[]}') + b"}"
            for k, head in await self.heads()
        ]
        return b'"range_s":%d,"step_s":%d,"t0":%d,"series":[%s]' % (
            range_s,
            step,
            t0,
            b",".join(parts),
        )

    async def _bucketed(
        self, span: timedelta, bucket: timedelta, t0: int, step: int
    ) -> dict[tuple[str, str], bytes]:
        rolled = await self._rollups_until() if step >= 60 else None
        # Minutes already rolled up come from the rollups (one row per minute instead of
        # hundreds of samples), the rest from the raw samples.
        rollup_cells = (
            """SELECT plc_id, metric, time_bucket($1::interval, bucket, $7::timestamptz) AS b,
                      sum(mean * samples) AS s, sum(samples)::float8 AS n
               FROM samples_1m
               WHERE bucket > now() - $2::interval AND bucket < $3 AND plc_id = ANY($4::text[])
               GROUP BY 1, 2, 3
               UNION ALL"""
            if rolled is not None
            else ""
        )
        rows = await self._pool.fetch(
            f"""WITH cells AS (
                    {rollup_cells}
                    SELECT plc_id, metric, time_bucket($1::interval, time, $7::timestamptz) AS b,
                           sum(value) AS s, count(*)::float8 AS n
                    FROM samples
                    WHERE time > greatest(now() - $2::interval,
                                          coalesce($3::timestamptz, '-infinity'::timestamptz))
                      AND plc_id = ANY($4::text[])
                      AND value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)
                    GROUP BY 1, 2, 3
                ), merged AS (
                    SELECT plc_id, metric, b, (sum(s) / sum(n))::real AS v
                    FROM cells GROUP BY 1, 2, 3
                )
                SELECT plc_id, metric, json_build_object(
                           'i', json_agg(round((extract(epoch FROM b) - $5) / $6)::int ORDER BY b),
                           'v', json_agg(v ORDER BY b))::text AS data
                FROM merged GROUP BY 1, 2""",
            bucket,
            span,
            rolled,
            self._plc_ids,
            float(t0),
            float(step),
            # Buckets counted from the Unix epoch, as the page's grid (t0 + i * step) and the
            # memory's are; TimescaleDB's default origin is a Monday in 2000.
            datetime(1970, 1, 1, tzinfo=UTC),
        )
        out = {}
        for r in rows:
            sparse = orjson.loads(r["data"])
            first = sparse["i"][0]
            dense: list[float | None] = [None] * (sparse["i"][-1] - first + 1)
            for i, v in zip(sparse["i"], sparse["v"], strict=True):
                dense[i - first] = v
            out[(r["plc_id"], r["metric"])] = b'{"i0":%d,"v":%s}' % (first, orjson.dumps(dense))
        return out

    async def markers(self, range_s: int) -> list[dict[str, Any]]:
        """Where drift alarms fired: the ingest's outbox holds every alarm (delivered to
        Temporal or not yet), the drift events the ones a workflow recorded."""
        rows = await self._pool.fetch(MARKERS_SQL, timedelta(seconds=range_s))
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

    def keys(self) -> list[tuple[str, str]]:
        return [(p.id, m.name) for p in self.plant.plcs for m in p.metrics]

    async def live_rows(self, since: float | None = None) -> list[asyncpg.Record]:
        """Every metric's 1 s buckets of the last few seconds, or from the bucket of `since`
        (the oldest sample the writers' notifies named) if that is later: a tick after one
        batch reads its second or two, not all LIVE_LOOKBACK_S of them."""
        start = None
        if since is not None:
            start = datetime.fromtimestamp(since // LIVE_BUCKET_S * LIVE_BUCKET_S, UTC)
        rows: list[asyncpg.Record] = await self._pool.fetch(
            """SELECT plc_id, metric, extract(epoch FROM time_bucket($1::interval, time))::int8 AS t,
                      avg(value) AS v
               FROM samples
               WHERE time >= greatest($4::timestamptz, now() - $2::interval)
                 AND plc_id = ANY($3::text[])
                 AND value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)
               GROUP BY 1, 2, 3 ORDER BY 3""",
            timedelta(seconds=LIVE_BUCKET_S),
            timedelta(seconds=LIVE_LOOKBACK_S),
            self._plc_ids,
            start,
        )
        return rows

    async def prime(self, cache: TrendCache) -> None:
        now_s = int(time.time())
        # Every sample with its second, one row per series: TrendCache.prime averages the
        # seconds. Grouping by the second in PostgreSQL sorts 16 minutes of a plant's samples
        # (three times as long for 200 PLCs).
        rows = await self._pool.fetch(
            """SELECT plc_id, metric,
                      array_agg(extract(epoch FROM time_bucket('1 s', time))::int8) AS t,
                      array_agg(value) AS v
               FROM samples
               WHERE time > now() - $1::interval AND plc_id = ANY($2::text[])
                 AND value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)
               GROUP BY 1, 2""",
            timedelta(seconds=TrendCache.SPAN_S),
            self._plc_ids,
        )
        cache.prime(now_s, rows)

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
        if running is None:
            return {"items": [], "error": None, "loading": True}
        return {"items": await self._open_responses(running), "error": None}

    async def _running(self) -> list[tuple[Any, str]] | None:
        """The Temporal part. Every browser's update shares it, and a query to a workflow
        whose worker is down waits for its timeout: refreshed in the background at most every
        RESPONSES_CACHE_S, the last answer served meanwhile. None before the first answer:
        a page does not wait for Temporal (seconds on a busy server) to show the plant, the
        next status update brings the responses."""
        stale = self._responses is None or (
            time.monotonic() - self._responses[0] >= RESPONSES_CACHE_S
        )
        if stale and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self._refresh_quietly())
        if self._responses is None:
            return None
        if isinstance(self._responses[1], BaseException):
            raise self._responses[1]
        return self._responses[1]

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(RPCError, TimeoutError):
            await self._refresh_running()

    async def _refresh_running(self) -> None:
        try:
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
        except (RPCError, TimeoutError) as exc:
            self._responses = (time.monotonic(), exc)
            raise
        found = [
            (wf, _CODE.sub("", st) if isinstance(st, str) else "running")
            for wf, st in zip(running, statuses, strict=True)
        ]
        self._responses = (time.monotonic(), found)

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

    async def _messages_table(self) -> str:
        """Where messages are read from: `outbound_messages` (one row per message to one
        address, with its delivery state from Twilio's callbacks) where that table exists,
        else `notifications`. Looked up once a minute."""
        now = time.monotonic()
        if self._message_state is not None and now - self._message_state[0] < 60:
            return self._message_state[1] or "notifications"
        found = await self._pool.fetchval("SELECT to_regclass('outbound_messages') IS NOT NULL")
        table = "outbound_messages" if found else "notifications"
        self._message_state = (now, table)
        return table

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
        table = await self._messages_table()
        delivery = table == "outbound_messages"
        # Both statements are fixed text: the table is one of two names chosen above.
        if delivery:
            messages = await self._pool.fetch(
                """SELECT channel, address AS recipient, body, workflow_id, state,
                          extract(epoch FROM created_at)::float8 AS at
                   FROM outbound_messages ORDER BY created_at DESC, id DESC LIMIT $1""",
                RECENT_ROWS,
            )
        else:
            messages = await self._pool.fetch(
                """SELECT channel, recipient, body, workflow_id,
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
                    **({"state": r["state"]} if delivery else {}),
                }
                for r in messages
            ],
            "message_state": delivery,
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
        # Side by side on the pool's connections: one round trip's wait instead of three.
        collectors, responses, recent = await asyncio.gather(
            self.collectors(), self.responses(), self.recent()
        )
        return {"now": time.time(), "collectors": collectors, "responses": responses, **recent}

    async def initial(
        self,
        range_s: int,
        width: int,
        cache: TrendCache | None = None,
        status: dict[str, Any] | None = None,
    ) -> bytes:
        """The page's data. `status`: the hub's latest status sections, when they are recent
        (the same the open browsers have), instead of reading them again."""
        series = await self.series(range_s, width, cache)
        rest = orjson.dumps(
            {
                "plant": self.plant.name,
                "markers": await self.markers(range_s),
                **(status if status is not None else await self.status()),
            }
        )
        return b"{" + series + b"," + rest[1:]


def _round6(values: np.ndarray) -> np.ndarray:
    """Six significant digits: what a trend can show, in half the JSON."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mag = np.where(values == 0, 1.0, 10.0 ** (5 - np.floor(np.log10(np.abs(values)))))
        # A value so small its scale overflows (subnormal) is kept as it is.
        return np.where(np.isfinite(mag), np.round(values * mag) / mag, values)


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _agents_summary(body: str) -> str:
    for line in body.splitlines():
        if line.startswith("Agents ("):
            return _clip(line, 600)
    return ""


# -- live updates ------------------------------------------------------------------------------
class TrendCache:
    """The last 16 minutes of every metric in 1 s buckets, in this API process's memory: the
    hub fills it from the rows it reads for the live updates anyway, so the default 15 min
    view is served without reading the samples table again. A ring of SPAN_S columns; a
    column holds the second its stamp says, or nothing."""

    SPAN_S = 960

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self.keys = keys
        self._index = {k: i for i, k in enumerate(keys)}
        self._values = np.full((len(keys), self.SPAN_S), np.nan)
        self._stamp = np.full(self.SPAN_S, -1, dtype=np.int64)
        self.primed = False

    def covers(self, range_s: int, step: int) -> bool:
        return self.primed and range_s + step < self.SPAN_S

    def _claim(self, sec: int) -> int | None:
        col = sec % self.SPAN_S
        if self._stamp[col] != sec:
            if self._stamp[col] > sec:
                return None  # older than the ring: gone
            self._values[:, col] = np.nan
            self._stamp[col] = sec
        return col

    def prime(self, now_s: int, rows: list[asyncpg.Record]) -> None:
        first = now_s - self.SPAN_S + 1
        secs = np.arange(first, now_s + 1, dtype=np.int64)
        self._stamp[secs % self.SPAN_S] = secs
        self._values[:] = np.nan
        for r in rows:
            i = self._index.get((r["plc_id"], r["metric"]))
            if i is None:
                continue
            t = np.asarray(r["t"], dtype=np.int64)
            v = np.asarray(r["v"], dtype=np.float64)
            keep = (t >= first) & (t <= now_s)
            cols = t[keep] % self.SPAN_S
            counts = np.bincount(cols, minlength=self.SPAN_S)
            sums = np.bincount(cols, weights=v[keep], minlength=self.SPAN_S)
            has = counts > 0
            self._values[i, has] = sums[has] / counts[has]
        self.primed = True

    def put(self, index: np.ndarray, secs: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Stores 1 s buckets (series index, second, value; one of each pair at most); which
        of them are news (new or changed buckets) as a mask, the rest browsers have already."""
        for sec in np.unique(secs).tolist():
            self._claim(sec)
        cols = secs % self.SPAN_S
        # A second older than the ring is gone; a NaN (no finite sample) is no value.
        news: np.ndarray = (self._stamp[cols] == secs) & ~np.isnan(values)
        news &= self._values[index, cols] != values
        self._values[index[news], cols[news]] = values[news]
        return news

    def recent(self, seconds: int) -> bytes:
        """The last `seconds` of every series, as the runs an update carries (`_encode_runs`)."""
        if not self.primed:
            return b"[]"
        newest = int(self._stamp.max())
        runs: list[tuple[int, int, np.ndarray]] = []
        for sec in range(newest - seconds + 1, newest + 1):
            col = sec % self.SPAN_S
            if self._stamp[col] != sec:
                continue
            column = self._values[:, col]
            index = np.flatnonzero(~np.isnan(column))
            runs.extend(_column_runs(sec, index, column[index]))
        return _encode_runs(runs)

    def window(self, range_s: int, step: int, t0: int, now_s: int) -> list[bytes]:
        """Each series' bucketed trend as {"i0": first bucket, "v": [...]} JSON."""
        secs = np.arange(t0, now_s + 1, dtype=np.int64)
        cols = secs % self.SPAN_S
        # The window's columns, padded with empty ones to whole buckets, copied by at most two
        # slices of the ring (it wraps once at most: the window is shorter than the ring).
        width = len(secs) + (-len(secs)) % step
        m = np.full((len(self.keys), width), np.nan)
        head = min(len(secs), self.SPAN_S - int(cols[0]))
        m[:, :head] = self._values[:, cols[0] : cols[0] + head]
        m[:, head : len(secs)] = self._values[:, : len(secs) - head]
        m[:, : len(secs)][:, self._stamp[cols] != secs] = np.nan
        cells = m.reshape(m.shape[0], -1, step)
        empty = np.isnan(cells)
        counts = step - np.count_nonzero(empty, axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(empty, 0.0, cells).sum(axis=2) / counts
        # C order: a row slice is then one contiguous block, which orjson encodes as is.
        means = np.ascontiguousarray(_round6(means))
        has = counts > 0
        first = np.where(has.any(axis=1), has.argmax(axis=1), 0)
        last = has.shape[1] - 1 - has[:, ::-1].argmax(axis=1)
        out = []
        for row, a, b, any_ in zip(
            means, first.tolist(), last.tolist(), has.any(axis=1).tolist(), strict=True
        ):
            if not any_:
                out.append(b'{"i0":0,"v":[]}')
                continue
            # An empty bucket (NaN) is a gap: orjson writes NaN as null.
            out.append(b'{"i0":%d,"v":%s}' % (a, orjson.dumps(row[a : b + 1], option=_NUMPY)))
        return out


def _column_runs(
    sec: int, index: np.ndarray, values: np.ndarray
) -> list[tuple[int, int, np.ndarray]]:
    """One second's points as runs of consecutive series indexes: [t, first index, values]."""
    if not len(index):
        return []
    cuts = np.flatnonzero(np.diff(index) != 1) + 1
    return [
        (sec, int(i[0]), v)
        for i, v in zip(np.split(index, cuts), np.split(values, cuts), strict=True)
    ]


def _encode_runs(runs: list[tuple[int, int, np.ndarray]]) -> bytes:
    """[[t, i0, [v, ...]], ...]: an update's points, the series i0, i0+1, ... at second t. A
    200-PLC plant's second is one run of 800 values, a third of the size of one
    [index, t, value] triple per point."""
    return orjson.dumps([[t, i0, np.ascontiguousarray(v)] for t, i0, v in runs], option=_NUMPY)


@dataclass
class _Page:
    """One encoding of a view's page data, and its gzip made when first asked for."""

    made: float
    body: bytes
    _gzip: asyncio.Future[bytes] | None = field(default=None, init=False, repr=False)

    async def gzipped(self) -> bytes:
        if self._gzip is None:
            # Level 1: a 200-PLC page (about 0.9 MB of JSON) in about 7 ms, to a third of it
            # or less; higher levels take several times as long for a few percent more.
            self._gzip = asyncio.ensure_future(_in_builder(_gzip1, self.body))
        # Shared by the browsers asking meanwhile: one leaving does not cancel it for others.
        return await asyncio.shield(self._gzip)


def _gzip1(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=1, mtime=0)


# Read on every live tick: both tables' detected_at indexes (migration 0026) keep it from
# scanning the plant's whole alarm history.
MARKERS_SQL = """SELECT plc_id, metric, t, max(sigma) AS sigma, workflow_id FROM (
    SELECT alert->>'plc_id' AS plc_id, alert->>'metric' AS metric,
           extract(epoch FROM detected_at)::float8 AS t,
           (alert->>'sigma')::float8 AS sigma, workflow_id
    FROM alarm_outbox WHERE detected_at > now() - $1::interval
    UNION ALL
    SELECT plc_id, metric, extract(epoch FROM detected_at)::float8, magnitude_sigma, workflow_id
    FROM drift_events WHERE detected_at > now() - $1::interval
) alarms GROUP BY plc_id, metric, t, workflow_id ORDER BY t DESC LIMIT 200"""


def _oldest(payload: str) -> float | None:
    """The oldest sample's time in a writer's notify ('<rows> <epoch s>'), if it is there and
    a finite number (anyone who may NOTIFY can send anything)."""
    parts = payload.split(" ", 2)
    if len(parts) < 2 or len(parts[1]) > 32:
        return None
    try:
        value = float(parts[1])
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


class BoardHub:
    """One LISTEN connection and one reader per API process; every browser gets the same
    encoded event, and the 15 min trends are served from the hub's memory (TrendCache).
    Started by the first browser, stopped a while after the last one left.

    An update carries what changed only: the points of new or changed 1 s buckets, and on
    a status tick the collector rows whose state changed, every PLC's age (one number
    each) and the other sections only where they differ from the last sent. The first event
    of a stream (the replay) carries all of the last status, so a browser that connects
    between two status ticks is as current as the others."""

    def __init__(self, settings: Settings, data: BoardData) -> None:
        self._settings = settings
        self._data = data
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._woke: float | None = None  # when the first notify since the last update came
        # The oldest sample the notifies since the last tick named, or a notify that named
        # none (another version's writer): the next tick reads from there, or all the lookback.
        self._since: float | None = None
        self._since_unknown = False
        self._whole_at = 0.0  # monotonic time of the last read of the whole lookback
        self._last_use = time.monotonic()
        self._status_at = 0.0
        self._status_task: asyncio.Task[None] | None = None
        self._published_at = 0.0
        self._markers: list[dict[str, Any]] = []
        # The last status ticked (monotonic time, sections), as the replay event's JSON, and
        # what the updates last sent of each section.
        self._status: tuple[float, dict[str, Any]] | None = None
        self._replay: bytes | None = None
        self._replay_points: bytes | None = None
        self._sent: dict[str, bytes] = {}
        self._sent_collectors: dict[str, bytes] = {}
        self.cache = TrendCache(data.keys())
        self._keys = {k: i for i, k in enumerate(self.cache.keys)}
        self._primed = asyncio.Event()
        self._pages: dict[tuple[int, int], _Page] = {}
        self.ticks = 0
        self.notifications = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _ensure_running(self) -> None:
        self._last_use = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="board-hub")

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        if self._replay is not None:
            # A connecting browser is current at once: the last status, and the last seconds
            # of points it may have missed since its page load. Encoded once per tick for all
            # who connect meanwhile.
            if self._replay_points is None:
                self._replay_points = self.cache.recent(
                    LIVE_LOOKBACK_S + math.ceil(PAGE_MEMO_S) + 1
                )
            queue.put_nowait(self._replay + b',"p":' + self._replay_points + b"}\n\n")
        self._subscribers.add(queue)
        self._ensure_running()
        if self._replay is None:
            # The first browser: an update at once. Later ones got the last status above and
            # must not wake the hub (many connecting browsers would make every notify wait
            # for the rate limit).
            self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._subscribers.discard(queue)
        self._last_use = time.monotonic()

    async def page_data(self, range_s: int, width: int, gzipped: bool = False) -> bytes:
        """The page's data, gzip-compressed if asked; browsers that load the same view within
        PAGE_MEMO_S share one encoding (and one compression) of it (what happened since
        reaches them with their first update, which carries the last seconds of points)."""
        self._ensure_running()
        if not self.cache.primed and range_s <= RANGES[DEFAULT_RANGE]:
            # The hub is reading the last 16 minutes into memory: wait for that one read
            # rather than run a second one of the same size beside it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._primed.wait(), PRIME_WAIT_S)
        now = time.monotonic()
        memo = self._pages.get((range_s, width))
        if memo is None or now - memo.made >= PAGE_MEMO_S or not self.cache.primed:
            memo = _Page(now, await self._page_body(range_s, width, now))
            if self.cache.primed:
                self._pages = {(range_s, width): memo} | {
                    k: v for k, v in self._pages.items() if now - v.made < PAGE_MEMO_S
                }
        return await memo.gzipped() if gzipped else memo.body

    async def _page_body(self, range_s: int, width: int, now: float) -> bytes:
        # With browsers open the hub reads the status sections every STATUS_EVERY_S (on the
        # first tick past it, at most IDLE_TICK_S later): the page gets those, what its first
        # update's replay carries too, rather than a second read.
        status = None
        if self._status is not None and now - self._status[0] < STATUS_EVERY_S + IDLE_TICK_S:
            status = self._status[1]
        return await self._data.initial(range_s, width, self.cache, status)

    async def close(self) -> None:
        """Stops the listener and ends every open stream (the API is stopping)."""
        for task in (self._status_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._status_task = self._task = None
        for queue in list(self._subscribers):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[bytes | None]) -> None:
        """The stream ends after what it has queued (None is its end)."""
        self._subscribers.discard(queue)
        if queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
        queue.put_nowait(None)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        oldest = _oldest(payload)
        if oldest is None:
            self._since_unknown = True
        elif self._since is None or oldest < self._since:
            self._since = oldest
        if self._woke is None:
            self._woke = time.time()
        self._wake.set()

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
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
                try:
                    if not self.cache.primed:
                        await self._data.prime(self.cache)
                        self._primed.set()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("board: cannot read the trends (%s)", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_TICK_S)
                self._wake.clear()
                if not self._subscribers and time.monotonic() - self._last_use > HUB_IDLE_STOP_S:
                    return
                # A rate limit, not a poll: a writer flushing many times a second is read at
                # most ten times a second for all browsers together.
                wait = MIN_TICK_S - (time.monotonic() - last_tick)
                if wait > 0:
                    await asyncio.sleep(wait)
                last_tick = time.monotonic()
                woke, self._woke = self._woke, None
                since, self._since = self._since, None
                unknown, self._since_unknown = self._since_unknown, False
                # The whole lookback at least every IDLE_TICK_S: a batch whose notify was lost
                # (committed, the NOTIFY then failed) still reaches the trends.
                if unknown or time.monotonic() - self._whole_at >= IDLE_TICK_S:
                    since = None
                if since is None:
                    self._whole_at = time.monotonic()
                try:
                    event = await self.tick(woke, since)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("board: update failed: %s", exc)
                    continue
                if event is not None:
                    self.publish(event)
        finally:
            # Stopped: the trends in memory stop being kept, so they are no longer served.
            self.cache.primed = False
            self._primed.clear()
            self._pages.clear()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def tick(self, woke: float | None = None, since: float | None = None) -> bytes | None:
        """Reads the new points once (into the cache) and, with browsers open, makes the one
        update they all get: the 1 s buckets that are new or changed, as runs [t, first
        series index, [values]] (indexes into the page's series list). `woke`: when the
        notify that asked for it arrived (the benchmark measures from there to each browser);
        `since`: the oldest sample the notifies named (None: the whole lookback).
        Every STATUS_EVERY_S it also starts reading the status sections, which go out as an
        event of their own when read (`_read_status`): the points wait for no status query."""
        if (
            self._subscribers
            and time.monotonic() - self._status_at >= STATUS_EVERY_S
            and (self._status_task is None or self._status_task.done())
        ):
            self._status_at = time.monotonic()
            self._status_task = asyncio.create_task(self._read_status())
        # One round trip's time for both: the pool has a connection for each.
        rows, markers = await asyncio.gather(
            self._data.live_rows(since),
            self._data.markers(LIVE_LOOKBACK_S * 15) if self._subscribers else _none(),
        )
        runs = self._store(rows)
        self.ticks += 1
        if not self._subscribers:
            return None
        payload: dict[str, Any] = {"woke": woke if woke is not None else time.time()}
        payload["now"] = time.time()
        marks = orjson.dumps(markers)
        fresh = marks != self._sent.get("markers")
        if fresh:
            payload["markers"] = markers
            self._sent["markers"] = marks
            self._markers = markers
            self._make_replay()
        if runs == b"[]" and not fresh and time.monotonic() - self._published_at < IDLE_TICK_S:
            # Nothing new (another plant's writer on the same database, say): no event, but
            # one at least every IDLE_TICK_S, which tells the browsers the stream is alive.
            return None
        payload["built"] = time.time()
        return b'event: update\ndata: %s,"p":%s}\n\n' % (orjson.dumps(payload)[:-1], runs)

    async def _read_status(self) -> None:
        """Reads the status sections and sends what changed of them at once: an event with
        "read" (when the read began, the benchmark measures from there) and no points."""
        read = time.time()
        try:
            status = await self._data.status()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("board: status read failed: %s", exc)
            return
        if not self._subscribers:
            return
        payload: dict[str, Any] = {"read": read, "now": time.time()}
        payload |= self._status_delta(status)
        self._status = (time.monotonic(), status)
        self._make_replay()
        payload["built"] = time.time()
        self.publish(b'event: update\ndata: %s,"p":[]}\n\n' % orjson.dumps(payload)[:-1])

    def _make_replay(self) -> None:
        """What a browser that connects gets first (no "woke": it is no update): everything
        the events so far told the others."""
        if self._status is None:
            return
        last = self._status[1]
        self._replay = (
            b"event: update\ndata: "
            + orjson.dumps({"markers": self._markers, **last, "ages": self._ages(last)})[:-1]
        )

    def _store(self, rows: list[asyncpg.Record]) -> bytes:
        """The live rows into the cache; the news among them as an update's runs."""
        found = [(self._keys.get((r["plc_id"], r["metric"])), r["t"], r["v"]) for r in rows]
        found = [f for f in found if f[0] is not None]
        if not found:
            return b"[]"
        index = np.fromiter((f[0] for f in found), np.int64, len(found))
        secs = np.fromiter((f[1] for f in found), np.int64, len(found))
        values = _round6(
            np.fromiter((np.nan if f[2] is None else f[2] for f in found), np.float64, len(found))
        )
        news = self.cache.put(index, secs, values)
        if not news.any():
            return b"[]"
        self._replay_points = None  # the replay's points: encoded again at the next connect
        index, secs, values = index[news], secs[news], values[news]
        order = np.lexsort((index, secs))
        index, secs, values = index[order], secs[order], values[order]
        runs: list[tuple[int, int, np.ndarray]] = []
        for sec in np.unique(secs).tolist():
            at = secs == sec
            runs.extend(_column_runs(sec, index[at], values[at]))
        return _encode_runs(runs)

    def _status_delta(self, status: dict[str, Any]) -> dict[str, Any]:
        """The status sections for an update: collector rows whose state changed, the
        ages of all, and responses and recent activity where they changed."""
        out: dict[str, Any] = {"ages": self._ages(status)}
        changed = []
        for c in status["collectors"]:
            mark = orjson.dumps([c["state"], c["errors"], c["last_error"]])
            if self._sent_collectors.get(c["plc"]) != mark:
                self._sent_collectors[c["plc"]] = mark
                changed.append(c)
        if changed:
            out["collectors"] = changed
        responses = orjson.dumps(status["responses"])
        if responses != self._sent.get("responses"):
            self._sent["responses"] = responses
            out["responses"] = status["responses"]
        recent = {k: status[k] for k in ("writes", "work_orders", "messages", "message_state")}
        encoded = orjson.dumps(recent)
        if encoded != self._sent.get("recent"):
            self._sent["recent"] = encoded
            out |= recent
        return out

    @staticmethod
    def _ages(status: dict[str, Any]) -> list[float | None]:
        """Each PLC's last sample age in the plant file's order (the page's table rows),
        to a tenth of a second as the board shows it."""
        return [None if c["age_s"] is None else round(c["age_s"], 1) for c in status["collectors"]]

    def publish(self, event: bytes) -> None:
        self._published_at = time.monotonic()
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A browser this far behind gets nothing more on this stream: its EventSource
                # reconnects and starts from the latest event.
                self._end(queue)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip: named or by `*`, with a q above 0 (a
    named gzip's q counts over the `*`'s)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(",")[:32]:
        name, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[name.strip()] = q
    return weights.get("gzip", weights.get("*", 0.0)) > 0


async def _none() -> None:
    return None


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
        self._watch: asyncio.Task[None] | None = None
        self._client = client
        self._pool = pool
        self._secure = settings.public_url.startswith("https://")

    @property
    def data(self) -> BoardData:
        """Loaded on first use: an API without a readable plant file still serves the rest
        (the board's routes answer 503, see `_unavailable`)."""
        if self._data is None:
            self._plant = load_plant(self._settings.plant_file)
            self._data = BoardData(self._settings, self._client, self._pool, self._plant)
        return self._data

    def _unavailable(self) -> Response | None:
        try:
            _ = self.data  # loads the plant file
        except PlantConfigError as exc:
            log.error("board: the plant file cannot be read: %s", exc)
            return PlainTextResponse(
                "the plant board is unavailable: the plant file cannot be read", 503
            )
        return None

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
        if client is not None and client.role in READ and (down := self._unavailable()):
            return down
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
        if down := self._unavailable():
            return down
        key = request.query_params.get("range", DEFAULT_RANGE)
        if key not in RANGES:
            return JSONResponse({"error": f"range is one of {', '.join(RANGES)}"}, 400)
        try:
            width = int(request.query_params.get("width", DEFAULT_WIDTH))
        except ValueError:
            return JSONResponse({"error": "width is a number of pixels"}, 400)
        # A phone on the plant's Wi-Fi or a cellular link gets the page's data compressed (a
        # third of its size or less); the compression is shared like the encoding.
        gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
        body = await self.hub.page_data(RANGES[key], width, gzipped)
        headers = {"cache-control": "no-store", "vary": "accept-encoding"}
        if gzipped:
            headers["content-encoding"] = "gzip"
        return Response(body, media_type="application/json", headers=headers)

    async def events(self, request: Request) -> Response:
        who = await self._reader(request)
        if isinstance(who, Response):
            return who
        if down := self._unavailable():
            return down
        stop = stopping(request.app)
        if stop.is_set():
            # Shutting down: a stream opened now would hold the server's exit again.
            return PlainTextResponse("the API is stopping", 503)
        hub = self.hub
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._end_streams_on(stop, hub))
        queue = hub.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            # The token is checked again now and then: a revoked one's stream ends, and the
            # browser's reconnect is refused (its page then shows the sign-in).
            recheck = time.monotonic() + TOKEN_RECHECK_S
            try:
                yield f"retry: {STREAM_RETRY_MS}\n\n".encode()
                # The hub sends at least every IDLE_TICK_S; None is the stream's end.
                while (event := await queue.get()) is not None:
                    yield event
                    if time.monotonic() >= recheck:
                        if isinstance(await self._reader(request), Response):
                            break
                        recheck = time.monotonic() + TOKEN_RECHECK_S
            finally:
                hub.unsubscribe(queue)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @staticmethod
    async def _end_streams_on(stop: asyncio.Event, hub: BoardHub) -> None:
        """Ends every open stream when the server begins to stop (its graceful shutdown
        waits for open responses)."""
        await stop.wait()
        await hub.close()

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
