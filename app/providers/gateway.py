"""The `PaymentGateway` capability: what Switchboard asks of every payment gateway, and how a
failure of the resilient HTTP layer is classified for payments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.domain.payments import (
    BalanceEntry,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    Failure,
    FailureKind,
    FeeSchedule,
    GatewayLedger,
    Payout,
    RefundResult,
)
from app.providers.http import (
    OutcomeUnknown,
    ProviderError,
    ProviderFailed,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
)

PAYMENTS = "payments"  # the capability's name in a spec's `capabilities`


class Feature(StrEnum):
    """What a gateway can do beyond charging a saved method. A gateway whose provider has no API
    for something leaves it out, and its method raises `Unsupported` with what to do instead."""

    LINKS = "links"  # payment links: the payer pays on the gateway's page
    REFUNDS = "refunds"
    LEDGER = "ledger"  # balance transactions and payouts, and the settled ledger of a period


class Unsupported(SwitchboardError):
    """The gateway has no API for this; the message says what to do instead."""


@dataclass(frozen=True)
class LinkRequest:
    """A payment the payer makes themselves on the gateway's page. `reference` is ours, as for
    a charge: the payment is synced by it (`PaymentGateway.sync`) until the payer has paid."""

    reference: str
    amount: Money
    description: str
    return_url: str = ""  # where the gateway sends the payer afterwards
    payer_email: str = ""
    method: str = ""  # where the gateway needs one ("ecocash" at Paynow); "" lets the payer pick
    created_at: float = 0.0


@dataclass(frozen=True)
class PaymentLink:
    url: str  # the page the payer opens
    gateway_id: str  # the gateway's id of the payment it waits for
    expires_at: float | None = None  # epoch seconds, when the gateway says


@runtime_checkable
class PaymentGateway(Protocol):
    methods: frozenset[str]
    currencies: frozenset[str]  # ISO 4217 codes; empty: any
    countries: frozenset[str]  # ISO 3166 alpha-2 of payers it takes; empty: any
    features: frozenset[Feature]
    fees: FeeSchedule

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge a saved payment method. Never raises for a failed charge: the result says
        how it failed (`ChargeResult.failure`)."""
        ...

    async def sync(self, request: ChargeRequest, gateway_id: str = "") -> ChargeResult:
        """The payment's status now, looked up by `gateway_id` when we have it, else by our
        reference; NOT_FOUND when the gateway has no payment of ours. An UNKNOWN failure when
        the gateway cannot be asked."""
        ...

    async def refund(self, gateway_id: str, amount: Money, reference: str) -> RefundResult:
        """`reference` is ours for the refund: the idempotency key where the gateway takes one."""
        ...

    async def refund_status(self, refund_id: str, amount: Money) -> RefundResult: ...

    async def balance_entries(self, limit: int = 100, after: str = "") -> list[BalanceEntry]:
        """Newest first; `after` is the last id of the previous page."""
        ...

    async def payouts(self, limit: int = 100, after: str = "") -> list[Payout]: ...

    async def ledger(self, since: datetime, until: datetime) -> GatewayLedger:
        """Every balance movement created in [since, until) and every payout that arrived in it,
        all pages read (Feature.LEDGER). `Unsupported`, saying how to reconcile instead, when
        the gateway has no API for it; a `ProviderError` when it cannot be asked or refuses."""
        ...

    async def create_link(self, request: LinkRequest) -> PaymentLink:
        """A page where the payer pays `request.amount` (Feature.LINKS); `ProviderError` or
        `Unsupported` when there is none."""
        ...


def ledger_period(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The period a ledger is asked for, in UTC. Naive times are refused: a ledger read in the
    wrong time zone would quietly miss a few hours at each end."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("A ledger's period must be given in aware times (with a time zone).")
    if until < since:
        raise ValueError("A ledger's period must end after it starts.")
    return since.astimezone(UTC), until.astimezone(UTC)


def failure_of(error: ProviderError) -> Failure:
    """A failure of the call itself. A request that may have reached the gateway without an
    answer is an unknown outcome; anything that never reached it, or that it refused to act on
    (down, breaker open, paused, rate-limited, 5xx), is technical."""
    if isinstance(error, ProviderTimeout | OutcomeUnknown):
        return Failure(FailureKind.UNKNOWN, error.error_class, str(error))
    if isinstance(error, ProviderFailed):
        return Failure(FailureKind.TECHNICAL, f"http_{error.status}", str(error))
    return Failure(FailureKind.TECHNICAL, error.error_class, str(error))


# Errors of a call that got no answer, or whose answer was the gateway's own trouble (5xx,
# 429): they say nothing of what it did, so a look-up or a repeat that meets one decides nothing.
UNANSWERED = (
    ProviderTimeout,
    OutcomeUnknown,
    ProviderUnreachable,
    ProviderUnavailable,
    ProviderFailed,
    RateLimited,
)


# Answers that may come after the gateway acted: an error inside it, or a proxy in front of it
# that gave up waiting. 503 (and 429) mean it refused the request without acting.
MAY_HAVE_ACTED = frozenset({"http_500", "http_502", "http_504"})


# Failures of the call itself, whatever the provider: it decided nothing, or did not say.
CALL_FAILURES = frozenset(
    {"paused", "breaker_open", "quota", "connect", "timeout", "timeout_unknown", "http_429"}
)


def no_decision(failure: Failure) -> bool:
    """Whether a failure says nothing about what the gateway did: the call never got an answer
    (refused here, not connected, timed out) or the gateway answered 408, 429 or 5xx."""
    code = failure.code
    return (
        failure.kind is FailureKind.UNKNOWN
        or code in CALL_FAILURES
        or code in ("http_408", "http_5xx")
        or (code.startswith("http_5") and code[5:].isdigit())
    )


def may_have_acted(failure: Failure) -> bool:
    """Whether the gateway may have taken the payment despite the failure: if so it must be
    asked (by our reference) before another gateway is tried."""
    return failure.kind is FailureKind.UNKNOWN or failure.code in MAY_HAVE_ACTED


def failed(error: ProviderError, gateway_id: str = "") -> ChargeResult:
    return ChargeResult(ChargeStatus.FAILED, gateway_id, failure_of(error))
