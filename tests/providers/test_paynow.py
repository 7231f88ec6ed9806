"""Paynow end to end against the fake Paynow over loopback (tests/fakes/paynow.py), through a real
connection: EcoCash charges that wait for the payer, hashes checked both ways, lost answers
traced instead of charged again, payment links, and status updates through the receiver."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from app.domain.money import Money
from app.domain.payments import ChargeRequest, ChargeStatus, FailureKind
from app.providers.gateway import LinkRequest, PaymentGateway, Unsupported
from app.providers.paynow import PAYNOW, Paynow, merchant_trace
from app.services import Services
from app.services.payments import FAILED, PROCESSING, SUCCEEDED, UNKNOWN, Candidate, ChargeOrder
from app.services.receiver import Receiver
from app.services.webhook_intake import webhook_url
from tests.fakes.paynow import FakePaynow
from tests.fakes.server import served

REMOTE = "/interface/remotetransaction"
TRACE = "/interface/trace"
PAYER = "0771111111"  # Paynow's test-mode number that pays
SHORT_OF_MONEY = "0774444444"  # Paynow's test-mode number refused for its balance


@pytest.fixture
def fake() -> Iterator[FakePaynow]:
    paynow = FakePaynow()
    with served(paynow.app) as url:
        paynow.base_url = url
        yield paynow


@pytest.fixture
async def receiver(services: Services) -> AsyncIterator[Receiver]:
    running = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    running.start()
    yield running
    await running.stop()


async def connect(
    services: Services,
    fake: FakePaynow,
    *,
    key: str = "",
    receiver: Receiver | None = None,
) -> int:
    """A Paynow connection as a school makes one: added, then given its result URL."""
    values = {
        "integration_id": fake.integration_id,
        "auth_email": fake.merchant_email,
        "currency": "USD",
        "api_url": fake.base_url,
    }
    name = f"Paynow {uuid.uuid4().hex[:6]}"
    secrets = {"integration_key": key or fake.integration_key}
    record = await services.connections.add("paynow", name, values, secrets)
    base = receiver.address.url if receiver else "https://office.example"
    result_url = webhook_url(record.id, record.webhook_token or "", base)
    await services.connections.update(record.id, name, {**values, "result_url": result_url}, {})
    return record.id


async def gateway(services: Services, connection_id: int, *, fast: bool = False) -> Paynow:
    provider = await services.connections.provider(connection_id)
    assert isinstance(provider, Paynow)
    assert isinstance(provider, PaymentGateway)
    if fast:  # an answer that does not come is given up on quickly, and not sent again
        policy = provider.client.policy
        provider.client.policy = replace(
            policy, timeout=0.3, retry=replace(policy.retry, attempts=1, base_delay=0.01)
        )
    return provider


def ecocash(connection_id: int, phone: str = PAYER, amount: int = 1_250) -> ChargeOrder:
    return ChargeOrder(
        idempotency_key=f"key-{uuid.uuid4().hex}",
        amount=Money(amount, "USD"),
        method="ecocash",
        candidates=[Candidate(connection_id, phone)],
        description="Term 2 piano lessons",
    )


def request_of(reference: str, phone: str = PAYER, amount: int = 1_250) -> ChargeRequest:
    return ChargeRequest(reference, Money(amount, "USD"), "ecocash", phone, created_at=time.time())


def sent(fake: FakePaynow, path: str) -> list[dict[str, str]]:
    return [dict(parse_qsl(seen.body.decode())) for seen in fake.seen if seen.path == path]


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


# --- mobile express checkout ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_ecocash_charge_waits_for_the_payer_and_syncs_as_paid_once_they_approve(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    payment = await services.payments.charge(ecocash(connection_id))
    assert payment.status == PROCESSING
    [attempt] = payment.attempts
    assert attempt.gateway_id.startswith(f"{fake.base_url}/Interface/CheckPayment/?guid=")
    assert len(attempt.gateway_id) < 200  # the attempts table's column
    [form] = sent(fake, REMOTE)
    assert form["id"] == fake.integration_id
    assert form["reference"] == attempt.reference
    assert (form["amount"], form["phone"], form["method"]) == ("12.50", PAYER, "ecocash")
    assert form["authemail"] == fake.merchant_email
    assert form["merchanttrace"] == merchant_trace(attempt.reference)
    assert len(form["merchanttrace"]) <= 32
    assert form["resulturl"].startswith("https://office.example/hooks/")

    paynow = await gateway(services, connection_id)
    waiting = await paynow.sync(request_of(attempt.reference), attempt.gateway_id)
    assert waiting.status is ChargeStatus.PROCESSING  # "Sent": the prompt is on the phone
    fake.payer_pays(attempt.reference)
    paid = await paynow.sync(request_of(attempt.reference), attempt.gateway_id)
    assert (paid.status, paid.gateway_id) == (ChargeStatus.SUCCEEDED, attempt.gateway_id)


@pytest.mark.asyncio
async def test_a_payer_who_cancels_on_the_phone_is_a_soft_decline_tried_nowhere_else(
    services: Services, fake: FakePaynow
) -> None:
    # Paynow does not tell a cancel from a prompt that expired unanswered: the same payer may
    # approve the next prompt, and another gateway would only ask the same phone again.
    connection_id = await connect(services, fake)
    payment = await services.payments.charge(ecocash(connection_id))
    [attempt] = payment.attempts
    fake.payer_cancels(attempt.reference)
    paynow = await gateway(services, connection_id)
    result = await paynow.sync(request_of(attempt.reference), attempt.gateway_id)
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert result.failure.kind is FailureKind.SOFT_DECLINE
    assert not result.failure.may_fail_over
    assert "did not approve the payment on their phone" in result.failure.message


@pytest.mark.asyncio
async def test_a_wallet_short_of_money_is_a_soft_decline(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    payment = await services.payments.charge(ecocash(connection_id, SHORT_OF_MONEY))
    assert payment.status == FAILED
    assert payment.failure is not None
    assert payment.failure.kind is FailureKind.SOFT_DECLINE
    assert payment.failure.code == "insufficient_balance"
    assert "Insufficient balance" in payment.failure.message


@pytest.mark.asyncio
async def test_a_saved_number_that_is_not_a_mobile_number_is_a_hard_decline_never_sent(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    payment = await services.payments.charge(ecocash(connection_id, "12345"))
    assert payment.status == FAILED
    assert payment.failure is not None
    assert payment.failure.kind is FailureKind.HARD_DECLINE
    assert fake.count(REMOTE) == 0


@pytest.mark.asyncio
async def test_an_international_number_is_sent_as_paynow_writes_it(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    payment = await services.payments.charge(ecocash(connection_id, "+263 77 111 1111"))
    assert payment.status == PROCESSING
    assert sent(fake, REMOTE)[0]["phone"] == PAYER


@pytest.mark.asyncio
async def test_paynow_refusing_our_request_is_technical(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    fake.merchant_email = "someone-else@school.example"  # test mode wants the merchant's own
    paynow = await gateway(services, connection_id)
    result = await paynow.charge(request_of(f"pay_{uuid.uuid4().hex}-1"))
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TECHNICAL
    assert result.failure.may_fail_over


@pytest.mark.asyncio
async def test_another_currency_than_the_integration_s_is_not_sent(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    paynow = await gateway(services, connection_id)
    assert paynow.currencies == frozenset({"USD"})
    zwg = ChargeRequest("pay_zwg-1", Money(10_000, "ZWG"), "ecocash", PAYER)
    result = await paynow.charge(zwg)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (
        FailureKind.TECHNICAL,
        "unsupported_currency",
    )
    assert fake.count(REMOTE) == 0


# --- answers that cannot be believed, and answers that never came ------------------------------


@pytest.mark.asyncio
async def test_a_tampered_answer_hash_is_never_taken_as_paid(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    fake.corrupt_hashes = True
    payment = await services.payments.charge(ecocash(connection_id))
    # The prompt may have gone to the phone: unknown, traced, and not believed either.
    assert payment.status == UNKNOWN
    [attempt] = payment.attempts
    assert attempt.failure is not None
    assert attempt.failure.kind is FailureKind.UNKNOWN
    fake.payer_pays(attempt.reference)
    paynow = await gateway(services, connection_id)
    poll_url = fake.transaction(attempt.reference).message(fake.base_url)["pollurl"]
    for gateway_id in ("", poll_url):  # traced, and polled: a spoiled hash says nothing
        result = await paynow.sync(request_of(attempt.reference), gateway_id)
        assert result.status is ChargeStatus.FAILED
        assert result.failure is not None
        assert (result.failure.kind, result.failure.code) == (
            FailureKind.UNKNOWN,
            "hash_mismatch",
        )
    fake.corrupt_hashes = False
    settled = await paynow.sync(request_of(attempt.reference))
    assert (settled.status, settled.gateway_id) == (ChargeStatus.SUCCEEDED, poll_url)
    assert fake.count(REMOTE) == 1


@pytest.mark.asyncio
async def test_a_lost_answer_is_traced_by_our_reference_and_the_payer_is_not_asked_twice(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    await gateway(services, connection_id, fast=True)
    fake.hang_after_accept = 1.0  # Paynow made it and pushed the prompt; the answer is lost
    payment = await services.payments.charge(ecocash(connection_id))
    assert payment.status == PROCESSING
    [attempt] = payment.attempts
    transaction = fake.transaction(attempt.reference)
    assert attempt.gateway_id == transaction.message(fake.base_url)["pollurl"]
    assert fake.count(REMOTE) == 1
    [trace] = sent(fake, TRACE)
    assert trace["merchanttrace"] == merchant_trace(attempt.reference)


@pytest.mark.asyncio
async def test_without_a_poll_url_only_paynow_s_own_not_found_is_not_found(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    paynow = await gateway(services, connection_id, fast=True)
    never_sent = replace(request_of(f"pay_{uuid.uuid4().hex}-1"), created_at=time.time() - 360)
    assert (await paynow.sync(never_sent)).status is ChargeStatus.NOT_FOUND
    fake.failing = True  # Paynow cannot be asked: nothing is known, so nothing is "not found"
    down = await paynow.sync(never_sent)
    assert down.status is ChargeStatus.FAILED
    assert down.failure is not None
    assert down.failure.kind is FailureKind.UNKNOWN


@pytest.mark.asyncio
async def test_paynow_down_before_it_took_the_charge_is_technical(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    paynow = await gateway(services, connection_id, fast=True)
    fake.failing = True
    result = await paynow.charge(request_of(f"pay_{uuid.uuid4().hex}-1"))
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (FailureKind.TECHNICAL, "http_503")


# --- payment links ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_link_is_made_opened_and_paid(services: Services, fake: FakePaynow) -> None:
    connection_id = await connect(services, fake)
    paynow = await gateway(services, connection_id)
    reference = f"pay_{uuid.uuid4().hex}-1"
    link = await paynow.create_link(
        LinkRequest(
            reference,
            Money(25_000, "USD"),
            "Term 2 fees",
            return_url="https://school.example/thanks",
            payer_email="parent@example.com",
        )
    )
    assert link.url.startswith(f"{fake.base_url}/Payment/ConfirmPayment/")
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(link.url)).status_code == 200
    [form] = sent(fake, "/interface/initiatetransaction")
    assert (form["amount"], form["additionalinfo"]) == ("250.00", "Term 2 fees")
    assert form["returnurl"] == "https://school.example/thanks"
    fake.payer_pays(reference)
    paid = await paynow.sync(request_of(reference, amount=25_000), link.gateway_id)
    assert paid.status is ChargeStatus.SUCCEEDED


@pytest.mark.asyncio
async def test_a_paid_amount_other_than_ours_is_not_taken_as_paid(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    paynow = await gateway(services, connection_id)
    reference = f"pay_{uuid.uuid4().hex}-1"
    link = await paynow.create_link(
        LinkRequest(reference, Money(25_000, "USD"), "Fees", return_url="https://s.example/")
    )
    fake.payer_pays(reference)
    result = await paynow.sync(request_of(reference, amount=1_000), link.gateway_id)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (FailureKind.UNKNOWN, "amount_mismatch")


# --- status updates ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_updates_through_the_receiver_move_the_payment(
    services: Services, fake: FakePaynow, receiver: Receiver
) -> None:
    connection_id = await connect(services, fake, receiver=receiver)
    payment = await services.payments.charge(ecocash(connection_id))
    [attempt] = payment.attempts
    assert sent(fake, REMOTE)[0]["resulturl"].startswith(receiver.address.url)
    fake.payer_pays(attempt.reference)
    assert await fake.deliver_updates() == [200]
    [event] = await services.inbox.recent()
    assert event.event_type == "payment.paid"
    await services.inbox_worker.process_due()
    paid = await services.payments.payment(payment.id)
    assert (paid.status, paid.gateway_id) == (SUCCEEDED, attempt.gateway_id)
    # Paynow posts again when the status moves on; a late "Cancelled" never undoes a payment.
    fake.payer_cancels(attempt.reference)
    assert await fake.deliver_updates() == [200]
    await services.inbox_worker.process_due()
    assert (await services.payments.payment(payment.id)).status == SUCCEEDED


@pytest.mark.asyncio
async def test_a_cancel_arriving_as_a_status_update_fails_the_payment(
    services: Services, fake: FakePaynow, receiver: Receiver
) -> None:
    connection_id = await connect(services, fake, receiver=receiver)
    payment = await services.payments.charge(ecocash(connection_id))
    fake.payer_cancels(payment.attempts[0].reference)
    await fake.deliver_updates()
    await services.inbox_worker.process_due()
    cancelled = await services.payments.payment(payment.id)
    assert cancelled.status == FAILED
    assert cancelled.failure is not None
    assert cancelled.failure.kind is FailureKind.SOFT_DECLINE


@pytest.mark.asyncio
async def test_a_status_update_signed_with_another_key_is_refused(
    services: Services, fake: FakePaynow, receiver: Receiver
) -> None:
    connection_id = await connect(services, fake, receiver=receiver)
    payment = await services.payments.charge(ecocash(connection_id))
    fake.integration_key = "00000000-0000-0000-0000-000000000000"  # someone else's
    fake.payer_pays(payment.attempts[0].reference)
    assert await fake.deliver_updates() == [401]
    assert await services.inbox.count() == 0


# --- what Paynow has no API for, and the connection ------------------------------------------


@pytest.mark.asyncio
async def test_refunds_and_the_ledger_are_for_the_paynow_dashboard(
    services: Services, fake: FakePaynow
) -> None:
    paynow = await gateway(services, await connect(services, fake))
    assert paynow.features == frozenset({"links"})
    with pytest.raises(
        Unsupported, match=r"refund USD 12\.50 to the payer in the Paynow merchant dashboard"
    ):
        await paynow.refund("poll-url", Money(1_250, "USD"), "ref_1")
    with pytest.raises(Unsupported, match="Paynow merchant dashboard"):
        await paynow.refund_status("ref_1", Money(1_250, "USD"))
    with pytest.raises(Unsupported, match="Paynow merchant dashboard"):
        await paynow.balance_entries()
    with pytest.raises(Unsupported, match="Paynow merchant dashboard"):
        await paynow.payouts()
    now = datetime.now(UTC)
    with pytest.raises(Unsupported, match=r"CSV file .* Reconciliation page"):
        await paynow.ledger(now - timedelta(days=30), now)


@pytest.mark.asyncio
async def test_the_health_check_proves_the_integration_id_and_key(
    services: Services, fake: FakePaynow
) -> None:
    good = await connect(services, fake)
    result = await services.connections.test(good)
    assert result.ok, result.detail
    assert fake.count(TRACE) == 1
    wrong = await connect(services, fake, key="11111111-2222-3333-4444-555555555555")
    refused = await services.connections.test(wrong)
    assert not refused.ok
    assert "Invalid Hash" in refused.detail


def test_an_integration_id_is_a_number_and_the_currency_one_paynow_takes() -> None:
    _, _, errors = PAYNOW.check(
        {"integration_id": "abc", "currency": "EUR"}, {"integration_key": "k"}
    )
    assert {error.field for error in errors} == {"integration_id", "currency"}


@pytest.mark.asyncio
async def test_a_trace_s_not_found_just_after_the_attempt_may_be_racing_it(
    services: Services, fake: FakePaynow
) -> None:
    connection_id = await connect(services, fake)
    paynow = await gateway(services, connection_id, fast=True)
    # The initiation's answer was lost a minute ago; Paynow may not have made it yet.
    recent = replace(request_of(f"pay_{uuid.uuid4().hex}-1"), created_at=time.time() - 60)
    early = await paynow.sync(recent)
    assert early.status is ChargeStatus.FAILED
    assert early.failure is not None
    assert (early.failure.kind, early.failure.code) == (FailureKind.UNKNOWN, "not_found_yet")
    assert not early.failure.may_fail_over
    later = replace(recent, created_at=time.time() - 5 * 60 - 1)
    assert (await paynow.sync(later)).status is ChargeStatus.NOT_FOUND


@pytest.mark.asyncio
@pytest.mark.parametrize("taken_back", ["refunded", "disputed"])
async def test_money_taken_back_after_a_payment_went_through_is_logged_not_undone(
    services: Services,
    fake: FakePaynow,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    taken_back: str,
) -> None:
    connection_id = await connect(services, fake, receiver=receiver)
    payment = await services.payments.charge(ecocash(connection_id))
    reference = payment.attempts[0].reference
    fake.payer_pays(reference)
    await fake.deliver_updates()
    await services.inbox_worker.process_due()
    assert (await services.payments.payment(payment.id)).status == SUCCEEDED
    if taken_back == "refunded":
        fake.merchant_refunds(reference)
    else:
        fake.payer_disputes(reference)
    assert await fake.deliver_updates() == [200]
    with caplog.at_level(logging.ERROR, logger="switchboard.payments"):
        await services.inbox_worker.process_due()
    assert (await services.payments.payment(payment.id)).status == SUCCEEDED
    [logged] = [r for r in caplog.records if "a payment that went through" in r.getMessage()]
    assert taken_back in logged.getMessage()
    assert getattr(logged, "reference", "") == reference


@pytest.mark.asyncio
@pytest.mark.parametrize("amount", ["sNaN", "NaN", "Infinity", "twelve", "12.50.1"])
async def test_a_paid_amount_that_is_not_a_number_is_not_taken_as_paid(
    services: Services, fake: FakePaynow, amount: str
) -> None:
    connection_id = await connect(services, fake)
    paynow = await gateway(services, connection_id)
    request = request_of(f"pay_{uuid.uuid4().hex}-1")
    started = await paynow.charge(request)
    transaction = fake.payer_pays(request.reference)
    transaction.amount = amount  # Paynow's own signed answer, with an amount that is none
    result = await paynow.sync(request, started.gateway_id)
    assert result.status is ChargeStatus.FAILED
    assert result.failure is not None
    assert (result.failure.kind, result.failure.code) == (FailureKind.UNKNOWN, "amount_mismatch")
