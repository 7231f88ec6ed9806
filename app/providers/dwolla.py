"""Dwolla: ACH bank transfers from a family's bank account to the school's, refunds as transfers
back, over Dwolla's v2 API (HAL+JSON, an OAuth 2.0 application token).

The token comes from `POST /token` (the client-credentials grant: the application's key and
secret as HTTP Basic, `grant_type=client_credentials` form-encoded) and lasts about an hour; it is
fetched on first use, kept in memory only, renewed a minute before it expires, and fetched again
once if Dwolla says it is no longer valid. Every call, the token's included, goes through the
resilient HTTP layer.

A charge is one `POST /transfers` from the family's funding source (their bank account, saved
with Dwolla) to the school's, with our attempt's reference as `correlationId`, in the metadata,
and as the `Idempotency-Key`. Dwolla answers 201 with the new transfer's address in `Location`
and no body; the transfer is then "pending" for days while the ACH debit settles, so a charge
is PROCESSING, and "processed" (SUCCEEDED) or "failed" (the bank returned it, with an ACH return
code) comes later, by webhook or by asking. A lost answer is recovered by sending the same
request with the same key again (Dwolla keeps a key with its body for 24 hours and answers what
the first request did); after that, the family's or the school's transfers are searched by
`correlationId`. NOT_FOUND is said only when that search comes back empty.

The ledger of a period is the account's transfers (`GET /accounts/{id}/transfers`), read by
whole days (`startDate`, `endDate`) and pages (`limit`, `offset`), the days halved when they hold
more than the 10,000 transfers Dwolla lets offsets reach. Which end of a transfer is the school
is told by its funding sources (`GET /accounts/{id}/funding-sources`): a processed debit of a
family's bank into the school's is a payment, a transfer back a refund, each under the transfer
id our side records. When the school's funding source is its Dwolla balance, transfers from the
balance to its bank account are the payouts (and the other way, top-ups); when payments go
straight to its bank, there are none, each payment reaching the bank by itself. Dwolla does not
say which payments a withdrawal from the balance carried, nor when the bank receives it. Dwolla
bills its own fees separately; the only fees a transfer shows are facilitator fees (its `fees`
link), counted with the transfer they were taken from: charged to the school, it kept them;
paid to the school, it gave them.

Relied on: Dwolla's developer docs (github.com/Dwolla/dev-portal, developers.dwolla.com):
"Generate an access token" (client-credentials flow), "Root", "Initiate a transfer",
"Retrieve a transfer", "Retrieve a transfer failure reason", "List and search transfers for a
customer" and "… for an account", "Cancel a transfer", "Idempotency key", "Errors", "Events"
(topics and payload) and "Processing & validating webhooks"; the SDK dwolla-v2-python (the
`Accept: application/vnd.dwolla.v1.hal+json` header, environments); Dwolla's "Transfer
failures" (which ACH return codes remove the bank: all but R01, R09 and R20) and NACHA's return
reason codes; Dwolla's pricing (discuss.dwolla.com: Pay-As-You-Go 0.5 % per transfer, 5¢ to $5;
paid plans a fixed fee per transfer by contract). For the ledger: "List and search transfers for
an account" (developers.dwolla.com/api-reference/accounts/list-and-search-transfers: startDate
and endDate as YYYY-MM-DD, limit and offset, "You can only retrieve up to 10,000 transfers using
the limit and offset query string parameters"; a limit of at most 200, per its cursor-paginated
version), "List funding sources for an account" (`type` bank or balance), the transfer
resource's links (source-funding-source, destination-funding-source, fees) and "List fees for a
transfer".
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

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
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    ResiliencePolicy,
    WebhookSpec,
)

ENVIRONMENTS = {
    "sandbox": "https://api-sandbox.dwolla.com",
    "production": "https://api.dwolla.com",
}
HAL = "application/vnd.dwolla.v1.hal+json"
# Renew this long before Dwolla says the token expires, so no call carries one that dies on
# the way.
RENEW_SECONDS = 60.0
# Dwolla keeps an idempotency key (with its request body) for 24 hours; replay only well inside.
REPLAY_SECONDS = 23 * 3600
REFERENCE_KEY = "switchboard_reference"
# What Switchboard's payment service calls "the first request with this key is still being
# worked on" (app/services/payments.py STILL_WORKING): Dwolla's 409 on a replayed key.
STILL_WORKING = "idempotency_key_in_use"

# Getting a token changes nothing at Dwolla: safe to repeat.
TOKEN = Operation("token", "POST", "/token", idempotent=True)
ROOT = Operation("root", "GET", "/", timeout=10.0)
CREATE_TRANSFER = Operation("create-transfer", "POST", "/transfers")
TRANSFER = Operation("transfer", "GET", "/transfers/{id}")
TRANSFER_FAILURE = Operation("transfer-failure", "GET", "/transfers/{id}/failure")
# Searches may fail on their own (Dwolla's search index) without the transfers API failing.
CUSTOMER_TRANSFERS = Operation(
    "customer-transfers", "GET", "/customers/{id}/transfers", own_breaker=True
)
ACCOUNT_TRANSFERS = Operation(
    "account-transfers", "GET", "/accounts/{id}/transfers", own_breaker=True
)
ACCOUNT_FUNDING_SOURCES = Operation(
    "account-funding-sources", "GET", "/accounts/{id}/funding-sources"
)
TRANSFER_FEES = Operation("transfer-fees", "GET", "/transfers/{id}/fees")
LIST_PAGE_SIZE = 200  # the largest page Dwolla serves
SEARCH_CAP = 10_000  # how far offsets reach; days holding more are listed in parts
# Days holding more than the cap are halved (with a day's overlap, whatever Dwolla's "after" and
# "before" include) down to this many; more than that is refused rather than cut short.
SMALLEST_SEARCH_DAYS = 3
PAYOUT_STATUSES = {
    "pending": "in_transit",
    "processed": "paid",
    "failed": "failed",
    "cancelled": "canceled",
}

# ACH returns that may pass if the debit is tried again later (money may have arrived by then).
SOFT_RETURNS = frozenset({"R01", "R09"})
RETURN_ADVICE = {
    FailureKind.SOFT_DECLINE: "It may go through if it is tried again in a few days.",
    FailureKind.HARD_DECLINE: "Ask the family for another bank account or another way to pay.",
}
REFUND_STATUSES = {
    "pending": RefundStatus.PENDING,
    "processed": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "cancelled": RefundStatus.CANCELED,
}
# Dwolla's Pay-As-You-Go price, used until the school enters its plan's fee per transfer. Its
# floor of 5¢ and ceiling of $5 are not modelled: the estimate is low below $10 and high
# above $1,000.
PAY_AS_YOU_GO_PERCENT = Decimal("0.5")


class Dwolla(BearerProvider):
    methods = frozenset({"ach"})
    currencies = frozenset({"USD"})
    countries = frozenset({"US"})
    features = frozenset({Feature.REFUNDS, Feature.LEDGER})
    page_size = LIST_PAGE_SIZE
    search_cap = SEARCH_CAP

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self.fees = fee_schedule(config.get("fee_per_transfer"))
        self._token = ""
        self._expires_at = 0.0
        self._renewing = asyncio.Lock()

    # --- authentication -------------------------------------------------------------------------

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        token = await self._access_token()
        response = await self._bearer_call(token, operation, arguments)
        if response.status_code == 401:
            # ExpiredAccessToken or InvalidAccessToken: Dwolla acted on nothing. One new token,
            # one more try.
            self._forget(token)
            response = await self._bearer_call(await self._access_token(), operation, arguments)
        return response

    async def _new_token(self) -> tuple[str, float]:
        credentials = f"{self.config.get('key', '')}:{self.secrets.get('secret', '')}"
        basic = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        response = await self.client.call(
            TOKEN,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
        )
        if response.status_code in (400, 401, 403):
            raise CredentialsRefused(
                "Dwolla refused the key and secret; copy them again from the application in "
                "Dwolla's dashboard (and check Sandbox or Production).",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise ProviderError(
                f"Dwolla did not give an access token (HTTP {response.status_code}).",
                status=response.status_code,
            )
        try:
            answer = response.json()
            token = str(answer["access_token"])
            lifetime = float(answer.get("expires_in", 0))
        except (ValueError, KeyError, TypeError):
            raise ProviderError("Dwolla's access token answer could not be read.") from None
        return token, time.monotonic() + max(lifetime - RENEW_SECONDS, 0.0)

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        refused = _not_dollars(request.amount)
        if refused is not None:
            return ChargeResult(ChargeStatus.FAILED, failure=refused)
        try:
            response = await self._create(self._charge_body(request), request.reference)
        except ProviderError as error:
            return failed(error)
        if response.status_code != 201:
            return ChargeResult(ChargeStatus.FAILED, failure=_dwolla_failure(response))
        transfer_id = _created_id(response)
        if not transfer_id:
            return ChargeResult(ChargeStatus.FAILED, failure=_unreadable_created())
        # A transfer from a bank account starts "pending": the ACH debit settles in days.
        return ChargeResult(ChargeStatus.PROCESSING, transfer_id)

    async def sync(self, request: ChargeRequest, gateway_id: str = "") -> ChargeResult:
        try:
            if gateway_id:
                return await self._transfer_status(gateway_id)
            if time.time() - request.created_at < REPLAY_SECONDS:
                return await self._replay(request)
            return await self._search(request)
        except ProviderError as error:
            return ChargeResult(ChargeStatus.FAILED, gateway_id, _unknown(error))

    async def _replay(self, request: ChargeRequest) -> ChargeResult:
        """The same request with the same key: Dwolla answers with the transfer the first one
        made (or makes it now, if the first never arrived), never a second one."""
        response = await self._create(self._charge_body(request), request.reference)
        if response.status_code != 201:
            # A decline of the very request (insufficient funds, the payer's bank restricted)
            # is Dwolla's answer; any other refusal leaves what the first request did unknown.
            failure = _dwolla_failure(response)
            if failure.kind is FailureKind.TECHNICAL:
                failure = _unanswered_question(failure)
            return ChargeResult(ChargeStatus.FAILED, failure=failure)
        transfer_id = _created_id(response)
        if not transfer_id:
            return ChargeResult(ChargeStatus.FAILED, failure=_unreadable_created())
        return await self._transfer_status(transfer_id)

    async def _search(self, request: ChargeRequest) -> ChargeResult:
        found = await self._find(request.reference, request.customer)
        if isinstance(found, Failure):
            return ChargeResult(ChargeStatus.FAILED, failure=found)
        if found is None:
            return ChargeResult(ChargeStatus.NOT_FOUND)
        return await self._charge_result(found)

    async def _transfer_status(self, transfer_id: str) -> ChargeResult:
        response = await self.call(TRANSFER, path_params={"id": transfer_id})
        if response.status_code >= 400:
            # A refused question, not the transfer's outcome.
            failure = _unanswered_question(_dwolla_failure(response))
            return ChargeResult(ChargeStatus.FAILED, transfer_id, failure)
        return await self._charge_result(_json(response))

    async def _charge_result(self, transfer: Mapping[str, Any]) -> ChargeResult:
        transfer_id = _transfer_id(transfer.get("id"))
        status = str(transfer.get("status", ""))
        if status == "processed":
            return ChargeResult(ChargeStatus.SUCCEEDED, transfer_id)
        if status == "failed":
            return ChargeResult(
                ChargeStatus.FAILED, transfer_id, await self._return_of(transfer_id)
            )
        if status == "cancelled":
            return ChargeResult(ChargeStatus.FAILED, transfer_id, CANCELLED)
        # "pending", and anything Dwolla may add: on its way, never taken for done.
        return ChargeResult(ChargeStatus.PROCESSING, transfer_id)

    async def _return_of(self, transfer_id: str) -> Failure:
        """Why the bank returned a failed transfer (its ACH return code)."""
        try:
            response = await self.call(TRANSFER_FAILURE, path_params={"id": transfer_id})
        except ProviderError as error:
            # It failed, but why is not known yet: ask again rather than guess the kind.
            return Failure(
                FailureKind.UNKNOWN,
                error.error_class,
                f"The transfer failed, but Dwolla could not be asked why: {error}",
            )
        failure = _json(response)
        code = str(failure.get("code") or "")
        if response.status_code >= 400 or not code:
            return ach_return("", "")
        return ach_return(code, str(failure.get("description") or ""))

    def _charge_body(self, request: ChargeRequest) -> dict[str, Any]:
        # Only what the request itself holds: the replay after a lost answer must send the very
        # same body, or Dwolla would not take it for the same request. (The description is not
        # kept with an attempt, so it stays out.)
        return {
            "_links": {
                "source": {"href": self._href("funding-sources", request.token)},
                "destination": {"href": str(self.config.get("funding_source", ""))},
            },
            "amount": _amount(request.amount),
            "correlationId": request.reference,
            "metadata": {REFERENCE_KEY: request.reference},
        }

    # --- refunds --------------------------------------------------------------------------------
    # POST /transfers/{id} {"status": "cancelled"} only stops a transfer that has not left
    # Dwolla yet; it is not a refund. An ACH refund is a new transfer the other way: from the
    # school's funding source back to the family's, with its own idempotency key.

    async def refund(self, gateway_id: str, amount: Money, reference: str) -> RefundResult:
        try:
            looked_up = await self._before_refund(gateway_id, amount, reference)
        except ProviderError as error:
            if isinstance(error, UNANSWERED):
                # Nothing was sent back yet, but this refund may have been made before (its
                # answer lost): pending until the look-up can be made.
                return RefundResult(RefundStatus.PENDING, "", amount, _unknown(error))
            return RefundResult(RefundStatus.FAILED, "", amount, failure_of(error))
        if isinstance(looked_up, RefundResult):
            return looked_up
        try:
            return await self._send_back(looked_up, amount, reference)
        except ProviderError as error:
            return RefundResult(RefundStatus.FAILED, "", amount, failure_of(error))

    async def _before_refund(
        self, gateway_id: str, amount: Money, reference: str
    ) -> RefundResult | str:
        """The payer's bank to send the refund to, or the refund's result when it is settled
        without sending: made already under this reference, or not possible."""
        paid = await self.call(TRANSFER, path_params={"id": gateway_id})
        if paid.status_code >= 400:
            return RefundResult(RefundStatus.FAILED, "", amount, _dwolla_failure(paid))
        original = _json(paid)
        payer_bank = _link(original, "source-funding-source")
        if not payer_bank:
            return RefundResult(RefundStatus.FAILED, "", amount, NO_PAYER_BANK)
        payer = _link(original, "source")
        # Made already (its answer lost, its key perhaps expired)? Then that one is the refund.
        found = await self._find(reference, payer if "/customers/" in payer else "")
        if isinstance(found, Failure):
            # Whether it was made is not known: never sent (again) blind.
            return RefundResult(RefundStatus.PENDING, "", amount, found)
        if found is not None:
            return _refund_result(found, amount)
        return payer_bank

    async def _send_back(self, payer_bank: str, amount: Money, reference: str) -> RefundResult:
        body = self._refund_body(payer_bank, amount, reference)
        response = await self._create(body, reference)
        if response.status_code != 201:
            return RefundResult(RefundStatus.FAILED, "", amount, _dwolla_failure(response))
        refund_id = _created_id(response)
        if not refund_id:
            return RefundResult(RefundStatus.FAILED, "", amount, _unreadable_created())
        return RefundResult(RefundStatus.PENDING, refund_id, amount)

    async def refund_status(self, refund_id: str, amount: Money) -> RefundResult:
        try:
            response = await self.call(TRANSFER, path_params={"id": refund_id})
        except ProviderError as error:
            return RefundResult(RefundStatus.PENDING, refund_id, amount, _unknown(error))
        if response.status_code >= 400:
            failure = _unanswered_question(_dwolla_failure(response))
            return RefundResult(RefundStatus.PENDING, refund_id, amount, failure)
        return _refund_result(_json(response), amount)

    def _refund_body(self, payer_bank: str, amount: Money, reference: str) -> dict[str, Any]:
        return {
            "_links": {
                "source": {"href": str(self.config.get("funding_source", ""))},
                "destination": {"href": payer_bank},
            },
            "amount": _amount(amount),
            # No metadata: Dwolla refuses it on transfers from a Dwolla balance, which the
            # school's funding source may be. The correlationId is what finds it again.
            "correlationId": reference,
        }

    # --- the ledger -----------------------------------------------------------------------------

    async def balance_entries(self, limit: int = 100, after: str = "") -> list[BalanceEntry]:
        raise Unsupported(
            "Dwolla's transfers are read a period at a time, for reconciliation, not page by "
            "page as a balance; see them in Dwolla's dashboard under Transactions."
        )

    async def payouts(self, limit: int = 100, after: str = "") -> list[Payout]:
        raise Unsupported(
            "Dwolla's withdrawals to the bank are read a period at a time, for reconciliation; "
            "see them in Dwolla's dashboard under Transactions."
        )

    async def ledger(self, since: datetime, until: datetime) -> GatewayLedger:
        """The account's processed transfers made in the period as balance entries, and its
        withdrawals from the Dwolla balance to the bank made in it as payouts."""
        since, until = ledger_period(since, until)
        if since >= until:
            return GatewayLedger([], [])
        account = await self._account_id()
        sources = await self._funding_sources(account)
        # Dwolla filters by whole days: a day more at each end, and what falls outside the
        # period is dropped here.
        first, last = since.date() - timedelta(days=1), until.date() + timedelta(days=1)
        entries: list[BalanceEntry] = []
        payouts: list[Payout] = []
        seen: set[str] = set()
        for transfer in await self._transfers(account, first, last):
            transfer_id = _transfer_id(transfer.get("id"))
            created = _created(transfer)
            if transfer_id in seen or not since <= created < until:
                continue
            seen.add(transfer_id)
            if _link(transfer, "created-from-transfer"):
                continue  # a facilitator fee: counted with the transfer it was taken from
            kind = _kind(transfer, account, sources)
            if not kind:
                continue
            amount = _money(transfer.get("amount"))
            if amount is None:
                raise ProviderError(f"Dwolla listed transfer {transfer_id} without its amount.")
            status = str(transfer.get("status") or "")
            at = int(created.timestamp())
            if kind == "payout":
                # Dwolla does not say when the bank receives it: the day it was made stands.
                status_of = PAYOUT_STATUSES.get(status, "pending")
                payouts.append(Payout(transfer_id, amount, status_of, arrival=at, created=at))
            if status != "processed":
                # Pending or cancelled: no money moved (yet). Failed: none did, or a debit
                # returned after it was processed came back, which is none either.
                continue
            signed = amount if kind in ("charge", "topup") else Money(-amount.minor, "USD")
            fee = await self._fees(transfer, account) if _link(transfer, "fees") else None
            kept = fee or Money(0, "USD")
            entries.append(
                BalanceEntry(
                    gateway_id=transfer_id,
                    kind=kind,
                    amount=signed,
                    fee=kept,
                    net=Money(signed.minor - kept.minor, "USD"),
                    source=transfer_id,  # our side records payments and refunds by transfer id
                    created=at,
                    available_on=at,
                    payout=transfer_id if kind == "payout" else "",
                )
            )
        return GatewayLedger(entries, payouts)

    async def _account_id(self) -> str:
        root = await self.call(ROOT)
        if root.status_code >= 400:
            raise self._listing_refused(root)
        account = _last_segment(_link(_json(root), "account"))
        if not account:
            raise ProviderError(NO_ACCOUNT.message)
        return account

    async def _funding_sources(self, account: str) -> dict[str, str]:
        """The account's funding sources, removed ones too (past transfers used them), by id:
        their type, "bank" or "balance"."""
        response = await self.call(ACCOUNT_FUNDING_SOURCES, path_params={"id": account})
        if response.status_code >= 400:
            raise self._listing_refused(response)
        embedded = _json(response).get("_embedded")
        listed = embedded.get("funding-sources") if isinstance(embedded, dict) else None
        return {
            str(source.get("id", "")).lower(): str(source.get("type", ""))
            for source in listed or []
            if isinstance(source, dict)
        }

    async def _transfers(self, account: str, first: date, last: date) -> list[dict[str, Any]]:
        """Every transfer of the account made between the two days, page by page; days holding
        more than offsets reach are halved until they do not."""
        days = deque([(first, last)])
        found: list[dict[str, Any]] = []
        while days:
            start, end = days.popleft()
            page, total = await self._transfer_page(account, start, end, 0)
            if total > self.search_cap:
                if (end - start).days <= SMALLEST_SEARCH_DAYS:
                    raise ProviderError(
                        f"Dwolla has more than {self.search_cap} transfers from {start} to "
                        f"{end}, more than it lists; export them from Dwolla's dashboard."
                    )
                middle = start + timedelta(days=(end - start).days // 2)
                # Each half reaches a day into the other: whether Dwolla's "after" and
                # "before" include the day itself, no day falls between them.
                day = timedelta(days=1)
                days.extendleft([(middle - day, end), (start, middle + day)])
                continue
            found.extend(page)
            offset = len(page)
            while offset < total:
                page, _ = await self._transfer_page(account, start, end, offset)
                if not page:
                    raise ProviderError(
                        f"Dwolla stopped listing the account's transfers after {offset} of "
                        f"{total}; try again later."
                    )
                found.extend(page)
                offset += len(page)
        return found

    async def _transfer_page(
        self, account: str, start: date, end: date, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        response = await self.call(
            ACCOUNT_TRANSFERS,
            path_params={"id": account},
            params={
                "startDate": start.isoformat(),
                "endDate": end.isoformat(),
                "limit": self.page_size,
                "offset": offset,
            },
        )
        if response.status_code >= 400:
            raise self._listing_refused(response)
        body = _json(response)
        embedded = body.get("_embedded")
        transfers = embedded.get("transfers") if isinstance(embedded, dict) else None
        total = body.get("total")
        if not isinstance(transfers, list) or not isinstance(total, int):
            raise ProviderError("Dwolla's list of the account's transfers could not be read.")
        return [transfer for transfer in transfers if isinstance(transfer, dict)], total

    async def _fees(self, transfer: Mapping[str, Any], account: str) -> Money:
        """The facilitator fees of a transfer, as what it kept: charged to the school, plus;
        paid to the school, minus."""
        transfer_id = _transfer_id(transfer.get("id"))
        response = await self.call(TRANSFER_FEES, path_params={"id": transfer_id})
        if response.status_code >= 400:
            raise self._listing_refused(response)
        kept = 0
        for fee in _json(response).get("transactions") or []:
            amount = _money(fee.get("amount")) if isinstance(fee, dict) else None
            if amount is None or fee.get("status") in ("failed", "cancelled"):
                continue
            if _is_account(_link(fee, "source"), account):
                kept += amount.minor
            elif _is_account(_link(fee, "destination"), account):
                kept -= amount.minor
        return Money(kept, "USD")

    def _listing_refused(self, response: httpx.Response) -> ProviderError:
        said = _dwolla_failure(response).message.removeprefix("Dwolla refused the request: ")
        if response.status_code in (401, 403):
            return CredentialsRefused(
                f"Dwolla would not list the account's transfers ({said}); check that the "
                "application's key and secret belong to the school's Dwolla account.",
                status=response.status_code,
            )
        return ProviderError(
            f"Dwolla would not list the account's transfers: {said}", status=response.status_code
        )

    # --- what Dwolla has no API for -------------------------------------------------------------

    async def create_link(self, request: LinkRequest) -> PaymentLink:
        raise Unsupported(
            "Dwolla has no payment page to send a family to; add the family's bank account "
            "in Dwolla, save it as their payment method, and charge it."
        )

    # --- pieces ---------------------------------------------------------------------------------

    async def _create(self, body: Mapping[str, Any], key: str) -> httpx.Response:
        return await self.call(
            CREATE_TRANSFER,
            content=json.dumps(body, separators=(",", ":")).encode("utf-8"),
            headers={"Content-Type": HAL},
            idempotency_key=key,
        )

    async def _find(self, reference: str, customer: str) -> dict[str, Any] | Failure | None:
        """The transfer with our reference as correlationId, searched among the payer's
        transfers (or, without a payer, the school's account's); None only when Dwolla says
        there is none."""
        if customer:
            operation, owner = CUSTOMER_TRANSFERS, _last_segment(customer)
        else:
            root = await self.call(ROOT)
            account = _link(_json(root), "account") if root.status_code < 400 else ""
            if not account:
                if root.status_code >= 400:
                    return _unanswered_question(_dwolla_failure(root))
                return NO_ACCOUNT
            operation, owner = ACCOUNT_TRANSFERS, _last_segment(account)
        response = await self.call(
            operation, path_params={"id": owner}, params={"correlationId": reference}
        )
        if response.status_code >= 400:
            # The search refused is not "none found": the outcome stays unknown.
            return _unanswered_question(_dwolla_failure(response))
        embedded = _json(response).get("_embedded")
        transfers = embedded.get("transfers") if isinstance(embedded, dict) else None
        if not isinstance(transfers, list):
            return Failure(
                FailureKind.UNKNOWN, "unreadable", "Dwolla's search answer was unreadable."
            )
        # The search matches the term; keep only an exact match of ours.
        for transfer in transfers:
            if isinstance(transfer, dict) and _is_ours(transfer, reference):
                return transfer
        return None

    def _href(self, collection: str, value: str) -> str:
        """A resource's address as Dwolla writes it, from its address or its bare id."""
        if value.startswith(("https://", "http://")):
            return value
        return f"{_base_url(self.config).rstrip('/')}/{collection}/{value}"


CANCELLED = Failure(
    FailureKind.HARD_DECLINE,
    "cancelled",
    "The transfer was cancelled before it reached the bank (in Dwolla's dashboard, or by "
    "Dwolla); nothing was taken.",
)
NO_PAYER_BANK = Failure(
    FailureKind.TECHNICAL,
    "no_source_funding_source",
    "Dwolla did not say which bank account the payment came from, so it cannot be sent back "
    "from Switchboard; refund it in Dwolla's dashboard.",
)
NO_ACCOUNT = Failure(
    FailureKind.UNKNOWN,
    "no_account",
    "Dwolla did not say which account the key belongs to, so the payment could not be looked up.",
)


def ach_return(code: str, description: str) -> Failure:
    """A debit the family's bank returned, by its ACH return code. Insufficient or uncollected
    funds may pass later; every other return (closed or unknown account, authorization revoked,
    account frozen, not a transaction account, ...) is final, as is a return whose code is not
    known: trying again would only debit a family whose bank said no."""
    kind = FailureKind.SOFT_DECLINE if code in SOFT_RETURNS else FailureKind.HARD_DECLINE
    reason = f"{description} ({code})" if description and code else (code or "reason not given")
    return Failure(
        kind,
        code or "ach_return",
        f"The family's bank returned the payment: {reason}. {RETURN_ADVICE[kind]}",
    )


def fee_schedule(fee_per_transfer: object) -> FeeSchedule:
    """Dwolla bills its client a fee per transfer set by the plan; Switchboard cannot read it
    from the API, so it is a setting. Without it, Pay-As-You-Go's 0.5 % is the estimate."""
    if isinstance(fee_per_transfer, int | float) and not isinstance(fee_per_transfer, bool):
        cents = int((Decimal(str(fee_per_transfer)) * 100).to_integral_value())
        return FeeSchedule((FeeRule(Decimal(0), cents, method="ach", currency="USD"),))
    return FeeSchedule((FeeRule(PAY_AS_YOU_GO_PERCENT, method="ach", currency="USD"),))


def _refund_result(transfer: Mapping[str, Any], asked: Money) -> RefundResult:
    status = REFUND_STATUSES.get(str(transfer.get("status", "")), RefundStatus.PENDING)
    amount = _money(transfer.get("amount")) or asked
    failure = None
    if status is RefundStatus.FAILED:
        failure = Failure(
            FailureKind.TECHNICAL,
            "refund_returned",
            "The family's bank returned the refund; the money is back with the school. Ask "
            "the family for another account, or refund them another way.",
        )
    return RefundResult(status, _transfer_id(transfer.get("id")), amount, failure)


def _dwolla_failure(response: httpx.Response) -> Failure:
    """A Dwolla error answer: `{"code", "message", "_embedded": {"errors": [{"code", "message",
    "path"}]}}`. Only a refusal about the payer's own account says anything about the payer."""
    body = _json(response)
    status = response.status_code
    code = str(body.get("code") or f"http_{status}")
    message = str(body.get("message") or f"Dwolla answered HTTP {status}.")
    if status == 409:
        # The first request with this key is still being worked on.
        return Failure(
            FailureKind.UNKNOWN,
            STILL_WORKING,
            "Dwolla is still working on this request; it will be asked again shortly.",
        )
    details = _embedded_errors(body)
    for detail in details:
        on_payer = str(detail.get("path", "")).startswith("/_links/source")
        if detail.get("code") == "InsufficientFunds":
            return Failure(FailureKind.SOFT_DECLINE, "InsufficientFunds", _said(detail, message))
        if detail.get("code") == "Restricted" and on_payer:
            return Failure(FailureKind.HARD_DECLINE, "Restricted", _said(detail, message))
    if details:
        first = details[0]
        code = f"{code}/{first.get('code', '')}"
        message = _said(first, message)
    # ValidationError about our request or the school's account, InvalidResourceState,
    # NotFound, Forbidden, bad credentials: nothing about the payer, so another gateway may be
    # tried.
    return Failure(FailureKind.TECHNICAL, code, f"Dwolla refused the request: {message}")


def _embedded_errors(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    embedded = body.get("_embedded")
    errors = embedded.get("errors") if isinstance(embedded, dict) else None
    return (
        [error for error in errors if isinstance(error, dict)] if isinstance(errors, list) else []
    )


def _said(detail: Mapping[str, Any], fallback: str) -> str:
    return str(detail.get("message") or fallback)


def _unknown(error: ProviderError) -> Failure:
    """Dwolla could not be asked: what happened stays unknown."""
    return Failure(FailureKind.UNKNOWN, error.error_class, str(error))


def _unanswered_question(failure: Failure) -> Failure:
    """Dwolla refused a look-up: that says nothing of the payment, which stays unknown."""
    if failure.kind is FailureKind.UNKNOWN:
        return failure
    return Failure(
        FailureKind.UNKNOWN,
        failure.code,
        f"Dwolla would not say what became of it: {failure.message}",
    )


def _unreadable_created() -> Failure:
    # Dwolla made something but did not say where: the outcome must be looked up.
    return Failure(
        FailureKind.UNKNOWN,
        "no_location",
        "Dwolla accepted the transfer but did not say which one it made; it will be looked up.",
    )


def _not_dollars(amount: Money) -> Failure | None:
    if amount.currency == "USD":
        return None
    return Failure(
        FailureKind.TECHNICAL,
        "currency",
        f"Dwolla moves only US dollars; a payment in {amount.currency} needs another gateway.",
    )


def _amount(amount: Money) -> dict[str, str]:
    return {"currency": amount.currency, "value": amount.for_input()}


def _money(value: object) -> Money | None:
    """Dwolla's `{currency, value}` as Money; None when it is not a believable one."""
    if not isinstance(value, dict):
        return None
    try:
        cents = Decimal(str(value.get("value"))).scaleb(2)
        if not cents.is_finite() or cents != cents.to_integral_value() or cents < 0:
            return None
        return Money(int(cents), str(value.get("currency") or "USD").upper())
    except (MoneyError, ArithmeticError, TypeError, ValueError):
        return None


def _created(transfer: Mapping[str, Any]) -> datetime:
    try:
        created = datetime.fromisoformat(str(transfer.get("created")))
    except ValueError:
        created = None
    if created is None or created.tzinfo is None:
        raise ProviderError(f"Dwolla listed transfer {transfer.get('id')} without its date.")
    return created


def _is_account(href: str, account: str) -> bool:
    return "/accounts/" in href and _last_segment(href).lower() == account.lower()


def _kind(transfer: Mapping[str, Any], account: str, sources: Mapping[str, str]) -> str:
    """What a transfer was to the school, by which of its ends are the school's funding sources
    (or, where a transfer does not name them, the school's account): "" for one not the
    school's, or between its own sources of the same kind."""
    ends = []
    for end in ("source", "destination"):
        funding = _last_segment(_link(transfer, f"{end}-funding-source")).lower()
        if funding:
            ends.append((funding in sources, sources.get(funding, "")))
        else:
            ends.append((_is_account(_link(transfer, end), account), ""))
    (from_us, from_type), (to_us, to_type) = ends
    if from_us and to_us:
        if from_type == "balance" and to_type == "bank":
            return "payout"
        if from_type == "bank" and to_type == "balance":
            return "topup"
        return ""
    if to_us:
        return "charge"
    return "refund" if from_us else ""


def _created_id(response: httpx.Response) -> str:
    return _transfer_id(_last_segment(response.headers.get("location", "")))


def _transfer_id(value: object) -> str:
    """A transfer's id as Switchboard keeps it. Dwolla's ids are GUIDs that it writes in lower
    case in `Location` and in upper case in events; lower case, so both find the same one."""
    return str(value or "").lower()


def _last_segment(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] if url else ""


def _link(resource: Mapping[str, Any], name: str) -> str:
    links = resource.get("_links")
    link = links.get(name) if isinstance(links, dict) else None
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) else ""


def _is_ours(transfer: Mapping[str, Any], reference: str) -> bool:
    metadata = transfer.get("metadata")
    tagged = metadata.get(REFERENCE_KEY) if isinstance(metadata, dict) else None
    return reference in (transfer.get("correlationId"), tagged)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _base_url(config: Mapping[str, Any]) -> str:
    return str(config.get("api_url") or ENVIRONMENTS[str(config.get("environment", "sandbox"))])


def _headers(_config: Mapping[str, Any], _secrets: Mapping[str, str]) -> dict[str, str]:
    # Dwolla refuses a call without its versioned media type (406 InvalidVersion).
    return {"Accept": HAL}


def _dwolla(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return Dwolla(spec, client, config, secrets)


def _funding_source(value: str) -> None:
    if "/funding-sources/" not in urlsplit(value).path:
        raise ValueError(
            "Give the address of the school's bank account in Dwolla, like "
            "https://api.dwolla.com/funding-sources/…"
        )


DWOLLA = ProviderSpec(
    key="dwolla",
    name="Dwolla",
    category=Category.PAYMENTS,
    description=(
        "ACH bank transfers through Dwolla, from families' bank accounts to the school's, with "
        "an application's key and secret from Dwolla's dashboard. Payments take a few business "
        "days to clear; the sandbox moves no real money."
    ),
    fields=(
        ConfigField(
            "environment",
            "Environment",
            FieldKind.SELECT,
            required=False,
            default="sandbox",
            choices=tuple(ENVIRONMENTS),
            help="Sandbox uses Dwolla's test banks; Production moves real money.",
        ),
        ConfigField("key", "Key", help="The application's key, under Applications in Dwolla."),
        ConfigField("secret", "Secret", FieldKind.SECRET, help="Shown beside the key."),
        ConfigField(
            "funding_source",
            "School's bank account (funding source address)",
            FieldKind.URL,
            help=(
                "Where families' payments go: the address of the school's verified bank account "
                "in Dwolla, https://api.dwolla.com/funding-sources/… (Account → Funding sources)."
            ),
            check=_funding_source,
        ),
        ConfigField(
            "fee_per_transfer",
            "Dwolla's fee per transfer (USD)",
            FieldKind.NUMBER,
            required=False,
            minimum=0,
            maximum=100,
            help=(
                "What the school's Dwolla plan charges for each transfer, for choosing the "
                "cheapest gateway. Leave empty for Pay-As-You-Go (0.5 %, 5¢ to $5)."
            ),
        ),
        ConfigField(
            "webhook_secret",
            "Webhook secret",
            FieldKind.SECRET,
            required=False,
            help=(
                "The secret given when Switchboard's webhook address was subscribed in Dwolla. "
                "While replacing it, give the new and the old one separated by a space."
            ),
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use Dwolla's own address for the environment.",
        ),
    ),
    auth=AuthKind.OAUTH2_CLIENT_CREDENTIALS,
    capabilities=frozenset({PAYMENTS}),
    # The root answers with the account's links: a cheap call that needs a valid token.
    health=ROOT,
    base_url=_base_url,
    factory=_dwolla,
    policy=ResiliencePolicy(timeout=30.0),
    headers=_headers,
    webhook=WebhookSpec("dwolla", "webhook_secret"),
)
