"""POST /webhooks/twilio/status: Twilio reports what became of a message we sent.

Signed like the inbound webhook (X-Twilio-Signature over the configured public URL, query
included): anything else is refused with 403 and changes nothing. The callback moves the
message's outbox row (queued → sent → delivered | failed, never backwards); a WhatsApp message
that failed goes to the person's SMS number when they have one; a message that reached nobody
on any channel tells its workflow at once (`delivery_failed`), so an approval request or a page
goes to the next person instead of waiting out its timer.
"""

from __future__ import annotations

import logging

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.outbound import Outbound, Unreached
from api.twilio_signed import signed_form
from factorylm.models.messages import DeliveryFailure
from factorylm.settings import Settings
from workflows.drift_response import DriftResponseWorkflow

log = logging.getLogger(__name__)

STATUS_PATH = "/webhooks/twilio/status"
_ESCALATING_KINDS = ("approval", "page")


class TwilioStatusWebhook:
    def __init__(self, settings: Settings, client: Client, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._client = client
        self._outbound = Outbound(pool, settings)

    async def handle(self, request: Request) -> Response:
        form = await signed_form(request, self._settings, "Twilio status callback")
        if isinstance(form, Response):
            return form
        sid = form.get("MessageSid", "")
        status = form.get("MessageStatus", "")
        if not sid or not status:
            return Response("MessageSid and MessageStatus are required", status_code=400)
        if form.get("AccountSid") != self._settings.twilio_account_sid:
            return Response("not this account's message", status_code=400)
        ref = request.query_params.get("m", "")
        message_id = int(ref) if ref.isdigit() and len(ref) < 19 else None
        _row, unreached = await self._outbound.on_status(
            message_id, sid, status, form.get("ErrorCode", "")[:16]
        )
        if unreached is not None:
            await self._escalate(unreached)
        # Twilio needs only a 2xx; the body is not read.
        return Response(status_code=204)

    async def _escalate(self, failed: Unreached) -> None:
        if failed.kind not in _ESCALATING_KINDS or not failed.workflow_id or not failed.code:
            return
        handle = self._client.get_workflow_handle(failed.workflow_id, run_id=failed.run_id or None)
        try:
            await handle.signal(
                DriftResponseWorkflow.delivery_failed,
                DeliveryFailure(code=failed.code, address=failed.address, error=failed.error),
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                await self._outbound.unclaim(failed)
                raise
            log.info(
                "workflow %r has ended; its failed message needs no escalation", failed.workflow_id
            )
