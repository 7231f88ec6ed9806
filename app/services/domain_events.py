"""Domain events: the one place services say what happened in the school.

A service calls one of the `record_*` functions inside its own write function, so the event
row is committed with the change it tells of, or rolled back with it: a crash can neither
lose an event nor invent one. The automation worker (app/services/automations.py) later
turns each event into runs of the automations that want it, and forwards every event to the
outbound webhooks (endpoints and Zapier subscribers hear them whether or not an automation
exists).

The time-based triggers ("invoice overdue", "lesson in 24 hours") come from `scan_due`, which
the engine's scheduler calls every few minutes; each records a subject at most once for the
date that made it due (the event's unique `key`).

`TRIGGERS` lists every event type with the fields its payload carries, for the automation
editor's condition picker and for the conditions' validation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, selectinload

from app.store.automations import DomainEventRow
from app.store.calendar_sync import SyncIssueRow
from app.store.integration import AlertRow
from app.store.payments import PaymentRow, RefundRow
from app.store.school import Invoice, Lesson, Student

log = logging.getLogger("switchboard.automations")

# Event types (the automations' triggers, and the outbound webhooks' event types).
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
REFUND_ISSUED = "refund.issued"
INVOICE_OVERDUE = "invoice.overdue"
LESSON_CREATED = "lesson.created"
LESSON_CHANGED = "lesson.changed"
LESSON_CANCELLED = "lesson.cancelled"
LESSON_UPCOMING = "lesson.upcoming"  # starts within the next 24 hours
STUDENT_ADDED = "student.added"
SYNC_CONFLICT = "sync.conflict"
PROVIDER_DOWN = "provider.down"

# The idempotency keys of payments automations ask for (pay links), so their outcomes can be
# told from the family's own payments.
AUTOMATION_KEY_PREFIX = "automation-"
UPCOMING_WITHIN = timedelta(hours=24)
SCAN_LIMIT = 500  # events a scan records at most per trigger; the rest come with the next one
_KEY_CHUNK = 500


@dataclass(frozen=True)
class PayloadField:
    """A field of an event's payload that a condition may test. `kind`: text, number, money
    (minor units, with the currency beside it), date, datetime (ISO 8601), bool or list."""

    path: str
    label: str
    kind: str = "text"


@dataclass(frozen=True)
class Trigger:
    type: str
    label: str
    subject: str  # what the event is about: payment, refund, invoice, lesson, ...
    fields: tuple[PayloadField, ...]

    def field(self, path: str) -> PayloadField | None:
        return next((f for f in self.fields if f.path == path), None)


_PAYMENT_FIELDS = (
    PayloadField("payment.amount_minor", "Amount", "money"),
    PayloadField("payment.currency", "Currency"),
    PayloadField("payment.method", "Method"),
    PayloadField("payment.reference", "Reference"),
    PayloadField("payment.description", "Description"),
    PayloadField("payment.invoice_id", "Invoice", "number"),
    PayloadField("payment.guardian_id", "Guardian", "number"),
    PayloadField("payment.connection_id", "Gateway connection", "number"),
    PayloadField("payment.failure_kind", "Why it failed (hard_decline, soft_decline, technical)"),
    PayloadField("payment.by_automation", "Asked for by an automation (a pay link)", "bool"),
    PayloadField("payment.failure_code", "Failure code"),
)
_LESSON_FIELDS = (
    PayloadField("lesson.title", "Title"),
    PayloadField("lesson.teacher_id", "Teacher", "number"),
    PayloadField("lesson.room_id", "Room", "number"),
    PayloadField("lesson.starts_at", "Starts", "datetime"),
    PayloadField("lesson.status", "Status"),
    PayloadField("lesson.online", "Online", "bool"),
    PayloadField("lesson.student_ids", "Students", "list"),
    PayloadField("lesson.previous_status", "Status before"),
)

TRIGGERS: dict[str, Trigger] = {
    trigger.type: trigger
    for trigger in (
        Trigger(PAYMENT_SUCCEEDED, "A payment succeeded", "payment", _PAYMENT_FIELDS),
        Trigger(PAYMENT_FAILED, "A payment failed", "payment", _PAYMENT_FIELDS),
        Trigger(
            REFUND_ISSUED,
            "A refund was issued",
            "refund",
            (
                PayloadField("refund.amount_minor", "Refund amount", "money"),
                PayloadField("refund.currency", "Currency"),
                PayloadField("refund.reason", "Reason"),
                *_PAYMENT_FIELDS,
            ),
        ),
        Trigger(
            INVOICE_OVERDUE,
            "An invoice is overdue",
            "invoice",
            (
                PayloadField("invoice.number", "Invoice number"),
                PayloadField("invoice.total_minor", "Total", "money"),
                PayloadField("invoice.currency", "Currency"),
                PayloadField("invoice.due_on", "Due on", "date"),
                PayloadField("invoice.guardian_id", "Guardian", "number"),
                PayloadField("invoice.student_id", "Student", "number"),
            ),
        ),
        Trigger(LESSON_CREATED, "A lesson was created", "lesson", _LESSON_FIELDS),
        Trigger(LESSON_CHANGED, "A lesson was changed", "lesson", _LESSON_FIELDS),
        Trigger(LESSON_CANCELLED, "A lesson was cancelled", "lesson", _LESSON_FIELDS),
        Trigger(LESSON_UPCOMING, "A lesson starts within 24 hours", "lesson", _LESSON_FIELDS),
        Trigger(
            STUDENT_ADDED,
            "A student was added",
            "student",
            (
                PayloadField("student.first_name", "First name"),
                PayloadField("student.last_name", "Last name"),
                PayloadField("student.grade", "Grade"),
                PayloadField("student.guardian_ids", "Guardians", "list"),
            ),
        ),
        Trigger(
            SYNC_CONFLICT,
            "Calendar sync needs a decision",
            "sync_issue",
            (
                PayloadField("issue.kind", "Kind (move, cancel, conflict, double_booking)"),
                PayloadField("issue.lesson_id", "Lesson", "number"),
                PayloadField("issue.connection_id", "Calendar connection", "number"),
            ),
        ),
        Trigger(
            PROVIDER_DOWN,
            "A provider is down",
            "connection",
            (
                PayloadField("connection.id", "Connection", "number"),
                PayloadField("connection.name", "Connection name"),
                PayloadField("alert.message", "Alert"),
            ),
        ),
    )
}


# --- recording ------------------------------------------------------------------------------------


def record_event(
    session: Session,
    type: str,
    subject_kind: str,
    subject_id: int | None,
    payload: Mapping[str, Any],
    *,
    key: str | None = None,
) -> DomainEventRow | None:
    """Add an event to the caller's transaction (committed with its change or not at all).
    With `key`, an event already recorded under that key is not recorded again (None)."""
    if type not in TRIGGERS:
        raise ValueError(f"unknown domain event type {type!r}")
    if key is not None and _recorded(session, key):
        return None
    row = DomainEventRow(
        type=type,
        subject_kind=subject_kind,
        subject_id=subject_id,
        payload=dict(payload),
        key=key,
    )
    session.add(row)
    session.info[_RECORDED] = True
    return row


def _recorded(session: Session, key: str) -> bool:
    if any(isinstance(row, DomainEventRow) and row.key == key for row in session.new):
        return True
    # Not flushing the caller's pending changes: their errors are theirs to meet, later.
    with session.no_autoflush:
        found = session.scalar(select(DomainEventRow.id).where(DomainEventRow.key == key))
    return found is not None


def record_payment_outcome(session: Session, payment: PaymentRow) -> None:
    """A payment that just reached succeeded or failed (other statuses tell nothing yet)."""
    kind = {"succeeded": PAYMENT_SUCCEEDED, "failed": PAYMENT_FAILED}.get(payment.status)
    if kind is not None:
        record_event(
            session,
            kind,
            "payment",
            payment.id,
            {"payment": payment_payload(payment)},
            key=f"{kind}:{payment.id}",
        )


def record_refund(session: Session, refund: RefundRow) -> None:
    """A refund the gateway made (succeeded), once however often it is told so."""
    if refund.status != "succeeded":
        return
    payment = session.get(PaymentRow, refund.payment_id)
    record_event(
        session,
        REFUND_ISSUED,
        "refund",
        refund.id,
        {
            "refund": {
                "id": refund.id,
                "reference": refund.reference,
                "amount_minor": refund.amount_minor,
                "currency": refund.currency,
                "reason": refund.reason,
                "payment_id": refund.payment_id,
            },
            "payment": payment_payload(payment) if payment is not None else {},
        },
        key=f"{REFUND_ISSUED}:{refund.id}",
    )


def record_lesson(session: Session, lesson: Lesson, was: str | None) -> Lesson:
    """A lesson saved: created (`was` None, the status it had before), cancelled (its status
    became cancelled) or changed. Returns the lesson, so the call wraps the save."""
    if was is None:
        kind = LESSON_CREATED
    elif lesson.status == "cancelled" and was != "cancelled":
        kind = LESSON_CANCELLED
    else:
        kind = LESSON_CHANGED
    payload = lesson_payload(lesson)
    if was is not None:
        payload["previous_status"] = was
    record_event(session, kind, "lesson", lesson.id, {"lesson": payload})
    return lesson


def record_lessons_created(session: Session, lesson_ids: Sequence[int]) -> list[int]:
    """Lessons made together (a weekly series): one "created" event each. Returns the ids."""
    for lesson_id in lesson_ids:
        lesson = session.get(Lesson, lesson_id)
        if lesson is not None:
            record_lesson(session, lesson, None)
    return list(lesson_ids)


def record_student(session: Session, student: Student, new: bool) -> Student:
    """A student saved: an event only when the student is new. Returns the student."""
    if new:
        record_event(
            session,
            STUDENT_ADDED,
            "student",
            student.id,
            {
                "student": {
                    "id": student.id,
                    "ref": student.ref,
                    "first_name": student.first_name,
                    "last_name": student.last_name,
                    "grade": student.grade,
                    "active": student.active,
                    "guardian_ids": [link.guardian_id for link in student.guardian_links],
                }
            },
        )
    return student


def record_sync_issue(session: Session, issue: SyncIssueRow) -> None:
    """A calendar sync issue just raised for a person (a move, a cancellation, a conflict, a
    double booking)."""
    session.flush()  # a new issue's id
    record_event(
        session,
        SYNC_CONFLICT,
        "sync_issue",
        issue.id,
        {
            "issue": {
                "id": issue.id,
                "kind": issue.kind,
                "lesson_id": issue.local_id,
                "connection_id": issue.connection_id,
                "detail": issue.detail,
            }
        },
    )


def record_alert(session: Session, alert: AlertRow, connection_name: str) -> None:
    """A health alert: a "down" one is the provider.down event (recoveries are not events)."""
    if alert.kind != "down":
        return
    record_event(
        session,
        PROVIDER_DOWN,
        "connection",
        alert.connection_id,
        {
            "connection": {"id": alert.connection_id, "name": connection_name},
            "alert": {"id": alert.id, "message": alert.message},
        },
    )


# --- payloads -------------------------------------------------------------------------------------


def payment_payload(payment: PaymentRow) -> dict[str, Any]:
    return {
        "id": payment.id,
        "reference": payment.reference,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "method": payment.method,
        "status": payment.status,
        "description": payment.description,
        "invoice_id": payment.invoice_id,
        "guardian_id": payment.guardian_id,
        "connection_id": payment.connection_id,
        "by_automation": payment.idempotency_key.startswith(AUTOMATION_KEY_PREFIX),
        "failure_kind": payment.failure_kind or "",
        "failure_code": payment.failure_code or "",
        "failure_message": payment.failure_message or "",
    }


def lesson_payload(lesson: Lesson) -> dict[str, Any]:
    return {
        "id": lesson.id,
        "ref": lesson.ref,
        "title": lesson.title,
        "teacher_id": lesson.teacher_id,
        "room_id": lesson.room_id,
        "starts_at": lesson.starts_at.isoformat(),
        "ends_at": lesson.ends_at.isoformat(),
        "status": lesson.status,
        "online": lesson.online,
        "series_id": lesson.series_id,
        "student_ids": sorted(link.student_id for link in lesson.student_links),
    }


def invoice_payload(invoice: Invoice, today: date) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "number": invoice.number,
        "total_minor": invoice.total_minor,
        "currency": invoice.currency,
        "issued_on": invoice.issued_on.isoformat(),
        "due_on": invoice.due_on.isoformat(),
        "days_overdue": (today - invoice.due_on).days,
        "status": invoice.status,
        "guardian_id": invoice.guardian_id,
        "student_id": invoice.student_id,
    }


def owed(session: Session, invoice: Invoice) -> int:
    """What is still to pay on an invoice, in minor units: its total less what was paid (net of
    refunds) and payments on their way (a bank debit); a pay link not used yet is not paid."""
    paid = session.scalar(
        select(func.coalesce(func.sum(PaymentRow.amount_minor - PaymentRow.refunded_minor), 0))
        .where(PaymentRow.invoice_id == invoice.id)
        .where(PaymentRow.status == "succeeded")
    )
    coming = session.scalar(
        select(func.coalesce(func.sum(PaymentRow.amount_minor), 0))
        .where(PaymentRow.invoice_id == invoice.id)
        .where(PaymentRow.status == "processing")
        .where(PaymentRow.method != "link")
    )
    return invoice.total_minor - int(paid or 0) - int(coming or 0)


# --- the time-based triggers ----------------------------------------------------------------------


def scan_due(session: Session, now: datetime, zone: ZoneInfo) -> int:
    """Record "invoice overdue" for each open invoice past its due date (the school's today)
    and not paid, and "lesson upcoming" for each scheduled lesson starting within 24 hours,
    each once for its due date or start. How many events were recorded."""
    today = now.astimezone(zone).date()
    overdue = session.execute(
        select(Invoice.id, Invoice.due_on)
        .where(Invoice.status == "open", Invoice.due_on < today)
        .order_by(Invoice.due_on, Invoice.id)
    ).all()
    missing = _unrecorded(
        session, {f"{INVOICE_OVERDUE}:{i}:{due.isoformat()}": i for i, due in overdue}
    )
    recorded = 0
    for key, invoice_id in list(missing.items())[:SCAN_LIMIT]:
        invoice = session.get(Invoice, invoice_id)
        if invoice is not None and owed(session, invoice) > 0:  # paid, though still open
            payload = {"invoice": invoice_payload(invoice, today)}
            recorded += bool(
                record_event(session, INVOICE_OVERDUE, "invoice", invoice.id, payload, key=key)
            )
    soon = session.execute(
        select(Lesson.id, Lesson.starts_at)
        .where(
            Lesson.status == "scheduled",
            Lesson.starts_at > now,
            Lesson.starts_at <= now + UPCOMING_WITHIN,
        )
        .order_by(Lesson.starts_at, Lesson.id)
    ).all()
    missing = _unrecorded(
        session, {f"{LESSON_UPCOMING}:{i}:{start.isoformat()}": i for i, start in soon}
    )
    lessons = {
        lesson.id: lesson
        for lesson in session.scalars(
            select(Lesson)
            .options(selectinload(Lesson.student_links))
            .where(Lesson.id.in_(list(missing.values())[:SCAN_LIMIT]))
        )
    }
    for key, lesson_id in list(missing.items())[:SCAN_LIMIT]:
        lesson = lessons.get(lesson_id)
        if lesson is not None:
            payload = {"lesson": lesson_payload(lesson)}
            recorded += bool(
                record_event(session, LESSON_UPCOMING, "lesson", lesson.id, payload, key=key)
            )
    return recorded


def _unrecorded(session: Session, keyed: Mapping[str, int]) -> dict[str, int]:
    keys = list(keyed)
    seen: set[str] = set()
    for start in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[start : start + _KEY_CHUNK]
        seen.update(
            key
            for key in session.scalars(
                select(DomainEventRow.key).where(DomainEventRow.key.in_(chunk))
            )
            if key is not None
        )
    return {key: subject for key, subject in keyed.items() if key not in seen}


# --- telling the worker ---------------------------------------------------------------------------

_RECORDED = "switchboard.domain_events"
_listeners: list[Callable[[], None]] = []
_listeners_lock = threading.Lock()


def on_recorded(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` (on the committing thread) after a transaction that recorded events
    commits; returns the function that stops it."""
    with _listeners_lock:
        _listeners.append(callback)

    def stop() -> None:
        with _listeners_lock:
            if callback in _listeners:
                _listeners.remove(callback)

    return stop


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.info.pop(_RECORDED, False):
        with _listeners_lock:
            listeners = list(_listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:
                log.exception("a domain-event listener failed")


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_RECORDED, None)
