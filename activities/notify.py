"""Messages to people: approval requests, notices, summaries, reports.

Every message is recorded once by a dedup key, whatever the channel: WhatsApp through Twilio
when an account is configured, else the `log` channel (the message is logged and stored).
Approval requests are also registered in `approval_requests`, so an inbound reply — "YES 4821",
or a plain "yes" when exactly one request is pending for that number — finds its workflow.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
from temporalio import activity

from factorylm.grafana import plant_link
from factorylm.models.approvals import CloseApprovalInput, RequestApprovalInput
from factorylm.models.messages import SendMessageInput, SendReportInput
from factorylm.models.outcomes import CloseOutcomeInput, RequestOutcomeInput
from factorylm.settings import Settings
from factorylm.whatsapp import WHATSAPP_MAX_CHARS, WhatsAppSender, clip, fit_whatsapp, in_session

log = logging.getLogger(__name__)


def dashboard_link(settings: Settings, workflow_id: str) -> str:
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def approval_text(req: RequestApprovalInput, link: str, graphs: str | None = None) -> str:
    """The request as one WhatsApp message. Twilio refuses bodies over 1600 characters (and
    the send would be retried forever with the approval timer never started), so the
    agents' summary — unbounded LLM text — gives way; the link and the reply line never do."""
    p = req.proposal
    minutes = max(1, round(req.timeout_s / 60))
    head = [
        "FactoryLM approval needed"
        + (" (escalated: on-duty approver did not answer)" if req.escalation else ""),
        clip(req.alert.describe() + ".", 300),
        clip(f"Proposed: {p.action} — {p.description}. Why: {p.reason}.", 400),
    ]
    tail = []
    if trace_id := req.alert.trace_context.get("trace_id"):
        tail.append(f"Trace: {trace_id}")
    if graphs:
        tail.append(f"Graphs: {graphs}")
    tail += [
        f"Details: {link}",
        f"Reply YES {req.code} to approve or NO {req.code} to deny (within {minutes} min).",
    ]
    room = WHATSAPP_MAX_CHARS - len("\n".join([*head, *tail])) - 1
    if req.summary and room > 40:
        head.append(clip(req.summary, room, more=" (more in Details)"))
    return fit_whatsapp("\n".join([*head, *tail]), link)


class NotifyActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._whatsapp = WhatsAppSender(settings) if WhatsAppSender.configured(settings) else None

    @property
    def channel(self) -> str:
        return "whatsapp" if self._whatsapp else "log"

    async def _in_session(self, number: str) -> bool:
        last = await self._pool.fetchval(
            "SELECT last_inbound_at FROM whatsapp_sessions WHERE number = $1", number
        )
        return in_session(last, datetime.now(UTC))

    async def _deliver(
        self, to: str, body: str, template: dict[str, str] | None = None
    ) -> str | None:
        """Send one message; returns Twilio's message SID, or None on the log channel."""
        body = fit_whatsapp(body)
        if self._whatsapp is None:
            log.info("message to %r: %r", to, body)
            return None
        sender = self._whatsapp
        if (
            template is not None
            and self._settings.twilio_approval_template_sid
            and not await self._in_session(to)
        ):
            return await asyncio.to_thread(sender.send_template, to, template)
        return await asyncio.to_thread(sender.send_text, to, body)

    async def _record(self, dedup_key: str, to: str, body: str, workflow_id: str | None) -> bool:
        inserted = await self._pool.fetchval(
            """INSERT INTO notifications (dedup_key, channel, recipient, body, workflow_id)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedup_key) DO NOTHING RETURNING id""",
            dedup_key,
            self.channel,
            to,
            body,
            workflow_id,
        )
        return inserted is not None

    @activity.defn(name="request_approval")
    async def request_approval(self, req: RequestApprovalInput) -> int:
        link = dashboard_link(self._settings, req.workflow_id)
        graphs = plant_link(
            self._settings.grafana_url, req.alert.plc_id, req.alert.metric, req.alert.detected_at
        )
        body = approval_text(req, link, graphs)
        template = {
            "1": req.alert.describe(),
            "2": req.proposal.action,
            "3": req.code,
            "4": link,
        }
        # The run, not only the workflow id: every episode on a machine shares the id.
        run_id = activity.info().workflow_run_id
        sent = 0
        for recipient in req.recipients:
            row = await self._pool.fetchrow(
                """INSERT INTO approval_requests
                       (workflow_id, run_id, code, recipient, action, expires_at)
                   VALUES ($1, $2, $3, $4, $5, now() + $6 * interval '1 second')
                   ON CONFLICT (workflow_id, run_id, code, recipient)
                       DO UPDATE SET action = EXCLUDED.action
                   RETURNING id, message_sid""",
                req.workflow_id,
                run_id,
                req.code,
                recipient,
                req.proposal.action,
                req.timeout_s,
            )
            if row["message_sid"] is not None:
                continue  # a retried activity: this person already has the request
            sid = await self._deliver(recipient, body, template)
            await self._pool.execute(
                "UPDATE approval_requests SET message_sid = $2 WHERE id = $1",
                row["id"],
                sid or "log",
            )
            await self._record(
                f"approval/{req.workflow_id}/{run_id}/{req.code}/{recipient}",
                recipient,
                body,
                req.workflow_id,
            )
            sent += 1
        return sent

    @activity.defn(name="close_approval")
    async def close_approval(self, req: CloseApprovalInput) -> int:
        result: str = await self._pool.execute(
            """UPDATE approval_requests SET status = $3, answered_by = $4,
                   answered_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END
               WHERE workflow_id = $1 AND code = $2 AND status = 'pending' AND run_id = $5""",
            req.workflow_id,
            req.code,
            req.status,
            req.answered_by,
            activity.info().workflow_run_id,
        )
        return int(result.split()[-1])

    @activity.defn(name="send_message")
    async def send_message(self, req: SendMessageInput) -> int:
        sent = 0
        for recipient in req.recipients:
            key = f"{req.dedup_key}/{recipient}"
            exists = await self._pool.fetchval(
                "SELECT 1 FROM notifications WHERE dedup_key = $1", key
            )
            if exists:
                continue
            await self._deliver(recipient, req.body)
            await self._record(key, recipient, req.body, req.workflow_id)
            sent += 1
        return sent

    @activity.defn(name="request_outcome")
    async def request_outcome(self, req: RequestOutcomeInput) -> bool:
        inserted = await self._pool.fetchval(
            """INSERT INTO outcome_requests (workflow_id, event_id, recipient, work_order_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id) DO NOTHING RETURNING 1""",
            req.workflow_id,
            req.event_id,
            req.recipient,
            req.work_order_id,
        )
        if inserted is None:
            return False
        body = (
            f"FactoryLM: {req.summary}\nWork order {req.work_order_id}. When the job is done, "
            'reply with what you found and did (e.g. "replaced bearing" or "false alarm").'
        )
        await self._deliver(req.recipient, body)
        await self._record(f"outcome/{req.workflow_id}", req.recipient, body, req.workflow_id)
        return True

    @activity.defn(name="close_outcome")
    async def close_outcome(self, req: CloseOutcomeInput) -> None:
        await self._pool.execute(
            """UPDATE outcome_requests SET status = $2, answer = $3
               WHERE workflow_id = $1 AND status = 'waiting'""",
            req.workflow_id,
            "answered" if req.answer else "expired",
            req.answer,
        )

    @activity.defn(name="send_report")
    async def send_report(self, req: SendReportInput) -> bool:
        """A report for the operations channel; False when this report was already sent."""
        recorded = await self._record(
            req.dedup_key, "operations", f"{req.subject}\n{req.body}", None
        )
        if recorded:
            log.info("report: %s", req.subject)
        return recorded
