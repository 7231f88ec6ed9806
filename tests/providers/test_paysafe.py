"""The Paysafe gateway end to end against the fake Paysafe over loopback (tests/fakes/paysafe.py),
through real connections: saved cards charged, declines and how they are classified, failover,
lost answers found again by merchantRefNum, refunds, and Paysafe's signed webhooks applied."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy.orm import Session

from app.domain.money import Money
from app.domain.payments import ChargeRequest, ChargeStatus, FailureKind, RefundStatus
from app.providers.gateway import Feature, LinkRequest, PaymentGateway, Unsupported
from app.providers.paysafe import PAYSAFE, Paysafe
from app.providers.webhooks import PaysafeVerifier, Rejected, WebhookRequest
from app.services import Services
from app.services.payments import (
    FAILED,
    PROCESSING,
    SUCCEEDED,
    Candidate,
    ChargeOrder,
    RefundRefused,
)
from app.services.receiver import Receiver
from app.store.school import Guardian
from tests.fakes.paysafe import HOLD, FakePaysafe
from tests.fakes.scripted import Reply, ScriptedServer
from tests.fakes.server import served

PAYMENTS = "/paymenthub/v1/payments"


@pytest.fixture
def fake() -> Iterator[FakePaysafe]:
    paysafe = FakePaysafe(webhook_key="hmac-key-" + uuid.uuid4().hex)
    with served(paysafe.app) as url:
        paysafe.base_url = url
        yield paysafe


async def connect(
    services: Services,
    fake: FakePaysafe,
    *,
    attempts: int = 3,
    password: str = "",
    **secrets: str,
) -> Paysafe:
    record = await services.connections.add(
        "paysafe",
        f"Paysafe {uuid.uuid4().hex[:6]}",
        {
            "api_username": fake.username,
            "currency": fake.currency,
            "fee_percent": 2.5,
            "fee_fixed_minor": 25,
            "api_url": fake.base_url,
        },
        {"api_password": password or fake.password, **secrets},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, Paysafe)
    assert isinstance(provider, PaymentGateway)
    # A lost answer is given up on quickly; retries do not wait.
    policy = provider.client.policy
    provider.client.policy = replace(
        policy,
        timeout=0.5,
        retry=replace(policy.retry, attempts=attempts, base_delay=0.01, max_delay=0.01),
    )
    return provider


async def sandbox(services: Services) -> int:
    record = await services.connections.add(
        "sandbox-payments",
        "Sandbox",
        {"error_rate": 0, "approval_rate": 1, "latency_ms": 1, "latency_p95_ms": 2},
        {"api_key": "sk_sandbox"},
    )
    return record.id


async def guardian(services: Services) -> int:
    def write(session: Session) -> int:
        row = Guardian(ref=f"G-{uuid.uuid4().hex[:6]}", first_name="Ann", last_name="Moyo")
        session.add(row)
        session.flush()
        return row.id

    return await services.db.write(write)


def charge_of(token: str, amount: int = 12_500) -> ChargeRequest:
    return ChargeRequest(
        reference=f"pay_{uuid.uuid4().hex}-1",
        amount=Money(amount, "USD"),
        method="card",
        token=token,
        created_at=time.time(),
    )


def order(*candidates: Candidate, amount: int = 10_000) -> ChargeOrder:
    return ChargeOrder(
        idempotency_key=f"key-{uuid.uuid4().hex}",
        amount=Money(amount, "USD"),
        method="card",
        candidates=candidates,
    )


def connection_of(provider: Paysafe) -> int:
    return provider.client.connection_id


# --- the connection -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_health_check_proves_the_api_key(services: Services, fake: FakePaysafe) -> None:
    paysafe = await connect(services, fake)
    result = await services.connections.test(connection_of(paysafe))
    assert result.ok, result.detail
    [seen] = fake.requests
    assert (seen.method, seen.path, seen.query) == (
        "GET",
        PAYMENTS,
        "merchantRefNum=switchboard-health-check",
    )
    expected = base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
    assert seen.authorization == f"Basic {expected}"


@pytest.mark.asyncio
async def test_a_wrong_password_says_what_to_fix(services: Services, fake: FakePaysafe) -> None:
    paysafe = await connect(services, fake, password="B-qa2-0-not-the-password")
    result = await services.connections.test(connection_of(paysafe))
    assert not result.ok
    assert result.error_class == "auth"
    assert "Business Portal" in result.detail


def test_test_and_live_have_paysafe_s_own_addresses_and_the_fields_are_checked() -> None:
    assert PAYSAFE.base_url({"environment": "test"}) == "https://api.test.paysafe.com"
    assert PAYSAFE.base_url({"environment": "live"}) == "https://api.paysafe.com"
    _, _, errors = PAYSAFE.check(
        {"environment": "sandbox", "api_username": "me:B-123", "currency": "usd"}, {}
    )
    assert {error.field for error in errors} == {
        "environment",
        "api_username",
        "currency",
        "api_password",
        "fee_percent",
    }


@pytest.mark.asyncio
async def test_what_paysafe_offers_here_and_what_it_does_not(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake)
    assert paysafe.currencies == frozenset({"USD"})
    assert paysafe.features == frozenset({Feature.REFUNDS})
    assert paysafe.fees.fee(Money(10_000, "USD"), "card") == Money(275, "USD")
    with pytest.raises(Unsupported, match="Business Portal"):
        await paysafe.balance_entries()
    with pytest.raises(Unsupported, match="Business Portal"):
        await paysafe.payouts()
    with pytest.raises(Unsupported, match="saved at Paysafe"):
        await paysafe.create_link(LinkRequest("link_1", Money(100, "USD"), "Books"))
    now, asked = datetime.now(UTC), len(fake.requests)
    with pytest.raises(Unsupported, match=r"settlement report .* Reconciliation page"):
        await paysafe.ledger(now - timedelta(days=30), now)
    assert len(fake.requests) == asked  # nothing was asked of Paysafe


# --- charging ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_payer_s_saved_card_is_charged(services: Services, fake: FakePaysafe) -> None:
    paysafe = await connect(services, fake)
    payer = await guardian(services)
    token = fake.card()
    await services.routing.save_method(payer, connection_of(paysafe), "card", token)
    payment = await services.routing.charge(
        services.payments,
        guardian_id=payer,
        amount=Money(12_500, "USD"),
        method="card",
        idempotency_key=uuid.uuid4().hex,
        description="Piano lessons, term 2",
    )
    assert payment.status == SUCCEEDED
    [taken] = fake.charged()
    assert payment.gateway_id == taken["id"]
    [attempt] = payment.attempts
    assert taken["merchantRefNum"] == attempt.reference
    assert (taken["amount"], taken["currencyCode"]) == (12_500, "USD")
    assert (taken["settleWithAuth"], taken["dupCheck"]) == (True, True)
    assert taken["paymentHandleToken"] == token
    assert taken["description"] == "Piano lessons, term 2"
    synced = await paysafe.sync(charge_of(token), payment.gateway_id)
    assert (synced.status, synced.gateway_id) == (ChargeStatus.SUCCEEDED, taken["id"])


@pytest.mark.asyncio
async def test_a_bank_s_decline_is_hard_and_not_tried_at_another_gateway(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake)
    other = await sandbox(services)
    payment = await services.payments.charge(
        order(
            Candidate(connection_of(paysafe), fake.card("3009")),
            Candidate(other, "pm_sandbox_visa"),
        )
    )
    assert payment.status == FAILED
    assert payment.failure is not None
    assert payment.failure.kind is FailureKind.HARD_DECLINE
    assert payment.failure.code == "3009"
    assert "declined by the issuing bank" in payment.failure.message
    assert "another card" in payment.failure.message
    assert [attempt.connection_id for attempt in payment.attempts] == [connection_of(paysafe)]
    assert fake.charged() == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("3022", FailureKind.SOFT_DECLINE),  # insufficient funds
        ("3023", FailureKind.HARD_DECLINE),  # the bank's own rules
        ("3007", FailureKind.HARD_DECLINE),  # the address check
        ("4002", FailureKind.HARD_DECLINE),  # Paysafe's risk department
    ],
)
async def test_declines_are_classified_by_paysafe_s_code(
    services: Services, fake: FakePaysafe, code: str, kind: FailureKind
) -> None:
    paysafe = await connect(services, fake)
    result = await paysafe.charge(charge_of(fake.card(code)))
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (kind, code)
    assert not result.failure.may_fail_over
    assert result.gateway_id  # Paysafe keeps the failed payment, with an id


@pytest.mark.asyncio
async def test_a_request_paysafe_refuses_is_technical_and_says_why(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake)
    euros = replace(charge_of(fake.card()), amount=Money(5_000, "EUR"))
    result = await paysafe.charge(euros)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (FailureKind.TECHNICAL, "5001")
    assert "Invalid currency" in result.failure.message
    unknown_card = await paysafe.charge(charge_of("MUnot-a-saved-card"))
    assert unknown_card.failure is not None
    assert unknown_card.failure.code == "5068"
    assert "paymentHandleToken" in unknown_card.failure.message


@pytest.mark.asyncio
async def test_paysafe_down_is_technical_and_the_next_gateway_takes_the_payment(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake, attempts=2)
    other = await sandbox(services)
    fake.failing = True
    payment = await services.payments.charge(
        order(
            Candidate(connection_of(paysafe), fake.card()),
            Candidate(other, "pm_sandbox_visa"),
        )
    )
    assert payment.status == SUCCEEDED
    assert payment.connection_id == other
    first, second = payment.attempts
    assert first.failure is not None
    assert (first.failure.kind, first.failure.code) == (FailureKind.TECHNICAL, "http_503")
    assert second.status == SUCCEEDED
    assert fake.count("POST", PAYMENTS) == 2  # retried once, then given up on
    assert fake.payments == {}


@pytest.mark.asyncio
async def test_a_lost_answer_is_unknown_and_a_sync_finds_the_single_payment(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake, attempts=1)
    fake.hang_after_accept = 1  # Paysafe takes the payment; its answer never comes
    request = charge_of(fake.card())
    lost = await paysafe.charge(request)
    assert lost.failure is not None
    assert lost.failure.kind is FailureKind.UNKNOWN
    assert not lost.failure.may_fail_over
    # The half-second timeout lost the answer; the sync itself must not be timed out by a
    # busy machine (CI on two cores), so it gets an ordinary one.
    paysafe.client.policy = replace(paysafe.client.policy, timeout=10)
    found = await paysafe.sync(request)
    [taken] = fake.charged()
    assert (found.status, found.gateway_id) == (ChargeStatus.SUCCEEDED, taken["id"])
    # The sync's repeat was refused as a duplicate and became a lookup: charged once.
    assert fake.count("POST", PAYMENTS) == 2
    assert fake.count("GET", PAYMENTS) == 1


@pytest.mark.asyncio
async def test_a_retry_after_a_lost_answer_is_a_duplicate_and_becomes_a_lookup(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake, attempts=2)
    fake.hang_after_accept = 1
    result = await paysafe.charge(charge_of(fake.card()))
    [taken] = fake.charged()
    assert (result.status, result.gateway_id) == (ChargeStatus.SUCCEEDED, taken["id"])
    assert [seen.method for seen in fake.requests] == ["POST", "POST", "GET"]


@pytest.mark.asyncio
async def test_through_the_payment_service_a_lost_answer_is_settled_before_anything_else(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake, attempts=1)
    other = await sandbox(services)
    fake.hang_after_accept = 1
    payment = await services.payments.charge(
        order(Candidate(connection_of(paysafe), fake.card()), Candidate(other, "pm_sandbox_visa"))
    )
    assert payment.status == SUCCEEDED
    assert payment.connection_id == connection_of(paysafe)
    assert len(payment.attempts) == 1
    assert len(fake.charged()) == 1


@pytest.mark.asyncio
async def test_a_sync_says_not_found_only_when_paysafe_answers_it_has_none(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake, attempts=1)
    # Older than Paysafe's 90-day duplicate check: looked up, never repeated.
    old = replace(charge_of(fake.card()), created_at=time.time() - 100 * 86_400)
    assert (await paysafe.sync(old)).status is ChargeStatus.NOT_FOUND
    assert fake.count("POST", PAYMENTS) == 0
    fake.failing = True
    unanswered = await paysafe.sync(old)
    assert unanswered.status is ChargeStatus.FAILED
    assert unanswered.failure is not None
    assert unanswered.failure.kind is FailureKind.UNKNOWN
    by_id = await paysafe.sync(old, "3f7992f8-f550-42a7-bc10-79728a43d3c6")
    assert by_id.failure is not None
    assert by_id.failure.kind is FailureKind.UNKNOWN


@pytest.mark.asyncio
async def test_a_payment_paysafe_holds_for_review_is_processing_not_failed_over(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake)
    other = await sandbox(services)
    payment = await services.payments.charge(
        order(Candidate(connection_of(paysafe), fake.card(HOLD)), Candidate(other, "pm_x"))
    )
    assert payment.status == PROCESSING
    assert len(payment.attempts) == 1


# --- refunds ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_partial_refund_then_the_rest_then_one_too_many(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake)
    payment = await services.payments.charge(
        order(Candidate(connection_of(paysafe), fake.card()), amount=10_000)
    )
    first = await services.payments.refund(payment.id, Money(2_500, "USD"), "lesson cancelled")
    rest = await services.payments.refund(payment.id)
    assert (first.status, first.amount) == ("pending", Money(2_500, "USD"))
    assert (rest.status, rest.amount) == ("pending", Money(7_500, "USD"))
    # Refunded against the settlement, which has the payment's id.
    refund_posts = [seen for seen in fake.requests if seen.path.endswith("/refunds")]
    assert {seen.path for seen in refund_posts} == {
        f"/paymenthub/v1/settlements/{payment.gateway_id}/refunds"
    }
    assert [json.loads(seen.body)["amount"] for seen in refund_posts] == [2_500, 7_500]
    with pytest.raises(RefundRefused):
        await services.payments.refund(payment.id, Money(100, "USD"))
    # Asked directly, Paysafe itself refuses more than the settlement has left.
    refused = await paysafe.refund(payment.gateway_id, Money(100, "USD"), "ref_extra")
    assert refused.status is RefundStatus.FAILED
    assert refused.failure is not None
    assert refused.failure.code == "3404"
    assert "0 is left to refund" in refused.failure.message
    await fake.complete_refunds()
    done = await paysafe.refund_status(first.gateway_id, first.amount)
    assert (done.status, done.amount) == (RefundStatus.SUCCEEDED, Money(2_500, "USD"))


@pytest.mark.asyncio
async def test_a_refund_repeated_with_its_reference_is_found_not_made_twice(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake)
    paid = await paysafe.charge(charge_of(fake.card(), 10_000))
    first = await paysafe.refund(paid.gateway_id, Money(4_000, "USD"), "ref_1")
    again = await paysafe.refund(paid.gateway_id, Money(4_000, "USD"), "ref_1")
    assert first.status is again.status is RefundStatus.PENDING
    assert again.gateway_id == first.gateway_id
    assert len(fake.refunds) == 1


# --- webhooks ---------------------------------------------------------------------------------


@dataclass
class Hooks:
    services: Services
    fake: FakePaysafe
    paysafe: Paysafe
    client: httpx.AsyncClient
    path: str


@pytest.fixture
async def hooks(
    services: Services, fake: FakePaysafe, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hooks]:
    paysafe = await connect(services, fake, webhook_key=fake.webhook_key)
    record = await services.connections.connection(connection_of(paysafe))
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    path = f"/hooks/{record.id}/{record.webhook_token}"
    fake.webhook_url = receiver.address.url + path
    async with httpx.AsyncClient(base_url=receiver.address.url, timeout=20) as client:
        yield Hooks(services, fake, paysafe, client, path)
    await receiver.stop()


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


@pytest.mark.asyncio
async def test_a_held_payment_declined_later_is_failed_by_paysafe_s_webhook(hooks: Hooks) -> None:
    services, fake = hooks.services, hooks.fake
    payment = await services.payments.charge(
        order(Candidate(connection_of(hooks.paysafe), fake.card(HOLD)))
    )
    assert payment.status == PROCESSING
    await fake.decide_held(decline="3009")
    await _wait_for_events(services, 2)  # PAYMENT_HELD, then PAYMENT_FAILED
    await services.inbox_worker.process_due()
    after = await services.payments.payment(payment.id)
    assert after.status == FAILED
    assert after.failure is not None
    assert (after.failure.kind, after.failure.code) == (FailureKind.HARD_DECLINE, "3009")
    events = {event.event_type: event for event in await services.inbox.recent()}
    assert set(events) == {"PAYMENT_HELD", "PAYMENT_FAILED"}
    assert events["PAYMENT_FAILED"].provider_event_id == f"{payment.gateway_id}:PAYMENT_FAILED"


@pytest.mark.asyncio
async def test_a_refund_completed_in_paysafe_s_batch_is_settled_by_its_webhook(
    hooks: Hooks,
) -> None:
    services, fake = hooks.services, hooks.fake
    payment = await services.payments.charge(
        order(Candidate(connection_of(hooks.paysafe), fake.card()), amount=10_000)
    )
    refund = await services.payments.refund(payment.id, Money(3_000, "USD"))
    assert refund.status == "pending"
    await fake.complete_refunds()
    await _wait_for_events(services, 2)  # PAYMENT_COMPLETED, REFUND_COMPLETED
    await services.inbox_worker.process_due()
    [settled] = await services.payments.refunds(payment.id)
    assert settled.status == "succeeded"
    assert (await services.payments.payment(payment.id)).status == SUCCEEDED


@pytest.mark.asyncio
async def test_a_tampered_or_unsigned_notification_is_refused(hooks: Hooks) -> None:
    paid = hooks.fake.payments
    await hooks.paysafe.charge(charge_of(hooks.fake.card(), 9_000))
    await _wait_for_events(hooks.services, 1)
    [payment] = paid.values()
    headers, body = hooks.fake.notification("PAYMENT_COMPLETED", payment)
    tampered = body.replace(b"9000", b"1")
    refused = await hooks.client.post(hooks.path, content=tampered, headers=headers)
    assert (refused.status_code, refused.text) == (401, "signature not valid")
    unsigned = {name: value for name, value in headers.items() if name != "Signature"}
    assert (await hooks.client.post(hooks.path, content=body, headers=unsigned)).status_code == 401
    assert await hooks.services.inbox.count() == 1


@pytest.mark.asyncio
async def test_a_redelivered_notification_is_acknowledged_and_stored_once(hooks: Hooks) -> None:
    await hooks.paysafe.charge(charge_of(hooks.fake.card()))
    await _wait_for_events(hooks.services, 1)
    [payment] = hooks.fake.payments.values()
    _, body = hooks.fake.notification("PAYMENT_COMPLETED", payment)
    # Paysafe delivers again with the attempt number raised: the same event.
    again = json.loads(body)
    again["attemptNumber"] = "2"
    resent = json.dumps(again).encode()
    signed = PaysafeVerifier().sign(
        hooks.fake.webhook_key, resent, url="", timestamp=0, event_id=""
    )
    answer = await hooks.client.post(
        hooks.path, content=resent, headers={"Content-Type": "application/json", **signed}
    )
    assert (answer.status_code, answer.text) == (200, "duplicate")
    assert await hooks.services.inbox.count() == 1


async def _wait_for_events(services: Services, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if await services.inbox.count() >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} Paysafe notifications arrived")


# --- the verifier on its own --------------------------------------------------------------------


def _arrived(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    return WebhookRequest(
        url="https://office.example/hooks/1/token",
        headers={name.lower(): value for name, value in headers.items()},
        body=body,
        received_at=time.time(),
    )


def test_the_signature_is_the_base64_hmac_of_the_body() -> None:
    body = b'{"eventName": "PAYMENT_COMPLETED", "resourceId": "p1", "payload": {}}'
    verifier = PaysafeVerifier()
    headers = verifier.sign("key-1", body, url="", timestamp=0, event_id="")
    verified = verifier.verify(_arrived(body, headers), ["old-key", "key-1"])
    assert (verified.event_id, verified.event_type) == ("p1:PAYMENT_COMPLETED", "PAYMENT_COMPLETED")
    with pytest.raises(Rejected) as wrong:
        verifier.verify(_arrived(body, headers), ["another-key"])
    assert wrong.value.reason == "signature"
    with pytest.raises(Rejected) as none:
        verifier.verify(_arrived(body, headers), [])
    assert none.value.reason == "signature"


def test_a_base64_hmac_key_is_also_taken_decoded() -> None:
    raw = uuid.uuid4().bytes * 2
    key = base64.b64encode(raw).decode()
    body = b'{"id": "evt-1", "eventName": "REFUND_COMPLETED"}'
    signature = base64.b64encode(hmac.new(raw, body, hashlib.sha256).digest()).decode()
    verified = PaysafeVerifier().verify(_arrived(body, {"Signature": signature}), [key])
    assert verified.event_id == "evt-1"


def test_a_signed_body_that_is_not_json_is_malformed() -> None:
    headers = PaysafeVerifier().sign("k", b"[1, 2", url="", timestamp=0, event_id="")
    with pytest.raises(Rejected) as rejected:
        PaysafeVerifier().verify(_arrived(b"[1, 2", headers), ["k"])
    assert rejected.value.reason == "malformed"


# --- answers that are not Paysafe's, or not what they should be -----------------------------


async def connect_to(services: Services, url: str) -> Paysafe:
    """A Paysafe connection to a scripted server (tests/fakes/scripted.py), asked once."""
    record = await services.connections.add(
        "paysafe",
        f"Paysafe {uuid.uuid4().hex[:6]}",
        {"api_username": "school-test", "currency": "USD", "fee_percent": 2.5, "api_url": url},
        {"api_password": "B-qa2-0-scripted"},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, Paysafe)
    policy = provider.client.policy
    provider.client.policy = replace(
        policy, timeout=0.5, retry=replace(policy.retry, attempts=1, base_delay=0.01)
    )
    return provider


HTML_404 = Reply(
    404, body=b"<html><body>Not Found</body></html>", headers={"Content-Type": "text/html"}
)


@pytest.mark.asyncio
async def test_a_bare_404_is_not_paysafe_saying_it_has_no_such_payment(
    services: Services, scripted_server: ScriptedServer
) -> None:
    # A wrong address or a proxy answers 404 without Paysafe's error 5269: nothing is known.
    scripted_server.script("GET", PAYMENTS, HTML_404)
    scripted_server.script("GET", f"{PAYMENTS}/3f7992f8", HTML_404)
    paysafe = await connect_to(services, scripted_server.url)
    old = replace(charge_of("MUcard"), created_at=time.time() - 3 * 86_400)
    for synced in (await paysafe.sync(old), await paysafe.sync(old, "3f7992f8")):
        assert synced.status is ChargeStatus.FAILED
        assert synced.failure is not None
        assert synced.failure.kind is FailureKind.UNKNOWN
    # Paysafe's own "Entity not found" still is.
    not_found = Reply(404, json={"error": {"code": "5269", "message": "Entity not found"}})
    scripted_server.script("GET", PAYMENTS, not_found)
    assert (await paysafe.sync(old)).status is ChargeStatus.NOT_FOUND


@pytest.mark.asyncio
async def test_malformed_answers_are_classified_never_raised(
    services: Services, scripted_server: ScriptedServer
) -> None:
    paysafe = await connect_to(services, scripted_server.url)
    refunds = "/paymenthub/v1/settlements/pay-1/refunds"
    for amount in (None, "10.50", 10**20, True, -5):
        scripted_server.script(
            "POST", refunds, Reply(201, json={"id": "r-1", "status": "PENDING", "amount": amount})
        )
        made = await paysafe.refund("pay-1", Money(1_050, "USD"), "ref_1")
        assert (made.status, made.gateway_id, made.amount) == (
            RefundStatus.PENDING,
            "r-1",
            Money(1_050, "USD"),
        )
    scripted_server.script(
        "POST",
        PAYMENTS,
        Reply(
            400,
            json={
                "error": {
                    "code": "5068",
                    "message": "Field error(s)",
                    "details": 5,
                    "fieldErrors": {"field": "amount"},
                }
            },
        ),
    )
    refused = await paysafe.charge(charge_of("MUcard"))
    assert refused.failure is not None
    assert (refused.failure.kind, refused.failure.code) == (FailureKind.TECHNICAL, "5068")
    for body in ([1, 2], {"status": ["COMPLETED"], "id": {"x": 1}}, {"error": "nope"}):
        scripted_server.script("POST", PAYMENTS, Reply(201, json=body))
        odd = await paysafe.charge(charge_of("MUcard"))
        assert odd.status is ChargeStatus.PROCESSING  # never taken for paid


@pytest.mark.asyncio
@pytest.mark.parametrize(("status", "code"), [(400, "3009"), (403, "4002"), (500, "3023")])
async def test_a_decline_code_is_a_decline_whatever_the_http_status(
    services: Services, scripted_server: ScriptedServer, status: int, code: str
) -> None:
    declined = {"error": {"code": code, "message": "Your request has been declined."}}
    scripted_server.script("POST", PAYMENTS, Reply(status, json=declined))
    paysafe = await connect_to(services, scripted_server.url)
    if status >= 500:
        # A 5xx is the HTTP layer's failure (it may have acted): never read as an answer.
        result = await paysafe.charge(charge_of("MUcard"))
        assert result.failure is not None
        assert result.failure.kind is FailureKind.TECHNICAL
        return
    result = await paysafe.charge(charge_of("MUcard"))
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (FailureKind.HARD_DECLINE, code)
    assert not result.failure.may_fail_over
    # A sync repeating the payment gets the same answer: a decline, not an unknown.
    synced = await paysafe.sync(charge_of("MUcard"))
    assert synced.failure is not None
    assert synced.failure.kind is FailureKind.HARD_DECLINE


@pytest.mark.asyncio
async def test_a_sync_repeats_the_payment_only_within_a_day(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake, attempts=1)
    token = fake.card()
    yesterday = replace(charge_of(token), created_at=time.time() - 25 * 3600)
    # Never arrived, and more than a day old: looked up, never made now.
    assert (await paysafe.sync(yesterday)).status is ChargeStatus.NOT_FOUND
    assert fake.count("POST", PAYMENTS) == 0
    assert fake.charged() == []
    recent = replace(charge_of(token), created_at=time.time() - 3600)
    assert (await paysafe.sync(recent)).status is ChargeStatus.SUCCEEDED
    assert fake.count("POST", PAYMENTS) == 1


def _backdate(resource: dict[str, Any], days: float) -> None:
    then = datetime.now(UTC) - timedelta(days=days)
    resource["txnTime"] = then.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.asyncio
async def test_lookups_by_reference_reach_back_past_paysafe_s_30_day_default(
    services: Services, fake: FakePaysafe
) -> None:
    paysafe = await connect(services, fake, attempts=1)
    request = replace(charge_of(fake.card(), 10_000), created_at=time.time() - 40 * 86_400)
    paid = await paysafe.charge(request)
    _backdate(fake.payments[paid.gateway_id], 40)
    found = await paysafe.sync(request)
    assert (found.status, found.gateway_id) == (ChargeStatus.SUCCEEDED, paid.gateway_id)
    [search] = [seen for seen in fake.requests if seen.method == "GET" and seen.path == PAYMENTS]
    query = dict(parse_qsl(search.query))
    started = datetime.strptime(query["startDate"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(days=40) < datetime.now(UTC) - started <= timedelta(days=41, seconds=5)
    assert set(query) == {"merchantRefNum", "startDate", "endDate"}
    # A refund repeated long after is found by its reference too, not left "not listed".
    first = await paysafe.refund(paid.gateway_id, Money(1_000, "USD"), "ref_old")
    _backdate(fake.refunds[first.gateway_id], 40)
    again = await paysafe.refund(paid.gateway_id, Money(1_000, "USD"), "ref_old")
    assert (again.status, again.gateway_id, again.failure) == (
        RefundStatus.PENDING,
        first.gateway_id,
        None,
    )


@pytest.mark.asyncio
async def test_a_refund_paysafe_did_not_answer_stays_pending_and_unknown(
    services: Services, scripted_server: ScriptedServer
) -> None:
    refunds = "/paymenthub/v1/settlements/pay-1/refunds"
    paysafe = await connect_to(services, scripted_server.url)
    for reply in (Reply(500), Reply(503), Reply(429), Reply(201, hang=True)):
        scripted_server.script("POST", refunds, reply)
        result = await paysafe.refund("pay-1", Money(500, "USD"), "ref_1")
        assert result.status is RefundStatus.PENDING
        assert result.failure is not None
        assert result.failure.kind is FailureKind.UNKNOWN
