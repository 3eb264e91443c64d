"""`factorylm doctor`: is every part there? Prints each check and the command that fixes it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from temporalio.client import Client

from factorylm.settings import Settings
from factorylm.temporal_client import TemporalUnavailable, connect
from temporal.devserver import cli_path, port_open


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


async def _postgres(settings: Settings) -> list[Check]:
    where = f"{settings.pg_host}:{settings.pg_port}"
    try:
        conn = await asyncpg.connect(settings.dsn_for("postgres"), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return [Check("postgres", False, f"not reachable at {where}: {exc}", "factorylm db start")]
    try:
        version = await conn.fetchval("SHOW server_version")
        rows = await conn.fetch(
            "SELECT name, default_version FROM pg_available_extensions "
            "WHERE name IN ('timescaledb', 'vector')"
        )
        preload = await conn.fetchval("SHOW shared_preload_libraries")
    finally:
        await conn.close()
    checks = [Check("postgres", True, f"PostgreSQL {version} at {where}")]
    available = {r["name"]: r["default_version"] for r in rows}
    for ext in ("timescaledb", "vector"):
        if ext in available:
            checks.append(Check(ext, True, f"extension {ext} {available[ext]} available"))
        else:
            checks.append(Check(ext, False, f"extension {ext} not installed", "make setup"))
    if "timescaledb" not in preload:
        checks.append(
            Check(
                "preload",
                False,
                "timescaledb not in shared_preload_libraries",
                "factorylm db stop && rm -rf .factorylm/pgdata && factorylm db start",
            )
        )
    return checks


async def _lifecycle(settings: Settings) -> Check:
    """Which TimescaleDB edition, so which lifecycle is in use, and how far the rollups reach."""
    try:
        conn = await asyncpg.connect(settings.pg_dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return Check(
            "lifecycle", False, f"database {settings.pg_database}: {exc}", "factorylm db start"
        )
    try:
        edition = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
        state = (
            await conn.fetchrow("SELECT rolled_up_to, dropped_before FROM data_lifecycle")
            if await conn.fetchval("SELECT to_regclass('data_lifecycle') IS NOT NULL")
            else None
        )
        # The licensed edition compresses through TimescaleDB's own job scheduler, which can
        # fail where a session's `CALL run_job` works (seen on 2.19.3 with PostgreSQL 15.20:
        # "cannot drop portal"): the product's rollups go on, the disk fills unnoticed.
        failing = (
            await conn.fetch(
                """SELECT j.job_id, j.hypertable_name FROM timescaledb_information.jobs j
                   JOIN timescaledb_information.job_stats s USING (job_id)
                   WHERE j.proc_name = 'policy_compression' AND s.last_run_status = 'Failed'"""
            )
            if edition == "timescale"
            else []
        )
    finally:
        await conn.close()
    if state is None:
        return Check("lifecycle", False, "data_lifecycle table missing", "factorylm db migrate")
    if failing:
        jobs = ", ".join(f"{r['hypertable_name']} (job {r['job_id']})" for r in failing)
        return Check(
            "lifecycle",
            False,
            f"TimescaleDB's compression jobs fail in its scheduler: {jobs}",
            "run them by hand (CALL run_job(<job>)) and see docs/operations.md, Retention",
        )
    mode = (
        # Migrations 0022 and 0024 (their blocks run by hand on a 2.19.3 TSL build; the
        # machines that test FactoryLM have none).
        "rollup job + compression of raw chunks older than 1 day and of rollup chunks a week "
        "past their end"
        if edition == "timescale"
        else "rollup job (no compression: not in the Apache-2 edition)"
    )
    reach = state["rolled_up_to"] or "nothing rolled up yet"
    return Check(
        "lifecycle",
        True,
        f"TimescaleDB {edition} edition: {mode}; raw kept {settings.raw_retention_days:g} d; "
        f"rolled up to {reach}",
    )


async def _temporal(settings: Settings) -> list[Check]:
    checks = []
    binary = cli_path(settings)
    checks.append(
        Check(
            "temporal-cli",
            binary.exists(),
            str(binary) if binary.exists() else "not built",
            "bash temporal/install.sh",
        )
    )
    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
        await client.service_client.check_health()
        checks.append(
            Check(
                "temporal",
                True,
                f"server at {settings.temporal_address}, namespace {settings.temporal_namespace}",
            )
        )
    except (TemporalUnavailable, TimeoutError, RuntimeError):
        checks.append(
            Check(
                "temporal",
                False,
                f"not reachable at {settings.temporal_address}",
                "factorylm temporal start",
            )
        )
    host = settings.temporal_address.rpartition(":")[0]
    ui = port_open(host, settings.temporal_ui_port)
    checks.append(
        Check(
            "temporal-ui",
            ui,
            settings.temporal_ui_url + (" answers" if ui else " not answering"),
            "factorylm temporal start",
        )
    )
    return checks


def _embedding(settings: Settings) -> Check:
    model_dir = settings.embedding_model_dir
    if model_dir is None:
        return Check("embedding-model", True, "fastembed will download its default model")
    ok = (model_dir / "model.onnx").exists() and (model_dir / "tokenizer.json").exists()
    return Check(
        "embedding-model",
        ok,
        f"{model_dir}" + ("" if ok else " has no model.onnx/tokenizer.json"),
        "set FACTORYLM_EMBEDDING_MODEL_DIR to the all-MiniLM-L6-v2 ONNX directory",
    )


def _sandbox() -> Check:
    from factorylm.sandbox import SandboxUnavailable, check_available

    try:
        check_available()
    except SandboxUnavailable as exc:
        return Check("sandbox", False, str(exc), "make setup (installs bubblewrap)")
    return Check("sandbox", True, "bubblewrap runs the Monkey's checks")


def _roster(settings: Settings) -> Check:
    """Who is on call: the roster file, checked as the workers will load it."""
    from factorylm.roster import RosterError, load_roster

    where = settings.roster_file or "FACTORYLM_APPROVERS"
    try:
        roster = load_roster(settings)
    except RosterError as exc:
        return Check("roster", False, str(exc), f"fix the entry in {where}")
    if roster is None:  # the default: a plant names its own people
        return Check("roster", True, "nobody configured (FACTORYLM_APPROVERS, a roster file)")
    on_duty, backup = roster.on_call(datetime.now(UTC))
    return Check(
        "roster",
        True,
        f"{len(roster.people)} people ({where}); on duty now {on_duty.id}"
        + (f", backup {backup.id}" if backup else ""),
    )


async def _pollers(client: Client | None, settings: Settings, queue: str) -> int | None:
    """How many workers poll `queue` for activities now; None when Temporal does not say."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    if client is None:
        return None
    try:
        resp = await asyncio.wait_for(
            client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=settings.temporal_namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            ),
            timeout=5,
        )
    except (TimeoutError, RuntimeError):
        return None
    return len(resp.pollers)


async def _sites(settings: Settings) -> list[Check]:
    """Each site of the plant file: its PLCs, its approvers, and whether an edge serves it now."""
    from factorylm.plant import PlantConfigError, load_plant
    from factorylm.roster import RosterError, load_roster, site_settings

    try:
        plant = load_plant(settings.plant_file)
    except PlantConfigError as exc:
        return [Check("plant", False, str(exc), f"fix {settings.plant_file}")]
    checks = [
        Check("plant", True, f"{plant.name}: {len(plant.sites)} site(s), {settings.plant_file}")
    ]
    client: Client | None
    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
    except (TemporalUnavailable, TimeoutError, RuntimeError):
        client = None  # the temporal check says so; the sites are still listed
    for site in plant.sites:
        queue = settings.edge_queue(site.name)
        own = site_settings(settings, site)
        try:
            roster = load_roster(own)
        except RosterError as exc:
            checks.append(Check(f"site {site.name}", False, str(exc), f"fix {site.roster}"))
            continue
        people = len(roster.people) if roster else 0
        pollers = await _pollers(client, settings, queue)
        serving = "unknown" if pollers is None else f"{pollers} edge worker(s) polling now"
        checks.append(
            Check(
                f"site {site.name}",
                True,
                f"{len(site.plcs)} PLC(s), {people} approver(s)"
                f"{' of its own' if own is not settings else ''}; {queue}: {serving}",
            )
        )
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    pg, tp, sandbox = await asyncio.gather(
        _postgres(settings), _temporal(settings), asyncio.to_thread(_sandbox)
    )
    lifecycle = await _lifecycle(settings) if pg[0].ok else None
    return [
        *pg,
        *([lifecycle] if lifecycle else []),
        *tp,
        _embedding(settings),
        sandbox,
        _roster(settings),
        *await _sites(settings),
    ]


def report(checks: list[Check]) -> tuple[str, int]:
    lines = []
    for c in checks:
        mark = "ok     " if c.ok else "MISSING"
        lines.append(f"{mark} {c.name:<16} {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"        fix: {c.fix}")
    missing = sum(not c.ok for c in checks)
    lines.append("all parts ok" if not missing else f"{missing} part(s) missing")
    return "\n".join(lines), 1 if missing else 0


async def probe(settings: Settings) -> list[Check]:
    """What a container health check needs: this process's dependencies answer."""
    pg, tp = await asyncio.gather(_postgres(settings), _temporal(settings))
    return [c for c in [*pg, *tp] if c.name in ("postgres", "temporal")]
