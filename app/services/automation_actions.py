"""What an automation does for an event: send a message template, post a webhook (to the
school's endpoints and Zapier subscribers), or make a follow-up task.

Every action may run more than once (a retry after a failed attempt, a restart after a crash)
and must not do its work twice:

- `send_template` notes the send's batch id on the run *before* sending; a retry resumes that
  batch, and `MessagingService.send` looks up messages that may have gone before sending any
  again. The batch also carries the run and action in `created_by`, so a crash between
  preparing it and noting it finds the same batch rather than preparing another.
- `create_task` makes the task and marks its step done in one transaction.
- `post_webhook` emits, then notes the message id; a crash in between can emit it twice (at
  least once, as webhooks are), and the payload's `event_id` lets a consumer tell.

The message's data is read when the action runs, not when the event happened: the receipt says
what the payment is now, the reminder where the lesson is now.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.errors import FieldError, NotFound, SwitchboardError
from app.domain.messages import Channel, MessageStatus
from app.domain.money import Money
from app.providers.gateway import Unsupported
from app.providers.http import ProviderError
from app.services.audiences import Recipient, recipients_by_ids
from app.services.domain_events import (
    AUTOMATION_KEY_PREFIX,
    INVOICE_OVERDUE,
    PROVIDER_DOWN,
    owed,
)
from app.services.message_templates import load_template
from app.services.messaging import BatchState, MessagingService
from app.services.outbound_webhooks import OutboundWebhookError, OutboundWebhooks
from app.services.payments import FAILED, LinkOrder, PaymentService
from app.services.settings import SettingsService
from app.store.automations import AutomationRunRow, DomainEventRow, TaskRow
from app.store.calendar_sync import SyncIssueRow
from app.store.database import Database
from app.store.messaging import MessageBatchRow
from app.store.payments import PaymentAttemptRow, PaymentRow, RefundRow
from app.store.school import Guardian, Invoice, Lesson, Student, StudentGuardian, Teacher

TOPIC_TASKS = "tasks"
SEND_TEMPLATE = "send_template"
POST_WEBHOOK = "post_webhook"
CREATE_TASK = "create_task"
ACTION_KINDS: dict[str, str] = {
    SEND_TEMPLATE: "Send a message template",
    POST_WEBHOOK: "Post a webhook (to the school's endpoints and Zapier)",
    CREATE_TASK: "Create a follow-up task",
}
GUARDIANS = "guardians"
TEACHER = "teacher"
RECIPIENTS: dict[str, str] = {
    GUARDIANS: "The family: who pays, or the guardians of the students concerned",
    TEACHER: "The lesson's teacher",
}
# Triggers whose subject has a lesson, so a teacher to write to.
WITH_TEACHER = frozenset(
    {"lesson.created", "lesson.changed", "lesson.cancelled", "lesson.upcoming", "sync.conflict"}
)
MAX_TASK_DAYS = 365
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")
GONE = (MessageStatus.QUEUED, MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNKNOWN)


class ActionFailed(SwitchboardError):
    """An action that did not do its work. `permanent`: trying again will not help until a
    person changes something (the run fails at once, for them to retry)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class NothingToDo(SwitchboardError):
    """The action has no work any more (the invoice was paid meanwhile): done, saying why."""


@dataclass(frozen=True)
class Action:
    """One action. `send_template`: `template` (its name), `channel` ("" for each person's
    preferred one), `to` (guardians or teacher). `post_webhook`: `event_type`. `create_task`:
    `title` (may name payload fields, like "Call about {invoice.number}"), `due_in_days`,
    `notes`."""

    kind: str
    template: str = ""
    channel: str = ""
    to: str = GUARDIANS
    event_type: str = ""
    title: str = ""
    due_in_days: int = 0
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        if self.kind == SEND_TEMPLATE:
            return {
                "kind": self.kind,
                "template": self.template,
                "channel": self.channel,
                "to": self.to,
            }
        if self.kind == POST_WEBHOOK:
            return {"kind": self.kind, "event_type": self.event_type}
        if self.kind == CREATE_TASK:
            return {
                "kind": self.kind,
                "title": self.title,
                "due_in_days": self.due_in_days,
                "notes": self.notes,
            }
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        days = data.get("due_in_days", 0)
        return cls(
            kind=str(data.get("kind", "")),
            template=str(data.get("template", "")),
            channel=str(data.get("channel", "")),
            to=str(data.get("to", GUARDIANS)),
            event_type=str(data.get("event_type", "")),
            title=str(data.get("title", "")),
            due_in_days=days if isinstance(days, int) and not isinstance(days, bool) else -1,
            notes=str(data.get("notes", "")),
        )

    def describe(self) -> str:
        if self.kind == SEND_TEMPLATE:
            how = f"by {Channel(self.channel).label}" if self.channel else "on their channel"
            whom = "the teacher" if self.to == TEACHER else "the family"
            return f"Send “{self.template}” to {whom} {how}"
        if self.kind == POST_WEBHOOK:
            return f"Post a {self.event_type} webhook"
        if self.kind == CREATE_TASK:
            return f"Create the task “{self.title}”"
        return self.kind


def action_problems(action: Action, trigger: str, number: int) -> list[FieldError]:
    """What is wrong with an action for this trigger, each said so a person can fix it (the
    template's existence is checked when the automation is saved)."""
    where = f"Action {number}"
    if action.kind not in ACTION_KINDS:
        return [
            FieldError("actions", f"{where} must send a message, post a webhook or create a task.")
        ]
    errors: list[FieldError] = []
    if action.kind == SEND_TEMPLATE:
        if not action.template.strip():
            errors.append(FieldError("actions", f"{where}: choose the message template to send."))
        if action.channel and action.channel not in {channel.value for channel in Channel}:
            errors.append(FieldError("actions", f"{where}: “{action.channel}” is not a channel."))
        if action.to not in RECIPIENTS:
            errors.append(FieldError("actions", f"{where}: send to the family or to the teacher."))
        elif trigger == PROVIDER_DOWN:
            errors.append(
                FieldError(
                    "actions",
                    f"{where}: a provider going down concerns no family or teacher; create a "
                    "task or post a webhook instead.",
                )
            )
        elif action.to == TEACHER and trigger not in WITH_TEACHER:
            errors.append(
                FieldError("actions", f"{where}: only lessons have a teacher to send to.")
            )
    elif action.kind == POST_WEBHOOK:
        if not _EVENT_TYPE.fullmatch(action.event_type) or len(action.event_type) > 128:
            errors.append(
                FieldError(
                    "actions",
                    f"{where}: name the webhook's event type like school.receipt_sent "
                    "(letters, digits, _ and -, in parts joined by dots).",
                )
            )
    else:
        if not action.title.strip():
            errors.append(FieldError("actions", f"{where}: the task needs a title."))
        elif len(action.title) > 200:
            errors.append(FieldError("actions", f"{where}: the task's title is too long."))
        if not 0 <= action.due_in_days <= MAX_TASK_DAYS:
            errors.append(
                FieldError(
                    "actions",
                    f"{where}: the task is due 0 to {MAX_TASK_DAYS} days after the event.",
                )
            )
    return errors


# --- what an action acts on ----------------------------------------------------------------------


@dataclass(frozen=True)
class EventFacts:
    """The event a run acts on, as read from its row."""

    id: int
    type: str
    subject_kind: str
    subject_id: int | None
    payload: Mapping[str, Any]
    occurred_at: datetime

    @classmethod
    def of(cls, row: DomainEventRow) -> EventFacts:
        return cls(
            row.id, row.type, row.subject_kind, row.subject_id, dict(row.payload), row.occurred_at
        )


@dataclass(frozen=True)
class Step:
    """Where one run stands: the action to take, and what it made on an earlier attempt."""

    run_id: int
    index: int
    automation_id: int
    automation_name: str
    event: EventFacts
    action: Action
    made: Mapping[str, Any]


@dataclass
class _Bill:
    """What a pay link is for: the invoice (or the payment, without one) and what is owed."""

    invoice_id: int | None
    payment_id: int | None
    number: str
    owed: Money
    guardian_id: int | None
    email: str


@dataclass
class _Gathered:
    data: dict[str, Any] = field(default_factory=dict)
    guardian_ids: list[int] = field(default_factory=list)
    students: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    teacher_id: int | None = None
    what: str = "This event"
    bill: _Bill | None = None


def _person(first: str, last: str) -> dict[str, str]:
    return {"first_name": first, "last_name": last, "name": f"{first} {last}".strip()}


def _student(student: Student) -> dict[str, Any]:
    return {**_person(student.first_name, student.last_name), "grade": student.grade}


class _Formats:
    def __init__(self, locale: str, zone: ZoneInfo) -> None:
        self.locale = locale or "en_US"
        self.zone = zone

    def money(self, minor: int, currency: str) -> str:
        return Money(minor, currency).format(self.locale)

    def day(self, value: date) -> str:
        return str(format_date(value, format="long", locale=self.locale))

    def when(self, value: datetime) -> str:
        """ "Tuesday 8 December at 15:00" in the school's time zone (day and month names in
        its language; "at" only in English, a comma elsewhere)."""
        pattern = "EEEE d MMMM 'at' HH:mm" if self.locale.startswith("en") else "EEEE d MMMM, HH:mm"
        return str(format_datetime(value, pattern, tzinfo=self.zone, locale=self.locale))


def _invoice_guardians(session: Session, invoice: Invoice) -> list[int]:
    if invoice.guardian_id is not None:
        return [invoice.guardian_id]
    if invoice.student_id is None:
        return []
    links = list(
        session.scalars(
            select(StudentGuardian).where(StudentGuardian.student_id == invoice.student_id)
        )
    )
    primary = [link.guardian_id for link in links if link.is_primary]
    return primary or [link.guardian_id for link in links]


def _gather_invoice(session: Session, found: _Gathered, invoice: Invoice, fmt: _Formats) -> None:
    found.data["invoice"] = {
        "number": invoice.number,
        "amount": fmt.money(invoice.total_minor, invoice.currency),
        "due_on": fmt.day(invoice.due_on),
        "pay_link": "",
    }
    if not found.guardian_ids:
        found.guardian_ids = _invoice_guardians(session, invoice)
    student = session.get(Student, invoice.student_id) if invoice.student_id else None
    if student is not None:
        found.students = {guardian: [_student(student)] for guardian in found.guardian_ids}
    guardian = session.get(Guardian, found.guardian_ids[0]) if found.guardian_ids else None
    found.bill = _Bill(
        invoice.id,
        None,
        invoice.number,
        Money(owed(session, invoice), invoice.currency),
        found.guardian_ids[0] if found.guardian_ids else None,
        guardian.email if guardian is not None else "",
    )


def _gather_payment(session: Session, found: _Gathered, payment: PaymentRow, fmt: _Formats) -> None:
    amount = fmt.money(payment.amount_minor, payment.currency)
    found.what = f"Payment {payment.reference}"
    found.data["payment"] = {
        "amount": amount,
        "reference": payment.reference,
        "method": payment.method,
        "description": payment.description,
        "failure": payment.failure_message or "",
    }
    if payment.guardian_id is not None:
        found.guardian_ids = [payment.guardian_id]
    invoice = session.get(Invoice, payment.invoice_id) if payment.invoice_id else None
    if invoice is not None:
        _gather_invoice(session, found, invoice, fmt)
        return
    guardian = session.get(Guardian, payment.guardian_id) if payment.guardian_id else None
    found.data["invoice"] = {"number": "", "amount": amount, "due_on": "", "pay_link": ""}
    found.bill = _Bill(
        None,
        payment.id,
        payment.reference,
        Money(payment.amount_minor, payment.currency),
        payment.guardian_id,
        guardian.email if guardian is not None else "",
    )


def _gather_lesson(session: Session, found: _Gathered, lesson: Lesson, fmt: _Formats) -> None:
    teacher = session.get(Teacher, lesson.teacher_id)
    found.what = f"The lesson {lesson.title}"
    found.teacher_id = lesson.teacher_id
    found.data["lesson"] = {
        "title": lesson.title,
        "starts": fmt.when(lesson.starts_at),
        "room": lesson.room.name if lesson.room is not None else "",
        "teacher": f"{teacher.first_name} {teacher.last_name}".strip() if teacher else "",
        "meet_link": "",
        "status": lesson.status,
    }
    student_ids = [link.student_id for link in lesson.student_links]
    students = {
        student.id: student
        for student in session.scalars(select(Student).where(Student.id.in_(student_ids)))
    }
    links = session.scalars(
        select(StudentGuardian)
        .where(StudentGuardian.student_id.in_(student_ids))
        .order_by(StudentGuardian.guardian_id, StudentGuardian.student_id)
    )
    for link in links:
        found.students.setdefault(link.guardian_id, []).append(_student(students[link.student_id]))
    found.guardian_ids = list(found.students)


def gather(session: Session, event: EventFacts, fmt: _Formats) -> _Gathered:
    """The template data and the people an event concerns, read now."""
    found = _Gathered()
    payload = event.payload

    def gone(what: str) -> ActionFailed:
        return ActionFailed(
            f"{what} no longer exists, so there is nothing to act on.", permanent=True
        )

    if event.subject_kind in ("payment", "refund"):
        refund = None
        if event.subject_kind == "refund":
            refund = session.get(RefundRow, event.subject_id)
            if refund is None:
                raise gone(f"Refund {event.subject_id}")
        payment_id = refund.payment_id if refund is not None else event.subject_id
        payment = session.get(PaymentRow, payment_id)
        if payment is None:
            raise gone(f"Payment {payment_id}")
        _gather_payment(session, found, payment, fmt)
        if refund is not None:
            found.what = f"Refund {refund.reference}"
            found.data["refund"] = {
                "amount": fmt.money(refund.amount_minor, refund.currency),
                "reference": refund.reference,
                "reason": refund.reason,
            }
    elif event.subject_kind == "invoice":
        invoice = session.get(Invoice, event.subject_id)
        if invoice is None:
            raise gone(f"Invoice {event.subject_id}")
        found.what = f"Invoice {invoice.number}"
        _gather_invoice(session, found, invoice, fmt)
    elif event.subject_kind == "lesson":
        lesson = session.get(Lesson, event.subject_id)
        if lesson is None:
            raise gone("The lesson")
        _gather_lesson(session, found, lesson, fmt)
    elif event.subject_kind == "student":
        student = session.get(Student, event.subject_id)
        if student is None:
            raise gone("The student")
        found.what = f"{student.first_name} {student.last_name}".strip()
        found.data["student"] = _student(student)
        for link in student.guardian_links:
            found.students[link.guardian_id] = [_student(student)]
        found.guardian_ids = list(found.students)
    elif event.subject_kind == "sync_issue":
        issue = session.get(SyncIssueRow, event.subject_id)
        lesson = session.get(Lesson, issue.local_id) if issue is not None else None
        if issue is None or lesson is None:
            raise gone("The lesson of this calendar issue")
        _gather_lesson(session, found, lesson, fmt)
        found.data["issue"] = {"kind": issue.kind, "detail": issue.detail}
    else:
        connection = payload.get("connection")
        found.what = (
            f"The connection {connection.get('name', '')}"
            if isinstance(connection, dict)
            else "The connection"
        )
        found.data["connection"] = dict(connection) if isinstance(connection, dict) else {}
    return found


def people(session: Session, found: _Gathered, to: str) -> list[Recipient]:
    """Whom a message goes to, each with the students this event concerns as their data."""
    try:
        if to == TEACHER:
            if found.teacher_id is None:
                raise ActionFailed(f"{found.what} has no teacher to send to.", permanent=True)
            return recipients_by_ids(session, "teacher", [found.teacher_id])
        if not found.guardian_ids:
            raise ActionFailed(
                f"{found.what} has no guardian to send to; add one to the family's record, "
                "then retry.",
                permanent=True,
            )
        chosen = recipients_by_ids(session, "guardian", found.guardian_ids)
    except NotFound as exc:
        raise ActionFailed(str(exc), permanent=True) from exc
    result: list[Recipient] = []
    for person in chosen:
        students = found.students.get(person.id)
        if students:
            person = replace(
                person, data={**person.data, "students": students, "student": students[0]}
            )
        result.append(person)
    return result


def _open_link(session: Session, invoice_id: int) -> str:
    """A pay link already made for this invoice and not paid or given up yet."""
    decisions = session.scalars(
        select(PaymentAttemptRow.decision)
        .join(PaymentRow, PaymentRow.id == PaymentAttemptRow.payment_id)
        .where(PaymentRow.invoice_id == invoice_id, PaymentRow.status == "processing")
        .order_by(PaymentAttemptRow.id.desc())
    )
    return next((str(d["link"]) for d in decisions if isinstance(d, dict) and d.get("link")), "")


def fill_placeholders(text: str, payload: Mapping[str, Any]) -> str:
    """`{invoice.number}` replaced by that field of the payload (left as written if absent);
    nothing else is evaluated."""

    def value(match: re.Match[str]) -> str:
        current: Any = payload
        for part in match.group(1).split("."):
            if not isinstance(current, Mapping) or part not in current:
                return match.group(0)
            current = current[part]
        return "" if current is None else str(current)

    return _PLACEHOLDER.sub(value, text)


def _step_made(session: Session, run_id: int, index: int, made: Mapping[str, Any]) -> None:
    """Note what an action made on its step (a new list: JSON columns see only assignments)."""
    run = session.get(AutomationRunRow, run_id)
    if run is None:
        raise NotFound(f"There is no automation run {run_id}.")
    steps = [dict(step) for step in run.steps]
    steps[index] = {**steps[index], **made}
    run.steps = steps


def _make_task(
    session: Session, step: Step, title: str, due_on: date, notes: str
) -> tuple[int, bool]:
    run = session.get(AutomationRunRow, step.run_id)
    if run is None:
        raise NotFound(f"There is no automation run {step.run_id}.")
    already = run.steps[step.index].get("task_id")
    if isinstance(already, int):
        return already, False
    task = TaskRow(
        title=title[:200],
        notes=notes,
        due_on=due_on,
        related_kind=step.event.subject_kind,
        related_id=step.event.subject_id,
        automation_id=step.automation_id,
        run_id=step.run_id,
    )
    session.add(task)
    session.flush()
    _step_made(session, step.run_id, step.index, {"task_id": task.id})
    return task.id, True


def _link_key(session: Session, base: str) -> str:
    """The idempotency key for this event's pay link: the same on every try (a link made once
    is the one sent), but a new one after a link the gateway failed to make."""
    failed = session.scalar(
        select(func.count())
        .select_from(PaymentRow)
        .where(PaymentRow.idempotency_key.startswith(base + "-"), PaymentRow.status == FAILED)
    )
    return f"{base}-{int(failed or 0) + 1}"


def _batch_of(session: Session, tag: str) -> int | None:
    return session.scalar(
        select(MessageBatchRow.id)
        .where(MessageBatchRow.created_by == tag)
        .order_by(MessageBatchRow.id.desc())
        .limit(1)
    )


def webhook_payload(event: EventFacts) -> dict[str, Any]:
    """What a domain event's webhook carries: the event's id (the same on every copy), its
    subject and its payload."""
    return {
        "event_id": event.id,
        "subject": {"kind": event.subject_kind, "id": event.subject_id},
        "occurred_at": event.occurred_at.isoformat(),
        **event.payload,
    }


class ActionRunner:
    """Takes one action of one run, noting on the run what it made (a batch, a webhook
    message, a task) as soon as it exists. `published(topic, payload)` tells the event hub."""

    def __init__(
        self,
        db: Database,
        settings: SettingsService,
        messaging: MessagingService,
        outbound: OutboundWebhooks,
        payments: PaymentService,
        published: Callable[[str, Mapping[str, Any]], None],
    ) -> None:
        self._db = db
        self._settings = settings
        self._messaging = messaging
        self._outbound = outbound
        self._payments = payments
        self._published = published

    def _formats(self) -> _Formats:
        zone = ZoneInfo(str(self._settings.get("school.timezone") or "UTC"))
        return _Formats(str(self._settings.get("school.locale") or ""), zone)

    async def run(self, step: Step, today: date) -> str:
        """Do the action (or finish it); what it did, in a sentence."""
        if step.action.kind == SEND_TEMPLATE:
            return await self._send(step)
        if step.action.kind == POST_WEBHOOK:
            return await self._post(step)
        if step.action.kind == CREATE_TASK:
            return await self._task(step, today)
        raise ActionFailed(
            f"“{step.action.kind}” is not an action Switchboard knows.", permanent=True
        )

    # --- post_webhook --------------------------------------------------------------------------

    async def _post(self, step: Step) -> str:
        if step.made.get("message_id"):
            return f"Posted {step.action.event_type} ({step.made['message_id']})."
        payload = {
            "automation": {"id": step.automation_id, "name": step.automation_name},
            "event": {"type": step.event.type, **webhook_payload(step.event)},
        }
        try:
            message_id = await self._outbound.emit(step.action.event_type, payload)
        except OutboundWebhookError as exc:
            raise ActionFailed(str(exc), permanent=True) from exc
        await self._db.write(_step_made, step.run_id, step.index, {"message_id": message_id})
        return f"Posted {step.action.event_type} ({message_id})."

    # --- create_task ---------------------------------------------------------------------------

    async def _task(self, step: Step, today: date) -> str:
        action = step.action
        title = fill_placeholders(action.title, step.event.payload).strip() or "Follow up"
        due_on = today + timedelta(days=max(action.due_in_days, 0))
        notes = fill_placeholders(action.notes, step.event.payload)
        task_id, new = await self._db.write(_make_task, step, title, due_on, notes)
        if new:
            self._published(TOPIC_TASKS, {"id": task_id})
        return f"Created the task “{title}” (due {due_on.isoformat()})."

    # --- send_template -------------------------------------------------------------------------

    async def _send(self, step: Step) -> str:
        action = step.action
        tag = f"automation run {step.run_id} action {step.index + 1}"
        batch_id = step.made.get("batch_id")
        if not isinstance(batch_id, int):
            batch_id = await self._db.read(_batch_of, tag)
        if batch_id is None:
            batch_id = await self._prepare(step, tag)
        await self._db.write(_step_made, step.run_id, step.index, {"batch_id": batch_id})
        summary = await self._messaging.batch(batch_id)
        if summary.status == BatchState.CANCELLED:
            raise ActionFailed(
                f"The send of “{action.template}” was cancelled in Messages.", permanent=True
            )
        if summary.status != BatchState.DONE:
            try:
                summary = await self._messaging.send(batch_id)
            except SwitchboardError as exc:
                raise ActionFailed(str(exc)) from exc
        if summary.status == BatchState.PAUSED:
            raise ActionFailed(summary.message or "The send paused; it is resumed on the next try.")
        if summary.status == BatchState.CANCELLED:
            raise ActionFailed(
                f"The send of “{action.template}” was cancelled in Messages.", permanent=True
            )
        gone = summary.count(*GONE)
        left = summary.total - gone
        if gone == 0:
            reasons = await self._reasons(batch_id)
            raise ActionFailed(f"Nothing was sent: {reasons}", permanent=True)
        sent = f"Sent “{action.template}” to {gone} {'person' if gone == 1 else 'people'}"
        if left:
            return f"{sent}; {left} not: {await self._reasons(batch_id)}"
        return f"{sent}."

    async def _prepare(self, step: Step, tag: str) -> int:
        action = step.action
        fmt = self._formats()
        try:
            template = await self._db.read(load_template, action.template)
        except NotFound as exc:
            raise ActionFailed(
                f"{exc} Choose another template for the automation “{step.automation_name}”.",
                permanent=True,
            ) from exc

        def read(session: Session) -> tuple[_Gathered, list[Recipient]]:
            found = gather(session, step.event, fmt)
            return found, people(session, found, action.to)

        found, chosen = await self._db.read(read)
        needs_link = any(
            "pay_link" in "".join((v.subject, v.text, v.html, *v.parameters))
            for v in template.variants
        )
        bill = found.bill
        if bill is not None and (needs_link or step.event.type == INVOICE_OVERDUE):
            if bill.owed.minor <= 0:
                raise NothingToDo(f"Nothing was sent: invoice {bill.number} is paid.")
            if needs_link:
                found.data["invoice"]["pay_link"] = await self._pay_link(step, bill)
        channel = Channel(action.channel) if action.channel else None
        try:
            summary = await self._messaging.prepare(
                template.id,
                recipients=chosen,
                channel=channel,
                title=f"{step.automation_name}: {found.what}"[:200],
                created_by=tag,
                data=found.data,
            )
        except SwitchboardError as exc:
            raise ActionFailed(str(exc), permanent=True) from exc
        return summary.id

    async def _pay_link(self, step: Step, bill: _Bill) -> str:
        if bill.invoice_id is not None:
            existing = await self._db.read(_open_link, bill.invoice_id)
            if existing:
                return existing
        gateways = await self._payments.link_gateways()
        if not gateways:
            raise ActionFailed(
                "No connected payment gateway makes pay links, so the message's pay link cannot "
                "be made; connect one that does (PayPal or Paynow), then retry.",
                permanent=True,
            )
        subject = f"invoice-{bill.invoice_id}" if bill.invoice_id else f"payment-{bill.payment_id}"
        key = await self._db.read(_link_key, f"{AUTOMATION_KEY_PREFIX}{step.event.id}-{subject}")
        order = LinkOrder(
            idempotency_key=key,
            amount=bill.owed,
            connection_id=gateways[0][0],
            description=f"Invoice {bill.number}" if bill.invoice_id else f"Payment {bill.number}",
            guardian_id=bill.guardian_id,
            invoice_id=bill.invoice_id,
            payer_email=bill.email,
        )
        try:
            payment = await self._payments.create_link(order)
        except Unsupported as exc:
            raise ActionFailed(str(exc), permanent=True) from exc
        except ProviderError as exc:
            raise ActionFailed(f"The pay link could not be made: {exc}") from exc
        if payment.status == FAILED or not payment.link:
            why = payment.failure.message if payment.failure else "the gateway made none"
            raise ActionFailed(f"The pay link could not be made: {why}")
        return payment.link

    async def _reasons(self, batch_id: int) -> str:
        views = await self._messaging.messages(batch_id)
        failed = [v for v in views if v.status not in GONE]
        said = [f"{v.recipient or v.address}: {v.error or v.status.value}" for v in failed[:3]]
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        return "; ".join(said) + more
