"""The sandbox gateway's books: a simulated payments API in the dialect of Stripe's (the part
Switchboard speaks: PaymentIntents confirmed off session, refunds, balance transactions,
payouts), so the sandbox is driven by the same client code as Stripe itself.

It honours idempotency keys as Stripe does (the same key returns the first answer), approves a
share of charges set by the connection (`approval_rate`), always declines saved methods whose
token starts with `pm_sandbox_declined`, and keeps a fee per charge. No real money moves. The
books are kept in the data folder (`sandbox/<connection>.json`) once the services say where it
is, so the app, the server and each command-line run share them.

It pays out as Stripe does on a daily automatic schedule: at every midnight (UTC), the balance
that has become available (`available_on` at or before it) is paid out, per currency, when it is
more than nothing, with a balance transaction of type "payout" for it; a balance that is not
positive waits for the next one. Payouts are made when the books are read, for every midnight
that has passed, so they follow from the books alone: the same books always make the same
payouts, with the same ids. Lists answer as Stripe's do: newest first, `limit` (default 10, at
most 100), `starting_after`, `has_more`, the `created` (and for payouts `arrival_date`) ranges,
balance transactions by `payout` and with `expand[]=data.source` (a charge then names its
PaymentIntent); a parameter Stripe would not know is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

from app.domain.money import Money
from app.domain.payments import FeeRule, FeeSchedule

DECLINED_METHOD = "pm_sandbox_declined"
SOFT_DECLINE_SHARE = 0.6  # of random declines, how many are "insufficient funds"
DAY = 86_400
AVAILABLE_AFTER = 2 * DAY  # a payment's money can be paid out two days after it was taken
ARRIVES_AFTER = DAY  # a payout reaches the bank the day after it is made
PAGE_SIZE, MAX_PAGE_SIZE = 10, 100  # Stripe's default and largest `limit`
RANGES = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


@dataclass
class Ledger:
    approval_rate: float
    fees: FeeSchedule
    rng: random.Random
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    balance: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # by key
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    paid_in: dict[str, str] = field(default_factory=dict)  # balance transaction -> its payout
    path: Path | None = None
    clock: Callable[[], float] = time.time
    _loaded: int = -1  # the file's modification time when last read or written

    def handle(self, request: httpx.Request) -> tuple[int, dict[str, Any]] | None:
        """The answer to a payments call, or None for a path this is not about."""
        self.load()  # another process (the app, a command) may have written since
        path, method = request.url.path, request.method
        form = dict(parse_qsl(request.content.decode("utf-8"))) if method == "POST" else {}
        query = dict(request.url.params.multi_items())
        key = request.headers.get("Idempotency-Key")
        if method == "POST" and key and key in self.answers:
            return self.answers[key]
        # The books are being read: the payouts due by now are made first.
        reading = method == "GET" and path.startswith(("/v1/balance_transactions", "/v1/payouts"))
        if reading and self.pay_out():
            self._save()
        if method == "POST" and path == "/v1/payment_intents":
            answer = self._charge(form)
        elif method == "POST" and path == "/v1/refunds":
            answer = self._refund(form)
        elif method == "GET" and path.startswith("/v1/payment_intents/"):
            answer = _found(self.intents.get(path.rsplit("/", 1)[1]))
        elif method == "GET" and path.startswith("/v1/refunds/"):
            answer = _found(self.refunds.get(path.rsplit("/", 1)[1]))
        elif method == "GET" and path == "/v1/balance_transactions":
            answer = self._balance_transactions(query)
        elif method == "GET" and path == "/v1/payouts":
            shown = [self._shown(payout) for payout in self.payouts.values()]
            answer = _listed("/v1/payouts", shown, query, ("created", "arrival_date"), ("status",))
        elif method == "GET" and path.startswith("/v1/payouts/"):
            found = self.payouts.get(path.rsplit("/", 1)[1])
            answer = _found(self._shown(found) if found is not None else None)
        else:
            return None
        if method == "POST" and key:
            self.answers[key] = answer
        if method == "POST":
            self._save()
        return answer

    # --- payouts ----------------------------------------------------------------------------

    def pay_out(self) -> bool:
        """Make the automatic payouts of every midnight that has passed; whether any was made.
        Only midnights after some money became available can pay anything, so only those are
        looked at."""
        now = int(self.clock())
        unpaid = [
            item
            for item in self.balance
            if item["id"] not in self.paid_in and item.get("type") != "payout"
        ]
        midnights = sorted({_midnight_after(int(item["available_on"])) for item in unpaid})
        made = False
        for midnight in (day for day in midnights if day <= now):
            due: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for item in unpaid:
                if item["id"] not in self.paid_in and int(item["available_on"]) <= midnight:
                    due[str(item["currency"])].append(item)
            for currency, items in sorted(due.items()):
                total = sum(int(item["net"]) for item in items)
                if total > 0:  # a balance that is not positive waits for more money
                    self._payout(currency, total, items, midnight)
                    made = True
        return made

    def _payout(self, currency: str, total: int, items: list[dict[str, Any]], at: int) -> None:
        # Ids follow from what is paid out, so the same books always make the same payouts.
        digest = hashlib.sha256(",".join(sorted(item["id"] for item in items)).encode())
        payout_id = f"po_sbx{digest.hexdigest()[:16]}"
        transaction = {
            "id": f"txn_sbx{hashlib.sha256(payout_id.encode()).hexdigest()[:16]}",
            "object": "balance_transaction",
            "type": "payout",
            "amount": -total,
            "fee": 0,
            "net": -total,
            "currency": currency,
            "source": payout_id,
            "created": at,
            "available_on": at,
        }
        self.balance.append(transaction)
        self.payouts[payout_id] = {
            "id": payout_id,
            "object": "payout",
            "amount": total,
            "currency": currency,
            "arrival_date": at + ARRIVES_AFTER,
            "automatic": True,
            "balance_transaction": transaction["id"],
            "created": at,
            "description": "SANDBOX PAYOUT",
            "method": "standard",
            "type": "bank_account",
            "status": "in_transit",
        }
        for item in [*items, transaction]:
            self.paid_in[item["id"]] = payout_id

    def _shown(self, payout: dict[str, Any]) -> dict[str, Any]:
        """A payout as it stands now: in transit until the day it reaches the bank, then paid."""
        arrived = int(payout["arrival_date"]) <= self.clock()
        return {**payout, "status": "paid" if arrived else "in_transit"}

    def _balance_transactions(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        now = self.clock()
        items = [
            {**item, "status": "available" if int(item["available_on"]) <= now else "pending"}
            for item in self.balance
        ]
        payout_id = query.get("payout")
        if payout_id is not None:
            if payout_id not in self.payouts:
                return _error(404, "invalid_request_error", "resource_missing", "No such payout.")
            items = [item for item in items if self.paid_in.get(item["id"]) == payout_id]
        query = dict(query)
        expand = query.pop("expand[]", None)
        if expand not in (None, "data.source"):
            return _error(
                400,
                "invalid_request_error",
                "parameter_invalid",
                f"This property cannot be expanded ({expand}).",
            )
        status, body = _listed(
            "/v1/balance_transactions", items, query, ("created",), ("payout", "type")
        )
        if expand and status == 200:
            charged = {
                str(intent["latest_charge"]["id"]): intent
                for intent in self.intents.values()
                if intent.get("latest_charge")
            }
            body["data"] = [
                {**item, "source": self._source(item, charged)} for item in body["data"]
            ]
        return status, body

    def _source(
        self, transaction: dict[str, Any], charged: dict[str, dict[str, Any]]
    ) -> dict[str, Any] | str:
        """A balance transaction's source as an object, as `expand[]=data.source` gives it: a
        charge (with its PaymentIntent), a refund or a payout."""
        source = str(transaction["source"])
        intent = charged.get(source)
        if intent is not None:
            return {
                "id": source,
                "object": "charge",
                "amount": intent["amount"],
                "currency": intent["currency"],
                "payment_intent": intent["id"],
                "balance_transaction": transaction["id"],
                "status": "succeeded",
                "created": transaction["created"],
            }
        if source in self.refunds:
            return {**self.refunds[source], "balance_transaction": transaction["id"]}
        if source in self.payouts:
            return self._shown(self.payouts[source])
        return source

    def _id(self, prefix: str) -> str:
        return f"{prefix}_sbx{uuid.uuid4().hex[:16]}"

    def _save(self) -> None:
        if self.path is None:
            return
        state = {
            "intents": self.intents,
            "refunds": self.refunds,
            "balance": self.balance,
            "answers": {key: list(answer) for key, answer in self.answers.items()},
            "payouts": self.payouts,
            "paid_in": self.paid_in,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(state), encoding="utf-8")
        os.replace(partial, self.path)
        self._loaded = self.path.stat().st_mtime_ns

    def load(self) -> None:
        """Read the books again if the file changed since they were last read or written."""
        if self.path is None:
            return
        try:
            changed = self.path.stat().st_mtime_ns
        except OSError:
            return
        if changed == self._loaded:
            return
        self._loaded = changed
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            state = json.loads(self.path.read_text(encoding="utf-8"))
            self.intents = dict(state["intents"])
            self.refunds = dict(state["refunds"])
            self.balance = list(state["balance"])
            self.answers = {key: (int(a[0]), dict(a[1])) for key, a in state["answers"].items()}
            # Books kept before the sandbox paid out have none yet.
            self.payouts = dict(state.get("payouts") or {})
            self.paid_in = dict(state.get("paid_in") or {})

    def _charge(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            amount = Money(int(form["amount"]), form["currency"].upper())
        except (KeyError, ValueError):
            return _error(400, "invalid_request_error", "parameter_invalid", "Bad amount.")
        if amount.minor <= 0:
            return _error(400, "invalid_request_error", "amount_too_small", "Bad amount.")
        method = form.get("payment_method", "")
        intent: dict[str, Any] = {
            "id": self._id("pi"),
            "object": "payment_intent",
            "amount": amount.minor,
            "currency": amount.currency.lower(),
            "payment_method": method,
            "customer": form.get("customer"),
            "metadata": {
                name[len("metadata[") : -1]: value
                for name, value in form.items()
                if name.startswith("metadata[")
            },
            "created": int(self.clock()),
        }
        self.intents[intent["id"]] = intent
        decline = self._decline(method)
        if decline is not None:
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = decline
            return 402, {"error": {**decline, "type": "card_error", "payment_intent": intent}}
        fee = self.fees.fee(amount, "card")
        charge = self._id("ch")
        transaction = self._book("charge", amount.minor, fee.minor, amount.currency, charge)
        intent["status"] = "succeeded"
        intent["latest_charge"] = {"id": charge, "balance_transaction": transaction}
        return 200, intent

    def _decline(self, method: str) -> dict[str, str] | None:
        if method.startswith(DECLINED_METHOD):
            return {
                "code": "card_declined",
                "decline_code": "stolen_card",
                "message": "Your card was declined.",
            }
        if self.rng.random() < self.approval_rate:
            return None
        if self.rng.random() < SOFT_DECLINE_SHARE:
            return {
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
            }
        return {
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
        }

    def _refund(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        intent = self.intents.get(form.get("payment_intent", ""))
        if intent is None or intent.get("status") != "succeeded":
            return _error(404, "invalid_request_error", "resource_missing", "No such payment.")
        refunded = sum(
            refund["amount"]
            for refund in self.refunds.values()
            if refund["payment_intent"] == intent["id"] and refund["status"] == "succeeded"
        )
        amount = int(form.get("amount") or intent["amount"] - refunded)
        if amount <= 0 or refunded + amount > intent["amount"]:
            return _error(
                400,
                "invalid_request_error",
                "charge_already_refunded",
                "The refund is more than is left of the payment.",
            )
        refund = {
            "id": self._id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "metadata": {
                name[len("metadata[") : -1]: value
                for name, value in form.items()
                if name.startswith("metadata[")
            },
        }
        self.refunds[refund["id"]] = refund
        self._book("refund", -amount, 0, intent["currency"].upper(), refund["id"])
        return 200, refund

    def _book(self, kind: str, amount: int, fee: int, currency: str, source: str) -> dict[str, Any]:
        now = int(self.clock())
        transaction = {
            "id": self._id("txn"),
            "object": "balance_transaction",
            "type": kind,
            "amount": amount,
            "fee": fee,
            "net": amount - fee,
            "currency": currency.lower(),
            "source": source,
            "created": now,
            "available_on": now + AVAILABLE_AFTER,
        }
        self.balance.append(transaction)
        return transaction


def _midnight_after(moment: int) -> int:
    """The first midnight (UTC) at or after `moment`: when money available then is paid out."""
    return -(-moment // DAY) * DAY


def _listed(
    url: str,
    items: list[dict[str, Any]],
    query: Mapping[str, str],
    ranges: tuple[str, ...],
    others: tuple[str, ...],
) -> tuple[int, dict[str, Any]]:
    """A page of a Stripe list: newest first (the later made first among equals), filtered by
    the `ranges` (`created[gte]`, ...) and cut by `limit` after `starting_after`."""
    known = {"limit", "starting_after", *others}
    known |= {f"{name}[{op}]" for name in ranges for op in RANGES}
    unknown = sorted(set(query) - known)
    if unknown:
        return _error(
            400,
            "invalid_request_error",
            "parameter_unknown",
            f"Received unknown parameter: {unknown[0]}",
        )
    try:
        limit = int(query.get("limit", PAGE_SIZE))
        bounds = [
            (name, RANGES[op], int(query[f"{name}[{op}]"]))
            for name in ranges
            for op in RANGES
            if f"{name}[{op}]" in query
        ]
    except ValueError:
        return _error(400, "invalid_request_error", "parameter_invalid_integer", "Not a number.")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        return _error(
            400,
            "invalid_request_error",
            "parameter_invalid_integer",
            f"limit must be between 1 and {MAX_PAGE_SIZE}.",
        )
    if "status" in query:
        items = [item for item in items if item.get("status") == query["status"]]
    if "type" in query:
        items = [item for item in items if item.get("type") == query["type"]]
    chosen = [
        item
        for item in items
        if all(compare(int(item[name]), bound) for name, compare, bound in bounds)
    ]
    order = sorted(enumerate(chosen), key=lambda pair: (int(pair[1]["created"]), pair[0]))
    newest_first = [item for _, item in reversed(order)]
    start = 0
    after = query.get("starting_after")
    if after is not None:
        ids = [item["id"] for item in newest_first]
        if after not in ids:
            return _error(
                400, "invalid_request_error", "resource_missing", f"No such object: {after}"
            )
        start = ids.index(after) + 1
    page = newest_first[start : start + limit]
    more = start + limit < len(newest_first)
    return 200, {"object": "list", "url": url, "has_more": more, "data": page}


def _found(item: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    if item is None:
        return _error(404, "invalid_request_error", "resource_missing", "No such object.")
    return 200, item


def _error(status: int, kind: str, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"type": kind, "code": code, "message": message}}


# One set of books per sandbox connection (a connection's client is rebuilt when its settings
# change; its books are not), kept in `_FOLDER` when the services have said where it is.
_LEDGERS: dict[int, Ledger] = {}
_FOLDER: list[Path] = []


def keep_books_in(folder: Path) -> None:
    """Where the sandbox keeps its books (the data folder); called when services open."""
    _FOLDER[:] = [folder / "sandbox"]


def ledger_of(connection_id: int, approval_rate: float, fees: FeeSchedule) -> Ledger:
    ledger = _LEDGERS.get(connection_id)
    path = _FOLDER[0] / f"{connection_id}.json" if _FOLDER and connection_id else None
    if ledger is None or ledger.path != path:
        ledger = Ledger(approval_rate, fees, random.Random(), path=path)
        ledger.load()
        _LEDGERS[connection_id] = ledger
    ledger.approval_rate, ledger.fees = approval_rate, fees
    return ledger


def sandbox_fees(config: Mapping[str, Any]) -> FeeSchedule:
    percent = Decimal(str(config.get("fee_percent", 2.9)))
    fixed = int(config.get("fee_fixed_minor", 30))
    return FeeSchedule((FeeRule(percent, fixed),))
