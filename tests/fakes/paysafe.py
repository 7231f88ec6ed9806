"""A fake Paysafe Payments API, faithful in what Switchboard relies on, served over loopback.

- HTTP Basic with the API key's username and password on every call but the monitor; 401 with
  error 5279 otherwise.
- `POST /paymenthub/v1/payments`: one merchant account of one currency (error 5001 for
  another); payments authorised and settled at once (`settleWithAuth`), each with a settlement
  of the payment's own id; cards saved as multi-use payment handles (`card()`), which approve,
  or decline with a code (402, the failed payment and its error in the body), or are held for
  Paysafe's risk review (HELD) until `decide_held()`. `dupCheck`: a
  merchantRefNum used before is refused with 409 and error 5031, whatever became of it.
- `GET /paymenthub/v1/payments?merchantRefNum=` and `/payments/{id}` (404 with 5269). Searches
  by merchantRefNum cover `startDate` to `endDate` (UTC, 2024-05-01T09:30:00Z or 2024-05-01),
  by default the 30 days before now, as Paysafe's do; a payment or refund outside the range is
  not listed. Tests backdate one by its `txnTime`.
- `POST /paymenthub/v1/settlements/{id}/refunds`: never more than the settlement has left
  (400, error 3404), dupCheck likewise; refunds are PENDING until `complete_refunds()`.
  `GET /paymenthub/v1/refunds/{id}` and `?merchantRefNum=`.
- Field errors (5068 with fieldErrors) for a body missing what Paysafe requires.
- Webhooks: with `webhook_url` set, each payment and refund outcome is posted there the way
  Paysafe posts it (eventName, resourceId, payload), signed in the `Signature` header with the
  base64 HMAC-SHA256 of the body under `webhook_key`.

Faults: `failing` answers 503 to everything; `hang_after_accept` takes that many payments (they
are recorded and charged) and then never answers them, as a lost answer. `requests` records
every call, so tests count what reached "Paysafe".

Relied on: the same sources as app/providers/paysafe.py. The code for a refund beyond what is
left (3404) and for an unknown payment handle (5068 on paymentHandleToken) are this fake's
stand-ins: Paysafe's own were not found in its public documentation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

APPROVE = "approve"
HOLD = "hold"  # held for Paysafe's risk review: accepted, decided later (`decide_held`)
# Paysafe's messages for the codes its test system simulates ("Simulating Card Payments").
DECLINES = {
    "3009": "Your request has been declined by the issuing bank.",
    "3022": "The card has been declined due to insufficient funds.",
    "3023": "Your request has been declined by the issuing bank due to its proprietary card "
    "activity regulations.",
    "3007": "Your request has failed the AVS check.",
    "4002": "The transaction was declined by our Risk Management department.",
}


@dataclass
class Seen:
    method: str
    path: str
    query: str
    body: bytes
    authorization: str


@dataclass
class FakePaysafe:
    username: str = "school-test"
    password: str = "B-qa2-0-fake-" + "0" * 16
    currency: str = "USD"
    account_id: str = "1001234567"
    webhook_key: str = ""
    webhook_url: str = ""
    base_url: str = ""  # set by the test once served
    failing: bool = False
    hang_after_accept: int = 0
    requests: list[Seen] = field(default_factory=list)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    cards: dict[str, str] = field(default_factory=dict)  # payment handle token -> outcome
    sent: list[dict[str, Any]] = field(default_factory=list)  # webhooks posted
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        base = "/paymenthub/v1"
        return Starlette(
            routes=[
                Route(f"{base}/monitor", self._monitor, methods=["GET"]),
                Route(f"{base}/payments", self._create_payment, methods=["POST"]),
                Route(f"{base}/payments", self._find_payments, methods=["GET"]),
                Route(f"{base}/payments/{{id}}", self._payment, methods=["GET"]),
                Route(f"{base}/settlements/{{id}}/refunds", self._create_refund, methods=["POST"]),
                Route(f"{base}/refunds", self._find_refunds, methods=["GET"]),
                Route(f"{base}/refunds/{{id}}", self._refund, methods=["GET"]),
            ]
        )

    def card(self, outcome: str = APPROVE) -> str:
        """A card saved as a multi-use payment handle: it approves, or declines with a code."""
        token = "MU" + secrets.token_urlsafe(10)
        self.cards[token] = outcome
        return token

    async def decide_held(self, decline: str = "") -> None:
        """Paysafe's risk review ends: held payments complete, or fail with `decline`'s code;
        each outcome is announced."""
        with self._lock:
            held = [p for p in self.payments.values() if p["status"] == "HELD"]
            for payment in held:
                if decline:
                    payment["status"] = "FAILED"
                    payment["error"] = {"code": decline, "message": DECLINES[decline]}
                else:
                    self._settle(payment)
        for payment in held:
            event = "PAYMENT_FAILED" if decline else "PAYMENT_COMPLETED"
            if self.webhook_url:
                await self._post_webhook(event, dict(payment))

    def charged(self) -> list[dict[str, Any]]:
        """Every payment that took the money."""
        with self._lock:
            return [p for p in self.payments.values() if p["status"] == "COMPLETED"]

    def count(self, method: str, path: str) -> int:
        return sum(seen.method == method and seen.path == path for seen in self.requests)

    async def complete_refunds(self) -> None:
        """The nightly batch: every pending refund goes back to the card (and is announced)."""
        with self._lock:
            pending = [r for r in self.refunds.values() if r["status"] == "PENDING"]
            for refund in pending:
                refund["status"] = "COMPLETED"
        if self.webhook_url:
            for refund in pending:
                await self._post_webhook("REFUND_COMPLETED", dict(refund))

    def notification(
        self, event_name: str, resource: dict[str, Any]
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body of Paysafe's POST of an event about `resource`."""
        body = json.dumps(
            {
                "payload": {"accountId": self.account_id, **_public(resource)},
                "eventType": event_name,
                "attemptNumber": "1",
                "resourceId": resource["id"],
                "eventDate": _now(),
                "links": [],
                "mode": "test",
                "eventName": event_name,
            }
        ).encode()
        digest = hmac.new(self.webhook_key.encode(), body, hashlib.sha256).digest()
        headers = {
            "Content-Type": "application/json",
            "Signature": base64.b64encode(digest).decode(),
        }
        return headers, body

    # --- the API --------------------------------------------------------------------------------

    async def _monitor(self, request: Request) -> Response:
        await self._record(request)
        if self.failing:
            return _unavailable()
        return JSONResponse({"status": "READY"})

    async def _create_payment(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        asked = _parsed(body)
        if asked is None:
            return _error(400, "5023", "You submitted a request that is not parseable.")
        missing = [
            name
            for name in ("merchantRefNum", "amount", "currencyCode", "paymentHandleToken")
            if not asked.get(name)
        ]
        if missing or not isinstance(asked.get("amount"), int) or asked["amount"] <= 0:
            return _field_errors([*missing] or ["amount"])
        if asked["currencyCode"] != self.currency:
            return _error(400, "5001", "Invalid currency", [f"{asked['currencyCode']} not valid"])
        outcome = self.cards.get(str(asked["paymentHandleToken"]))
        if outcome is None:
            return _field_errors(["paymentHandleToken"])
        with self._lock:
            used = any(
                p["merchantRefNum"] == asked["merchantRefNum"] for p in self.payments.values()
            )
            if used and asked.get("dupCheck", True):
                return _duplicate()
            payment = self._new_payment(asked, outcome)
            hang = self.hang_after_accept > 0
            if hang:
                self.hang_after_accept -= 1
        event = {"COMPLETED": "PAYMENT_COMPLETED", "HELD": "PAYMENT_HELD"}.get(
            payment["status"], "PAYMENT_FAILED"
        )
        task = self._webhook_task(event, payment)
        if hang:
            if task is not None:
                await task()
            await _until_gone(request)
            return Response(status_code=204)
        status = 402 if payment["status"] == "FAILED" else 201
        return JSONResponse(_public(payment), status_code=status, background=task)

    async def _find_payments(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        reference = request.query_params.get("merchantRefNum", "")
        window = _window(request)
        if window is None:
            return _field_errors(["startDate", "endDate"])
        with self._lock:
            found = [
                _public(p)
                for p in self.payments.values()
                if p["merchantRefNum"] == reference and _within(p, window)
            ]
        return JSONResponse(
            {"meta": {"numberOfRecords": len(found), "limit": 10, "page": 1}, "payments": found}
        )

    async def _payment(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self._lock:
            payment = self.payments.get(request.path_params["id"])
        if payment is None:
            return _not_found()
        return JSONResponse(_public(payment))

    async def _create_refund(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        asked = _parsed(body)
        if asked is None:
            return _error(400, "5023", "You submitted a request that is not parseable.")
        if not asked.get("merchantRefNum"):
            return _field_errors(["merchantRefNum"])
        with self._lock:
            # With settleWithAuth the settlement has the payment's id.
            payment = self.payments.get(request.path_params["id"])
            if payment is None or payment["status"] != "COMPLETED":
                return _not_found()
            settlement = payment["settlements"][0]
            used = any(
                r["merchantRefNum"] == asked["merchantRefNum"] for r in self.refunds.values()
            )
            if used and asked.get("dupCheck", True):
                return _duplicate()
            amount = asked.get("amount", settlement["availableToRefund"])
            if not isinstance(amount, int) or amount <= 0:
                return _field_errors(["amount"])
            if amount > settlement["availableToRefund"]:
                return _error(
                    400,
                    "3404",
                    "The requested refund amount exceeds the remaining settled amount.",
                    [f"{settlement['availableToRefund']} is left to refund."],
                )
            settlement["availableToRefund"] -= amount
            payment["availableToRefund"] = settlement["availableToRefund"]
            refund = {
                "id": str(uuid.uuid4()),
                "merchantRefNum": asked["merchantRefNum"],
                "amount": amount,
                "currencyCode": payment["currencyCode"],
                "paymentType": "CARD",
                "txnTime": _now(),
                "status": "PENDING",
                "settlementId": settlement["id"],
            }
            self.refunds[refund["id"]] = refund
        return JSONResponse(_public(refund), status_code=201)

    async def _find_refunds(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        reference = request.query_params.get("merchantRefNum", "")
        window = _window(request)
        if window is None:
            return _field_errors(["startDate", "endDate"])
        with self._lock:
            found = [
                _public(r)
                for r in self.refunds.values()
                if r["merchantRefNum"] == reference and _within(r, window)
            ]
        return JSONResponse(
            {"meta": {"numberOfRecords": len(found), "limit": 10, "page": 1}, "refunds": found}
        )

    async def _refund(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self._lock:
            refund = self.refunds.get(request.path_params["id"])
        if refund is None:
            return _not_found()
        return JSONResponse(_public(refund))

    # --- pieces ---------------------------------------------------------------------------------

    def _new_payment(self, asked: dict[str, Any], outcome: str) -> dict[str, Any]:
        payment_id = str(uuid.uuid4())
        amount = int(asked["amount"])
        payment: dict[str, Any] = {
            "id": payment_id,
            "merchantRefNum": asked["merchantRefNum"],
            "amount": amount,
            "currencyCode": asked["currencyCode"],
            "paymentHandleToken": asked["paymentHandleToken"],
            "paymentType": "CARD",
            "settleWithAuth": bool(asked.get("settleWithAuth")),
            "dupCheck": bool(asked.get("dupCheck", True)),
            "txnTime": _now(),
            "liveMode": False,
            "description": asked.get("description", ""),
        }
        if outcome == APPROVE:
            self._settle(payment)
        elif outcome == HOLD:
            payment["status"] = "HELD"
        else:
            payment["status"] = "FAILED"
            payment["error"] = {
                "code": outcome,
                "message": DECLINES.get(outcome, "Your request has been declined."),
            }
        self.payments[payment_id] = payment
        return payment

    @staticmethod
    def _settle(payment: dict[str, Any]) -> None:
        """Authorised and settled at once: the settlement has the payment's id."""
        payment["status"] = "COMPLETED"
        payment["availableToRefund"] = payment["amount"]
        payment["settlements"] = [
            {
                "id": payment["id"],
                "merchantRefNum": payment["merchantRefNum"],
                "amount": payment["amount"],
                "availableToRefund": payment["amount"],
                "status": "PENDING",
            }
        ]

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        self.requests.append(
            Seen(
                request.method,
                request.url.path,
                request.url.query,
                body,
                request.headers.get("authorization", ""),
            )
        )
        return body

    def _refused(self, request: Request) -> Response | None:
        if self.failing:
            return _unavailable()
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded).decode()
        except ValueError:
            given = ""
        if scheme != "Basic" or given != f"{self.username}:{self.password}":
            return _error(
                401, "5279", "Invalid credentials", ["The authentication credentials are invalid."]
            )
        return None

    def _webhook_task(self, event_name: str, resource: dict[str, Any]) -> BackgroundTask | None:
        if not self.webhook_url:
            return None
        return BackgroundTask(self._post_webhook, event_name, dict(resource))

    async def _post_webhook(self, event_name: str, resource: dict[str, Any]) -> None:
        headers, body = self.notification(event_name, resource)
        self.sent.append(json.loads(body))
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(self.webhook_url, content=body, headers=headers)


def _public(resource: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in resource.items() if name != "settlementId"}


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        asked = json.loads(body)
    except ValueError:
        return None
    return asked if isinstance(asked, dict) else None


async def _until_gone(request: Request) -> None:
    """Never answer: wait until the client gives up and goes away."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


SEARCH_DAYS = 30  # what a search covers without a startDate


def _window(request: Request) -> tuple[datetime, datetime] | None:
    """The search's startDate and endDate; None when either is not a date."""
    end = _date(request.query_params.get("endDate"), datetime.now(UTC))
    if end is None:
        return None
    start = _date(request.query_params.get("startDate"), end - timedelta(days=SEARCH_DAYS))
    return None if start is None else (start, end)


def _date(text: str | None, default: datetime) -> datetime | None:
    if text is None:
        return default
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _within(resource: dict[str, Any], window: tuple[datetime, datetime]) -> bool:
    made = datetime.strptime(resource["txnTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return window[0] <= made <= window[1]


def _error(status: int, code: str, message: str, details: list[str] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status)


def _field_errors(fields: list[str]) -> Response:
    return JSONResponse(
        {
            "error": {
                "code": "5068",
                "message": "Field error(s)",
                "details": [
                    "Either you submitted a request that is missing a mandatory field or the "
                    "value of a field does not match the format expected."
                ],
                "fieldErrors": [{"field": name, "error": "is not valid"} for name in fields],
            }
        },
        status_code=400,
    )


def _duplicate() -> Response:
    return _error(409, "5031", "The transaction you have submitted has already been processed.")


def _not_found() -> Response:
    return _error(
        404,
        "5269",
        "Entity not found",
        ["The ID(s) specified in the URL do not correspond to the values in the system."],
    )


def _unavailable() -> Response:
    return _error(503, "1000", "Internal Error", ["The service is temporarily unavailable."])
