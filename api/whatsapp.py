"""POST /webhooks/twilio/whatsapp: people answer FactoryLM on WhatsApp.

The request must carry Twilio's signature over the configured public URL; anything else is
refused with 403 before it can reach a workflow. Only configured approver numbers are heard.
"YES 4821" / "NO 4821" (or a plain yes/no when exactly one request waits for that number)
become the workflow's `decide` update; any other text is the outcome report of the latest
work order that number was asked about. A message with media files a photo, and a reply to
"Which machine is this?" names a photo's machine (api/whatsapp_photos.py). Every answer is
TwiML telling the person what happened.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode
from twilio.twiml.messaging_response import MessagingResponse

from api.operations import UPDATE_TIMEOUT_S
from api.twilio_signed import signed_form
from factorylm.alarms import alarm_reply
from factorylm.models.approvals import ApprovalDecision
from factorylm.models.messages import Acknowledgement
from factorylm.roster import central_approver_addresses, load_roster
from factorylm.settings import Settings
from factorylm.whatsapp import Reply, parse_ack, parse_reply
from workflows.drift_response import DriftResponseWorkflow
from workflows.outcome_followup import OutcomeFollowUpWorkflow

from .whatsapp_photos import WhatsAppPhotos

log = logging.getLogger(__name__)

HELP = (
    "FactoryLM: reply YES <code> to approve or NO <code> to deny a request, ACK <code> to "
    "acknowledge a page, or describe what you found and fixed after a work order."
)


def twiml(text: str) -> Response:
    reply = MessagingResponse()
    reply.message(text)
    return Response(str(reply), media_type="application/xml")


class WhatsAppWebhook:
    def __init__(
        self,
        settings: Settings,
        client: Client,
        pool: asyncpg.Pool,
        photos: WhatsAppPhotos | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._pool = pool
        self._photos = photos
        # The roster's people on every channel (or the approvers): who is heard.
        self._roster = load_roster(settings)
        # Every site's approvers (a site may name its own); each request is still answerable
        # only by the people it was sent to.
        self._allowed = central_approver_addresses(settings)

    async def handle(self, request: Request) -> Response:
        form = await signed_form(request, self._settings, "WhatsApp webhook")
        if isinstance(form, Response):
            return form
        sender = form.get("From", "")
        # Each message is acted on once: Twilio's MessageSid is covered by the signature, so a
        # captured request replayed later (or a re-delivery) finds its first answer here.
        sid = form.get("MessageSid", "")
        if not sid:
            return Response("MessageSid missing", status_code=400)
        first = await self._pool.fetchrow(
            """INSERT INTO inbound_messages (message_sid, sender) VALUES ($1, $2)
               ON CONFLICT (message_sid) DO NOTHING RETURNING message_sid""",
            sid,
            sender,
        )
        if first is None:
            answer = await self._pool.fetchval(
                "SELECT answer FROM inbound_messages WHERE message_sid = $1", sid
            )
            log.warning("WhatsApp message %r delivered again; not acted on twice", sid)
            return twiml(answer or "This message was already received. Nothing more was done.")
        text = await self._answer(sender, form)
        await self._pool.execute(
            "UPDATE inbound_messages SET answer = $2 WHERE message_sid = $1", sid, text
        )
        return twiml(text)

    async def _answer(self, sender: str, form: dict[str, str]) -> str:
        settings = self._settings
        await self._pool.execute(
            """INSERT INTO whatsapp_sessions (number, last_inbound_at) VALUES ($1, now())
               ON CONFLICT (number) DO UPDATE SET last_inbound_at = now()""",
            sender,
        )
        if sender not in self._allowed:
            log.warning("ignored WhatsApp message from unauthorised %r", sender)
            return "This number is not authorised for FactoryLM. Nothing was done."
        if self._photos is not None and (form.get("NumMedia", "0") or "0") != "0":
            return await self._photos.media_message(sender, form)
        body = form.get("Body", "")
        # SHELVE <code> <time> / UNSHELVE <code>: alarm shelving (factorylm/alarms.py).
        shelving = await alarm_reply(self._pool, sender, body, settings.alarm_shelve_max_s)
        if shelving is not None:
            return shelving
        acked, ack_code = parse_ack(body)
        if acked:
            return await self._acknowledge(sender, ack_code)
        reply = parse_reply(body)
        if reply is not None:
            return await self._decide(sender, reply)
        if self._photos is not None:
            answered = await self._photos.asset_answer(sender, body)
            if answered is not None:
                return answered
        return await self._outcome(sender, body)

    async def _decide(self, sender: str, reply: Reply) -> str:
        if reply.code:
            rows = await self._pool.fetch(
                """SELECT * FROM approval_requests WHERE recipient = $1 AND code = $2
                   ORDER BY requested_at DESC""",
                sender,
                reply.code,
            )
            pending = [r for r in rows if r["status"] == "pending"]
            if not pending:
                if rows:
                    return f"Request {reply.code} is no longer open ({rows[0]['status']}). Nothing was done."
                return f"No request with code {reply.code} was sent to you. Nothing was done."
        else:
            # A plain yes/no names no request: it counts only for one sent to this number
            # less than its timeout ago, so an old "yes" cannot approve a later request.
            pending = await self._still_open(
                await self._pool.fetch(
                    """SELECT * FROM approval_requests
                       WHERE recipient = $1 AND status = 'pending'
                         AND coalesce(expires_at, requested_at + $2 * interval '1 second') > now()""",
                    sender,
                    self._settings.approval_timeout_s,
                )
            )
            if not pending:
                return (
                    "No request is waiting for your answer right now. Nothing was done. "
                    "To answer an older request, reply YES <code> or NO <code>."
                )
            if len(pending) > 1:
                codes = ", ".join(f"{r['code']} ({r['action']})" for r in pending)
                return f"Several requests are waiting: {codes}. Reply YES <code> or NO <code>."
        row = pending[0]
        decision = ApprovalDecision(approve=reply.approve, approver=sender, code=row["code"])
        handle = _run_of(self._client, row)
        try:
            result = await asyncio.wait_for(
                handle.execute_update(DriftResponseWorkflow.decide, decision), UPDATE_TIMEOUT_S
            )
        except TimeoutError:
            log.warning("decision for %r not confirmed in time", row["workflow_id"])
            return (
                f"FactoryLM could not confirm your answer to request {row['code']} (its workers "
                "are not answering). If the request still shows as waiting, reply again."
            )
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause) if exc.cause else "refused"
            return f"Request {row['code']} was not changed: {reason}. Nothing was done."
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return f"Request {row['code']} is no longer open. Nothing was done."
        log.info("%r %s %r via WhatsApp", sender, result, row["workflow_id"])
        if result == "approved":
            return f"Approved: {row['action']} runs now (request {row['code']}). You will get the result."
        return f"Denied: {row['action']} will not run (request {row['code']}). A work order records it."

    async def _still_open(self, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """Drop requests whose workflow has ended without closing them (e.g. terminated by an
        operator), so a plain "yes" is not refused for a request nobody waits on any more."""
        if len(rows) <= 1:
            return rows
        open_rows = []
        for row in rows:
            try:
                desc = await _run_of(self._client, row).describe()
                running = desc.status == WorkflowExecutionStatus.RUNNING
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                running = False
            if running:
                open_rows.append(row)
            else:
                await self._pool.execute(
                    "UPDATE approval_requests SET status = 'expired' WHERE id = $1 AND status = 'pending'",
                    row["id"],
                )
        return open_rows

    async def _acknowledge(self, sender: str, code: str | None) -> str:
        """'ACK' / 'ACK 4821': the page sent to this person (on any of their channels) is
        acknowledged and its escalation stops. A plain ACK counts only when one page waits."""
        person = self._roster.person_at(sender) if self._roster else None
        addresses = list(person.addresses) if person else [sender]
        rows = await self._pool.fetch(
            """SELECT DISTINCT ON (workflow_id, code) workflow_id, run_id, code, body
               FROM outbound_messages
               WHERE kind = 'page' AND address = ANY($1::text[]) AND acked_at IS NULL
                 AND created_at > now() - interval '1 day'
                 AND ($2::text IS NULL OR code = $2)
               ORDER BY workflow_id, code, created_at DESC""",
            addresses,
            code,
        )
        if not rows:
            if code:
                return f"No open page with code {code} was sent to you. Nothing was done."
            return "No page is waiting for your ACK. Nothing was done."
        if len(rows) > 1:
            codes = ", ".join(r["code"] for r in rows)
            return f"Several pages are open: {codes}. Reply ACK <code>."
        row = rows[0]
        handle = self._client.get_workflow_handle(row["workflow_id"], run_id=row["run_id"] or None)
        try:
            await handle.signal(
                DriftResponseWorkflow.acknowledge, Acknowledgement(by=sender, code=row["code"])
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return f"Page {row['code']} is already closed. Nothing was done."
        await self._pool.execute(
            """UPDATE outbound_messages SET acked_at = now(), acked_by = $3
               WHERE kind = 'page' AND workflow_id = $1 AND code = $2 AND acked_at IS NULL""",
            row["workflow_id"],
            row["code"],
            sender,
        )
        log.info("%r acknowledged page %s of %r", sender, row["code"], row["workflow_id"])
        return f"Acknowledged page {row['code']}: nobody else will be paged for it."

    async def _outcome(self, sender: str, text: str) -> str:
        row = await self._pool.fetchrow(
            """SELECT * FROM outcome_requests WHERE recipient = $1 AND status = 'waiting'
               ORDER BY requested_at DESC LIMIT 1""",
            sender,
        )
        if row is None:
            return HELP
        handle = self._client.get_workflow_handle(row["workflow_id"])
        try:
            await handle.signal(OutcomeFollowUpWorkflow.outcome, text)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return HELP
        return f'Thanks — recorded on {row["work_order_id"]}: "{text.strip()}".'


def _run_of(client: Client, request: asyncpg.Record) -> WorkflowHandle[Any, Any]:
    """The run that sent an approval request: every episode on a machine shares the workflow
    id, and a reply must never reach a later episode. Rows from before runs were recorded
    have no run id and mean the latest run."""
    return client.get_workflow_handle(request["workflow_id"], run_id=request["run_id"] or None)
