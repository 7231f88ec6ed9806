"""What a payment gateway is asked and what it answers, in Switchboard's own words: the same
for every gateway, whatever its API calls things.

A gateway's answer is one of a few outcomes, and a failure is one of four kinds, because what
happens next depends only on the kind:

- a hard decline (the card is stolen, closed, refused by its bank) is final: never tried again,
  here or at another gateway, since that would only charge a family whose bank said no;
- a soft decline (insufficient funds, "try again later") may pass later, at the same gateway;
- a technical failure (the gateway is down, answered 5xx, refused our request as malformed)
  says nothing about the payer: another gateway may take the payment;
- an unknown outcome (the request may have reached the gateway, no answer came back) must be
  found out before anything else is tried, or a family could be charged twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from app.domain.money import Money


class FailureKind(StrEnum):
    HARD_DECLINE = "hard_decline"
    SOFT_DECLINE = "soft_decline"
    TECHNICAL = "technical"
    UNKNOWN = "timeout_unknown"


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PROCESSING = "processing"  # accepted, the money not settled yet (bank debits, some wallets)
    FAILED = "failed"  # see the failure's kind
    NOT_FOUND = "not_found"  # a status sync found no payment with our reference


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    code: str  # the gateway's own code, e.g. "card_declined/stolen_card", "http_503"
    message: str  # a sentence for the office

    @property
    def may_fail_over(self) -> bool:
        """Whether another gateway may be tried now (an unknown outcome must be synced first)."""
        return self.kind is FailureKind.TECHNICAL


@dataclass(frozen=True)
class ChargeRequest:
    """One attempt at one gateway. `reference` is ours, unique per attempt: it is the
    idempotency key where the gateway takes one, and what a status sync looks the payment up by."""

    reference: str
    amount: Money
    method: str  # "card", "ach", "ecocash", ...
    token: str  # the saved payment method or mandate at this gateway
    customer: str = ""  # the payer at this gateway, where the gateway keeps payers
    description: str = ""
    created_at: float = 0.0  # epoch seconds of the first request (keys expire at some gateways)


@dataclass(frozen=True)
class ChargeResult:
    status: ChargeStatus
    gateway_id: str = ""  # the gateway's id of the payment ("" when it never got one)
    failure: Failure | None = None
    fee: Money | None = None  # what the gateway kept, once it says

    @property
    def succeeded(self) -> bool:
        return self.status is ChargeStatus.SUCCEEDED


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class RefundResult:
    status: RefundStatus
    gateway_id: str
    amount: Money
    failure: Failure | None = None


@dataclass(frozen=True)
class BalanceEntry:
    """One movement on the gateway's balance (a charge, a refund, a fee, a payout).

    `kind` is the gateway's own type where it has one (Stripe's balance transaction types).
    Gateways without types of their own use Stripe's words for the same movements: "charge"
    (money in from a payer), "refund", "fee", "payout" (to the school's bank), "payout_failure"
    (a payout that came back), "topup" (from the school's bank), "adjustment" (a reversal,
    a chargeback, a correction), "conversion" (between currencies), "hold" (money set aside
    and released) and "other".
    """

    gateway_id: str
    kind: str  # the gateway's type: "charge", "refund", "payout", ...
    amount: Money  # gross, signed: refunds and payouts are negative
    fee: Money  # what the gateway kept (negative when it gave a fee back)
    net: Money  # amount - fee
    source: str  # the charge, refund or payout it belongs to, by the id our side records
    created: int  # epoch seconds
    available_on: int
    payout: str = ""  # the payout that paid it out; "" when not known or not paid out yet


@dataclass(frozen=True)
class Payout:
    """Money the gateway sent from its balance to the school's bank. `amount` is positive:
    what leaves the gateway for the bank."""

    gateway_id: str
    amount: Money
    status: str  # the gateway's: "pending", "in_transit", "paid", "failed", "canceled"
    arrival: int  # epoch seconds: when the bank should have it (when it was made, if not said)
    created: int = 0  # epoch seconds: when the gateway made it
    # Whether the gateway says which balance entries it paid out (Stripe's automatic payouts):
    # only then do entries carry its id. Without, it is matched by its amount and date alone.
    itemized: bool = False


@dataclass(frozen=True)
class GatewayLedger:
    """What a gateway says of a period: every balance movement created in it, and every payout
    that arrived in it (that was made in it, where the gateway does not say when it arrives)."""

    entries: list[BalanceEntry]
    payouts: list[Payout]


@dataclass(frozen=True)
class FeeRule:
    """A percentage plus a fixed amount, for one method and currency or for any ("")."""

    percent: Decimal
    fixed_minor: int = 0
    method: str = ""
    currency: str = ""
    cross_border_percent: Decimal = Decimal(0)  # added when the payer's country is not ours

    def matches(self, method: str, currency: str) -> bool:
        return self.method in ("", method) and self.currency in ("", currency)

    @property
    def specificity(self) -> int:
        return bool(self.method) * 2 + bool(self.currency)


@dataclass(frozen=True)
class FeeSchedule:
    """What a gateway keeps of a payment. The most specific rule that matches wins (method and
    currency, then method, then currency, then the default)."""

    rules: tuple[FeeRule, ...] = field(default_factory=tuple)

    def fee(self, amount: Money, method: str, *, cross_border: bool = False) -> Money:
        matching = [rule for rule in self.rules if rule.matches(method, amount.currency)]
        if not matching:
            return Money(0, amount.currency)
        rule = max(matching, key=lambda candidate: candidate.specificity)
        percent = rule.percent + (rule.cross_border_percent if cross_border else Decimal(0))
        variable = (Decimal(amount.minor) * percent / 100).quantize(
            Decimal(1), rounding=ROUND_HALF_UP
        )
        return Money(int(variable) + rule.fixed_minor, amount.currency)
