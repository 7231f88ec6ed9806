"""Payment links: the office asks a gateway for a page where the family pays; the payment is on
its way until they have, then paid (by the gateway's webhook or the regular look-ups), and a
link never paid is given up on. Played against the fake PayPal, whose links are orders the
payer approves and Switchboard captures once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.domain.money import Money
from app.providers.gateway import Unsupported
from app.services import Services
from app.services.payments import FAILED, PROCESSING, SUCCEEDED, LinkOrder
from app.store.base import utcnow
from app.store.payments import PaymentAttemptRow
from tests.fakes.paypal import FakePayPal
from tests.fakes.server import served
from tests.providers.test_paypal_orders import connect


@pytest.fixture
def fake() -> Iterator[FakePayPal]:
    paypal = FakePayPal()
    with served(paypal.app) as url:
        paypal.base_url = url
        yield paypal


def link_order(connection_id: int, key: str = "") -> LinkOrder:
    return LinkOrder(
        idempotency_key=key or f"link-{uuid.uuid4().hex}",
        amount=Money(45_000, "USD"),
        connection_id=connection_id,
        description="Term 1 tuition",
    )


def captures(fake: FakePayPal) -> int:
    return sum(1 for seen in fake.seen if seen.method == "POST" and seen.path.endswith("/capture"))


@pytest.mark.asyncio
async def test_a_link_is_paid_by_the_family_and_captured_once(
    services: Services, fake: FakePayPal
) -> None:
    paypal = await connect(services, fake)
    connection = next(r.id for r in await services.connections.connections())
    payment = await services.payments.create_link(link_order(connection, key="k-link"))
    assert payment.status == PROCESSING
    assert payment.link.startswith("https://www.sandbox.paypal.com/checkoutnow?token=")
    assert payment.gateway_id in fake.orders
    again = await services.payments.create_link(link_order(connection, key="k-link"))
    assert again.id == payment.id
    assert len(fake.orders) == 1  # the same key asks for no second link
    # Not paid yet: asked about, still on its way.
    await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0))
    assert (await services.payments.payment(payment.id)).status == PROCESSING
    fake.approve(payment.gateway_id)
    await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0))
    paid = await services.payments.payment(payment.id)
    assert paid.status == SUCCEEDED
    assert paid.link == payment.link
    await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0))
    assert captures(fake) == 1
    assert paypal.features  # the gateway says it makes links


@pytest.mark.asyncio
async def test_a_link_never_paid_is_given_up_after_thirty_days(
    services: Services, fake: FakePayPal
) -> None:
    await connect(services, fake)
    connection = next(r.id for r in await services.connections.connections())
    payment = await services.payments.create_link(link_order(connection))

    def age(session: Session) -> None:
        session.execute(
            update(PaymentAttemptRow)
            .where(PaymentAttemptRow.payment_id == payment.id)
            .values(started_at=utcnow() - timedelta(days=31))
        )

    await services.db.write(age)
    await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0))
    expired = await services.payments.payment(payment.id)
    assert expired.status == FAILED
    assert expired.failure is not None
    assert expired.failure.message == "The payment link was not paid within 30 days."


@pytest.mark.asyncio
async def test_a_link_the_gateway_cannot_make_fails_plainly(
    services: Services, fake: FakePayPal
) -> None:
    await connect(services, fake)
    connection = next(r.id for r in await services.connections.connections())
    fake.failing = True
    payment = await services.payments.create_link(link_order(connection))
    assert payment.status == FAILED
    assert payment.failure is not None
    assert "did not make the payment link" in payment.failure.message
    assert payment.link == ""


@pytest.mark.asyncio
async def test_a_gateway_without_links_is_refused_before_anything_is_kept(
    services: Services,
) -> None:
    record = await services.connections.add(
        "sandbox-payments", "Sandbox", {"latency_ms": 1, "latency_p95_ms": 2}, {"api_key": "k"}
    )
    with pytest.raises(Unsupported, match="does not make payment links"):
        await services.payments.create_link(link_order(record.id))
    assert await services.payments.payments(10) == []
