"""The Stripe gateway end to end against localstripe: charges on saved cards, declines and how
they are classified, refunds, balance transactions, and Stripe's signed webhooks arriving in
the receiver. Failures of Stripe itself are played by the scripted server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from app.domain.money import Money
from app.domain.payments import ChargeRequest, ChargeStatus, FailureKind, RefundStatus
from app.providers.gateway import PaymentGateway
from app.providers.stripe import API_VERSION, STRIPE, Stripe
from app.services import Services
from app.services.receiver import Receiver
from tests.fakes.scripted import Reply, ScriptedServer
from tests.support.localstripe import LocalStripe

# localstripe's cards: charged, and declined when charged (attaching it works).
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"


async def gateway(services: Services, url: str, webhook_secret: str = "") -> Stripe:
    secrets = {"secret_key": "sk_test_switchboard"}
    if webhook_secret:
        secrets["webhook_secret"] = webhook_secret
    record = await services.connections.add(
        "stripe", f"Stripe {uuid.uuid4().hex[:6]}", {"api_url": url}, secrets
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, Stripe)
    assert isinstance(provider, PaymentGateway)
    return provider


def charge_of(
    customer: str, method: str, amount: int = 12_500, currency: str = "EUR"
) -> ChargeRequest:
    return ChargeRequest(
        reference=f"pay_{uuid.uuid4().hex}",
        amount=Money(amount, currency),
        method="card",
        token=method,
        customer=customer,
        created_at=time.time(),
    )


@pytest.mark.asyncio
async def test_a_saved_card_is_charged(services: Services, localstripe: LocalStripe) -> None:
    stripe = await gateway(services, localstripe.url)
    customer, method = localstripe.saved_card(GOOD_CARD)
    request = charge_of(customer, method)
    result = await stripe.charge(request)
    assert result.status is ChargeStatus.SUCCEEDED, result.failure
    assert result.gateway_id.startswith("pi_")
    assert result.fee == Money(0, "EUR")  # localstripe keeps no fee
    intent = localstripe.api("GET", f"/v1/payment_intents/{result.gateway_id}")
    assert intent["amount"] == 12_500
    assert intent["currency"] == "eur"
    assert intent["metadata"] == {"switchboard_reference": request.reference}
    assert (await stripe.sync(request, result.gateway_id)).status is ChargeStatus.SUCCEEDED


@pytest.mark.asyncio
async def test_a_declined_card_is_a_hard_decline(
    services: Services, localstripe: LocalStripe
) -> None:
    stripe = await gateway(services, localstripe.url)
    customer, method = localstripe.saved_card(DECLINED_CARD)
    result = await stripe.charge(charge_of(customer, method))
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert result.failure.kind is FailureKind.HARD_DECLINE
    assert not result.failure.may_fail_over
    assert result.failure.code.startswith("card_declined")
    assert result.failure.message == "Your card was declined."


@pytest.mark.asyncio
async def test_a_partial_refund_then_the_rest(services: Services, localstripe: LocalStripe) -> None:
    stripe = await gateway(services, localstripe.url)
    customer, method = localstripe.saved_card(GOOD_CARD)
    paid = await stripe.charge(charge_of(customer, method, 10_000))
    first = await stripe.refund(paid.gateway_id, Money(2_500, "EUR"), "ref_1")
    rest = await stripe.refund(paid.gateway_id, Money(7_500, "EUR"), "ref_2")
    assert (first.status, first.amount) == (RefundStatus.SUCCEEDED, Money(2_500, "EUR"))
    assert (rest.status, rest.amount) == (RefundStatus.SUCCEEDED, Money(7_500, "EUR"))
    assert (await stripe.refund_status(first.gateway_id, first.amount)).status is (
        RefundStatus.SUCCEEDED
    )
    charge = localstripe.api("GET", f"/v1/payment_intents/{paid.gateway_id}")["latest_charge"]
    charge_id = charge["id"] if isinstance(charge, dict) else charge  # localstripe expands it
    assert localstripe.api("GET", f"/v1/charges/{charge_id}")["amount_refunded"] == 10_000
    entries = await stripe.balance_entries()
    assert sorted(entry.amount.minor for entry in entries) == [-7_500, -2_500, 10_000]
    assert {entry.kind for entry in entries} == {"charge", "refund"}


@pytest.mark.asyncio
async def test_stripe_s_webhooks_arrive_signed_in_the_inbox(
    services: Services, localstripe: LocalStripe
) -> None:
    secret = "whsec_" + uuid.uuid4().hex
    stripe = await gateway(services, localstripe.url, webhook_secret=secret)
    record = await services.connections.connection(stripe.client.connection_id)
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    try:
        localstripe.send_webhooks_to(
            f"{receiver.address.url}/hooks/{record.id}/{record.webhook_token}", secret
        )
        customer, method = localstripe.saved_card(GOOD_CARD)
        paid = await stripe.charge(charge_of(customer, method))
        # (Events of earlier tests, sent late by localstripe, may arrive too.)
        event = await _event_about(services, "payment_intent.succeeded", paid.gateway_id)
        assert json.loads(event.body)["data"]["object"]["amount"] == 12_500
        assert event.provider_event_id.startswith("evt_")
        assert event.headers["stripe-signature"].startswith("t=")
    finally:
        await receiver.stop()


async def _event_about(services: Services, event_type: str, object_id: str) -> Any:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for event in await services.inbox.recent():
            body = json.loads(event.body)
            if event.event_type == event_type and body["data"]["object"]["id"] == object_id:
                return event
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event_type} event about {object_id} arrived")


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


# --- Stripe failing, played by the scripted server ------------------------------------------------


@pytest.mark.asyncio
async def test_every_call_carries_the_key_the_version_and_the_reference_as_idempotency_key(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script(
        "POST", "/v1/payment_intents", Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    stripe = await gateway(services, scripted_server.url)
    request = charge_of("cus_1", "pm_1")
    assert (await stripe.charge(request)).succeeded
    [sent] = scripted_server.received("POST", "/v1/payment_intents")
    assert sent.headers["authorization"] == "Bearer sk_test_switchboard"
    assert sent.headers["stripe-version"] == API_VERSION
    assert sent.headers["idempotency-key"] == request.reference
    form = dict(httpx.QueryParams(sent.body.decode()))
    assert form["confirm"] == "true"
    assert form["off_session"] == "true"
    assert form["metadata[switchboard_reference]"] == request.reference


@pytest.mark.asyncio
async def test_a_lost_answer_is_an_unknown_outcome_and_a_replay_finds_the_charge(
    services: Services, scripted_server: ScriptedServer
) -> None:
    # Stripe took the charge but the answer never came: retried with the same key, then given
    # up on. The sync repeats the request with that key, and Stripe answers what happened.
    scripted_server.script(
        "POST",
        "/v1/payment_intents",
        *[Reply(hang=True)] * 3,
        Reply(200, json={"id": "pi_9", "status": "succeeded"}),
    )
    stripe = await gateway(services, scripted_server.url)
    stripe.client.policy = _fast(stripe.client.policy)
    request = charge_of("cus_1", "pm_1")
    lost = await stripe.charge(request)
    assert lost.failure is not None
    assert lost.failure.kind is FailureKind.UNKNOWN
    assert not lost.failure.may_fail_over
    found = await stripe.sync(request)
    assert (found.status, found.gateway_id) == (ChargeStatus.SUCCEEDED, "pi_9")
    keys = {seen.headers["idempotency-key"] for seen in scripted_server.received()}
    assert keys == {request.reference}


@pytest.mark.asyncio
async def test_after_a_day_the_reference_is_searched_for_instead_of_replayed(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/v1/payment_intents/search", Reply(200, json={"data": []}))
    stripe = await gateway(services, scripted_server.url)
    old = ChargeRequest(
        "pay_old", Money(100, "EUR"), "card", "pm_1", created_at=time.time() - 2 * 86_400
    )
    assert (await stripe.sync(old)).status is ChargeStatus.NOT_FOUND
    [search] = scripted_server.received("GET", "/v1/payment_intents/search")
    assert "switchboard_reference" in search.query
    assert not scripted_server.received("POST", "/v1/payment_intents")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(503), FailureKind.TECHNICAL),
        (Reply(401, json={"error": {"type": "invalid_request_error"}}), FailureKind.TECHNICAL),
        (
            Reply(
                402,
                json={
                    "error": {
                        "type": "card_error",
                        "code": "card_declined",
                        "decline_code": "insufficient_funds",
                        "message": "Your card has insufficient funds.",
                    }
                },
            ),
            FailureKind.SOFT_DECLINE,
        ),
        (
            Reply(
                402,
                json={
                    "error": {
                        "type": "card_error",
                        "code": "card_declined",
                        "decline_code": "stolen_card",
                        "message": "Your card was declined.",
                    }
                },
            ),
            FailureKind.HARD_DECLINE,
        ),
        (
            Reply(402, json={"error": {"type": "card_error", "code": "processing_error"}}),
            FailureKind.TECHNICAL,
        ),
        (
            Reply(200, json={"id": "pi_3", "status": "requires_action"}),
            FailureKind.HARD_DECLINE,
        ),
    ],
)
async def test_failures_are_classified(
    services: Services, scripted_server: ScriptedServer, reply: Reply, kind: FailureKind
) -> None:
    scripted_server.script("POST", "/v1/payment_intents", reply, then=reply)
    stripe = await gateway(services, scripted_server.url)
    stripe.client.policy = _fast(stripe.client.policy)
    result = await stripe.charge(charge_of("cus_1", "pm_1"))
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert result.failure.kind is kind


def test_a_secret_key_must_look_like_one() -> None:
    _, _, errors = STRIPE.check({}, {"secret_key": "pk_test_publishable"})
    assert [error.field for error in errors] == ["secret_key"]
    assert "sk_" in errors[0].message


def _fast(policy: Any) -> Any:
    from dataclasses import replace

    return replace(policy, timeout=0.3, retry=replace(policy.retry, base_delay=0.01))
