"""Automations: each trigger records its event exactly once, in the transaction of its change;
conditions choose; actions send a template (through the sandbox SMS), post a webhook (to a
consumer on loopback) and make a task; failures are retried on the schedule and then wait for a
person; a retried send never sends twice; the built-in recipes work end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Config
from app.domain.errors import StaleEdit, SwitchboardError, ValidationFailed
from app.domain.messages import MessageStatus
from app.domain.money import Money
from app.domain.school import (
    GuardianLink,
    InvoiceDraft,
    InvoiceLine,
    InvoiceStatus,
    LessonDraft,
    LessonStatus,
    StudentDraft,
    TeacherDraft,
)
from app.engine import Engine
from app.providers import sandbox_sms
from app.providers.sandbox_sms import SimulatedTwilio
from app.providers.spec import ProviderSpec
from app.services import Services
from app.services.automation_actions import (
    CREATE_TASK,
    POST_WEBHOOK,
    SEND_TEMPLATE,
    TEACHER,
    Action,
)
from app.services.automations import (
    MAX_ATTEMPTS,
    Automation,
    AutomationDraft,
    Condition,
    RunStatus,
    matches,
)
from app.services.calendar_sync import _double_bookings, _upsert_issue
from app.services.domain_events import record_lesson
from app.services.payment_events import refund_outcome
from app.services.payments import SUCCEEDED, Candidate, ChargeOrder, advance_attempt
from app.services.school import apply_lesson, lesson_records
from app.store.automations import AutomationRunRow, DomainEventRow, TaskRow
from app.store.base import utcnow
from app.store.calendar_sync import BusyRow
from app.store.messaging import MessageBatchRow, MessageRow
from app.store.payments import PaymentAttemptRow, PaymentRow
from app.store.school import Lesson
from tests.fakes.paypal import FakePayPal
from tests.fakes.scripted import Reply, ScriptedServer
from tests.fakes.server import served
from tests.providers.test_paypal_orders import connect as connect_paypal
from tests.support.messaging import Family, add_families, e164_of

pytestmark = pytest.mark.both_databases  # the workers' claims differ by database

ZONE = "Africa/Harare"


@pytest.fixture(autouse=True)
async def school_in_zimbabwe(services: Services) -> None:
    """Numbers written without a country code are the school's country's."""
    await services.settings.set("school.locale", "en_ZW")
    await services.settings.set("school.timezone", ZONE)


@pytest.fixture
async def sms(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SimulatedTwilio]:
    """The sandbox SMS connection, its simulated account fresh for this test."""
    monkeypatch.setattr(sandbox_sms, "_SIMULATORS", {})
    record = await services.connections.add("sandbox-sms", "Sandbox SMS", {}, {})
    simulator = sandbox_sms.simulator_of(record.id, {}, {})
    simulator.callbacks, simulator.undelivered_rate = False, 0.0
    provider = await services.connections.provider(record.id)
    policy = provider.client.policy  # one try per call: the automation's schedule retries
    provider.client.policy = replace(policy, retry=replace(policy.retry, attempts=1))
    yield simulator
    await simulator.aclose()


@pytest.fixture
def paypal() -> Iterator[FakePayPal]:
    fake = FakePayPal()
    with served(fake.app) as url:
        fake.base_url = url
        yield fake


async def sandbox_gateway(services: Services) -> int:
    record = await services.connections.add(
        "sandbox-payments",
        f"Sandbox Cards {uuid.uuid4().hex[:4]}",
        {"approval_rate": 1.0, "error_rate": 0.0, "latency_ms": 1.0, "latency_p95_ms": 2.0},
        {"api_key": "sk_sandbox_test"},
    )
    return record.id


def school_today() -> date:
    return datetime.now(ZoneInfo(ZONE)).date()


async def invoice_for(
    services: Services, family: Family, minor: int = 4500, *, due_in: int = 14
) -> int:
    today = school_today()
    record = await services.school.save_invoice(
        InvoiceDraft(
            currency="USD",
            issued_on=today - timedelta(days=30),
            due_on=today + timedelta(days=due_in),
            lines=(InvoiceLine("Violin lessons, Term 1", 1, minor),),
            guardian_id=family.guardian_id,
            student_id=family.student_id,
        )
    )
    return record.id


async def pay(
    services: Services,
    gateway: int,
    family: Family,
    invoice_id: int | None,
    *,
    card: str = "pm_sandbox_ok",
    minor: int = 4500,
) -> Any:
    return await services.payments.charge(
        ChargeOrder(
            idempotency_key=f"test-{uuid.uuid4().hex}",
            amount=Money(minor, "USD"),
            method="card",
            candidates=(Candidate(gateway, card),),
            invoice_id=invoice_id,
            guardian_id=family.guardian_id,
        )
    )


async def recipe(services: Services, key: str, *, enabled: bool = True) -> Automation:
    found = next(
        s.automation for s in await services.automations.automations() if s.automation.recipe == key
    )
    return await services.automations.set_enabled(found.id, enabled)


async def events_of(services: Services, event_type: str) -> list[Any]:
    return await services.automations.events(event_type=event_type)


async def teacher(services: Services) -> int:
    record = await services.school.save_teacher(TeacherDraft("Chipo", "Dube", email="c@x.org"))
    return record.id


def soon(hours: float) -> datetime:
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(microsecond=0)


# --- each trigger records its event exactly once ------------------------------------------------


async def test_a_payment_that_succeeds_records_one_event_and_asking_again_adds_none(
    services: Services,
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    invoice = await invoice_for(services, family)
    paid = await pay(services, gateway, family, invoice)
    assert paid.status == SUCCEEDED
    again = await services.payments.charge(
        ChargeOrder(
            idempotency_key=paid.idempotency_key,
            amount=paid.amount,
            method="card",
            candidates=(Candidate(gateway, "pm_sandbox_ok"),),
            invoice_id=invoice,
            guardian_id=family.guardian_id,
        )
    )
    assert again.id == paid.id
    await services.payments.settle(older_than=timedelta(0), poll_every=timedelta(0))
    [event] = await events_of(services, "payment.succeeded")
    assert (event.subject_kind, event.subject_id) == ("payment", paid.id)
    assert event.payload["payment"]["amount_minor"] == 4500
    assert event.payload["payment"]["invoice_id"] == invoice
    assert event.subject == f"Payment {paid.reference} (USD 45.00)"
    assert await events_of(services, "payment.failed") == []


async def test_a_declined_payment_records_payment_failed_with_why(services: Services) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    declined = await pay(services, gateway, family, None, card="pm_sandbox_declined")
    assert declined.status == "failed"
    [event] = await events_of(services, "payment.failed")
    assert event.subject_id == declined.id
    assert event.payload["payment"]["failure_kind"] in ("hard_decline", "soft_decline")
    assert await events_of(services, "payment.succeeded") == []


async def test_an_outcome_rolled_back_with_its_change_leaves_no_event(services: Services) -> None:
    """The event is part of the change's own transaction: a gateway's webhook whose handler
    fails leaves neither the payment changed nor an event; applied, and applied again (a
    replayed webhook), it makes exactly one."""
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)

    def open_payment(session: Session) -> int:
        payment = PaymentRow(
            reference="pay_test",
            idempotency_key="k-rollback",
            request_digest="x",
            guardian_id=family.guardian_id,
            amount_minor=1000,
            currency="USD",
            method="card",
            connection_id=gateway,
        )
        session.add(payment)
        session.flush()
        session.add(
            PaymentAttemptRow(
                payment_id=payment.id, number=1, reference="pay_test-1", connection_id=gateway
            )
        )
        return payment.id

    payment_id = await services.db.write(open_payment)

    def webhook(session: Session, fail: bool) -> None:
        attempt = session.scalar(
            select(PaymentAttemptRow).where(PaymentAttemptRow.reference == "pay_test-1")
        )
        assert attempt is not None
        advance_attempt(session, attempt, SUCCEEDED, "ch_1")
        if fail:
            raise RuntimeError("the handler failed after the change")

    with pytest.raises(RuntimeError):
        await services.db.write(webhook, True)
    assert (await services.payments.payment(payment_id)).status == "pending"
    assert await events_of(services, "payment.succeeded") == []
    await services.db.write(webhook, False)
    await services.db.write(webhook, False)
    assert [e.subject_id for e in await events_of(services, "payment.succeeded")] == [payment_id]

    tutor = await teacher(services)

    def lesson_then_fail(session: Session) -> None:
        draft = LessonDraft("Piano", tutor, soon(30), soon(31))
        record_lesson(session, apply_lesson(session, draft, ZoneInfo(ZONE)), None)
        raise RuntimeError("something after the save failed")

    with pytest.raises(RuntimeError):
        await services.db.write(lesson_then_fail)
    assert await events_of(services, "lesson.created") == []
    assert [x.title for x in await services.school.lessons(soon(0), soon(48))] == [
        "Violin, Grade 5"  # the family's, not the one rolled back
    ]


async def test_a_refund_issued_records_one_event_however_often_the_gateway_says_so(
    services: Services,
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    paid = await pay(services, gateway, family, None)
    refund = await services.payments.refund(paid.id, Money(1500, "USD"), "left the school")
    assert refund.status == "succeeded"
    await services.db.write(
        lambda session: refund_outcome(session, refund.gateway_id, refund.reference, "succeeded")
    )
    [event] = await events_of(services, "refund.issued")
    assert event.subject_id == refund.id
    assert event.payload["refund"]["amount_minor"] == 1500
    assert event.payload["payment"]["reference"] == paid.reference


async def test_lessons_created_changed_cancelled_and_a_series_each_record_theirs(
    services: Services,
) -> None:
    tutor = await teacher(services)
    draft = LessonDraft("Violin", tutor, soon(48), soon(49))
    lesson = await services.school.save_lesson(draft)
    moved = await services.school.save_lesson(
        replace(draft, title="Violin, Grade 5"), lesson_id=lesson.id, version=lesson.version
    )
    with pytest.raises(StaleEdit):  # refused: nothing changed, nothing recorded
        await services.school.save_lesson(draft, lesson_id=lesson.id, version=lesson.version)
    await services.school.save_lesson(
        replace(draft, status=LessonStatus.CANCELLED), lesson_id=lesson.id, version=moved.version
    )
    series = await services.school.save_series(
        LessonDraft("Cello", tutor, soon(24 * 10), soon(24 * 10 + 1)), 3
    )
    created = await events_of(services, "lesson.created")
    assert sorted(e.subject_id for e in created) == sorted([lesson.id, *(s.id for s in series)])
    [changed] = await events_of(services, "lesson.changed")
    assert changed.payload["lesson"]["title"] == "Violin, Grade 5"
    [cancelled] = await events_of(services, "lesson.cancelled")
    assert cancelled.payload["lesson"]["previous_status"] == "scheduled"
    assert cancelled.payload["lesson"]["status"] == "cancelled"


async def test_a_student_added_is_an_event_and_an_edit_is_not(services: Services) -> None:
    [family] = add_families(services.db, 1)
    draft = StudentDraft(
        "Rudo", "Moyo", grade="5", guardians=(GuardianLink(family.guardian_id, 0),)
    )
    student = await services.school.save_student(draft)
    await services.school.save_student(
        replace(draft, grade="6"), student_id=student.id, version=student.version
    )
    [event] = await events_of(services, "student.added")
    assert event.subject_id == student.id
    assert event.payload["student"]["guardian_ids"] == [family.guardian_id]
    assert event.subject == "Rudo Moyo"


async def test_a_sync_issue_raised_is_an_event_once_while_it_stays_open(
    services: Services,
) -> None:
    tutor = await teacher(services)
    lesson = await services.school.save_lesson(LessonDraft("Violin", tutor, soon(5), soon(6)))
    calendar = await sandbox_gateway(services)  # any connection will do for the row

    def raise_issue(session: Session) -> bool:
        return _upsert_issue(
            session, calendar, "move", lesson.id, "evt-1", "", {}, {}, "Moved in the calendar."
        )

    assert await services.db.write(raise_issue) is True
    assert await services.db.write(raise_issue) is False  # the open issue, brought up to date

    def busy(session: Session) -> None:
        starts = lesson.starts_at
        session.add(
            BusyRow(
                connection_id=calendar,
                remote_id="busy-1",
                starts_at=starts,
                ends_at=starts + timedelta(hours=1),
                summary="Dentist",
            )
        )

    def check(session: Session) -> int:
        return _double_bookings(session, calendar, lesson_records(session, Lesson.id == lesson.id))

    await services.db.write(busy)
    assert await services.db.write(check) == 1
    assert await services.db.write(check) == 0  # seen: not raised again
    kinds = sorted(e.payload["issue"]["kind"] for e in await events_of(services, "sync.conflict"))
    assert kinds == ["double_booking", "move"]


async def test_a_provider_going_down_is_an_event_with_its_alert(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(503), Reply(503), Reply(503), Reply(503))
    record = await services.connections.add(
        "scripted", "Gateway", {"url": scripted_server.url}, {"token": "t0ken-value"}
    )
    for _ in range(3):  # down after two; the third tells nothing new
        await services.health.check(record.id)
    [event] = await events_of(services, "provider.down")
    assert event.payload["connection"] == {"id": record.id, "name": "Gateway"}
    assert event.payload["alert"]["message"].startswith("Gateway is down")


async def test_overdue_invoices_and_lessons_within_a_day_are_recorded_once_each(
    services: Services,
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    overdue = await invoice_for(services, family, due_in=-3)
    paid = await invoice_for(services, family, due_in=-3)
    await pay(services, gateway, family, paid)
    await invoice_for(services, family, due_in=5)  # not due yet
    draft_invoice = await services.school.invoice(await invoice_for(services, family, due_in=-3))
    await services.school.save_invoice(
        replace(draft_invoice.draft(), status=InvoiceStatus.DRAFT), invoice_id=draft_invoice.id
    )
    tutor = await teacher(services)
    within = await services.school.save_lesson(LessonDraft("Piano", tutor, soon(3), soon(4)))
    await services.school.save_lesson(LessonDraft("Piano", tutor, soon(30), soon(31)))
    await services.school.save_lesson(
        LessonDraft("Piano", tutor, soon(5), soon(6), status=LessonStatus.CANCELLED)
    )
    now = utcnow()
    first = await services.automations.scan(now)
    assert await services.automations.scan(now + timedelta(minutes=5)) == 0
    overdue_events = await events_of(services, "invoice.overdue")
    assert [e.subject_id for e in overdue_events] == [overdue]
    assert overdue_events[0].payload["invoice"]["days_overdue"] == 3
    upcoming = [e.subject_id for e in await events_of(services, "lesson.upcoming")]
    assert within.id in upcoming
    assert first == 1 + len(upcoming)  # the families' lesson tomorrow may be in the window too
    # Moved: its new start is another occasion to remind of.
    await services.school.save_lesson(
        LessonDraft("Piano", tutor, soon(7), soon(8)), lesson_id=within.id
    )
    assert await services.automations.scan(now + timedelta(minutes=10)) == 1
    moved = [e for e in await events_of(services, "lesson.upcoming") if e.subject_id == within.id]
    assert len(moved) == 2


# --- conditions -----------------------------------------------------------------------------------


def test_conditions_compare_the_payload_without_evaluating_anything() -> None:
    payload = {
        "payment": {"amount_minor": 12_000, "currency": "USD", "method": "card", "note": None},
        "lesson": {"title": "Violin, Grade 5", "student_ids": [3, 7], "online": False},
        "invoice": {"due_on": "2026-12-01"},
    }

    def holds(field: str, op: str, value: Any) -> bool:
        return Condition(field, op, value).holds(payload)

    assert holds("payment.amount_minor", "greater", 10_000)
    assert not holds("payment.amount_minor", "less", 10_000)
    assert holds("payment.amount_minor", "equals", "12000")  # a number typed as text
    assert holds("payment.currency", "equals", " usd ")
    assert holds("payment.currency", "not_equals", "EUR")
    assert holds("payment.currency", "in", ["EUR", "USD"])
    assert holds("lesson.title", "contains", "violin")
    assert holds("lesson.student_ids", "contains", 7)
    assert holds("lesson.student_ids", "in", [1, 3])
    assert not holds("lesson.student_ids", "in", [1, 2])
    assert holds("lesson.online", "equals", False)
    assert holds("invoice.due_on", "less", "2026-12-02")
    assert not holds("payment.colour", "equals", "red")  # missing: only "is not" holds
    assert holds("payment.colour", "not_equals", "red")
    assert not holds("payment.note", "contains", "x")
    assert not holds("lesson.title", "greater", 5)  # text and a number do not compare
    assert holds("payment.__class__", "not_equals", "dict")  # a path, never an attribute
    assert matches([], payload)
    assert not matches(
        [
            Condition("payment.currency", "equals", "USD"),
            Condition("lesson.online", "equals", True),
        ],
        payload,
    )


async def test_an_automation_is_checked_before_it_is_saved_with_a_sentence_per_problem(
    services: Services,
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await services.automations.save(
            AutomationDraft(name=" ", trigger="payment.refunded", actions=())
        )
    assert {error.field for error in caught.value.errors} == {"name", "trigger", "actions"}

    with pytest.raises(ValidationFailed) as caught:
        await services.automations.save(
            AutomationDraft(
                name="Big payments",
                trigger="payment.succeeded",
                conditions=(
                    Condition("payment.colour", "equals", "red"),
                    Condition("payment.amount_minor", "greater", "a lot"),
                    Condition("payment.currency", "less", "USD"),
                ),
                actions=(
                    Action(SEND_TEMPLATE, template="No such template"),
                    Action(SEND_TEMPLATE, template="Payment receipt", to=TEACHER),
                    Action(POST_WEBHOOK, event_type="not a type!"),
                    Action(CREATE_TASK, title="", due_in_days=400),
                ),
            )
        )
    messages = [error.message for error in caught.value.errors]
    assert any("“payment.colour” is not part of “A payment succeeded”" in m for m in messages)
    assert "Condition 2: Amount is compared with a number." in messages
    assert any(m.startswith("Condition 3: Currency is text") for m in messages)
    assert "Action 2: only lessons have a teacher to send to." in messages
    assert any(m.startswith("Action 3: name the webhook's event type") for m in messages)
    assert "Action 4: the task needs a title." in messages
    assert "Action 4: the task is due 0 to 365 days after the event." in messages

    with pytest.raises(ValidationFailed) as caught:  # what only the database can tell
        await services.automations.save(
            AutomationDraft(
                name="Thank you",
                trigger="payment.succeeded",
                actions=(Action(SEND_TEMPLATE, template="No such template"),),
            )
        )
    assert [e.message for e in caught.value.errors] == [
        "Action 1: there is no message template called “No such template”."
    ]
    first = await services.automations.save(
        AutomationDraft(
            "Thank you", "payment.succeeded", (Action(SEND_TEMPLATE, template="Payment receipt"),)
        )
    )
    with pytest.raises(ValidationFailed, match="already an automation called 'Thank you'"):
        await services.automations.save(first.draft())
    changed = await services.automations.save(
        replace(first.draft(), description="Said twice"),
        automation_id=first.id,
        version=first.version,
    )
    with pytest.raises(StaleEdit):
        await services.automations.save(
            first.draft(), automation_id=first.id, version=first.version
        )
    await services.automations.delete(changed.id)
    assert all(s.automation.id != changed.id for s in await services.automations.automations())


async def test_the_built_in_recipes_are_there_switched_off_and_stay(services: Services) -> None:
    summaries = await services.automations.automations()
    recipes = {s.automation.recipe: s.automation for s in summaries if s.automation.builtin}
    assert set(recipes) == {
        "payment_receipt",
        "failed_payment_notice",
        "lesson_reminder",
        "overdue_reminder",
    }
    assert not any(a.enabled for a in recipes.values())
    assert all(s.last_run is None and s.runs == 0 for s in summaries)
    assert await services.automations.ensure_recipes() == 0
    receipt = recipes["payment_receipt"]
    with pytest.raises(SwitchboardError, match="switch it off instead"):
        await services.automations.delete(receipt.id)
    with pytest.raises(ValidationFailed, match="keeps its trigger"):
        await services.automations.save(
            replace(receipt.draft(), trigger="payment.failed"), automation_id=receipt.id
        )
    on = await services.automations.set_enabled(receipt.id, True)
    assert on.enabled
    assert on.trigger_label == "A payment succeeded"


async def test_only_events_that_meet_the_conditions_start_a_run(
    services: Services, sms: SimulatedTwilio
) -> None:
    families = add_families(services.db, 2)
    gateway = await sandbox_gateway(services)
    big = await services.automations.save(
        AutomationDraft(
            "Thank big payers",
            "payment.succeeded",
            (Action(SEND_TEMPLATE, template="Payment receipt"),),
            conditions=(Condition("payment.amount_minor", "greater", 10_000),),
            enabled=True,
        )
    )
    await pay(services, gateway, families[0], None, minor=4500)
    await pay(services, gateway, families[1], None, minor=25_000)
    done = await services.automations.process()
    assert (done.dispatched, done.ran, done.succeeded) == (2, 1, 1)
    assert sms.received == {e164_of(1): 1}
    [run] = await services.automations.runs(big.id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outcome == "Sent “Payment receipt” to 1 person."


# --- actions --------------------------------------------------------------------------------------


async def test_the_payment_receipt_recipe_sends_the_guardian_a_receipt(
    services: Services, sms: SimulatedTwilio
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    receipt = await recipe(services, "payment_receipt")
    paid = await pay(services, gateway, family, await invoice_for(services, family))
    done = await services.automations.process()
    assert done.succeeded == 1
    assert sms.received == {e164_of(0): 1}
    [message] = sms.messages.values()
    assert message.body == f"My School: we received US$45.00, ref {paid.reference}. Thank you!"
    [summary] = [
        s for s in await services.automations.automations() if s.automation.id == receipt.id
    ]
    assert summary.last_run is not None
    assert summary.last_run.status == RunStatus.SUCCEEDED
    assert summary.last_run.subject == f"Payment {paid.reference} (USD 45.00)"
    assert summary.last_run.steps[0].done
    assert "batch_id" in summary.last_run.steps[0].made
    assert (await services.automations.process()).ran == 0  # nothing runs twice
    assert sum(sms.received.values()) == 1


async def test_the_failed_payment_notice_carries_a_pay_link_for_what_is_owed(
    services: Services, sms: SimulatedTwilio, paypal: FakePayPal
) -> None:
    [family] = add_families(services.db, 1)
    await connect_paypal(services, paypal)
    gateway = await sandbox_gateway(services)
    await recipe(services, "failed_payment_notice")
    invoice = await invoice_for(services, family, 12_000)
    await pay(services, gateway, family, invoice, minor=4000)  # part paid
    await pay(services, gateway, family, invoice, card="pm_sandbox_declined", minor=8000)
    assert (await services.automations.process()).succeeded == 1
    [message] = sms.messages.values()
    assert "your payment of US$80.00 did not go through" in message.body
    link = message.body.rsplit("Pay here: ", 1)[1]
    assert link.startswith("https://www.sandbox.paypal.com/checkoutnow?token=")
    links = [p for p in await services.payments.payments(status="processing") if p.link]
    assert [(p.link, p.amount, p.invoice_id) for p in links] == [
        (link, Money(8000, "USD"), invoice)
    ]


async def test_no_failed_payment_notice_goes_when_the_invoice_was_paid_meanwhile(
    services: Services, sms: SimulatedTwilio, paypal: FakePayPal
) -> None:
    [family] = add_families(services.db, 1)
    await connect_paypal(services, paypal)
    gateway = await sandbox_gateway(services)
    notice = await recipe(services, "failed_payment_notice")
    invoice = await services.school.invoice(await invoice_for(services, family))
    await pay(services, gateway, family, invoice.id, card="pm_sandbox_declined")
    await pay(services, gateway, family, invoice.id)  # another card, before the notice went
    await services.automations.process()
    [run] = await services.automations.runs(notice.id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.outcome == f"Nothing was sent: invoice {invoice.number} is paid."
    assert sms.received == {}
    assert paypal.orders == {}  # and no pay link was made for it


async def test_a_pay_link_that_cannot_be_made_is_retried_and_starts_nothing_of_its_own(
    services: Services, sms: SimulatedTwilio, paypal: FakePayPal
) -> None:
    [family] = add_families(services.db, 1)
    await connect_paypal(services, paypal)
    gateway = await sandbox_gateway(services)
    notice = await recipe(services, "failed_payment_notice")
    await services.automations.save(  # acts on every failed payment: it must not loop
        AutomationDraft(
            "Look at failures",
            "payment.failed",
            (Action(CREATE_TASK, title="Look at {payment.reference}"),),
            enabled=True,
        )
    )
    invoice = await invoice_for(services, family)
    paypal.failing = True
    await pay(services, gateway, family, invoice, card="pm_sandbox_declined")
    start = utcnow()
    await services.automations.process(start)
    [run] = await services.automations.runs(notice.id)
    assert run.status == RunStatus.RETRYING
    assert run.error.startswith("The pay link could not be made")
    link_failed = [
        e
        for e in await events_of(services, "payment.failed")
        if e.payload["payment"]["by_automation"]
    ]
    assert len(link_failed) == 1  # told to the webhooks, but starts no automation
    await services.automations.process(start + timedelta(seconds=1))
    assert len(await services.automations.runs()) == 2
    assert len(await services.automations.tasks()) == 1
    paypal.failing = False
    assert (await services.automations.process(start + timedelta(seconds=6))).succeeded == 1
    [message] = sms.messages.values()
    assert "Pay here: https://www.sandbox.paypal.com/checkoutnow?token=" in message.body


async def test_the_lesson_reminder_goes_to_the_guardians_of_the_lesson_s_students(
    services: Services, sms: SimulatedTwilio
) -> None:
    add_families(services.db, 2, lesson="Violin")  # one lesson, tomorrow, two students
    await recipe(services, "lesson_reminder")
    await services.automations.scan()
    assert (await services.automations.process()).succeeded == 1
    assert sms.received == {e164_of(0): 1, e164_of(1): 1}
    bodies = sorted(m.body for m in sms.messages.values())
    assert bodies[0].startswith("Reminder: Child0 has Violin, Grade 5 ")
    assert bodies[1].startswith("Reminder: Child1 has Violin, Grade 5 ")
    assert " at " in bodies[0]
    assert bodies[0].endswith(". My School")
    await services.automations.scan()
    assert (await services.automations.process()).ran == 0


async def test_the_overdue_reminder_asks_families_who_owe_and_not_those_who_paid(
    services: Services, sms: SimulatedTwilio, paypal: FakePayPal
) -> None:
    owing, settled = add_families(services.db, 2)
    await connect_paypal(services, paypal)
    gateway = await sandbox_gateway(services)
    await recipe(services, "overdue_reminder")
    overdue = await services.school.invoice(await invoice_for(services, owing, due_in=-2))
    paid = await invoice_for(services, settled, due_in=-2)
    await pay(services, gateway, settled, paid)
    await services.automations.scan()
    assert (await services.automations.process()).succeeded == 1
    assert sms.received == {e164_of(0): 1}
    [message] = sms.messages.values()
    assert f"invoice {overdue.number} (US$45.00) was due " in message.body
    assert "Pay: https://www.sandbox.paypal.com/checkoutnow?token=" in message.body


async def test_post_webhook_reaches_the_endpoint_and_every_event_is_forwarded_too(
    services: Services,
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def consumer(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hooks", consumer, methods=["POST"])])
    with served(app) as url:
        endpoint = await services.outbound.add_endpoint(f"{url}/hooks")
        secret = await services.outbound.secret(endpoint.id)
        await services.automations.save(
            AutomationDraft(
                "Tell the CRM",
                "student.added",
                (Action(POST_WEBHOOK, event_type="school.new_student"),),
                enabled=True,
            )
        )
        [family] = add_families(services.db, 1)
        student = await services.school.save_student(
            StudentDraft("Rudo", "Moyo", guardians=(GuardianLink(family.guardian_id, 0),))
        )
        done = await services.automations.process()
        assert (done.forwarded, done.succeeded) == (1, 1)
        await services.outbound.deliver_due()
    verifier = Webhook(secret)
    bodies = {}
    for headers, body in received:
        data = verifier.verify(body, headers)
        bodies[data["type"]] = data["data"]
    assert set(bodies) == {"student.added", "school.new_student"}
    assert bodies["student.added"]["student"]["first_name"] == "Rudo"
    assert bodies["student.added"]["subject"] == {"kind": "student", "id": student.id}
    posted = bodies["school.new_student"]
    assert posted["automation"]["name"] == "Tell the CRM"
    assert posted["event"]["type"] == "student.added"
    assert posted["event"]["event_id"] == bodies["student.added"]["event_id"]


async def test_create_task_makes_one_follow_up_even_when_its_run_is_taken_up_again(
    services: Services,
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    await services.automations.save(
        AutomationDraft(
            "Call about declines",
            "payment.failed",
            (
                Action(
                    CREATE_TASK,
                    title="Call the family about {payment.reference}",
                    due_in_days=2,
                    notes="{payment.failure_message}",
                ),
            ),
            enabled=True,
        )
    )
    declined = await pay(services, gateway, family, None, card="pm_sandbox_declined")
    await services.automations.process()
    [task] = await services.automations.tasks()
    assert task.title == f"Call the family about {declined.reference}"
    assert task.due_on == school_today() + timedelta(days=2)
    assert (task.related_kind, task.related_id) == ("payment", declined.id)
    assert task.notes == declined.failure.message

    # The process died after the task was made but before its step was marked done.
    def forget_done(session: Session) -> None:
        run = session.scalars(select(AutomationRunRow)).one()
        run.status, run.next_attempt_at = RunStatus.RETRYING, utcnow()
        run.steps = [{**run.steps[0], "done": False}]

    await services.db.write(forget_done)
    assert (await services.automations.process()).succeeded == 1
    assert len(await services.db.read(lambda s: s.scalars(select(TaskRow)).all())) == 1
    done = await services.automations.complete_task(task.id, by="Office")
    assert done.done
    assert done.done_by == "Office"
    assert await services.automations.tasks() == []
    assert [t.id for t in await services.automations.tasks(open_only=False)] == [task.id]


# --- retries --------------------------------------------------------------------------------------


async def test_a_failed_send_is_retried_on_the_schedule_and_then_succeeds(
    services: Services, sms: SimulatedTwilio
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    await recipe(services, "payment_receipt")
    await pay(services, gateway, family, None)
    sms.fail_next = 1_000  # the SMS provider answers 503
    start = utcnow()
    assert (await services.automations.process(start)).retrying == 1
    [run] = await services.automations.runs()
    assert (run.status, run.attempts) == (RunStatus.RETRYING, 1)
    assert run.next_attempt_at == start + timedelta(seconds=5)
    assert run.error
    assert (await services.automations.process(start + timedelta(seconds=3))).ran == 0
    sms.fail_next = 0
    assert (await services.automations.process(start + timedelta(seconds=6))).succeeded == 1
    [run] = await services.automations.runs()
    assert (run.status, run.attempts, run.error) == (RunStatus.SUCCEEDED, 2, "")
    assert sms.received == {e164_of(0): 1}
    batches = await services.db.read(lambda s: s.scalars(select(MessageBatchRow.id)).all())
    assert len(batches) == 1  # the retry resumed the send it had begun


async def test_a_run_that_keeps_failing_waits_for_a_person_who_can_retry_it(
    services: Services,
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    await recipe(services, "payment_receipt")
    await pay(services, gateway, family, None)  # no SMS or e-mail connection yet
    moment = utcnow()
    waits = []
    for _ in range(MAX_ATTEMPTS):
        await services.automations.process(moment)
        [run] = await services.automations.runs()
        if run.next_attempt_at is not None:
            waits.append(run.next_attempt_at - moment)
            moment = run.next_attempt_at
    assert waits == [
        timedelta(seconds=5),
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
    ]
    [run] = await services.automations.runs(status=RunStatus.FAILED)
    assert run.needs_person
    assert run.attempts == MAX_ATTEMPTS
    assert "SMS" in run.error  # messaging's sentence: no connection sends SMS yet
    [summary] = [s for s in await services.automations.automations() if s.failed]
    assert summary.automation.recipe == "payment_receipt"
    assert (await services.automations.process(moment + timedelta(days=1))).ran == 0

    # The office connects SMS and retries: the prepared message goes, once.
    sms_record = await services.connections.add("sandbox-sms", "Sandbox SMS", {}, {})
    simulator = sandbox_sms.simulator_of(sms_record.id, {}, {})
    simulator.callbacks = False
    received_before = sum(simulator.received.values())
    retried = await services.automations.retry(run.id)
    assert retried.status == RunStatus.RETRYING
    assert (await services.automations.process()).succeeded == 1
    assert sum(simulator.received.values()) - received_before == 1
    assert (await services.automations.run(run.id)).status == RunStatus.SUCCEEDED
    await simulator.aclose()


async def test_a_send_interrupted_mid_way_is_resumed_and_nobody_gets_it_twice(
    services: Services, sms: SimulatedTwilio
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    await recipe(services, "payment_receipt")
    await pay(services, gateway, family, None)
    await services.automations.process()
    assert sms.received == {e164_of(0): 1}

    # As if the process died after the provider took the message, before anything about it
    # was written: the message was `sending`, the batch going, the run running, and even the
    # batch id not yet noted on the run.
    def crash(session: Session) -> None:
        session.execute(update(MessageRow).values(status=MessageStatus.SENDING.value))
        session.execute(update(MessageBatchRow).values(status="sending", finished_at=None))
        run = session.scalars(select(AutomationRunRow)).one()
        run.status, run.next_attempt_at = RunStatus.RUNNING, utcnow() - timedelta(minutes=1)
        run.steps = [{"action": run.steps[0]["action"], "done": False}]

    await services.db.write(crash)
    await services.messaging.recover()  # what the engine does when it starts
    assert (await services.automations.process()).succeeded == 1
    assert sms.received == {e164_of(0): 1}
    [run] = await services.automations.runs()
    assert run.attempts == 2
    views = await services.messaging.messages()
    assert [v.status for v in views] == [MessageStatus.QUEUED]
    assert len(await services.db.read(lambda s: s.scalars(select(MessageBatchRow)).all())) == 1


async def test_runs_of_an_automation_switched_off_are_set_aside(
    services: Services, sms: SimulatedTwilio
) -> None:
    [family] = add_families(services.db, 1)
    gateway = await sandbox_gateway(services)
    receipt = await recipe(services, "payment_receipt")
    sms.fail_next = 1_000
    await pay(services, gateway, family, None)
    start = utcnow()
    await services.automations.process(start)
    await services.automations.set_enabled(receipt.id, False)
    await services.automations.process(start + timedelta(minutes=1))
    [run] = await services.automations.runs(receipt.id)
    assert run.status == RunStatus.DISMISSED
    assert "switched off" in run.error
    dismissed = await services.automations.dismiss(run.id)
    assert dismissed.status == RunStatus.DISMISSED


# --- the worker -----------------------------------------------------------------------------------


async def test_the_worker_wakes_when_a_change_records_an_event(services: Services) -> None:
    await services.automations.save(
        AutomationDraft(
            "Welcome call",
            "student.added",
            (Action(CREATE_TASK, title="Welcome {student.first_name}"),),
            enabled=True,
        )
    )
    services.automations.start()
    try:
        await services.automations.process()  # the worker has the loop to itself from here
        await services.school.save_student(StudentDraft("Tariro", "Ncube"))
        # The worker polls every 30 s; being woken, it makes the task at once.
        titles = await until_tasks(services)
        assert titles == ["Welcome Tariro"]
    finally:
        await services.automations.stop()
    events = await services.db.read(lambda s: s.scalars(select(DomainEventRow)).all())
    assert all(e.dispatched_at and e.forwarded_at for e in events)


async def until_tasks(services: Services, limit: float = 5.0) -> list[str]:
    deadline = asyncio.get_running_loop().time() + limit
    while asyncio.get_running_loop().time() < deadline:
        titles = [task.title for task in await services.automations.tasks()]
        if titles:
            return titles
        await asyncio.sleep(0.05)
    raise AssertionError("the worker did not make the task")


def test_the_engine_runs_the_worker_and_scans_every_few_minutes(config: Config) -> None:
    engine = Engine(config)
    engine.start()
    try:
        scheduler = engine._scheduler
        assert scheduler is not None
        scan = scheduler.get_job("automations-scan")
        assert scan is not None
        assert scan.trigger.interval == timedelta(minutes=5)
        services = engine.services
        draft = AutomationDraft(
            "Welcome call",
            "student.added",
            (Action(CREATE_TASK, title="Welcome {student.first_name}"),),
            enabled=True,
        )
        engine.submit(services.automations.save(draft)).result(10)
        engine.submit(services.school.save_student(StudentDraft("Tendai", "Moyo"))).result(10)
        titles = engine.submit(until_tasks(services)).result(10)
        assert titles == ["Welcome Tendai"]
    finally:
        engine.stop()
