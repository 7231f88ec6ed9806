"""SendGrid against the fake SendGrid over loopback (tests/fakes/sendgrid.py): e-mails sent as
SendGrid's Mail Send takes them, refusals of one message told apart from problems that stop a
send, rate limits, lost answers never sent twice, the health check, and the signed Event
Webhook: its ECDSA signature checked (good, tampered, another key, stale) and its events read
into deliveries, bounces and opt-outs, through the real receiver."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.messages import Channel, MessageStatus
from app.providers import KINDS
from app.providers.http import (
    CredentialsRefused,
    OutcomeUnknown,
    ProviderError,
    ProviderFailed,
    RateLimited,
    ResilientClient,
)
from app.providers.messaging import (
    DELIVERY_PARSERS,
    CannotTell,
    Delivery,
    MessageChannel,
    MessageRefused,
    OutgoingMessage,
)
from app.providers.sendgrid import KEY_ARGUMENT, SENDGRID, SendGrid, deliveries, message_id
from app.providers.spec import ProviderSpec, RetryPolicy
from app.providers.webhooks import (
    DEFAULT_TOLERANCE_SECONDS,
    VERIFIERS,
    Rejected,
    SendGridVerifier,
    Verified,
    WebhookRequest,
)
from app.services import Services
from app.services.receiver import Receiver
from tests.fakes.scripted import Reply, ScriptedServer
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import Switch, served

SEND = "/v3/mail/send"
SENDER = "office@school.example"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    with served(switch) as url:
        yield switch, url


@pytest.fixture
def fake(server: tuple[Switch, str]) -> FakeSendGrid:
    switch, _ = server
    sendgrid = FakeSendGrid()
    switch.target = sendgrid.app
    return sendgrid


@pytest.fixture
def url(server: tuple[Switch, str]) -> str:
    return server[1]


@pytest.fixture
async def sendgrid(fake: FakeSendGrid, url: str) -> AsyncIterator[SendGrid]:
    provider = build(url, fake.api_key)
    yield provider
    await provider.client.aclose()


def build(
    url: str,
    api_key: str,
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    base_delay: float = 0.01,
    jitter: float | None = None,
    **config: Any,
) -> SendGrid:
    """A SendGrid connection as the connection service makes one, from checked settings."""
    values = {"from_email": SENDER, "from_name": "Riverside Music School", "api_url": url}
    checked, secrets, errors = SENDGRID.check({**values, **config}, {"api_key": api_key})
    assert not errors, errors
    resilient = client(
        SENDGRID,
        checked,
        secrets,
        timeout=timeout,
        attempts=attempts,
        base_delay=base_delay,
        jitter=jitter,
    )
    provider = SENDGRID.factory(SENDGRID, resilient, checked, secrets)
    assert isinstance(provider, SendGrid)
    return provider


def client(
    spec: ProviderSpec,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    timeout: float,
    attempts: int,
    base_delay: float,
    jitter: float | None,
) -> ResilientClient:
    policy = replace(
        spec.policy,
        timeout=timeout,
        retry=RetryPolicy(attempts=attempts, base_delay=base_delay, max_delay=base_delay * 4),
    )
    return ResilientClient(
        connection_id=0,
        name=spec.name,
        base_url=spec.base_url(config),
        policy=policy,
        headers=spec.headers(config, secrets) if spec.headers else None,
        idempotency_header=spec.idempotency_header,
        secrets=list(secrets.values()),
        jitter=random.random if jitter is None else lambda: jitter,
    )


def email(to: str = "parent@family.example", **changes: Any) -> OutgoingMessage:
    message = OutgoingMessage(
        key=f"msg_{uuid.uuid4().hex}",
        channel=Channel.EMAIL,
        to=to,
        subject="Concert on Friday",
        text="The spring concert starts at 18:00.",
        html="<p>The spring concert starts at <b>18:00</b>.</p>",
    )
    return replace(message, **changes)


# --- sending --------------------------------------------------------------------------------------


async def test_an_email_is_one_personalization_carrying_our_key_and_is_queued_under_its_id(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    assert isinstance(sendgrid, MessageChannel)
    assert sendgrid.channels == {Channel.EMAIL}
    message = email(unsubscribe_url="https://school.example/unsubscribe/abc")
    sent = await sendgrid.send(message)
    [accepted] = fake.accepted
    assert (sent.provider_id, sent.status) == (accepted.message_id, MessageStatus.QUEUED)
    [request] = fake.sent("POST", SEND)
    assert request.headers["authorization"] == f"Bearer {fake.api_key}"
    mail = json.loads(request.body)
    assert mail["personalizations"] == [
        {"to": [{"email": message.to}], "custom_args": {KEY_ARGUMENT: message.key}}
    ]
    assert mail["from"] == {"email": SENDER, "name": "Riverside Music School"}
    assert mail["subject"] == "Concert on Friday"
    assert [part["type"] for part in mail["content"]] == ["text/plain", "text/html"]
    assert mail["headers"] == {
        "List-Unsubscribe": "<https://school.example/unsubscribe/abc>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


async def test_without_an_unsubscribe_address_or_html_neither_is_sent(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    await sendgrid.send(email(html=""))
    mail = json.loads(fake.sent("POST", SEND)[0].body)
    assert "headers" not in mail
    assert mail["content"] == [
        {"type": "text/plain", "value": "The spring concert starts at 18:00."}
    ]


async def test_a_reply_to_address_from_the_settings_goes_with_every_email(
    fake: FakeSendGrid, url: str
) -> None:
    sendgrid = build(url, fake.api_key, reply_to="bursar@school.example")
    try:
        await sendgrid.send(email())
    finally:
        await sendgrid.client.aclose()
    assert json.loads(fake.sent("POST", SEND)[0].body)["reply_to"] == {
        "email": "bursar@school.example"
    }


async def test_an_address_sendgrid_refuses_fails_that_message_and_the_next_one_goes(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    with pytest.raises(MessageRefused) as refused:
        await sendgrid.send(email(to="not an address"))
    assert "Does not contain a valid address." in str(refused.value)
    assert refused.value.code == "personalizations.0.to.0.email"
    assert not refused.value.opted_out
    assert (await sendgrid.send(email())).provider_id
    assert fake.message_count == 1


async def test_an_email_without_any_text_is_refused_without_asking_sendgrid(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    with pytest.raises(MessageRefused, match="no text"):
        await sendgrid.send(email(text="", html=""))
    assert fake.sent("POST", SEND) == []


async def test_a_from_address_that_is_not_a_verified_sender_stops_the_send_saying_what_to_fix(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    fake.verified_senders.clear()
    with pytest.raises(CredentialsRefused) as refused:
        await sendgrid.send(email())
    assert not isinstance(refused.value, MessageRefused)
    assert "verified Sender Identity" in str(refused.value)
    assert refused.value.error_class == "auth"
    assert fake.message_count == 0


async def test_a_key_sendgrid_does_not_know_is_refused_credentials(
    fake: FakeSendGrid, url: str
) -> None:
    sendgrid = build(url, "SG.not-the-key")
    try:
        with pytest.raises(CredentialsRefused, match="API key"):
            await sendgrid.send(email())
        health = await sendgrid.check_health()
    finally:
        await sendgrid.client.aclose()
    assert (health.ok, health.error_class) == (False, "auth")
    assert fake.message_count == 0


async def test_a_key_without_the_mail_send_permission_is_unhealthy_and_cannot_send(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    fake.scopes = ("scopes.read", "stats.read")
    health = await sendgrid.check_health()
    assert (health.ok, health.error_class) == (False, "auth")
    assert "Mail Send permission" in health.detail
    with pytest.raises(CredentialsRefused, match="access forbidden"):
        await sendgrid.send(email())


async def test_the_health_check_asks_for_the_key_s_scopes(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    health = await sendgrid.check_health()
    assert health.ok, health.detail
    [request] = fake.sent("GET", "/v3/scopes")
    assert request.headers["authorization"] == f"Bearer {fake.api_key}"


async def test_sendgrid_down_stops_the_send_without_failing_the_message(
    sendgrid: SendGrid, fake: FakeSendGrid
) -> None:
    fake.failing = True
    with pytest.raises(ProviderFailed) as failed:
        await sendgrid.send(email())
    assert not isinstance(failed.value, MessageRefused)
    assert failed.value.status == 503
    assert len(fake.sent("POST", SEND)) == 1  # a send is not repeated on a 5xx
    health = await sendgrid.check_health()
    assert (health.ok, health.error_class) == (False, "http_5xx")


async def test_an_answer_that_never_comes_is_unknown_and_the_email_is_not_sent_again(
    fake: FakeSendGrid, url: str
) -> None:
    sendgrid = build(url, fake.api_key, timeout=0.5)
    fake.hang_after_accept = 1
    message = email()
    try:
        with pytest.raises(OutcomeUnknown):
            await sendgrid.send(message)
        with pytest.raises(CannotTell, match="Email Activity"):
            await sendgrid.find(message, since=datetime.now(UTC))
    finally:
        await sendgrid.client.aclose()
    assert len(fake.sent("POST", SEND)) == 1
    assert fake.message_count == 1


async def test_too_fast_is_rate_limited_and_nothing_is_sent_twice(
    fake: FakeSendGrid, url: str
) -> None:
    fake.rate_limit, fake.rate_window = 1, 60.0
    sendgrid = build(url, fake.api_key)  # retries after milliseconds: still inside the window
    try:
        await sendgrid.send(email())
        with pytest.raises(RateLimited) as limited:
            await sendgrid.send(email())
    finally:
        await sendgrid.client.aclose()
    assert limited.value.status == 429
    assert len(fake.sent("POST", SEND)) == 1 + 3
    assert fake.message_count == 1


async def test_a_rate_limited_email_goes_once_the_second_has_passed(
    fake: FakeSendGrid, url: str
) -> None:
    fake.rate_limit = 1
    sendgrid = build(url, fake.api_key, base_delay=1.0, jitter=1.0)
    try:
        first = await sendgrid.send(email("a@family.example"))
        second = await sendgrid.send(email("b@family.example"))
    finally:
        await sendgrid.client.aclose()
    assert first.provider_id != second.provider_id
    assert [message.to for message in fake.accepted] == ["a@family.example", "b@family.example"]


# --- answers that are not what they should be -----------------------------------------------------


async def scripted(server: ScriptedServer) -> SendGrid:
    return build(server.url, "SG.scripted-key", attempts=1)


@pytest.mark.parametrize("field", ["from.email", "from", "reply_to.email"])
async def test_a_refused_sender_stops_the_send_instead_of_failing_every_message(
    scripted_server: ScriptedServer, field: str
) -> None:
    sendgrid = await scripted(scripted_server)
    body = {
        "errors": [
            {
                "message": "The from email does not contain a valid address.",
                "field": field,
                "help": None,
            }
        ]
    }
    scripted_server.script("POST", SEND, Reply(400, json=body))
    try:
        with pytest.raises(ProviderError, match="From or Reply-To") as refused:
            await sendgrid.send(email())
    finally:
        await sendgrid.client.aclose()
    assert not isinstance(refused.value, MessageRefused)


async def test_odd_answers_are_classified_never_raised_as_something_else(
    scripted_server: ScriptedServer,
) -> None:
    sendgrid = await scripted(scripted_server)
    try:
        scripted_server.script("POST", SEND, Reply(202))  # accepted, but no X-Message-Id
        assert (await sendgrid.send(email())).status is MessageStatus.QUEUED
        scripted_server.script("POST", SEND, Reply(400, body=b"<html>Bad Request</html>"))
        with pytest.raises(MessageRefused, match="HTTP 400"):
            await sendgrid.send(email())
        scripted_server.script("POST", SEND, Reply(400, json={"errors": "nope"}))
        with pytest.raises(MessageRefused):
            await sendgrid.send(email())
        scripted_server.script("POST", SEND, Reply(413, json={"errors": [{"message": "too big"}]}))
        with pytest.raises(MessageRefused, match="too big"):
            await sendgrid.send(email())
        scripted_server.script("POST", SEND, Reply(404, json={"errors": [{"message": "nf"}]}))
        with pytest.raises(ProviderError) as other:
            await sendgrid.send(email())
        assert not isinstance(other.value, MessageRefused)
        scripted_server.script("GET", "/v3/scopes", Reply(200, json=["mail.send"]))
        assert (await sendgrid.check_health()).ok
    finally:
        await sendgrid.client.aclose()


# --- the connection's settings --------------------------------------------------------------------


def test_the_settings_say_what_is_wrong_with_them() -> None:
    _, _, errors = SENDGRID.check(
        {"from_email": "office", "reply_to": "x@", "region": "mars"},
        {"api_key": "not-a-key", "verification_key": "-----BEGIN PUBLIC KEY-----"},
    )
    fields = {error.field: error.message for error in errors}
    assert set(fields) == {"api_key", "from_email", "reply_to", "region", "verification_key"}
    assert "SG." in fields["api_key"]
    assert "MFkw" in fields["verification_key"]


def test_the_eu_region_has_sendgrid_s_eu_address() -> None:
    assert SENDGRID.base_url({}) == "https://api.sendgrid.com"
    assert SENDGRID.base_url({"region": "eu"}) == "https://api.eu.sendgrid.com"
    assert SENDGRID.webhook is not None
    assert (SENDGRID.webhook.verifier, SENDGRID.webhook.secret_field) == (
        "sendgrid",
        "verification_key",
    )


def test_the_verification_key_must_be_the_p256_public_key_sendgrid_shows() -> None:
    field = SENDGRID.field("verification_key")
    good = FakeSendGrid().verification_key
    assert field.parse(good) == good
    assert field.parse(f"{good} {FakeSendGrid().verification_key}")  # while one is replaced
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_text = base64.b64encode(
        rsa_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    other_curve = base64.b64encode(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    for wrong in ("MFkwnot-base64!", base64.b64encode(b"hello").decode(), rsa_text, other_curve):
        with pytest.raises(ValueError, match="key"):
            field.parse(wrong)


# --- the Event Webhook's events -------------------------------------------------------------------


def events(*items: dict[str, Any]) -> bytes:
    return json.dumps(list(items)).encode()


def test_each_event_says_what_became_of_the_message_by_its_x_message_id() -> None:
    sg = "14c5d75ce93.dfd.64b469.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
    assert message_id(sg) == "14c5d75ce93"
    body = events(
        {"event": "processed", "sg_message_id": "A1.filter1", "email": "a@x.example"},
        {"event": "deferred", "sg_message_id": "A1.filter2", "response": "450 try later"},
        {"event": "delivered", "sg_message_id": "A1.filter3", "response": "250 OK"},
        {"event": "open", "sg_message_id": "A1.filter4"},
        {"event": "click", "sg_message_id": "A1.filter5", "url": "https://school.example"},
        {
            "event": "bounce",
            "sg_message_id": "B2.f",
            "email": "b@x.example",
            "type": "bounce",
            "reason": "550 5.1.1 No such user",
            "status": "5.1.1",
        },
        {"event": "dropped", "sg_message_id": "C3.f", "reason": "Invalid"},
    )
    reports = deliveries("processed,deferred", body)
    assert [(r.provider_id, r.status) for r in reports if isinstance(r, Delivery)] == [
        ("A1", MessageStatus.QUEUED),
        ("A1", MessageStatus.QUEUED),
        ("A1", MessageStatus.DELIVERED),
        ("A1", MessageStatus.DELIVERED),
        ("A1", MessageStatus.DELIVERED),
        ("B2", MessageStatus.BOUNCED),
        ("C3", MessageStatus.FAILED),
    ]
    bounce, dropped = reports[5], reports[6]
    assert isinstance(bounce, Delivery)
    assert isinstance(dropped, Delivery)
    assert bounce.error == "550 5.1.1 No such user (5.1.1)"
    assert bounce.address == "b@x.example"
    assert dropped.error == "Invalid"
    assert not any(isinstance(r, Delivery) and r.opted_out for r in reports)
    assert DELIVERY_PARSERS["sendgrid"] is deliveries


@pytest.mark.parametrize("name", ["unsubscribe", "group_unsubscribe", "spamreport"])
def test_an_unsubscribe_or_a_spam_report_opts_the_address_out(name: str) -> None:
    body = events(
        {
            "event": name,
            "sg_message_id": "A1.f",
            "email": "parent@family.example",
            "asm_group_id": 10,
        }
    )
    assert deliveries(name, body) == [
        Delivery("A1", MessageStatus.DELIVERED, opted_out=True, address="parent@family.example")
    ]


def test_an_email_dropped_because_the_address_unsubscribed_is_an_opt_out() -> None:
    for reason in ("Unsubscribed Address", "Spam Reporting Address"):
        body = events(
            {"event": "dropped", "sg_message_id": "A1.f", "email": "p@f.example", "reason": reason}
        )
        [report] = deliveries("dropped", body)
        assert isinstance(report, Delivery)
        assert (report.status, report.opted_out, report.address) == (
            MessageStatus.OPTED_OUT,
            True,
            "p@f.example",
        )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"event": "delivered", "sg_message_id": "A1.f"}',
        b'[1, null, "delivered", []]',
        events({"event": "group_resubscribe", "sg_message_id": "A1.f"}),
        events({"event": "delivered"}),  # no message id: nothing to report it of
        events({"event": "delivered", "sg_message_id": 17}),
        events({"event": "something_new", "sg_message_id": "A1.f"}),
    ],
)
def test_batches_and_events_that_report_nothing_are_ignored(body: bytes) -> None:
    assert deliveries("", body) == []


# --- the Event Webhook's signature ----------------------------------------------------------------

NOW = 1_700_000_000
URL = "https://switchboard.example.org/hooks/3/token"
BATCH = events({"email": "a@x.example", "event": "delivered", "sg_message_id": "A1.f"})


def private_text(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(der).decode()


def arrived(
    fake: FakeSendGrid, body: bytes = BATCH, *, signed_at: int = NOW, at: float = NOW
) -> WebhookRequest:
    headers = {name.lower(): value for name, value in fake.signed(body, signed_at).items()}
    return WebhookRequest(URL, headers, body, at)


def refusal(request: WebhookRequest, secrets: list[str]) -> Rejected:
    with pytest.raises(Rejected) as caught:
        VERIFIERS["sendgrid"].verify(request, secrets)
    return caught.value


def test_a_batch_signed_by_sendgrid_is_verified_and_identified_by_its_digest() -> None:
    fake = FakeSendGrid()
    verified = VERIFIERS["sendgrid"].verify(arrived(fake), [fake.verification_key])
    assert verified == Verified("sha256:" + hashlib.sha256(BATCH).hexdigest(), "delivered")
    mixed = events({"event": "open"}, {"event": "click"}, {"event": "open"}, {"event": 3})
    verified = VERIFIERS["sendgrid"].verify(arrived(fake, mixed), [fake.verification_key])
    assert verified.event_type == "open,click"


def test_our_signing_and_sendgrid_s_agree() -> None:
    fake = FakeSendGrid()
    headers = VERIFIERS["sendgrid"].sign(
        private_text(fake.private_key), BATCH, url=URL, timestamp=NOW, event_id=""
    )
    request = WebhookRequest(URL, {k.lower(): v for k, v in headers.items()}, BATCH, NOW)
    assert VERIFIERS["sendgrid"].verify(request, [fake.verification_key])
    pem = fake.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert VERIFIERS["sendgrid"].sign(pem, BATCH, url=URL, timestamp=NOW, event_id="")
    with pytest.raises(ValueError, match="private key"):
        VERIFIERS["sendgrid"].sign(fake.verification_key, BATCH, url=URL, timestamp=0, event_id="")


def test_a_changed_batch_or_timestamp_is_refused_as_a_bad_signature() -> None:
    fake = FakeSendGrid()
    request = arrived(fake)
    tampered = replace(request, body=BATCH.replace(b"delivered", b"bounce"))
    assert refusal(tampered, [fake.verification_key]).reason == "signature"
    later = replace(
        request, headers={**request.headers, "x-twilio-email-event-webhook-timestamp": str(NOW + 1)}
    )
    assert refusal(later, [fake.verification_key]).reason == "signature"


def test_a_batch_signed_with_another_key_is_refused() -> None:
    ours, theirs = FakeSendGrid(), FakeSendGrid()
    refused = refusal(arrived(theirs), [ours.verification_key])
    assert refused.reason == "signature"
    assert ours.verification_key not in str(refused)


def test_while_the_key_is_replaced_either_verifies() -> None:
    old, new = FakeSendGrid(), FakeSendGrid()
    keys = [new.verification_key, old.verification_key]
    assert VERIFIERS["sendgrid"].verify(arrived(old), keys)
    assert VERIFIERS["sendgrid"].verify(arrived(new), keys)


def test_a_stale_or_future_batch_is_refused_and_one_within_the_tolerance_is_not() -> None:
    fake = FakeSendGrid()
    key = [fake.verification_key]
    stale = refusal(arrived(fake, signed_at=NOW - DEFAULT_TOLERANCE_SECONDS - 1), key)
    assert (stale.reason, "before it arrived" in str(stale)) == ("signature", True)
    future = refusal(arrived(fake, signed_at=NOW + DEFAULT_TOLERANCE_SECONDS + 1), key)
    assert (future.reason, "after it arrived" in str(future)) == ("signature", True)
    for signed_at in (NOW - DEFAULT_TOLERANCE_SECONDS, NOW + DEFAULT_TOLERANCE_SECONDS):
        assert VERIFIERS["sendgrid"].verify(arrived(fake, signed_at=signed_at), key)
    strict = SendGridVerifier(tolerance=60)
    with pytest.raises(Rejected, match="60 s allowed"):
        strict.verify(arrived(fake, signed_at=NOW - 61), key)


def test_what_cannot_be_checked_is_refused_for_the_right_reason() -> None:
    fake = FakeSendGrid()
    key = [fake.verification_key]
    request = arrived(fake)
    signature = "x-twilio-email-event-webhook-signature"
    timestamp = "x-twilio-email-event-webhook-timestamp"
    missing = replace(request, headers={timestamp: str(NOW)})
    assert refusal(missing, key).reason == "signature"
    for value in ("", "yesterday", "1700000000.5"):
        odd = replace(request, headers={**request.headers, timestamp: value})
        assert refusal(odd, key).reason == "malformed"
    not_base64 = replace(request, headers={**request.headers, signature: "not base64 ü"})
    assert refusal(not_base64, key).reason == "signature"
    not_der = replace(request, headers={**request.headers, signature: "AAAA"})
    assert refusal(not_der, key).reason == "signature"
    huge = replace(request, headers={**request.headers, signature: "A" * 100_000})
    assert refusal(huge, key).reason == "malformed"
    assert refusal(request, []).reason == "signature"
    assert refusal(request, ["", "not a key", base64.b64encode(b"x").decode()]).reason == (
        "signature"
    )
    not_a_batch = arrived(fake, b'{"event": "delivered"}')
    assert refusal(not_a_batch, key).reason == "malformed"


FUZZ_HEADERS = st.dictionaries(
    st.sampled_from(
        ["x-twilio-email-event-webhook-signature", "x-twilio-email-event-webhook-timestamp"]
    )
    | st.text(max_size=10),
    st.text(max_size=60) | st.from_regex(r"[A-Za-z0-9+/=]{0,100}", fullmatch=True),
    max_size=3,
)
FUZZ_FAKE = FakeSendGrid()


@settings(max_examples=150, deadline=None)
@given(
    headers=FUZZ_HEADERS,
    body=st.binary(max_size=200) | st.text(max_size=100).map(str.encode),
    secrets=st.lists(st.text(max_size=40) | st.just(FUZZ_FAKE.verification_key), max_size=3),
    signed=st.booleans(),
    received_at=st.floats() | st.just(float(NOW)),
)
def test_any_request_at_all_is_verified_or_rejected_and_nothing_else_escapes(
    headers: dict[str, str], body: bytes, secrets: list[str], signed: bool, received_at: float
) -> None:
    if signed:
        headers = {**headers, **{k.lower(): v for k, v in FUZZ_FAKE.signed(body, NOW).items()}}
        secrets = [*secrets, FUZZ_FAKE.verification_key]
    reason: str | None = None
    try:
        verified = VERIFIERS["sendgrid"].verify(
            WebhookRequest(URL, headers, body, received_at), secrets
        )
    except Rejected as refused:
        reason = refused.reason
    else:
        assert verified.event_id.startswith("sha256:")
    assert reason in (None, "malformed", "signature")


# --- through the receiver -------------------------------------------------------------------------


async def test_signed_events_arrive_through_the_receiver_and_say_what_became_of_each_email(
    services: Services, fake: FakeSendGrid, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(KINDS, SENDGRID.key, SENDGRID)
    record = await services.connections.add(
        "sendgrid",
        "School e-mail",
        {"from_email": SENDER, "api_url": url},
        {"api_key": fake.api_key, "verification_key": fake.verification_key},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, SendGrid)
    fake.bouncing.add("gone@family.example")
    fake.unsubscribed.add("no-more@family.example")
    sent = {
        to: await provider.send(email(to))
        for to in ("parent@family.example", "gone@family.example", "no-more@family.example")
    }
    fake.process()
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    hook = f"{receiver.address.url}/hooks/{record.id}/{record.webhook_token}"
    try:
        answer = await fake.post_events(hook)
        assert (answer.status_code, answer.text) == (200, "accepted")
        fake.process()
        stale = await fake.post_events(
            hook,
            [fake.event(fake.accepted[0], "open")],
            timestamp=int(time.time()) - DEFAULT_TOLERANCE_SECONDS - 60,
        )
        assert stale.status_code == 401
        forged = FakeSendGrid()  # a key of its own
        refused = await forged.post_events(hook, [fake.event(fake.accepted[0], "unsubscribe")])
        assert refused.status_code == 401
    finally:
        await receiver.stop()
    await services.inbox.drain()
    [stored] = await services.inbox.recent(record.id)
    assert stored.event_type == "processed,delivered,bounce,dropped"
    assert stored.provider_event_id == "sha256:" + hashlib.sha256(stored.body).hexdigest()
    reports = DELIVERY_PARSERS["sendgrid"](stored.event_type, stored.body)
    final = {r.provider_id: r for r in reports if isinstance(r, Delivery)}
    delivered = final[sent["parent@family.example"].provider_id]
    bounced = final[sent["gone@family.example"].provider_id]
    dropped = final[sent["no-more@family.example"].provider_id]
    assert delivered.status is MessageStatus.DELIVERED
    assert (bounced.status, bounced.address) == (MessageStatus.BOUNCED, "gone@family.example")
    assert "does not exist" in bounced.error
    assert (dropped.status, dropped.opted_out) == (MessageStatus.OPTED_OUT, True)
    # Our key comes back in every event, as a custom argument.
    keys = {event.get(KEY_ARGUMENT) for event in json.loads(stored.body)}
    assert keys == {message.custom_args[KEY_ARGUMENT] for message in fake.accepted}


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}
