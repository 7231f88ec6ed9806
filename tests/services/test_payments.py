"""Payments: the idempotency key, attempts and failover, and refunds that can never exceed what
was paid. Real charges go to localstripe; gateways that fail are played by scripted servers
speaking Stripe's API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.errors import NotFound
from app.domain.money import Money
from app.domain.payments import FailureKind
from app.services import Services
from app.services.payments import (
    FAILED,
    PROCESSING,
    SUCCEEDED,
    UNKNOWN,
    Candidate,
    ChargeOrder,
    IdempotencyConflict,
    RefundRefused,
)
from app.store.payments import PaymentAttemptRow, PaymentRow
from tests.fakes.scripted import Reply, ScriptedServer
from tests.support.localstripe import LocalStripe

pytestmark = pytest.mark.both_databases  # SQLite, then PostgreSQL

INTENTS = "/v1/payment_intents"
DECLINED_CARD = "4000000000000341"


async def stripe_connection(
    services: Services, url: str, *, fast: bool = False, tries: int = 1
) -> int:
    record = await services.connections.add(
        "stripe",
        f"Stripe {uuid.uuid4().hex[:6]}",
        {"api_url": url},
        {"secret_key": "sk_test_switchboard"},
    )
    if fast:  # a gateway that hangs is given up on quickly
        provider = await services.connections.provider(record.id)
        policy = provider.client.policy
        provider.client.policy = replace(
            policy,
            timeout=0.3,
            retry=replace(policy.retry, attempts=tries, base_delay=0.01, max_delay=0.01),
        )
    return record.id


def order(*candidates: Candidate, key: str = "", amount: int = 10_000) -> ChargeOrder:
    return ChargeOrder(
        idempotency_key=key or f"key-{uuid.uuid4().hex}",
        amount=Money(amount, "EUR"),
        method="card",
        candidates=candidates,
    )


def intents(localstripe: LocalStripe) -> list[dict[str, Any]]:
    return localstripe.api("GET", INTENTS)["data"]


@pytest.fixture
def second_server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


# --- against localstripe ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_charge_succeeds_and_its_attempt_is_kept(
    services: Services, localstripe: LocalStripe
) -> None:
    connection = await stripe_connection(services, localstripe.url)
    customer, method = localstripe.saved_card()
    why = {"chose": "Stripe", "because": "the only gateway"}
    payment = await services.payments.charge(order(Candidate(connection, method, customer, why)))
    assert payment.status == SUCCEEDED
    assert payment.connection_id == connection
    assert payment.gateway_id.startswith("pi_")
    [attempt] = payment.attempts
    assert attempt.status == SUCCEEDED
    assert attempt.reference == f"{payment.reference}-1"
    assert attempt.why == why
    assert [intent["id"] for intent in intents(localstripe)] == [payment.gateway_id]


@pytest.mark.asyncio
async def test_the_same_key_again_returns_the_payment_and_charges_nothing(
    services: Services, localstripe: LocalStripe
) -> None:
    connection = await stripe_connection(services, localstripe.url)
    customer, method = localstripe.saved_card()
    first = await services.payments.charge(order(Candidate(connection, method, customer), key="k1"))
    again = await services.payments.charge(order(Candidate(connection, method, customer), key="k1"))
    assert again == first
    assert len(intents(localstripe)) == 1


@pytest.mark.asyncio
async def test_the_same_key_with_another_amount_is_refused(
    services: Services, localstripe: LocalStripe
) -> None:
    connection = await stripe_connection(services, localstripe.url)
    customer, method = localstripe.saved_card()
    await services.payments.charge(order(Candidate(connection, method, customer), key="k2"))
    with pytest.raises(IdempotencyConflict, match="another payment"):
        await services.payments.charge(
            order(Candidate(connection, method, customer), key="k2", amount=5_000)
        )
    assert len(intents(localstripe)) == 1


@pytest.mark.asyncio
async def test_a_declined_card_is_not_tried_at_another_gateway(
    services: Services, localstripe: LocalStripe, scripted_server: ScriptedServer
) -> None:
    connection = await stripe_connection(services, localstripe.url)
    other = await stripe_connection(services, scripted_server.url)
    customer, method = localstripe.saved_card(DECLINED_CARD)
    payment = await services.payments.charge(
        order(Candidate(connection, method, customer), Candidate(other, "pm_elsewhere"))
    )
    assert payment.status == FAILED
    assert payment.failure is not None
    assert payment.failure.kind is FailureKind.HARD_DECLINE
    assert len(payment.attempts) == 1
    assert scripted_server.received() == []


@pytest.mark.asyncio
async def test_a_partial_refund_then_the_rest_and_no_more(
    services: Services, localstripe: LocalStripe
) -> None:
    connection = await stripe_connection(services, localstripe.url)
    customer, method = localstripe.saved_card()
    payment = await services.payments.charge(order(Candidate(connection, method, customer)))
    part = await services.payments.refund(payment.id, Money(3_000, "EUR"), "sibling discount")
    rest = await services.payments.refund(payment.id)
    assert (part.status, part.amount) == ("succeeded", Money(3_000, "EUR"))
    assert (rest.status, rest.amount) == ("succeeded", Money(7_000, "EUR"))
    assert (await services.payments.payment(payment.id)).refundable == Money(0, "EUR")
    with pytest.raises(RefundRefused, match="Nothing is left"):
        await services.payments.refund(payment.id)
    refunds = localstripe.api("GET", "/v1/refunds", payment_intent=payment.gateway_id)["data"]
    assert sorted(refund["amount"] for refund in refunds) == [3_000, 7_000]


@pytest.mark.asyncio
async def test_refunds_at_the_same_moment_never_exceed_the_payment(
    services: Services, localstripe: LocalStripe
) -> None:
    connection = await stripe_connection(services, localstripe.url)
    customer, method = localstripe.saved_card()
    payment = await services.payments.charge(order(Candidate(connection, method, customer)))
    outcomes = await asyncio.gather(
        *(services.payments.refund(payment.id, Money(4_000, "EUR")) for _ in range(5)),
        return_exceptions=True,
    )
    made = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, RefundRefused)]
    assert (len(made), len(refused)) == (2, 3)
    assert str(refused[0]).startswith("Only EUR 20.00 of this payment is left to refund")
    assert (await services.payments.payment(payment.id)).refunded == Money(8_000, "EUR")


# --- gateways failing -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_gateway_refusing_with_503_is_passed_over_for_the_next(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(503))
    second_server.script("POST", INTENTS, Reply(200, json={"id": "pi_2", "status": "succeeded"}))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    payment = await services.payments.charge(
        order(Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    )
    assert payment.status == SUCCEEDED
    assert (payment.connection_id, payment.gateway_id) == (second, "pi_2")
    assert [attempt.status for attempt in payment.attempts] == [FAILED, SUCCEEDED]
    assert payment.attempts[0].failure is not None
    assert payment.attempts[0].failure.code == "http_503"


@pytest.mark.asyncio
async def test_a_500_is_asked_about_before_anything_else(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    # A 500 may come after the gateway acted. Asked again with the same key, Stripe repeats
    # what it answered: still 500, so the outcome stays unknown and no second gateway is tried.
    scripted_server.script("POST", INTENTS, then=Reply(500))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    payment = await services.payments.charge(
        order(Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    )
    assert payment.status == UNKNOWN
    assert len(scripted_server.received("POST", INTENTS)) == 2
    assert second_server.received() == []


@pytest.mark.asyncio
async def test_a_gateway_that_took_the_charge_but_timed_out_is_not_charged_elsewhere(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    # The first gateway takes the payment but its answer is lost; asked again with the same key
    # it says it succeeded. The second gateway is never called.
    scripted_server.script(
        "POST", INTENTS, Reply(hang=True), Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    payment = await services.payments.charge(
        order(Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    )
    assert payment.status == SUCCEEDED
    assert (payment.connection_id, payment.gateway_id) == (first, "pi_1")
    assert second_server.received() == []
    keys = {seen.headers["idempotency-key"] for seen in scripted_server.received()}
    assert keys == {payment.attempts[0].reference}


@pytest.mark.asyncio
async def test_while_the_outcome_cannot_be_found_out_nothing_else_is_tried(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    key = f"key-{uuid.uuid4().hex}"
    candidates = (Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    payment = await services.payments.charge(order(*candidates, key=key))
    assert payment.status == UNKNOWN
    assert second_server.received() == []
    # Later the first gateway answers again: the same key finds out, still without a second
    # gateway.
    scripted_server.script(
        "POST", INTENTS, then=Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    settled = await services.payments.charge(order(*candidates, key=key))
    assert (settled.id, settled.status, settled.gateway_id) == (payment.id, SUCCEEDED, "pi_1")
    assert second_server.received() == []


@pytest.mark.asyncio
async def test_a_gateway_that_cannot_be_reached_is_passed_over_at_once(
    services: Services, second_server: ScriptedServer
) -> None:
    unreachable = await stripe_connection(services, "http://127.0.0.1:9", fast=True)
    second = await stripe_connection(services, second_server.url)
    second_server.script("POST", INTENTS, Reply(200, json={"id": "pi_2", "status": "succeeded"}))
    payment = await services.payments.charge(
        order(Candidate(unreachable, "pm_a"), Candidate(second, "pm_b"))
    )
    assert payment.status == SUCCEEDED
    first_attempt = payment.attempts[0]
    assert first_attempt.status == FAILED
    assert first_attempt.failure is not None
    assert first_attempt.failure.kind is FailureKind.TECHNICAL


# --- after a crash ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_attempt_settled_just_before_a_crash_settles_its_payment_without_a_charge(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    # The process died after writing the attempt's success and before the payment's.
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    key = f"key-{uuid.uuid4().hex}"
    candidates = (Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    unknown = await services.payments.charge(order(*candidates, key=key))
    assert unknown.status == UNKNOWN

    def crash_state(session: Session) -> None:
        attempt = session.scalar(
            select(PaymentAttemptRow).where(PaymentAttemptRow.payment_id == unknown.id)
        )
        assert attempt is not None
        attempt.status, attempt.gateway_id = SUCCEEDED, "pi_written"

    await services.db.write(crash_state)
    sent = len(scripted_server.received())
    settled = await services.payments.charge(order(*candidates, key=key))
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, "pi_written")
    assert len(scripted_server.received()) == sent
    assert second_server.received() == []


@pytest.mark.asyncio
async def test_a_payment_on_its_way_is_never_charged_again(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, Reply(200, json={"id": "pi_1", "status": "processing"}))
    first = await stripe_connection(services, scripted_server.url)
    second = await stripe_connection(services, second_server.url)
    key = f"key-{uuid.uuid4().hex}"
    candidates = (Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    processing = await services.payments.charge(order(*candidates, key=key))
    again = await services.payments.charge(order(*candidates, key=key))
    assert processing.status == again.status == PROCESSING
    assert len(scripted_server.received()) == 1
    assert second_server.received() == []


# --- what the gateway may have done is never guessed ----------------------------------------


@pytest.mark.asyncio
async def test_a_timeout_then_a_503_among_the_client_s_own_tries_is_still_unknown(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    # The first try may have reached Stripe; the retry's 503 says nothing about it.
    scripted_server.script("POST", INTENTS, Reply(hang=True), then=Reply(503))
    first = await stripe_connection(services, scripted_server.url, fast=True, tries=2)
    second = await stripe_connection(services, second_server.url, fast=True)
    payment = await services.payments.charge(
        order(Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    )
    assert payment.status == UNKNOWN
    assert second_server.received() == []


@pytest.mark.asyncio
async def test_a_gateway_still_working_on_the_first_request_is_not_passed_over(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    busy = {
        "error": {
            "type": "idempotency_error",
            "code": "idempotency_key_in_use",
            "message": "There is currently another in-progress request using this key.",
        }
    }
    scripted_server.script("POST", INTENTS, Reply(hang=True), then=Reply(409, json=busy))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    payment = await services.payments.charge(
        order(Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    )
    assert payment.status == UNKNOWN
    assert second_server.received() == []


@pytest.mark.asyncio
async def test_a_day_later_the_attempt_is_searched_for_not_sent_again(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    key = f"key-{uuid.uuid4().hex}"
    payment = await services.payments.charge(order(Candidate(first, "pm_a"), key=key))
    assert payment.status == UNKNOWN

    def two_days_ago(session: Session) -> None:
        for row in session.scalars(
            select(PaymentAttemptRow).where(PaymentAttemptRow.payment_id == payment.id)
        ):
            row.started_at = row.started_at - timedelta(days=2)

    await services.db.write(two_days_ago)
    sent = len(scripted_server.received("POST", INTENTS))
    found = {"data": [{"id": "pi_old", "object": "payment_intent"}]}
    scripted_server.script("GET", INTENTS + "/search", Reply(200, json=found))
    scripted_server.script(
        "GET", INTENTS + "/pi_old", Reply(200, json={"id": "pi_old", "status": "succeeded"})
    )
    settled = await services.payments.charge(order(Candidate(first, "pm_a"), key=key))
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, "pi_old")
    assert len(scripted_server.received("POST", INTENTS)) == sent  # Stripe forgot the key


@pytest.mark.asyncio
async def test_a_webhook_s_success_during_a_lookup_is_not_undone(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    first = await stripe_connection(services, scripted_server.url, fast=True)

    def webhook_arrives(session: Session) -> None:
        attempt = session.scalar(select(PaymentAttemptRow))
        assert attempt is not None
        attempt.status, attempt.gateway_id = SUCCEEDED, "pi_hook"
        payment = session.get(PaymentRow, attempt.payment_id)
        assert payment is not None
        payment.status, payment.gateway_id = SUCCEEDED, "pi_hook"

    provider = await services.connections.provider(first)
    lookup = provider.sync  # type: ignore[attr-defined]

    async def sync_during_a_webhook(request: Any, gateway_id: str = "") -> Any:
        await services.db.write(webhook_arrives)
        return await lookup(request, gateway_id)

    provider.sync = sync_during_a_webhook  # type: ignore[attr-defined]
    payment = await services.payments.charge(order(Candidate(first, "pm_a")))
    assert (payment.status, payment.gateway_id) == (SUCCEEDED, "pi_hook")
    assert payment.attempts[0].status == SUCCEEDED


@pytest.mark.asyncio
async def test_a_refund_answered_500_stays_pending_with_its_amount_reserved(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script(
        "POST", INTENTS, then=Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    scripted_server.script("POST", "/v1/refunds", then=Reply(500))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    payment = await services.payments.charge(order(Candidate(first, "pm_a")))
    refund = await services.payments.refund(payment.id, Money(6_000, "EUR"))
    assert refund.status == "pending"
    assert (await services.payments.payment(payment.id)).refundable == Money(4_000, "EUR")


@pytest.mark.asyncio
async def test_an_unknown_invoice_or_payer_is_a_clear_error(
    services: Services, scripted_server: ScriptedServer
) -> None:
    first = await stripe_connection(services, scripted_server.url)
    asked = replace(order(Candidate(first, "pm_a")), invoice_id=987_654)
    with pytest.raises(NotFound, match="There is no invoice number 987654"):
        await services.payments.charge(asked)
    assert scripted_server.received() == []


# --- settling later, in the background --------------------------------------------------------


@pytest.mark.asyncio
async def test_a_payment_left_unknown_is_settled_by_asking_its_gateway_again(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    payment = await services.payments.charge(
        order(Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    )
    assert payment.status == UNKNOWN
    scripted_server.script(
        "POST", INTENTS, then=Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    assert await services.payments.settle(older_than=timedelta(0)) == 1
    settled = await services.payments.payment(payment.id)
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, "pi_1")
    assert second_server.received() == []
    assert await services.payments.settle(older_than=timedelta(0)) == 0  # nothing left


@pytest.mark.asyncio
async def test_a_payment_no_gateway_took_ends_failed_so_it_can_be_charged_again(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    payment = await services.payments.charge(order(Candidate(first, "pm_a")))

    def two_days_ago(session: Session) -> None:
        for row in session.scalars(select(PaymentAttemptRow)):
            row.started_at = row.started_at - timedelta(days=2)

    await services.db.write(two_days_ago)
    scripted_server.script("GET", INTENTS + "/search", Reply(200, json={"data": []}))
    await services.payments.settle(older_than=timedelta(0))
    settled = await services.payments.payment(payment.id)
    assert settled.status == FAILED
    assert settled.failure is not None
    assert settled.failure.message == "No gateway took this payment; it can be charged again."


@pytest.mark.asyncio
async def test_a_refund_left_pending_is_settled_by_asking_again_with_its_key(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script(
        "POST", INTENTS, then=Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    scripted_server.script("POST", "/v1/refunds", Reply(500))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    payment = await services.payments.charge(order(Candidate(first, "pm_a")))
    refund = await services.payments.refund(payment.id, Money(4_000, "EUR"))
    assert refund.status == "pending"
    scripted_server.script(
        "POST",
        "/v1/refunds",
        Reply(200, json={"id": "re_1", "status": "succeeded", "amount": 4000}),
    )
    await services.payments.settle(older_than=timedelta(0))
    [settled] = await services.payments.refunds(payment.id)
    assert (settled.status, settled.gateway_id) == ("succeeded", "re_1")
    keys = {
        seen.headers["idempotency-key"] for seen in scripted_server.received("POST", "/v1/refunds")
    }
    assert keys == {refund.reference}


@pytest.mark.asyncio
async def test_a_payment_on_its_way_is_asked_about_until_it_arrives(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, Reply(200, json={"id": "pi_1", "status": "processing"}))
    connection = await stripe_connection(services, scripted_server.url, fast=True)
    payment = await services.payments.charge(order(Candidate(connection, "pm_a")))
    assert payment.status == PROCESSING
    # Not yet: asked again only every so often.
    assert await services.payments.settle(older_than=timedelta(0)) == 0
    scripted_server.script(
        "GET", f"{INTENTS}/pi_1", Reply(200, json={"id": "pi_1", "status": "processing"})
    )
    assert await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0)) == 1
    assert (await services.payments.payment(payment.id)).status == PROCESSING
    scripted_server.script(
        "GET",
        f"{INTENTS}/pi_1",
        Reply(200, json={"id": "pi_1", "status": "succeeded"}),
    )
    assert await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0)) == 1
    arrived = await services.payments.payment(payment.id)
    assert arrived.status == SUCCEEDED
    assert arrived.attempts[0].status == SUCCEEDED
    assert await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0)) == 0
    charges = scripted_server.received("POST", INTENTS)
    assert len(charges) == 1  # asked about, never charged again


@pytest.mark.asyncio
async def test_a_payment_on_its_way_that_bounces_fails(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, Reply(200, json={"id": "pi_1", "status": "processing"}))
    connection = await stripe_connection(services, scripted_server.url, fast=True)
    payment = await services.payments.charge(order(Candidate(connection, "pm_a")))
    bounced = {
        "id": "pi_1",
        "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"},
    }
    # The gateway cannot be asked: nothing changes.
    scripted_server.script("GET", f"{INTENTS}/pi_1", Reply(503), then=Reply(200, json=bounced))
    await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0))
    assert (await services.payments.payment(payment.id)).status == PROCESSING
    await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0))
    failed = await services.payments.payment(payment.id)
    assert failed.status == FAILED
    assert failed.failure is not None
    assert failed.failure.kind is FailureKind.SOFT_DECLINE


@pytest.mark.asyncio
async def test_a_lost_refund_stays_pending_while_its_gateway_cannot_be_asked(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script(
        "POST", INTENTS, then=Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    scripted_server.script("POST", "/v1/refunds", Reply(500))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    payment = await services.payments.charge(order(Candidate(first, "pm_a")))
    await services.payments.refund(payment.id, Money(4_000, "EUR"))
    # Asking again meets a gateway refusing everything: the first refund may have been made.
    scripted_server.script("POST", "/v1/refunds", Reply(503))
    await services.payments.settle(older_than=timedelta(0))
    [still] = await services.payments.refunds(payment.id)
    assert still.status == "pending"
    assert (await services.payments.payment(payment.id)).refundable == Money(6_000, "EUR")


@pytest.mark.asyncio
async def test_a_refund_the_gateway_canceled_can_be_made_again(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script(
        "POST", INTENTS, then=Reply(200, json={"id": "pi_1", "status": "succeeded"})
    )
    scripted_server.script(
        "POST", "/v1/refunds", Reply(200, json={"id": "re_1", "status": "pending", "amount": 4000})
    )
    scripted_server.script(
        "GET", "/v1/refunds/re_1", Reply(200, json={"id": "re_1", "status": "canceled"})
    )
    first = await stripe_connection(services, scripted_server.url, fast=True)
    payment = await services.payments.charge(order(Candidate(first, "pm_a")))
    await services.payments.refund(payment.id, Money(4_000, "EUR"))
    await services.payments.settle(older_than=timedelta(0))
    [canceled] = await services.payments.refunds(payment.id)
    assert canceled.status == "canceled"
    assert (await services.payments.payment(payment.id)).refundable == Money(10_000, "EUR")


@pytest.mark.asyncio
async def test_a_payment_found_failed_on_the_gateway_s_side_moves_on_to_the_next(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    processing_error = {
        "error": {
            "type": "card_error",
            "code": "processing_error",
            "message": "An error occurred while processing your card.",
            "payment_intent": {"id": "pi_1", "status": "requires_payment_method"},
        }
    }
    # The first answer is lost; asked again, Stripe says the payment failed in its processing.
    scripted_server.script(
        "POST", INTENTS, Reply(hang=True), then=Reply(402, json=processing_error)
    )
    second_server.script("POST", INTENTS, Reply(200, json={"id": "pi_2", "status": "succeeded"}))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    payment = await services.payments.charge(
        order(Candidate(first, "pm_a"), Candidate(second, "pm_b"))
    )
    assert (payment.status, payment.connection_id) == (SUCCEEDED, second)


@pytest.mark.asyncio
async def test_one_payment_that_cannot_be_settled_does_not_stop_the_others(
    services: Services, scripted_server: ScriptedServer, second_server: ScriptedServer
) -> None:
    scripted_server.script("POST", INTENTS, then=Reply(hang=True))
    second_server.script("POST", INTENTS, then=Reply(hang=True))
    first = await stripe_connection(services, scripted_server.url, fast=True)
    second = await stripe_connection(services, second_server.url, fast=True)
    broken = await services.payments.charge(order(Candidate(first, "pm_a")))
    fine = await services.payments.charge(order(Candidate(second, "pm_b")))
    assert broken.status == fine.status == UNKNOWN

    async def unforeseen(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("an answer no one foresaw")

    provider = await services.connections.provider(first)
    provider.sync = unforeseen  # type: ignore[attr-defined]
    second_server.script(
        "POST", INTENTS, then=Reply(200, json={"id": "pi_2", "status": "succeeded"})
    )
    await services.payments.settle(older_than=timedelta(0))
    assert (await services.payments.payment(broken.id)).status == UNKNOWN
    assert (await services.payments.payment(fine.id)).status == SUCCEEDED
