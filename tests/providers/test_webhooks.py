"""Webhook verifiers: what each provider's genuine request looks like, what is refused and for
which reason (400 "malformed" or 401 "signature"), agreement with the providers' own SDKs and
published test vectors, and that no request, however odd, makes a verifier raise anything but
Rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

import pytest
import stripe
from hypothesis import event, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook as StandardWebhook
from twilio.request_validator import RequestValidator

from app.providers.webhooks import (
    DEFAULT_TOLERANCE_SECONDS,
    VERIFIERS,
    Rejected,
    StandardWebhooksVerifier,
    StripeVerifier,
    Verified,
    WebhookRequest,
    paynow_signed_body,
    twilio_body_url,
)

NOW = 1_700_000_000
URL = "https://switchboard.example.org/webhooks/7"


def arrived(
    headers: Mapping[str, str], body: bytes = b"", *, url: str = URL, at: float = NOW
) -> WebhookRequest:
    """A request as the receiver hands it over: header names lower-cased."""
    return WebhookRequest(url, {name.lower(): value for name, value in headers.items()}, body, at)


def without(request: WebhookRequest, *names: str) -> WebhookRequest:
    return replace(
        request, headers={k: v for k, v in request.headers.items() if k not in set(names)}
    )


def with_headers(request: WebhookRequest, **headers: str) -> WebhookRequest:
    changed = {name.replace("_", "-").lower(): value for name, value in headers.items()}
    return replace(request, headers={**request.headers, **changed})


def corrupt(text: str, position: int = -10) -> str:
    """`text` with one character changed to another of the hex and base64 alphabets."""
    old = text[position]
    new = "0" if old != "0" else "1"
    index = position % len(text)
    return text[:index] + new + text[index + 1 :]


def refusal(verifier_key: str, request: WebhookRequest, secrets: list[str]) -> Rejected:
    with pytest.raises(Rejected) as caught:
        VERIFIERS[verifier_key].verify(request, secrets)
    return caught.value


# --- one genuine request per provider ------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A provider's genuine request, signed by the verifier's own `sign`, and how to spoil it."""

    key: str
    secrets: tuple[str, str, str]  # the previous secret, the current one, and someone else's
    body: bytes
    event_id: str  # what `sign` is given; most providers carry the id in the body instead
    expected: Verified
    signature_header: str | None  # None: the signature is in the body (Paynow)
    body_change: tuple[bytes, bytes] | None  # one edit to the signed body; None: no body
    fields: Mapping[str, str] | None = None  # Paynow: the form, signed into the body
    timestamped: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)  # sent besides the signature

    def signed(
        self, secret: str | None = None, *, signed_at: int = NOW, at: float = NOW
    ) -> WebhookRequest:
        secret = self.secrets[0] if secret is None else secret
        body = self.body if self.fields is None else paynow_signed_body(self.fields, secret)
        headers = VERIFIERS[self.key].sign(
            secret, body, url=URL, timestamp=signed_at, event_id=self.event_id
        )
        return arrived({**self.headers, **headers}, body, at=at)

    def signature_of(self, request: WebhookRequest) -> str:
        if self.signature_header is not None:
            return request.headers[self.signature_header]
        return dict(parse_qsl(request.body.decode()))["hash"]

    def with_bad_signature(self, request: WebhookRequest) -> WebhookRequest:
        signature = self.signature_of(request)
        if self.signature_header is not None:
            return with_headers(request, **{self.signature_header: corrupt(signature)})
        body = request.body.replace(signature.encode(), corrupt(signature).encode())
        return replace(request, body=body)

    def without_signature(self, request: WebhookRequest) -> WebhookRequest:
        if self.signature_header is not None:
            return without(request, self.signature_header)
        fields = [(k, v) for k, v in parse_qsl(request.body.decode()) if k != "hash"]
        return replace(request, body=urlencode(fields).encode())


def whsec(raw: bytes) -> str:
    return "whsec_" + base64.b64encode(raw).decode()


def _p256_private() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return base64.b64encode(der).decode()


_SENDGRID_KEYS = [_p256_private() for _ in range(3)]
_SENDGRID_BODY = (
    b'[{"email": "parent@family.example", "event": "delivered", '
    b'"sg_message_id": "14c5d75ce93.filterdrecv-1", "sg_event_id": "ZGVsaXZlcmVk"}]'
)


CASES = [
    Case(
        key="stripe",
        secrets=("whsec_previous0123456789", "whsec_current0123456789", "whsec_someoneelse01234"),
        body=(
            b'{"id": "evt_1NirD82eZvKYlo2CIvbtLWuY", "object": "event", '
            b'"type": "payment_intent.succeeded", "data": {"object": {"amount": 2000}}}'
        ),
        event_id="",
        expected=Verified("evt_1NirD82eZvKYlo2CIvbtLWuY", "payment_intent.succeeded"),
        signature_header="stripe-signature",
        body_change=(b'"amount": 2000', b'"amount": 20000'),
        timestamped=True,
    ),
    Case(
        key="standard-webhooks",
        secrets=(
            whsec(b"previous-key-previous-key-012345"),
            whsec(b"current-key-current-key-01234567"),
            whsec(b"someone-elses-key-0123456789abcd"),
        ),
        body=b'{"type": "invoice.paid", "data": {"amount": 2000}}',
        event_id="msg_2Lh9KRb0pzN4LePd3XiA",
        expected=Verified("msg_2Lh9KRb0pzN4LePd3XiA", "invoice.paid"),
        signature_header="webhook-signature",
        body_change=(b'"amount": 2000', b'"amount": 20000'),
        timestamped=True,
    ),
    Case(
        key="twilio",
        secrets=(
            "previous-auth-token-0123",
            "current-auth-token-01234",
            "someone-elses-token-0123",
        ),
        body=urlencode(
            [
                ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
                ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
                ("MessageStatus", "delivered"),
                ("To", "+15005550006"),
                ("Body", "Trip on Friday"),
            ]
        ).encode(),
        event_id="",
        expected=Verified("SM0123456789abcdef0123456789abcdef:delivered", "message.delivered"),
        signature_header="x-twilio-signature",
        body_change=(b"Friday", b"Monday"),
    ),
    Case(
        key="hub-signature-256",
        secrets=("previous-hub-secret-012", "current-hub-secret-0123", "someone-elses-secret-01"),
        body=b'{"action": "opened", "number": 1}',
        event_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
        expected=Verified("72d3162e-cc78-11e3-81ab-4c9367dc0958", "pull_request"),
        signature_header="x-hub-signature-256",
        body_change=(b'"number": 1', b'"number": 2'),
        headers={"X-GitHub-Event": "pull_request"},
    ),
    Case(
        key="dwolla",
        secrets=("previous-dwolla-secret", "current-dwolla-secret-", "someone-elses-secret-0"),
        body=(
            b'{"id": "80d8ff7d-7e5a-4975-ade8-9e97306d6c15", '
            b'"resourceId": "36E9DCB2-889B-4873-8E52-0C9404EA002A", '
            b'"topic": "customer_transfer_completed", "timestamp": "2015-10-22T14:44:11.407Z"}'
        ),
        event_id="",
        expected=Verified("80d8ff7d-7e5a-4975-ade8-9e97306d6c15", "customer_transfer_completed"),
        signature_header="x-request-signature-sha-256",
        body_change=(b"customer_transfer_completed", b"customer_transfer_cancelled"),
    ),
    Case(
        key="google-channel",
        secrets=("previous-channel-token", "current-channel-token-", "someone-elses-token-00"),
        body=b"",
        event_id="01234567-89ab-cdef-0123456789ab:7",
        expected=Verified("01234567-89ab-cdef-0123456789ab:7", "exists"),
        signature_header="x-goog-channel-token",
        body_change=None,
    ),
    Case(
        key="paynow",
        secrets=(
            "3e9fed89-60e1-4ce5-ab6e-6b1eb2d4f977",
            "5a1c2e44-0b7d-4f3a-9c8e-2d6f1b3a7e90",
            "00000000-1111-2222-3333-444444444444",
        ),
        body=b"",
        event_id="",
        expected=Verified("9510:paid", "payment.paid"),
        signature_header=None,
        body_change=(b"amount=25.00", b"amount=2.50"),
        fields={
            "reference": "INV-2024-0042",
            "amount": "25.00",
            "paynowreference": "9510",
            "pollurl": "https://www.paynow.co.zw/Interface/CheckPayment/?guid=c7ed41da",
            "status": "Paid",
        },
    ),
    Case(
        key="paysafe",
        secrets=("previous-hmac-key-0123", "current-hmac-key-01234", "someone-elses-key-0123"),
        body=(
            b'{"resourceId": "b8b2b5a1-9a55-4a0e-9d1f-4b1e3a1f0c42", '
            b'"eventName": "PAYMENT_COMPLETED", "attemptNumber": 1, "amount": 2000}'
        ),
        event_id="",
        expected=Verified(
            "b8b2b5a1-9a55-4a0e-9d1f-4b1e3a1f0c42:PAYMENT_COMPLETED", "PAYMENT_COMPLETED"
        ),
        signature_header="signature",
        body_change=(b'"amount": 2000', b'"amount": 20000'),
    ),
    Case(
        key="sendgrid",
        # Private keys: verifying, a private key stands for its public one (SendGrid's
        # verification key); signing needs the private one.
        secrets=(_SENDGRID_KEYS[0], _SENDGRID_KEYS[1], _SENDGRID_KEYS[2]),
        body=_SENDGRID_BODY,
        event_id="",
        expected=Verified("sha256:" + hashlib.sha256(_SENDGRID_BODY).hexdigest(), "delivered"),
        signature_header="x-twilio-email-event-webhook-signature",
        body_change=(b'"delivered"', b'"bounce"'),
        timestamped=True,
    ),
]
BY_KEY = {case.key: case for case in CASES}
with_body = pytest.mark.parametrize(
    "case", [case for case in CASES if case.body_change], ids=lambda case: case.key
)
every = pytest.mark.parametrize("case", CASES, ids=lambda case: case.key)
timestamped = pytest.mark.parametrize(
    "case", [case for case in CASES if case.timestamped], ids=lambda case: case.key
)


# --- what every verifier does --------------------------------------------------------------------


def test_every_provider_has_a_verifier_under_its_key() -> None:
    assert set(VERIFIERS) == {case.key for case in CASES}
    assert all(verifier.key == key for key, verifier in VERIFIERS.items())
    assert DEFAULT_TOLERANCE_SECONDS == 300


@every
def test_a_genuine_request_is_verified_with_the_providers_event_id_and_type(case: Case) -> None:
    assert VERIFIERS[case.key].verify(case.signed(), [case.secrets[0]]) == case.expected


@every
def test_the_same_request_verified_twice_has_the_same_event_id_so_the_receiver_drops_the_repeat(
    case: Case,
) -> None:
    request = case.signed()
    first = VERIFIERS[case.key].verify(request, [case.secrets[0]])
    again = VERIFIERS[case.key].verify(request, [case.secrets[0]])
    assert first.event_id == again.event_id != ""


@with_body
def test_a_changed_body_is_refused_as_a_bad_signature(case: Case) -> None:
    request = case.signed()
    assert case.body_change is not None
    old, new = case.body_change
    assert old in request.body
    changed = replace(request, body=request.body.replace(old, new))
    assert refusal(case.key, changed, [case.secrets[0]]).reason == "signature"


@every
def test_a_changed_signature_is_refused(case: Case) -> None:
    request = case.with_bad_signature(case.signed())
    assert refusal(case.key, request, [case.secrets[0]]).reason == "signature"


@every
def test_a_request_without_its_signature_is_refused(case: Case) -> None:
    request = case.without_signature(case.signed())
    assert refusal(case.key, request, [case.secrets[0]]).reason == "signature"


@every
def test_while_a_secret_is_rotated_requests_signed_with_the_previous_one_are_accepted(
    case: Case,
) -> None:
    previous, current, _ = case.secrets
    verifier = VERIFIERS[case.key]
    assert verifier.verify(case.signed(previous), [current, previous]) == case.expected
    assert verifier.verify(case.signed(current), [current, previous]) == case.expected


@every
def test_a_request_signed_with_a_secret_not_configured_is_refused(case: Case) -> None:
    previous, current, strangers = case.secrets
    request = case.signed(strangers)
    assert refusal(case.key, request, [current, previous]).reason == "signature"


@every
def test_without_a_configured_secret_every_request_is_refused(case: Case) -> None:
    request = case.signed()
    assert refusal(case.key, request, []).reason == "signature"
    # An empty secret is a setup mistake, not a key (an empty token would match a missing one).
    assert refusal(case.key, request, [""]).reason == "signature"


@every
def test_a_refusal_never_quotes_the_secret_or_the_signature(case: Case) -> None:
    request = case.with_bad_signature(case.signed())
    for refused in (
        refusal(case.key, request, list(case.secrets[:2])),
        refusal(case.key, case.signed(case.secrets[2]), list(case.secrets[:2])),
    ):
        message = str(refused)
        assert not any(secret in message for secret in case.secrets)
        assert case.signature_of(request) not in message


@pytest.mark.parametrize(
    "case", [case for case in CASES if case.signature_header], ids=lambda case: case.key
)
def test_an_absurdly_long_signature_header_is_refused_without_reading_it(case: Case) -> None:
    request = case.signed()
    assert case.signature_header is not None
    huge = with_headers(request, **{case.signature_header: "0" * 100_000})
    assert refusal(case.key, huge, [case.secrets[0]]).reason == "malformed"


# --- timestamps ----------------------------------------------------------------------------------


@timestamped
def test_a_request_signed_longer_ago_than_the_tolerance_is_refused_as_a_possible_replay(
    case: Case,
) -> None:
    request = case.signed(signed_at=NOW - DEFAULT_TOLERANCE_SECONDS - 1)
    refused = refusal(case.key, request, [case.secrets[0]])
    assert refused.reason == "signature"
    assert "before it arrived" in str(refused)


@timestamped
def test_a_request_signed_further_ahead_than_the_tolerance_is_refused(case: Case) -> None:
    request = case.signed(signed_at=NOW + DEFAULT_TOLERANCE_SECONDS + 1)
    refused = refusal(case.key, request, [case.secrets[0]])
    assert refused.reason == "signature"
    assert "after it arrived" in str(refused)


@timestamped
def test_a_request_within_the_tolerance_either_way_is_accepted(case: Case) -> None:
    for signed_at in (NOW - DEFAULT_TOLERANCE_SECONDS, NOW + DEFAULT_TOLERANCE_SECONDS):
        assert VERIFIERS[case.key].verify(case.signed(signed_at=signed_at), [case.secrets[0]])


@pytest.mark.parametrize("make", [StripeVerifier, StandardWebhooksVerifier])
def test_each_verifier_takes_its_own_tolerance(
    make: type[StripeVerifier | StandardWebhooksVerifier],
) -> None:
    verifier = make(tolerance=60)
    case = BY_KEY[verifier.key]
    assert verifier.verify(case.signed(signed_at=NOW - 60), [case.secrets[0]])
    with pytest.raises(Rejected, match="60 s allowed"):
        verifier.verify(case.signed(signed_at=NOW - 61), [case.secrets[0]])


def test_an_arrival_time_that_is_not_a_number_passes_no_timestamp_check() -> None:
    case = BY_KEY["stripe"]
    request = case.signed(at=float("nan"))
    assert refusal("stripe", request, [case.secrets[0]]).reason == "signature"


# --- Stripe --------------------------------------------------------------------------------------

STRIPE = BY_KEY["stripe"]


def stripe_signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_stripe_accepts_any_of_the_v1_signatures_sent_while_a_secret_is_rolled() -> None:
    good = stripe_signature(STRIPE.secrets[0], NOW, STRIPE.body)
    bad = stripe_signature(STRIPE.secrets[2], NOW, STRIPE.body)
    header = f"t={NOW},v1={bad},v1={good}"
    request = arrived({"Stripe-Signature": header}, STRIPE.body)
    assert VERIFIERS["stripe"].verify(request, [STRIPE.secrets[0]]) == STRIPE.expected


def test_stripe_ignores_v0_and_unknown_schemes() -> None:
    good = stripe_signature(STRIPE.secrets[0], NOW, STRIPE.body)
    only_v0 = arrived({"Stripe-Signature": f"t={NOW},v0={good}"}, STRIPE.body)
    assert refusal("stripe", only_v0, [STRIPE.secrets[0]]).reason == "signature"
    mixed = arrived({"Stripe-Signature": f"t={NOW},v0=abc,v9=xyz,v1={good}"}, STRIPE.body)
    assert VERIFIERS["stripe"].verify(mixed, [STRIPE.secrets[0]]) == STRIPE.expected


@pytest.mark.parametrize(
    "header",
    ["v1=abcdef", "t=,v1=abcdef", "t=yesterday,v1=abcdef", "t=-5,v1=abcdef", "t=1²,v1=abcdef"],
)
def test_a_stripe_signature_without_a_readable_timestamp_is_malformed(header: str) -> None:
    request = arrived({"Stripe-Signature": header}, STRIPE.body)
    assert refusal("stripe", request, [STRIPE.secrets[0]]).reason == "malformed"


def test_a_stripe_signature_header_with_no_v1_entry_is_a_bad_signature() -> None:
    request = arrived({"Stripe-Signature": f"t={NOW}"}, STRIPE.body)
    assert refusal("stripe", request, [STRIPE.secrets[0]]).reason == "signature"


def test_a_stripe_signature_that_is_not_hex_is_a_bad_signature() -> None:
    request = arrived({"Stripe-Signature": f"t={NOW},v1=not-hex-ü"}, STRIPE.body)
    assert refusal("stripe", request, [STRIPE.secrets[0]]).reason == "signature"


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"type": "charge.succeeded"}', b'{"id": ""}', b"\xff\xfe"]
)
def test_a_signed_stripe_body_without_an_event_id_is_malformed(body: bytes) -> None:
    request = replace(STRIPE, body=body).signed()
    assert refusal("stripe", request, [STRIPE.secrets[0]]).reason == "malformed"


def test_the_stripe_sdk_verifies_what_we_sign() -> None:
    now = int(time.time())
    headers = VERIFIERS["stripe"].sign(
        STRIPE.secrets[0], STRIPE.body, url=URL, timestamp=now, event_id=""
    )
    assert stripe.WebhookSignature.verify_header(
        STRIPE.body, headers["Stripe-Signature"], STRIPE.secrets[0], DEFAULT_TOLERANCE_SECONDS
    )


def test_we_verify_what_the_stripe_sdk_signs() -> None:
    now = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(
        STRIPE.body.decode(), STRIPE.secrets[0], now
    )
    request = arrived({"Stripe-Signature": header}, STRIPE.body, at=now)
    assert VERIFIERS["stripe"].verify(request, [STRIPE.secrets[0]]) == STRIPE.expected


# --- Standard Webhooks ---------------------------------------------------------------------------

STANDARD = BY_KEY["standard-webhooks"]

# The specification's published vector, as its reference library tests it (repository
# standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py, test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_webhooks_signing_reproduces_the_specifications_test_vector() -> None:
    headers = VERIFIERS["standard-webhooks"].sign(
        VECTOR_SECRET, VECTOR_BODY, url=URL, timestamp=VECTOR_TIMESTAMP, event_id=VECTOR_ID
    )
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_standard_webhooks_verifies_the_specifications_test_vector() -> None:
    request = arrived(
        {
            "webhook-id": VECTOR_ID,
            "webhook-timestamp": str(VECTOR_TIMESTAMP),
            "webhook-signature": VECTOR_SIGNATURE,
        },
        VECTOR_BODY,
        at=VECTOR_TIMESTAMP,
    )
    assert VERIFIERS["standard-webhooks"].verify(request, [VECTOR_SECRET]) == Verified(
        VECTOR_ID, ""
    )


def test_the_standard_webhooks_library_verifies_what_we_sign() -> None:
    now = int(time.time())
    headers = VERIFIERS["standard-webhooks"].sign(
        STANDARD.secrets[0], STANDARD.body, url=URL, timestamp=now, event_id=STANDARD.event_id
    )
    assert StandardWebhook(STANDARD.secrets[0]).verify(STANDARD.body, headers) == json.loads(
        STANDARD.body
    )


def test_we_verify_what_the_standard_webhooks_library_signs() -> None:
    now = int(time.time())
    signature = StandardWebhook(STANDARD.secrets[0]).sign(
        STANDARD.event_id, datetime.fromtimestamp(now, tz=UTC), STANDARD.body.decode()
    )
    request = arrived(
        {
            "webhook-id": STANDARD.event_id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        },
        STANDARD.body,
        at=now,
    )
    assert (
        VERIFIERS["standard-webhooks"].verify(request, [STANDARD.secrets[0]]) == STANDARD.expected
    )


def test_svix_header_names_are_accepted_too() -> None:
    signed = STANDARD.signed()
    request = arrived(
        {name.replace("webhook-", "svix-"): value for name, value in signed.headers.items()},
        signed.body,
    )
    assert (
        VERIFIERS["standard-webhooks"].verify(request, [STANDARD.secrets[0]]) == STANDARD.expected
    )


def test_a_standard_webhooks_secret_without_its_whsec_prefix_is_the_same_key() -> None:
    bare = STANDARD.secrets[0].removeprefix("whsec_")
    assert VERIFIERS["standard-webhooks"].verify(STANDARD.signed(), [bare]) == STANDARD.expected


def test_standard_webhooks_ignores_signature_versions_other_than_v1() -> None:
    request = STANDARD.signed()
    _, signature = request.headers["webhook-signature"].split(",", 1)
    only_others = with_headers(request, webhook_signature=f"v1a,{signature} v2,{signature}")
    assert refusal("standard-webhooks", only_others, [STANDARD.secrets[0]]).reason == "signature"
    among_others = with_headers(
        request, webhook_signature=f"v1a,{signature} v1,bm9wZQ== v1,{signature}"
    )
    verified = VERIFIERS["standard-webhooks"].verify(among_others, [STANDARD.secrets[0]])
    assert verified == STANDARD.expected


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-id": ""},
        {"webhook-timestamp": ""},
        {"webhook-timestamp": "hello"},
        {"webhook-timestamp": "1700000000.5"},
    ],
)
def test_a_standard_webhook_without_a_readable_id_or_timestamp_is_malformed(
    change: dict[str, str],
) -> None:
    request = replace(STANDARD.signed(), headers={**STANDARD.signed().headers, **change})
    assert refusal("standard-webhooks", request, [STANDARD.secrets[0]]).reason == "malformed"


def test_a_standard_webhook_whose_body_names_no_type_has_an_empty_type() -> None:
    request = replace(STANDARD, body=b"plain text, not JSON").signed()
    verified = VERIFIERS["standard-webhooks"].verify(request, [STANDARD.secrets[0]])
    assert verified == Verified(STANDARD.event_id, "")


def test_a_standard_webhooks_secret_that_is_not_base64_verifies_nothing() -> None:
    refused = refusal("standard-webhooks", STANDARD.signed(), ["whsec_!!!"])
    assert refused.reason == "signature"


# --- Twilio --------------------------------------------------------------------------------------

TWILIO = BY_KEY["twilio"]
TOKEN = TWILIO.secrets[0]
STATUS_PARAMS = {
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "MessageStatus": "delivered",
    "Body": "Café at 10 & bring 2+2 “quotes”",
}


def test_we_verify_a_form_callback_the_twilio_sdk_signs() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, STATUS_PARAMS)
    request = arrived({"X-Twilio-Signature": signature}, urlencode(STATUS_PARAMS).encode())
    verified = VERIFIERS["twilio"].verify(request, [TOKEN])
    assert verified == Verified("SM0123456789abcdef0123456789abcdef:delivered", "message.delivered")


def test_the_twilio_sdk_validates_a_form_callback_we_sign() -> None:
    headers = VERIFIERS["twilio"].sign(
        TOKEN, urlencode(STATUS_PARAMS).encode(), url=URL, timestamp=NOW, event_id=""
    )
    assert RequestValidator(TOKEN).validate(URL, STATUS_PARAMS, headers["X-Twilio-Signature"])


def test_we_verify_a_json_callback_the_twilio_sdk_signs() -> None:
    body = b'{"CallSid": "CA0123456789abcdef0123456789abcdef", "CallStatus": "completed"}'
    url = URL + "?bodySHA256=" + hashlib.sha256(body).hexdigest()
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    request = arrived({"X-Twilio-Signature": signature}, body, url=url)
    verified = VERIFIERS["twilio"].verify(request, [TOKEN])
    assert verified == Verified("CA0123456789abcdef0123456789abcdef:completed", "call.completed")


def test_the_twilio_sdk_validates_a_json_callback_we_sign() -> None:
    body = b'{"CallSid": "CA0123456789abcdef0123456789abcdef", "CallStatus": "completed"}'
    url = twilio_body_url(URL, body)
    headers = VERIFIERS["twilio"].sign(TOKEN, body, url=url, timestamp=NOW, event_id="")
    assert RequestValidator(TOKEN).validate(url, body.decode(), headers["X-Twilio-Signature"])


def test_a_json_twilio_body_that_does_not_hash_to_the_urls_bodysha256_is_refused() -> None:
    body = b'{"CallSid": "CA1", "CallStatus": "completed"}'
    url = twilio_body_url(URL, body)
    headers = VERIFIERS["twilio"].sign(TOKEN, body, url=url, timestamp=NOW, event_id="")
    changed = arrived(headers, body.replace(b"completed", b"failed"), url=url)
    refused = refusal("twilio", changed, [TOKEN])
    assert refused.reason == "signature"
    assert "bodySHA256" in str(refused)


def test_a_signed_json_twilio_body_that_is_not_json_is_malformed() -> None:
    body = b"CallSid=CA1&CallStatus=completed"
    url = twilio_body_url(URL, body)
    headers = VERIFIERS["twilio"].sign(TOKEN, body, url=url, timestamp=NOW, event_id="")
    assert refusal("twilio", arrived(headers, body, url=url), [TOKEN]).reason == "malformed"


@pytest.mark.parametrize(
    ("signed_url", "called_url"),
    [
        (
            "https://switchboard.example.org/hook?a=1",
            "https://switchboard.example.org:443/hook?a=1",
        ),
        (
            "https://switchboard.example.org:443/hook?a=1",
            "https://switchboard.example.org/hook?a=1",
        ),
        ("http://switchboard.example.org/hook", "http://switchboard.example.org:80/hook"),
    ],
)
def test_twilio_signatures_are_checked_with_and_without_the_default_port_as_the_sdk_does(
    signed_url: str, called_url: str
) -> None:
    body = urlencode(STATUS_PARAMS).encode()
    signature = RequestValidator(TOKEN).compute_signature(signed_url, STATUS_PARAMS)
    request = arrived({"X-Twilio-Signature": signature}, body, url=called_url)
    assert VERIFIERS["twilio"].verify(request, [TOKEN])
    assert RequestValidator(TOKEN).validate(called_url, STATUS_PARAMS, signature)


@pytest.mark.parametrize(
    "called_url",
    [URL.replace("/7", "/8"), URL.replace("switchboard.", "elsewhere."), URL + "?extra=1"],
)
def test_a_twilio_signature_made_for_another_url_is_refused(called_url: str) -> None:
    body = urlencode(STATUS_PARAMS).encode()
    signature = RequestValidator(TOKEN).compute_signature(URL, STATUS_PARAMS)
    request = arrived({"X-Twilio-Signature": signature}, body, url=called_url)
    assert refusal("twilio", request, [TOKEN]).reason == "signature"


def test_a_twilio_callback_signed_with_a_shared_key_and_hmac_sha256_is_verified() -> None:
    # twilio.com/docs/usage/webhooks/webhook-shared-keys; the SDK reads the algorithm from
    # X-Twilio-Webhooks-Signature-Settings.
    signature = RequestValidator(TOKEN).compute_signature(URL, STATUS_PARAMS, "HMAC_SHA256")
    settings_header = "key=webhooks_sharedkey_0123,algorithm=HMAC_SHA256"
    request = arrived(
        {"X-Twilio-Signature": signature, "X-Twilio-Webhooks-Signature-Settings": settings_header},
        urlencode(STATUS_PARAMS).encode(),
    )
    assert VERIFIERS["twilio"].verify(request, [TOKEN])
    unknown = with_headers(request, x_twilio_webhooks_signature_settings="algorithm=HMAC_MD5")
    assert refusal("twilio", unknown, [TOKEN]).reason == "signature"


def test_each_status_of_one_twilio_call_is_its_own_event() -> None:
    ids = []
    for status in ("ringing", "in-progress", "completed"):
        params = {"CallSid": "CA0123456789abcdef0123456789abcdef", "CallStatus": status}
        signature = RequestValidator(TOKEN).compute_signature(URL, params)
        request = arrived({"X-Twilio-Signature": signature}, urlencode(params).encode())
        verified = VERIFIERS["twilio"].verify(request, [TOKEN])
        assert verified.event_type == f"call.{status}"
        ids.append(verified.event_id)
    assert len(set(ids)) == 3


def test_an_inbound_twilio_sms_is_identified_by_its_sms_status() -> None:
    params = {"SmsSid": "SM99", "SmsStatus": "received", "Body": "STOP"}
    signature = RequestValidator(TOKEN).compute_signature(URL, params)
    request = arrived({"X-Twilio-Signature": signature}, urlencode(params).encode())
    assert VERIFIERS["twilio"].verify(request, [TOKEN]) == Verified(
        "SM99:received", "message.received"
    )


def test_a_twilio_callback_without_a_status_is_identified_by_its_body() -> None:
    # Recording callbacks share the call's sid and carry no CallStatus: the sid alone would
    # make the second recording look like a repeat of the first.
    params = {"CallSid": "CA1", "RecordingSid": "RE1", "RecordingStatus": "completed"}
    body = urlencode(params).encode()
    signature = RequestValidator(TOKEN).compute_signature(URL, params)
    verified = VERIFIERS["twilio"].verify(arrived({"X-Twilio-Signature": signature}, body), [TOKEN])
    assert verified == Verified("sha256:" + hashlib.sha256(body).hexdigest(), "call")


def test_a_twilio_get_callback_is_identified_from_its_url() -> None:
    url = URL + "?MessageSid=SM1&MessageStatus=sent"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    verified = VERIFIERS["twilio"].verify(
        arrived({"X-Twilio-Signature": signature}, url=url), [TOKEN]
    )
    assert verified == Verified("SM1:sent", "message.sent")


def test_a_twilio_form_body_that_is_not_utf8_is_malformed() -> None:
    body = b"MessageSid=SM1&Body=%FF%FE"
    request = arrived({"X-Twilio-Signature": "anything"}, body)
    assert refusal("twilio", request, [TOKEN]).reason == "malformed"


def test_a_twilio_url_that_cannot_be_read_is_malformed() -> None:
    request = arrived({"X-Twilio-Signature": "anything"}, b"", url="https://[::1/hook")
    assert refusal("twilio", request, [TOKEN]).reason == "malformed"


# --- X-Hub-Signature-256 (GitHub, Meta) ----------------------------------------------------------


def test_hub_signing_reproduces_githubs_published_example() -> None:
    # docs.github.com, "Validating webhook deliveries", "Testing the webhook payload validation".
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = VERIFIERS["hub-signature-256"].sign(secret, body, url=URL, timestamp=0, event_id="")
    assert headers == {"X-Hub-Signature-256": expected}
    request = arrived({"X-Hub-Signature-256": expected}, body)
    verified = VERIFIERS["hub-signature-256"].verify(request, [secret])
    assert verified == Verified("sha256:" + hashlib.sha256(body).hexdigest(), "")


def test_a_meta_notification_is_typed_by_its_first_changes_field() -> None:
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {}}]}],
        }
    ).encode()
    secret = "app-secret-0123456789"
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = arrived({"X-Hub-Signature-256": signature}, body)
    verified = VERIFIERS["hub-signature-256"].verify(request, [secret])
    assert verified == Verified("sha256:" + hashlib.sha256(body).hexdigest(), "messages")


@pytest.mark.parametrize("header", ["sha1=abc", "757107ea0eb2509fc2", "sha256=", "sha256=zz"])
def test_a_hub_signature_of_another_form_is_a_bad_signature(header: str) -> None:
    request = arrived({"X-Hub-Signature-256": header}, b"Hello, World!")
    refused = refusal("hub-signature-256", request, ["It's a Secret to Everybody"])
    assert refused.reason == "signature"


# --- Dwolla --------------------------------------------------------------------------------------

DWOLLA = BY_KEY["dwolla"]


def test_a_dwolla_webhook_signed_as_dwolla_documents_is_verified() -> None:
    # developers.dwolla.com/docs/balance/webhooks/process-validate: X-Request-Signature-SHA-256 is
    # the hex HMAC-SHA256 of the body, keyed with the subscription's secret.
    expected = hmac.new(DWOLLA.secrets[0].encode(), DWOLLA.body, hashlib.sha256).hexdigest()
    request = arrived({"X-Request-Signature-SHA-256": expected}, DWOLLA.body)
    assert VERIFIERS["dwolla"].verify(request, [DWOLLA.secrets[0]]) == DWOLLA.expected
    signed = VERIFIERS["dwolla"].sign(
        DWOLLA.secrets[0], DWOLLA.body, url=URL, timestamp=NOW, event_id=""
    )
    assert signed == {"X-Request-Signature-SHA-256": expected}


def test_a_signed_dwolla_body_without_an_id_is_malformed() -> None:
    request = replace(DWOLLA, body=b'{"topic": "customer_created"}').signed()
    assert refusal("dwolla", request, [DWOLLA.secrets[0]]).reason == "malformed"


def test_a_dwolla_event_without_a_topic_has_an_empty_type() -> None:
    request = replace(DWOLLA, body=b'{"id": "e1"}').signed()
    assert VERIFIERS["dwolla"].verify(request, [DWOLLA.secrets[0]]) == Verified("e1", "")


# --- Google Calendar push notifications ------------------------------------------------------

GOOGLE = BY_KEY["google-channel"]
CHANNEL_TOKEN = GOOGLE.secrets[0]


def google_notification(**changes: str) -> WebhookRequest:
    # developers.google.com/calendar/api/guides/push, "Understand the notification message
    # format": the headers of a notification, written out independently of our `sign`.
    headers = {
        "X-Goog-Channel-ID": "01234567-89ab-cdef-0123456789ab",
        "X-Goog-Channel-Token": CHANNEL_TOKEN,
        "X-Goog-Channel-Expiration": "Tue, 19 Nov 2013 01:13:52 GMT",
        "X-Goog-Resource-ID": "ret08u3rv24htgh289g",
        "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/primary/events",
        "X-Goog-Resource-State": "exists",
        "X-Goog-Message-Number": "10",
    }
    headers.update({name.replace("_", "-"): value for name, value in changes.items()})
    return arrived({name: value for name, value in headers.items() if value != "<absent>"})


def test_a_google_notification_with_our_channel_token_is_verified() -> None:
    verified = VERIFIERS["google-channel"].verify(google_notification(), [CHANNEL_TOKEN])
    assert verified == Verified("01234567-89ab-cdef-0123456789ab:10", "exists")


def test_the_sync_message_that_opens_a_google_channel_is_typed_sync() -> None:
    request = google_notification(**{"X-Goog-Resource-State": "sync", "X-Goog-Message-Number": "1"})
    verified = VERIFIERS["google-channel"].verify(request, [CHANNEL_TOKEN])
    assert verified == Verified("01234567-89ab-cdef-0123456789ab:1", "sync")


@pytest.mark.parametrize(
    "change",
    [
        {"X-Goog-Channel-ID": "<absent>"},
        {"X-Goog-Message-Number": "<absent>"},
        {"X-Goog-Message-Number": "ten"},
    ],
)
def test_a_google_notification_without_a_channel_or_message_number_is_malformed(
    change: dict[str, str],
) -> None:
    refused = refusal("google-channel", google_notification(**change), [CHANNEL_TOKEN])
    assert refused.reason == "malformed"


def test_a_google_notification_with_another_channels_token_is_refused() -> None:
    request = google_notification(**{"X-Goog-Channel-Token": "another-channels-token"})
    assert refusal("google-channel", request, [CHANNEL_TOKEN]).reason == "signature"


# --- Paynow --------------------------------------------------------------------------------------

PAYNOW = BY_KEY["paynow"]


def test_paynows_published_hash_example_verifies() -> None:
    # github.com/paynow/docs, docs/validating_hash.md: this message and this integration key.
    body = (
        b"status=Ok&browserurl=https%3a%2f%2fstaging.paynow.co.zw%2fPayment%2fConfirmPayment%2f9510"
        b"&pollurl=https%3a%2f%2fstaging.paynow.co.zw%2fInterface%2fCheckPayment%2f%3fguid%3d"
        b"c7ed41da-0159-46da-b428-69549f770413&paynowreference=9510&hash=750DD0B0DF374678707BB5AF9"
        b"15AF81C228B9058AD57BB7120569EC68BBB9C2EFC1B26C6375D2BC562AC909B3CD6B2AF1D42E1A5E479FFAC8"
        b"F4FB3FDCE71DF4D"
    )
    integration_key = "3e9fed89-60e1-4ce5-ab6e-6b1eb2d4f977"
    verified = VERIFIERS["paynow"].verify(arrived({}, body), [integration_key])
    assert verified == Verified("9510:ok", "payment.ok")


def test_paynow_signed_body_hashes_the_values_in_order_then_the_integration_key() -> None:
    # github.com/paynow/docs, docs/generating_hash.md, computed here with hashlib directly.
    assert PAYNOW.fields is not None
    key = PAYNOW.secrets[0]
    expected = hashlib.sha512(("".join(PAYNOW.fields.values()) + key).encode()).hexdigest()
    body = paynow_signed_body(PAYNOW.fields, key)
    assert dict(parse_qsl(body.decode()))["hash"] == expected.upper()
    assert list(dict(parse_qsl(body.decode()))) == [*PAYNOW.fields, "hash"]


def test_a_paynow_hash_is_compared_without_regard_to_case() -> None:
    request = PAYNOW.signed()
    hash_value = dict(parse_qsl(request.body.decode()))["hash"]
    lower = replace(
        request, body=request.body.replace(hash_value.encode(), hash_value.lower().encode())
    )
    assert VERIFIERS["paynow"].verify(lower, [PAYNOW.secrets[0]]) == PAYNOW.expected


def test_paynow_fields_in_another_order_do_not_match_the_hash() -> None:
    request = PAYNOW.signed()
    fields = parse_qsl(request.body.decode())
    shuffled = replace(request, body=urlencode([fields[1], fields[0], *fields[2:]]).encode())
    assert refusal("paynow", shuffled, [PAYNOW.secrets[0]]).reason == "signature"


def test_paynow_sign_adds_no_headers_because_the_hash_is_in_the_body() -> None:
    assert VERIFIERS["paynow"].sign("key", b"", url=URL, timestamp=NOW, event_id="") == {}


def test_a_paynow_update_with_two_hashes_is_malformed() -> None:
    request = PAYNOW.signed()
    doubled = replace(request, body=request.body + b"&hash=ABC")
    assert refusal("paynow", doubled, [PAYNOW.secrets[0]]).reason == "malformed"


def test_a_signed_paynow_update_without_a_reference_is_malformed() -> None:
    assert PAYNOW.fields is not None
    fields = {k: v for k, v in PAYNOW.fields.items() if k != "paynowreference"}
    request = arrived({}, paynow_signed_body(fields, PAYNOW.secrets[0]))
    assert refusal("paynow", request, [PAYNOW.secrets[0]]).reason == "malformed"


def test_a_paynow_body_that_is_not_utf8_is_malformed() -> None:
    request = arrived({}, b"status=Paid&hash=\xff")
    assert refusal("paynow", request, [PAYNOW.secrets[0]]).reason == "malformed"


# --- nothing but Verified or Rejected, whatever arrives ------------------------------------------

HEADER_NAMES = [
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-twilio-signature",
    "x-twilio-webhooks-signature-settings",
    "x-hub-signature-256",
    "x-github-delivery",
    "x-github-event",
    "x-request-signature-sha-256",
    "x-goog-channel-id",
    "x-goog-channel-token",
    "x-goog-message-number",
    "x-goog-resource-state",
    "x-goog-resource-id",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
]
FORM_NAMES = ["MessageSid", "MessageStatus", "SmsSid", "CallSid", "CallStatus", "hash", "HASH"]
FORM_NAMES += ["status", "paynowreference", "bodySHA256"]
ALL_SECRETS = [secret for case in CASES for secret in case.secrets]

header_values = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"t=[0-9]{0,12}(,v[0-9]=[0-9a-f]{0,64}){0,3}", fullmatch=True),
    st.from_regex(r"((v1|v1a|v2),[A-Za-z0-9+/=]{0,48} ?){0,3}", fullmatch=True),
    st.from_regex(r"sha256=[0-9a-fA-F]{0,66}", fullmatch=True),
    st.from_regex(r"(key=[a-z_0-9]{0,10},)?algorithm=[A-Z_0-9]{0,12}", fullmatch=True),
    st.from_regex(r"[0-9]{0,20}", fullmatch=True),
    st.sampled_from(ALL_SECRETS),
)
headers_strategy = st.dictionaries(
    st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=20)), header_values, max_size=8
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "type", "topic", "object", "entry"]), children)
    ),
    max_leaves=10,
)
form_bodies = st.lists(
    st.tuples(st.one_of(st.sampled_from(FORM_NAMES), st.text(max_size=10)), st.text(max_size=20)),
    max_size=6,
).map(lambda fields: urlencode(fields).encode())
event_bodies = st.fixed_dictionaries(
    {"id": st.text(max_size=20) | st.integers()},
    optional={"type": json_values, "topic": json_values, "object": st.text(), "entry": json_values},
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    event_bodies.map(lambda value: json.dumps(value).encode()),
    form_bodies,
    st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
paynow_fields = st.fixed_dictionaries(
    {},
    optional={"reference": st.text(), "paynowreference": st.text(), "status": st.text()},
).flatmap(
    lambda known: st.dictionaries(st.sampled_from(FORM_NAMES) | st.text(), st.text()).map(
        lambda other: {**other, **known}
    )
)
urls = st.one_of(
    st.just(URL),
    st.text(max_size=60),
    st.from_regex(
        r"https?://[a-z0-9.\[\]:]{0,20}(:[0-9a-z]{0,6})?/[a-zA-Z0-9?=&%]{0,30}", fullmatch=True
    ),
    bodies.map(lambda body: twilio_body_url(URL, body)),
)
secret_lists = st.lists(st.one_of(st.text(max_size=40), st.sampled_from(ALL_SECRETS)), max_size=3)
arrival_times = st.one_of(st.just(float(NOW)), st.floats(), st.integers(0, 2**40).map(float))

# Many examples per verifier, each a fraction of a millisecond: the whole file stays fast.
property_settings = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.key)
@property_settings
@given(
    headers=headers_strategy,
    body=bodies,
    url=urls,
    secrets=secret_lists,
    received_at=arrival_times,
    data=st.data(),
)
def test_any_request_at_all_is_verified_or_rejected_and_nothing_else_escapes(
    case: Case,
    headers: dict[str, str],
    body: bytes,
    url: str,
    secrets: list[str],
    received_at: float,
    data: st.DataObject,
) -> None:
    """Half the requests are arbitrary; the other half are correctly signed, so that what comes
    after the signature check (the body, the other headers) is exercised too."""
    if data.draw(st.booleans(), label="correctly signed"):
        secret = case.secrets[0]
        secrets = [*secrets, secret]
        url, received_at = URL, NOW
        if case.key == "paynow":
            fields = data.draw(paynow_fields)
            body = paynow_signed_body(fields, secret)
        elif case.key == "twilio" and data.draw(st.booleans(), label="JSON body"):
            url = twilio_body_url(URL, body)
        try:
            signed = VERIFIERS[case.key].sign(
                secret, body, url=url, timestamp=NOW, event_id=case.event_id
            )
        except Rejected:
            signed = {}  # Twilio cannot sign a form body that is not a form
        overrides = headers if data.draw(st.booleans(), label="headers changed") else {}
        headers = {**{name.lower(): value for name, value in signed.items()}, **overrides}
    request = WebhookRequest(url, headers, body, received_at)
    reason: str | None
    try:
        verified = VERIFIERS[case.key].verify(request, secrets)
    except Rejected as refused:
        reason = refused.reason
    else:
        reason = None
        assert isinstance(verified.event_id, str)
        assert verified.event_id
        assert isinstance(verified.event_type, str)
    assert reason in {None, "malformed", "signature"}
    event(f"outcome: {reason or 'verified'}")  # shown by pytest --hypothesis-show-statistics
