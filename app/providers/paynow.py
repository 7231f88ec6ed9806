"""Paynow (Zimbabwe): EcoCash and OneMoney payments pushed to the payer's phone (express
checkout), and payment links to Paynow's own page, over Paynow's form-posting interface.

Every message either way is a url-encoded form whose `hash` field is the upper-case hex
SHA-512 of the other values, in order, followed by the integration key. Nothing Paynow answers
is believed until its hash checks out: an answer with a wrong hash is a lost answer (the
outcome is unknown), never a payment.

A mobile charge is one POST to /interface/remotetransaction: Paynow pushes a prompt to the
payer's phone and answers at once with a poll URL, so a charge is PROCESSING until the payer
approves or cancels on the phone. Paynow then posts a status update to the result URL
(Switchboard's receiver, handled by app/services/paynow_events.py), and the poll URL says the
same when asked (`sync`). The poll URL is the attempt's gateway id (about 90 characters).

Initiating is not idempotent, so it is never repeated. Every initiation carries a merchant
trace derived from our attempt's reference, and a lost answer is recovered by asking
/interface/trace for it: Paynow answers the transaction's status, or NotFound when it never
made one. A trace error says nothing either way, so the outcome stays unknown. NotFound is
believed only once the attempt is a few minutes old (`TRACE_SETTLE_SECONDS`): just after a lost
initiation the trace may have overtaken the initiation itself, which Paynow may still make.

Paynow has no API for refunds, balances or settlements: those stay in the Paynow merchant
dashboard, and the methods for them raise `Unsupported` saying so.

Relied on: Paynow's developer docs (github.com/paynow/docs, docs/: initiate_transaction.md,
intiate_mobile_transaction.md, express_checkout_transactions.md, generating_hash.md,
validating_hash.md, polling_status.md "Using Merchant Trace", status_update.md "Statuses",
test_mode.md, generation.md), and Paynow's own SDKs for what the docs leave open: the hash uses
the integration key in lower case, and an answer with status=Error carries no hash
(paynow/Paynow-Python-SDK paynow/model.py, paynow/Paynow-PHP-SDK src/Payments/Paynow.php,
paynow/Paynow-NodeJS-SDK src/paynow.ts).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from app.domain.money import Money
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
)
from app.providers.base import HealthResult, Provider
from app.providers.gateway import PAYMENTS, Feature, LinkRequest, PaymentLink, Unsupported, failed
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

# The webhook module's hash is Paynow's; one implementation for both directions.
from app.providers.webhooks import paynow_hash

API_URL = "https://www.paynow.co.zw"
FORM = "application/x-www-form-urlencoded"

# Neither initiation is idempotent: repeating one could push a second prompt to the payer.
INITIATE = Operation("initiate-transaction", "POST", "/interface/initiatetransaction")
REMOTE = Operation("remote-transaction", "POST", "/interface/remotetransaction")
# Asking changes nothing at Paynow: safe to repeat.
TRACE = Operation("trace", "POST", "/interface/trace", idempotent=True, timeout=15.0)

MOBILE_METHODS = frozenset({"ecocash", "onemoney"})
CURRENCIES = ("USD", "ZWG")  # a Paynow integration takes one currency: chosen per connection
MERCHANT_TRACE_LENGTH = 32  # Paynow's limit ("up to 32 characters, unique per merchant")
HEALTH_TRACE = "switchboard-health-check"
# A trace answering NotFound sooner than this after the attempt began may have raced the
# initiation (still on its way, or still being made, the prompt yet to reach the phone): unknown
# until then.
TRACE_SETTLE_SECONDS = 5 * 60

# Paynow's statuses (status_update.md), lower-cased.
PAID = frozenset({"paid", "awaiting delivery", "delivered"})
WAITING = frozenset({"created", "sent"})
# "Failed" is not in the docs' list, but test mode sends it for a payer who cancels.
NOT_APPROVED = frozenset({"cancelled", "failed"})
REFUNDED = "refunded"

# Words in Paynow's `error` text (status=Error) that are about the payer, not our request.
SHORT_OF_MONEY = ("insufficient",)  # test_mode.md: "Insufficient balance"
WRONG_NUMBER = ("phone", "msisdn", "mobile number", "subscriber", "not registered")

ZIMBABWE_MOBILE = re.compile(r"07\d{8}")

DASHBOARD = "in the Paynow merchant dashboard (www.paynow.co.zw)"


class Paynow(Provider):
    methods = frozenset({"ecocash", "onemoney", "card", "paynow"})  # the last two: links only
    currencies = frozenset(CURRENCIES)
    countries = frozenset({"ZW"})
    features = frozenset({Feature.LINKS})
    fees = FeeSchedule()

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self.currencies = frozenset({str(config.get("currency") or "USD")})
        percent = config.get("fee_percent")
        if percent is not None:
            self.fees = FeeSchedule((FeeRule(Decimal(str(percent))),))
        # Paynow hashes with the key as it issues it, in lower case (its SDKs lower-case it).
        self._key = self.secrets.get("integration_key", "").strip().lower()

    # --- charging ---------------------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """An express checkout: the payer approves the payment on their phone."""
        refused = self._cannot_charge(request)
        if refused is not None:
            return ChargeResult(ChargeStatus.FAILED, "", refused)
        form = self._transaction_form(
            request.reference,
            request.amount,
            request.description,
            email=str(self.config.get("auth_email") or ""),
            return_url=str(self.config.get("return_url") or self.config.get("result_url")),
        )
        form.update(phone=mobile_number(request.token), method=request.method)
        try:
            response = await self.call(REMOTE, data=self._signed(form))
        except ProviderError as error:
            return failed(error)
        return self._initiated(response)

    async def create_link(self, request: LinkRequest) -> PaymentLink:
        """A page on Paynow where the payer picks how to pay (EcoCash, OneMoney, cards...)."""
        self._check_currency(request.amount)
        return_url = request.return_url or str(self.config.get("return_url") or "")
        if not self.config.get("result_url") or not return_url:
            raise Unsupported(
                f"{self.spec.name} needs its result URL and a return page before it can make "
                "payment links; set them in the connection's settings."
            )
        form = self._transaction_form(
            request.reference,
            request.amount,
            request.description,
            email=request.payer_email,
            return_url=return_url,
        )
        response = await self.call(INITIATE, data=self._signed(form))
        fields = self._answer(response)
        if _status(fields) != "ok":
            raise ProviderError(_refusal(fields).message, status=response.status_code)
        if not self._genuine(fields) or not fields.get("browserurl") or not fields.get("pollurl"):
            raise ProviderError(
                "Paynow's answer could not be verified (its hash does not match), so the link "
                "was not used. Check the integration key; if it is right, try again later."
            )
        return PaymentLink(url=fields["browserurl"], gateway_id=fields["pollurl"])

    async def sync(self, request: ChargeRequest, gateway_id: str = "") -> ChargeResult:
        """The payment's status: from its poll URL, or without one, traced by our reference."""
        try:
            if gateway_id:
                return await self._poll(request, gateway_id)
            return await self._trace(request)
        except ProviderError as error:
            return ChargeResult(ChargeStatus.FAILED, gateway_id, _unknown(error.error_class, error))

    # --- what Paynow has no API for ---------------------------------------------------------

    async def refund(self, gateway_id: str, amount: Money, reference: str) -> RefundResult:
        raise Unsupported(
            f"Paynow does not let Switchboard make refunds: refund {amount} to the payer "
            f"{DASHBOARD}."
        )

    async def refund_status(self, refund_id: str, amount: Money) -> RefundResult:
        raise Unsupported(f"Paynow has no refunds Switchboard can look up: see them {DASHBOARD}.")

    async def balance_entries(self, limit: int = 100, after: str = "") -> list[BalanceEntry]:
        raise Unsupported(f"Paynow does not share its ledger with Switchboard: see it {DASHBOARD}.")

    async def payouts(self, limit: int = 100, after: str = "") -> list[Payout]:
        raise Unsupported(
            f"Paynow does not share its settlements with Switchboard: see them {DASHBOARD}."
        )

    async def ledger(self, since: datetime, until: datetime) -> GatewayLedger:
        raise Unsupported(
            "Paynow has no API for its settlements: download the period's transactions as a "
            f"CSV file {DASHBOARD} and import it on the Reconciliation page."
        )

    # --- health -----------------------------------------------------------------------------

    async def check_health(self) -> HealthResult:
        """Paynow has no ping. A trace of a made-up merchant trace is the least bad check: it
        changes nothing, and a genuine NotFound proves both the integration ID and the key
        (its hash is made with our key). It cannot say whether EcoCash itself is up."""
        form = self._signed(
            {"id": self._integration_id(), "merchanttrace": HEALTH_TRACE, "status": "Message"}
        )
        started = time.monotonic()
        try:
            response = await self.call(TRACE, data=form)
        except ProviderError as error:
            elapsed = (time.monotonic() - started) * 1000
            return HealthResult(False, elapsed, str(error), error.error_class)
        elapsed = (time.monotonic() - started) * 1000
        fields = self._answer(response)
        if response.status_code >= 400:
            return HealthResult(
                False, elapsed, f"Paynow answered HTTP {response.status_code}.", "http_4xx"
            )
        if _status(fields) == "error":
            reason = fields.get("error") or "no reason given"
            return HealthResult(
                False, elapsed, f"Paynow refused the check: {reason}.", "paynow_error"
            )
        if not self._genuine(fields):
            return HealthResult(
                False,
                elapsed,
                "Paynow answered, but not with this integration key: copy the key again from "
                "Paynow (it is e-mailed to the company address).",
                "auth",
            )
        return HealthResult(True, elapsed, f"Paynow answered in {elapsed:.0f} ms.")

    # --- pieces -----------------------------------------------------------------------------

    def _cannot_charge(self, request: ChargeRequest) -> Failure | None:
        """Why this charge cannot be sent at all (nothing reaches Paynow), or None."""
        if request.method not in MOBILE_METHODS:
            return Failure(
                FailureKind.TECHNICAL,
                "unsupported_method",
                f"Paynow can only charge EcoCash or OneMoney directly, not {request.method}; "
                "send the payer a payment link instead.",
            )
        if request.amount.currency not in self.currencies:
            return Failure(
                FailureKind.TECHNICAL,
                "unsupported_currency",
                f"This Paynow connection takes {_only(self.currencies)}, not "
                f"{request.amount.currency}.",
            )
        if not self.config.get("auth_email") or not self.config.get("result_url"):
            return Failure(
                FailureKind.TECHNICAL,
                "not_configured",
                f"{self.spec.name} needs the merchant e-mail and the result URL in its "
                "settings before it can take mobile payments.",
            )
        if not ZIMBABWE_MOBILE.fullmatch(mobile_number(request.token)):
            return Failure(
                FailureKind.HARD_DECLINE,
                "invalid_phone",
                f"{request.token!r} is not a Zimbabwean mobile number (like 0771 234 567); "
                "correct the payer's saved number.",
            )
        return None

    def _check_currency(self, amount: Money) -> None:
        if amount.currency not in self.currencies:
            raise Unsupported(
                f"This Paynow connection takes {_only(self.currencies)}, not {amount.currency}; "
                f"use a Paynow connection set up for {amount.currency}."
            )

    def _transaction_form(
        self, reference: str, amount: Money, description: str, *, email: str, return_url: str
    ) -> dict[str, str]:
        """The fields of an initiation, in the order the docs list them (the hash's order)."""
        form = {
            "id": self._integration_id(),
            "reference": reference,
            "amount": f"{amount.amount:.2f}",
            "additionalinfo": description,
            "returnurl": return_url,
            "resulturl": str(self.config.get("result_url") or ""),
        }
        if email:
            form["authemail"] = email
        form["merchanttrace"] = merchant_trace(reference)
        form["status"] = "Message"
        return form

    def _signed(self, form: Mapping[str, str]) -> dict[str, str]:
        return {**form, "hash": paynow_hash(list(form.values()), self._key)}

    def _genuine(self, fields: Mapping[str, str]) -> bool:
        """Whether an answer's hash is Paynow's, made with our integration key."""
        given = fields.get("hash", "")
        values = [value for name, value in fields.items() if name != "hash"]
        expected = paynow_hash(values, self._key)
        # Bytes: compare_digest refuses str with anything but ASCII, which an answer may hold.
        return bool(given) and hmac.compare_digest(
            expected.encode(), given.strip().upper().encode("utf-8", "surrogatepass")
        )

    def _answer(self, response: httpx.Response) -> dict[str, str]:
        """Paynow's url-encoded answer, names lower-cased (its examples write "Status=Ok"), in
        the order sent."""
        try:
            pairs = parse_qsl(response.text, keep_blank_values=True, max_num_fields=200)
        except ValueError:
            return {}
        answer: dict[str, str] = {}
        for name, value in pairs:
            answer.setdefault(name.strip().lower(), value)
        return answer

    def _initiated(self, response: httpx.Response) -> ChargeResult:
        fields = self._answer(response)
        if response.status_code >= 400:
            return ChargeResult(
                ChargeStatus.FAILED,
                "",
                Failure(
                    FailureKind.TECHNICAL,
                    f"http_{response.status_code}",
                    f"Paynow refused the request (HTTP {response.status_code}).",
                ),
            )
        status = _status(fields)
        if status == "error":
            return ChargeResult(ChargeStatus.FAILED, "", _refusal(fields))
        if status != "ok" or not self._genuine(fields) or not fields.get("pollurl"):
            # Something answered, but not believably Paynow: the prompt may have gone to the
            # payer, so this is found out by trace, never assumed.
            return ChargeResult(
                ChargeStatus.FAILED,
                "",
                _unknown(
                    "hash_mismatch",
                    "Paynow's answer could not be verified, so whether the payer was asked "
                    "to pay is not known yet.",
                ),
            )
        return ChargeResult(ChargeStatus.PROCESSING, fields["pollurl"])

    async def _poll(self, request: ChargeRequest, poll_url: str) -> ChargeResult:
        path = self._own_path(poll_url)
        if path is None:
            return ChargeResult(
                ChargeStatus.FAILED,
                poll_url,
                _unknown("foreign_poll_url", "The payment's poll address is not Paynow's."),
            )
        # An empty POST (polling_status.md); the poll URL is the payment's own address.
        poll = Operation("poll", "POST", path, idempotent=True, timeout=15.0)
        response = await self.call(poll, content=b"", headers={"Content-Type": FORM})
        return self._status_result(request, self._answer(response), poll_url)

    async def _trace(self, request: ChargeRequest) -> ChargeResult:
        form = self._signed(
            {
                "id": self._integration_id(),
                "merchanttrace": merchant_trace(request.reference),
                "status": "Message",
            }
        )
        response = await self.call(TRACE, data=form)
        fields = self._answer(response)
        if _status(fields) == "notfound" and self._genuine(fields):
            if time.time() - request.created_at < TRACE_SETTLE_SECONDS:
                return ChargeResult(
                    ChargeStatus.FAILED,
                    "",
                    _unknown(
                        "not_found_yet",
                        "Paynow has no payment with this reference yet, but it was asked for "
                        "only minutes ago and may still be on its way; it will be traced again.",
                    ),
                )
            return ChargeResult(ChargeStatus.NOT_FOUND)
        return self._status_result(request, fields, "")

    def _status_result(
        self, request: ChargeRequest, fields: Mapping[str, str], poll_url: str
    ) -> ChargeResult:
        """A status message (poll, trace) as a result; only a genuine one says anything."""
        status = _status(fields)
        if status == "error" or not status:
            reason = fields.get("error") or "no readable answer"
            return ChargeResult(
                ChargeStatus.FAILED,
                poll_url,
                _unknown("status_error", f"Paynow could not say ({reason})."),
            )
        if not self._genuine(fields):
            return ChargeResult(
                ChargeStatus.FAILED,
                poll_url,
                _unknown(
                    "hash_mismatch",
                    "Paynow's status answer could not be verified, so it was not believed.",
                ),
            )
        return status_result(fields, request.amount, poll_url)

    def _own_path(self, url: str) -> str | None:
        """The poll URL's path on the connection's Paynow address, or None when it points
        anywhere else (Switchboard never posts to an address it was merely told about)."""
        ours, theirs = urlsplit(self.spec.base_url(self.config)), urlsplit(url)
        if (theirs.scheme, theirs.netloc.lower()) != (ours.scheme, ours.netloc.lower()):
            return None
        return theirs.path + (f"?{theirs.query}" if theirs.query else "")

    def _integration_id(self) -> str:
        return str(self.config.get("integration_id") or "")


# --- shared with the status-update handler ----------------------------------------------------


def status_result(
    fields: Mapping[str, str], amount: Money | None, poll_url: str = ""
) -> ChargeResult:
    """What a genuine Paynow status message (a poll answer, a trace, a status update) says
    about a payment of `amount` (None: not checked). Unknown statuses are waiting, never
    paid."""
    status = _status(fields)
    gateway_id = fields.get("pollurl") or poll_url
    if status in PAID:
        said = fields.get("amount", "").strip()
        paid = _decimal(said)
        # An amount Paynow gives must be ours; one that is not a number is not ours either.
        if amount is not None and said and (paid is None or paid != amount.amount):
            return ChargeResult(
                ChargeStatus.FAILED,
                gateway_id,
                _unknown(
                    "amount_mismatch",
                    f"Paynow says {said} was paid, not {amount}; check this payment {DASHBOARD}.",
                ),
            )
        return ChargeResult(ChargeStatus.SUCCEEDED, gateway_id)
    if status in NOT_APPROVED:
        return ChargeResult(ChargeStatus.FAILED, gateway_id, not_approved(status))
    if status == REFUNDED:
        return ChargeResult(
            ChargeStatus.FAILED,
            gateway_id,
            Failure(
                FailureKind.HARD_DECLINE,
                "refunded",
                f"Paynow says this payment was refunded to the payer {DASHBOARD}.",
            ),
        )
    # Created, Sent (waiting for the payer), Disputed (the money is held until the dispute is
    # settled) and anything Paynow adds later: not paid yet.
    return ChargeResult(ChargeStatus.PROCESSING, gateway_id)


def not_approved(status: str) -> Failure:
    """The payer did not approve the prompt, or it expired unanswered; Paynow does not say
    which. A soft decline: the same payer may well approve a later prompt, but it is not
    tried at another gateway, which would only ask the same phone again."""
    return Failure(
        FailureKind.SOFT_DECLINE,
        status,
        "The payer did not approve the payment on their phone (cancelled, or the prompt "
        "expired). Ask them to keep their phone at hand and try again.",
    )


def merchant_trace(reference: str) -> str:
    """The merchant trace of an attempt: at most 32 characters, derived from our reference
    (which is longer), so the attempt can be traced after a lost answer."""
    return hashlib.sha256(reference.encode("utf-8")).hexdigest()[:MERCHANT_TRACE_LENGTH]


def mobile_number(token: str) -> str:
    """A saved EcoCash/OneMoney number as Paynow takes it: 07XXXXXXXX (test_mode.md)."""
    digits = re.sub(r"[\s\-().]", "", token)
    for prefix in ("+263", "00263", "263"):
        if digits.startswith(prefix):
            return "0" + digits[len(prefix) :]
    return digits


def _refusal(fields: Mapping[str, str]) -> Failure:
    """Paynow's status=Error answer to an initiation. Nothing was started at Paynow."""
    error = fields.get("error") or "no reason given"
    text = error.lower()
    if any(word in text for word in SHORT_OF_MONEY):
        return Failure(
            FailureKind.SOFT_DECLINE,
            "insufficient_balance",
            f"The payer's wallet does not have enough money (Paynow: {error}). Ask them to "
            "top up, then try again.",
        )
    if any(word in text for word in WRONG_NUMBER):
        return Failure(
            FailureKind.HARD_DECLINE,
            "invalid_phone",
            f"Paynow cannot charge this number (Paynow: {error}); check the payer's saved number.",
        )
    # About our request or the integration (amount, ID, methods not enabled): nothing about
    # the payer, so another gateway may be tried.
    return Failure(FailureKind.TECHNICAL, "paynow_error", f"Paynow refused the request: {error}.")


def _unknown(code: str, error: ProviderError | str) -> Failure:
    return Failure(FailureKind.UNKNOWN, code, str(error))


def _status(fields: Mapping[str, str]) -> str:
    return fields.get("status", "").strip().lower()


def _decimal(text: str) -> Decimal | None:
    """An amount Paynow wrote; None when it is not a finite number (NaN, sNaN, Infinity: an
    sNaN would raise on comparison)."""
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _only(currencies: frozenset[str]) -> str:
    return " or ".join(sorted(currencies)) + " only"


def _paynow(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return Paynow(spec, client, config, secrets)


def _integration_id(value: str) -> None:
    if not value.isdigit():
        raise ValueError(
            "A Paynow integration ID is a number, shown with the integration under "
            "Receive Payment Links → 3rd Party Site or Link Profile."
        )


def _email(value: str) -> None:
    if "@" not in value or value.startswith("@") or value.endswith("@"):
        raise ValueError("Write the e-mail address you sign in to Paynow with.")


PAYNOW = ProviderSpec(
    key="paynow",
    name="Paynow",
    category=Category.PAYMENTS,
    description=(
        "EcoCash and OneMoney payments in Zimbabwe through Paynow, pushed to the payer's phone, "
        "and payment links to Paynow's page. One connection per integration and currency."
    ),
    fields=(
        ConfigField(
            "integration_id",
            "Integration ID",
            help="The number shown with the integration in Paynow (Receive Payment Links → "
            "3rd Party Site or Link Profile).",
            check=_integration_id,
        ),
        ConfigField(
            "integration_key",
            "Integration key",
            FieldKind.SECRET,
            help="Paynow e-mails it to the company address ('Email Key To Company Address'). "
            "It also checks the status updates Paynow sends.",
        ),
        ConfigField(
            "currency",
            "Currency",
            FieldKind.SELECT,
            required=False,
            default="USD",
            choices=CURRENCIES,
            help="The currency this integration takes; a second currency needs a second "
            "integration and connection.",
        ),
        ConfigField(
            "auth_email",
            "Merchant e-mail",
            required=False,
            help="The e-mail address you sign in to Paynow with. Paynow requires it for EcoCash "
            "and OneMoney payments (in test mode it must be the merchant's own).",
            check=_email,
        ),
        ConfigField(
            "result_url",
            "Result URL",
            FieldKind.URL,
            required=False,
            help="Where Paynow sends status updates: Switchboard's address for this connection. "
            "After saving the connection, paste here the address `switchboard webhook-url "
            "<connection>` shows. Until it is set, this "
            "connection takes no payments.",
        ),
        ConfigField(
            "return_url",
            "Return page",
            FieldKind.URL,
            required=False,
            help="Where Paynow sends the payer after paying by link, e.g. the school's website.",
        ),
        ConfigField(
            "fee_percent",
            "Paynow fee (%)",
            FieldKind.NUMBER,
            required=False,
            minimum=0,
            maximum=20,
            help="The percentage Paynow keeps, from your Paynow agreement; used to choose the "
            "cheapest gateway. Leave empty if Paynow's fees are passed on to payers.",
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use Paynow's own address.",
        ),
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset({PAYMENTS}),
    health=TRACE,
    base_url=lambda config: str(config.get("api_url") or API_URL),
    factory=_paynow,
    # Paynow pushes the prompt before it answers an initiation; give it time.
    policy=ResiliencePolicy(timeout=30.0),
    health_interval=300.0,
    webhook=WebhookSpec("paynow", "integration_key", content_type=FORM),
)
