"""WhatsApp through Twilio: sending, reading replies, checking webhook signatures.

Inside WhatsApp's 24-hour customer-service window a free-form message is allowed; outside it
only an approved content template is, so requests to a number that has not written to us for
a day go out as the configured template with the request's details as its variables.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

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


def signature_ok(auth_token: str, url: str, form: dict[str, str], signature: str) -> bool:
    """Twilio signs the public URL it called plus the sorted form fields, blanks included."""
    return bool(signature) and RequestValidator(auth_token).validate(url, form, signature)


def in_session(last_inbound: datetime | None, now: datetime) -> bool:
    return last_inbound is not None and now - last_inbound < SESSION_WINDOW


class WhatsAppSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = Client(settings.twilio_account_sid, reveal(settings.twilio_auth_token))
        if settings.twilio_api_base_url:
            self._client.api.base_url = settings.twilio_api_base_url.rstrip("/")

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.twilio_account_sid and settings.twilio_auth_token)

    def send_text(self, to: str, body: str) -> str:
        message = self._client.messages.create(
            from_=self._settings.twilio_whatsapp_from, to=to, body=body
        )
        return str(message.sid)

    def send_template(self, to: str, variables: dict[str, str]) -> str:
        message = self._client.messages.create(
            from_=self._settings.twilio_whatsapp_from,
            to=to,
            content_sid=self._settings.twilio_approval_template_sid,
            content_variables=json.dumps(variables),
        )
        return str(message.sid)
