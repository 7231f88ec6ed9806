"""A fake Paynow interface, faithful in what Switchboard relies on, served over loopback.

- `POST /interface/initiatetransaction` (web) and `POST /interface/remotetransaction` (mobile
  express checkout): url-encoded forms whose `hash` (upper-case hex SHA-512 of the values in
  order, then the integration key) must match, from the right integration ID, with
  status=Message and an amount to two decimals. Mobile adds `phone` and `method` (ecocash or
  onemoney) and needs `authemail`, which in test mode must be the merchant's own. A repeated
  `merchanttrace` is refused ("Must be unique per merchant"); a repeated `reference` is taken,
  since the docs only say it "should be unique". Answers are url-encoded: status=Ok with
  browserurl/pollurl (web, in the capitalised names of the docs' example) or
  instructions/paynowreference/pollurl (mobile), each with its hash; or status=Error&error=…
  without a hash. Paynow's test-mode number 0774444444 is refused with "Insufficient balance".
- `POST /Interface/CheckPayment/?guid=…` (the poll URL): reference, paynowreference, amount,
  status, pollurl and hash, as in polling_status.md.
- `POST /interface/trace`: the same status message for a known `merchanttrace`, or
  status=NotFound with its hash.
- `GET /Payment/ConfirmPayment/<paynow reference>`: the page a payer opens from a link.

What the docs do not give word for word (the errors for a wrong ID, hash, phone or a repeated
trace) the fake words in the same style, and says so in a comment where it does.

The person paying is played by `payer_pays(reference)` and `payer_cancels(reference)`. Each
status change queues the status update Paynow would post to the transaction's result URL;
`deliver_updates()` posts them, signed with the integration key (`paynow_signed_body`).
Faults: `failing` makes every answer a 503, `corrupt_hashes` spoils the hash of every answer,
and `hang_after_accept` holds an initiation's answer back after the transaction was made.

Relied on: github.com/paynow/docs, docs/initiate_transaction.md, intiate_mobile_transaction.md,
generating_hash.md, validating_hash.md, polling_status.md, status_update.md, test_mode.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import re
import threading
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.providers.webhooks import paynow_signed_body

FORM = "application/x-www-form-urlencoded"
INSUFFICIENT_BALANCE = "0774444444"  # test_mode.md: refused at once with this message
MOBILE = re.compile(r"07\d{8}")
AMOUNT = re.compile(r"\d+\.\d{2}")


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


@dataclass
class Transaction:
    guid: str
    paynow_reference: str
    reference: str
    amount: str
    merchant_trace: str
    result_url: str
    method: str = ""  # "" for a web transaction: the payer picks on Paynow's page
    phone: str = ""
    status: str = "Created"

    def message(self, base_url: str) -> dict[str, str]:
        """A status message's fields, in the order of status_update.md (before the hash)."""
        return {
            "reference": self.reference,
            "amount": self.amount,
            "paynowreference": self.paynow_reference,
            "pollurl": poll_url(base_url, self.guid),
            "status": self.status,
        }


@dataclass
class Update:
    url: str
    body: bytes


@dataclass
class FakePaynow:
    integration_id: str = "1201"
    # The key of Paynow's own hash examples (generating_hash.md).
    integration_key: str = "3e9fed89-60e1-4ce5-ab6e-6b1eb2d4f977"
    merchant_email: str = "bursar@school.example"
    base_url: str = ""  # set by the test once served: poll and browser URLs point here
    failing: bool = False
    corrupt_hashes: bool = False
    hang_after_accept: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    transactions: dict[str, Transaction] = field(default_factory=dict)  # by guid
    updates: list[Update] = field(default_factory=list)  # waiting to be posted
    delivered: list[tuple[Update, int]] = field(default_factory=list)  # and the answer code
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(9510))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/interface/initiatetransaction", self._initiate, methods=["POST"]),
                Route("/interface/remotetransaction", self._remote, methods=["POST"]),
                Route("/interface/trace", self._trace, methods=["POST"]),
                Route("/Interface/CheckPayment/", self._poll, methods=["POST"]),
                Route("/Payment/ConfirmPayment/{number}", self._page, methods=["GET"]),
            ]
        )

    def payer_pays(self, reference: str) -> Transaction:
        """The payer approves on the phone (or pays on the page): Paid."""
        return self._change(reference, "Paid")

    def payer_cancels(self, reference: str) -> Transaction:
        """The payer cancels the prompt on the phone (or on the page): Cancelled."""
        return self._change(reference, "Cancelled")

    def merchant_refunds(self, reference: str) -> Transaction:
        """The school refunds a paid transaction in Paynow's dashboard: Refunded."""
        return self._change(reference, "Refunded")

    def payer_disputes(self, reference: str) -> Transaction:
        """The payer disputes a paid transaction; Paynow holds the money: Disputed."""
        return self._change(reference, "Disputed")

    def transaction(self, reference: str) -> Transaction:
        with self._lock:
            found = [t for t in self.transactions.values() if t.reference == reference]
        if not found:
            raise KeyError(f"the fake Paynow has no transaction {reference!r}")
        return found[-1]

    def count(self, path: str) -> int:
        return sum(seen.path == path for seen in self.seen)

    async def deliver_updates(self) -> list[int]:
        """Post every queued status update to its result URL, as Paynow does; the answers."""
        with self._lock:
            waiting, self.updates = self.updates, []
        codes = []
        async with httpx.AsyncClient(timeout=10) as client:
            for update in waiting:
                response = await client.post(
                    update.url, content=update.body, headers={"Content-Type": FORM}
                )
                self.delivered.append((update, response.status_code))
                codes.append(response.status_code)
        return codes

    def hash_of(self, values: list[str]) -> str:
        text = "".join(values) + self.integration_key.lower()
        return hashlib.sha512(text.encode("utf-8")).hexdigest().upper()

    # --- the interface ----------------------------------------------------------------------

    async def _initiate(self, request: Request) -> Response:
        return await self._initiation(request, mobile=False)

    async def _remote(self, request: Request) -> Response:
        return await self._initiation(request, mobile=True)

    async def _initiation(self, request: Request, *, mobile: bool) -> Response:
        fields = await self._read(request)
        if isinstance(fields, Response):
            return fields
        named = dict(fields)
        problem = self._problem(named, mobile)
        if problem:
            return _error(problem)
        base = self._base(request)
        with self._lock:
            trace = named.get("merchanttrace", "")
            if trace and any(t.merchant_trace == trace for t in self.transactions.values()):
                return _error("Duplicate merchant trace")  # the fake's wording
            transaction = Transaction(
                guid=str(uuid.uuid4()),
                paynow_reference=str(next(self._numbers)),
                reference=named["reference"],
                amount=named["amount"],
                merchant_trace=trace,
                result_url=named.get("resulturl", ""),
                method=named.get("method", "") if mobile else "",
                phone=named.get("phone", "") if mobile else "",
                status="Sent" if mobile else "Created",
            )
            self.transactions[transaction.guid] = transaction
        if mobile:
            answer = {
                "status": "Ok",
                "instructions": f"Dial *151*2*4# and enter your {transaction.method} PIN.",
                "paynowreference": transaction.paynow_reference,
                "pollurl": poll_url(base, transaction.guid),
            }
        else:
            answer = {  # the capitalised names of initiate_transaction.md's example
                "Status": "Ok",
                "BrowserUrl": f"{base}/Payment/ConfirmPayment/{transaction.paynow_reference}",
                "PollUrl": poll_url(base, transaction.guid),
            }
        if self.hang_after_accept:
            await asyncio.sleep(self.hang_after_accept)  # made; the answer never arrives
        return self._signed(answer)

    async def _poll(self, request: Request) -> Response:
        await self._record(request)
        if self.failing:
            return _unavailable()
        with self._lock:
            transaction = self.transactions.get(request.query_params.get("guid", ""))
        if transaction is None:
            return _error("Invalid poll url")  # the fake's wording
        return self._signed(transaction.message(self._base(request)))

    async def _trace(self, request: Request) -> Response:
        fields = await self._read(request)
        if isinstance(fields, Response):
            return fields
        named = dict(fields)
        if named.get("id") != self.integration_id:
            return _error("Invalid Id.")
        with self._lock:
            found = [
                t
                for t in self.transactions.values()
                if t.merchant_trace and t.merchant_trace == named.get("merchanttrace")
            ]
        if not found:
            return self._signed({"status": "NotFound"})
        return self._signed(found[0].message(self._base(request)))

    async def _page(self, request: Request) -> Response:
        await self._record(request)
        number = request.path_params["number"]
        with self._lock:
            known = any(t.paynow_reference == number for t in self.transactions.values())
        if not known:
            return HTMLResponse("<h1>Transaction not found</h1>", status_code=404)
        return HTMLResponse(f"<h1>Paynow</h1><p>Pay transaction {number}</p>")

    # --- pieces -----------------------------------------------------------------------------

    async def _read(self, request: Request) -> list[tuple[str, str]] | Response:
        """The request's form if it is a genuine one from this integration, else the answer."""
        body = await self._record(request)
        if self.failing:
            return _unavailable()
        if request.headers.get("content-type", "").split(";")[0].strip() != FORM:
            return _error("Invalid request")  # the fake's wording
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        hashes = [value for name, value in fields if name.lower() == "hash"]
        values = [value for name, value in fields if name.lower() != "hash"]
        given = hashes[0].upper().encode() if len(hashes) == 1 else b""
        if not hmac.compare_digest(given, self.hash_of(values).encode()):
            return _error("Invalid Hash")  # the fake's wording
        if dict(fields).get("status") != "Message":
            return _error("Invalid status")  # the fake's wording
        return fields

    def _problem(self, named: dict[str, str], mobile: bool) -> str:
        """Why an initiation is refused ("" when it is not)."""
        if named.get("id") != self.integration_id:
            return "Invalid Id."
        if not named.get("reference"):
            return "Invalid reference field"
        amount = named.get("amount", "")
        if not AMOUNT.fullmatch(amount) or _decimal(amount) <= 0:
            return "Invalid amount field"  # initiate_transaction.md's example
        if not mobile:
            return ""
        if named.get("method") not in ("ecocash", "onemoney"):
            return "Invalid payment method"
        if named.get("authemail", "").lower() != self.merchant_email.lower():
            # test_mode.md: in test mode authemail must be a login of the merchant account.
            return "Auth email must match the merchant account in test mode"
        phone = named.get("phone", "")
        if not MOBILE.fullmatch(phone):
            return "Invalid mobile number"
        if phone == INSUFFICIENT_BALANCE:
            return "Insufficient balance"
        return ""

    def _change(self, reference: str, status: str) -> Transaction:
        transaction = self.transaction(reference)
        with self._lock:
            transaction.status = status
            if transaction.result_url:
                body = paynow_signed_body(
                    transaction.message(self.base_url), self.integration_key.lower()
                )
                self.updates.append(Update(transaction.result_url, body))
        return transaction

    def _signed(self, fields: dict[str, str]) -> Response:
        digest = self.hash_of(list(fields.values()))
        if self.corrupt_hashes:
            digest = digest[::-1]
        return PlainTextResponse(urlencode([*fields.items(), ("hash", digest)]))

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        self.seen.append(Seen(request.method, request.url.path, body))
        return body

    def _base(self, request: Request) -> str:
        return self.base_url or str(request.base_url).rstrip("/")


def poll_url(base_url: str, guid: str) -> str:
    return f"{base_url}/Interface/CheckPayment/?guid={guid}"


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal(0)


def _error(message: str) -> Response:
    # status=Error answers carry no hash (Paynow's SDKs skip the check for them).
    return PlainTextResponse(urlencode({"status": "Error", "error": message}))


def _unavailable() -> Response:
    return PlainTextResponse("Service Unavailable", status_code=503)
