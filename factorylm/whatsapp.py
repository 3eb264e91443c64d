"""WhatsApp (and SMS) through Twilio: sending, reading replies, checking webhook signatures.

Inside WhatsApp's 24-hour customer-service window a free-form message is allowed; outside it
only an approved content template is, so requests to a number that has not written to us for
a day go out as the configured template with the request's details as its variables.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from factorylm.settings import Settings, reveal

SESSION_WINDOW = timedelta(hours=24)
# Twilio refuses a WhatsApp body longer than this (error 21617).
WHATSAPP_MAX_CHARS = 1600


def clip(text: str, limit: int, *, more: str = "…") -> str:
    """At most `limit` characters, cut at a word where one is near, marked as cut."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(more))]
    space = cut.rfind(" ")
    if space > len(cut) - 40:
        cut = cut[:space]
    return cut.rstrip() + more


def fit_whatsapp(body: str, link: str | None = None) -> str:
    """A body Twilio accepts: cut to the limit, ending with where to read the rest."""
    if len(body) <= WHATSAPP_MAX_CHARS:
        return body
    end = f" … (cut; full text: {link})" if link else " … (cut)"
    return body[: WHATSAPP_MAX_CHARS - len(end)] + end


# "ok" is not among the words: people send it as an acknowledgement ("ok, on my way"), and an
# acknowledgement must never approve a PLC write.
_REPLY = re.compile(
    r"^\s*(?P<word>yes|y|approve|approved|no|n|deny|denied|reject)\b[\s:#-]*(?P<code>\d{4})?\s*[.!]*\s*$",
    re.IGNORECASE,
)
_YES = {"yes", "y", "approve", "approved"}


@dataclass(frozen=True)
class Reply:
    approve: bool
    code: str | None


def parse_reply(text: str) -> Reply | None:
    """'YES 4821', 'no 4821', 'Yes' → a decision; anything else is not an approval reply."""
    match = _REPLY.match(text)
    if not match:
        return None
    return Reply(approve=match["word"].lower() in _YES, code=match["code"])


# "ACK" or "ACK 4821": an alert acknowledged, its escalation stopped. Never an approval.
_ACK = re.compile(r"^\s*(?:ack|acknowledged?)\b[\s:#-]*(?P<code>\d{4})?\s*[.!]*\s*$", re.IGNORECASE)


def parse_ack(text: str) -> tuple[bool, str | None]:
    """(True, code or None) for an acknowledgement, (False, None) for anything else."""
    match = _ACK.match(text)
    return (True, match["code"]) if match else (False, None)


# Twilio's delivery statuses, in the order a message goes through them; a callback never
# moves a message backwards (callbacks can arrive out of order).
STATUS_RANK = {
    "accepted": 0, "scheduled": 0, "queued": 0, "sending": 1, "sent": 1,
    "delivered": 2, "read": 2, "failed": 3, "undelivered": 3, "canceled": 3,
}  # fmt: skip
# The outbox's states for them: queued → sent → delivered | failed. A row is `queued` from
# before it is handed to Twilio until Twilio reports it sent (its message SID says whether
# Twilio has it).
STATE_OF = {0: "queued", 1: "sent", 2: "delivered", 3: "failed"}


class SendRejected(Exception):
    """Twilio answered and refused the message (a 4xx: bad number, template, window). Sending
    it again changes nothing; the person's other channel may work."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"Twilio error {code}: {message}")
        self.code = code


def signature_ok(auth_token: str, url: str, form: dict[str, str], signature: str) -> bool:
    """Twilio signs the public URL it called plus the sorted form fields, blanks included."""
    return bool(signature) and RequestValidator(auth_token).validate(url, form, signature)


def in_session(last_inbound: datetime | None, now: datetime) -> bool:
    return last_inbound is not None and now - last_inbound < SESSION_WINDOW


def status_callback_url(settings: Settings, message_id: int) -> str:
    """Where Twilio reports this message's delivery (api/twilio_status.py); the outbox row's id
    rides along, so a callback for a send whose answer was lost still finds its row."""
    return f"{settings.public_url.rstrip('/')}/webhooks/twilio/status?m={message_id}"


class WhatsAppSender:
    """Blocking (the twilio client is): call it from a thread. Raises SendRejected when Twilio
    refuses a message; any other error (5xx, timeout, network) may be retried, and after a
    timeout the message may have gone out all the same."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = Client(
            settings.twilio_account_sid,
            reveal(settings.twilio_auth_token),
            http_client=TwilioHttpClient(timeout=settings.twilio_timeout_s),
        )
        if settings.twilio_api_base_url:
            self._client.api.base_url = settings.twilio_api_base_url.rstrip("/")

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.twilio_account_sid and settings.twilio_auth_token)

    def _create(self, callback: str | None, **fields: str) -> str:
        if callback:
            fields["status_callback"] = callback
        try:
            message = self._client.messages.create(**fields)
        except TwilioRestException as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                raise SendRejected(exc.code, exc.msg) from None
            raise
        return str(message.sid)

    def send_text(self, to: str, body: str, callback: str | None = None) -> str:
        return self._create(callback, from_=self._settings.twilio_whatsapp_from, to=to, body=body)

    def send_sms(self, to: str, body: str, callback: str | None = None) -> str:
        return self._create(callback, from_=self._settings.twilio_sms_from, to=to, body=body)

    def send_template(self, to: str, variables: dict[str, str], callback: str | None = None) -> str:
        return self._create(
            callback,
            from_=self._settings.twilio_whatsapp_from,
            to=to,
            content_sid=self._settings.twilio_approval_template_sid,
            content_variables=json.dumps(variables),
        )
