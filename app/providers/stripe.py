"""Stripe: charges on saved payment methods (PaymentIntents), refunds, balance transactions and
payouts, over Stripe's REST API (form-encoded requests, JSON answers, a secret key as the bearer).

A charge is one `POST /v1/payment_intents` that confirms at once, off session (the payer is not
there: the school charges a card it saved), with our attempt's reference as Stripe's
`Idempotency-Key` and in the metadata. Repeating that request with the same key is how a lost
answer is recovered: Stripe returns what the first request did, or does it now if it never
arrived, and never charges twice (keys are kept 24 hours; after that the reference is searched
for instead).

The ledger of a period is Stripe's balance transactions created in it and the payouts that
arrive in it; which payout paid out each transaction is asked of each automatic payout, as
Stripe's "Payout reconciliation" guide does it (docs.stripe.com/payouts/reconciliation).

Relied on: Stripe's API reference (PaymentIntents create/retrieve/search, Refunds, Balance
Transactions, Payouts, Pagination, Errors, Idempotent requests, Versioning) and "Decline codes"
(stripe.com/docs/declines/codes).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from app.domain.money import Money, MoneyError
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
from app.logs import REDACTOR
from app.providers.base import Provider
from app.providers.gateway import (
    PAYMENTS,
    Feature,
    LinkRequest,
    PaymentLink,
    Unsupported,
    failed,
    failure_of,
    ledger_period,
)
from app.providers.http import ProviderError, ResilientClient
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

API_URL = "https://api.stripe.com"
# The API version this module is written against: Stripe answers in the account's default
# version otherwise, which may change shapes under us.
API_VERSION = "2024-06-20"
# Stripe keeps an idempotency key's result for 24 hours; replay only well inside that.
REPLAY_SECONDS = 23 * 3600
REFERENCE_KEY = "switchboard_reference"

CREATE_INTENT = Operation("create-payment-intent", "POST", "/v1/payment_intents")
INTENT = Operation("payment-intent", "GET", "/v1/payment_intents/{id}")
SEARCH_INTENTS = Operation(
    "search-payment-intents", "GET", "/v1/payment_intents/search", own_breaker=True
)
CREATE_REFUND = Operation("create-refund", "POST", "/v1/refunds")
REFUND = Operation("refund", "GET", "/v1/refunds/{id}")
BALANCE_TRANSACTIONS = Operation("balance-transactions", "GET", "/v1/balance_transactions")
PAYOUTS = Operation("payouts", "GET", "/v1/payouts")
# Stripe's largest page: `limit` may be 1 to 100.
PAGE_SIZE = 100
# How long after a period its movements may still be paid out: Stripe holds funds 2 to 14 days
# (longer for new or risky accounts) and pays them out with the next scheduled payout.
PAYOUT_LAG = 35 * 86_400
LISTS_AT_ONCE = 4  # payouts asked for their transactions at the same time

# Declines that may pass if tried again later (at Stripe: same card, same gateway).
SOFT_DECLINES = frozenset(
    {
        "approve_with_id",
        "card_velocity_exceeded",
        "insufficient_funds",
        "issuer_not_available",
        "reenter_transaction",
        "try_again_later",
        "withdrawal_count_limit_exceeded",
    }
)
# Not the payer's bank but the processing: another gateway may well take it.
TECHNICAL_DECLINES = frozenset({"processing_error"})

INTENT_STATUSES = {
    "succeeded": ChargeStatus.SUCCEEDED,
    "processing": ChargeStatus.PROCESSING,
}
REFUND_STATUSES = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}


class Stripe(Provider):
    page_size = PAGE_SIZE  # objects asked per page of a list

    methods = frozenset({"card"})
    currencies: frozenset[str] = frozenset()  # Stripe takes 135+; the account decides
    countries: frozenset[str] = frozenset()
    features = frozenset({Feature.REFUNDS, Feature.LEDGER})
    # Stripe's standard US pricing for domestic cards, plus 1.5 % for cards from abroad.
    fees = FeeSchedule((FeeRule(Decimal("2.9"), 30, cross_border_percent=Decimal("1.5")),))

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        try:
            response = await self.call(
                CREATE_INTENT,
                data=self._intent_form(request),
                idempotency_key=request.reference,
            )
        except ProviderError as error:
            return failed(error)
        return self._charge_result(response)

    async def sync(self, request: ChargeRequest, gateway_id: str = "") -> ChargeResult:
        try:
            if gateway_id:
                response = await self.call(
                    INTENT,
                    path_params={"id": gateway_id},
                    params={"expand[]": "latest_charge.balance_transaction"},
                )
            elif time.time() - request.created_at < REPLAY_SECONDS:
                # The same request with the same key: Stripe answers what happened.
                response = await self.call(
                    CREATE_INTENT,
                    data=self._intent_form(request),
                    idempotency_key=request.reference,
                )
            else:
                return await self._search(request)
        except ProviderError as error:
            return ChargeResult(ChargeStatus.FAILED, gateway_id, _unknown(error))
        return self._charge_result(response)

    async def refund(self, gateway_id: str, amount: Money, reference: str) -> RefundResult:
        try:
            response = await self.call(
                CREATE_REFUND,
                data={
                    "payment_intent": gateway_id,
                    "amount": amount.minor,
                    f"metadata[{REFERENCE_KEY}]": reference,
                },
                idempotency_key=reference,
            )
        except ProviderError as error:
            return RefundResult(RefundStatus.FAILED, "", amount, failure_of(error))
        return self._refund_result(response, amount)

    async def refund_status(self, refund_id: str, amount: Money) -> RefundResult:
        try:
            response = await self.call(REFUND, path_params={"id": refund_id})
        except ProviderError as error:
            return RefundResult(RefundStatus.PENDING, refund_id, amount, _unknown(error))
        return self._refund_result(response, amount)

    async def balance_entries(self, limit: int = 100, after: str = "") -> list[BalanceEntry]:
        return [_entry(item) for item in await self._page(BALANCE_TRANSACTIONS, limit, after)]

    async def payouts(self, limit: int = 100, after: str = "") -> list[Payout]:
        return [_payout(item) for item in await self._page(PAYOUTS, limit, after)]

    async def ledger(self, since: datetime, until: datetime) -> GatewayLedger:
        """The balance transactions created in the period (`created[gte]`, `created[lt]`) and the
        payouts that arrive in it (`arrival_date`), every page read (`starting_after` while
        `has_more`), each transaction with the automatic payout that paid it out."""
        since, until = ledger_period(since, until)
        # Stripe's times are whole seconds: the first and the last one inside the period.
        start, end = math.ceil(since.timestamp()), math.ceil(until.timestamp())
        if start >= end:
            return GatewayLedger([], [])
        # Each transaction's source expanded, so a charge names its PaymentIntent: the id our
        # side records (Stripe's "Payout reconciliation" guide lists with expand=["data.source"]).
        period = {"created[gte]": start, "created[lt]": end, "expand[]": "data.source"}
        transactions = await self._list(BALANCE_TRANSACTIONS, period)
        arrived = await self._list(PAYOUTS, {"arrival_date[gte]": start, "arrival_date[lt]": end})
        paid_in = await self._paid_in(transactions, start, end)
        try:
            entries = [_entry(item, paid_in.get(str(item["id"]), "")) for item in transactions]
            return GatewayLedger(entries, [_payout(item) for item in arrived])
        except (KeyError, TypeError, ValueError, MoneyError) as exc:
            raise ProviderError(
                f"{self.spec.name} listed a balance transaction or payout that cannot be read "
                f"({exc!r})."
            ) from exc

    async def _paid_in(
        self, transactions: list[dict[str, Any]], start: int, end: int
    ) -> dict[str, str]:
        """The payout of each transaction, by transaction id. A payout cannot carry what was
        made after it, so only payouts made from the period's start on are asked, oldest
        first, until every transaction that can be paid out (not `pending` any more) is found
        or the lag is over. `payout=po_…` is "for automatic Stripe payouts only": what a manual
        payout carried, Stripe does not know."""
        wanted = {str(item.get("id")) for item in transactions if item.get("status") != "pending"}
        paid_in: dict[str, str] = {}
        if not wanted:
            return paid_in
        made = await self._list(PAYOUTS, {"created[gte]": start, "created[lt]": end + PAYOUT_LAG})
        automatic = [
            str(payout.get("id"))
            for payout in sorted(made, key=lambda item: int(item.get("created") or 0))
            if payout.get("automatic")
        ]
        for first in range(0, len(automatic), LISTS_AT_ONCE):
            batch = automatic[first : first + LISTS_AT_ONCE]
            listed = await asyncio.gather(
                *(self._list(BALANCE_TRANSACTIONS, {"payout": payout_id}) for payout_id in batch),
                return_exceptions=True,
            )
            for payout_id, items in zip(batch, listed, strict=True):
                if isinstance(items, BaseException):
                    raise items
                paid_in.update((str(item.get("id")), payout_id) for item in items)
            if wanted <= paid_in.keys():
                break
        return paid_in

    async def create_link(self, request: LinkRequest) -> PaymentLink:
        raise Unsupported(
            f"{self.spec.name} payment links are not made by Switchboard yet; create one in "
            "the Stripe dashboard (Payment links), or charge a saved card."
        )

    # --- pieces ------------------------------------------------------------------------------

    def _intent_form(self, request: ChargeRequest) -> dict[str, Any]:
        form: dict[str, Any] = {
            "amount": request.amount.minor,
            "currency": request.amount.currency.lower(),
            "payment_method": request.token,
            "confirm": "true",
            "off_session": "true",
            f"metadata[{REFERENCE_KEY}]": request.reference,
            "expand[]": "latest_charge.balance_transaction",
        }
        if request.customer:
            form["customer"] = request.customer
        return form

    async def _search(self, request: ChargeRequest) -> ChargeResult:
        response = await self.call(
            SEARCH_INTENTS,
            params={"query": f"metadata['{REFERENCE_KEY}']:'{request.reference}'"},
        )
        if response.status_code >= 400:
            return ChargeResult(ChargeStatus.FAILED, "", _stripe_failure(response))
        found = _json(response).get("data") or []
        if not found:
            return ChargeResult(ChargeStatus.NOT_FOUND)
        return await self.sync(request, str(found[0]["id"]))

    def _charge_result(self, response: httpx.Response) -> ChargeResult:
        body = _json(response)
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body.get("error"), dict) else {}
            intent = error.get("payment_intent") if isinstance(error, dict) else None
            gateway_id = str(intent.get("id", "")) if isinstance(intent, dict) else ""
            return ChargeResult(ChargeStatus.FAILED, gateway_id, _stripe_failure(response))
        gateway_id = str(body.get("id", ""))
        status = str(body.get("status", ""))
        if status in INTENT_STATUSES:
            return ChargeResult(INTENT_STATUSES[status], gateway_id, fee=_fee(body))
        if status == "requires_action":
            failure = Failure(
                FailureKind.HARD_DECLINE,
                "authentication_required",
                "The payer's bank wants them to confirm this payment themselves; send them a "
                "payment link instead.",
            )
        else:  # requires_payment_method: the last attempt failed; canceled
            error = body.get("last_payment_error") or {}
            failure = decline_of(
                str(error.get("code") or "card_declined"),
                str(error.get("decline_code") or ""),
                str(error.get("message") or f"Stripe left the payment {status}."),
            )
        return ChargeResult(ChargeStatus.FAILED, gateway_id, failure)

    def _refund_result(self, response: httpx.Response, amount: Money) -> RefundResult:
        body = _json(response)
        if response.status_code >= 400:
            return RefundResult(RefundStatus.FAILED, "", amount, _stripe_failure(response))
        status = REFUND_STATUSES.get(str(body.get("status", "")), RefundStatus.PENDING)
        refunded = Money(int(body.get("amount", amount.minor)), amount.currency)
        return RefundResult(status, str(body.get("id", "")), refunded)

    async def _page(self, operation: Operation, limit: int, after: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": max(1, min(limit, PAGE_SIZE))}
        if after:
            params["starting_after"] = after
        data, _ = await self._list_page(operation, params)
        return data

    async def _list(self, operation: Operation, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every object of a list, page after page (Stripe's "Pagination": `starting_after` the
        last id of a page, for as long as `has_more`)."""
        items: list[dict[str, Any]] = []
        after = ""
        while True:
            params: dict[str, Any] = {**filters, "limit": self.page_size}
            if after:
                params["starting_after"] = after
            data, more = await self._list_page(operation, params)
            items.extend(data)
            last = str(data[-1].get("id") or "") if data else ""
            if not more:
                return items
            if not last or last == after:
                raise ProviderError(
                    f"{self.spec.name} said there was more to list but gave no next page."
                )
            after = last

    async def _list_page(
        self, operation: Operation, params: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], bool]:
        response = await self.call(operation, params=params)
        if response.status_code >= 400:
            raise ProviderError(_stripe_failure(response).message, status=response.status_code)
        body = _json(response)
        data = body.get("data")
        items = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
        return items, bool(body.get("has_more"))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _entry(item: Mapping[str, Any], payout: str = "") -> BalanceEntry:
    """A balance transaction. A payout's own transaction is paid out in that payout, whether
    Stripe said so (automatic payouts) or not (manual ones)."""
    currency = str(item["currency"]).upper()
    kind = str(item.get("type", ""))
    source = _source_id(item.get("source"))
    if not payout and kind == "payout" and source.startswith("po_"):
        payout = source
    return BalanceEntry(
        gateway_id=str(item["id"]),
        kind=kind,
        amount=Money(int(item["amount"]), currency),
        fee=Money(int(item.get("fee") or 0), currency),
        net=Money(int(item.get("net", item["amount"])), currency),
        source=source,
        created=int(item.get("created") or 0),
        available_on=int(item.get("available_on") or 0),
        payout=payout,
    )


def _source_id(source: object) -> str:
    """What a balance transaction belongs to, by the id our side records: a charge's
    PaymentIntent when the source was expanded and has one (we record `pi_…`, the balance
    transaction names `ch_…`), else the source's own id (a refund's `re_…`, a payout's `po_…`,
    a charge made without a PaymentIntent)."""
    if isinstance(source, Mapping):
        intent = source.get("payment_intent") if source.get("object") == "charge" else None
        if isinstance(intent, Mapping):
            intent = intent.get("id")
        return str(intent or source.get("id") or "")
    return str(source or "")


def _payout(item: Mapping[str, Any]) -> Payout:
    return Payout(
        gateway_id=str(item["id"]),
        amount=Money(int(item["amount"]), str(item["currency"]).upper()),
        status=str(item.get("status", "")),
        arrival=int(item.get("arrival_date") or 0),
        created=int(item.get("created") or 0),
        itemized=bool(item.get("automatic")),
    )


def _fee(intent: Mapping[str, Any]) -> Money | None:
    charge = intent.get("latest_charge")
    transaction = charge.get("balance_transaction") if isinstance(charge, dict) else None
    if not isinstance(transaction, dict) or "fee" not in transaction:
        return None
    return Money(int(transaction["fee"]), str(transaction["currency"]).upper())


def decline_of(code: str, decline_code: str, message: str) -> Failure:
    reason = decline_code or code
    if reason in SOFT_DECLINES:
        kind = FailureKind.SOFT_DECLINE
    elif reason in TECHNICAL_DECLINES:
        kind = FailureKind.TECHNICAL
    else:
        # Stolen, lost, closed, generic declines and anything unknown: final. Never trying a
        # decline elsewhere costs a retry; trying one wrongly charges a family whose bank said no.
        kind = FailureKind.HARD_DECLINE
    return Failure(kind, f"{code}/{decline_code}" if decline_code else code, message)


def _stripe_failure(response: httpx.Response) -> Failure:
    """A Stripe error answer (`{"error": {"type", "code", "decline_code", "message"}}`). Its
    message may quote the key it was sent (as a refused key's does): the secrets Switchboard
    knows are masked in it, as in a ProviderError's, because a failure is stored and shown."""
    error = _json(response).get("error")
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or error.get("type") or f"http_{response.status_code}")
    message = REDACTOR.mask_known(
        str(error.get("message") or f"Stripe answered HTTP {response.status_code}.")
    )
    if response.status_code == 402:  # the card was declined (or needs its owner)
        if code == "authentication_required":
            return Failure(FailureKind.HARD_DECLINE, code, message)
        return decline_of(code, str(error.get("decline_code") or ""), message)
    # 400 (our request), 401 (the key), 404 (no such payment method here), 409 (a key reused
    # with other parameters): nothing about the payer, so another gateway may be tried.
    return Failure(FailureKind.TECHNICAL, code, message)


def _unknown(error: ProviderError) -> Failure:
    """Stripe could not be asked: what happened stays unknown."""
    return Failure(FailureKind.UNKNOWN, error.error_class, str(error))


def _headers(_config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {secrets.get('secret_key', '')}",
        "Stripe-Version": API_VERSION,
    }


def _stripe(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return Stripe(spec, client, config, secrets)


def _secret_key(value: str) -> None:
    if not value.startswith(("sk_", "rk_")):
        raise ValueError(
            "A Stripe secret key starts with sk_ (or rk_ for a restricted key); copy it from "
            "Developers → API keys."
        )


STRIPE = ProviderSpec(
    key="stripe",
    name="Stripe",
    category=Category.PAYMENTS,
    description=(
        "Card payments through Stripe, with a secret key from the Stripe dashboard "
        "(Developers → API keys). Test keys (sk_test_…) move no real money."
    ),
    fields=(
        ConfigField(
            "secret_key",
            "Secret key",
            FieldKind.SECRET,
            help="sk_live_… or sk_test_…; a restricted key (rk_…) needs PaymentIntents, "
            "Refunds, Balance and Payouts.",
            check=_secret_key,
        ),
        ConfigField(
            "webhook_secret",
            "Webhook signing secret",
            FieldKind.SECRET,
            required=False,
            help="whsec_…, shown for the endpoint under Developers → Webhooks. While rolling "
            "it, give the new and the old one separated by a space.",
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use Stripe's own address.",
        ),
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset({PAYMENTS}),
    health=Operation("balance", "GET", "/v1/balance", timeout=10.0),
    base_url=lambda config: str(config.get("api_url") or API_URL),
    factory=_stripe,
    # Stripe allows 100 requests a second in live mode and 25 in test mode.
    policy=ResiliencePolicy(timeout=30.0),
    headers=_headers,
    webhook=WebhookSpec("stripe", "webhook_secret"),
)
