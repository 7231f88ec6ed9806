"""Charging a payer: their saved methods say which gateways can take the payment, the router
orders those and says why, and every attempt teaches it. Gateways are sandboxes."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.domain.payments import FeeRule, FeeSchedule
from app.domain.routing import PaymentAsk
from app.services import Services
from app.services.payments import SUCCEEDED, Payment
from app.services.routing import RoutingService
from app.store.school import Guardian
from tests.fakes.ledger_gateway import LedgerGateway
from tests.fakes.server import served


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
    fresh.router.exploration = 0.0  # its 3 % of tries elsewhere would make this a coin toss
    candidates, decision = await fresh.candidates(payer, PaymentAsk(Money(10_000, "USD"), "card"))
    assert candidates[0].connection_id == dear
    assert "over the last" in decision.explanation


@pytest.mark.asyncio
async def test_a_payer_without_a_saved_method_is_told_what_to_do(services: Services) -> None:
    payer = await guardian(services)
    await sandbox(services, "Gateway", approval_rate=1)
    with pytest.raises(SwitchboardError, match="send them a payment link"):
        await pay(services, payer)


@pytest.mark.asyncio
async def test_a_gateway_that_starts_failing_is_failed_over_then_its_breaker_routes_around_it(
    services: Services,
) -> None:
    cheap, dear = LedgerGateway(), LedgerGateway()
    with served(cheap.app) as cheap_url, served(dear.app) as dear_url:
        payer = await guardian(services)
        connections = []
        for name, url, fee in (("Cheap", cheap_url, "2.5"), ("Dear", dear_url, "2.9")):
            record = await services.connections.add(
                "stripe", name, {"api_url": url}, {"secret_key": "sk_test_x"}
            )
            provider = await services.connections.provider(record.id)
            policy = provider.client.policy
            provider.client.policy = replace(
                policy, retry=replace(policy.retry, base_delay=0.001, max_delay=0.001)
            )
            provider.fees = FeeSchedule((FeeRule(Decimal(fee), 30),))  # type: ignore[attr-defined]
            await services.routing.save_method(payer, record.id, "card", f"pm_{name}")
            connections.append(record.id)
        services.routing.router.exploration = 0.0  # deterministic for the test
        before = [await pay(services, payer) for _ in range(5)]
        cheap.failing = True  # an outage: every answer a 503
        during = [await pay(services, payer) for _ in range(6)]
    assert all(payment.connection_id == connections[0] for payment in before)
    assert all(payment.status == SUCCEEDED for payment in during)
    assert len(cheap.charges()) == 5
    assert len(dear.charges()) == 6
    # The first payments in the outage try the usual gateway, then fail over ...
    assert [attempt.connection_id for attempt in during[0].attempts] == connections
    # ... until its breaker opens, and payments go straight to the other one.
    last = during[-1]
    assert [attempt.connection_id for attempt in last.attempts] == [connections[1]]
    assert "Cheap eliminated: its circuit breaker is open" in last.attempts[0].why["explanation"]
