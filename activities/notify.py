"""Messages to people: approval requests, pages, notices, summaries, outcome requests, reports.

Every one goes through the outbound path (activities/outbound.py): an outbox row under its
idempotency key before Twilio is called, delivery states from Twilio's status callbacks, the
SMS fallback. WhatsApp through Twilio when an account is configured, else the `log` channel
(the message is logged and stored). Approval requests are also registered in
`approval_requests`, so an inbound reply — "YES 4821", or a plain "yes" when exactly one
request is pending for that number — finds its workflow. Every message about a workflow says
where to see it (the Web UI), and one about a machine where its graphs are (Grafana).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg
from temporalio import activity

from factorylm.grafana import plant_link
from factorylm.models.approvals import CloseApprovalInput, RequestApprovalInput
from factorylm.models.messages import MessageKind, SendMessageInput, SendReportInput
from factorylm.models.outcomes import CloseOutcomeInput, RequestOutcomeInput
from factorylm.roster import ON_CALL, load_roster
from factorylm.settings import Settings
from factorylm.whatsapp import WHATSAPP_MAX_CHARS, clip, fit_whatsapp, in_session

from .outbound import Outbound, Outgoing

log = logging.getLogger(__name__)


def dashboard_link(settings: Settings, workflow_id: str) -> str:
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def approval_text(req: RequestApprovalInput, link: str, graphs: str | None = None) -> str:
    """The request as one WhatsApp message. Twilio refuses bodies over 1600 characters (and
    the send would be retried forever with the approval timer never started), so the
    agents' summary — unbounded LLM text — gives way; the link and the reply line never do."""
    p = req.proposal
    minutes = max(1, round(req.timeout_s / 60))
    # The forecast on a line of its own, so the alarm's 300 characters never cut it off.
    alert, forecast = req.alert, req.alert.forecast
    head = [
        "FactoryLM approval needed"
        + (
            f" (escalated: {req.escalation_reason or 'on-duty approver did not answer'})"
            if req.escalation
            else ""
        ),
        clip(alert.model_copy(update={"forecast": None}).describe() + ".", 300),
        *([clip(f"Trend: {forecast.describe()}.", 200)] if forecast is not None else []),
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
        self.outbound = Outbound(pool, settings)
        # Loaded once, at the worker's start: an invalid roster stops the worker there, with
        # the entry named, instead of failing every report later.
        self._roster = load_roster(settings)

    @property
    def channel(self) -> str:
        return "whatsapp" if self.outbound.twilio else "log"

    async def _in_session(self, number: str) -> bool:
        last = await self._pool.fetchval(
            "SELECT last_inbound_at FROM whatsapp_sessions WHERE number = $1", number
        )
        return in_session(last, datetime.now(UTC))

    def _context(self, req: SendMessageInput) -> str:
        """The body with where to look: the machine's graphs and the workflow in the Web UI,
        unless the body names them already."""
        lines = [req.body]
        if req.about is not None and (
            graphs := plant_link(
                self._settings.grafana_url, req.about.plc_id, req.about.metric, req.about.at
            )
        ):
            if graphs not in req.body:
                lines.append(f"Graphs: {graphs}")
        if (
            req.workflow_id
            and (link := dashboard_link(self._settings, req.workflow_id)) not in req.body
        ):
            lines.append(f"Details: {link}")
        if req.ack_code:
            lines.append(f"Reply ACK {req.ack_code} to acknowledge (stops the escalation).")
        return "\n".join(lines)

    @activity.defn(name="request_approval")
    async def request_approval(self, req: RequestApprovalInput) -> int:
        """The request to each recipient; returns how many it reached on some channel (0: it
        was refused everywhere, and the workflow escalates at once)."""
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
        reached = 0
        for recipient in req.recipients:
            row = await self._pool.fetchrow(
                """INSERT INTO approval_requests
                       (workflow_id, run_id, code, recipient, action, expires_at)
                   VALUES ($1, $2, $3, $4, $5, now() + $6 * interval '1 second')
                   ON CONFLICT (workflow_id, run_id, code, recipient)
                       DO UPDATE SET action = EXCLUDED.action
                   RETURNING id""",
                req.workflow_id,
                run_id,
                req.code,
                recipient,
                req.proposal.action,
                req.timeout_s,
            )
            fallback = req.fallbacks.get(recipient)
            if fallback:  # a reply by SMS answers the same request
                await self._pool.execute(
                    """INSERT INTO approval_requests
                           (workflow_id, run_id, code, recipient, action, expires_at)
                       VALUES ($1, $2, $3, $4, $5, now() + $6 * interval '1 second')
                       ON CONFLICT (workflow_id, run_id, code, recipient) DO NOTHING""",
                    req.workflow_id,
                    run_id,
                    req.code,
                    fallback,
                    req.proposal.action,
                    req.timeout_s,
                )
            use_template = (
                recipient.startswith("whatsapp:")
                and bool(self._settings.twilio_approval_template_sid)
                and not await self._in_session(recipient)
            )
            sent = await self.outbound.send(
                Outgoing(
                    key=f"approval/{req.workflow_id}/{run_id}/{req.code}/{recipient}"
                    + (f"/r{req.attempt}" if req.attempt else ""),
                    kind=MessageKind.APPROVAL,
                    address=recipient,
                    body=body,
                    workflow_id=req.workflow_id,
                    run_id=run_id,
                    code=req.code,
                    fallback=fallback,
                    template=template if use_template else None,
                )
            )
            await self._pool.execute(
                "UPDATE approval_requests SET message_sid = $2 WHERE id = $1",
                row["id"],
                sent["message_sid"] or sent["channel"],
            )
            if not await self.outbound.unreached_now(sent) and sent["state"] != "failed":
                reached += 1
        return reached

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
        """The message to each recipient. Returns how many were sent a message by this call
        (a repeat returns 0: callers count alerts by it); for a page (`ack_code`), how many it
        reached on some channel, now or earlier (0: refused everywhere, escalate at once)."""
        body = self._context(req)
        run_id = activity.info().workflow_run_id if activity.in_activity() else None
        reached = 0
        for recipient in req.recipients:
            key = f"{req.dedup_key}/{recipient}"
            if req.ack_code is None and await self.outbound.handed_over(key):
                continue
            address = recipient
            if recipient == ON_CALL:  # whoever is on duty now (a Schedule's message)
                if self._roster is None:
                    continue
                address = self._roster.on_call(datetime.now(UTC))[0].address
            sent = await self.outbound.send(
                Outgoing(
                    key=key,
                    kind=req.kind,
                    address=address,
                    body=body,
                    workflow_id=req.workflow_id,
                    run_id=run_id,
                    code=req.ack_code,
                    # The roster's SMS number for anyone it knows, whoever sends.
                    fallback=req.fallbacks.get(recipient) or self._fallback_for(address),
                )
            )
            if not await self.outbound.unreached_now(sent) and sent["state"] != "failed":
                reached += 1
        return reached

    @activity.defn(name="request_outcome")
    async def request_outcome(self, req: RequestOutcomeInput) -> bool:
        """The question to the technician. The waiting row and the message are separate
        steps; a retry after a failed send sends it (the outbox row says whether it went),
        instead of finding the row and concluding it was asked. False when already asked."""
        inserted = await self._pool.fetchval(
            """INSERT INTO outcome_requests (workflow_id, event_id, recipient, work_order_id)
               VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id) DO NOTHING RETURNING 1""",
            req.workflow_id,
            req.event_id,
            req.recipient,
            req.work_order_id,
        )
        body = (
            f"FactoryLM: {req.summary}\nWork order {req.work_order_id}. When the job is done, "
            'reply with what you found and did (e.g. "replaced bearing" or "false alarm").'
        )
        sent = await self.outbound.send(
            Outgoing(
                key=f"outcome/{req.workflow_id}",
                kind=MessageKind.OUTCOME,
                address=req.recipient,
                body=body,
                workflow_id=req.workflow_id,
                fallback=self._fallback_for(req.recipient),
            )
        )
        log.debug("outcome request %s: %s", sent["id"], sent["state"])
        return inserted is not None

    def _fallback_for(self, address: str) -> str | None:
        person = self._roster.person_at(address) if self._roster else None
        return person.fallback if person else None

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
        """A report for the operations record, and for the person on duty now; False when
        this report was already recorded (a retry still delivers what is not out yet)."""
        recorded = await self._pool.fetchval(
            """INSERT INTO notifications (dedup_key, channel, recipient, body)
               VALUES ($1, 'log', 'operations', $2) ON CONFLICT (dedup_key) DO NOTHING
               RETURNING id""",
            req.dedup_key,
            f"{req.subject}\n{req.body}",
        )
        if recorded:
            log.info("report: %s", req.subject)
        if self._roster is not None:
            on_duty, _ = self._roster.on_call(datetime.now(UTC))
            await self.outbound.send(
                Outgoing(
                    key=f"report/{req.dedup_key}/{on_duty.address}",
                    kind=MessageKind.REPORT,
                    address=on_duty.address,
                    body=f"FactoryLM report: {req.subject}\n{req.body}",
                    fallback=on_duty.fallback,
                )
            )
        return recorded is not None
