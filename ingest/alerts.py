"""Turning alarms into DriftResponseWorkflows: one open workflow per PLC·metric.

Every alarm is sent as signal-with-start (`add_evidence`) with USE_EXISTING: the first
starts the workflow, later ones reach the open workflow as evidence. A storm of alarms for one
pair is also coalesced here: while a start for a pair is in flight, or within `coalesce_s` of
the last one, further alarms are merged into a single evidence signal carrying the latest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from factorylm import tracing
from factorylm.models.drift import DriftAlert
from factorylm.temporal_client import METRIC, PLC_ID, SEVERITY, SITE
from workflows.drift_response import DriftResponseWorkflow

log = logging.getLogger(__name__)

# The memo key naming the outbox row that started a workflow (ingest/outbox.py).
ALARM_MEMO = "factorylm.alarm"


@dataclass(frozen=True)
class Started:
    workflow_id: str
    run_id: str
    alert: DriftAlert
    rpc_seconds: float


class WorkflowStarter:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        *,
        coalesce_s: float = 2.0,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._client = client
        self._tracer = tracer or trace.get_tracer(__name__)
        self._task_queue = task_queue
        self._without_site = False  # the namespace lacks the Site attribute (see _send)
        self.coalesce_s = coalesce_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_call: dict[str, float] = {}
        self._held: dict[str, DriftAlert] = {}  # latest alarm waiting for the next call
        self._draining = asyncio.Event()
        self.started: list[Started] = []
        self.triggers = 0
        self.calls = 0

    @property
    def calls_saved(self) -> int:
        return self.triggers - self.calls

    def __call__(self, alert: DriftAlert) -> None:
        # Called from the detector on the ingest loop: never block sampling on an RPC.
        task = asyncio.get_running_loop().create_task(self.start(alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, alert: DriftAlert) -> None:
        self.triggers += 1
        key = alert.workflow_id
        if key in self._held or self._recent(key):
            first_held = key not in self._held
            self._held[key] = alert
            if first_held:
                await self._flush_later(key)
            return
        await self._send(alert)

    def _recent(self, key: str) -> bool:
        last = self._last_call.get(key)
        return last is not None and time.monotonic() - last < self.coalesce_s

    async def _flush_later(self, key: str) -> None:
        last = self._last_call.get(key, time.monotonic())
        delay = max(0.0, last + self.coalesce_s - time.monotonic())
        try:
            await asyncio.wait_for(self._draining.wait(), delay)
        except TimeoutError:
            pass
        alert = self._held.pop(key, None)
        if alert is not None:
            await self._send(alert)

    async def _send(self, alert: DriftAlert) -> None:
        key = alert.workflow_id
        self._last_call[key] = time.monotonic()
        self.calls += 1
        try:
            await self.deliver(alert)
        except Exception:
            log.exception("could not start or signal the workflow for %s", key)

    async def deliver(
        self, alert: DriftAlert, *, alarm_key: str | None = None, rpc_timeout_s: float | None = None
    ) -> Started:
        """Signal-with-start one alarm; raises when Temporal did not take it (the outbox,
        ingest/outbox.py, retries). `alarm_key` goes into the memo of a workflow this call
        starts, so a later attempt can tell that an earlier one did start it."""
        t0 = time.perf_counter()
        attributes: dict[str, str | float] = {
            "plc.id": alert.plc_id,
            "metric": alert.metric,
            "drift.sigma": alert.sigma,
        }
        # The workflow start carries this span's context: its spans and every activity's
        # join the alarm's trace, whose id travels in the alert to messages and work orders.
        with self._tracer.start_as_current_span("drift.alarm", attributes=attributes):
            trace_id = tracing.current_trace_id()
            if trace_id:
                alert = alert.model_copy(update={"trace_context": {"trace_id": trace_id}})
            try:
                handle = await self._start(alert, alarm_key, rpc_timeout_s)
            except RPCError as exc:
                # A namespace that lacks one of the attributes (an older Temporal the agents
                # worker has not yet updated, app/stack.py) must not hold the alarm back: it
                # starts without the Site attribute, and the log says how to add it.
                if exc.status is not RPCStatusCode.INVALID_ARGUMENT or "Site" not in str(exc):
                    raise
                if not self._without_site:
                    log.error(
                        "Temporal has no Site search attribute (%s): drift workflows start "
                        "without it until it is registered (docs/operations.md, Sites)",
                        exc,
                    )
                self._without_site = True
                handle = await self._start(alert, alarm_key, rpc_timeout_s)
        started = Started(handle.id, handle.result_run_id or "", alert, time.perf_counter() - t0)
        self.started.append(started)
        log.info("drift alarm %s -> workflow %s", alert.describe(), handle.id)
        return started

    async def _start(
        self, alert: DriftAlert, alarm_key: str | None, rpc_timeout_s: float | None
    ) -> WorkflowHandle[Any, Any]:
        return await self._client.start_workflow(
            DriftResponseWorkflow.run,
            alert,
            id=alert.workflow_id,
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="add_evidence",
            start_signal_args=[alert],
            search_attributes=_attributes(alert, site=not self._without_site),
            static_summary=alert.describe(),
            memo={ALARM_MEMO: alarm_key} if alarm_key else None,
            rpc_timeout=timedelta(seconds=rpc_timeout_s) if rpc_timeout_s else None,
        )

    async def started_by(self, alarm_key: str, workflow_id: str) -> str | None:
        """The run id of the workflow `alarm_key` started, if an earlier attempt did start one
        (open or closed); None when it did not or no such workflow exists."""
        try:
            desc = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        if await desc.memo_value(ALARM_MEMO, default=None) == alarm_key:
            return desc.run_id
        return None

    async def drain(self) -> None:
        """Send what is held now (shutdown must not lose evidence), then wait for the calls."""
        self._draining.set()
        held, self._held = self._held, {}
        for alert in held.values():
            await self._send(alert)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _attributes(alert: DriftAlert, *, site: bool = True) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            *([SearchAttributePair(SITE, alert.site)] if site and alert.site else []),
            SearchAttributePair(PLC_ID, alert.plc_id),
            SearchAttributePair(METRIC, alert.metric),
            SearchAttributePair(SEVERITY, alert.severity.value),
        ]
    )
