"""A fake SendGrid v3 API and Event Webhook, faithful in what Switchboard relies on, served over
loopback.

- Every call needs `Authorization: Bearer <API key>`: 401 with SendGrid's errors object for a
  key it does not know; a key without the `mail.send` scope gets 403 "access forbidden" from
  Mail Send.
- `GET /v3/scopes`: the key's scopes.
- `POST /v3/mail/send`: checks what SendGrid checks before it accepts (personalizations with
  `to` addresses, a From address that is a verified sender — 403 otherwise —, a subject,
  content of at least one character with text/plain before text/html, string custom
  arguments) and answers 400 `{"errors": [{"message", "field", "help"}]}` or 202 with no body
  and `X-Message-Id`. Every message accepted is recorded (`accepted`), so tests can count.
- What then becomes of a message is SendGrid's Event Webhook: `process()` makes the events of
  every message not yet processed — "processed" then "delivered", a "bounce" for an address
  the test made bounce, a "dropped" ("Unsubscribed Address") for one it unsubscribed — and
  `post_events` posts them as SendGrid does: a JSON array, signed with ECDSA P-256/SHA-256 over
  the timestamp and the body, in `X-Twilio-Email-Event-Webhook-Signature` (base64 DER) and
  `X-Twilio-Email-Event-Webhook-Timestamp`. `verification_key` is what SendGrid's settings show
  (base64 DER of the public key).

Faults: `rate_limit` answers 429 ("too many requests", with X-RateLimit-* headers) beyond that
many Mail Send requests in any `rate_window` (a second); `failing` answers 503 to everything;
`hang_after_accept` makes that many sends be accepted and then never answered.

Relied on: the same SendGrid documents as app/providers/sendgrid.py ("Send email with Twilio
SendGrid", "Mail Send errors", "Rate limits", "Retrieve a list of scopes", "Event Webhook
Reference", "Getting Started with the Event Webhook Security Features").
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
UNVERIFIED_SENDER = (
    "The from address does not match a verified Sender Identity. Mail cannot be sent until this "
    "error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/"
    "sender-identity/ to see the Sender Identity requirements"
)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Accepted:
    """One message SendGrid took: to whom, with which custom arguments, under which id."""

    message_id: str
    to: str
    custom_args: dict[str, str]
    mail: dict[str, Any]
    processed: bool = False


@dataclass
class FakeSendGrid:
    api_key: str = field(default_factory=lambda: "SG." + secrets.token_urlsafe(16))
    scopes: tuple[str, ...] = ("mail.send", "scopes.read", "user.profile.read")
    verified_senders: set[str] = field(default_factory=lambda: {"office@school.example"})
    rate_limit: int = 0  # Mail Send requests a second before 429; 0: no limit
    rate_window: float = 1.0  # seconds the limit counts over (longer: no flakiness)
    failing: bool = False
    hang_after_accept: int = 0
    bouncing: set[str] = field(default_factory=set)  # addresses whose mail server refuses
    unsubscribed: set[str] = field(default_factory=set)  # on the suppression list
    seen: list[Seen] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # made, not yet posted
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    _recent: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v3/mail/send", self._send, methods=["POST"]),
                Route("/v3/scopes", self._scopes, methods=["GET"]),
            ]
        )

    @property
    def verification_key(self) -> str:
        """The public key as SendGrid's Event Webhook settings show it."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def sent(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (s.method, s.path) == (method, path)]

    @property
    def message_count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def process(self) -> list[dict[str, Any]]:
        """SendGrid handles every message it has not yet: the events that follow."""
        made: list[dict[str, Any]] = []
        with self._lock:
            for message in self.accepted:
                if message.processed:
                    continue
                message.processed = True
                if message.to in self.unsubscribed:
                    made.append(self.event(message, "dropped", reason="Unsubscribed Address"))
                    continue
                made.append(self.event(message, "processed"))
                if message.to in self.bouncing:
                    made.append(
                        self.event(
                            message,
                            "bounce",
                            reason="550 5.1.1 The email account that you tried to reach does "
                            "not exist.",
                            status="5.1.1",
                            type="bounce",
                        )
                    )
                else:
                    made.append(self.event(message, "delivered", response="250 OK"))
            self.events.extend(made)
        return made

    def event(self, message: Accepted, name: str, **fields: Any) -> dict[str, Any]:
        """One event about a message, as the Event Webhook writes it."""
        return {
            "email": message.to,
            "timestamp": int(time.time()),
            "smtp-id": f"<{message.message_id}@ismtpd0001p1lon1.sendgrid.net>",
            "event": name,
            "category": [],
            "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
            "sg_message_id": f"{message.message_id}.filterdrecv-5bd4f7c5b9-abcde-1-"
            f"{secrets.token_hex(4).upper()}-1.0",
            **message.custom_args,  # custom arguments come back at the top of each event
            **fields,
        }

    def signed(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers SendGrid sends with a batch."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
            TIMESTAMP_HEADER: stamp,
        }

    async def post_events(
        self,
        url: str,
        events: list[dict[str, Any]] | None = None,
        *,
        timestamp: int | None = None,
    ) -> httpx.Response:
        """Post `events` (by default every event made and not yet posted) as one signed batch."""
        if events is None:
            with self._lock:
                events, self.events = self.events, []
        body = json.dumps(events).encode()
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, content=body, headers=self.signed(body, timestamp))

    # --- the API --------------------------------------------------------------------------------

    async def _scopes(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        return JSONResponse({"scopes": list(self.scopes)})

    async def _send(self, request: Request) -> Response:
        raw = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self._too_fast():
            reset = str(int(time.time()) + 1)
            return _errors(
                429,
                [(None, "too many requests")],
                {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Remaining": "0"}
                | {"X-RateLimit-Reset": reset},
            )
        if "mail.send" not in self.scopes:
            return _errors(403, [(None, "access forbidden")])
        try:
            mail = json.loads(raw)
        except ValueError:
            return _errors(400, [(None, "Bad Request")])
        if not isinstance(mail, dict):
            return _errors(400, [(None, "Bad Request")])
        sender = mail.get("from")
        from_email = str(sender.get("email", "")) if isinstance(sender, dict) else ""
        if ADDRESS.match(from_email) and from_email not in self.verified_senders:
            return _errors(403, [("from", UNVERIFIED_SENDER)])
        problems = _problems(mail)
        if problems:
            return _errors(400, problems)
        personalization = mail["personalizations"][0]
        message = Accepted(
            message_id=base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()[:22],
            to=personalization["to"][0]["email"],
            custom_args=dict(personalization.get("custom_args") or {}),
            mail=mail,
        )
        with self._lock:
            self.accepted.append(message)
            hang = self.hang_after_accept > 0
            if hang:
                self.hang_after_accept -= 1
        if hang:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=202)
        return Response(status_code=202, headers={"X-Message-Id": message.message_id})

    # --- pieces ---------------------------------------------------------------------------------

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        with self._lock:
            self.seen.append(
                Seen(
                    request.method,
                    request.url.path,
                    {name.lower(): value for name, value in request.headers.items()},
                    body,
                )
            )
        return body

    def _refused(self, request: Request) -> Response | None:
        if self.failing:
            return Response(status_code=503, content=b"Service Unavailable")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not secrets.compare_digest(key.encode(), self.api_key.encode()):
            return _errors(
                401, [(None, "The provided authorization grant is invalid, expired, or revoked")]
            )
        return None

    def _too_fast(self) -> bool:
        if not self.rate_limit:
            return False
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0] >= self.rate_window:
                self._recent.popleft()
            if len(self._recent) >= self.rate_limit:
                return True
            self._recent.append(now)
        return False


def _problems(mail: dict[str, Any]) -> list[tuple[str | None, str]]:
    problems: list[tuple[str | None, str]] = []
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(("personalizations", "You must have at least one personalization."))
    else:
        for index, personalization in enumerate(personalizations):
            to = personalization.get("to") if isinstance(personalization, dict) else None
            if not isinstance(to, list) or not to:
                problems.append(
                    (
                        f"personalizations.{index}.to",
                        "The to array is required for all "
                        "personalization objects, and must have at least one email object with a "
                        "valid email address.",
                    )
                )
                continue
            for number, person in enumerate(to):
                email = person.get("email") if isinstance(person, dict) else None
                if not isinstance(email, str) or not ADDRESS.match(email):
                    problems.append(
                        (
                            f"personalizations.{index}.to.{number}.email",
                            "Does not contain a valid address.",
                        )
                    )
            args = personalization.get("custom_args") or {}
            for name, value in args.items() if isinstance(args, dict) else ():
                if not isinstance(value, str):
                    problems.append(
                        (
                            f"personalizations.{index}.custom_args.{name}",
                            f"Invalid type. Expected: string, given: {type(value).__name__}.",
                        )
                    )
    sender = mail.get("from")
    if not isinstance(sender, dict) or not ADDRESS.match(str(sender.get("email", ""))):
        problems.append(("from.email", "The from email does not contain a valid address."))
    if not isinstance(mail.get("subject"), str) or not mail["subject"]:
        problems.append(
            (
                "subject",
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
            )
        )
    content = mail.get("content")
    if not isinstance(content, list) or not content:
        problems.append(
            (
                "content",
                "Unless a valid template_id is provided, the content "
                "parameter is required. There must be at least one defined content "
                "block. We typically suggest both text/plain and text/html blocks are "
                "included, but only one block is required.",
            )
        )
    else:
        kinds = [part.get("type") if isinstance(part, dict) else None for part in content]
        for index, part in enumerate(content):
            value = part.get("value") if isinstance(part, dict) else None
            if not isinstance(value, str) or not value:
                problems.append(
                    (
                        f"content.{index}.value",
                        "The content value must be a string at least one character in length.",
                    )
                )
        if "text/html" in kinds and "text/plain" in kinds[kinds.index("text/html") :]:
            problems.append(
                (
                    "content",
                    "If present, text/plain and text/html may only be provided in this order, "
                    "followed by any other content.",
                )
            )
    return problems


def _errors(
    status: int,
    problems: list[tuple[str | None, str]],
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {
            "errors": [
                {"message": message, "field": name, "help": None} for name, message in problems
            ]
        },
        status_code=status,
        headers=headers,
    )
