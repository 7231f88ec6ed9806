"""Paysafe: card payments on cards saved at Paysafe, and their refunds, over Paysafe's Payments
API (JSON, HTTP Basic with the API key's username and password).

Which API. Paysafe has two for cards: the older Card Payments API (`/cardpayments/v1/accounts/
{accountId}/auths`, cards saved in its Customer Vault) and the Payments API (`/paymenthub/v1`,
cards saved as multi-use payment handles). The Payments API is the one Paysafe's Business
Portal, Paysafe Checkout, Paysafe.js, its mobile SDKs and its current server SDK are built on, so
it is what a school signing up today is given, and what is used here. In it the merchant account
is not in the URL: a saved card's payment handle and the currency pick it. A connection is
therefore for one account and its one currency.

A charge is one `POST /paymenthub/v1/payments` that authorises and settles at once
(`settleWithAuth`), with our attempt's reference as `merchantRefNum` and `dupCheck` on. Paysafe
takes no idempotency key; `dupCheck` is what makes repeating safe: Paysafe refuses a
`merchantRefNum` it has seen in the last 90 days, so a repeat after a lost answer (the HTTP
layer's retry, or a status sync) turns into a lookup by `merchantRefNum`, which says what the
first request did. A sync repeats the request only within a day of the attempt; after that it
only looks up. Lookups by `merchantRefNum` give Paysafe a date range from a day before the
attempt until now (Paysafe searches only the last 30 days otherwise). A lookup that cannot be
made leaves the outcome unknown; "not found" is only ever Paysafe's own answer that it has no
payment with our reference (an empty list, or 404 with its error 5269; a bare 404 is not).
A card or risk decline code (3xxx, 4xxx) is a decline whatever the HTTP status it comes with.

Refunds are made against the settlement, which with `settleWithAuth` has the payment's id
(`POST /paymenthub/v1/settlements/{paymentId}/refunds`), with the refund's reference as
`merchantRefNum` and `dupCheck` on, so a repeated refund is looked up the same way.

Paysafe's webhooks carry a `Signature` header: the base64 HMAC-SHA256 of the raw body with the
HMAC key agreed with Paysafe (`PaysafeVerifier`). Balance, payouts and payment links are not
offered here: their methods raise `Unsupported` saying where to go instead.

Relied on: Paysafe's Payments API SDK for PHP (paysafegroup/paysafe-payments-api-sdk-php 1.2.0:
Config/Environment and Client/PaysafeApiBase for the hosts, the /paymenthub prefix and Basic
authentication of "username:password"; Service/PaymentService, RefundService and
MonitorService for the paths and the merchantRefNum lookups; Exception/ExceptionBuilder for
what 400, 401, 402, 403, 409 and 5xx answers mean; Model/Payment/Enums/PaymentRequestStatus;
the error bodies of its tests: 5068, 5269, 5270, 5279, 1000); developer.paysafe.com, Payments
API: "Transaction with Payment Handle" (the payment request), "Simulating Card Payments" (the
decline codes 3009, 3015, 3022, 3023, 3024, 3007, 3060, 4001, 4002 and 1007, and that Paysafe
gives up on a transaction after 30 s), "Card Errors" (the error body), "Processing Refunds"
(the payment's id as the settlement's when settled with the authorisation), "Configure
Webhooks" (the Signature header) and the webhook payload samples (eventName, resourceId,
payload.merchantRefNum); the standalone-credit request reference for dupCheck's 90 days;
GymMaster's notes on Paysafe decline codes (3004 as an account setting, not the card).
Not verified against Paysafe itself: the code of the duplicate-merchantRefNum error (5031,
answered with HTTP 409; either is taken as a duplicate), 3406 for a refund before the nightly
settlement batch, whether a lookup of an unknown merchantRefNum answers an empty list or 404
with 5269 (both are "none"), the format of startDate and endDate (sent as UTC date-times,
2024-05-01T09:30:00Z, as Paysafe writes txnTime; its SDK's own test sends bare dates), and
whether the HMAC key is used as text or base64-decoded (both are accepted).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from app.domain.money import Money, MoneyError, is_known_currency
from app.domain.payments import (
    BalanceEntry,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    Failure,
    FailureKind,
    FeeRule,
    FeeSchedule,
    GatewayLedger,
    Payout,
    RefundResult,
    RefundStatus,
)
from app.providers.base import HealthResult, Provider
from app.providers.gateway import (
    PAYMENTS,
    UNANSWERED,
    Feature,
    LinkRequest,
    PaymentLink,
    Unsupported,
    failed,
    failure_of,
)
from app.providers.http import (
    ProviderError,
    ResilientClient,
)
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    ResiliencePolicy,
    WebhookSpec,
)
from app.providers.webhooks import PaysafeVerifier

ENVIRONMENTS = {
    "test": "https://api.test.paysafe.com",
    "live": "https://api.paysafe.com",
}
# Paysafe refuses a merchantRefNum it has seen within 90 days (dupCheck), so a sync may repeat
# the payment request, which Paysafe answers with what the first one did (or does it now, once,
# if it never arrived). Only within a day, though: a payment that never arrived must not be made
# days after the family was told it failed or is pending; after that, only a lookup.
REPLAY_SECONDS = 24 * 3600
# Paysafe's searches by merchantRefNum cover the 30 days before `endDate` unless `startDate`
# says otherwise (its SDKs' getPaymentsUsingMerchantReferenceNumber): a search starts a day
# before the attempt, and a refund's (whose start is not known) at dupCheck's 90 days.
SEARCH_MARGIN_SECONDS = 86_400
DUPCHECK_SECONDS = 90 * 86_400
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # UTC, as Paysafe writes txnTime

# Repeating these cannot charge or refund twice: dupCheck refuses the repeat and it becomes a
# lookup. So the HTTP layer may retry them after a timeout or a 5xx.
CREATE_PAYMENT = Operation("create-payment", "POST", "/paymenthub/v1/payments", idempotent=True)
CREATE_REFUND = Operation(
    "create-refund", "POST", "/paymenthub/v1/settlements/{id}/refunds", idempotent=True
)
PAYMENT = Operation("payment", "GET", "/paymenthub/v1/payments/{id}")
FIND_PAYMENTS = Operation("find-payments", "GET", "/paymenthub/v1/payments")
REFUND = Operation("refund", "GET", "/paymenthub/v1/refunds/{id}")
FIND_REFUNDS = Operation("find-refunds", "GET", "/paymenthub/v1/refunds")
MONITOR = Operation("monitor", "GET", "/paymenthub/v1/monitor", timeout=10.0)
# Looked up by the health check: a reference Switchboard never gives a payment.
HEALTH_REFERENCE = "switchboard-health-check"

DUPLICATE = "5031"  # "The transaction you have submitted has already been processed."
NOT_FOUND = "5269"  # "Entity not found"
NOT_BATCHED = "3406"  # a refund before the settlement was batched

# Declines that may pass if tried again later at Paysafe (the same card).
SOFT_DECLINES = frozenset({"3022"})  # insufficient funds
# Declines about the school's account set-up or Paysafe's processing, not about the payer:
# another gateway may take the payment.
TECHNICAL_DECLINES = frozenset(
    {
        "1007",  # no answer from the card network in time (also sent as HTTP 500)
        "3004",  # the account requires a postal code for an address check
    }
)
# Every other decline is final (3009 declined by the bank, 3023/3024 the bank's rules, 3007 the
# address check, 3015 referral, 3060 strong authentication needed, 4001/4002 Paysafe's risk
# checks, …): trying a decline elsewhere charges a family whose bank said no.

PAYMENT_STATUSES = {"COMPLETED": ChargeStatus.SUCCEEDED}
FAILED_PAYMENT_STATUSES = frozenset({"FAILED", "CANCELLED"})
# RECEIVED, PENDING, PROCESSING, HELD (held for Paysafe's risk review) and anything new: accepted
# but not through yet; a webhook or a later sync says how it ends.
REFUND_STATUSES = {
    "COMPLETED": RefundStatus.SUCCEEDED,
    "FAILED": RefundStatus.FAILED,
    "CANCELLED": RefundStatus.CANCELED,
}


class Paysafe(Provider):
    methods = frozenset({"card"})
    currencies: frozenset[str]
    countries: frozenset[str] = frozenset()
    features = frozenset({Feature.REFUNDS})
    fees: FeeSchedule

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        currency = str(config.get("currency") or "")
        self.currencies = frozenset({currency}) if currency else frozenset()
        self.fees = fee_schedule(config)

    # --- charging -----------------------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        return await self._submit(request, asking=False)

    async def sync(self, request: ChargeRequest, gateway_id: str = "") -> ChargeResult:
        if not gateway_id:
            if time.time() - request.created_at < REPLAY_SECONDS:
                return await self._submit(request, asking=True)
            return await self._find(request)
        try:
            response = await self.call(PAYMENT, path_params={"id": gateway_id})
        except ProviderError as error:
            return ChargeResult(ChargeStatus.FAILED, gateway_id, _unknown(error))
        if _is_not_found(response):
            return await self._find(request)
        if response.status_code >= 400:
            failure = _unknown_failure(_paysafe_failure(response))
            return ChargeResult(ChargeStatus.FAILED, gateway_id, failure)
        return _payment_result(_json(response))

    async def _submit(self, request: ChargeRequest, *, asking: bool) -> ChargeResult:
        """The payment request. `asking`: a sync repeating it to learn what the first one did,
        so anything short of Paysafe saying what became of the payment leaves it unknown."""
        try:
            response = await self.call(CREATE_PAYMENT, json=_payment_body(request))
        except ProviderError as error:
            return (
                ChargeResult(ChargeStatus.FAILED, "", _unknown(error)) if asking else failed(error)
            )
        if _is_duplicate(response):
            # An earlier request with this reference reached Paysafe (a retry after a lost
            # answer): what it did is the answer.
            return await self._find(request, known_to_exist=True)
        if asking and response.status_code >= 400 and not _is_decline(response):
            failure = _unknown_failure(_paysafe_failure(response))
            return ChargeResult(ChargeStatus.FAILED, "", failure)
        return _charge_result(response)

    async def _find(self, request: ChargeRequest, *, known_to_exist: bool = False) -> ChargeResult:
        """The payment with our reference, by Paysafe's merchantRefNum lookup over the days
        since the attempt began; "not found" only when Paysafe answers that it has none.
        `known_to_exist`: Paysafe has just said the reference was used, so finding nothing
        means "not listed yet"."""
        since = request.created_at - SEARCH_MARGIN_SECONDS if request.created_at > 0 else None
        params = {"merchantRefNum": request.reference, **_search_range(since)}
        try:
            response = await self.call(FIND_PAYMENTS, params=params)
        except ProviderError as error:
            return ChargeResult(ChargeStatus.FAILED, "", _unknown(error))
        if response.status_code >= 400 and not _is_not_found(response):
            failure = _unknown_failure(_paysafe_failure(response))
            return ChargeResult(ChargeStatus.FAILED, "", failure)
        found = _listed(response, "payments") if response.status_code < 400 else []
        if found:
            return _payment_result(_best_payment(found))
        if known_to_exist:
            return ChargeResult(
                ChargeStatus.FAILED,
                "",
                Failure(
                    FailureKind.UNKNOWN,
                    "not_listed_yet",
                    "Paysafe says this payment was already sent but does not list it yet; "
                    "Switchboard will ask again before trying anything else.",
                ),
            )
        return ChargeResult(ChargeStatus.NOT_FOUND)

    # --- refunds ------------------------------------------------------------------------------

    async def refund(self, gateway_id: str, amount: Money, reference: str) -> RefundResult:
        try:
            response = await self.call(
                CREATE_REFUND,
                path_params={"id": gateway_id},
                json={"merchantRefNum": reference, "amount": amount.minor, "dupCheck": True},
            )
        except ProviderError as error:
            if _unanswered(error):
                # It may have been made, and with dupCheck asking again is safe: pending until
                # the same request (or a lookup) says.
                return RefundResult(RefundStatus.PENDING, "", amount, _unknown(error))
            return RefundResult(RefundStatus.FAILED, "", amount, failure_of(error))
        if _is_duplicate(response):
            return await self._find_refund(reference, amount)
        return _refund_result(response, amount)

    async def refund_status(self, refund_id: str, amount: Money) -> RefundResult:
        try:
            response = await self.call(REFUND, path_params={"id": refund_id})
        except ProviderError as error:
            return RefundResult(RefundStatus.PENDING, refund_id, amount, _unknown(error))
        if response.status_code >= 400:
            failure = _unknown_failure(_paysafe_failure(response))
            return RefundResult(RefundStatus.PENDING, refund_id, amount, failure)
        return _refund_result(response, amount)

    async def _find_refund(self, reference: str, amount: Money) -> RefundResult:
        """The refund an earlier request with this reference made: Paysafe said it exists, so
        anything short of finding it leaves it pending, never failed."""
        params = {"merchantRefNum": reference, **_search_range(None)}
        try:
            response = await self.call(FIND_REFUNDS, params=params)
        except ProviderError as error:
            return RefundResult(RefundStatus.PENDING, "", amount, _unknown(error))
        found = _listed(response, "refunds") if response.status_code < 400 else []
        if not found:
            failure = Failure(
                FailureKind.UNKNOWN,
                "not_listed_yet",
                "Paysafe says this refund was already sent but does not list it yet.",
            )
            return RefundResult(RefundStatus.PENDING, "", amount, failure)
        return _refund_of(found[0], amount)

    # --- what Paysafe has no API for here -----------------------------------------------------

    async def balance_entries(self, limit: int = 100, after: str = "") -> list[BalanceEntry]:
        raise Unsupported(
            f"Switchboard cannot read {self.spec.name}'s balance; see it in the Paysafe Business "
            "Portal under Reports, or reconcile from a settlement report downloaded there."
        )

    async def payouts(self, limit: int = 100, after: str = "") -> list[Payout]:
        raise Unsupported(
            f"Switchboard cannot read {self.spec.name}'s payouts; see them in the Paysafe "
            "Business Portal under Reports."
        )

    async def ledger(self, since: datetime, until: datetime) -> GatewayLedger:
        raise Unsupported(
            f"Switchboard cannot read {self.spec.name}'s settlements through its API; download "
            "the settlement report (CSV) for the period in the Paysafe Business Portal under "
            "Reports and import it on the Reconciliation page."
        )

    async def create_link(self, request: LinkRequest) -> PaymentLink:
        raise Unsupported(
            f"{self.spec.name} payment links are not made by Switchboard; charge a card the "
            "family saved at Paysafe, or send a link from another gateway."
        )

    # --- health -------------------------------------------------------------------------------

    async def check_health(self) -> HealthResult:
        """Paysafe's monitor (GET /paymenthub/v1/monitor) says whether the API is up, not
        whether our key works; a lookup of a reference Switchboard never uses proves both."""
        started = time.monotonic()
        try:
            response = await self.call(FIND_PAYMENTS, params={"merchantRefNum": HEALTH_REFERENCE})
        except ProviderError as error:
            return HealthResult(False, _since(started), str(error), error.error_class)
        elapsed = _since(started)
        status = response.status_code
        if status in (401, 403):
            return HealthResult(
                False,
                elapsed,
                f"Paysafe refused the API username and password (HTTP {status}); copy the "
                "secret API key again from the Business Portal (Developer → API Keys) and "
                "check that Test or Live matches it.",
                "auth",
            )
        if status >= 400 and not _is_not_found(response):
            message = _paysafe_failure(response).message
            return HealthResult(False, elapsed, message, f"http_{status // 100}xx")
        return HealthResult(True, elapsed, f"Paysafe answered in {elapsed:.0f} ms.")


# --- requests and answers ------------------------------------------------------------------


def _payment_body(request: ChargeRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchantRefNum": request.reference,
        "amount": request.amount.minor,
        "currencyCode": request.amount.currency,
        "paymentHandleToken": request.token,
        "settleWithAuth": True,
        "dupCheck": True,
    }
    if request.description:
        body["description"] = request.description[:255]
    return body


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(body: Mapping[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _code(response: httpx.Response) -> str:
    return str(_error(_json(response)).get("code") or "")


def _is_duplicate(response: httpx.Response) -> bool:
    return response.status_code == 409 or _code(response) == DUPLICATE


def _is_not_found(response: httpx.Response) -> bool:
    """Paysafe's own "no such entity" (404 with its error 5269). A bare 404 (an HTML page from
    a wrong address or a proxy) says nothing about our payment."""
    return response.status_code == 404 and _code(response) == NOT_FOUND


def _is_decline_code(code: str) -> bool:
    """Paysafe's card (3xxx) and risk (4xxx) decline codes."""
    return len(code) == 4 and code.isdigit() and code[0] in "34"


def _is_decline(response: httpx.Response) -> bool:
    """A decline of the payment, whatever the HTTP status Paysafe sent it with."""
    return response.status_code == 402 or _is_decline_code(_code(response))


def _search_range(since: float | None) -> dict[str, str]:
    """startDate and endDate of a merchantRefNum search: from `since` (epoch seconds; None:
    dupCheck's 90 days) until now."""
    now = time.time()
    start = since if since is not None else now - DUPCHECK_SECONDS
    return {"startDate": _utc(start), "endDate": _utc(now)}


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(max(epoch, 0.0), UTC).strftime(DATE_FORMAT)


def _unanswered(error: ProviderError) -> bool:
    return isinstance(error, UNANSWERED)


def _listed(response: httpx.Response, key: str) -> list[dict[str, Any]]:
    items = _json(response).get(key)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _best_payment(payments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """With dupCheck there is one payment per reference; should there be more, the one that
    took the money says most, then one still under way, then the latest failure."""

    def rank(payment: Mapping[str, Any]) -> int:
        status = str(payment.get("status", ""))
        if status in PAYMENT_STATUSES:
            return 2
        return 0 if status in FAILED_PAYMENT_STATUSES else 1

    return max(payments, key=rank)


def _charge_result(response: httpx.Response) -> ChargeResult:
    body = _json(response)
    if response.status_code == 402:  # declined: the body is the failed payment and its error
        return _payment_result(body, declined=True)
    code = _code(response)
    if response.status_code >= 400 and _is_decline_code(code):
        # A card or risk decline sent with another status (400, 403, ...): still the bank's or
        # Paysafe's no about this payer, never tried elsewhere.
        error = _error(body)
        failure = decline_of(code, str(error.get("message") or "Paysafe declined the payment."))
        return ChargeResult(ChargeStatus.FAILED, str(body.get("id") or ""), failure)
    if response.status_code >= 400:
        return ChargeResult(
            ChargeStatus.FAILED, str(body.get("id") or ""), _paysafe_failure(response)
        )
    return _payment_result(body)


def _payment_result(payment: Mapping[str, Any], *, declined: bool = False) -> ChargeResult:
    gateway_id = str(payment.get("id") or "")
    status = str(payment.get("status") or "")
    if status in PAYMENT_STATUSES and not declined:
        return ChargeResult(PAYMENT_STATUSES[status], gateway_id)
    if declined or status in FAILED_PAYMENT_STATUSES:
        error = _error(payment)
        if status == "CANCELLED" and not error:
            cancelled = Failure(
                FailureKind.HARD_DECLINE, "CANCELLED", "The payment was cancelled at Paysafe."
            )
            return ChargeResult(ChargeStatus.FAILED, gateway_id, cancelled)
        failure = decline_of(
            str(error.get("code") or "declined"),
            str(error.get("message") or f"Paysafe left the payment {status or 'declined'}."),
        )
        return ChargeResult(ChargeStatus.FAILED, gateway_id, failure)
    return ChargeResult(ChargeStatus.PROCESSING, gateway_id)


def decline_of(code: str, message: str) -> Failure:
    """A card decline in Paysafe's words, classified by its code, with what to do next."""
    if code in SOFT_DECLINES:
        kind = FailureKind.SOFT_DECLINE
        advice = "It may go through if tried again in a few days."
    elif code in TECHNICAL_DECLINES:
        kind = FailureKind.TECHNICAL
        advice = "This is about Paysafe or the school's account, not the card."
    else:
        # Unknown codes included: never trying a decline elsewhere costs a retry; trying one
        # wrongly charges a family whose bank said no.
        kind = FailureKind.HARD_DECLINE
        advice = "Ask the family for another card."
    return Failure(kind, code, f"{message.rstrip('.')}. {advice}")


def _paysafe_failure(response: httpx.Response) -> Failure:
    """An error answer that is not a decline (`{"error": {"code", "message", "details",
    "fieldErrors"}}`): our request, our credentials, or Paysafe itself. Nothing about the payer,
    so another gateway may be tried."""
    status = response.status_code
    error = _error(_json(response))
    code = str(error.get("code") or f"http_{status}")
    said = str(error.get("message") or f"HTTP {status}").rstrip(".")
    details = [str(detail) for detail in _list(error.get("details")) if detail]
    fields = [
        f"{item.get('field')}: {item.get('error')}"
        for item in _list(error.get("fieldErrors"))
        if isinstance(item, dict)
    ]
    extra = "; ".join([*details, *fields])
    explained = f"{said} ({extra})" if extra else said
    if status in (401, 403):
        message = (
            f"Paysafe refused the API key: {explained}. Check the API username and password "
            "in the connection's settings, and that Test or Live matches them."
        )
    else:
        message = f"Paysafe did not take the request: {explained}."
    return Failure(FailureKind.TECHNICAL, code, message)


def _refund_result(response: httpx.Response, amount: Money) -> RefundResult:
    if response.status_code >= 400:
        failure = _paysafe_failure(response)
        if failure.code == NOT_BATCHED:
            failure = Failure(
                FailureKind.TECHNICAL,
                NOT_BATCHED,
                "Paysafe has not settled this payment yet (it settles in a nightly batch), so "
                "it cannot be refunded before tomorrow; try again then.",
            )
        return RefundResult(RefundStatus.FAILED, "", amount, failure)
    return _refund_of(_json(response), amount)


def _refund_of(refund: Mapping[str, Any], amount: Money) -> RefundResult:
    status = REFUND_STATUSES.get(str(refund.get("status") or ""), RefundStatus.PENDING)
    refunded = _minor_of(refund.get("amount"), amount)
    failure = None
    if status is RefundStatus.FAILED:
        error = _error(refund)
        failure = Failure(
            FailureKind.TECHNICAL,
            str(error.get("code") or "FAILED"),
            str(error.get("message") or "Paysafe could not make the refund."),
        )
    return RefundResult(status, str(refund.get("id") or ""), refunded, failure)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _minor_of(value: object, asked: Money) -> Money:
    """Paysafe's amount (whole minor units) as Money; what was asked when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return asked
    try:
        return Money(value, asked.currency)
    except (MoneyError, ArithmeticError, TypeError, ValueError):
        return asked


def _unknown(error: ProviderError) -> Failure:
    """Paysafe could not be asked: what happened stays unknown."""
    return Failure(FailureKind.UNKNOWN, error.error_class, str(error))


def _unknown_failure(failure: Failure) -> Failure:
    return Failure(
        FailureKind.UNKNOWN,
        failure.code,
        f"Paysafe would not say what became of it: {failure.message}",
    )


def _since(started: float) -> float:
    return (time.monotonic() - started) * 1000


def fee_schedule(config: Mapping[str, Any]) -> FeeSchedule:
    """The school's Paysafe pricing, as the connection states it (Paysafe's is negotiated per
    merchant and its API does not say it)."""
    percent = Decimal(str(config.get("fee_percent") or 0))
    fixed = int(config.get("fee_fixed_minor") or 0)
    return FeeSchedule((FeeRule(percent, fixed),))


# --- the spec ----------------------------------------------------------------------------------


def _headers(config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    key = f"{config.get('api_username', '')}:{secrets.get('api_password', '')}"
    basic = base64.b64encode(key.encode()).decode("ascii")
    return {"Authorization": f"Basic {basic}", "Accept": "application/json"}


def _base_url(config: Mapping[str, Any]) -> str:
    return str(config.get("api_url") or ENVIRONMENTS[str(config.get("environment") or "test")])


def _paysafe(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return Paysafe(spec, client, config, secrets)


def _currency(value: str) -> None:
    if value != value.upper() or not is_known_currency(value):
        raise ValueError(
            "Write the account's currency as its three-letter code in capitals, like USD or CAD."
        )


def _username(value: str) -> None:
    if ":" in value:
        raise ValueError(
            "Paysafe shows the API key as username:password; put the part before the colon "
            "here and the part after it in API password."
        )


PAYSAFE = ProviderSpec(
    key="paysafe",
    name="Paysafe",
    category=Category.PAYMENTS,
    description=(
        "Card payments through Paysafe's Payments API, on cards the family saved at Paysafe, "
        "with the secret API key from the Business Portal (Developer → API Keys). One "
        "connection per Paysafe account, and so per currency."
    ),
    fields=(
        ConfigField(
            "environment",
            "Environment",
            FieldKind.SELECT,
            required=False,
            default="test",
            choices=tuple(ENVIRONMENTS),
            help="Test uses Paysafe's test system and moves no money; Live takes real money.",
        ),
        ConfigField(
            "api_username",
            "API username",
            help="The secret API key reads username:password; the part before the colon.",
            check=_username,
        ),
        ConfigField(
            "api_password",
            "API password",
            FieldKind.SECRET,
            help="The part of the secret API key after the colon (it starts with B-).",
        ),
        ConfigField(
            "currency",
            "Account currency",
            help="Each Paysafe account takes one currency (USD, CAD, EUR, …); the one the "
            "family's saved cards were set up for.",
            check=_currency,
        ),
        ConfigField(
            "fee_percent",
            "Fee (% of each payment)",
            FieldKind.NUMBER,
            minimum=0,
            maximum=20,
            help="From the school's pricing agreement with Paysafe (Paysafe's API does not "
            "say it); used to compare gateways and to show what a payment costs.",
        ),
        ConfigField(
            "fee_fixed_minor",
            "Fee per payment (cents)",
            FieldKind.NUMBER,
            required=False,
            default=0,
            minimum=0,
            maximum=10_000,
        ),
        ConfigField(
            "webhook_key",
            "Webhook HMAC key",
            FieldKind.SECRET,
            required=False,
            help="The key Paysafe signs its notifications with, agreed when Switchboard's "
            "webhook address is set up with Paysafe. Until it is set, notifications are "
            "refused. While replacing it, give the new and the old one separated by a space.",
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use Paysafe's own address for the environment.",
        ),
    ),
    auth=AuthKind.BASIC,
    capabilities=frozenset({PAYMENTS}),
    health=MONITOR,
    base_url=_base_url,
    factory=_paysafe,
    # Paysafe gives up on a card network that has not answered within 30 s; waiting longer
    # than that gets its answer rather than a timeout.
    policy=ResiliencePolicy(timeout=45.0),
    headers=_headers,
    webhook=WebhookSpec(PaysafeVerifier.key, "webhook_key"),
)
