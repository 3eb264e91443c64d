"""A local Twilio: the Messages resource of the 2010-04-01 REST API, status callbacks, and
inbound webhooks.

Speaks what the official `twilio` client sends (form-encoded POST to
/2010-04-01/Accounts/{AccountSid}/Messages.json with basic auth) and answers with the
documented Message JSON, for WhatsApp (`whatsapp:` addresses) and SMS (E.164 numbers). It keeps
what was sent, so a scenario can read the code a person was given, and it can play that person
by posting a correctly signed inbound webhook.

Like Twilio, it reports each accepted message's delivery to the `StatusCallback` URL the client
passed, signed with X-Twilio-Signature: queued → sent → delivered, or → undelivered / failed with
an ErrorCode for an address a test made unreachable. It can refuse an address outright (a 400
with Twilio's error code), answer 500, or take a message and answer too late (the client times
out although the message went out: the case that makes a duplicate).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator


@dataclass
class SentMessage:
    sid: str
    to: str
    from_: str
    body: str
    content_sid: str | None
    content_variables: str | None
    media_url: list[str]
    created: datetime
    status_callback: str | None = None
    statuses: list[str] = field(default_factory=list)  # as reported to the callback


@dataclass(frozen=True)
class Callback:
    url: str
    form: dict[str, str]
    answered: int  # the HTTP status the callback URL answered (0: unreachable)
    at: float = 0.0  # time.time() when its answer came back


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class FakeTwilio:
    account_sid: str = "ACfake0000000000000000000000000000"
    auth_token: str = "fake-auth-token"
    sent: list[SentMessage] = field(default_factory=list)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    fail_next: int = 0  # answer this many sends with 500, for retry tests
    # Address -> Twilio error code: the create call is refused with a 400 (e.g. 21211 invalid
    # number, 63016 outside the 24-hour window without a template).
    rejected: dict[str, int] = field(default_factory=dict)
    # Address -> Twilio error code: accepted, then reported undelivered (63024, 30003: phone
    # off) to the status callback.
    undeliverable: dict[str, int] = field(default_factory=dict)
    # Take this many messages, then answer only after `stall_s` (the client has given up).
    stall_next: int = 0
    stall_s: float = 5.0
    callback_delay_s: float = 0.02  # between one status and the next
    callbacks: list[Callback] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:24])

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return hmac.compare_digest(header, f"Basic {expected}")

    async def _create_message(self, request: Request) -> Response:
        if request.path_params["sid"] != self.account_sid or not self._authorised(request):
            return JSONResponse(
                {"code": 20003, "message": "Authenticate", "status": 401}, status_code=401
            )
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"code": 20500, "message": "Internal error", "status": 500}, 500)
        form = await request.form()
        to, from_ = str(form.get("To", "")), str(form.get("From", ""))
        body = str(form.get("Body", ""))
        content_sid = form.get("ContentSid")
        whatsapp = to.startswith("whatsapp:") and from_.startswith("whatsapp:")
        sms = bool(_E164.match(to)) and bool(_E164.match(from_))
        if not (whatsapp or sms):
            return JSONResponse(
                {"code": 21211, "message": f"Invalid 'To' Phone Number: {to}", "status": 400}, 400
            )
        if to in self.rejected:
            code = self.rejected[to]
            return JSONResponse(
                {"code": code, "message": f"Message to {to} refused", "status": 400}, 400
            )
        if len(body) > 1600:  # as Twilio answers: the send fails, nothing is delivered
            return JSONResponse(
                {
                    "code": 21617,
                    "message": "The concatenated message body exceeds the 1600 character limit.",
                    "status": 400,
                },
                400,
            )
        if not body and not content_sid:
            return JSONResponse(
                {"code": 21602, "message": "Message body is required.", "status": 400}, 400
            )
        # Twilio's SIDs are unique across accounts and time; so are these (tests share a
        # database, and every test has its own fake).
        sid = f"SM{next(self._ids):08x}{self._prefix}"
        now = datetime.now(UTC)
        message = SentMessage(
            sid=sid,
            to=to,
            from_=from_,
            body=body,
            content_sid=str(content_sid) if content_sid else None,
            content_variables=str(form.get("ContentVariables"))
            if form.get("ContentVariables")
            else None,
            media_url=[str(v) for v in form.getlist("MediaUrl")],
            created=now,
            status_callback=str(form["StatusCallback"]) if form.get("StatusCallback") else None,
        )
        self.sent.append(message)
        if self.stall_next > 0:
            self.stall_next -= 1
            await asyncio.sleep(self.stall_s)
        return JSONResponse(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": from_,
                "body": body,
                "status": "queued",
                "num_media": str(len(message.media_url)),
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": now.strftime("%a, %d %b %Y %H:%M:%S +0000"),
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status_code=201,
            background=BackgroundTask(self._report, message) if message.status_callback else None,
        )

    async def _report(self, message: SentMessage) -> None:
        """Post the message's delivery statuses to its StatusCallback, signed as Twilio signs."""
        assert message.status_callback is not None
        error = self.undeliverable.get(message.to)
        final = "undelivered" if error is not None else "delivered"
        async with httpx.AsyncClient(timeout=10) as http:
            for status in ("queued", "sent", final):
                await asyncio.sleep(self.callback_delay_s)
                form = {
                    "AccountSid": self.account_sid,
                    "ApiVersion": "2010-04-01",
                    "MessageSid": message.sid,
                    "SmsSid": message.sid,
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "From": message.from_,
                    "To": message.to,
                }
                if status == "undelivered":
                    form["ErrorCode"] = str(error)
                if message.to.startswith("whatsapp:"):
                    form["ChannelPrefix"] = "whatsapp"
                signature = sign(self.auth_token, message.status_callback, form)
                try:
                    answer = await http.post(
                        message.status_callback,
                        data=form,
                        headers={"X-Twilio-Signature": signature},
                    )
                    answered = answer.status_code
                except httpx.HTTPError:
                    answered = 0
                message.statuses.append(status)
                self.callbacks.append(
                    Callback(message.status_callback, form, answered, at=time.time())
                )

    async def _media(self, request: Request) -> Response:
        if not self._authorised(request):
            return Response(status_code=401)
        item = self.media.get(request.path_params["media_sid"])
        if item is None:
            return Response(status_code=404)
        return Response(item[0], media_type=item[1])

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/2010-04-01/Accounts/{sid}/Messages.json",
                    self._create_message,
                    methods=["POST"],
                ),
                Route("/media/{media_sid}", self._media),
            ]
        )

    def to(self, recipient: str) -> list[SentMessage]:
        return [m for m in self.sent if m.to == recipient]


def sign(auth_token: str, url: str, form: dict[str, str]) -> str:
    return str(RequestValidator(auth_token).compute_signature(url, form))


async def post_inbound(
    api_url: str, public_url: str, auth_token: str, sender: str, body: str, **extra: str
) -> httpx.Response:
    """Play a person replying on WhatsApp: Twilio's inbound webhook, signed as Twilio signs."""
    path = "/webhooks/twilio/whatsapp"
    form = {
        "MessageSid": f"SM{abs(hash((sender, body, datetime.now(UTC)))):032x}"[:34],
        "AccountSid": "AC",
        "From": sender,
        "To": "whatsapp:+14155238886",
        "Body": body,
        "NumMedia": "0",
        **extra,
    }
    signature = sign(auth_token, public_url.rstrip("/") + path, form)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        return await http.post(path, data=form, headers={"X-Twilio-Signature": signature})
