"""PayPal: the connection and its OAuth 2.0 access token, payments through the Orders v2 API
(saved methods charged, payment links, captures, refunds), and the check of its webhooks.

PayPal's REST APIs take a bearer token that the app obtains with its client ID and secret
(the client-credentials grant) and that lasts hours; it is fetched on first use, kept in
memory only, renewed a minute before it expires, and fetched again once if PayPal says it is
no longer valid. Every call, the token's included, goes through the resilient HTTP layer.

A charge of a saved method is one `POST /v2/checkout/orders` with intent CAPTURE and the
method's vault ID as the payment source, so PayPal captures at once and answers a COMPLETED
order. Our attempt's reference is the `PayPal-Request-Id` and the purchase unit's `custom_id`
and `invoice_id` (what PayPal's activity shows). Sending the same request with the same
request ID again is how a lost answer is recovered: PayPal answers the latest state of what
the first request made, or makes it now if it never arrived, and never makes a second order.
PayPal keeps Orders v2 request IDs for 6 hours; after that it cannot be asked by our
reference at all, so the outcome stays unknown and the office is told where to look.

The gateway's id of a payment is PayPal's order ID (a payment link is an order too); its
capture, which refunds need, is read from the order.

A payment link is an order without a payment source: the payer approves it on PayPal's page,
then it must be captured. The status sync captures an approved order (with a request ID of
its own, so twice is still once); webhooks only report (app/services/paypal_events.py).

PayPal signs its webhooks with a private key of its own, so whether a notification is genuine is
a question for PayPal's verify-webhook-signature API, asked with the Webhook ID PayPal gave when
Switchboard's address was added to the app.

The ledger of a period comes from the Transaction Search API (`GET /v1/reporting/transactions`),
which the app must be allowed to use (Transaction Search in its settings in PayPal's developer
dashboard). It answers at most 31 days a request and 500 transactions a page, so a period is
asked 31 days at a time, page by page, and a window PayPal finds too large (RESULTSET_TOO_LARGE)
is asked again in halves. Its data can lag up to three hours, so the last hours of a period may
be missing until later. Each balance-affecting transaction becomes an entry, by its event code
(T-code): a payment (T00nn) is recorded under the order it captured, as our side records it
(the capture's `supplementary_data.related_ids.order_id`, asked once per capture); a refund
(T1107) under its own id, as our side records refunds; withdrawals to the bank (T04nn) are the
payouts. PayPal pays out from a pooled balance, so it does not say which payments a withdrawal
carried, nor when the bank receives it.

Relied on: PayPal's "Get started with PayPal REST APIs" (developer.paypal.com/api/rest/:
authentication, the token endpoint and its answer), "Orders v2" (create, show, capture; the
PayPal-Request-Id "stored for 6 hours" and the `Prefer` header, as in PayPal's own server SDK,
paypal/PayPal-TypeScript-Server-SDK src/controllers/ordersController.ts), "Orders v2 errors"
(developer.paypal.com/api/rest/reference/orders/v2/errors: 422 issues such as
INSTRUMENT_DECLINED, TRANSACTION_REFUSED, PAYER_ACTION_REQUIRED, ORDER_ALREADY_CAPTURED),
"Payments v2" (captures refund, "stored for 45 days"; show refund; REFUND_AMOUNT_EXCEEDED,
CAPTURE_FULLY_REFUNDED), the SDK's CaptureStatus, OrderStatus, RefundStatus and
ProcessorResponseCode enumerations (developer.paypal.com/serversdk/.../processor-response-code),
"Save payment methods" (payment_source.paypal.vault_id / card.vault_id with stored_credential),
"Handle funding failures", "Idempotency" (developer.paypal.com/api/rest/reference/idempotency),
"Currency codes" (developer.paypal.com/api/rest/reference/currency-codes), "Webhooks API v1"
(list webhooks; verify webhook signature) and "Webhook event names"; "Transaction Search API"
(developer.paypal.com/docs/api/transaction-search/v1/ and its OpenAPI description,
paypal/paypal-rest-api-specifications openapi/reporting_transactions_v1.json: start_date and
end_date "The maximum supported range is 31 days", page_size at most 500, transaction_status D,
P, S, V, "It takes a maximum of three hours for executed transactions to appear"), its
integration guide (developer.paypal.com/docs/transaction-search/: enabling Transaction Search,
"may take up to 9 hours to be enabled for a new access token"), its RESULTSET_TOO_LARGE error,
and "Transaction event codes"
(developer.paypal.com/docs/transaction-search/transaction-event-codes/).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from app.domain.money import Money, MoneyError, exponent
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
from app.providers.base import BearerProvider, Provider
from app.providers.gateway import (
    PAYMENTS,
    UNANSWERED,
    Feature,
    LinkRequest,
    PaymentLink,
    Unsupported,
    failed,
    failure_of,
    ledger_period,
)
from app.providers.http import (
    CredentialsRefused,
    ProviderError,
    ResilientClient,
)
from app.providers.spec import (
    REMOTE_VERIFIER,
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    ResiliencePolicy,
    WebhookSpec,
)
from app.providers.webhooks import (
    Rejected,
    Verified,
    WebhookRequest,
    paypal_check,
    paypal_verdict,
)

ENVIRONMENTS = {
    "sandbox": "https://api-m.sandbox.paypal.com",
    "live": "https://api-m.paypal.com",
}
# Renew this long before PayPal says the token expires, so no call carries one that dies on
# the way.
RENEW_SECONDS = 60.0
# PayPal keeps an Orders v2 PayPal-Request-Id for 6 hours (more only by arrangement with its
# account managers); replay only well inside that.
REPLAY_SECONDS = 5 * 3600

# Getting a token changes nothing at PayPal: safe to repeat.
TOKEN = Operation("oauth2-token", "POST", "/v1/oauth2/token", idempotent=True)
# Asking whether a signature is good changes nothing either; the sender waits for the answer.
VERIFY_WEBHOOK = Operation(
    "verify-webhook-signature",
    "POST",
    "/v1/notifications/verify-webhook-signature",
    idempotent=True,
    timeout=10.0,
)
CREATE_ORDER = Operation("create-order", "POST", "/v2/checkout/orders")
ORDER = Operation("order", "GET", "/v2/checkout/orders/{id}")
CAPTURE_ORDER = Operation("capture-order", "POST", "/v2/checkout/orders/{id}/capture")
REFUND_CAPTURE = Operation("refund-capture", "POST", "/v2/payments/captures/{id}/refund")
REFUND = Operation("refund", "GET", "/v2/payments/refunds/{id}")
# The whole order in every answer, not only its id, status and links.
REPRESENTATION = {"Prefer": "return=representation"}
# Transaction Search may be refused on its own (the app not allowed to use it) while payments work.
TRANSACTIONS = Operation(
    "transaction-search", "GET", "/v1/reporting/transactions", own_breaker=True
)
CAPTURE = Operation("capture", "GET", "/v2/payments/captures/{id}")
SEARCH_WINDOW = timedelta(days=31)  # the longest period one search may cover
SEARCH_PAGE_SIZE = 500  # the largest page
# A window still too large at this size is not split further: PayPal is refusing something else.
SMALLEST_WINDOW = timedelta(minutes=1)
LOOKUPS_AT_ONCE = 4  # captures asked for their order at the same time
# transaction_status: D denied (nothing moved), P pending, S completed, V reversed (a reversal
# of its own follows). What moved money is kept; a pending withdrawal has already left.
SETTLED = frozenset({"S", "V"})
PAYOUT_STATUSES = {"S": "paid", "P": "pending", "V": "failed"}
# T-codes (T<group><type>) read by their group, a few by their own code.
KINDS_BY_CODE = {
    "T1101": "payout_failure",  # reversal of a withdrawal to the bank
    "T1107": "refund",  # payment refund, initiated by the merchant
    "T1108": "fee",  # fee reversal
    "T1109": "fee",  # fee refund
    "T1110": "hold",  # hold for dispute investigation
    "T1111": "hold",  # its cancellation
}
KINDS_BY_GROUP = {
    "00": "charge",  # PayPal account-to-PayPal account payment
    "01": "fee",  # non-payment-related fees
    "02": "conversion",  # currency conversion
    "03": "topup",  # bank deposit into the PayPal account
    "04": "payout",  # bank withdrawal from the PayPal account
    "11": "adjustment",  # reversals
    "12": "adjustment",  # adjustments: chargebacks and their reversals
    "15": "hold",  # holds for disputes or investigations
    "21": "hold",  # reserves and releases
}

# PayPal's REST currencies. BRL, MYR and CNY are taken by PayPal accounts of those countries
# only; HUF and TWD have cents in ISO 4217 but PayPal takes whole units only (JPY has none).
# RUB, once on the list, is no longer offered.
_CURRENCY_LIST = (
    "AUD BRL CAD CNY CZK DKK EUR HKD HUF ILS JPY MYR MXN TWD NZD NOK PHP PLN GBP SGD SEK CHF "
    "THB USD"
)
CURRENCIES = frozenset(_CURRENCY_LIST.split())
WHOLE_UNITS_ONLY = frozenset({"HUF", "TWD"})

# PayPal's published US merchant rates: PayPal Checkout 3.49 %, standard card payments
# 2.99 %, each plus a fixed fee in the currency received (0.49 USD, 0.39 EUR and GBP,
# 0.59 CAD and AUD), plus 1.5 % for a payer in another country. The fixed fee of other
# currencies is not modelled (percent only). A school with another country's account or a
# negotiated rate pays differently; these only rank gateways.
_FIXED = {"USD": 49, "EUR": 39, "GBP": 39, "CAD": 59, "AUD": 59}
_PERCENT = {"paypal": Decimal("3.49"), "card": Decimal("2.99")}
_CROSS_BORDER = Decimal("1.5")
FEES = FeeSchedule(
    tuple(
        FeeRule(percent, fixed, method, currency, _CROSS_BORDER)
        for method, percent in _PERCENT.items()
        for currency, fixed in {"": 0, **_FIXED}.items()
    )
)

ORDER_WAITING = frozenset({"CREATED", "SAVED", "PAYER_ACTION_REQUIRED"})
CAPTURE_TAKEN = frozenset({"COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"})
CAPTURE_REFUSED = frozenset({"DECLINED", "DENIED", "FAILED"})
REFUND_STATUSES = {
    "COMPLETED": RefundStatus.SUCCEEDED,
    "PENDING": RefundStatus.PENDING,
    "FAILED": RefundStatus.FAILED,
    "CANCELLED": RefundStatus.CANCELED,
}

# Orders v2 422 issues about the payer's money or account that may pass later.
SOFT_ISSUES = frozenset({"MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED", "TRANSACTION_LIMIT_EXCEEDED"})
# 422 issues about our account or request, not the payer: another gateway may take it.
TECHNICAL_ISSUES = frozenset(
    {
        "AUTH_CAPTURE_NOT_ENABLED",
        "CARD_BRAND_NOT_SUPPORTED",
        "CURRENCY_NOT_SUPPORTED",
        "DECIMAL_PRECISION",
        "NOT_ENABLED_FOR_CARD_PROCESSING",
        "PAYEE_ACCOUNT_RESTRICTED",
        "PAYEE_NOT_ENABLED_FOR_CARD_PROCESSING",
        "TOKEN_ID_NOT_FOUND",
        "TRANSACTION_RECEIVING_LIMIT_EXCEEDED",
    }
)
# 422 issues saying the school's own PayPal risk settings (its fraud filters, blocked payers)
# refused this payer: a decline about the payer, never tried at another gateway, which would
# take a payment the school itself chose to refuse.
PAYEE_RISK_ISSUES = frozenset({"PAYEE_BLOCKED_TRANSACTION", "TRANSACTION_BLOCKED_BY_PAYEE"})
# 422 issues saying the order was already captured: what happened is read from the order.
ALREADY_CAPTURED = frozenset({"ORDER_ALREADY_CAPTURED", "ORDER_COMPLETED_OR_VOIDED"})
# Any other 422 issue (INSTRUMENT_DECLINED, TRANSACTION_REFUSED, PAYER_ACTION_REQUIRED,
# PAYER_CANNOT_PAY, REDIRECT_PAYER_FOR_ALTERNATE_FUNDING, REFERENCED_CARD_EXPIRED, ...) is a
# hard decline: never trying a decline elsewhere costs a retry; trying one wrongly charges a
# family whose bank or PayPal said no.

# Card processor response codes (capture.processor_response.response_code) that may pass
# later, and those that are the processing's fault rather than the card's.
SOFT_PROCESSOR_CODES = frozenset({"5120", "5920", "9100", "PPDT", "PPEL", "PPNL"})
TECHNICAL_PROCESSOR_CODES = frozenset(
    {"0960", "1340", "1350", "1370", "8000", "8010", "8020", "8100", "8110", "8220", "PPER"}
)


class PayPal(BearerProvider):
    """A PayPal connection, and a `PaymentGateway` over the Orders v2 API."""

    methods = frozenset({"paypal", "card"})
    currencies = CURRENCIES
    countries: frozenset[str] = frozenset()
    features = frozenset({Feature.LINKS, Feature.REFUNDS, Feature.LEDGER})
    fees = FEES
    search_page_size = SEARCH_PAGE_SIZE

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self._orders: dict[str, str] = {}  # capture id -> its order ("" when it has none)

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        token = await self._access_token()
        response = await self._bearer_call(token, operation, arguments)
        if response.status_code == 401:
            # Revoked, or expired sooner than PayPal said: one new token, one more try.
            self._forget(token)
            response = await self._bearer_call(await self._access_token(), operation, arguments)
        return response

    # --- payments -------------------------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        unpayable = _unpayable(request.amount)
        if unpayable is not None:
            return ChargeResult(ChargeStatus.FAILED, "", unpayable)
        try:
            response = await self._create(request)
        except ProviderError as error:
            return failed(error)
        return await self._order_result(response, request)

    async def sync(self, request: ChargeRequest, gateway_id: str = "") -> ChargeResult:
        try:
            if gateway_id:
                response = await self.call(ORDER, path_params={"id": gateway_id})
                if _no_such_resource(response):
                    return ChargeResult(ChargeStatus.NOT_FOUND)  # PayPal has no such order
            elif request.token and time.time() - request.created_at < REPLAY_SECONDS:
                # The same request with the same request ID: PayPal answers what happened.
                response = await self._create(request)
            else:
                return ChargeResult(ChargeStatus.FAILED, "", _unaskable(request))
            result = await self._order_result(response, request)
        except ProviderError as error:
            return ChargeResult(ChargeStatus.FAILED, gateway_id, _unknown(error))
        if result.failure is not None and result.failure.kind is FailureKind.TECHNICAL:
            # A question refused is not an answer: the outcome is still not known.
            failure = Failure(FailureKind.UNKNOWN, result.failure.code, result.failure.message)
            return ChargeResult(ChargeStatus.FAILED, result.gateway_id or gateway_id, failure)
        return result

    async def create_link(self, request: LinkRequest) -> PaymentLink:
        unpayable = _unpayable(request.amount)
        if unpayable is not None:
            raise Unsupported(unpayable.message)
        # Nothing is shipped; the payer pays on PayPal's page rather than reviewing first.
        context: dict[str, Any] = {"shipping_preference": "NO_SHIPPING", "user_action": "PAY_NOW"}
        if request.return_url:
            context["return_url"] = request.return_url
            context["cancel_url"] = request.return_url
        paypal: dict[str, Any] = {"experience_context": context}
        if request.payer_email:
            paypal["email_address"] = request.payer_email
        body = {
            "intent": "CAPTURE",
            "purchase_units": [
                _purchase_unit(request.reference, request.amount, request.description)
            ],
            "payment_source": {"paypal": paypal},
        }
        response = await self.call(
            CREATE_ORDER, json=body, headers=REPRESENTATION, idempotency_key=request.reference
        )
        order = _json(response)
        if response.status_code >= 400:
            failure = paypal_failure(response)
            raise ProviderError(
                f"PayPal would not make the payment link: {failure.message}",
                status=response.status_code,
            )
        url = _link(order, "payer-action") or _link(order, "approve")
        if not url:
            raise ProviderError("PayPal made the order but gave no page for the payer to pay on.")
        return PaymentLink(url, str(order.get("id", "")))

    async def refund(self, gateway_id: str, amount: Money, reference: str) -> RefundResult:
        try:
            shown = await self.call(ORDER, path_params={"id": gateway_id})
        except ProviderError as error:
            if isinstance(error, UNANSWERED):
                # Nothing refunded yet, but nothing known either: pending until PayPal can
                # be asked again (the refund's request ID makes asking twice safe).
                return RefundResult(RefundStatus.PENDING, "", amount, _unknown(error))
            return RefundResult(RefundStatus.FAILED, "", amount, failure_of(error))
        if shown.status_code >= 400:
            said = paypal_failure(shown).message
            failure = Failure(
                FailureKind.TECHNICAL,
                f"http_{shown.status_code}",
                f"PayPal would not show the order to refund: {said}",
            )
            return RefundResult(RefundStatus.FAILED, "", amount, failure)
        capture = _capture_of(_json(shown))
        capture_id = str(capture.get("id") or "") if capture else ""
        if not capture_id:
            failure = Failure(
                FailureKind.TECHNICAL,
                "not_captured",
                "PayPal has no captured payment on this order, so there is nothing to refund.",
            )
            return RefundResult(RefundStatus.FAILED, "", amount, failure)
        try:
            response = await self.call(
                REFUND_CAPTURE,
                path_params={"id": capture_id},
                json={"amount": _amount(amount), "custom_id": reference},
                headers=REPRESENTATION,
                idempotency_key=reference,
            )
        except ProviderError as error:
            return RefundResult(RefundStatus.FAILED, "", amount, failure_of(error))
        return _refund_result(response, amount)

    async def refund_status(self, refund_id: str, amount: Money) -> RefundResult:
        try:
            response = await self.call(REFUND, path_params={"id": refund_id})
        except ProviderError as error:
            return RefundResult(RefundStatus.PENDING, refund_id, amount, _unknown(error))
        if response.status_code >= 400:
            # Not shown is not undone: the refund stays pending until PayPal says.
            said = paypal_failure(response).message
            failure = Failure(FailureKind.UNKNOWN, f"http_{response.status_code}", said)
            return RefundResult(RefundStatus.PENDING, refund_id, amount, failure)
        return _refund_result(response, amount)

    async def balance_entries(self, limit: int = 100, after: str = "") -> list[BalanceEntry]:
        raise Unsupported(
            f"{self.spec.name}'s balance is read a period at a time, for reconciliation, not "
            "page by page; see its movements in PayPal under Activity."
        )

    async def payouts(self, limit: int = 100, after: str = "") -> list[Payout]:
        raise Unsupported(
            f"{self.spec.name}'s transfers to the bank are read a period at a time, for "
            "reconciliation; see them in PayPal under Activity (filter: withdrawals)."
        )

    # --- the ledger -----------------------------------------------------------------------------

    async def ledger(self, since: datetime, until: datetime) -> GatewayLedger:
        """The account's balance-affecting transactions initiated in the period and the
        withdrawals to the bank among them, from Transaction Search."""
        since, until = ledger_period(since, until)
        if since >= until:
            return GatewayLedger([], [])
        # Whole seconds, as PayPal takes them, covering the period; what falls outside it is
        # dropped below, as is a transaction seen twice where two windows meet.
        first = since.replace(microsecond=0)
        last = until.replace(microsecond=0)
        if until.microsecond:
            last += timedelta(seconds=1)
        found: list[dict[str, Any]] = []
        start = first
        while start < last:
            end = min(start + SEARCH_WINDOW, last)
            found.extend(await self._search(start, end))
            start = end
        rows = _settled_rows(found, since, until)
        orders = await self._orders_of([row.transaction_id for row in rows if row.kind == "charge"])
        entries = [row.entry(orders.get(row.transaction_id, "")) for row in rows]
        payouts = [row.payout() for row in rows if row.kind == "payout"]
        return GatewayLedger(entries, payouts)

    async def _search(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every transaction of one window, page by page; a window PayPal finds too large is
        asked again in two halves, oldest first."""
        windows = deque([(start, end)])
        found: list[dict[str, Any]] = []
        while windows:
            low, high = windows.popleft()
            try:
                found.extend(await self._search_window(low, high))
            except _TooLarge:
                if high - low <= SMALLEST_WINDOW:
                    raise ProviderError(
                        "PayPal has too many transactions to list even for one minute "
                        f"({_utc(low)}); download an activity report in PayPal instead."
                    ) from None
                middle = low + (high - low) / 2
                middle = middle.replace(microsecond=0)
                windows.extendleft([(middle, high), (low, middle)])
        return found

    async def _search_window(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            response = await self.call(
                TRANSACTIONS,
                params={
                    "start_date": _utc(start),
                    "end_date": _utc(end),
                    "fields": "all",
                    "balance_affecting_records_only": "Y",
                    "page_size": self.search_page_size,
                    "page": page,
                },
            )
            if response.status_code >= 400:
                raise self._search_refused(response)
            body = _json(response)
            found.extend(
                detail
                for detail in _list(body.get("transaction_details"))
                if isinstance(detail, dict)
            )
            pages = body.get("total_pages")
            if not isinstance(pages, int) or page >= pages:
                return found
            page += 1

    def _search_refused(self, response: httpx.Response) -> Exception:
        body = _json(response)
        issue, _ = _issue(body)
        if "RESULTSET_TOO_LARGE" in (body.get("name"), issue):
            return _TooLarge()
        said = paypal_failure(response).message.removeprefix("PayPal refused the request: ")
        if response.status_code == 401:  # after a new token was tried (`call`)
            return CredentialsRefused(
                "PayPal refused the app's credentials while listing transactions; copy the "
                "client ID and secret again from PayPal's developer dashboard.",
                status=401,
            )
        if response.status_code == 403:
            # A token fetched before Transaction Search was allowed keeps being refused: the
            # next try fetches a new one.
            self._forget(self._token)
            return CredentialsRefused(
                "PayPal would not list the account's transactions: the app needs Transaction "
                "Search. Turn it on for the app in PayPal's developer dashboard (Apps & "
                "Credentials, the app's features); PayPal can take up to 9 hours to allow it. "
                f"PayPal said: {said}",
                status=response.status_code,
            )
        return ProviderError(
            f"PayPal would not list the account's transactions: {said}", status=response.status_code
        )

    async def _orders_of(self, captures: list[str]) -> dict[str, str]:
        """The order of each capture, as our side records the payment; a few at a time."""
        at_once = asyncio.Semaphore(LOOKUPS_AT_ONCE)

        async def order_of(capture_id: str) -> str:
            async with at_once:
                return await self._order_of(capture_id)

        wanted = list(dict.fromkeys(captures))
        answers = await asyncio.gather(*map(order_of, wanted), return_exceptions=True)
        orders: dict[str, str] = {}
        for capture_id, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            orders[capture_id] = answer
        return orders

    async def _order_of(self, capture_id: str) -> str:
        if capture_id in self._orders:
            return self._orders[capture_id]
        response = await self.call(CAPTURE, path_params={"id": capture_id})
        if _no_such_resource(response):
            order_id = ""  # not an Orders v2 capture (PayPal.Me, an invoice, ...): no order
        elif response.status_code >= 400:
            raise ProviderError(
                f"PayPal would not show payment {capture_id}: {paypal_failure(response).message}",
                status=response.status_code,
            )
        else:
            data = _json(response).get("supplementary_data")
            related = data.get("related_ids") if isinstance(data, dict) else None
            found = related.get("order_id") if isinstance(related, dict) else None
            order_id = found if isinstance(found, str) else ""
        self._orders[capture_id] = order_id
        return order_id

    # --- pieces ---------------------------------------------------------------------------------

    async def _create(self, request: ChargeRequest) -> httpx.Response:
        return await self.call(
            CREATE_ORDER,
            json=_charge_body(request),
            headers=REPRESENTATION,
            idempotency_key=request.reference,
        )

    async def _order_result(self, response: httpx.Response, request: ChargeRequest) -> ChargeResult:
        """What an answer carrying an order (create, show) says of the payment, capturing the
        order first if the payer approved it."""
        if response.status_code >= 400:
            return ChargeResult(ChargeStatus.FAILED, "", paypal_failure(response))
        order = _json(response)
        if order.get("status") == "APPROVED":
            order_id = str(order.get("id") or "")
            try:
                response = await self._capture(order_id, request.reference)
                if response.status_code >= 400:
                    failure = paypal_failure(response)
                    if failure.code not in ALREADY_CAPTURED:
                        return ChargeResult(ChargeStatus.FAILED, order_id, failure)
                    response = await self.call(ORDER, path_params={"id": order_id})
            except ProviderError as error:
                # The order exists whatever became of its capture: keep its id, so it is
                # looked up by it.
                return failed(error, order_id)
            order = _json(response)
        return order_outcome(order, waiting_declines=bool(request.token))

    async def _capture(self, order_id: str, reference: str) -> httpx.Response:
        # A request ID of its own (the order's was used to create it): a capture asked twice,
        # by two syncs or a retry, is made once.
        return await self.call(
            CAPTURE_ORDER,
            path_params={"id": order_id},
            json={},
            headers=REPRESENTATION,
            idempotency_key=f"{reference}-capture",
        )

    # --- the connection -------------------------------------------------------------------------

    async def verify_webhook(self, request: WebhookRequest) -> Verified:
        check = paypal_check(request, str(self.config.get("webhook_id") or ""))
        response = await self.call(
            VERIFY_WEBHOOK,
            content=check.request_body,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code in (401, 403):
            raise CredentialsRefused(
                "PayPal refused Switchboard's credentials while checking a webhook; check the "
                "client ID and secret in the connection's settings.",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise Rejected(
                "signature", f"PayPal would not check the signature (HTTP {response.status_code})"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        return paypal_verdict(check, answer, request.received_at)

    async def _new_token(self) -> tuple[str, float]:
        credentials = f"{self.config.get('client_id', '')}:{self.secrets.get('client_secret', '')}"
        basic = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        response = await self.client.call(
            TOKEN,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
        )
        if response.status_code in (400, 401, 403):
            # PayPal answers 401 invalid_client for a wrong ID or secret.
            raise CredentialsRefused(
                "PayPal refused the client ID and secret; copy them again from the app in "
                "PayPal's developer dashboard (and check Sandbox or Live).",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise ProviderError(
                f"PayPal did not give an access token (HTTP {response.status_code}).",
                status=response.status_code,
            )
        try:
            answer = response.json()
            token = str(answer["access_token"])
            lifetime = float(answer.get("expires_in", 0))
        except (ValueError, KeyError, TypeError):
            raise ProviderError("PayPal's access token answer could not be read.") from None
        return token, time.monotonic() + max(lifetime - RENEW_SECONDS, 0.0)


def _unpayable(amount: Money) -> Failure | None:
    """Why PayPal cannot take this amount, before anything is sent; None when it can."""
    if amount.currency not in CURRENCIES:
        return Failure(
            FailureKind.TECHNICAL,
            "currency_not_supported",
            f"PayPal does not take payments in {amount.currency}.",
        )
    if amount.currency in WHOLE_UNITS_ONLY and amount.minor % 10 ** exponent(amount.currency):
        return Failure(
            FailureKind.TECHNICAL,
            "decimal_precision",
            f"PayPal takes {amount.currency} in whole units only, not {amount}.",
        )
    return None


def _amount(amount: Money) -> dict[str, str]:
    """PayPal's money: the currency and a decimal string with the currency's decimals."""
    value = amount.amount
    if amount.currency in WHOLE_UNITS_ONLY:
        value = value.quantize(Decimal(1))
    return {"currency_code": amount.currency, "value": f"{value:f}"}


def _purchase_unit(reference: str, amount: Money, description: str) -> dict[str, Any]:
    # custom_id comes back in captures and their webhooks; invoice_id is what PayPal's
    # activity shows and searches, so the office can find the payment by our reference.
    unit: dict[str, Any] = {
        "amount": _amount(amount),
        "custom_id": reference,
        "invoice_id": reference,
    }
    if description:
        unit["description"] = description[:127]
    return unit


def _charge_body(request: ChargeRequest) -> dict[str, Any]:
    source: dict[str, Any] = {"vault_id": request.token}
    if request.method == "card":
        # The school charges a card the payer saved earlier, without them: a merchant-
        # initiated, unscheduled use of a stored credential.
        source["stored_credential"] = {
            "payment_initiator": "MERCHANT",
            "payment_type": "UNSCHEDULED",
            "usage": "SUBSEQUENT",
        }
    method = "card" if request.method == "card" else "paypal"
    return {
        "intent": "CAPTURE",
        "purchase_units": [_purchase_unit(request.reference, request.amount, request.description)],
        "payment_source": {method: source},
    }


# --- what PayPal answers -------------------------------------------------------------------------


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _link(order: Mapping[str, Any], rel: str) -> str:
    for link in _list(order.get("links")):
        if isinstance(link, dict) and link.get("rel") == rel:
            return str(link.get("href", ""))
    return ""


def _capture_of(order: Mapping[str, Any]) -> dict[str, Any] | None:
    """The order's capture (one purchase unit, one capture with intent CAPTURE)."""
    for unit in _list(order.get("purchase_units")):
        payments = unit.get("payments") if isinstance(unit, dict) else None
        captures = payments.get("captures") if isinstance(payments, dict) else None
        for capture in _list(captures):
            if isinstance(capture, dict):
                return capture
    return None


def money_of(amount: Any) -> Money | None:
    """PayPal's `{currency_code, value}` as Money; None when it is not one."""
    if not isinstance(amount, dict):
        return None
    currency = str(amount.get("currency_code", ""))
    try:
        minor = Decimal(str(amount.get("value"))).scaleb(exponent(currency))
        if not minor.is_finite() or minor != minor.to_integral_value() or minor < 0:
            return None
        return Money(int(minor), currency)
    except (MoneyError, ArithmeticError, TypeError, ValueError):
        return None


def order_outcome(order: Mapping[str, Any], *, waiting_declines: bool) -> ChargeResult:
    """What an order says of its payment. An order still waiting for its payer is a decline
    when a saved method was charged (PayPal wants the payer to act), and not known yet for a
    payment link (the payer has not paid yet)."""
    order_id = str(order.get("id") or "")
    status = str(order.get("status") or "")
    capture = _capture_of(order)
    if capture is not None:
        return capture_outcome(capture, order_id)
    if status in ORDER_WAITING:
        if waiting_declines:
            return ChargeResult(
                ChargeStatus.FAILED,
                order_id,
                Failure(
                    FailureKind.HARD_DECLINE,
                    "PAYER_ACTION_REQUIRED",
                    "PayPal wants the payer to confirm this payment themselves; send them a "
                    "payment link instead.",
                ),
            )
        return ChargeResult(
            ChargeStatus.FAILED,
            order_id,
            Failure(FailureKind.UNKNOWN, "waiting_for_payer", "The payer has not paid yet."),
        )
    if status == "VOIDED":
        return ChargeResult(
            ChargeStatus.FAILED,
            order_id,
            Failure(
                FailureKind.HARD_DECLINE,
                "ORDER_VOIDED",
                "PayPal voided the order: the payer did not complete it.",
            ),
        )
    # Unknown statuses are never taken for a payment (APPROVED is captured before this).
    return ChargeResult(
        ChargeStatus.FAILED,
        order_id,
        Failure(FailureKind.UNKNOWN, f"order_{status.lower()}", f"PayPal left the order {status}."),
    )


def capture_outcome(capture: Mapping[str, Any], order_id: str) -> ChargeResult:
    status = str(capture.get("status", ""))
    fee = _fee(capture)
    if status in CAPTURE_TAKEN:  # refunded later or not, the payment went through
        return ChargeResult(ChargeStatus.SUCCEEDED, order_id, fee=fee)
    if status == "PENDING":
        return ChargeResult(ChargeStatus.PROCESSING, order_id, fee=fee)
    if status in CAPTURE_REFUSED:
        return ChargeResult(ChargeStatus.FAILED, order_id, capture_failure(capture))
    return ChargeResult(
        ChargeStatus.FAILED,
        order_id,
        Failure(
            FailureKind.UNKNOWN, f"capture_{status.lower()}", f"PayPal left the payment {status}."
        ),
    )


def capture_failure(capture: Mapping[str, Any]) -> Failure:
    """A declined, denied or failed capture, classified by the card processor's response
    code where PayPal gives one."""
    status = str(capture.get("status", "DECLINED"))
    response = capture.get("processor_response")
    code = str(response.get("response_code", "")) if isinstance(response, dict) else ""
    details = capture.get("status_details")
    reason = str(details.get("reason", "")) if isinstance(details, dict) else ""
    if code in SOFT_PROCESSOR_CODES:
        kind = FailureKind.SOFT_DECLINE
    elif code in TECHNICAL_PROCESSOR_CODES:
        kind = FailureKind.TECHNICAL
    else:
        kind = FailureKind.HARD_DECLINE
    said = {
        "5120": "the card has insufficient funds",
        "9100": "the bank asks to try again later",
        "5400": "the card has expired",
        "9520": "the card was reported lost or stolen",
    }.get(code, "the card's bank or PayPal refused it")
    if reason:
        said += f" ({reason.replace('_', ' ').lower()})"
    label = f"{status}/{code}" if code else status
    return Failure(kind, label, f"PayPal declined the payment: {said}.")


def _fee(capture: Mapping[str, Any]) -> Money | None:
    breakdown = capture.get("seller_receivable_breakdown")
    return money_of(breakdown.get("paypal_fee")) if isinstance(breakdown, dict) else None


def _issue(body: Mapping[str, Any]) -> tuple[str, str]:
    """The first detail's issue and description of a PayPal error answer."""
    for detail in _list(body.get("details")):
        if isinstance(detail, dict) and detail.get("issue"):
            return str(detail["issue"]), str(detail.get("description") or "")
    return "", ""


def paypal_failure(response: httpx.Response, *, refund: bool = False) -> Failure:
    """A PayPal error answer (`{name, message, debug_id, details: [{issue, description}]}`).
    A refund PayPal refuses (REFUND_AMOUNT_EXCEEDED, CAPTURE_FULLY_REFUNDED, ...) is about that
    refund only: technical, never a decline."""
    body = _json(response)
    status = response.status_code
    name = str(body.get("name") or f"http_{status}")
    issue, description = _issue(body)
    debug = f" (PayPal debug id {body['debug_id']})" if body.get("debug_id") else ""
    said = description or str(body.get("message") or f"PayPal answered HTTP {status}.")
    code = issue or name
    if status == 422 and issue in ALREADY_CAPTURED:
        return Failure(FailureKind.UNKNOWN, issue, said)
    if status == 422 and issue == "ORDER_NOT_APPROVED":
        return Failure(FailureKind.UNKNOWN, issue, "The payer has not approved the payment yet.")
    if status == 422 and issue == "DUPLICATE_INVOICE_ID":
        # Our reference is the invoice ID: PayPal already has a payment made with it.
        return Failure(
            FailureKind.UNKNOWN,
            issue,
            "PayPal already has a payment with this reference; check PayPal's activity for it "
            "before charging again.",
        )
    if status == 422 and refund:
        return Failure(FailureKind.TECHNICAL, code, f"PayPal refused the refund: {said}{debug}")
    if status == 422 and issue in PAYEE_RISK_ISSUES:
        return Failure(
            FailureKind.HARD_DECLINE,
            issue,
            "PayPal declined the payment: the school's own PayPal risk settings (its fraud "
            "filters or blocked payers) refused this payer, so it is not tried elsewhere. Check "
            f"the risk settings in the school's PayPal account.{debug}",
        )
    if status == 422 and issue not in TECHNICAL_ISSUES:
        kind = FailureKind.SOFT_DECLINE if issue in SOFT_ISSUES else FailureKind.HARD_DECLINE
        return Failure(kind, code, f"PayPal declined the payment: {said}{debug}")
    if status == 409:
        # The first request with this request ID is still being worked on.
        return Failure(FailureKind.UNKNOWN, code, f"PayPal is still working on it: {said}")
    # 400 (our request), 401/403 (the credentials, the account's permissions), 404 (no such
    # saved method or order here), 422 about our account: nothing about the payer, so another
    # gateway may be tried.
    return Failure(FailureKind.TECHNICAL, code, f"PayPal refused the request: {said}{debug}")


def _refund_result(response: httpx.Response, asked: Money) -> RefundResult:
    body = _json(response)
    if response.status_code >= 400:
        return RefundResult(RefundStatus.FAILED, "", asked, paypal_failure(response, refund=True))
    status = REFUND_STATUSES.get(str(body.get("status", "")), RefundStatus.PENDING)
    refunded = money_of(body.get("amount")) or asked
    return RefundResult(status, str(body.get("id", "")), refunded)


def _unknown(error: ProviderError) -> Failure:
    """PayPal could not be asked: what happened stays unknown."""
    return Failure(FailureKind.UNKNOWN, error.error_class, str(error))


def _no_such_resource(response: httpx.Response) -> bool:
    """PayPal's own "no such order" (404 RESOURCE_NOT_FOUND). Any other 404 (a wrong address,
    a proxy's page) says nothing about the payment."""
    return response.status_code == 404 and _json(response).get("name") == "RESOURCE_NOT_FOUND"


# --- the ledger -------------------------------------------------------------------------------


class _TooLarge(Exception):
    """PayPal found a search window too large (RESULTSET_TOO_LARGE)."""


def _utc(moment: datetime) -> str:
    """A time as Transaction Search takes it: RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed(amount: Any) -> Money | None:
    """Transaction Search's `{currency_code, value}`, signed ("-3.48"); None when absent."""
    if not isinstance(amount, dict):
        return None
    currency = str(amount.get("currency_code", ""))
    try:
        minor = Decimal(str(amount.get("value"))).scaleb(exponent(currency))
        if not minor.is_finite() or minor != minor.to_integral_value():
            raise ValueError(amount)
        return Money(int(minor), currency)
    except (MoneyError, ArithmeticError, TypeError, ValueError):
        raise ProviderError(f"PayPal listed an amount that cannot be read: {amount!r}.") from None


@dataclass(frozen=True)
class _Row:
    """One balance-affecting transaction of Transaction Search, read."""

    transaction_id: str
    code: str  # the T-code
    kind: str
    status: str
    amount: Money  # signed: what it did to the balance
    fee: Money  # what PayPal kept (negative when it gave a fee back)
    created: int
    reference: str  # paypal_reference_id: the transaction it relates to
    gateway_id: str = ""  # unique in the ledger (a transaction id may come twice)

    def entry(self, order_id: str) -> BalanceEntry:
        tid = self.transaction_id
        if self.kind == "charge":
            source = order_id or tid  # our side records the order the capture belongs to
        elif self.kind in ("refund", "payout"):
            source = tid  # our side records a refund by its own id
        else:
            source = self.reference or tid
        return BalanceEntry(
            gateway_id=self.gateway_id or tid,
            kind=self.kind,
            amount=self.amount,
            fee=self.fee,
            net=Money(self.amount.minor - self.fee.minor, self.amount.currency),
            source=source,
            created=self.created,
            available_on=self.created,
            payout=tid if self.kind == "payout" else "",
        )

    def payout(self) -> Payout:
        # PayPal does not say when the bank receives a withdrawal: the day it was made stands.
        return Payout(
            gateway_id=self.transaction_id,
            amount=Money(abs(self.amount.minor), self.amount.currency),
            status=PAYOUT_STATUSES.get(self.status, "pending"),
            arrival=self.created,
            created=self.created,
        )


def _settled_rows(details: list[dict[str, Any]], since: datetime, until: datetime) -> list[_Row]:
    """The transactions initiated in [since, until) that moved money, each once."""
    rows: list[_Row] = []
    seen: set[tuple[str, str, str, int]] = set()
    for detail in details:
        info = detail.get("transaction_info")
        if not isinstance(info, dict) or not info.get("transaction_id"):
            raise ProviderError("PayPal listed a transaction without its details.")
        tid = str(info["transaction_id"])
        code = str(info.get("transaction_event_code") or "")
        status = str(info.get("transaction_status") or "")
        amount = _signed(info.get("transaction_amount"))
        try:
            at = datetime.fromisoformat(str(info.get("transaction_initiation_date")))
        except ValueError:
            at = None
        if amount is None or at is None or at.tzinfo is None:
            raise ProviderError(f"PayPal listed transaction {tid} without its amount or date.")
        if not since <= at < until:
            continue
        kind = KINDS_BY_CODE.get(code) or KINDS_BY_GROUP.get(code[1:3], "other")
        if kind == "charge" and amount.minor < 0:
            kind = "other"  # a payment the school made
        if status not in SETTLED and not (kind == "payout" and status == "P"):
            continue
        key = (tid, code, amount.currency, amount.minor)
        if key in seen:
            continue  # where two search windows meet
        seen.add(key)
        charged = _signed(info.get("fee_amount")) or Money(0, amount.currency)
        if charged.currency != amount.currency:
            raise ProviderError(f"PayPal listed transaction {tid} with a fee in another currency.")
        rows.append(
            _Row(
                transaction_id=tid,
                code=code,
                kind=kind,
                status=status,
                amount=amount,
                fee=Money(-charged.minor, charged.currency),  # PayPal lists a fee as negative
                created=int(at.timestamp()),
                reference=str(info.get("paypal_reference_id") or ""),
            )
        )
    # "A transaction ID is not unique in the reporting system": one that comes more than once
    # (in two currencies, say) is told apart by its code and currency.
    counts = Counter(row.transaction_id for row in rows)
    return [
        row
        if counts[row.transaction_id] == 1
        else replace(row, gateway_id=f"{row.transaction_id}-{row.code}-{row.amount.currency}")
        for row in rows
    ]


def _unaskable(request: ChargeRequest) -> Failure:
    return Failure(
        FailureKind.UNKNOWN,
        "request_id_expired",
        "PayPal remembers a payment's request for 6 hours only, so whether this one was taken "
        f"cannot be asked any more; look for {request.reference} (Invoice ID) in PayPal's "
        "activity.",
    )


def _paypal(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return PayPal(spec, client, config, secrets)


def _base_url(config: Mapping[str, Any]) -> str:
    return str(config.get("api_url") or ENVIRONMENTS[str(config.get("environment", "sandbox"))])


PAYPAL = ProviderSpec(
    key="paypal",
    name="PayPal",
    category=Category.PAYMENTS,
    description=(
        "PayPal payments (saved PayPal accounts and cards, payment links, refunds) through "
        "PayPal's REST APIs, with an app's client ID and secret from PayPal's developer "
        "dashboard (Apps & Credentials)."
    ),
    fields=(
        ConfigField(
            "environment",
            "Environment",
            FieldKind.SELECT,
            required=False,
            default="sandbox",
            choices=tuple(ENVIRONMENTS),
            help="Sandbox uses PayPal's test accounts; Live takes real money.",
        ),
        ConfigField("client_id", "Client ID", help="From the app in Apps & Credentials."),
        ConfigField(
            "client_secret", "Secret", FieldKind.SECRET, help="Shown beside the client ID."
        ),
        ConfigField(
            "webhook_id",
            "Webhook ID",
            required=False,
            help=(
                "Add Switchboard's webhook address to the app in PayPal's dashboard, then paste "
                "the Webhook ID PayPal shows for it here. Until then callbacks are refused."
            ),
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use PayPal's own address for the environment.",
        ),
    ),
    auth=AuthKind.OAUTH2_CLIENT_CREDENTIALS,
    capabilities=frozenset({PAYMENTS}),
    health=Operation("webhooks", "GET", "/v1/notifications/webhooks", timeout=10.0),
    base_url=_base_url,
    factory=_paypal,
    policy=ResiliencePolicy(timeout=30.0),
    idempotency_header="PayPal-Request-Id",
    webhook=WebhookSpec(REMOTE_VERIFIER),
)
