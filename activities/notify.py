"""Messages to people. Every message is recorded once (by a dedup key) whatever the channel.

The foundation sends through the `log` channel; WhatsApp (Twilio) plugs in behind the same
activity.
"""

from __future__ import annotations

import logging

import asyncpg
from temporalio import activity

from factorylm.models import RequestApprovalInput, SendReportInput

log = logging.getLogger(__name__)


def approval_text(req: RequestApprovalInput) -> str:
    p = req.proposal
    return (
        f"FactoryLM: {req.alert.describe()}.\n"
        f"Proposed action: {p.action} — {p.description}. {p.reason}.\n"
        f"Reply YES {req.code} to approve or NO {req.code} to deny."
    )


class NotifyActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="request_approval")
    async def request_approval(self, req: RequestApprovalInput) -> int:
        body = approval_text(req)
        sent = 0
        for recipient in req.recipients:
            inserted = await self._pool.fetchval(
                """INSERT INTO notifications (dedup_key, channel, recipient, body, workflow_id)
                   VALUES ($1, 'log', $2, $3, $4) ON CONFLICT (dedup_key) DO NOTHING
                   RETURNING id""",
                f"approval/{req.workflow_id}/{req.code}/{recipient}",
                recipient,
                body,
                req.workflow_id,
            )
            if inserted is not None:
                log.info("approval request to %s: %s", recipient, body.replace("\n", " "))
                sent += 1
        return sent

    @activity.defn(name="send_report")
    async def send_report(self, req: SendReportInput) -> bool:
        """A report for the operations channel; False when this report was already sent."""
        inserted = await self._pool.fetchval(
            """INSERT INTO notifications (dedup_key, channel, recipient, body)
               VALUES ($1, 'log', 'operations', $2) ON CONFLICT (dedup_key) DO NOTHING
               RETURNING id""",
            req.dedup_key,
            f"{req.subject}\n{req.body}",
        )
        if inserted is not None:
            log.info("report: %s", req.subject)
        return inserted is not None
