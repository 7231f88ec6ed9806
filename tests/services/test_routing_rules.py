"""The administrator's routing rules: checked when saved, kept in order, and obeyed by the
next payment (read from the database, so a rule saved by another office PC counts too)."""

from __future__ import annotations

import uuid

import pytest

from app.domain.errors import NotFound, SwitchboardError, ValidationFailed
from app.domain.money import Money
from app.domain.routing_rules import RuleDraft
from app.services import Services
from app.services.routing import RoutingService
from tests.services.test_routing_service import guardian, sandbox


def fields(error: ValidationFailed) -> dict[str, str]:
    return {problem.field: problem.message for problem in error.errors}


@pytest.mark.asyncio
async def test_a_rule_is_saved_in_words_and_in_minor_units(services: Services) -> None:
    gateway = await sandbox(services, "Local")
    rule = await services.routing.save_rule(
        RuleDraft((gateway,), currency="USD", method="card", min_amount="1,000.00", note="big")
    )
    assert (rule.min_minor, rule.max_minor, rule.position) == (100_000, None, 0)
    assert rule.conditions() == "USD card payments from $1,000.00"
    assert (await services.routing.rules()) == [rule]


@pytest.mark.parametrize(
    ("draft", "field", "says"),
    [
        (RuleDraft((1,), currency="XXY"), "currency", "not an ISO 4217"),
        (RuleDraft((1,), min_amount="10"), "currency", "needs a currency"),
        (RuleDraft((1,), currency="JPY", min_amount="10.5"), "min_amount", "no decimals"),
        (RuleDraft((1,), currency="USD", min_amount="50", max_amount="20"), "max_amount", "below"),
        (RuleDraft((1,), country="Zimbabwe"), "country", "two-letter"),
        (RuleDraft((1,), method="Credit Card"), "method", "lower-case"),
        (RuleDraft(()), "gateways", "at least one"),
        (RuleDraft((1, 1)), "gateways", "twice"),
    ],
)
@pytest.mark.asyncio
async def test_a_bad_rule_is_refused_with_what_to_fix(
    services: Services, draft: RuleDraft, field: str, says: str
) -> None:
    await sandbox(services, "Local")
    with pytest.raises(ValidationFailed) as refused:
        await services.routing.save_rule(draft)
    assert says in fields(refused.value)[field]
    assert await services.routing.rules() == []


@pytest.mark.asyncio
async def test_a_rule_naming_a_connection_that_takes_no_payments_is_refused(
    services: Services,
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await services.routing.save_rule(RuleDraft((999,)))
    assert "not a connected payment gateway" in fields(refused.value)["gateways"]


@pytest.mark.asyncio
async def test_rules_are_kept_in_order_moved_changed_and_removed(services: Services) -> None:
    gateway = await sandbox(services, "Local")
    first = await services.routing.save_rule(RuleDraft((gateway,), currency="USD"))
    second = await services.routing.save_rule(RuleDraft((gateway,), currency="EUR"))
    third = await services.routing.save_rule(RuleDraft((gateway,), currency="GBP"))
    order = await services.routing.move_rule(third.id, 0)
    assert [rule.currency for rule in order] == ["GBP", "USD", "EUR"]
    assert [rule.position for rule in order] == [0, 1, 2]
    changed = await services.routing.save_rule(RuleDraft((gateway,), currency="ZAR"), first.id)
    assert changed.position == 1
    assert changed.currency == "ZAR"
    await services.routing.remove_rule(second.id)
    assert [rule.currency for rule in await services.routing.rules()] == ["GBP", "ZAR"]
    with pytest.raises(NotFound):
        await services.routing.remove_rule(second.id)


@pytest.mark.asyncio
async def test_the_first_matching_rule_decides_where_a_payment_may_go(services: Services) -> None:
    payer = await guardian(services)
    cheap = await sandbox(services, "Cheap", approval_rate=1, fee_percent=1.0)
    dear = await sandbox(services, "Dear", approval_rate=1, fee_percent=4.0)
    for gateway in (cheap, dear):
        await services.routing.save_method(payer, gateway, "card", f"pm_sandbox_{gateway}")
    services.routing.router.exploration = 0.0  # deterministic for the test
    # Large payments only at the dear gateway (say, for its chargeback protection).
    await services.routing.save_rule(RuleDraft((dear,), currency="USD", min_amount="1000"))

    async def pay(minor: int) -> int | None:
        payment = await services.routing.charge(
            services.payments,
            guardian_id=payer,
            amount=Money(minor, "USD"),
            method="card",
            idempotency_key=uuid.uuid4().hex,
        )
        assert payment.attempts[0].why["explanation"]
        return payment.connection_id

    assert await pay(5_000) == cheap  # no rule: the cheaper one wins on expected value
    assert await pay(250_000) == dear
    large = await services.payments.payments(limit=1)
    assert "by the rule for USD, from USD 1000.00" in large[0].attempts[0].why["explanation"]


@pytest.mark.asyncio
async def test_a_rule_saved_elsewhere_counts_at_the_next_payment(services: Services) -> None:
    payer = await guardian(services)
    cheap = await sandbox(services, "Cheap", approval_rate=1, fee_percent=1.0)
    dear = await sandbox(services, "Dear", approval_rate=1, fee_percent=4.0)
    for gateway in (cheap, dear):
        await services.routing.save_method(payer, gateway, "card", f"pm_sandbox_{gateway}")
    elsewhere = RoutingService(services.db, services.connections)  # another PC's engine
    await elsewhere.save_rule(RuleDraft((dear,)))
    payment = await services.routing.charge(
        services.payments,
        guardian_id=payer,
        amount=Money(5_000, "USD"),
        method="card",
        idempotency_key=uuid.uuid4().hex,
    )
    assert payment.connection_id == dear


@pytest.mark.asyncio
async def test_a_rule_allowing_no_gateway_that_holds_the_method_says_so(
    services: Services,
) -> None:
    payer = await guardian(services)
    held = await sandbox(services, "Held")
    other = await sandbox(services, "Other")
    await services.routing.save_method(payer, held, "card", "pm_sandbox_visa")
    await services.routing.save_rule(RuleDraft((other,), currency="USD"))
    with pytest.raises(SwitchboardError, match="No gateway allowed by the rule for USD"):
        await services.routing.charge(
            services.payments,
            guardian_id=payer,
            amount=Money(5_000, "USD"),
            method="card",
            idempotency_key=uuid.uuid4().hex,
        )
