"""PayPal payments end to end over loopback, against the fake PayPal (tests/fakes/paypal.py) and
through the real connection: saved methods charged by Orders v2, declines and how they are
classified, answers lost and found again, payment links approved by the payer and captured once,
refunds that never exceed the capture, and PayPal's signed webhooks settling payments and
refunds through the receiver and the inbox."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.domain.inbox import PROCESSED
from app.domain.money import Money
from app.domain.payments import ChargeRequest, ChargeStatus, FailureKind, RefundStatus
from app.providers.gateway import LinkRequest, PaymentGateway, Unsupported
from app.providers.paypal import PayPal
from app.services import Services
from app.services.payments import FAILED, PROCESSING, SUCCEEDED, UNKNOWN, Candidate, ChargeOrder
from app.services.receiver import Receiver
from tests.fakes.paypal import (
    DECLINED_CARD_VAULT,
    DECLINED_PAYPAL_VAULT,
    INSUFFICIENT_CARD_VAULT,
    PAYEE_BLOCKED_VAULT,
    PENDING_VAULT,
    FakePayPal,
)
from tests.fakes.scripted import Reply, ScriptedServer
from tests.fakes.server import served

ORDERS = "/v2/checkout/orders"
SAVED = "vault-8kk8451t"  # a saved PayPal account or card that PayPal charges


@pytest.fixture
def fake() -> Iterator[FakePayPal]:
    paypal = FakePayPal()
    with served(paypal.app) as url:
        paypal.base_url = url
        yield paypal


async def connect(services: Services, fake: FakePayPal, **config: str) -> PayPal:
    record = await services.connections.add(
        "paypal",
        f"PayPal {uuid.uuid4().hex[:6]}",
        {"client_id": fake.client_id, "api_url": fake.base_url, **config},
        {"client_secret": fake.client_secret},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, PayPal)
    assert isinstance(provider, PaymentGateway)
    # A PayPal that hangs is given up on quickly.
    policy = provider.client.policy
    provider.client.policy = replace(
        policy, timeout=0.5, retry=replace(policy.retry, attempts=2, base_delay=0.01)
    )
    return provider


def charge_of(token: str = SAVED, method: str = "paypal", minor: int = 10_000) -> ChargeRequest:
    return ChargeRequest(
        reference=f"pay_{uuid.uuid4().hex}-1",
        amount=Money(minor, "USD"),
        method=method,
        token=token,
        description="Violin lessons, autumn term",
        created_at=time.time(),
    )


def order_of(*candidates: Candidate, method: str = "paypal") -> ChargeOrder:
    return ChargeOrder(
        idempotency_key=f"key-{uuid.uuid4().hex}",
        amount=Money(10_000, "USD"),
        method=method,
        candidates=candidates,
    )


def created(fake: FakePayPal) -> list[dict[str, Any]]:
    """What Switchboard asked PayPal to make, request by request."""
    return [json.loads(seen.body) for seen in fake.seen if seen.path == ORDERS]


# --- charging a saved method ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_saved_paypal_account_is_charged_at_once_with_our_reference(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    request = charge_of()
    result = await paypal.charge(request)
    assert result.status is ChargeStatus.SUCCEEDED, result.failure
    assert result.gateway_id in fake.orders  # the payment's id is PayPal's order
    assert result.fee == Money(398, "USD")  # 3.49 % + 0.49, as the capture says
    [sent] = created(fake)
    assert sent["intent"] == "CAPTURE"
    assert sent["payment_source"] == {"paypal": {"vault_id": SAVED}}
    [unit] = sent["purchase_units"]
    assert unit["amount"] == {"currency_code": "USD", "value": "100.00"}
    assert unit["custom_id"] == unit["invoice_id"] == request.reference
    assert fake.request_ids(ORDERS) == [request.reference]
    [seen] = [seen for seen in fake.seen if seen.path == ORDERS]
    assert seen.headers["prefer"] == "return=representation"
    [capture] = fake.captures_of(result.gateway_id)
    assert (capture["status"], capture["custom_id"]) == ("COMPLETED", request.reference)
    assert (await paypal.sync(request, result.gateway_id)).status is ChargeStatus.SUCCEEDED


@pytest.mark.asyncio
async def test_the_same_request_id_is_answered_with_the_first_order_whatever_the_body(
    services: Services, fake: FakePayPal
) -> None:
    # PayPal answers a request ID it has seen with what the first request made: a reference
    # must never be reused for another payment (the payments service gives each attempt one).
    paypal = await connect(services, fake)
    request = charge_of()
    first = await paypal.charge(request)
    again = await paypal.charge(replace(request, amount=Money(5, "USD")))
    assert again.gateway_id == first.gateway_id
    assert len(fake.orders) == 1
    assert len(fake.captures) == 1


@pytest.mark.asyncio
async def test_a_saved_card_is_charged_as_a_merchant_initiated_stored_credential(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    result = await paypal.charge(charge_of(method="card"))
    assert result.status is ChargeStatus.SUCCEEDED, result.failure
    [sent] = created(fake)
    assert sent["payment_source"]["card"] == {
        "vault_id": SAVED,
        "stored_credential": {
            "payment_initiator": "MERCHANT",
            "payment_type": "UNSCHEDULED",
            "usage": "SUBSEQUENT",
        },
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("token", "method", "kind", "code"),
    [
        (DECLINED_PAYPAL_VAULT, "paypal", FailureKind.HARD_DECLINE, "INSTRUMENT_DECLINED"),
        (DECLINED_CARD_VAULT, "card", FailureKind.HARD_DECLINE, "DECLINED/0500"),
        (INSUFFICIENT_CARD_VAULT, "card", FailureKind.SOFT_DECLINE, "DECLINED/5120"),
    ],
)
async def test_declines_are_classified_and_said_plainly(
    services: Services, fake: FakePayPal, token: str, method: str, kind: FailureKind, code: str
) -> None:
    paypal = await connect(services, fake)
    result = await paypal.charge(charge_of(token, method))
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (kind, code)
    assert result.failure.message.startswith("PayPal declined the payment: ")
    assert not result.failure.may_fail_over


@pytest.mark.asyncio
async def test_a_declined_payment_is_not_tried_at_another_gateway(
    services: Services, fake: FakePayPal
) -> None:
    declining = await connect(services, fake)
    other = await connect(services, fake)
    payment = await services.payments.charge(
        order_of(
            Candidate(declining.client.connection_id, DECLINED_PAYPAL_VAULT),
            Candidate(other.client.connection_id, SAVED),
        )
    )
    assert payment.status == FAILED
    assert payment.failure is not None
    assert payment.failure.kind is FailureKind.HARD_DECLINE
    assert len(payment.attempts) == 1
    assert len(created(fake)) == 1  # the second gateway was never asked
    assert fake.orders == {}


@pytest.mark.asyncio
async def test_paypal_failing_with_5xx_is_technical_and_another_gateway_takes_it(
    services: Services, fake: FakePayPal
) -> None:
    failing = await connect(services, fake)
    assert (await failing.check_health()).ok  # a token in hand before PayPal fails
    fake.failing = True
    result = await failing.charge(charge_of())
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (FailureKind.TECHNICAL, "http_503")
    assert result.failure.may_fail_over
    # Through the payments service, the next gateway is tried.
    other_fake = FakePayPal()
    with served(other_fake.app) as url:
        other_fake.base_url = url
        other = await connect(services, other_fake)
        payment = await services.payments.charge(
            order_of(
                Candidate(failing.client.connection_id, SAVED),
                Candidate(other.client.connection_id, SAVED),
            )
        )
    assert payment.status == SUCCEEDED
    assert payment.connection_id == other.client.connection_id
    assert [attempt.status for attempt in payment.attempts] == [FAILED, SUCCEEDED]


@pytest.mark.asyncio
async def test_an_amount_paypal_cannot_take_is_refused_before_asking(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    forints = replace(charge_of(), amount=Money(1_050, "HUF"))  # 10.50 HUF: PayPal takes whole
    result = await paypal.charge(forints)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (
        FailureKind.TECHNICAL,
        "decimal_precision",
    )
    whole = await paypal.charge(replace(charge_of(), amount=Money(1_000, "HUF")))
    assert whole.succeeded
    assert created(fake)[-1]["purchase_units"][0]["amount"] == {
        "currency_code": "HUF",
        "value": "10",
    }
    assert fake.count(ORDERS) == 1


# --- answers lost on the way ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_lost_answer_is_found_by_sync_and_no_second_order_is_made(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    second = await connect(services, fake)
    fake.hang_after_accept = True  # PayPal takes the payment; its answers never arrive
    payment = await services.payments.charge(
        order_of(
            Candidate(paypal.client.connection_id, SAVED),
            Candidate(second.client.connection_id, SAVED),
        )
    )
    assert payment.status == UNKNOWN
    assert len(payment.attempts) == 1  # never tried elsewhere while it may have been taken
    [order_id] = fake.orders
    fake.hang_after_accept = False
    assert await services.payments.settle(older_than=timedelta(0)) == 1
    settled = await services.payments.payment(payment.id)
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, order_id)
    assert list(fake.orders) == [order_id]
    assert len(fake.captures_of(order_id)) == 1
    assert set(fake.request_ids(ORDERS)) == {payment.attempts[0].reference}


@pytest.mark.asyncio
async def test_after_paypal_forgets_the_request_id_the_outcome_stays_unknown(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    old = replace(charge_of(), created_at=time.time() - 7 * 3600)
    result = await paypal.sync(old)
    assert result.status is ChargeStatus.FAILED  # never NOT_FOUND: PayPal did not say so
    assert result.failure is not None
    assert result.failure.kind is FailureKind.UNKNOWN
    assert old.reference in result.failure.message
    assert fake.count(ORDERS) == 0


@pytest.mark.asyncio
async def test_an_order_paypal_does_not_have_is_not_found(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    result = await paypal.sync(charge_of(), "0VF52814937998046")
    assert result.status is ChargeStatus.NOT_FOUND


# --- payment links ------------------------------------------------------------------------------


def link_of(minor: int = 4_500) -> LinkRequest:
    return LinkRequest(
        reference=f"pay_{uuid.uuid4().hex}-1",
        amount=Money(minor, "EUR"),
        description="Summer camp deposit",
        return_url="https://school.example/paid",
        payer_email="parent@example.com",
    )


@pytest.mark.asyncio
async def test_a_payment_link_is_paid_by_the_payer_and_captured_once(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    link = await paypal.create_link(link_of())
    assert link.url == f"https://www.sandbox.paypal.com/checkoutnow?token={link.gateway_id}"
    [sent] = created(fake)
    context = sent["payment_source"]["paypal"]["experience_context"]
    assert context["return_url"] == "https://school.example/paid"
    # The link's payment is synced as a charge without a saved method.
    request = ChargeRequest(link_of().reference, Money(4_500, "EUR"), "paypal", "")
    waiting = await paypal.sync(request, link.gateway_id)
    assert waiting.failure is not None
    assert (waiting.failure.kind, waiting.failure.code) == (
        FailureKind.UNKNOWN,
        "waiting_for_payer",
    )
    fake.approve(link.gateway_id)
    # Two syncs at once both find it approved: the second capture is PayPal's replay.
    both = await asyncio.gather(
        paypal.sync(request, link.gateway_id), paypal.sync(request, link.gateway_id)
    )
    assert [result.status for result in both] == [ChargeStatus.SUCCEEDED] * 2
    again = await paypal.sync(request, link.gateway_id)
    assert again.status is ChargeStatus.SUCCEEDED
    assert len(fake.captures_of(link.gateway_id)) == 1


@pytest.mark.asyncio
async def test_a_link_paypal_will_not_make_says_why(services: Services, fake: FakePayPal) -> None:
    paypal = await connect(services, fake)
    with pytest.raises(Unsupported, match="whole units"):
        await paypal.create_link(replace(link_of(), amount=Money(1_999, "TWD")))


# --- refunds ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_partial_refund_then_the_rest_and_a_third_is_refused(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    paid = await paypal.charge(charge_of())
    part = await paypal.refund(paid.gateway_id, Money(3_000, "USD"), "ref_1")
    assert (part.status, part.amount) == (RefundStatus.SUCCEEDED, Money(3_000, "USD"))
    too_much = await paypal.refund(paid.gateway_id, Money(7_001, "USD"), "ref_2")
    assert too_much.status is RefundStatus.FAILED
    assert too_much.failure is not None
    assert (too_much.failure.kind, too_much.failure.code) == (
        FailureKind.TECHNICAL,
        "REFUND_AMOUNT_EXCEEDED",
    )
    rest = await paypal.refund(paid.gateway_id, Money(7_000, "USD"), "ref_3")
    assert (rest.status, rest.amount) == (RefundStatus.SUCCEEDED, Money(7_000, "USD"))
    again = await paypal.refund(paid.gateway_id, Money(7_000, "USD"), "ref_3")
    assert again.gateway_id == rest.gateway_id  # the same request ID: the same refund
    third = await paypal.refund(paid.gateway_id, Money(100, "USD"), "ref_4")
    assert third.status is RefundStatus.FAILED
    assert third.failure is not None
    assert third.failure.code == "CAPTURE_FULLY_REFUNDED"
    assert third.failure.message.startswith("PayPal refused the refund: ")
    [capture] = fake.captures_of(paid.gateway_id)
    assert (capture["status"], capture["refunded"]) == ("REFUNDED", "100.00")
    assert len(fake.refunds) == 2
    status = await paypal.refund_status(part.gateway_id, part.amount)
    assert status.status is RefundStatus.SUCCEEDED


@pytest.mark.asyncio
async def test_the_balance_is_read_a_period_at_a_time_not_page_by_page(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    with pytest.raises(Unsupported, match="Activity"):
        await paypal.balance_entries()
    with pytest.raises(Unsupported, match="Activity"):
        await paypal.payouts()


# --- webhooks -------------------------------------------------------------------------------------


class Hooks:
    """PayPal's notifications posted, signed, into the running receiver."""

    def __init__(self, fake: FakePayPal, client: httpx.AsyncClient, path: str, webhook_id: str):
        self.fake, self.client, self.path, self.webhook_id = fake, client, path, webhook_id

    async def deliver(self, event: dict[str, Any]) -> None:
        headers, body = self.fake.notification(self.webhook_id, event)
        response = await self.client.post(self.path, content=body, headers=headers)
        assert (response.status_code, response.text) == (200, "accepted")


@pytest.fixture
async def hooked(services: Services, fake: FakePayPal) -> AsyncIterator[tuple[PayPal, Hooks]]:
    webhook_id = fake.add_webhook("https://office.example/hooks")
    paypal = await connect(services, fake, webhook_id=webhook_id)
    record = await services.connections.connection(paypal.client.connection_id)
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    try:
        async with httpx.AsyncClient(base_url=receiver.address.url, timeout=20) as client:
            path = f"/hooks/{record.id}/{record.webhook_token}"
            yield paypal, Hooks(fake, client, path, webhook_id)
    finally:
        await receiver.stop()


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


async def process(services: Services) -> None:
    outcome = await services.inbox_worker.process_due()
    assert (outcome.failed, outcome.dead) == (0, 0)


@pytest.mark.asyncio
async def test_a_pending_payment_is_settled_by_paypal_s_signed_webhook(
    services: Services, fake: FakePayPal, hooked: tuple[PayPal, Hooks]
) -> None:
    paypal, hooks = hooked
    payment = await services.payments.charge(
        order_of(Candidate(paypal.client.connection_id, PENDING_VAULT))
    )
    assert payment.status == PROCESSING
    [pending] = fake.events_of("PAYMENT.CAPTURE.PENDING")
    await hooks.deliver(pending)
    [capture] = fake.captures_of(payment.gateway_id)
    fake.settle_pending(capture["id"])
    [completed] = fake.events_of("PAYMENT.CAPTURE.COMPLETED")
    await hooks.deliver(completed)
    await process(services)
    settled = await services.payments.payment(payment.id)
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, payment.gateway_id)
    assert settled.attempts[0].status == SUCCEEDED


@pytest.mark.asyncio
async def test_a_denied_capture_fails_the_payment_as_a_decline(
    services: Services, fake: FakePayPal, hooked: tuple[PayPal, Hooks]
) -> None:
    paypal, hooks = hooked
    payment = await services.payments.charge(
        order_of(Candidate(paypal.client.connection_id, PENDING_VAULT))
    )
    [capture] = fake.captures_of(payment.gateway_id)
    fake.settle_pending(capture["id"], "DENIED")
    [denied] = fake.events_of("PAYMENT.CAPTURE.DENIED")
    await hooks.deliver(denied)
    await process(services)
    failed = await services.payments.payment(payment.id)
    assert failed.status == FAILED
    assert failed.failure is not None
    assert failed.failure.kind is FailureKind.HARD_DECLINE


@pytest.mark.asyncio
async def test_a_charge_and_a_refund_whose_answers_were_lost_are_settled_by_webhooks(
    services: Services, fake: FakePayPal, hooked: tuple[PayPal, Hooks]
) -> None:
    paypal, hooks = hooked
    fake.hang_after_accept = True
    payment = await services.payments.charge(
        order_of(Candidate(paypal.client.connection_id, SAVED))
    )
    assert payment.status == UNKNOWN
    [completed] = fake.events_of("PAYMENT.CAPTURE.COMPLETED")
    await hooks.deliver(completed)
    await process(services)
    paid = await services.payments.payment(payment.id)
    assert (paid.status, paid.gateway_id) == (SUCCEEDED, next(iter(fake.orders)))

    # The refund is made; its answer is lost too.
    refund = await services.payments.refund(paid.id, Money(2_500, "USD"))
    assert refund.status == "pending"
    fake.hang_after_accept = False
    [refunded] = fake.events_of("PAYMENT.CAPTURE.REFUNDED")
    assert refunded["resource"]["custom_id"] == refund.reference
    await hooks.deliver(refunded)
    await process(services)
    [settled] = await services.payments.refunds(paid.id)
    assert (settled.status, settled.gateway_id) == ("succeeded", refunded["resource"]["id"])
    assert (await services.payments.payment(paid.id)).refundable == Money(7_500, "USD")


@pytest.mark.asyncio
async def test_an_approved_link_is_left_for_the_sync_to_capture(
    services: Services, fake: FakePayPal, hooked: tuple[PayPal, Hooks]
) -> None:
    paypal, hooks = hooked
    link = await paypal.create_link(link_of())
    fake.approve(link.gateway_id)
    [approved] = fake.events_of("CHECKOUT.ORDER.APPROVED")
    assert approved["resource"]["id"] == link.gateway_id
    await hooks.deliver(approved)
    await process(services)
    assert fake.captures_of(link.gateway_id) == []  # no call to PayPal from the handler
    [event] = await services.inbox.recent()
    assert event.status == PROCESSED


# --- the school's own risk settings, refusals and answers that are not what they should be -------


@pytest.mark.asyncio
async def test_a_payer_the_school_s_paypal_risk_settings_block_is_a_hard_decline(
    services: Services, fake: FakePayPal
) -> None:
    blocked = await connect(services, fake)
    other = await connect(services, fake)
    payment = await services.payments.charge(
        order_of(
            Candidate(blocked.client.connection_id, PAYEE_BLOCKED_VAULT),
            Candidate(other.client.connection_id, SAVED),
        )
    )
    assert payment.status == FAILED
    assert payment.failure is not None
    assert (payment.failure.kind, payment.failure.code) == (
        FailureKind.HARD_DECLINE,
        "PAYEE_BLOCKED_TRANSACTION",
    )
    assert "risk settings" in payment.failure.message
    assert len(payment.attempts) == 1  # never tried at the other gateway
    assert fake.orders == {}


async def scripted_paypal(services: Services, server: ScriptedServer) -> PayPal:
    """A PayPal connection to a scripted server (tests/fakes/scripted.py), each call made once."""
    server.script(
        "POST", "/v1/oauth2/token", Reply(200, json={"access_token": "tok", "expires_in": 32_400})
    )
    record = await services.connections.add(
        "paypal",
        f"PayPal {uuid.uuid4().hex[:6]}",
        {"client_id": "AeScripted", "api_url": server.url},
        {"client_secret": "EScripted"},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, PayPal)
    policy = provider.client.policy
    provider.client.policy = replace(
        policy, timeout=0.5, retry=replace(policy.retry, attempts=1, base_delay=0.01)
    )
    return provider


HTML_404 = Reply(404, body=b"<html>Not Found</html>", headers={"Content-Type": "text/html"})
ORDER_ID = "5O190127TN364715T"


@pytest.mark.asyncio
async def test_only_paypal_s_resource_not_found_is_not_found(
    services: Services, scripted_server: ScriptedServer
) -> None:
    paypal = await scripted_paypal(services, scripted_server)
    path = f"{ORDERS}/{ORDER_ID}"
    for reply in (
        HTML_404,  # a wrong address, a proxy
        Reply(404, json={"name": "NOT_FOUND_SOMETHING_ELSE"}),
        Reply(403, json={"name": "NOT_AUTHORIZED", "message": "Authorization failed."}),
    ):
        scripted_server.script("GET", path, reply)
        result = await paypal.sync(charge_of(), ORDER_ID)
        assert result.status is ChargeStatus.FAILED, reply
        assert result.failure is not None
        assert result.failure.kind is FailureKind.UNKNOWN
    scripted_server.script(
        "GET", path, Reply(404, json={"name": "RESOURCE_NOT_FOUND", "message": "No such order."})
    )
    assert (await paypal.sync(charge_of(), ORDER_ID)).status is ChargeStatus.NOT_FOUND


@pytest.mark.asyncio
async def test_a_capture_that_raises_keeps_the_order_s_id(
    services: Services, scripted_server: ScriptedServer
) -> None:
    paypal = await scripted_paypal(services, scripted_server)
    approved = {"id": ORDER_ID, "status": "APPROVED"}
    scripted_server.script("POST", ORDERS, Reply(201, json=approved))
    capture = f"{ORDERS}/{ORDER_ID}/capture"
    for reply, kind in ((Reply(201, hang=True), FailureKind.UNKNOWN), (Reply(502), None)):
        scripted_server.script("POST", capture, reply)
        charged = await paypal.charge(charge_of())
        assert charged.status is ChargeStatus.FAILED
        assert charged.gateway_id == ORDER_ID
        assert charged.failure is not None
        if kind is not None:
            assert charged.failure.kind is kind
        # A sync repeating the request finds the order; its capture still unanswered.
        synced = await paypal.sync(charge_of())
        assert synced.gateway_id == ORDER_ID
        assert synced.failure is not None
        assert synced.failure.kind is FailureKind.UNKNOWN


@pytest.mark.asyncio
async def test_malformed_answers_are_classified_never_raised(
    services: Services, scripted_server: ScriptedServer
) -> None:
    paypal = await scripted_paypal(services, scripted_server)
    path = f"{ORDERS}/{ORDER_ID}"
    for units in (
        [{"payments": {"captures": 5}}],
        [{"payments": {"captures": "x"}}],
        5,
        [None, {"payments": None}],
    ):
        scripted_server.script(
            "GET",
            path,
            Reply(200, json={"id": ORDER_ID, "status": "COMPLETED", "purchase_units": units}),
        )
        result = await paypal.sync(charge_of(), ORDER_ID)
        assert result.status is ChargeStatus.FAILED
        assert result.failure is not None
        assert result.failure.kind is FailureKind.UNKNOWN
    for fee in ("Infinity", "NaN", "1e400", "-1", None, [1]):
        captured = {
            "id": ORDER_ID,
            "status": "COMPLETED",
            "purchase_units": [
                {
                    "payments": {
                        "captures": [
                            {
                                "id": "CAP1",
                                "status": "COMPLETED",
                                "seller_receivable_breakdown": {
                                    "paypal_fee": {"currency_code": "USD", "value": fee}
                                },
                            }
                        ]
                    }
                }
            ],
        }
        scripted_server.script("GET", path, Reply(200, json=captured))
        paid = await paypal.sync(charge_of(), ORDER_ID)
        assert (paid.status, paid.fee) == (ChargeStatus.SUCCEEDED, None), fee
    scripted_server.script(
        "POST", ORDERS, Reply(400, json={"name": "INVALID_REQUEST", "details": 5})
    )
    refused = await paypal.charge(charge_of())
    assert refused.failure is not None
    assert (refused.failure.kind, refused.failure.code) == (
        FailureKind.TECHNICAL,
        "INVALID_REQUEST",
    )
    scripted_server.script(
        "POST",
        "/v2/payments/captures/CAP1/refund",
        Reply(
            201,
            json={
                "id": "REF1",
                "status": "COMPLETED",
                "amount": {"currency_code": "USD", "value": "Infinity"},
            },
        ),
    )
    refund = await paypal.refund(ORDER_ID, Money(500, "USD"), "ref_1")
    assert (refund.status, refund.amount) == (RefundStatus.SUCCEEDED, Money(500, "USD"))


@pytest.mark.asyncio
async def test_a_refund_whose_order_cannot_be_read_stays_pending_and_unknown(
    services: Services, scripted_server: ScriptedServer
) -> None:
    paypal = await scripted_paypal(services, scripted_server)
    for reply in (Reply(503), Reply(500), Reply(429), Reply(200, hang=True)):
        scripted_server.script("GET", f"{ORDERS}/{ORDER_ID}", reply)
        result = await paypal.refund(ORDER_ID, Money(500, "USD"), "ref_1")
        assert result.status is RefundStatus.PENDING, reply
        assert result.failure is not None
        assert result.failure.kind is FailureKind.UNKNOWN
    assert scripted_server.received("POST", "/v2/payments/captures/CAP1/refund") == []
