"""Turning an alarm into a DriftResponseWorkflow: one open workflow per PLC·metric."""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from factorylm.models import DriftAlert
from factorylm.temporal_client import METRIC, PLC_ID, SEVERITY
from workflows.drift_response import DriftResponseWorkflow

log = logging.getLogger(__name__)


class WorkflowStarter:
    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue
        self._tasks: set[asyncio.Task[None]] = set()
        self.started: list[tuple[str, str, float]] = []  # (workflow id, run id, latency s)

    def __call__(self, alert: DriftAlert) -> None:
        # Called from the detector on the ingest loop: never block sampling on an RPC.
        task = asyncio.get_running_loop().create_task(self.start(alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, alert: DriftAlert) -> None:
        t0 = time.perf_counter()
        try:
            handle = await self._client.start_workflow(
                DriftResponseWorkflow.run,
                alert,
                id=alert.workflow_id,
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=_attributes(alert),
                static_summary=alert.describe(),
            )
        except Exception:
            log.exception("could not start the workflow for %s", alert.workflow_id)
            return
        latency = time.perf_counter() - t0
        self.started.append((handle.id, handle.result_run_id or "", latency))
        log.info("drift alarm %s -> workflow %s", alert.describe(), handle.id)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _attributes(alert: DriftAlert) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(PLC_ID, alert.plc_id),
            SearchAttributePair(METRIC, alert.metric),
            SearchAttributePair(SEVERITY, alert.severity.value),
        ]
    )
