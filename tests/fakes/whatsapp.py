"""A fake WhatsApp Cloud API (Meta's Graph API for one business phone number) and its webhooks,
faithful in what Switchboard relies on, served over loopback.

- Every call needs `Authorization: Bearer <access token>`; a token Meta does not know, or one
  that expired (`expire_token`), gets 401 with Graph error code 190 (OAuthException).
- `GET /{version}/{phone_number_id}`: the number (display number, verified name, quality rating).
  An id that is not the account's number gets code 100, subcode 33, as Graph answers for any
  object it cannot load.
- `POST /{version}/{phone_number_id}/messages`: `messaging_product: whatsapp`, `to` in digits,
  and a `template` (name and language among the approved `templates`, as many body parameters
  as the template has: 132001 with HTTP 404 and 132000 otherwise) or `text.body`; answers
  `{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id": "wamid…",
  "message_status": "accepted"}]}`. Every message accepted is recorded (`accepted`).
- What becomes of a message comes later, as on the real Cloud API: `process()` makes the
  status notifications of every message not yet processed — sent, delivered (and read for the
  `readers`), or failed with 131026 for a number not on WhatsApp, 131047 for text to someone
  who has not written in 24 hours, 131050 for a template to someone who stopped marketing
  messages — with our `biz_opaque_callback_data`. `incoming(number, text)` is a person writing
  to the school. `post_notifications` posts them signed with `X-Hub-Signature-256` (the app
  secret's HMAC-SHA256 of the body, computed here independently of the code under test).
- `verification_request` is the GET Meta makes when the webhook address is saved.

Faults: `rate_limit` makes sends beyond that many in any `rate_window` (a second) fail as Meta's
throughput limit does — HTTP 400 with code 130429, not 429 —; `refuse_next` answers the next
sends with the given Graph error codes; `failing` answers 503 (code 2, "Service temporarily
unavailable"); `hang_after_accept` makes that many sends be accepted and then never answered.

Relied on: the same Meta documents as app/providers/whatsapp.py (send messages, templates,
error codes with their HTTP statuses, status and received-message webhook payloads, webhook
verification requests and signatures, the phone number node).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")
ERROR_TITLES = {
    2: "Service temporarily unavailable",
    100: "Invalid parameter",
    131009: "Parameter value is not valid",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131050: "Unable to deliver the message. This recipient has chosen to stop receiving "
    "marketing messages on WhatsApp from your business",
    131051: "Unsupported message type",
    130429: "Rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    190: "Invalid OAuth access token - Cannot parse access token",
}
# The HTTP status Meta gives each code (most are 400).
ERROR_STATUSES = {2: 503, 190: 401, 132001: 404}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Accepted:
    wamid: str
    to: str
    kind: str  # "template" or "text"
    body: dict[str, Any]
    processed: bool = False


@dataclass
class FakeWhatsApp:
    access_token: str = field(default_factory=lambda: "EAAG" + secrets.token_urlsafe(24))
    app_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    phone_number_id: str = "106540352242922"
    business_account_id: str = "102290129340398"
    display_phone_number: str = "+1 555-0100"
    quality_rating: str = "GREEN"
    templates: dict[tuple[str, str], int] = field(
        default_factory=lambda: {("lesson_reminder", "en"): 2, ("concert", "en_US"): 0}
    )  # (name, language) → how many body parameters
    not_on_whatsapp: set[str] = field(default_factory=set)  # digits, as `to` is sent
    stopped_marketing: set[str] = field(default_factory=set)
    wrote_lately: set[str] = field(default_factory=set)  # inside the 24-hour window
    readers: set[str] = field(default_factory=set)  # read receipts on
    rate_limit: int = 0  # sends a second; 0: no limit
    rate_window: float = 1.0  # seconds the limit counts over (longer: no flakiness)
    refuse_next: list[int] = field(default_factory=list)
    failing: bool = False
    hang_after_accept: int = 0
    seen: list[Seen] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    outbox: list[bytes] = field(default_factory=list)  # notifications not yet posted
    _expired: bool = False
    _recent: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{version}/{number}/messages", self._send, methods=["POST"]),
                Route("/{version}/{number}", self._number, methods=["GET"]),
            ]
        )

    def expire_token(self) -> None:
        self._expired = True

    def sent(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (s.method, s.path) == (method, path)]

    @property
    def message_count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def process(self) -> None:
        """Meta hands every message not yet processed on: one notification per status."""
        with self._lock:
            for message in self.accepted:
                if message.processed:
                    continue
                message.processed = True
                failure = self._failure(message)
                if failure:
                    self.outbox.append(self._status(message, "failed", failure))
                    continue
                for status in ("sent", "delivered"):
                    self.outbox.append(self._status(message, status))
                if message.to in self.readers:
                    self.outbox.append(self._status(message, "read"))

    def incoming(self, number: str, text: str) -> str:
        """A person writes to the school's number; the id of their message."""
        wamid = _wamid()
        value = {
            "messaging_product": "whatsapp",
            "metadata": self._metadata(),
            "contacts": [{"profile": {"name": "A parent"}, "wa_id": number}],
            "messages": [
                {
                    "from": number,
                    "id": wamid,
                    "timestamp": str(int(time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
        with self._lock:
            self.wrote_lately.add(number)
            self.outbox.append(self._notification(value))
        return wamid

    def signature(self, body: bytes, secret: str | None = None) -> str:
        key = (self.app_secret if secret is None else secret).encode()
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    async def post_notifications(self, url: str, *, secret: str | None = None) -> list[int]:
        """Post every notification made and not yet posted, signed; the statuses answered."""
        with self._lock:
            bodies, self.outbox = self.outbox, []
        answers = []
        async with httpx.AsyncClient(timeout=10) as client:
            for body in bodies:
                headers = {
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": self.signature(body, secret),
                }
                answers.append((await client.post(url, content=body, headers=headers)).status_code)
        return answers

    def verification_request(self, verify_token: str) -> dict[str, str]:
        """The query of Meta's GET when the webhook address is saved in the app's dashboard."""
        return {
            "hub.mode": "subscribe",
            "hub.challenge": str(secrets.randbelow(10**10)),
            "hub.verify_token": verify_token,
        }

    # --- the API --------------------------------------------------------------------------------

    async def _number(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "verified_name": "Riverside Music School",
                "code_verification_status": "VERIFIED",
                "display_phone_number": self.display_phone_number,
                "quality_rating": self.quality_rating,
                "id": self.phone_number_id,
            }
        )

    async def _send(self, request: Request) -> Response:
        raw = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self._too_fast():
            return _graph_error(
                130429, "Cloud API message throughput has been reached.", status=400
            )
        with self._lock:
            scripted = self.refuse_next.pop(0) if self.refuse_next else None
        if scripted is not None:
            return _graph_error(scripted, "Scripted refusal.")
        try:
            body = json.loads(raw)
        except ValueError:
            return _graph_error(100, "The request body is not JSON.")
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return _graph_error(100, "The parameter messaging_product is required.")
        to = body.get("to")
        if not isinstance(to, str) or not to.isdigit() or not 7 <= len(to) <= 15:
            return _graph_error(131009, "The parameter to is not a valid phone number.")
        kind = body.get("type", "text")
        problem = self._problem(kind, body)
        if problem is not None:
            return problem
        message = Accepted(_wamid(), to, kind, body)
        with self._lock:
            self.accepted.append(message)
            hang = self.hang_after_accept > 0
            if hang:
                self.hang_after_accept -= 1
        if hang:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=200)
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": message.wamid, "message_status": "accepted"}],
            }
        )

    def _problem(self, kind: Any, body: dict[str, Any]) -> Response | None:
        if kind == "text":
            text = body.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("body"), str):
                return _graph_error(100, "The parameter text['body'] is required.")
            return None
        if kind != "template":
            return _graph_error(131051, "Message type is not currently supported.")
        template = body.get("template")
        if not isinstance(template, dict):
            return _graph_error(100, "The parameter template is required.")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        expected = self.templates.get((str(template.get("name")), str(code)))
        if expected is None:
            return _graph_error(
                132001, f"template name ({template.get('name')}) does not exist in {code}"
            )
        given = 0
        for component in template.get("components") or []:
            if isinstance(component, dict) and component.get("type") == "body":
                given += len(component.get("parameters") or [])
        if given != expected:
            return _graph_error(
                132000,
                f"body: number of localizable_params ({given}) does not match the "
                f"expected number of params ({expected})",
            )
        return None

    # --- pieces ---------------------------------------------------------------------------------

    def _failure(self, message: Accepted) -> tuple[int, str] | None:
        if message.to in self.not_on_whatsapp:
            return 131026, "Message Undeliverable."
        if message.kind == "text" and message.to not in self.wrote_lately:
            return (
                131047,
                "Message failed to send because more than 24 hours have passed since the "
                "customer last replied to this number.",
            )
        if message.kind == "template" and message.to in self.stopped_marketing:
            return (
                131050,
                "Unable to deliver the message. This recipient has chosen to stop receiving "
                "marketing messages on WhatsApp from your business.",
            )
        return None

    def _status(
        self, message: Accepted, status: str, failure: tuple[int, str] | None = None
    ) -> bytes:
        report: dict[str, Any] = {
            "id": message.wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": message.to,
        }
        opaque = message.body.get("biz_opaque_callback_data")
        if opaque:
            report["biz_opaque_callback_data"] = opaque
        if failure is None:
            report["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "utility"}
        else:
            code, details = failure
            report["errors"] = [
                {
                    "code": code,
                    "title": ERROR_TITLES.get(code, "Error"),
                    "message": ERROR_TITLES.get(code, "Error"),
                    "error_data": {"details": details},
                }
            ]
        value = {
            "messaging_product": "whatsapp",
            "metadata": self._metadata(),
            "statuses": [report],
        }
        return self._notification(value)

    def _metadata(self) -> dict[str, str]:
        digits = re.sub(r"\D", "", self.display_phone_number)
        return {"display_phone_number": digits, "phone_number_id": self.phone_number_id}

    def _notification(self, value: dict[str, Any]) -> bytes:
        return json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": self.business_account_id,
                        "changes": [{"value": value, "field": "messages"}],
                    }
                ],
            }
        ).encode()

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
            return _graph_error(2, "Service temporarily unavailable", status=503)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(
            token.encode(), self.access_token.encode()
        ):
            return _graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        if self._expired:
            return _graph_error(
                190,
                "Error validating access token: Session has expired on Friday, 01-Mar-24 "
                "00:00:00 PST.",
                subcode=463,
            )
        if not VERSION.match(request.path_params["version"]):
            return _graph_error(100, "Unknown path components", status=400)
        if request.path_params["number"] != self.phone_number_id:
            number = request.path_params["number"]
            return _graph_error(
                100,
                f"Unsupported post request. Object with ID '{number}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
                subcode=33,
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


def _wamid() -> str:
    return (
        "wamid." + base64.b64encode(b"\x15\x02\x00\x11\x18\x12" + secrets.token_bytes(18)).decode()
    )


def _graph_error(
    code: int, details: str, *, status: int | None = None, subcode: int | None = None
) -> JSONResponse:
    title = ERROR_TITLES.get(code, "Error")
    error: dict[str, Any] = {
        "message": f"(#{code}) {title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "A" + secrets.token_urlsafe(16),
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return JSONResponse({"error": error}, status_code=status or ERROR_STATUSES.get(code, 400))
