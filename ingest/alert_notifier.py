"""Collector alerts to the person on call, through the one outbound path.

The collector manager records each alert (`notifications`) and hands it here. The ingest holds
no Twilio secret (docs/security.md), so it does not send: it starts a notice workflow
(workflows/alarm_notice.py, id = the alert's key, so a repeated start sends nothing twice)
whose activity sends through the outbox (activities/outbound.py) to whoever the roster has on
duty now, with the PLC's graphs when Grafana is configured and the SMS fallback. A Temporal
that does not answer is retried for about 20 seconds; the alert stays in `notifications` and
the log, and the health monitor raises its own alert for the same PLC.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from factorylm.grafana import plant_link
from factorylm.models.alarms import AlarmNoticeInput
from factorylm.roster import load_roster
from factorylm.settings import Settings
from ingest.manager import CollectorAlert
from workflows.alarm_notice import AlarmNoticeWorkflow

log = logging.getLogger(__name__)

# Short: the manager waits for its alerts when the ingest stops.
_DELAYS_S = (1.0, 5.0, 15.0)


class OutboundNotifier:
    def __init__(
        self, settings: Settings, client: Client, delays_s: tuple[float, ...] = _DELAYS_S
    ) -> None:
        self._settings = settings
        self._client = client
        self._roster = load_roster(settings)  # invalid: the ingest does not start
        self._delays = delays_s

    def notice(self, alert: CollectorAlert) -> AlarmNoticeInput | None:
        if self._roster is None:
            return None
        on_duty, _ = self._roster.on_call(datetime.now(UTC))
        lines = [f"FactoryLM alert: {alert.body}"]
        if graphs := plant_link(self._settings.grafana_url, alert.plc_id, "", alert.failing_since):
            lines.append(f"Graphs: {graphs}")
        return AlarmNoticeInput(
            dedup_key=alert.dedup_key, recipients=[on_duty.address], body="\n".join(lines)
        )

    async def __call__(self, alert: CollectorAlert) -> None:
        notice = self.notice(alert)
        if notice is None:
            log.warning("no roster and no approvers: the alert on %s goes to nobody", alert.plc_id)
            return
        for delay in (*self._delays, None):
            try:
                await self._client.start_workflow(
                    AlarmNoticeWorkflow.run,
                    notice,
                    id=notice.dedup_key.replace("/", "-"),
                    task_queue=self._settings.task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
                return
            except Exception as exc:
                if delay is None:
                    log.error("the alert on %s was not handed over: %s", alert.plc_id, exc)
                    return
                log.warning(
                    "alert on %s not handed over (%s); again in %gs", alert.plc_id, exc, delay
                )
                await asyncio.sleep(delay)
