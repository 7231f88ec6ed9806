"""Four eyes on risky actions: a refund above the set amount, or switching a payment gateway
off, waits until a second person with the right role approves it; then it is done as the
approver, and the audit trail names both."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.domain.access import NotAllowed, Principal, Role
from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.services import Services, access
from app.services.approvals import ApprovalNeeded, ApprovalService, Status
from app.services.payments import SUCCEEDED, Candidate, ChargeOrder

pytestmark = pytest.mark.both_databases  # SQLite, then PostgreSQL

FAST_SANDBOX = {"approval_rate": "1", "error_rate": "0", "latency_ms": "1", "latency_p95_ms": "2"}
BOB = Principal("Bob", Role.FINANCE, 101)
CAROL = Principal("Carol", Role.FINANCE, 102)
SAM = Principal("Sam", Role.STAFF, 103)
ADA = Principal("Ada", Role.ADMINISTRATOR, 104)


async def gateway(services: Services) -> int:
    record = await services.connections.add(
        "sandbox-payments", f"Sandbox {uuid.uuid4().hex[:6]}", FAST_SANDBOX, {"api_key": "sk_1"}
    )
    return record.id


async def paid(services: Services, minor: int = 30_000) -> int:
    """A payment of USD 300.00 that went through."""
    payment = await services.payments.charge(
        ChargeOrder(
            idempotency_key=f"test-{uuid.uuid4().hex}",
            amount=Money(minor, "USD"),
            method="card",
            candidates=(Candidate(await gateway(services), "pm_sandbox_ok"),),
        )
    )
    assert payment.status == SUCCEEDED
    return payment.id


@pytest.fixture
async def refunds_above_100(services: Services) -> Services:
    await services.settings.set("approvals.refund_above", 100)
    return services


async def test_a_large_refund_waits_for_a_second_person_then_is_done_as_them(
    refunds_above_100: Services,
) -> None:
    services = refunds_above_100
    payment = await paid(services)
    with access.acting_as(BOB), pytest.raises(ApprovalNeeded) as waiting:
        await services.payments.refund(payment, Money(25_000, "USD"), "family moved away")
    approval = waiting.value.approval
    assert str(waiting.value) == (
        f"A refund of USD 250.00 on payment {payment} needs a second person's approval: it "
        f"waits as approval {approval.id} until someone with the Administrator or Finance "
        "role approves it (Approvals page)."
    )
    assert (approval.status, approval.requested_by) == (Status.WAITING, "Bob")
    assert await services.payments.refunds(payment) == []  # nothing refunded yet

    with access.acting_as(BOB), pytest.raises(SwitchboardError, match="Bob asked for this"):
        await services.approvals.approve(approval.id)
    with access.acting_as(SAM), pytest.raises(NotAllowed, match="may not approve refunds"):
        await services.approvals.approve(approval.id)
    with pytest.raises(SwitchboardError, match="a person's decision"):
        await services.approvals.approve(approval.id)  # the service user
    with access.acting_as(CAROL):
        done = await services.approvals.approve(approval.id)
    assert (done.status, done.decided_by) == (Status.DONE, "Carol")
    [refund] = await services.payments.refunds(payment)
    assert (refund.amount, refund.status) == (Money(25_000, "USD"), "succeeded")
    assert done.outcome == f"Refund {refund.id} of USD 250.00: succeeded."

    trail = [(e.actor, e.action) for e in await services.audit.entries()]
    assert ("Bob", "approval.requested") in trail
    assert ("Carol", "refund.requested") in trail
    assert ("Carol", "approval.approved") in trail
    assert (await services.audit.verify()).ok
    with access.acting_as(ADA), pytest.raises(SwitchboardError, match="was done already"):
        await services.approvals.approve(approval.id)


async def test_a_refund_up_to_the_amount_needs_nobody_else(refunds_above_100: Services) -> None:
    services = refunds_above_100
    payment = await paid(services)
    with access.acting_as(BOB):
        refund = await services.payments.refund(payment, Money(10_000, "USD"))
    assert refund.status == "succeeded"
    assert await services.approvals.approvals() == []


async def test_a_rejected_refund_is_never_done(refunds_above_100: Services) -> None:
    services = refunds_above_100
    payment = await paid(services)
    with access.acting_as(BOB), pytest.raises(ApprovalNeeded) as waiting:
        await services.payments.refund(payment)
    with access.acting_as(CAROL):
        rejected = await services.approvals.reject(waiting.value.approval.id, "already credited")
    assert (rejected.status, rejected.outcome) == (Status.REJECTED, "already credited")
    assert await services.payments.refunds(payment) == []
    with access.acting_as(ADA), pytest.raises(SwitchboardError, match="rejected already"):
        await services.approvals.approve(rejected.id)


async def test_an_approved_refund_that_fails_says_why(refunds_above_100: Services) -> None:
    services = refunds_above_100
    payment = await paid(services)
    with access.acting_as(BOB), pytest.raises(ApprovalNeeded) as waiting:
        await services.payments.refund(payment, Money(20_000, "USD"))
    # Meanwhile two refunds within the limit leave less than was asked for.
    await services.payments.refund(payment, Money(10_000, "USD"))
    await services.payments.refund(payment, Money(10_000, "USD"))
    with access.acting_as(CAROL):
        done = await services.approvals.approve(waiting.value.approval.id)
    assert done.status is Status.FAILED
    assert done.outcome is not None
    assert "refund" in done.outcome.lower()


async def test_requests_nobody_decides_lapse_after_a_week(services: Services) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    clock = [now]
    approvals = ApprovalService(services.db, services.events, services.settings, lambda: clock[0])
    with access.acting_as(BOB), pytest.raises(ApprovalNeeded) as waiting:
        await approvals.gate(True, "refund", "payment", 7, {}, "A refund of USD 1.00")
    clock[0] = now + timedelta(days=7, seconds=1)
    [lapsed] = await approvals.approvals()
    assert lapsed.id == waiting.value.approval.id
    assert lapsed.status is Status.EXPIRED


async def test_switching_a_payment_gateway_off_can_need_a_second_administrator(
    services: Services,
) -> None:
    await services.settings.set("approvals.gateway_off", True)
    connection = await gateway(services)
    with access.acting_as(ADA), pytest.raises(ApprovalNeeded) as waiting:
        await services.connections.set_paused(connection, True)
    assert (await services.connections.connection(connection)).enabled
    with access.acting_as(CAROL), pytest.raises(NotAllowed, match="switching a payment gateway"):
        await services.approvals.approve(waiting.value.approval.id)
    with access.acting_as(Principal("Bea", Role.ADMINISTRATOR, 105)):
        done = await services.approvals.approve(waiting.value.approval.id)
    assert done.status is Status.DONE
    assert not (await services.connections.connection(connection)).enabled
    # Resuming needs nobody else; removing does.
    await services.connections.set_paused(connection, False)
    with access.acting_as(ADA), pytest.raises(ApprovalNeeded):
        await services.connections.remove(connection)
    assert (await services.connections.connection(connection)).enabled
