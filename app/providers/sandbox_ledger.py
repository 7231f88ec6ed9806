"""The sandbox gateway's books: a simulated payments API in the dialect of Stripe's (the part
Switchboard speaks: PaymentIntents confirmed off session, refunds, balance transactions,
payouts), so the sandbox is driven by the same client code as Stripe itself.

It honours idempotency keys as Stripe does (the same key returns the first answer), approves a
share of charges set by the connection (`approval_rate`), always declines saved methods whose
token starts with `pm_sandbox_declined`, and keeps a fee per charge. No real money moves. The
books are kept in the data folder (`sandbox/<connection>.json`) once the services say where it
is, so the app, the server and each command-line run share them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import Mapping
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


@dataclass
class Ledger:
    approval_rate: float
    fees: FeeSchedule
    rng: random.Random
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    balance: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # by key
    path: Path | None = None
    _loaded: int = -1  # the file's modification time when last read or written

    def handle(self, request: httpx.Request) -> tuple[int, dict[str, Any]] | None:
        """The answer to a payments call, or None for a path this is not about."""
        self.load()  # another process (the app, a command) may have written since
        path, method = request.url.path, request.method
        form = dict(parse_qsl(request.content.decode("utf-8"))) if method == "POST" else {}
        key = request.headers.get("Idempotency-Key")
        if method == "POST" and key and key in self.answers:
            return self.answers[key]
        if method == "POST" and path == "/v1/payment_intents":
            answer = self._charge(form)
        elif method == "POST" and path == "/v1/refunds":
            answer = self._refund(form)
        elif method == "GET" and path.startswith("/v1/payment_intents/"):
            answer = _found(self.intents.get(path.rsplit("/", 1)[1]))
        elif method == "GET" and path.startswith("/v1/refunds/"):
            answer = _found(self.refunds.get(path.rsplit("/", 1)[1]))
        elif method == "GET" and path == "/v1/balance_transactions":
            answer = (200, {"object": "list", "data": list(reversed(self.balance))[:100]})
        elif method == "GET" and path == "/v1/payouts":
            answer = (200, {"object": "list", "data": []})  # the sandbox never pays out
        else:
            return None
        if method == "POST" and key:
            self.answers[key] = answer
        if method == "POST":
            self._save()
        return answer

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
            "created": int(time.time()),
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
        now = int(time.time())
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
            "available_on": now + 2 * 86_400,
        }
        self.balance.append(transaction)
        return transaction


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
