"""Charging a payer: their saved methods say which gateways can take the payment, the router
orders those and says why, and every attempt teaches it. Gateways are sandboxes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session

from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.domain.routing import PaymentAsk
from app.services import Services
from app.services.payments import SUCCEEDED, Payment
from app.services.routing import RoutingService
from app.store.school import Guardian


async def guardian(services: Services) -> int:
    def write(session: Session) -> int:
        row = Guardian(ref=f"G-{uuid.uuid4().hex[:6]}", first_name="Ann", last_name="Moyo")
        session.add(row)
        session.flush()
        return row.id

    return await services.db.write(write)


async def sandbox(services: Services, name: str, **config: float) -> int:
    record = await services.connections.add(
        "sandbox-payments",
        name,
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, **config},
        {"api_key": "sk_sandbox"},
    )
    return record.id


async def pay(services: Services, payer: int, minor: int = 10_000) -> Payment:
    return await services.routing.charge(
        services.payments,
        guardian_id=payer,
        amount=Money(minor, "USD"),
        method="card",
        idempotency_key=uuid.uuid4().hex,
    )


@pytest.mark.asyncio
async def test_a_payer_is_charged_where_their_method_is_saved(services: Services) -> None:
    payer = await guardian(services)
    await sandbox(services, "Cheap", approval_rate=1, fee_percent=1.5)
    held = await sandbox(services, "Dear", approval_rate=1, fee_percent=3.5)
    await services.routing.save_method(payer, held, "card", "pm_sandbox_visa", label="Visa 4242")
    payment = await pay(services, payer)
    assert payment.status == SUCCEEDED
    assert payment.connection_id == held


@pytest.mark.asyncio
async def test_a_gateway_whose_breaker_is_open_is_passed_over_and_the_attempt_says_why(
    services: Services,
) -> None:
    payer = await guardian(services)
    cheap = await sandbox(services, "Cheap", approval_rate=1, fee_percent=1.5)
    dear = await sandbox(services, "Dear", approval_rate=1, fee_percent=3.5)
    for connection in (cheap, dear):
        await services.routing.save_method(payer, connection, "card", f"pm_sandbox_{connection}")
    await services.connections.hold_open(cheap)
    payment = await pay(services, payer)
    assert payment.connection_id == dear
    [attempt] = payment.attempts
    assert attempt.why["order"] == [str(dear), str(cheap)]
    assert "Cheap eliminated: held open for maintenance" in attempt.why["explanation"]


@pytest.mark.asyncio
async def test_the_router_learns_which_gateway_approves_more(services: Services) -> None:
    payer = await guardian(services)
    cheap = await sandbox(services, "Cheap but choosy", approval_rate=0.5, fee_percent=2.5)
    dear = await sandbox(services, "Dear but reliable", approval_rate=1.0, fee_percent=2.9)
    for connection in (cheap, dear):
        await services.routing.save_method(payer, connection, "card", f"pm_sandbox_{connection}")
    payments = [await pay(services, payer) for _ in range(80)]
    last = [payment.connection_id for payment in payments[-20:]]
    assert last.count(dear) >= 17
    # A new process is taught the recorded attempts before its first decision.
    fresh = RoutingService(services.db, services.connections)
    candidates, decision = await fresh.candidates(payer, PaymentAsk(Money(10_000, "USD"), "card"))
    assert candidates[0].connection_id == dear
    assert "over the last" in decision.explanation


@pytest.mark.asyncio
async def test_a_payer_without_a_saved_method_is_told_what_to_do(services: Services) -> None:
    payer = await guardian(services)
    await sandbox(services, "Gateway", approval_rate=1)
    with pytest.raises(SwitchboardError, match="send them a payment link"):
        await pay(services, payer)
