"""The sandbox gateway takes payments like a real one: through the Stripe gateway's own code,
against a simulated API that keeps books, honours idempotency keys, declines and keeps fees."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from app.domain.money import Money
from app.domain.payments import ChargeRequest, ChargeStatus, FailureKind, RefundStatus
from app.providers.gateway import PaymentGateway
from app.providers.sandbox import books_of
from app.providers.sandbox_ledger import DECLINED_METHOD
from app.services import Services


async def sandbox(services: Services, seed: int | None = None, **config: float) -> PaymentGateway:
    record = await services.connections.add(
        "sandbox-payments",
        f"Sandbox {uuid.uuid4().hex[:6]}",
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, **config},
        {"api_key": "sk_sandbox"},
    )
    if seed is not None:  # the books' dice, fixed
        books_of(record.id, record.config).rng = random.Random(seed)
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, PaymentGateway)
    return provider


def request(method: str = "pm_sandbox_visa", minor: int = 10_000) -> ChargeRequest:
    return ChargeRequest(
        f"pay_{uuid.uuid4().hex}-1", Money(minor, "USD"), "card", method, created_at=time.time()
    )


@pytest.mark.asyncio
async def test_a_charge_keeps_the_connection_s_fee_and_a_replay_charges_nothing(
    services: Services,
) -> None:
    gateway = await sandbox(services, approval_rate=1, fee_percent=2.5, fee_fixed_minor=25)
    asked = request()
    paid = await gateway.charge(asked)
    assert paid.status is ChargeStatus.SUCCEEDED
    assert paid.fee == Money(275, "USD")
    again = await gateway.sync(asked)  # the same request and key: the same answer
    assert again.gateway_id == paid.gateway_id
    entries = await gateway.balance_entries()
    assert [(entry.kind, entry.amount.minor, entry.fee.minor) for entry in entries] == [
        ("charge", 10_000, 275)
    ]


@pytest.mark.asyncio
async def test_the_declined_test_method_is_a_hard_decline(services: Services) -> None:
    gateway = await sandbox(services, approval_rate=1)
    result = await gateway.charge(request(DECLINED_METHOD))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.HARD_DECLINE


@pytest.mark.asyncio
async def test_the_approval_rate_is_kept_and_declines_are_mostly_soft(services: Services) -> None:
    # A fixed seed: the shares below hold for a random one only most of the time.
    gateway = await sandbox(services, seed=2026, approval_rate=0.8)
    results = [await gateway.charge(request()) for _ in range(400)]
    approved = sum(result.succeeded for result in results)
    assert 290 <= approved <= 350
    kinds = [result.failure.kind for result in results if result.failure is not None]
    assert kinds.count(FailureKind.SOFT_DECLINE) > kinds.count(FailureKind.HARD_DECLINE)


@pytest.mark.asyncio
async def test_refunds_never_exceed_the_payment(services: Services) -> None:
    gateway = await sandbox(services, approval_rate=1)
    paid = await gateway.charge(request(minor=5_000))
    part = await gateway.refund(paid.gateway_id, Money(2_000, "USD"), "ref_a")
    too_much = await gateway.refund(paid.gateway_id, Money(3_500, "USD"), "ref_b")
    assert part.status is RefundStatus.SUCCEEDED
    assert too_much.status is RefundStatus.FAILED
    assert (await gateway.refund_status(part.gateway_id, part.amount)).status is (
        RefundStatus.SUCCEEDED
    )
