"""Dwolla end to end against the fake Dwolla over loopback (tests/fakes/dwolla.py), through the
real connection: ACH debits that are processing for days, returns and how they are classified,
lost answers found again without a second debit, refunds as transfers back, and Dwolla's signed
webhooks arriving through the receiver and moving payments on."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.domain.money import Money
from app.domain.payments import ChargeRequest, ChargeStatus, FailureKind, RefundStatus
from app.providers.dwolla import DWOLLA, HAL, Dwolla
from app.providers.gateway import LinkRequest, PaymentGateway, Unsupported
from app.services import Services
from app.services.payments import (
    FAILED,
    PROCESSING,
    SUCCEEDED,
    Candidate,
    ChargeOrder,
    Payment,
    RefundRefused,
)
from app.services.receiver import Receiver
from tests.fakes.dwolla import FakeDwolla
from tests.fakes.scripted import Reply, ScriptedServer
from tests.fakes.server import served

TRANSFERS = "/transfers"
WEBHOOK_SECRET = "dwolla-webhook-secret-0123"


@pytest.fixture
def fake() -> Iterator[FakeDwolla]:
    dwolla = FakeDwolla()
    with served(dwolla.app) as url:
        dwolla.base_url = url
        yield dwolla


async def connect(services: Services, fake: FakeDwolla, **config: Any) -> int:
    record = await services.connections.add(
        "dwolla",
        f"Dwolla {uuid.uuid4().hex[:6]}",
        {
            "key": fake.key,
            "funding_source": fake.school_funding_source,
            "api_url": fake.base_url,
            **config,
        },
        {"secret": fake.secret, "webhook_secret": WEBHOOK_SECRET},
    )
    return record.id


async def gateway(services: Services, connection_id: int, *, fast: bool = False) -> Dwolla:
    provider = await services.connections.provider(connection_id)
    assert isinstance(provider, Dwolla)
    assert isinstance(provider, PaymentGateway)
    if fast:  # a Dwolla that hangs is given up on quickly
        policy = provider.client.policy
        provider.client.policy = replace(
            policy, timeout=0.5, retry=replace(policy.retry, base_delay=0.01, max_delay=0.01)
        )
    return provider


@dataclass
class Family:
    customer: str
    bank: str  # the funding source's address: the saved method's token


def family(fake: FakeDwolla, return_code: str = "") -> Family:
    customer = fake.add_customer()
    return Family(customer, fake.add_bank(customer, return_code))


def debit(payer: Family, cents: int = 12_500, *, days_ago: float = 0) -> ChargeRequest:
    return ChargeRequest(
        reference=f"pay_{uuid.uuid4().hex}-1",
        amount=Money(cents, "USD"),
        method="ach",
        token=payer.bank,
        customer=payer.customer,
        created_at=time.time() - days_ago * 86_400,
    )


def order(connection_id: int, payer: Family, cents: int = 10_000) -> ChargeOrder:
    return ChargeOrder(
        idempotency_key=f"key-{uuid.uuid4().hex}",
        amount=Money(cents, "USD"),
        method="ach",
        candidates=(Candidate(connection_id, payer.bank, payer.customer),),
    )


# --- the connection -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_health_check_gets_a_token_with_the_key_and_secret_and_asks_the_root(
    services: Services, fake: FakeDwolla
) -> None:
    connection_id = await connect(services, fake)
    result = await services.connections.test(connection_id)
    assert result.ok, result.detail
    [token] = fake.sent("POST", "/token")
    assert token.headers["authorization"].startswith("Basic ")
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token.body == b"grant_type=client_credentials"
    [root] = fake.sent("GET", "/")
    assert root.headers["accept"] == HAL
    assert root.headers["authorization"].startswith("Bearer ")


@pytest.mark.asyncio
async def test_a_wrong_secret_says_what_to_fix(services: Services, fake: FakeDwolla) -> None:
    record = await services.connections.add(
        "dwolla",
        "Dwolla",
        {"key": fake.key, "funding_source": fake.school_funding_source, "api_url": fake.base_url},
        {"secret": "not-the-secret"},
    )
    result = await services.connections.test(record.id)
    assert not result.ok
    assert result.error_class == "auth"
    assert "key and secret" in result.detail


@pytest.mark.asyncio
async def test_one_token_serves_many_calls_and_an_expired_one_is_replaced_once(
    services: Services, fake: FakeDwolla
) -> None:
    connection_id = await connect(services, fake)
    for _ in range(3):
        assert (await services.connections.test(connection_id)).ok
    assert fake.count("POST", "/token") == 1
    fake.expire_tokens()  # Dwolla answers ExpiredAccessToken to the one we hold
    assert (await services.connections.test(connection_id)).ok
    assert fake.count("POST", "/token") == 2


def test_sandbox_and_production_have_dwolla_s_own_addresses() -> None:
    assert DWOLLA.base_url({"environment": "sandbox"}) == "https://api-sandbox.dwolla.com"
    assert DWOLLA.base_url({"environment": "production"}) == "https://api.dwolla.com"
    _, _, errors = DWOLLA.check(
        {"environment": "live", "key": "k", "funding_source": "https://api.dwolla.com/customers/1"},
        {"secret": "s"},
    )
    assert {error.field for error in errors} == {"environment", "funding_source"}


@pytest.mark.asyncio
async def test_the_fee_is_the_plan_s_fixed_fee_per_transfer_or_pay_as_you_go(
    services: Services, fake: FakeDwolla
) -> None:
    plan = await gateway(services, await connect(services, fake, fee_per_transfer="0.25"))
    assert plan.fees.fee(Money(50_000, "USD"), "ach") == Money(25, "USD")
    default = await gateway(services, await connect(services, fake))
    assert default.fees.fee(Money(50_000, "USD"), "ach") == Money(250, "USD")  # 0.5 %


@pytest.mark.asyncio
async def test_links_and_a_paged_balance_are_unsupported_and_say_what_to_do(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake))
    with pytest.raises(Unsupported, match="no payment page"):
        await dwolla.create_link(LinkRequest("pay_1", Money(100, "USD"), "Lessons"))
    with pytest.raises(Unsupported, match="a period at a time"):
        await dwolla.balance_entries()
    with pytest.raises(Unsupported, match="a period at a time"):
        await dwolla.payouts()


# --- transfers ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_transfer_is_processing_until_the_bank_day_clears_it(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake))
    payer = family(fake)
    request = debit(payer)
    result = await dwolla.charge(request)
    assert (result.status, result.failure) == (ChargeStatus.PROCESSING, None)
    [sent] = fake.sent("POST", TRANSFERS)
    assert sent.headers["content-type"] == HAL
    assert sent.headers["idempotency-key"] == request.reference
    body = json.loads(sent.body)
    assert body["_links"]["source"]["href"] == payer.bank
    assert body["_links"]["destination"]["href"] == fake.school_funding_source
    assert body["amount"] == {"currency": "USD", "value": "125.00"}
    assert body["correlationId"] == request.reference
    assert fake.transfers[result.gateway_id].status == "pending"
    assert (await dwolla.sync(request, result.gateway_id)).status is ChargeStatus.PROCESSING
    fake.process()
    synced = await dwolla.sync(request, result.gateway_id)
    assert (synced.status, synced.gateway_id) == (ChargeStatus.SUCCEEDED, result.gateway_id)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("R01", FailureKind.SOFT_DECLINE),  # insufficient funds
        ("R09", FailureKind.SOFT_DECLINE),  # uncollected funds
        ("R02", FailureKind.HARD_DECLINE),  # account closed
        ("R03", FailureKind.HARD_DECLINE),  # no account
        ("R07", FailureKind.HARD_DECLINE),  # authorization revoked
        ("R10", FailureKind.HARD_DECLINE),  # not authorized
        ("R16", FailureKind.HARD_DECLINE),  # account frozen
        ("R20", FailureKind.HARD_DECLINE),  # not a transaction account
    ],
)
async def test_an_ach_return_is_classified_by_its_return_code(
    services: Services, fake: FakeDwolla, code: str, kind: FailureKind
) -> None:
    dwolla = await gateway(services, await connect(services, fake))
    request = debit(family(fake, return_code=code))
    accepted = await dwolla.charge(request)
    assert accepted.status is ChargeStatus.PROCESSING
    fake.process()
    returned = await dwolla.sync(request, accepted.gateway_id)
    assert returned.status is ChargeStatus.FAILED
    assert returned.failure is not None
    assert (returned.failure.kind, returned.failure.code) == (kind, code)
    assert f"({code})" in returned.failure.message
    assert not returned.failure.may_fail_over
    assert fake.count("GET", f"/transfers/{accepted.gateway_id}/failure") == 1


@pytest.mark.asyncio
async def test_a_lost_answer_is_found_by_the_same_key_and_no_second_transfer_is_made(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake), fast=True)
    await services.connections.test(dwolla.client.connection_id)  # the token is not the point
    attempts = dwolla.client.policy.retry.attempts
    fake.hang_after_accept = attempts  # Dwolla makes the transfer, every answer is lost
    request = debit(family(fake))
    lost = await dwolla.charge(request)
    assert lost.status is ChargeStatus.FAILED
    assert lost.failure is not None
    assert lost.failure.kind is FailureKind.UNKNOWN
    assert not lost.failure.may_fail_over
    found = await dwolla.sync(request)
    assert found.status is ChargeStatus.PROCESSING
    assert fake.transfer_count == 1
    assert found.gateway_id == next(iter(fake.transfers))
    keys = {seen.headers["idempotency-key"] for seen in fake.sent("POST", TRANSFERS)}
    assert keys == {request.reference}
    assert len(fake.sent("POST", TRANSFERS)) == attempts + 1


@pytest.mark.asyncio
async def test_after_a_day_the_reference_is_searched_for_instead_of_replayed(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake), fast=True)
    await services.connections.test(dwolla.client.connection_id)
    payer = family(fake)
    fake.hang_after_accept = dwolla.client.policy.retry.attempts
    lost = debit(payer, days_ago=2)
    assert (await dwolla.charge(lost)).failure is not None
    fake.forget_idempotency_keys()  # as Dwolla does after 24 hours
    sent = len(fake.sent("POST", TRANSFERS))
    found = await dwolla.sync(lost)
    assert (found.status, found.gateway_id) == (ChargeStatus.PROCESSING, next(iter(fake.transfers)))
    [search] = fake.sent("GET", f"/customers/{payer.customer}/transfers")
    assert search.query == f"correlationId={lost.reference}"
    never_sent = debit(payer, days_ago=2)
    assert (await dwolla.sync(never_sent)).status is ChargeStatus.NOT_FOUND
    # Without the payer at Dwolla, the school's account's transfers are searched.
    anonymous = replace(never_sent, customer="")
    assert (await dwolla.sync(anonymous)).status is ChargeStatus.NOT_FOUND
    assert fake.count("GET", f"/accounts/{fake.account_id}/transfers") == 1
    assert len(fake.sent("POST", TRANSFERS)) == sent  # nothing new was debited
    assert fake.transfer_count == 1


@pytest.mark.asyncio
async def test_when_dwolla_cannot_be_asked_the_outcome_stays_unknown(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake), fast=True)
    await services.connections.test(dwolla.client.connection_id)
    fake.failing = True
    synced = await dwolla.sync(debit(family(fake), days_ago=2))
    assert synced.status is ChargeStatus.FAILED
    assert synced.failure is not None
    assert synced.failure.kind is FailureKind.UNKNOWN


@pytest.mark.asyncio
async def test_dwolla_answering_503_is_a_technical_failure_another_gateway_may_take(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake), fast=True)
    await services.connections.test(dwolla.client.connection_id)
    fake.failing = True
    result = await dwolla.charge(debit(family(fake)))
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (FailureKind.TECHNICAL, "http_503")
    assert result.failure.may_fail_over
    assert fake.transfer_count == 0


@pytest.mark.asyncio
async def test_a_refused_request_says_dwolla_s_reason_and_is_technical(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake))
    gone = Family(fake.add_customer(), f"{fake.base_url}/funding-sources/{uuid.uuid4()}")
    result = await dwolla.charge(debit(gone))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TECHNICAL
    assert result.failure.code == "ValidationError/NotFound"
    assert "Funding source not found." in result.failure.message


@pytest.mark.asyncio
async def test_a_bank_removed_after_a_closed_account_return_is_not_debited_again(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake))
    payer = family(fake, return_code="R02")
    await dwolla.charge(debit(payer))
    fake.process()  # R02: Dwolla removes the bank
    again = await dwolla.charge(debit(payer))
    assert again.failure is not None
    assert "Invalid funding source." in again.failure.message
    assert fake.transfer_count == 1


# --- refunds --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_refund_is_a_transfer_back_to_the_family_s_bank(
    services: Services, fake: FakeDwolla
) -> None:
    dwolla = await gateway(services, await connect(services, fake))
    payer = family(fake)
    paid = await dwolla.charge(debit(payer, 10_000))
    fake.process()
    refund = await dwolla.refund(paid.gateway_id, Money(2_500, "USD"), "ref_first")
    assert (refund.status, refund.amount) == (RefundStatus.PENDING, Money(2_500, "USD"))
    back = fake.transfers[refund.gateway_id]
    assert (back.source, back.destination.id) == (fake.school_bank, payer.bank.rsplit("/", 1)[1])
    assert back.value == "25.00"
    assert back.correlation_id == "ref_first"
    [_, sent] = fake.sent("POST", TRANSFERS)
    assert sent.headers["idempotency-key"] == "ref_first"
    fake.process()
    done = await dwolla.refund_status(refund.gateway_id, refund.amount)
    assert done.status is RefundStatus.SUCCEEDED
    # Asked again with the same reference (its answer lost): the same refund, not a second one.
    again = await dwolla.refund(paid.gateway_id, Money(2_500, "USD"), "ref_first")
    assert (again.status, again.gateway_id) == (RefundStatus.SUCCEEDED, refund.gateway_id)
    assert fake.transfer_count == 2


@pytest.mark.asyncio
async def test_through_the_payment_service_a_lost_answer_makes_one_transfer(
    services: Services, fake: FakeDwolla
) -> None:
    connection_id = await connect(services, fake)
    dwolla = await gateway(services, connection_id, fast=True)
    await services.connections.test(connection_id)
    fake.hang_after_accept = dwolla.client.policy.retry.attempts
    payment = await services.payments.charge(order(connection_id, family(fake)))
    assert payment.status == PROCESSING
    assert payment.gateway_id == next(iter(fake.transfers))
    assert fake.transfer_count == 1


# --- webhooks -------------------------------------------------------------------------------------


@dataclass
class Hooks:
    services: Services
    fake: FakeDwolla
    connection_id: int
    url: str


@pytest.fixture
async def hooks(services: Services, fake: FakeDwolla) -> AsyncIterator[Hooks]:
    connection_id = await connect(services, fake)
    record = await services.connections.connection(connection_id)
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    url = f"{receiver.address.url}/hooks/{connection_id}/{record.webhook_token}"
    fake.subscribe(url, WEBHOOK_SECRET)
    try:
        yield Hooks(services, fake, connection_id, url)
    finally:
        await receiver.stop()


async def _delivered(hooks: Hooks) -> list[httpx.Response]:
    answers = await hooks.fake.deliver()
    outcome = await hooks.services.inbox_worker.process_due()
    assert outcome.failed == 0
    return answers


async def _charge(hooks: Hooks, payer: Family, cents: int = 10_000) -> Payment:
    # Events about the transfer's creation arrive too, and change nothing.
    payment = await hooks.services.payments.charge(order(hooks.connection_id, payer, cents))
    assert payment.status == PROCESSING
    await _delivered(hooks)
    assert (await hooks.services.payments.payment(payment.id)).status == PROCESSING
    return payment


@pytest.mark.asyncio
async def test_signed_webhooks_move_a_payment_from_processing_to_succeeded(hooks: Hooks) -> None:
    payment = await _charge(hooks, family(hooks.fake))
    hooks.fake.process()
    answers = await _delivered(hooks)
    assert [answer.text for answer in answers] == ["accepted", "accepted"]
    settled = await hooks.services.payments.payment(payment.id)
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, payment.gateway_id)
    [attempt] = settled.attempts
    assert attempt.status == SUCCEEDED
    topics = {event.event_type for event in await hooks.services.inbox.recent()}
    assert {"customer_transfer_completed", "transfer_completed"} <= topics


@pytest.mark.asyncio
async def test_a_returned_debit_s_webhook_fails_the_payment_for_good(hooks: Hooks) -> None:
    payment = await _charge(hooks, family(hooks.fake, return_code="R02"))
    hooks.fake.process()
    await _delivered(hooks)
    failed = await hooks.services.payments.payment(payment.id)
    assert failed.status == FAILED
    assert failed.failure is not None
    # The event does not say why; a return is final unless known to be insufficient funds.
    assert (failed.failure.kind, failed.failure.code) == (FailureKind.HARD_DECLINE, "ach_return")


@pytest.mark.asyncio
async def test_a_transfer_cancelled_in_dwolla_fails_the_payment(hooks: Hooks) -> None:
    payment = await _charge(hooks, family(hooks.fake))
    hooks.fake.cancel(payment.gateway_id)
    await _delivered(hooks)
    cancelled = await hooks.services.payments.payment(payment.id)
    assert cancelled.status == FAILED
    assert cancelled.failure is not None
    assert cancelled.failure.code == "cancelled"


@pytest.mark.asyncio
async def test_an_event_with_our_reference_settles_a_payment_whose_answer_was_lost(
    hooks: Hooks,
) -> None:
    hooks.fake.events_carry_correlation_id = True
    dwolla = await gateway(hooks.services, hooks.connection_id, fast=True)
    await hooks.services.connections.test(hooks.connection_id)
    # The charge and the lookup that follows it (each tried `attempts` times) both hang.
    hooks.fake.hang_after_accept = 2 * dwolla.client.policy.retry.attempts
    payment = await hooks.services.payments.charge(order(hooks.connection_id, family(hooks.fake)))
    assert payment.status == "unknown"
    hooks.fake.process()
    await _delivered(hooks)
    settled = await hooks.services.payments.payment(payment.id)
    assert (settled.status, settled.gateway_id) == (SUCCEEDED, next(iter(hooks.fake.transfers)))


@pytest.mark.asyncio
async def test_a_tampered_webhook_is_refused_and_stored_nowhere(hooks: Hooks) -> None:
    await _charge(hooks, family(hooks.fake))
    hooks.fake.process()
    webhook = hooks.fake.outbox.pop()
    async with httpx.AsyncClient(timeout=10) as client:
        tampered = await client.post(
            hooks.url,
            content=webhook.body.replace(b"_completed", b"_failed"),
            headers=webhook.headers,
        )
    assert tampered.status_code == 401
    assert await hooks.services.inbox.count(status="received") == 0


@pytest.mark.asyncio
async def test_through_the_payment_service_partial_then_rest_and_never_more_than_paid(
    hooks: Hooks,
) -> None:
    services, fake = hooks.services, hooks.fake
    payment = await _charge(hooks, family(fake), 10_000)
    with pytest.raises(RefundRefused, match="went through"):
        await services.payments.refund(payment.id, Money(1_000, "USD"))
    fake.process()
    await _delivered(hooks)
    assert (await services.payments.payment(payment.id)).status == SUCCEEDED
    part = await services.payments.refund(payment.id, Money(3_000, "USD"), "sibling discount")
    rest = await services.payments.refund(payment.id)
    assert (part.amount, rest.amount) == (Money(3_000, "USD"), Money(7_000, "USD"))
    assert (part.status, rest.status) == ("pending", "pending")
    with pytest.raises(RefundRefused, match="left to refund"):
        await services.payments.refund(payment.id, Money(1, "USD"))
    assert sorted(Decimal(t.value) for t in fake.transfers.values()) == [30, 70, 100]
    fake.process()
    await _delivered(hooks)
    refunds = await services.payments.refunds(payment.id)
    assert [refund.status for refund in refunds] == ["succeeded", "succeeded"]
    assert (await services.payments.payment(payment.id)).refunded == Money(10_000, "USD")


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


@pytest.mark.asyncio
async def test_a_debit_returned_after_it_went_through_is_logged_and_not_undone(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    payment = await _charge(hooks, family(hooks.fake))
    hooks.fake.process()
    await _delivered(hooks)
    assert (await hooks.services.payments.payment(payment.id)).status == SUCCEEDED
    hooks.fake.return_later(payment.gateway_id)
    with caplog.at_level(logging.ERROR, logger="switchboard.payments"):
        await _delivered(hooks)
    assert (await hooks.services.payments.payment(payment.id)).status == SUCCEEDED
    returned = [
        r for r in caplog.records if "returned a payment after it went through" in r.message
    ]
    assert returned  # one per Dwolla event (the family's and the school's)
    assert {getattr(record, "gateway_id", "") for record in returned} == {payment.gateway_id}


# --- answers that are refusals, or not what they should be ----------------------------------------

CUSTOMER = "0f1e2d3c-customer"


async def scripted_dwolla(services: Services, server: ScriptedServer) -> Dwolla:
    """A Dwolla connection to a scripted server (tests/fakes/scripted.py), each call made once."""
    server.script("POST", "/token", Reply(200, json={"access_token": "tok", "expires_in": 3600}))
    record = await services.connections.add(
        "dwolla",
        f"Dwolla {uuid.uuid4().hex[:6]}",
        {
            "key": "k",
            "funding_source": f"{server.url}/funding-sources/school-bank",
            "api_url": server.url,
        },
        {"secret": "s"},
    )
    dwolla = await gateway(services, record.id, fast=True)
    dwolla.client.policy = replace(
        dwolla.client.policy, retry=replace(dwolla.client.policy.retry, attempts=1)
    )
    return dwolla


def scripted_debit(cents: int = 1_000, *, days_ago: float = 0) -> ChargeRequest:
    return ChargeRequest(
        reference=f"pay_{uuid.uuid4().hex}-1",
        amount=Money(cents, "USD"),
        method="ach",
        token="https://api-sandbox.dwolla.com/funding-sources/family-bank",
        customer=CUSTOMER,
        created_at=time.time() - days_ago * 86_400,
    )


def refused(status: int, code: str, message: str) -> Reply:
    return Reply(status, json={"code": code, "message": message})


@pytest.mark.asyncio
async def test_malformed_answers_are_classified_never_raised(
    services: Services, scripted_server: ScriptedServer
) -> None:
    dwolla = await scripted_dwolla(services, scripted_server)
    search = f"/customers/{CUSTOMER}/transfers"
    for embedded in (None, [1, 2], "transfers", {"transfers": {"id": "x"}}):
        scripted_server.script("GET", search, Reply(200, json={"_embedded": embedded}))
        synced = await dwolla.sync(scripted_debit(days_ago=2))
        assert synced.status is ChargeStatus.FAILED
        assert synced.failure is not None
        assert synced.failure.kind is FailureKind.UNKNOWN
    asked = Money(1_000, "USD")
    for amount in (
        {"currency": "usd", "value": "10.00"},
        {"currency": "USD", "value": "1e30"},
        {"currency": "USD", "value": "Infinity"},
        {"currency": "USD", "value": "NaN"},
        {"currency": "USD", "value": "10.001"},
        {"currency": "USD", "value": None},
        {"currency": ["USD"], "value": {"v": 1}},
        "10.00",
    ):
        scripted_server.script(
            "GET",
            "/transfers/refund-1",
            Reply(200, json={"id": "refund-1", "status": "pending", "amount": amount}),
        )
        status = await dwolla.refund_status("refund-1", asked)
        assert (status.status, status.amount) == (RefundStatus.PENDING, asked), amount


@pytest.mark.asyncio
async def test_a_refused_status_question_is_unknown_never_technical(
    services: Services, scripted_server: ScriptedServer
) -> None:
    dwolla = await scripted_dwolla(services, scripted_server)
    forbidden = refused(403, "Forbidden", "Not authorized to access this transfer.")
    scripted_server.script("GET", "/transfers/t-1", forbidden)
    scripted_server.script("GET", f"/customers/{CUSTOMER}/transfers", forbidden)
    scripted_server.script(
        "GET", "/", refused(404, "NotFound", "The requested resource was not found.")
    )
    scripted_server.script(
        "POST", TRANSFERS, refused(400, "ValidationError", "Validation error(s) present.")
    )
    for synced in (
        await dwolla.sync(scripted_debit(), "t-1"),  # by its id
        await dwolla.sync(scripted_debit()),  # replayed by its key
        await dwolla.sync(scripted_debit(days_ago=2)),  # searched among the payer's
        await dwolla.sync(replace(scripted_debit(days_ago=2), customer="")),  # the school's
    ):
        assert synced.status is ChargeStatus.FAILED
        assert synced.failure is not None
        assert synced.failure.kind is FailureKind.UNKNOWN, synced.failure
    # A decline of the replayed request is Dwolla's answer, and stays one.
    short = {
        "code": "ValidationError",
        "message": "Validation error(s) present.",
        "_embedded": {"errors": [{"code": "InsufficientFunds", "message": "Insufficient funds."}]},
    }
    scripted_server.script("POST", TRANSFERS, Reply(400, json=short))
    declined = await dwolla.sync(scripted_debit())
    assert declined.failure is not None
    assert declined.failure.kind is FailureKind.SOFT_DECLINE
    scripted_server.script("GET", "/transfers/refund-1", forbidden)
    status = await dwolla.refund_status("refund-1", Money(500, "USD"))
    assert status.status is RefundStatus.PENDING
    assert status.failure is not None
    assert status.failure.kind is FailureKind.UNKNOWN


@pytest.mark.asyncio
async def test_a_refund_whose_look_ups_cannot_be_made_stays_pending_and_unknown(
    services: Services, scripted_server: ScriptedServer
) -> None:
    dwolla = await scripted_dwolla(services, scripted_server)
    paid = {
        "id": "t-1",
        "status": "processed",
        "_links": {
            "source": {"href": f"{scripted_server.url}/customers/{CUSTOMER}"},
            "source-funding-source": {"href": f"{scripted_server.url}/funding-sources/fam"},
        },
    }
    search = f"/customers/{CUSTOMER}/transfers"
    cases = [
        (Reply(503), None),  # the payment itself cannot be read
        (Reply(429), None),
        (Reply(200, hang=True), None),
        (Reply(200, json=paid), Reply(500)),  # the search for this refund fails
        (Reply(200, json=paid), refused(403, "Forbidden", "Not authorized.")),
    ]
    for transfer, searched in cases:
        scripted_server.script("GET", "/transfers/t-1", transfer)
        if searched is not None:
            scripted_server.script("GET", search, searched)
        result = await dwolla.refund("t-1", Money(500, "USD"), "ref_1")
        assert result.status is RefundStatus.PENDING, (transfer, searched)
        assert result.failure is not None
        assert result.failure.kind is FailureKind.UNKNOWN
    assert scripted_server.received("POST", TRANSFERS) == []  # nothing sent back blind
