"""Stripe's webhooks applied to payments and refunds: once each, in any order, only ever moving
a payment forward. Ends with the whole path against localstripe: charge, signed webhook,
receiver, inbox, handler."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest

from app.domain.inbox import PROCESSED
from app.domain.money import Money
from app.services import Services
from app.services.inbox import IncomingEvent
from app.services.payments import FAILED, PROCESSING, SUCCEEDED, UNKNOWN, Candidate, ChargeOrder
from app.services.receiver import Receiver
from tests.fakes.scripted import Reply, ScriptedServer
from tests.support.localstripe import LocalStripe

INTENTS = "/v1/payment_intents"


async def stripe_connection(services: Services, url: str) -> int:
    record = await services.connections.add(
        "stripe",
        f"Stripe {uuid.uuid4().hex[:6]}",
        {"api_url": url},
        {"secret_key": "sk_test_switchboard", "webhook_secret": "whsec_test"},
    )
    provider = await services.connections.provider(record.id)
    policy = provider.client.policy
    provider.client.policy = replace(policy, timeout=0.3, retry=replace(policy.retry, attempts=1))
    return record.id


async def charge(services: Services, connection: int) -> Any:
    return await services.payments.charge(
        ChargeOrder(
            idempotency_key=uuid.uuid4().hex,
            amount=Money(5_000, "USD"),
            method="card",
            candidates=(Candidate(connection, "pm_card"),),
        )
    )


async def deliver(
    services: Services, connection: int, event_type: str, obj: dict[str, Any]
) -> None:
    body = {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "data": {"object": obj}}
    await services.inbox.store(
        IncomingEvent(connection, body["id"], event_type, {}, json.dumps(body).encode())
    )
    outcome = await services.inbox_worker.process_due()
    assert (outcome.processed, outcome.failed) == (1, 0)


def intent(payment: Any, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "pi_late",
        "object": "payment_intent",
        "status": status,
        "metadata": {"switchboard_reference": payment.attempts[-1].reference},
        **extra,
    }


@pytest.mark.asyncio
async def test_a_payment_whose_answer_was_lost_is_settled_by_its_webhook(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    connection = await stripe_connection(services, scripted_server.url)
    payment = await charge(services, connection)
    assert payment.status == UNKNOWN
    await deliver(services, connection, "payment_intent.succeeded", intent(payment, "succeeded"))
    settled = await services.payments.payment(payment.id)
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, "pi_late")
    assert settled.attempts[-1].status == SUCCEEDED


@pytest.mark.asyncio
async def test_late_and_repeated_events_never_move_a_payment_back(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script(
        "POST", INTENTS, Reply(200, json={"id": "pi_late", "status": "processing"})
    )
    connection = await stripe_connection(services, scripted_server.url)
    payment = await charge(services, connection)
    assert payment.status == PROCESSING
    await deliver(services, connection, "payment_intent.succeeded", intent(payment, "succeeded"))
    await deliver(services, connection, "payment_intent.processing", intent(payment, "processing"))
    failed = intent(
        payment,
        "requires_payment_method",
        last_payment_error={"code": "card_declined", "decline_code": "insufficient_funds"},
    )
    await deliver(services, connection, "payment_intent.payment_failed", failed)
    assert (await services.payments.payment(payment.id)).status == SUCCEEDED


@pytest.mark.asyncio
async def test_a_failure_event_is_classified_like_an_answer(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    connection = await stripe_connection(services, scripted_server.url)
    payment = await charge(services, connection)
    failed = intent(
        payment,
        "requires_payment_method",
        last_payment_error={
            "code": "card_declined",
            "decline_code": "stolen_card",
            "message": "Your card was declined.",
        },
    )
    await deliver(services, connection, "payment_intent.payment_failed", failed)
    settled = await services.payments.payment(payment.id)
    assert settled.status == FAILED
    assert settled.failure is not None
    assert settled.failure.kind.value == "hard_decline"
    assert settled.failure.code == "card_declined/stolen_card"


@pytest.mark.asyncio
async def test_a_refund_is_settled_by_its_events_and_a_failed_one_can_be_made_again(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, Reply(200, json={"id": "pi_1", "status": "succeeded"}))
    scripted_server.script(
        "POST",
        "/v1/refunds",
        Reply(200, json={"id": "re_1", "status": "pending", "amount": 5_000}),
    )
    connection = await stripe_connection(services, scripted_server.url)
    payment = await charge(services, connection)
    refund = await services.payments.refund(payment.id)
    assert refund.status == "pending"
    assert (await services.payments.payment(payment.id)).refundable == Money(0, "USD")
    await deliver(
        services,
        connection,
        "refund.updated",
        {
            "id": "re_1",
            "object": "refund",
            "status": "failed",
            "failure_reason": "expired_or_canceled_card",
        },
    )
    [failed] = await services.payments.refunds(payment.id)
    assert failed.status == "failed"
    assert failed.failure_message == "expired_or_canceled_card"
    assert (await services.payments.payment(payment.id)).refundable == Money(5_000, "USD")


@pytest.mark.asyncio
async def test_an_event_about_a_payment_switchboard_did_not_make_changes_nothing(
    services: Services, scripted_server: ScriptedServer
) -> None:
    connection = await stripe_connection(services, scripted_server.url)
    await deliver(
        services,
        connection,
        "payment_intent.succeeded",
        {"id": "pi_dashboard", "object": "payment_intent", "status": "succeeded", "metadata": {}},
    )
    assert await services.payments.payments() == []


@pytest.mark.asyncio
async def test_localstripe_s_signed_webhook_is_received_and_applied(
    services: Services, localstripe: LocalStripe
) -> None:
    record = await services.connections.add(
        "stripe",
        "Stripe",
        {"api_url": localstripe.url},
        {"secret_key": "sk_test_switchboard", "webhook_secret": "whsec_localstripe"},
    )
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    services.inbox_worker.start()
    try:
        localstripe.send_webhooks_to(
            f"{receiver.address.url}/hooks/{record.id}/{record.webhook_token}", "whsec_localstripe"
        )
        customer, method = localstripe.saved_card()
        payment = await services.payments.charge(
            ChargeOrder(
                uuid.uuid4().hex,
                Money(7_500, "EUR"),
                "card",
                (Candidate(record.id, method, customer),),
            )
        )
        assert payment.status == SUCCEEDED
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            applied = [
                event
                for event in await services.inbox.recent()
                if event.event_type == "payment_intent.succeeded"
                and payment.gateway_id.encode() in event.body
                and event.status == PROCESSED
            ]
            if applied:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("localstripe's payment_intent.succeeded was not applied")
        assert (await services.payments.payment(payment.id)).status == SUCCEEDED
    finally:
        await services.inbox_worker.stop()
        await receiver.stop()


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


@pytest.mark.asyncio
async def test_a_refund_marked_failed_that_the_gateway_made_after_all_counts_again(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, Reply(200, json={"id": "pi_1", "status": "succeeded"}))
    refused = {"error": {"type": "invalid_request_error", "code": "charge_disputed"}}
    scripted_server.script("POST", "/v1/refunds", Reply(400, json=refused))
    connection = await stripe_connection(services, scripted_server.url)
    payment = await charge(services, connection)
    refund = await services.payments.refund(payment.id, Money(2_000, "USD"))
    assert refund.status == "failed"
    assert (await services.payments.payment(payment.id)).refunded == Money(0, "USD")
    made = {
        "id": "re_late",
        "object": "refund",
        "status": "succeeded",
        "metadata": {"switchboard_reference": refund.reference},
    }
    await deliver(services, connection, "refund.updated", made)
    [settled] = await services.payments.refunds(payment.id)
    assert (settled.status, settled.gateway_id) == ("succeeded", "re_late")
    assert (await services.payments.payment(payment.id)).refunded == Money(2_000, "USD")


@pytest.mark.asyncio
async def test_a_second_success_for_one_payment_is_reported_not_swallowed(
    services: Services, scripted_server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted_server.script("POST", INTENTS, Reply(200, json={"id": "pi_1", "status": "succeeded"}))
    connection = await stripe_connection(services, scripted_server.url)
    payment = await charge(services, connection)
    late = {**intent(payment, "succeeded"), "id": "pi_other"}
    await deliver(services, connection, "payment_intent.succeeded", late)
    assert "a payment was taken twice" in caplog.text
    assert (await services.payments.payment(payment.id)).gateway_id == "pi_1"
