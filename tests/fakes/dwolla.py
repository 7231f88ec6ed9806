"""A fake Dwolla v2 API, faithful in what Switchboard relies on, served over loopback.

- `POST /token`: the client-credentials grant (HTTP Basic key and secret, form-encoded
  `grant_type=client_credentials`); 401 `invalid_client` for wrong ones; bearer tokens with
  `expires_in` (an hour, as Dwolla gives).
- Every other call needs a live bearer token (401 `InvalidAccessToken` / `ExpiredAccessToken`)
  and `Accept: application/vnd.dwolla.v1.hal+json` (406 `InvalidVersion` without it); bodies
  are HAL+JSON, errors are Dwolla's `{"code", "message", "_embedded": {"errors": [...]}}`.
- `GET /`: the root, linking the account.
- `POST /transfers`: `_links.source/destination.href` funding sources, `amount {currency,
  value}`, `correlationId`, `metadata`; 201 with the transfer's address in `Location` and no
  body. The same `Idempotency-Key` with the same body answers the first transfer again; with
  another body it is a new request (Dwolla pairs a key with its body). Keys are forgotten after
  24 hours (`forget_idempotency_keys`).
- `GET /transfers/{id}`, `GET /transfers/{id}/failure` (the ACH return code once failed),
  `GET /customers/{id}/transfers` and `GET /accounts/{id}/transfers` with `correlationId`,
  `startDate` and `endDate` (YYYY-MM-DD: made on or after the one, before the other), `limit`
  (default 25, at most 200) and `offset`, newest first, with `total`; offsets reach no further
  than `search_cap` transfers (Dwolla: 10,000), beyond which pages are empty.
- `GET /accounts/{id}/funding-sources`: the school's bank account and its Dwolla balance
  (`type` bank or balance).
- `GET /transfers/{id}/fees`: the facilitator fees taken from a transfer (`add_fee`), each a
  transfer of its own that the account's list shows with a `created-from-transfer` link.

Transfers stay "pending" until the test runs the bank day (`process`): a debit from a bank the
test gave a return code (R01, R02, ...) fails with it, as does a credit to one, and the
others are processed. Every change makes Dwolla's events (the customer's and the account's
topics), which `deliver` posts signed (`X-Request-Signature-SHA-256`, hex HMAC-SHA256 of the
body with the subscription's secret) to the subscribed URL.

The school's money moves between its Dwolla balance and its bank by `withdraw` (a transfer from
the balance to the bank, processed at once unless told otherwise); `add_transfer` books any
transfer at any time, and `backdate` moves one into the past.

Faults: `failing` answers 503 to everything; `hang_after_accept` makes that many
`POST /transfers` create (or find) their transfer and then never answer, until the client
gives up. Every request is recorded, so tests can count what reached "Dwolla".

Relied on: Dwolla's developer docs (github.com/Dwolla/dev-portal: client-credentials flow,
root, transfers initiate/retrieve/failure/search, idempotency key, errors, events,
webhooks; developers.dwolla.com: "List and search transfers for an account", "List funding
sources for an account", "List fees for a transfer").
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
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HAL = "application/vnd.dwolla.v1.hal+json"
AMOUNT = re.compile(r"^\d+\.\d{2}$")
CORRELATION_ID = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
RETURN_REASONS = {
    "R01": "Insufficient Funds",
    "R02": "Bank Account Closed",
    "R03": "No Account/Unable to Locate Account",
    "R07": "Authorization Revoked by Customer",
    "R09": "Uncollected Funds",
    "R10": "Customer Advises Not Authorized",
    "R16": "Account Frozen",
    "R20": "Non-Transaction Account",
}
KEY_SECONDS = 24 * 3600
PAGE_SIZE, MAX_PAGE_SIZE = 25, 200


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Bank:
    """A funding source: a customer's bank account, or the account's (customer "")."""

    id: str
    customer: str
    return_code: str = ""  # what the bank answers a transfer from or to it ("" = it clears)
    removed: bool = False
    type: str = "bank"  # or "balance": a Dwolla balance


@dataclass
class Transfer:
    id: str
    source: Bank
    destination: Bank
    value: str
    currency: str
    correlation_id: str
    metadata: dict[str, str]
    created: str
    status: str = "pending"
    return_code: str = ""
    fees: list[Transfer] = field(default_factory=list)  # facilitator fees taken from it
    created_from: str = ""  # for a fee: the transfer it was taken from

    @property
    def returned_by(self) -> Bank | None:
        """The bank that returns this transfer on the bank day, if one does."""
        for bank in (self.source, self.destination):
            if bank.return_code:
                return bank
        return None


@dataclass
class Webhook:
    topic: str
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeDwolla:
    key: str = "fake-application-key"
    secret: str = "fake-application-secret"
    token_lifetime: int = 3600
    failing: bool = False
    hang_after_accept: int = 0
    events_carry_correlation_id: bool = False  # Dwolla "may" include it in transfer events
    base_url: str = ""  # set by the test once served: Dwolla's links are absolute
    account_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seen: list[Seen] = field(default_factory=list)
    banks: dict[str, Bank] = field(default_factory=dict)
    customers: set[str] = field(default_factory=set)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    outbox: list[Webhook] = field(default_factory=list)
    webhook_url: str = ""
    webhook_secret: str = ""
    search_cap: int = 10_000  # how far offsets reach in a list of transfers
    platform_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # collects fees
    _keys: dict[str, tuple[bytes, str, float]] = field(default_factory=dict)
    _tokens: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.school_bank = Bank(str(uuid.uuid4()), "")
        self.school_balance = Bank(str(uuid.uuid4()), "", type="balance")
        self.platform_balance = Bank(str(uuid.uuid4()), "platform", type="balance")
        for bank in (self.school_bank, self.school_balance, self.platform_balance):
            self.banks[bank.id] = bank

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/", self._root, methods=["GET"]),
                Route("/transfers", self._create_transfer, methods=["POST"]),
                Route("/transfers/{id}", self._transfer, methods=["GET"]),
                Route("/transfers/{id}/failure", self._failure, methods=["GET"]),
                Route("/customers/{id}/transfers", self._customer_transfers, methods=["GET"]),
                Route("/accounts/{id}/transfers", self._account_transfers, methods=["GET"]),
                Route("/accounts/{id}/funding-sources", self._funding_sources, methods=["GET"]),
                Route("/transfers/{id}/fees", self._fees, methods=["GET"]),
            ]
        )

    @property
    def school_funding_source(self) -> str:
        return self._url("funding-sources", self.school_bank.id)

    @property
    def school_balance_funding_source(self) -> str:
        return self._url("funding-sources", self.school_balance.id)

    def withdraw(self, value: str, *, at: datetime | None = None, status: str = "processed") -> str:
        """The school moves money from its Dwolla balance to its bank account."""
        return self.add_transfer(self.school_balance, self.school_bank, value, at=at, status=status)

    def add_transfer(
        self,
        source: Bank | str,
        destination: Bank | str,
        value: str,
        *,
        at: datetime | None = None,
        status: str = "processed",
        correlation_id: str = "",
    ) -> str:
        """A transfer between two funding sources (given as banks or their addresses), made at
        `at` and already `status`; its id."""
        with self._lock:
            transfer = Transfer(
                id=str(uuid.uuid4()),
                source=self._bank_of(source),
                destination=self._bank_of(destination),
                value=value,
                currency="USD",
                correlation_id=correlation_id,
                metadata={},
                created=_now(at),
                status=status,
            )
            self.transfers[transfer.id] = transfer
            return transfer.id

    def backdate(self, transfer_id: str, at: datetime) -> None:
        with self._lock:
            self.transfers[transfer_id.lower()].created = _now(at)

    def add_fee(self, transfer_id: str, value: str, *, charge_to: str = "school") -> str:
        """A facilitator fee taken from a transfer: charged to the school (paid to the platform
        whose application it is) or to the family (paid to the school); its id."""
        with self._lock:
            parent = self.transfers[transfer_id.lower()]
            if charge_to == "school":
                source, destination = self.school_balance, self.platform_balance
            else:
                family = parent.source if parent.source.customer else parent.destination
                source, destination = family, self.school_balance
            fee = Transfer(
                id=str(uuid.uuid4()),
                source=source,
                destination=destination,
                value=value,
                currency="USD",
                correlation_id="",
                metadata={},
                created=parent.created,
                status=parent.status,
                created_from=parent.id,
            )
            parent.fees.append(fee)
            self.transfers[fee.id] = fee
            return fee.id

    def add_customer(self) -> str:
        customer = str(uuid.uuid4())
        self.customers.add(customer)
        return customer

    def add_bank(self, customer: str, return_code: str = "") -> str:
        """A verified bank account of the customer; its address (the saved method's token)."""
        bank = Bank(str(uuid.uuid4()), customer, return_code)
        self.banks[bank.id] = bank
        return self._url("funding-sources", bank.id)

    def subscribe(self, url: str, secret: str) -> None:
        self.webhook_url, self.webhook_secret = url, secret

    def process(self) -> list[Transfer]:
        """The bank day: every pending transfer clears or is returned; what changed."""
        with self._lock:
            pending = [t for t in self.transfers.values() if t.status == "pending"]
            for transfer in pending:
                bank = transfer.returned_by
                if bank is None:
                    transfer.status = "processed"
                    self._events(transfer, "completed")
                    continue
                transfer.status, transfer.return_code = "failed", bank.return_code
                # Dwolla removes the bank on every return but these.
                bank.removed = bank.return_code not in ("R01", "R09", "R20")
                self._events(transfer, "failed")
        return pending

    def cancel(self, transfer_id: str) -> None:
        """Someone cancelled a pending transfer in Dwolla's dashboard."""
        with self._lock:
            transfer = self.transfers[transfer_id]
            assert transfer.status == "pending"
            transfer.status = "cancelled"
            self._events(transfer, "cancelled")

    def return_later(self, transfer_id: str, return_code: str = "R10") -> None:
        """The family's bank returns a debit after it was processed (an unauthorized-debit
        return may come weeks later): the transfer fails, and its events say so."""
        with self._lock:
            transfer = self.transfers[transfer_id]
            assert transfer.status == "processed"
            transfer.status, transfer.return_code = "failed", return_code
            self._events(transfer, "failed")

    async def deliver(self) -> list[httpx.Response]:
        """Post every waiting webhook to the subscribed URL, signed as Dwolla signs."""
        with self._lock:
            waiting, self.outbox = self.outbox, []
        answers = []
        async with httpx.AsyncClient(timeout=20) as client:
            for webhook in waiting:
                answers.append(
                    await client.post(
                        self.webhook_url, content=webhook.body, headers=webhook.headers
                    )
                )
        return answers

    def forget_idempotency_keys(self) -> None:
        """As Dwolla does after 24 hours."""
        with self._lock:
            self._keys.clear()

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    @property
    def transfer_count(self) -> int:
        return len(self.transfers)

    def count(self, method: str, path: str) -> int:
        return sum(seen.method == method and seen.path == path for seen in self.seen)

    def sent(self, method: str, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == method and seen.path == path]

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
        if scheme != "Basic" or given != f"{self.key}:{self.secret}":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client credentials."},
                status_code=401,
            )
        if body != b"grant_type=client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = secrets.token_urlsafe(36)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        return JSONResponse(
            {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime}
        )

    async def _root(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        return _hal(
            {
                "_links": {
                    "account": {"href": self._url("accounts", self.account_id)},
                    "customers": {"href": self._url("customers")},
                }
            }
        )

    async def _create_transfer(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type") != HAL:
            return _error(415, "UnsupportedMediaType", "Content-Type must be " + HAL + ".")
        key = request.headers.get("idempotency-key", "")
        with self._lock:
            remembered = self._keys.get(key) if key else None
            if (
                remembered is not None
                and remembered[0] == body
                and time.time() - remembered[2] < KEY_SECONDS
            ):
                transfer_id = remembered[1]
            else:
                created = self._new_transfer(body)
                if isinstance(created, Response):
                    return created
                transfer_id = created.id
                if key:
                    self._keys[key] = (body, transfer_id, time.time())
            hang = self.hang_after_accept > 0
            if hang:
                self.hang_after_accept -= 1
        if hang:
            # The body is read: the next message is the client going away.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=201)
        return Response(status_code=201, headers={"Location": self._url("transfers", transfer_id)})

    def _new_transfer(self, raw: bytes) -> Transfer | Response:
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(
                400, "BadRequest", "The request body contains bad syntax or is incomplete."
            )
        problems: list[dict[str, Any]] = []
        source = self._bank(body, "source", problems)
        destination = self._bank(body, "destination", problems)
        amount = body.get("amount") if isinstance(body.get("amount"), dict) else {}
        value = str(amount.get("value", ""))
        if amount.get("currency") != "USD":
            problems.append(_problem("Invalid", "Invalid amount currency.", "/amount/currency"))
        if not AMOUNT.match(value) or float(value) <= 0:
            problems.append(_problem("Invalid", "Invalid amount.", "/amount/value"))
        correlation_id = body.get("correlationId", "")
        if correlation_id and not CORRELATION_ID.match(str(correlation_id)):
            problems.append(_problem("Invalid", "Invalid correlationId.", "/correlationId"))
        metadata = body.get("metadata") or {}
        if len(metadata) > 10 or any(len(str(v)) >= 255 for v in metadata.values()):
            problems.append(_problem("Invalid", "Invalid metadata.", "/metadata"))
        if problems or source is None or destination is None:
            return _hal(
                {
                    "code": "ValidationError",
                    "message": "Validation error(s) present. See embedded errors list for more "
                    "details.",
                    "_embedded": {"errors": problems},
                },
                400,
            )
        transfer = Transfer(
            id=str(uuid.uuid4()),
            source=source,
            destination=destination,
            value=value,
            currency="USD",
            correlation_id=str(correlation_id),
            metadata={str(k): str(v) for k, v in metadata.items()},
            created=_now(),
        )
        self.transfers[transfer.id] = transfer
        self._events(transfer, "created")
        return transfer

    def _bank(self, body: dict[str, Any], end: str, problems: list[dict[str, Any]]) -> Bank | None:
        links = body.get("_links") if isinstance(body.get("_links"), dict) else {}
        href = str((links.get(end) or {}).get("href", ""))
        path = f"/_links/{end}/href"
        prefix = self._url("funding-sources") + "/"
        bank = self.banks.get(href[len(prefix) :]) if href.startswith(prefix) else None
        if bank is None:
            problems.append(_problem("NotFound", "Funding source not found.", path))
            return None
        if bank.removed:
            problems.append(_problem("Invalid", "Invalid funding source.", path))
            return None
        return bank

    async def _transfer(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        transfer = self.transfers.get(request.path_params["id"].lower())
        if transfer is None:
            return _error(404, "NotFound", "Transfer not found.")
        return _hal(self._resource(transfer))

    async def _failure(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        transfer = self.transfers.get(request.path_params["id"].lower())
        if transfer is None or transfer.status != "failed":
            return _error(404, "NotFound", "The requested resource was not found.")
        failed_bank = transfer.returned_by or transfer.source
        return _hal(
            {
                "_links": {
                    "self": {"href": self._url("transfers", transfer.id) + "/failure"},
                    "failed-funding-source": {"href": self._url("funding-sources", failed_bank.id)},
                },
                "code": transfer.return_code,
                "description": RETURN_REASONS.get(transfer.return_code, "Returned"),
                "explanation": "The bank returned the entry.",
            }
        )

    async def _customer_transfers(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        customer = request.path_params["id"]
        if customer not in self.customers:
            return _error(404, "NotFound", "Customer not found.")
        return self._search(
            request, lambda t: customer in (t.source.customer, t.destination.customer)
        )

    async def _account_transfers(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.path_params["id"] != self.account_id:
            return _error(404, "NotFound", "Account not found.")
        return self._search(request, lambda t: "" in (t.source.customer, t.destination.customer))

    def _search(self, request: Request, belongs: Any) -> Response:
        query = request.query_params
        wanted = query.get("correlationId")
        try:
            limit = int(query.get("limit", PAGE_SIZE))
            offset = int(query.get("offset", 0))
            after = date.fromisoformat(query["startDate"]) if "startDate" in query else None
            before = date.fromisoformat(query["endDate"]) if "endDate" in query else None
        except ValueError:
            return _validation("Invalid search parameter.", "/")
        if not 1 <= limit <= MAX_PAGE_SIZE or offset < 0:
            return _validation("Invalid limit or offset.", "/limit")
        with self._lock:
            found = [
                t
                for t in self.transfers.values()
                if belongs(t)
                and (wanted is None or t.correlation_id == wanted)
                and (after is None or _day(t) >= after)
                and (before is None or _day(t) < before)
            ]
            found.sort(key=lambda t: t.created, reverse=True)  # newest first
            reachable = found[: self.search_cap]
            page = [self._resource(t) for t in reachable[offset : offset + limit]]
        links: dict[str, Any] = {"self": {"href": str(request.url)}}
        if offset + limit < len(reachable):
            links["next"] = {"href": str(request.url.include_query_params(offset=offset + limit))}
        return _hal({"_links": links, "_embedded": {"transfers": page}, "total": len(found)})

    async def _funding_sources(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.path_params["id"] != self.account_id:
            return _error(404, "NotFound", "Account not found.")
        listed = []
        for bank in (self.school_bank, self.school_balance):
            listed.append(
                {
                    "_links": {
                        "self": {"href": self._url("funding-sources", bank.id)},
                        "account": {"href": self._url("accounts", self.account_id)},
                    },
                    "id": bank.id,
                    "status": "verified",
                    "type": bank.type,
                    "name": "Balance" if bank.type == "balance" else "School Checking",
                    "created": "2026-01-05T14:52:55.000Z",
                    "removed": bank.removed,
                    "channels": [] if bank.type == "balance" else ["ach"],
                }
            )
        return _hal(
            {
                "_links": {"self": {"href": str(request.url)}},
                "_embedded": {"funding-sources": listed},
            }
        )

    async def _fees(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        transfer = self.transfers.get(request.path_params["id"].lower())
        if transfer is None:
            return _error(404, "NotFound", "Transfer not found.")
        fees = []
        for fee in transfer.fees:
            resource = self._resource(fee)
            resource["amount"] = {"value": fee.value, "currency": "usd"}  # as Dwolla writes it
            fees.append(resource)
        return _hal({"transactions": fees, "total": len(fees)})

    # --- pieces ---------------------------------------------------------------------------------

    def _resource(self, transfer: Transfer) -> dict[str, Any]:
        links: dict[str, Any] = {
            "self": {"href": self._url("transfers", transfer.id)},
            "source": {"href": self._owner(transfer.source)},
            "source-funding-source": {"href": self._url("funding-sources", transfer.source.id)},
            "destination": {"href": self._owner(transfer.destination)},
            "destination-funding-source": {
                "href": self._url("funding-sources", transfer.destination.id)
            },
        }
        if transfer.status == "pending":
            links["cancel"] = {"href": self._url("transfers", transfer.id)}
        if transfer.status == "failed":
            links["failure"] = {"href": self._url("transfers", transfer.id) + "/failure"}
        if transfer.fees:
            links["fees"] = {"href": self._url("transfers", transfer.id) + "/fees"}
        if transfer.created_from:
            links["created-from-transfer"] = {"href": self._url("transfers", transfer.created_from)}
        resource: dict[str, Any] = {
            "_links": links,
            "id": transfer.id,
            "status": transfer.status,
            "amount": {"value": transfer.value, "currency": transfer.currency},
            "created": transfer.created,
            "clearing": {"source": "standard"},
            "metadata": transfer.metadata,
        }
        if transfer.correlation_id:
            resource["correlationId"] = transfer.correlation_id
        return resource

    def _events(self, transfer: Transfer, what: str) -> None:
        """Dwolla's events about a transfer, one per party: the customer's topic and the
        account's."""
        customer = transfer.source.customer or transfer.destination.customer
        for topic in (f"customer_transfer_{what}", f"transfer_{what}"):
            event_id = str(uuid.uuid4())
            event: dict[str, Any] = {
                "_links": {
                    "self": {"href": self._url("events", event_id)},
                    "account": {"href": self._url("accounts", self.account_id)},
                    # Events write the transfer's GUID in upper case, as Dwolla's examples do.
                    "resource": {"href": self._url("transfers", transfer.id.upper())},
                    "customer": {"href": self._url("customers", customer)},
                },
                "id": event_id,
                "resourceId": transfer.id.upper(),
                "topic": topic,
                "timestamp": _now(),
                "created": _now(),
            }
            if self.events_carry_correlation_id and transfer.correlation_id:
                event["correlationId"] = transfer.correlation_id
            body = json.dumps(event).encode()
            signature = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-Dwolla-Topic": topic,
                "X-Request-Signature-SHA-256": signature,
            }
            if self.webhook_url:
                self.outbox.append(Webhook(topic, body, headers))

    def _owner(self, bank: Bank) -> str:
        if bank.customer == "platform":
            return self._url("accounts", self.platform_id)
        if bank.customer:
            return self._url("customers", bank.customer)
        return self._url("accounts", self.account_id)

    def _bank_of(self, bank: Bank | str) -> Bank:
        if isinstance(bank, Bank):
            return bank
        return self.banks[bank.rstrip("/").rsplit("/", 1)[-1]]

    def _url(self, *parts: str) -> str:
        return "/".join((self.base_url.rstrip("/"), *parts))

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        self.seen.append(
            Seen(
                request.method,
                request.url.path,
                request.url.query,
                {name.lower(): value for name, value in request.headers.items()},
                body,
            )
        )
        return body

    def _refused(self, request: Request) -> Response | None:
        if self.failing:
            return _unavailable()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token)
        if scheme != "Bearer" or expires is None:
            return _error(401, "InvalidAccessToken", "Invalid access token.")
        if expires < time.monotonic():
            return _error(
                401,
                "ExpiredAccessToken",
                "Generate a new access token using your client credentials.",
            )
        if HAL not in request.headers.get("accept", ""):
            return _error(406, "InvalidVersion", "Missing or invalid API version.")
        return None


def _problem(code: str, message: str, path: str) -> dict[str, Any]:
    return {"code": code, "message": message, "path": path, "_links": {}}


def _hal(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=HAL)


def _error(status: int, code: str, message: str) -> Response:
    return _hal({"code": code, "message": message}, status)


def _unavailable() -> Response:
    return _error(503, "ServiceUnavailable", "Service unavailable.")


def _now(at: datetime | None = None) -> str:
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _day(transfer: Transfer) -> date:
    return datetime.fromisoformat(transfer.created).date()


def _validation(message: str, path: str) -> Response:
    return _hal(
        {
            "code": "ValidationError",
            "message": "Validation error(s) present. See embedded errors list for more details.",
            "_embedded": {"errors": [_problem("Invalid", message, path)]},
        },
        400,
    )
