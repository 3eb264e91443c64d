"""The alarm outbox: every drift alarm is a PostgreSQL row before any Temporal call.

The detector hands an alarm to `AlarmOutbox` (synchronously, on the ingest loop); the alarm is
inserted into `alarm_outbox`, and only then does the dispatcher signal-with-start its workflow
(ingest/alerts.py, unchanged id and conflict policy) and stamp the row delivered. A call that
fails leaves the row pending with a later `next_attempt_at` (exponential, capped, jittered), so
a Temporal outage delays alarms but loses none, and an ingest restarted after a crash delivers
what the previous one left pending.

At most one workflow per alarm: the row is marked delivered only after Temporal took the call,
so a crash in between repeats the call. Before repeating, the dispatcher asks Temporal whether a
workflow carrying this row's key in its memo exists (the earlier call started it): then it only
marks the row. A repeat that reaches an already open workflow (the alarm was its evidence
signal) appends the same alert to that workflow's evidence once more: it changes the evidence
count in the workflow's note, never the plan, the approval or a write.

Alarms the database has not taken yet (PostgreSQL down) wait in memory and are retried; they
are the only ones a crash of the ingest can lose, and they count as pending meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
from collections import deque
from dataclasses import dataclass

import asyncpg

from factorylm.db.pool import close_pool
from factorylm.models.drift import DriftAlert
from ingest.alerts import WorkflowStarter

log = logging.getLogger(__name__)

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class OutboxConfig:
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0  # the bound: an alarm is retried at least this often
    rpc_timeout_s: float = 5.0  # one attempt's limit, so a dead Temporal does not hang a row
    batch: int = 200
    concurrency: int = 16  # workflows started in parallel after an outage


def alarm_key(alert: DriftAlert) -> str:
    """The alarm's identity: its workflow and when it was detected (the table's unique key)."""
    return f"{alert.workflow_id}@{alert.detected_at.isoformat()}"


def backoff_s(attempts: int, config: OutboxConfig, rng: random.Random) -> float:
    """Delay before the next attempt after `attempts` failures: doubling up to the cap, then
    jittered down by up to half, so rows that failed together do not all retry together."""
    ceiling = min(config.backoff_max_s, config.backoff_initial_s * 2.0 ** max(attempts - 1, 0))
    return ceiling * (0.5 + 0.5 * rng.random())


class AlarmOutbox:
    def __init__(
        self,
        dsn: str,
        starter: WorkflowStarter,
        *,
        config: OutboxConfig | None = None,
        host: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._starter = starter
        self.config = config or OutboxConfig()
        self._host = host or socket.gethostname()
        self._unsaved: deque[DriftAlert] = deque()
        self._save_now = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[str, asyncio.Task[None]] = {}  # by workflow id
        self._gate = asyncio.Semaphore(self.config.concurrency)
        self._pool: asyncpg.Pool | None = None
        self._rng = random.Random()
        self.pending = 0  # rows not delivered (as of the last scan) plus unsaved alarms
        self.delivered = 0  # by this process
        self.failed = 0  # failed attempts (Temporal or the database), by this process
        self.last_error: str | None = None

    def __call__(self, alert: DriftAlert) -> None:
        # From the detector, on the ingest loop: no I/O here; the saver writes it first.
        self._unsaved.append(alert)
        self.pending += 1
        self._save_now.set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        # Two tasks: an alarm is saved at once even while the dispatcher waits on a Temporal
        # call that is timing out.
        self._tasks = [
            asyncio.create_task(self._saver(), name="alarm-outbox-save"),
            asyncio.create_task(self._dispatcher(), name="alarm-outbox-dispatch"),
        ]

    async def stop(self) -> None:
        """Stop dispatching; pending rows stay for the next start. Unsaved alarms get one last
        chance to reach the database."""
        # A call cut short here was recorded as attempted: the next start checks Temporal first.
        tasks = [*self._tasks, *self._inflight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        try:
            await self._save()
            await self._write_status()
        except _DB_ERRORS as exc:
            log.error("ingest stopping with %d alarms not saved: %s", len(self._unsaved), exc)
        if self._pool is not None:
            await close_pool(self._pool, "alarm outbox")
            self._pool = None

    async def _saver(self) -> None:
        failures = 0
        while True:
            await self._save_now.wait()
            self._save_now.clear()
            try:
                await self._save()
                failures = 0
                self._wake.set()
            except _DB_ERRORS as exc:
                failures += 1
                self.failed += 1
                self.last_error = f"database: {exc}"
                delay = backoff_s(failures, self.config, self._rng)
                log.warning("alarm outbox: cannot save alarms (%s); retry in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                self._save_now.set()

    async def _dispatcher(self) -> None:
        while True:
            self._wake.clear()
            delay = self.config.backoff_max_s
            try:
                delay = await self._dispatch()
                await self._write_status()
            except _DB_ERRORS as exc:
                self.failed += 1
                self.last_error = f"database: {exc}"
                log.warning("alarm outbox: database unavailable (%s)", exc)
                delay = backoff_s(self.failed, self.config, self._rng)
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=4, timeout=5)
        return self._pool

    # -- saving ------------------------------------------------------------------------------
    async def _save(self) -> None:
        if not self._unsaved:
            return
        pool = await self._get_pool()
        while self._unsaved:
            alert = self._unsaved[0]
            await pool.execute(
                """INSERT INTO alarm_outbox (workflow_id, detected_at, alert)
                   VALUES ($1, $2, $3::jsonb) ON CONFLICT (workflow_id, detected_at) DO NOTHING""",
                alert.workflow_id,
                alert.detected_at,
                alert.model_dump_json(),
            )
            self._unsaved.popleft()  # only once the row is committed

    # -- dispatching -------------------------------------------------------------------------
    async def _dispatch(self) -> float:
        """Start delivering every due row whose PLC·metric is not being delivered already;
        the seconds until the next row falls due. Each pair is its own task: an alarm raised
        while other pairs' calls are timing out is tried at once, not behind them."""
        pool = await self._get_pool()
        busy = list(self._inflight)
        rows = await pool.fetch(
            """SELECT id, workflow_id, alert::text AS alert, attempts FROM alarm_outbox
               WHERE delivered_at IS NULL AND next_attempt_at <= now()
                   AND NOT (workflow_id = ANY($2::text[]))
               ORDER BY id LIMIT $1""",
            self.config.batch,
            busy,
        )
        # One pair's alarms in the order they were raised; pairs in parallel.
        by_workflow: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            by_workflow.setdefault(row["workflow_id"], []).append(row)
        for workflow_id, pair_rows in by_workflow.items():
            task = asyncio.create_task(self._deliver_pair(pool, pair_rows))
            self._inflight[workflow_id] = task
            task.add_done_callback(functools.partial(self._pair_done, workflow_id))
        state = await pool.fetchrow(
            """SELECT count(*) AS pending,
                      extract(epoch FROM min(next_attempt_at) FILTER (
                          WHERE NOT (workflow_id = ANY($1::text[]))) - now()) AS due_in
               FROM alarm_outbox WHERE delivered_at IS NULL""",
            list(self._inflight),
        )
        self.pending = state["pending"] + len(self._unsaved)
        if len(rows) == self.config.batch:
            return 0.0
        due_in = state["due_in"]
        if due_in is None:
            return self.config.backoff_max_s
        return min(max(float(due_in), 0.0), self.config.backoff_max_s)

    def _pair_done(self, workflow_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(workflow_id, None)
        self._wake.set()  # its next alarm, or its retry time, is the dispatcher's to schedule

    async def _deliver_pair(self, pool: asyncpg.Pool, rows: list[asyncpg.Record]) -> None:
        async with self._gate:
            for row in rows:
                try:
                    if not await self._deliver(pool, row):
                        return  # later alarms of this pair wait behind the failed one
                except _DB_ERRORS as exc:
                    # The row stays pending: delivered again (or found started) later.
                    self.failed += 1
                    self.last_error = f"database: {exc}"
                    log.warning("alarm outbox: database unavailable (%s)", exc)
                    return

    async def _deliver(self, pool: asyncpg.Pool, row: asyncpg.Record) -> bool:
        alert = DriftAlert.model_validate_json(row["alert"])
        key = alarm_key(alert)
        # The attempt is recorded before the call: after a crash mid-call the next process
        # knows that this alarm may already have reached Temporal.
        await pool.execute(
            "UPDATE alarm_outbox SET attempts = attempts + 1 WHERE id = $1", row["id"]
        )
        try:
            run_id = None
            if row["attempts"] > 0:
                # An earlier attempt may have reached Temporal before it failed or the process
                # died: if it started the workflow, do not start or signal again.
                run_id = await self._starter.started_by(key, alert.workflow_id)
            if run_id is None:
                started = await self._starter.deliver(
                    alert, alarm_key=key, rpc_timeout_s=self.config.rpc_timeout_s
                )
                run_id = started.run_id
        except Exception as exc:
            self.failed += 1
            self.last_error = f"temporal: {exc}"
            delay = backoff_s(row["attempts"] + 1, self.config, self._rng)
            log.warning(
                "alarm %s not delivered (attempt %d, retry in %.1f s): %s",
                key,
                row["attempts"] + 1,
                delay,
                exc,
            )
            await pool.execute(
                """UPDATE alarm_outbox SET last_error = $2,
                       next_attempt_at = now() + make_interval(secs => $3)
                   WHERE id = $1""",
                row["id"],
                str(exc)[:500],
                delay,
            )
            return False
        await pool.execute(
            "UPDATE alarm_outbox SET delivered_at = now(), run_id = $2 WHERE id = $1",
            row["id"],
            run_id,
        )
        self.delivered += 1
        return True

    async def _write_status(self) -> None:
        # The counters go on the ingest's status row beside the batch writer's, which the
        # collector manager keeps (ingest/manager.py): only these columns are written here.
        pool = await self._get_pool()
        await pool.execute(
            """INSERT INTO ingest_writer_status
                   (host, alarms_pending, alarms_delivered, alarms_failed, updated_at)
               VALUES ($1, $2, $3, $4, now())
               ON CONFLICT (host) DO UPDATE SET alarms_pending = EXCLUDED.alarms_pending,
                   alarms_delivered = EXCLUDED.alarms_delivered,
                   alarms_failed = EXCLUDED.alarms_failed, updated_at = now()""",
            self._host,
            self.pending,
            self.delivered,
            self.failed,
        )
