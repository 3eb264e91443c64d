"""The one outbound message path: an outbox row per message, then Twilio, then its callbacks.

Every message to a person — approval requests, escalations, pages, notices, summaries,
outcome requests, reports, collector and health alerts, the Monkey's — goes through
`Outbound.send`:

1. a row in `outbound_messages` under the message's idempotency key (and its line in
   `notifications`, the record of what was said), state `queued`, before any Twilio call;
2. the attempt is marked (`attempts`, `in_flight`), then the message is handed to Twilio with a
   status-callback URL naming the row; Twilio's SID is recorded;
3. Twilio's status callbacks (api/twilio_status.py) move the row to `sent`, `delivered` or
   `failed` (with the error code) — never backwards.

At least once, no silent loss: the row exists before the send, and a send that raised leaves it
`queued` without a SID, so the caller's retry (a Temporal activity retry, or the ingest's)
sends it again. A crash between Twilio taking the message and the SID being recorded cannot be
told apart from a send that never happened, so the retry sends again; that resend is counted in
the row's `duplicates` (the previous attempt was still `in_flight`). A message Twilio refuses
outright (a 4xx) is not retried: it is `failed`, and the person's SMS number is tried once
when one is configured (`fallback`). A message that reached nobody on any channel is reported
back, so an approval or page escalates at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from factorylm.models.messages import MessageKind
from factorylm.settings import Settings
from factorylm.whatsapp import (
    STATE_OF,
    STATUS_RANK,
    SendRejected,
    WhatsAppSender,
    fit_whatsapp,
    status_callback_url,
)

log = logging.getLogger(__name__)

_RANK = {"queued": 0, "sent": 1, "delivered": 2, "failed": 3}


def channel_of(address: str, twilio: bool) -> str:
    if not twilio:
        return "log"
    if address.startswith("whatsapp:"):
        return "whatsapp"
    if address.startswith("+"):
        return "sms"
    return "log"  # "operations" and other named sinks: recorded, not sent


@dataclass(frozen=True)
class Outgoing:
    key: str
    kind: MessageKind
    address: str
    body: str
    workflow_id: str | None = None
    run_id: str | None = None
    code: str | None = None
    fallback: str | None = None
    template: dict[str, str] | None = None  # WhatsApp content variables, outside the window


@dataclass(frozen=True)
class Unreached:
    """A message that reached nobody: its workflow, code and the person's first address."""

    message_id: int
    kind: str
    workflow_id: str | None
    run_id: str | None
    code: str | None
    address: str
    error: str


class Outbound:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._sender = WhatsAppSender(settings) if WhatsAppSender.configured(settings) else None

    @property
    def twilio(self) -> bool:
        return self._sender is not None

    async def handed_over(self, key: str) -> bool:
        """True when the message under `key` already went out or failed for good: a repeat
        of its send changes nothing."""
        state = await self._pool.fetchrow(
            "SELECT state, message_sid, channel FROM outbound_messages WHERE idem_key = $1", key
        )
        return state is not None and (
            state["message_sid"] is not None or state["state"] != "queued"
        )

    async def send(self, msg: Outgoing) -> asyncpg.Record:
        """The message's row after this attempt: `queued` with a SID once Twilio has it,
        `failed` when refused (after any SMS fallback, whose row is returned instead)."""
        body = fit_whatsapp(msg.body)
        channel = channel_of(msg.address, self.twilio)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO outbound_messages
                       (idem_key, kind, channel, address, body, workflow_id, run_id, code,
                        fallback)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (idem_key) DO UPDATE SET idem_key = EXCLUDED.idem_key
                   RETURNING *""",
                msg.key,
                msg.kind.value,
                channel,
                msg.address,
                body,
                msg.workflow_id,
                msg.run_id,
                msg.code,
                msg.fallback if channel == "whatsapp" else None,
            )
            await conn.execute(
                """INSERT INTO notifications (dedup_key, channel, recipient, body, workflow_id)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedup_key) DO NOTHING""",
                msg.key,
                channel,
                msg.address,
                body,
                msg.workflow_id,
            )
        if row["message_sid"] is not None or row["state"] != "queued":
            if row["state"] == "failed" and row["fallback"]:
                return await self._fallback(row)  # a retry after the fallback's own crash
            return row  # a retry of a message already handed over
        return await self._hand_over(row, msg.template)

    async def _hand_over(
        self, row: asyncpg.Record, template: dict[str, str] | None
    ) -> asyncpg.Record:
        # Marked before the call: if the process dies inside it, the next attempt knows the
        # message may already be out, and counts the resend.
        row = await self._pool.fetchrow(
            """UPDATE outbound_messages SET attempts = attempts + 1,
                   duplicates = duplicates + in_flight::int, in_flight = true, updated_at = now()
               WHERE id = $1 RETURNING *""",
            row["id"],
        )
        if row["channel"] == "log":
            log.info("message to %r: %r", row["address"], row["body"])
            return await self._pool.fetchrow(
                """UPDATE outbound_messages SET state = 'sent', in_flight = false,
                       sent_at = now(), updated_at = now() WHERE id = $1 RETURNING *""",
                row["id"],
            )
        assert self._sender is not None
        callback = status_callback_url(self._settings, row["id"])
        try:
            sid = await asyncio.to_thread(self._call, row, template, callback)
        except SendRejected as exc:
            row = await self._pool.fetchrow(
                """UPDATE outbound_messages SET state = 'failed', error_code = $2,
                       in_flight = false, updated_at = now() WHERE id = $1 RETURNING *""",
                row["id"],
                str(exc.code) if exc.code is not None else "rejected",
            )
            log.warning("Twilio refused message %s to %r: %s", row["id"], row["address"], exc)
            return await self._fallback(row)
        except Exception as exc:
            # Twilio answered with an error (5xx, 429): it did not take the message, so the
            # retry is no duplicate. A timeout or a dropped connection says nothing: in_flight
            # stays set, and a resend is counted.
            if getattr(exc, "status", None) is not None:
                await self._pool.execute(
                    "UPDATE outbound_messages SET in_flight = false WHERE id = $1", row["id"]
                )
            raise
        # A status callback may have come first and adopted the SID: keep the first one.
        return await self._pool.fetchrow(
            """UPDATE outbound_messages SET message_sid = coalesce(message_sid, $2),
                   twilio_status = coalesce(twilio_status, 'queued'), in_flight = false,
                   sent_at = now(), updated_at = now()
               WHERE id = $1 RETURNING *""",
            row["id"],
            sid,
        )

    def _call(self, row: asyncpg.Record, template: dict[str, str] | None, callback: str) -> str:
        assert self._sender is not None
        if row["channel"] == "sms":
            return self._sender.send_sms(row["address"], row["body"], callback)
        if template is not None:
            return self._sender.send_template(row["address"], template, callback)
        return self._sender.send_text(row["address"], row["body"], callback)

    async def _fallback(self, failed: asyncpg.Record) -> asyncpg.Record:
        """The person's SMS number for a failed WhatsApp message, once; else the failed row."""
        if not failed["fallback"] or not self._settings.twilio_sms_from:
            return failed
        row = await self._pool.fetchrow(
            """INSERT INTO outbound_messages
                   (idem_key, kind, channel, address, body, workflow_id, run_id, code,
                    fallback_of)
               SELECT idem_key || '/sms', kind, 'sms', fallback, body, workflow_id, run_id,
                      code, id
               FROM outbound_messages WHERE id = $1
               ON CONFLICT (idem_key) DO UPDATE SET idem_key = EXCLUDED.idem_key
               RETURNING *""",
            failed["id"],
        )
        log.info("message %s failed on WhatsApp; sending it by SMS (%s)", failed["id"], row["id"])
        if row["message_sid"] is not None or row["state"] != "queued":
            return row
        return await self._hand_over(row, None)

    # -- status callbacks ------------------------------------------------------------------
    async def on_status(
        self, message_id: int | None, sid: str, status: str, error_code: str
    ) -> tuple[asyncpg.Record | None, Unreached | None]:
        """Apply one status callback. Returns the row (None when it names no message of
        ours) and, when the message has now reached nobody on any channel, who to tell."""
        rank = STATUS_RANK.get(status)
        if rank is None:
            return None, None
        state = STATE_OF[rank]
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT * FROM outbound_messages
                   WHERE (id = $1 AND (message_sid IS NULL OR message_sid = $2))
                      OR message_sid = $2
                   ORDER BY message_sid IS NULL LIMIT 1 FOR UPDATE""",
                message_id,
                sid,
            )
            if row is None:
                if message_id is not None:
                    # The row has another SID: a resend's first copy (its answer was lost).
                    log.info(
                        "status %s for an earlier copy (%s) of message %s", status, sid, message_id
                    )
                return None, None
            if _RANK[state] <= _RANK[row["state"]] and row["message_sid"] is not None:
                return row, None  # late or repeated: the row already knows more
            if _RANK[state] < _RANK[row["state"]]:
                state = row["state"]  # only the SID is news (adopted from an early callback)
            row = await conn.fetchrow(
                """UPDATE outbound_messages SET message_sid = coalesce(message_sid, $2),
                       state = $3, twilio_status = $4, error_code = nullif($5, ''),
                       updated_at = now()
                   WHERE id = $1 RETURNING *""",
                row["id"],
                sid,
                state,
                status,
                error_code,
            )
        if row["state"] != "failed":
            return row, None
        log.warning(
            "message %s to %r %s (Twilio error %s)", row["id"], row["address"], status, error_code
        )
        if row["channel"] == "whatsapp" and row["fallback"] and self._settings.twilio_sms_from:
            try:
                sms = await self._fallback(row)
            except Exception as exc:
                # Nothing retries a callback's work: rather than wait on an SMS that may never
                # go, the person counts as unreached (the SMS row stays queued, visible).
                log.warning("SMS fallback for message %s not sent: %s", row["id"], exc)
                return row, await self._unreached(row, f"{status}; SMS not sent: {exc}")
            if sms["state"] != "failed":
                return row, None
            row = sms
        return row, await self._unreached(row, f"{status} (Twilio error {error_code or '?'})")

    async def _unreached(self, row: asyncpg.Record, error: str) -> Unreached | None:
        """Who to tell that `row` (the last channel tried) reached nobody, once per message."""
        first = row
        if row["fallback_of"] is not None:
            first = await self._pool.fetchrow(
                "SELECT * FROM outbound_messages WHERE id = $1", row["fallback_of"]
            )
        claimed = await self._pool.fetchval(
            """UPDATE outbound_messages SET escalated = true
               WHERE id = $1 AND NOT escalated RETURNING id""",
            first["id"],
        )
        if claimed is None:
            return None
        return Unreached(
            message_id=first["id"],
            kind=first["kind"],
            workflow_id=first["workflow_id"],
            run_id=first["run_id"],
            code=first["code"],
            address=first["address"],
            error=error,
        )

    async def unclaim(self, failed: Unreached) -> None:
        """The workflow could not be told: a later callback may tell it."""
        await self._pool.execute(
            "UPDATE outbound_messages SET escalated = false WHERE id = $1", failed.message_id
        )

    async def unreached_now(self, row: asyncpg.Record) -> bool:
        """True when `send` ended with every channel refused (claimed: told only once)."""
        if row["state"] != "failed":
            return False
        return await self._unreached(row, f"refused (Twilio error {row['error_code']})") is not None
