"""Health checks of every part, incidents, collector restarts and the daily summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from factorylm import tracing
from factorylm.alarms import alarm_kpis
from factorylm.channels import RESTART_CHANNEL
from factorylm.models.health import (
    CheckResult,
    DailySummary,
    DailySummaryInput,
    HealthCheckInput,
    HealthReport,
    Incident,
    IncidentUpdate,
    IncidentUpdateInput,
    RestartCollectorsInput,
    SpoolLimits,
)
from factorylm.plant import Plant


class HealthActivities:
    def __init__(self, pool: asyncpg.Pool, client: Client, plant: Plant, namespace: str) -> None:
        self._pool = pool
        self._client = client
        self._plant = plant
        self._namespace = namespace

    async def _collectors(self, stale_after_s: float) -> list[CheckResult]:
        rows = {
            r["plc_id"]: r
            for r in await self._pool.fetch(
                "SELECT * FROM collector_status WHERE plc_id = ANY($1::text[])",
                [p.id for p in self._plant.plcs],
            )
        }
        now = datetime.now(UTC)
        return [
            _collector_check(plc.id, rows.get(plc.id), now, stale_after_s)
            for plc in self._plant.plcs
        ]

    async def _database(self) -> list[CheckResult]:
        try:
            await self._pool.execute(
                """INSERT INTO health_probe (id, written_at) VALUES (1, now())
                   ON CONFLICT (id) DO UPDATE SET written_at = now()"""
            )
            db = CheckResult(
                check="database", subject="postgres", ok=True, critical=True, detail="writable"
            )
        except (OSError, asyncpg.PostgresError) as exc:
            db = CheckResult(
                check="database",
                subject="postgres",
                ok=False,
                critical=True,
                detail=f"not writable: {exc}",
            )
        try:
            version = await self._pool.fetchval(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            )
            distance = await self._pool.fetchval("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector")
            ok = version is not None and abs(distance - 1.0) < 1e-9
            vec = CheckResult(
                check="vector_store",
                subject="pgvector",
                ok=ok,
                critical=True,
                detail=f"pgvector {version}" if ok else "pgvector not answering",
            )
        except (OSError, asyncpg.PostgresError) as exc:
            vec = CheckResult(
                check="vector_store", subject="pgvector", ok=False, critical=True, detail=str(exc)
            )
        return [db, vec]

    async def _pollers(self, queue: str, kind: TaskQueueType.ValueType) -> int:
        response = await self._client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self._namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
            )
        )
        return len(response.pollers)

    async def _task_queues(self, queues: list[str]) -> list[CheckResult]:
        out = []
        for i, queue in enumerate(queues):
            # The first queue runs the workflows; every queue runs activities.
            kinds = [TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY]
            if i == 0:
                kinds.insert(0, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
            counts = [await self._pollers(queue, k) for k in kinds]
            ok = all(c > 0 for c in counts)
            out.append(
                CheckResult(
                    check="task_queue",
                    subject=queue,
                    ok=ok,
                    critical=True,
                    detail=f"pollers {counts}" if ok else f"no worker polls it ({counts})",
                )
            )
        return out

    async def _schedules(self, ids: list[str]) -> list[CheckResult]:
        out = []
        for sid in ids:
            try:
                desc = await self._client.get_schedule_handle(sid).describe()
            except RPCError as exc:
                out.append(
                    CheckResult(
                        check="schedule",
                        subject=sid,
                        ok=False,
                        critical=False,
                        detail=f"missing: {exc}",
                    )
                )
                continue
            paused = desc.schedule.state.paused
            upcoming = desc.info.next_action_times
            ok = not paused and bool(upcoming)
            detail = (
                "paused"
                if paused
                else (f"next {upcoming[0]:%H:%M:%S} UTC" if upcoming else "no next run")
            )
            out.append(
                CheckResult(check="schedule", subject=sid, ok=ok, critical=False, detail=detail)
            )
        return out

    async def _spools(self, req: HealthCheckInput) -> list[CheckResult]:
        """Four checks per ingest's spool, each its own incident, so one that turns critical
        (filling up, losing samples, stuck) alerts even while another is already open."""
        limits = req.spool
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT w.host, w.spool_bytes, w.spool_samples, w.spool_oldest, w.spool_dropped,
                          w.backfill_rate, w.updated_at, s.spool_dropped AS seen_dropped,
                          s.dropped_grew_at, s.spool_oldest AS seen_oldest, s.oldest_seen_at,
                          s.host IS NOT NULL AS seen, now() AS now
                   FROM ingest_writer_status w LEFT JOIN health_spool_seen s USING (host)
                   WHERE ($1::text[] IS NULL OR w.host = ANY($1::text[]))
                     -- an ingest gone for a day has been moved or removed
                     AND w.updated_at > now() - INTERVAL '1 day'
                   ORDER BY w.host""",
                limits.ingest_hosts,
            )
            out: list[CheckResult] = []
            for row in rows:
                checks, seen = _spool_checks(row, limits, req.stale_after_s)
                out.extend(checks)
                await conn.execute(
                    """INSERT INTO health_spool_seen AS s (host, spool_dropped, dropped_grew_at,
                           spool_oldest, oldest_seen_at, observed_at)
                       VALUES ($1, $2, $3, $4, $5, $6)
                       ON CONFLICT (host) DO UPDATE SET spool_dropped = EXCLUDED.spool_dropped,
                           dropped_grew_at = EXCLUDED.dropped_grew_at,
                           spool_oldest = EXCLUDED.spool_oldest,
                           oldest_seen_at = EXCLUDED.oldest_seen_at,
                           observed_at = EXCLUDED.observed_at
                       -- two monitors at once: the later observation stays
                       WHERE s.observed_at <= EXCLUDED.observed_at""",
                    row["host"],
                    *seen,
                )
        return out

    @activity.defn(name="check_health")
    async def check_health(self, req: HealthCheckInput) -> HealthReport:
        results = [
            *await self._collectors(req.stale_after_s),
            *await self._spools(req),
            *await self._database(),
            *await self._task_queues(req.task_queues),
            *await self._schedules(req.schedule_ids),
        ]
        return HealthReport(results=results, trace_id=tracing.current_trace_id())

    @activity.defn(name="update_incidents")
    async def update_incidents(self, req: IncidentUpdateInput) -> IncidentUpdate:
        """Open an incident per new failure, close those that recovered: one alert each."""
        opened: list[Incident] = []
        closed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for r in req.report.results:
                if r.ok:
                    status = await conn.execute(
                        """UPDATE health_incidents SET closed_at = now()
                           WHERE check_name = $1 AND subject = $2 AND closed_at IS NULL""",
                        r.check,
                        r.subject,
                    )
                    closed += int(status.split()[-1])
                    continue
                row = await conn.fetchrow(
                    """INSERT INTO health_incidents (check_name, subject, detail, critical)
                       VALUES ($1, $2, $3, $4)
                       ON CONFLICT (check_name, subject) WHERE closed_at IS NULL DO NOTHING
                       RETURNING id""",
                    r.check,
                    r.subject,
                    r.detail,
                    r.critical,
                )
                if row is not None:
                    opened.append(
                        Incident(
                            id=row["id"],
                            check=r.check,
                            subject=r.subject,
                            detail=r.detail,
                            critical=r.critical,
                        )
                    )
        return IncidentUpdate(opened=opened, closed=closed)

    @activity.defn(name="restart_collectors")
    async def restart_collectors(self, req: RestartCollectorsInput) -> int:
        for plc_id in req.plc_ids:
            await self._pool.execute("SELECT pg_notify($1, $2)", RESTART_CHANNEL, plc_id)
        return len(req.plc_ids)

    @activity.defn(name="daily_summary")
    async def daily_summary(self, req: DailySummaryInput) -> DailySummary:
        until = datetime.now(UTC)
        since = until - timedelta(hours=req.hours)
        q = self._pool.fetchval
        approvals = {
            r["status"]: r["n"]
            for r in await self._pool.fetch(
                """SELECT status, count(DISTINCT (workflow_id, run_id, code)) AS n FROM approval_requests
                   WHERE requested_at >= $1 GROUP BY status""",
                since,
            )
        }
        writes = {
            r["status"]: r["n"]
            for r in await self._pool.fetch(
                "SELECT status, count(*) AS n FROM plc_writes WHERE requested_at >= $1 GROUP BY status",
                since,
            )
        }
        usage = await self._pool.fetchrow(
            """SELECT coalesce(sum(input_tokens + output_tokens), 0) AS tokens,
                      coalesce(sum(cost_usd), 0) AS cost FROM llm_usage WHERE at >= $1""",
            since,
        )
        # Uptime: the share of minutes in the window in which each PLC delivered samples.
        minutes = max(1.0, req.hours * 60)
        coverage = await self._pool.fetch(
            """SELECT plc_id, count(DISTINCT time_bucket('1 minute', time)) AS m FROM samples
               WHERE time >= $1 AND plc_id = ANY($2::text[]) GROUP BY plc_id""",
            since,
            [p.id for p in self._plant.plcs],
        )
        per_plc = {r["plc_id"]: min(1.0, r["m"] / minutes) for r in coverage}
        uptime = (
            100
            * sum(per_plc.get(p.id, 0.0) for p in self._plant.plcs)
            / max(1, len(self._plant.plcs))
        )
        return DailySummary(
            since=since,
            until=until,
            alerts_processed=await q(
                "SELECT count(*) FROM drift_events WHERE created_at >= $1", since
            ),
            auto_resolved=await q(
                """SELECT count(*) FROM plc_writes WHERE requested_at >= $1
                   AND approved_by IS NULL AND status = 'verified'""",
                since,
            ),
            approvals=approvals,
            plc_writes=writes,
            work_orders=await q("SELECT count(*) FROM work_orders WHERE created_at >= $1", since),
            tokens=int(usage["tokens"]),
            cost_usd=float(usage["cost"]),
            collector_uptime_pct=round(uptime, 1),
            alarms=await alarm_kpis(self._pool, since, until, flood_alarms=req.flood_alarms),
        )


def _collector_check(
    plc_id: str, row: asyncpg.Record | None, now: datetime, stale_after_s: float
) -> CheckResult:
    """The verdict on one collector's status row."""

    def verdict(ok: bool, detail: str, *, critical: bool = True) -> CheckResult:
        return CheckResult(
            check="collector", subject=plc_id, ok=ok, critical=critical, detail=detail
        )

    if row is None:
        return verdict(False, "no status reported: is the ingest running?")
    age = (now - row["last_good_at"]).total_seconds() if row["last_good_at"] else None
    if row["state"] == "failing":
        errors = f"{row['consecutive_errors']} errors in a row, {row['last_error']}"
        return verdict(False, f"failing: {errors}")
    if row["state"] == "starting" and age is None:
        return verdict(False, "starting: no sample yet", critical=False)
    if age is None or age > stale_after_s:
        seen = "never" if age is None else f"{age:.0f} s ago"
        return verdict(False, f"stale: last good sample {seen}")
    return verdict(True, f"fresh ({age:.0f} s)")


def _spool_checks(
    row: asyncpg.Record, limits: SpoolLimits, stale_after_s: float
) -> tuple[list[CheckResult], tuple[int, datetime | None, datetime | None, datetime, datetime]]:
    """The verdicts on one ingest's spool, and what to remember of it for the next run:
    (spool_dropped, dropped_grew_at, spool_oldest, oldest_seen_at, observed_at)."""
    host, now = row["host"], row["now"]
    samples, size, oldest, dropped = (
        row["spool_samples"],
        row["spool_bytes"],
        row["spool_oldest"],
        row["spool_dropped"],
    )

    def verdict(check: str, ok: bool, detail: str, *, critical: bool = True) -> CheckResult:
        return CheckResult(check=check, subject=host, ok=ok, critical=critical, detail=detail)

    # The counter is the ingest process's own: lower than last time means a new process, whose
    # every dropped sample is new.
    before = row["seen_dropped"] if row["seen"] and dropped >= row["seen_dropped"] else 0
    grew_at = now if dropped > before else row["dropped_grew_at"]
    oldest_since = row["oldest_seen_at"] if row["seen"] and row["seen_oldest"] == oldest else now
    # The status row is the ingest's own write to the central database: fresh, the ingest
    # reaches it, so whatever is still in its spool should be going there.
    reaching = (now - row["updated_at"]).total_seconds() <= stale_after_s
    rate = f"backfill {row['backfill_rate']:.0f} samples/s"
    pending = f"{samples} samples ({size} bytes) not yet in PostgreSQL" + (
        f", the oldest from {oldest:%Y-%m-%d %H:%M:%S} UTC" if oldest else ""
    )
    in_use = samples > 0 or oldest is not None
    pct = 100 * size / limits.max_bytes
    losing = grew_at is not None and (now - grew_at).total_seconds() < limits.loss_hold_s
    stuck_s = (now - oldest_since).total_seconds()
    stuck = in_use and oldest is not None and reaching and stuck_s >= limits.stall_after_s
    checks = [
        # Not critical: a spool in use is the store-and-forward doing its job (the database
        # was unreachable for this ingest, or behind); the three below are what needs a person.
        verdict(
            "spool",
            not in_use,
            f"in use: {pending}; {rate}" if in_use else "empty",
            critical=False,
        ),
        verdict(
            "spool_capacity",
            pct < limits.full_pct,
            f"at {pct:.0f} % of its {limits.max_bytes} bytes ({pending}): when full it drops "
            "its oldest samples",
        ),
        verdict(
            "spool_loss",
            not losing,
            f"{dropped} samples dropped from the full spool by this ingest process"
            + (f", the last at {grew_at:%Y-%m-%d %H:%M:%S} UTC" if grew_at else "")
            if losing
            else "nothing dropped",
        ),
        verdict(
            "spool_backfill",
            not stuck,
            f"not progressing: the oldest unsent sample is the same for {stuck_s / 60:.0f} min "
            f"while the ingest reaches the database; {pending}; {rate}"
            if stuck
            else ("progressing" if in_use else "nothing to backfill"),
        ),
    ]
    return checks, (dropped, grew_at, oldest, oldest_since, now)
