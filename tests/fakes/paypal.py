"""A fake PayPal REST API, faithful in what Switchboard relies on, served over loopback.

- `POST /v1/oauth2/token`: the client-credentials grant with HTTP Basic client ID and secret;
  401 `invalid_client` for wrong ones; bearer tokens with `expires_in`.
- `GET /v1/notifications/webhooks`: the app's webhooks (bearer token required).
- `POST /v1/notifications/verify-webhook-signature`: 400 `VALIDATION_ERROR` for missing
  fields; otherwise `verification_status` SUCCESS or FAILURE, decided the way PayPal documents
  it: an RSA-SHA256 signature ("SHA256withRSA"), by a key only PayPal holds, of
  "<transmission id>|<transmission time>|<webhook id>|<CRC32 of the event, decimal>", checked
  against the certificate at a cert URL that must be PayPal's own.

- Orders v2 (`POST /v2/checkout/orders`, `GET /v2/checkout/orders/{id}`,
  `POST /v2/checkout/orders/{id}/capture`) and Payments v2 (`GET /v2/payments/captures/{id}`,
  `POST /v2/payments/captures/{id}/refund`, `GET /v2/payments/refunds/{id}`), stateful:
  an order with a vaulted payment source (`payment_source.paypal.vault_id` or
  `payment_source.card.vault_id`) is captured at once; one without waits for its payer
  (CREATED with an `approve` link, or PAYER_ACTION_REQUIRED with a `payer-action` link when a
  PayPal experience context is given) until `approve` plays the payer, and is then captured by
  the capture call (422 ORDER_NOT_APPROVED before, ORDER_ALREADY_CAPTURED after). Refunds,
  partial or full, never exceed what is left of the capture (422 REFUND_AMOUNT_EXCEEDED,
  CAPTURE_FULLY_REFUNDED). Amounts are decimal strings with the currency's decimals (422
  CURRENCY_NOT_SUPPORTED, DECIMAL_PRECISION). Answers are minimal unless
  `Prefer: return=representation` asks for the whole resource. Errors have PayPal's shape
  (`name`, `message`, `debug_id`, `details[].issue`).
- `PayPal-Request-Id`: a request ID seen before on the same API is answered with the latest
  state of what its first request made (or its first error), whatever the new body says, and
  nothing is made again (PayPal's "Idempotency" page). A request with a payment source must
  carry one (PAYPAL_REQUEST_ID_REQUIRED).
- Vault IDs: any succeeds, except the magic ones below, named after PayPal's sandbox triggers
  (the INSTRUMENT_DECLINED and PAYEE_BLOCKED_TRANSACTION negative-testing codes; the card
  "rejection triggers" CCREJECT-REFUSED and CCREJECT-SF, insufficient funds).

- Transaction Search (`GET /v1/reporting/transactions`): the balance-affecting transactions
  the fake has made (captures as T0006 with PayPal's fee as a negative `fee_amount`, refunds as
  T1107 referring to their capture, withdrawals to the bank as T0400) and any the test books
  (`book`, `withdraw`), initiated between `start_date` and `end_date` (both required, RFC 3339
  with seconds, at most 31 days apart: 400 INVALID_REQUEST otherwise), oldest first, in pages of
  `page_size` (at most 500) numbered from 1, with `total_items` and `total_pages`; a search
  matching more than `max_results` transactions answers RESULTSET_TOO_LARGE. Transactions appear
  `lag` seconds after they are made (PayPal: up to three hours), and `end_date` in the answer is
  the last time data is served for. 403 NOT_AUTHORIZED while `transaction_search` is off (the
  app not allowed to use it).

The fake sends notifications too (`notification`): the headers and body PayPal would post.
Every change it makes records the event PayPal would send (`events`): CHECKOUT.ORDER.APPROVED,
PAYMENT.CAPTURE.COMPLETED / PENDING / DECLINED / DENIED, PAYMENT.CAPTURE.REFUNDED. Every
request is recorded with its headers, so tests can count what reached "PayPal". `failing`
makes every answer a 503 for as long as it is set; `hang_after_accept` makes Orders and
Payments calls do their work and then never answer (an answer lost on the way).

Relied on: PayPal's REST API docs (authentication; Orders v2 and its errors; Payments v2
captures and refunds and their errors; Idempotency; Currency codes; Webhooks API v1, verify
webhook signature, and "Webhook event names" for event shapes; Transaction Search v1, its
OpenAPI description in paypal/paypal-rest-api-specifications, its RESULTSET_TOO_LARGE error and
"Transaction event codes"), and the offline check in
PayPal's own SDKs (paypal/PayPal-Python-SDK, paypalrestsdk/notifications.py: the signed string
and CRC32).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CERT_PATH = "/v1/notifications/certs/CERT-360caa42-fca2a594-fake"
REQUIRED = ("auth_algo", "cert_url", "transmission_id", "transmission_sig", "transmission_time")

# Vault IDs that are declined: a PayPal wallet (422 INSTRUMENT_DECLINED), and cards whose
# capture is DECLINED with the processor's response code 0500 (do not honor) or 5120
# (insufficient funds); and one whose capture stays PENDING (under review).
DECLINED_PAYPAL_VAULT = "vault-INSTRUMENT_DECLINED"
DECLINED_CARD_VAULT = "vault-CCREJECT-REFUSED"
INSUFFICIENT_CARD_VAULT = "vault-CCREJECT-SF"
PENDING_VAULT = "vault-PENDING-REVIEW"
# A payer the school's own PayPal risk settings block (422 PAYEE_BLOCKED_TRANSACTION).
PAYEE_BLOCKED_VAULT = "vault-PAYEE_BLOCKED_TRANSACTION"
_CURRENCY_LIST = (
    "AUD BRL CAD CNY CZK DKK EUR HKD HUF ILS JPY MYR MXN TWD NZD NOK PHP PLN GBP SGD SEK CHF THB "
    "USD"
)
CURRENCIES = frozenset(_CURRENCY_LIST.split())
WHOLE_UNITS = frozenset({"HUF", "JPY", "TWD"})  # "does not support decimals"
VALUE = re.compile(r"([0-9]+)|([0-9]+)?[.][0-9]+")
_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


SEARCH_DAYS = 31  # Transaction Search's longest range
SEARCH_PAGE_SIZE = 500  # and its largest page


@dataclass
class Seen:
    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Booked:
    """One transaction as Transaction Search lists it, and when it was initiated."""

    at: datetime
    info: dict[str, Any]


@dataclass
class FakePayPal:
    client_id: str = "AeFakeClientId"
    client_secret: str = "EFakeSecret"
    token_lifetime: int = 32_400  # what PayPal gives: nine hours
    failing: bool = False
    hang_after_accept: bool = False
    merchant_id: str = "SWITCHBOARDFAKE1"
    base_url: str = ""  # set by the test once served, for the cert URL in notifications
    seen: list[Seen] = field(default_factory=list)
    webhooks: dict[str, str] = field(default_factory=dict)  # id -> url
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # what PayPal would notify
    transactions: list[Booked] = field(default_factory=list)  # what Transaction Search lists
    transaction_search: bool = True  # the app is allowed to use Transaction Search
    max_results: int = 10_000  # more than this in one search: RESULTSET_TOO_LARGE
    lag: float = 0.0  # seconds before a transaction can be searched for
    # (API path, PayPal-Request-Id) -> ("order" | "refund", its id) or ("error", key of _errors)
    _requests: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _errors: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _tokens: dict[str, float] = field(default_factory=dict)
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/oauth2/token", self._token, methods=["POST"]),
                Route("/v1/notifications/webhooks", self._list_webhooks, methods=["GET"]),
                Route(
                    "/v1/notifications/verify-webhook-signature",
                    self._verify,
                    methods=["POST"],
                ),
                Route("/v2/checkout/orders", self._create_order, methods=["POST"]),
                Route("/v2/checkout/orders/{order_id}", self._show_order, methods=["GET"]),
                Route(
                    "/v2/checkout/orders/{order_id}/capture", self._capture_order, methods=["POST"]
                ),
                Route("/v2/payments/captures/{capture_id}", self._show_capture, methods=["GET"]),
                Route(
                    "/v2/payments/captures/{capture_id}/refund",
                    self._refund_capture,
                    methods=["POST"],
                ),
                Route("/v2/payments/refunds/{refund_id}", self._show_refund, methods=["GET"]),
                Route("/v1/reporting/transactions", self._search, methods=["GET"]),
            ]
        )

    def add_webhook(self, url: str) -> str:
        webhook_id = secrets.token_hex(8).upper()
        self.webhooks[webhook_id] = url
        return webhook_id

    def notification(
        self, webhook_id: str, event: dict[str, Any], *, at: datetime | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body of PayPal's POST of `event` to the webhook."""
        body = json.dumps(event).encode()
        transmission_id = str(uuid.uuid1())
        sent_at = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        signature = self._key.sign(
            _signed(transmission_id, sent_at, webhook_id, body),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        headers = {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": sent_at,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": self.base_url + CERT_PATH,
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }
        return headers, body

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def count(self, path: str) -> int:
        return sum(seen.path == path for seen in self.seen)

    # --- the API --------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        body = await self._record(request)
        if self.failing:
            return _unavailable()
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded).decode()
        except ValueError:
            given = ""
        if scheme != "Basic" or given != f"{self.client_id}:{self.client_secret}":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status_code=401,
            )
        if body != b"grant_type=client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"},
                status_code=400,
            )
        token = "A21AA" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        return JSONResponse(
            {
                "scope": "https://uri.paypal.com/services/applications/webhooks",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_lifetime,
                "nonce": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}{secrets.token_hex(8)}",
            }
        )

    async def _list_webhooks(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "webhooks": [
                    {"id": webhook_id, "url": url, "event_types": [{"name": "*"}]}
                    for webhook_id, url in self.webhooks.items()
                ]
            }
        )

    async def _verify(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            asked = json.loads(body)
        except ValueError:
            return _invalid([{"issue": "MALFORMED_REQUEST_JSON"}])
        missing = [
            name
            for name in (*REQUIRED, "webhook_id", "webhook_event")
            if not isinstance(asked, dict) or not asked.get(name)
        ]
        if missing:
            return _invalid(
                [{"field": name, "issue": "MISSING_REQUIRED_PARAMETER"} for name in missing]
            )
        status = "SUCCESS" if self._genuine(asked) else "FAILURE"
        return JSONResponse({"verification_status": status})

    def _genuine(self, asked: dict[str, Any]) -> bool:
        if asked["auth_algo"] != "SHA256withRSA" or asked["cert_url"] != self.base_url + CERT_PATH:
            return False
        # The event as PayPal sent it: what the receiver passed back must be the same event.
        event = json.dumps(asked["webhook_event"]).encode()
        try:
            self._key.public_key().verify(
                base64.b64decode(asked["transmission_sig"]),
                _signed(
                    asked["transmission_id"],
                    asked["transmission_time"],
                    asked["webhook_id"],
                    event,
                ),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    # --- Orders v2 and Payments v2: what tests use -----------------------------------------------

    def approve(self, order_id: str, payer_email: str = "parent@example.com") -> None:
        """Play the payer: log in on PayPal's page and approve the order (a payment link)."""
        with self._lock:
            order = self.orders[order_id]
            if order["status"] not in ("CREATED", "PAYER_ACTION_REQUIRED"):
                raise ValueError(f"order {order_id} is {order['status']}, not waiting for a payer")
            order["status"] = "APPROVED"
            order["payer"] = {"email_address": payer_email, "payer_id": _paypal_id(13)}
            order["payment_source"] = {
                "paypal": {"email_address": payer_email, "account_status": "VERIFIED"}
            }
            order["update_time"] = _now()
            self._emit(
                "CHECKOUT.ORDER.APPROVED",
                "checkout-order",
                order,
                "An order has been approved by buyer",
            )

    def settle_pending(self, capture_id: str, status: str = "COMPLETED") -> None:
        """A pending capture clears (COMPLETED) or is denied (DENIED), as an eCheck does."""
        with self._lock:
            capture = self.captures[capture_id]
            if capture["status"] != "PENDING":
                raise ValueError(f"capture {capture_id} is {capture['status']}, not PENDING")
            capture["status"] = status
            capture.pop("status_details", None)
            capture["update_time"] = _now()
            if status == "COMPLETED":
                capture["seller_receivable_breakdown"] = _breakdown(capture["amount"])
            self.transactions = [
                booked
                for booked in self.transactions
                if booked.info["transaction_id"] != capture_id
            ]
            if status == "COMPLETED":
                self._book_capture(capture)
            self._emit(f"PAYMENT.CAPTURE.{status}", "capture", capture, f"Payment {status.lower()}")

    def captures_of(self, order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(capture)
                for capture in self.captures.values()
                if capture["order_id"] == order_id
            ]

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        """The notifications PayPal would have sent, of one type, oldest first."""
        with self._lock:
            return [event for event in self.events if event["event_type"] == event_type]

    def book(
        self,
        code: str,
        value: str,
        currency: str = "USD",
        *,
        at: datetime | None = None,
        status: str = "S",
        fee: str | None = None,
        reference: str = "",
        transaction_id: str = "",
        invoice_id: str = "",
    ) -> str:
        """A balance-affecting transaction of the account: its T-code, its signed amount as
        PayPal writes it ("-25.00" leaves the balance) and its fee (negative: PayPal kept it)."""
        with self._lock:
            return self._book(
                code,
                value,
                currency,
                at=at,
                status=status,
                fee=fee,
                reference=reference,
                transaction_id=transaction_id,
                invoice_id=invoice_id,
            )

    def withdraw(
        self, value: str, currency: str = "USD", *, at: datetime | None = None, status: str = "S"
    ) -> str:
        """The school moves money from its PayPal balance to its bank (T0400)."""
        return self.book("T0400", f"-{value}", currency, at=at, status=status)

    def searches(self) -> list[dict[str, str]]:
        """The query of every Transaction Search request, in order."""
        return [seen.query for seen in self.seen if seen.path == "/v1/reporting/transactions"]

    def request_ids(self, path: str) -> list[str]:
        return [
            seen.headers.get("paypal-request-id", "") for seen in self.seen if seen.path == path
        ]

    # --- Orders v2 -------------------------------------------------------------------------------

    async def _create_order(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        asked = _parsed(body)
        if asked is None:
            return _invalid([{"issue": "MALFORMED_REQUEST_JSON"}])
        request_id = request.headers.get("paypal-request-id", "")
        replayed = self._replay(request, request_id)
        if replayed is not None:
            return await self._answer(request, replayed)
        problem = _order_problem(asked)
        if problem is None and asked.get("payment_source") and not request_id:
            problem = _invalid(
                [
                    {
                        "issue": "PAYPAL_REQUEST_ID_REQUIRED",
                        "description": "A PayPal-Request-Id is required if you are trying to "
                        "process payment for an Order.",
                    }
                ]
            )
        if problem is not None:
            return await self._answer(request, self._remember(request, request_id, problem))
        with self._lock:
            answer = self._new_order(asked)
        return await self._answer(request, self._remember(request, request_id, answer))

    async def _show_order(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self._lock:
            order = self.orders.get(request.path_params["order_id"])
            if order is None:
                return _not_found()
            return JSONResponse(self._shown(order))

    async def _capture_order(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if body.strip() and _parsed(body) is None:
            return _invalid([{"issue": "MALFORMED_REQUEST_JSON"}])
        request_id = request.headers.get("paypal-request-id", "")
        replayed = self._replay(request, request_id)
        if replayed is not None:
            return await self._answer(request, replayed)
        with self._lock:
            answer = self._capture_approved(request.path_params["order_id"])
        return await self._answer(request, self._remember(request, request_id, answer))

    def _new_order(self, asked: dict[str, Any]) -> Response:
        unit = asked["purchase_units"][0]
        order_id = _paypal_id()
        order: dict[str, Any] = {
            "id": order_id,
            "intent": asked["intent"],
            "status": "CREATED",
            "purchase_units": [
                {
                    "reference_id": unit.get("reference_id", "default"),
                    "amount": dict(unit["amount"]),
                    "payee": {"merchant_id": self.merchant_id},
                    **{
                        key: unit[key]
                        for key in ("custom_id", "invoice_id", "description")
                        if key in unit
                    },
                }
            ],
            "create_time": _now(),
            "update_time": _now(),
        }
        self.orders[order_id] = order
        source = asked.get("payment_source") or {}
        vaulted = next(
            (
                (method, given["vault_id"])
                for method, given in source.items()
                if isinstance(given, dict) and given.get("vault_id")
            ),
            None,
        )
        if vaulted is not None:
            return self._charge_vaulted(order, *vaulted)
        if "paypal" in source:
            # The payer must log in and approve on PayPal's page.
            order["status"] = "PAYER_ACTION_REQUIRED"
            email = source["paypal"].get("email_address")
            order["payment_source"] = {"paypal": {"email_address": email} if email else {}}
        return self._created(order)

    def _charge_vaulted(self, order: dict[str, Any], method: str, vault_id: str) -> Response:
        if vault_id == DECLINED_PAYPAL_VAULT:
            del self.orders[order["id"]]
            return _unprocessable(
                "INSTRUMENT_DECLINED",
                "The instrument presented  was either declined by the processor or bank, or it "
                "can't be used for this payment.",
            )
        if vault_id == PAYEE_BLOCKED_VAULT:
            del self.orders[order["id"]]
            return _unprocessable(
                "PAYEE_BLOCKED_TRANSACTION",
                "The Fraud Protection setting for the merchant is blocking this transaction.",
            )
        if method == "card":
            order["payment_source"] = {
                "card": {
                    "last_digits": "1111",
                    "brand": "VISA",
                    "type": "CREDIT",
                    "vault_id": vault_id,
                }
            }
        else:
            order["payment_source"] = {
                "paypal": {"email_address": "parent@example.com", "vault_id": vault_id}
            }
        response_code = {DECLINED_CARD_VAULT: "0500", INSUFFICIENT_CARD_VAULT: "5120"}.get(vault_id)
        if response_code is not None:
            self._capture(order, "DECLINED", response_code=response_code)
        elif vault_id == PENDING_VAULT:
            self._capture(order, "PENDING")
        else:
            self._capture(order, "COMPLETED", response_code="0000" if method == "card" else None)
        return self._created(order)

    def _capture_approved(self, order_id: str) -> Response:
        order = self.orders.get(order_id)
        if order is None:
            return _not_found()
        if order["status"] == "COMPLETED":
            return _unprocessable(
                "ORDER_ALREADY_CAPTURED",
                "Order already captured.If 'intent=CAPTURE' only one capture per order is allowed.",
            )
        if order["status"] != "APPROVED":
            return _unprocessable(
                "ORDER_NOT_APPROVED",
                "Payer has not yet approved the Order for payment. Please redirect the payer to "
                "the 'rel':'approve' url returned as part of the HATEOAS links within the Create "
                "Order call or provide a valid `payment_source` in the request.",
            )
        self._capture(order, "COMPLETED")
        return self._created(order)

    def _capture(
        self, order: dict[str, Any], status: str, *, response_code: str | None = None
    ) -> None:
        unit = order["purchase_units"][0]
        capture: dict[str, Any] = {
            "id": _paypal_id(),
            "status": status,
            "amount": dict(unit["amount"]),
            "final_capture": True,
            "supplementary_data": {"related_ids": {"order_id": order["id"]}},
            "create_time": _now(),
            "update_time": _now(),
            **{key: unit[key] for key in ("custom_id", "invoice_id") if key in unit},
        }
        if status == "COMPLETED":
            capture["seller_receivable_breakdown"] = _breakdown(unit["amount"])
        if status == "PENDING":
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        if response_code is not None:
            capture["processor_response"] = {
                "avs_code": "Y",
                "cvv_code": "M",
                "response_code": response_code,
            }
        base = f"{self.base_url}/v2/payments/captures/{capture['id']}"
        capture["links"] = [
            {"href": base, "rel": "self", "method": "GET"},
            {"href": f"{base}/refund", "rel": "refund", "method": "POST"},
            {
                "href": f"{self.base_url}/v2/checkout/orders/{order['id']}",
                "rel": "up",
                "method": "GET",
            },
        ]
        self.captures[capture["id"]] = {**capture, "order_id": order["id"], "refunded": "0"}
        if status in ("COMPLETED", "PENDING"):
            self._book_capture(self.captures[capture["id"]])
        unit["payments"] = {"captures": [capture["id"]]}
        order["status"] = "COMPLETED"
        order["update_time"] = _now()
        self._emit(
            f"PAYMENT.CAPTURE.{status}",
            "capture",
            self.captures[capture["id"]],
            f"Payment {status.lower()} for {_money(capture['amount'])}",
        )

    # --- Payments v2 -----------------------------------------------------------------------------

    async def _show_capture(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self._lock:
            capture = self.captures.get(request.path_params["capture_id"])
            return _not_found() if capture is None else JSONResponse(_public(capture))

    async def _refund_capture(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        asked = _parsed(body) if body.strip() else {}
        if asked is None:
            return _invalid([{"issue": "MALFORMED_REQUEST_JSON"}])
        request_id = request.headers.get("paypal-request-id", "")
        replayed = self._replay(request, request_id)
        if replayed is not None:
            return await self._answer(request, replayed)
        with self._lock:
            answer = self._new_refund(request.path_params["capture_id"], asked)
        return await self._answer(request, self._remember(request, request_id, answer))

    async def _show_refund(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self._lock:
            refund = self.refunds.get(request.path_params["refund_id"])
            return _not_found() if refund is None else JSONResponse(refund)

    def _new_refund(self, capture_id: str, asked: dict[str, Any]) -> Response:
        capture = self.captures.get(capture_id)
        if capture is None:
            return _not_found()
        if capture["status"] == "REFUNDED":
            return _unprocessable(
                "CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded"
            )
        if capture["status"] == "PENDING":
            return _unprocessable(
                "PENDING_CAPTURE", "Cannot initiate a refund as the capture is pending."
            )
        if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            return _unprocessable("TRANSACTION_REFUSED", "The request was refused.")
        currency = capture["amount"]["currency_code"]
        left = Decimal(capture["amount"]["value"]) - Decimal(capture["refunded"])
        amount = asked.get("amount") or {
            "currency_code": currency,
            "value": _decimal(left, currency),
        }
        problem = _amount_problem(amount)
        if problem is not None:
            return problem
        if amount["currency_code"] != currency:
            return _unprocessable(
                "CURRENCY_MISMATCH",
                "The currency of the refund must be the currency of the capture.",
            )
        value = Decimal(amount["value"])
        if value > left:
            return _unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the capture amount that has not "
                "yet been refunded.",
            )
        refunded = Decimal(capture["refunded"]) + value
        capture["refunded"] = str(refunded)
        capture["status"] = (
            "REFUNDED" if refunded == Decimal(capture["amount"]["value"]) else "PARTIALLY_REFUNDED"
        )
        capture["update_time"] = _now()
        refund_id = _paypal_id()
        refund: dict[str, Any] = {
            "id": refund_id,
            "status": "COMPLETED",
            "amount": {"currency_code": currency, "value": _decimal(value, currency)},
            "seller_payable_breakdown": {
                "gross_amount": {"currency_code": currency, "value": _decimal(value, currency)},
                "net_amount": {"currency_code": currency, "value": _decimal(value, currency)},
                "total_refunded_amount": {
                    "currency_code": currency,
                    "value": _decimal(refunded, currency),
                },
            },
            "create_time": _now(),
            "update_time": _now(),
            "links": [
                {
                    "href": f"{self.base_url}/v2/payments/refunds/{refund_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{self.base_url}/v2/payments/captures/{capture_id}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
            **{
                key: asked[key]
                for key in ("custom_id", "invoice_id", "note_to_payer")
                if key in asked
            },
        }
        self.refunds[refund_id] = refund
        self._book(
            "T1107",
            f"-{_decimal(value, currency)}",
            currency,
            reference=capture_id,
            transaction_id=refund_id,
            invoice_id=str(capture.get("invoice_id", "")),
        )
        self._emit(
            "PAYMENT.CAPTURE.REFUNDED",
            "refund",
            refund,
            f"A {_decimal(value, currency)} {currency} capture payment was refunded",
        )
        return JSONResponse(refund, status_code=201)

    # --- Transaction Search ---------------------------------------------------------------------

    async def _search(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if not self.transaction_search:
            return JSONResponse(
                {
                    "name": "NOT_AUTHORIZED",
                    "message": "Authorization failed due to insufficient permissions.",
                    "debug_id": secrets.token_hex(6),
                    "details": [
                        {
                            "issue": "PERMISSION_DENIED",
                            "description": "You do not have permission to access or perform "
                            "operations on this resource.",
                        }
                    ],
                },
                status_code=403,
            )
        query = request.query_params
        problems = []
        dates: dict[str, datetime] = {}
        for name in ("start_date", "end_date"):
            given = query.get(name, "")
            try:
                if not RFC3339.fullmatch(given):
                    raise ValueError(given)
                dates[name] = datetime.fromisoformat(given)
            except ValueError:
                issue = "MISSING_REQUIRED_PARAMETER" if not given else "INVALID_PARAMETER_SYNTAX"
                problems.append(
                    {"field": name, "value": given, "location": "query", "issue": issue}
                )
        try:
            page = int(query.get("page", "1"))
            page_size = int(query.get("page_size", "100"))
        except ValueError:
            page, page_size = 0, 0
        if not 1 <= page_size <= SEARCH_PAGE_SIZE or page < 1:
            problems.append(
                {"field": "page_size", "location": "query", "issue": "INVALID_PARAMETER_VALUE"}
            )
        if not problems:
            start, end = dates["start_date"], dates["end_date"]
            if end < start or end - start > timedelta(days=SEARCH_DAYS):
                problems.append(
                    {
                        "field": "end_date",
                        "value": query["end_date"],
                        "location": "query",
                        "issue": "Date range is greater than 31 days",
                    }
                )
        if problems:
            return _invalid(problems)
        refreshed = datetime.now(UTC) - timedelta(seconds=self.lag)
        served_until = min(dates["end_date"], refreshed)
        with self._lock:
            found = sorted(
                (b for b in self.transactions if dates["start_date"] <= b.at <= served_until),
                key=lambda booked: booked.at,
            )
        if len(found) > self.max_results:
            return JSONResponse(
                {
                    "name": "RESULTSET_TOO_LARGE",
                    "message": "Result set size is greater than the maximum limit. Change the "
                    "filter criteria and try again.",
                    "debug_id": secrets.token_hex(6),
                },
                status_code=400,
            )
        pages = -(-len(found) // page_size)
        shown = found[(page - 1) * page_size : page * page_size]
        everything = query.get("fields") == "all"
        return JSONResponse(
            {
                "transaction_details": [
                    {"transaction_info": dict(b.info), **({"payer_info": {}} if everything else {})}
                    for b in shown
                ],
                "account_number": self.merchant_id,
                "start_date": _listed_time(dates["start_date"]),
                "end_date": _listed_time(served_until),
                "last_refreshed_datetime": _listed_time(refreshed),
                "page": page,
                "total_items": len(found),
                "total_pages": pages,
                "links": [{"href": str(request.url), "rel": "self", "method": "GET"}],
            }
        )

    def _book_capture(self, capture: dict[str, Any]) -> None:
        amount = capture["amount"]
        breakdown = capture.get("seller_receivable_breakdown") or {}
        fee = breakdown.get("paypal_fee")
        self._book(
            "T0006",
            amount["value"],
            amount["currency_code"],
            status="S" if capture["status"] == "COMPLETED" else "P",
            fee=f"-{fee['value']}" if fee else None,
            transaction_id=capture["id"],
            invoice_id=str(capture.get("invoice_id", "")),
            custom=str(capture.get("custom_id", "")),
        )

    def _book(
        self,
        code: str,
        value: str,
        currency: str,
        *,
        at: datetime | None = None,
        status: str = "S",
        fee: str | None = None,
        reference: str = "",
        transaction_id: str = "",
        invoice_id: str = "",
        custom: str = "",
    ) -> str:
        when = at or datetime.now(UTC)
        info: dict[str, Any] = {
            "paypal_account_id": _paypal_id(13),
            "transaction_id": transaction_id or _paypal_id(),
            "transaction_event_code": code,
            "transaction_initiation_date": _listed_time(when),
            "transaction_updated_date": _listed_time(when),
            "transaction_amount": {"currency_code": currency, "value": value},
            "transaction_status": status,
            "protection_eligibility": "02",
        }
        if fee is not None:
            info["fee_amount"] = {"currency_code": currency, "value": fee}
        if reference:
            info["paypal_reference_id"] = reference
            info["paypal_reference_id_type"] = "TXN"
        if invoice_id:
            info["invoice_id"] = invoice_id
        if custom:
            info["custom_field"] = custom
        self.transactions.append(Booked(when, info))
        return str(info["transaction_id"])

    # --- idempotency, answers and events ---------------------------------------------------------

    def _replay(self, request: Request, request_id: str) -> Response | None:
        """What PayPal answers a request ID it has seen on this API: the latest state of what
        the first request made (or its error), whatever this request's body says."""
        if not request_id:
            return None
        with self._lock:
            first = self._requests.get((request.url.path, request_id))
            if first is None:
                return None
            kind, key = first
            if kind == "order":
                return self._created(self.orders[key])
            if kind == "refund":
                return JSONResponse(self.refunds[key], status_code=201)
            status, content = self._errors[key]
            return Response(content, status_code=status, media_type="application/json")

    def _remember(self, request: Request, request_id: str, answer: Response) -> Response:
        if not request_id:
            return answer
        with self._lock:
            try:
                made = json.loads(bytes(answer.body))
            except ValueError:
                made = {}
            path = request.url.path
            if answer.status_code < 400 and made.get("id") in self.orders:
                self._requests[(path, request_id)] = ("order", made["id"])
            elif answer.status_code < 400 and made.get("id") in self.refunds:
                self._requests[(path, request_id)] = ("refund", made["id"])
            elif answer.status_code == 404:
                pass  # nothing was made: asking again asks again
            else:
                key = f"{path}|{request_id}"
                self._errors[key] = (answer.status_code, bytes(answer.body))
                self._requests[(path, request_id)] = ("error", key)
        return answer

    async def _answer(self, request: Request, answer: Response) -> Response:
        """The answer, shaped as the Prefer header asks; never sent while `hang_after_accept`
        is set (the work is done, the answer is lost on the way)."""
        if self.hang_after_accept:
            await _until_gone(request)
        if answer.status_code >= 400 or "return=representation" in request.headers.get(
            "prefer", ""
        ):
            return answer
        made = json.loads(bytes(answer.body))
        minimal = {key: made[key] for key in ("id", "status", "links") if key in made}
        return JSONResponse(minimal, status_code=answer.status_code)

    def _emit(
        self, event_type: str, resource_type: str, resource: dict[str, Any], summary: str
    ) -> None:
        self.events.append(
            {
                "id": f"WH-{_paypal_id()}-{_paypal_id()}",
                "event_version": "1.0",
                "create_time": _now(),
                "resource_type": resource_type,
                "resource_version": "2.0",
                "event_type": event_type,
                "summary": summary,
                "resource": _public(resource)
                if resource_type == "capture"
                else self._shown(resource)
                if resource_type == "checkout-order"
                else dict(resource),
            }
        )

    def _shown(self, order: dict[str, Any]) -> dict[str, Any]:
        """An order as PayPal shows it: its captures in full, and the links its state allows."""
        shown: dict[str, Any] = json.loads(json.dumps(order))
        for unit in shown["purchase_units"]:
            captured = unit.get("payments", {}).get("captures", [])
            if captured:
                unit["payments"] = {"captures": [_public(self.captures[key]) for key in captured]}
        base = f"{self.base_url}/v2/checkout/orders/{order['id']}"
        checkout = f"https://www.sandbox.paypal.com/checkoutnow?token={order['id']}"
        links = [{"href": base, "rel": "self", "method": "GET"}]
        if order["status"] == "CREATED":
            links.append({"href": checkout, "rel": "approve", "method": "GET"})
        if order["status"] == "PAYER_ACTION_REQUIRED":
            links.append({"href": checkout, "rel": "payer-action", "method": "GET"})
        if order["status"] in ("CREATED", "APPROVED"):
            links.append({"href": f"{base}/capture", "rel": "capture", "method": "POST"})
        shown["links"] = links
        return shown

    def _created(self, order: dict[str, Any]) -> Response:
        return JSONResponse(self._shown(order), status_code=201)

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        self.seen.append(
            Seen(
                request.method,
                request.url.path,
                body,
                dict(request.headers),
                dict(request.query_params),
            )
        )
        return body

    def _refused(self, request: Request) -> Response | None:
        if self.failing:
            return _unavailable()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token, 0.0)
        if scheme != "Bearer" or expires < time.monotonic():
            return JSONResponse(
                {
                    "error": "invalid_token",
                    "error_description": "Token signature verification failed",
                },
                status_code=401,
            )
        return None


# Transaction Search's times: RFC 3339 with seconds required, fractions optional.
RFC3339 = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])[Tt]([0-1][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _listed_time(moment: datetime) -> str:
    """A time as Transaction Search lists it: "2026-05-01T09:30:00+0000"."""
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S}+0000"


def _signed(transmission_id: str, sent_at: str, webhook_id: str, body: bytes) -> bytes:
    return f"{transmission_id}|{sent_at}|{webhook_id}|{zlib.crc32(body)}".encode()


def _invalid(details: list[dict[str, str]]) -> Response:
    return JSONResponse(
        {
            "name": "VALIDATION_ERROR",
            "message": "Invalid request - see details",
            "debug_id": secrets.token_hex(6),
            "details": details,
        },
        status_code=400,
    )


def _unavailable() -> Response:
    return JSONResponse(
        {"name": "SERVICE_UNAVAILABLE", "message": "Service Unavailable."}, status_code=503
    )


def _paypal_id(length: int = 17) -> str:
    """An ID shaped like PayPal's (orders, captures, refunds: 17 upper-case letters and digits)."""
    return "".join(secrets.choice(_ID_CHARACTERS) for _ in range(length))


def _now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _decimal(value: Decimal, currency: str) -> str:
    places = 0 if currency in WHOLE_UNITS else 2
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def _breakdown(amount: dict[str, str]) -> dict[str, Any]:
    """What PayPal keeps of a capture: 3.49 % plus 0.49 (49 of a whole-unit currency)."""
    currency = amount["currency_code"]
    gross = Decimal(amount["value"])
    fixed = Decimal(49) if currency in WHOLE_UNITS else Decimal("0.49")
    fee = Decimal(_decimal(gross * Decimal("0.0349") + fixed, currency))
    return {
        "gross_amount": dict(amount),
        "paypal_fee": {"currency_code": currency, "value": _decimal(fee, currency)},
        "net_amount": {"currency_code": currency, "value": _decimal(gross - fee, currency)},
    }


def _public(capture: dict[str, Any]) -> dict[str, Any]:
    """A capture as PayPal shows it (without what the fake keeps for itself)."""
    return {key: value for key, value in capture.items() if key not in ("order_id", "refunded")}


def _amount_problem(amount: Any) -> Response | None:
    if not isinstance(amount, dict) or not amount.get("currency_code") or "value" not in amount:
        return _invalid(
            [
                {
                    "field": "/purchase_units/@reference_id=='default'/amount",
                    "issue": "MISSING_REQUIRED_PARAMETER",
                }
            ]
        )
    currency, value = str(amount["currency_code"]), str(amount["value"])
    if not VALUE.fullmatch(value):
        return _invalid(
            [{"field": "amount/value", "value": value, "issue": "INVALID_PARAMETER_SYNTAX"}]
        )
    if currency not in CURRENCIES:
        return _unprocessable("CURRENCY_NOT_SUPPORTED", "Currency code is not currently supported.")
    decimals = len(value.partition(".")[2])
    if decimals > (0 if currency in WHOLE_UNITS else 2):
        return _unprocessable(
            "DECIMAL_PRECISION",
            "If the currency supports decimals, only two decimal place precision is supported.",
        )
    return None


def _order_problem(asked: dict[str, Any]) -> Response | None:
    if asked.get("intent") not in ("CAPTURE", "AUTHORIZE"):
        return _invalid([{"field": "/intent", "issue": "INVALID_PARAMETER_VALUE"}])
    units = asked.get("purchase_units")
    if not isinstance(units, list) or not units or not isinstance(units[0], dict):
        return _invalid([{"field": "/purchase_units", "issue": "MISSING_REQUIRED_PARAMETER"}])
    for key in ("custom_id", "invoice_id"):
        if len(str(units[0].get(key, ""))) > 127:
            return _invalid(
                [{"field": f"/purchase_units/0/{key}", "issue": "INVALID_STRING_LENGTH"}]
            )
    return _amount_problem(units[0].get("amount"))


def _unprocessable(issue: str, description: str) -> Response:
    return JSONResponse(
        {
            "name": "UNPROCESSABLE_ENTITY",
            "message": "The requested action could not be performed, semantically incorrect, or "
            "failed business validation.",
            "debug_id": secrets.token_hex(6),
            "details": [{"issue": issue, "description": description}],
            "links": [
                {
                    "href": f"https://developer.paypal.com/docs/api/orders/v2/#error-{issue}",
                    "rel": "information_link",
                    "method": "GET",
                }
            ],
        },
        status_code=422,
    )


def _not_found() -> Response:
    return JSONResponse(
        {
            "name": "RESOURCE_NOT_FOUND",
            "message": "The specified resource does not exist.",
            "debug_id": secrets.token_hex(6),
            "details": [
                {
                    "issue": "INVALID_RESOURCE_ID",
                    "description": "Specified resource ID does not exist. Please check the "
                    "resource ID and try again.",
                }
            ],
        },
        status_code=404,
    )


async def _until_gone(request: Request, longest: float = 30.0) -> None:
    """Hold the answer back until the client gives up and goes away."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.02)


def _money(amount: dict[str, str]) -> str:
    return f"{amount['value']} {amount['currency_code']}"
