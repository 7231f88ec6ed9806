"""Automations: when something happens in the school (a trigger) and the event passes the
conditions, do the actions — send a message template, post a webhook, create a follow-up task.

The worker (`start()`/`stop()`, woken when a transaction records events) takes the domain
events (app/services/domain_events.py) in order and, for each one, in one transaction, makes a
run of every enabled automation of that trigger whose conditions hold and marks the event
dispatched; the run is unique per (automation, event), so a crash or a replay never runs an
automation twice for one event. Every event is also forwarded to the outbound webhooks, so the
school's endpoints and Zapier subscribers hear it whether or not an automation exists.

A run does its actions in order and notes each one done as it goes; an action that fails is
tried again after 5 s, 1 min, 5 min, 30 min and 2 h (the actions done already are not done
again), and then the run fails for a person, who can retry it (`retry`) or set it aside
(`dismiss`). A failure that waiting cannot fix (a template that is gone, a family with no
guardian) fails the run at once. How actions stay once-only across retries and crashes is
said in app/services/automation_actions.py.

Conditions are a small declarative list evaluated on the event's payload: a field path, an
operator among equals, not equals, contains, greater, less and in, and a value. Nothing is
evaluated as code.

Four built-in recipes ship switched off: payment receipt, failed-payment notice (with a pay
link), lesson reminder (24 hours before) and overdue reminder.

Changing an automation needs MANAGE_CONNECTIONS; the office's follow-up work (retrying or
setting aside a run, adding and ticking off tasks) needs SEND_MESSAGES. Each of those is an
entry in the audit trail. The worker's own runs act as the service user and are kept in the run
log, not the trail.

Topics published on the EventHub: "automations" ({"automation"} or {"run", "status"}) and
"tasks" ({"id"}).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.domain.errors import FieldError, NotFound, StaleEdit, SwitchboardError, ValidationFailed
from app.domain.money import Money
from app.services import access, audit, claims
from app.services.automation_actions import (
    SEND_TEMPLATE,
    TOPIC_TASKS,
    Action,
    ActionFailed,
    ActionRunner,
    EventFacts,
    NothingToDo,
    Step,
    action_problems,
    webhook_payload,
)
from app.services.domain_events import (
    INVOICE_OVERDUE,
    LESSON_UPCOMING,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    TRIGGERS,
    Trigger,
    on_recorded,
    scan_due,
)
from app.services.events import EventHub
from app.services.messaging import MessagingService
from app.services.outbound_webhooks import (
    Emission,
    OutboundWebhookError,
    OutboundWebhooks,
    store_emission,
)
from app.services.payments import PaymentService
from app.services.settings import SettingsService
from app.store.automations import AutomationRow, AutomationRunRow, DomainEventRow, TaskRow
from app.store.base import utcnow
from app.store.database import Database
from app.store.messaging import TemplateRow

log = logging.getLogger("switchboard.automations")

TOPIC = "automations"

# The wait after the 1st, 2nd, … failed attempt; after the last the run waits for a person.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# A claimed run is not claimed again for this long (longer than any send of a few messages);
# if the process dies mid-run, it is taken up again after it, where its steps say it stopped.
LEASE = timedelta(minutes=10)
# The worker looks at least this often, for retries come due and events other processes (the
# command line) recorded.
POLL_SECONDS = 30.0
BATCH = 100
MAX_CONDITIONS = 20
MAX_ACTIONS = 10


class RunStatus:
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; the next waits for next_attempt_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # gave up, or cannot succeed as things are: a person retries it
    DISMISSED = "dismissed"  # set aside by a person, or its automation was switched off


CLAIMABLE = (RunStatus.PENDING, RunStatus.RETRYING, RunStatus.RUNNING)

OPERATORS: dict[str, str] = {
    "equals": "is",
    "not_equals": "is not",
    "contains": "contains",
    "greater": "is more than",
    "less": "is less than",
    "in": "is one of",
}
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_MISSING = object()


# --- conditions -----------------------------------------------------------------------------------


def _value_at(payload: Mapping[str, Any], path: str) -> Any:
    current: Any = payload
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _plain(value: Any) -> Any:
    """A value as conditions compare it: numbers (and text that is a number) exactly as
    decimals, text without case or surrounding spaces."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            with contextlib.suppress(InvalidOperation):
                return Decimal(text)
        return text.casefold()
    return value


def _same(actual: Any, expected: Any) -> bool:
    if actual is None or actual is _MISSING:
        return expected is None or expected == ""
    return bool(_plain(actual) == _plain(expected))


def _order(actual: Any, expected: Any) -> int | None:
    left, right = _plain(actual), _plain(expected)
    comparable = (isinstance(left, Decimal) and isinstance(right, Decimal)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    if not comparable:
        return None
    return -1 if left < right else (1 if left > right else 0)


@dataclass(frozen=True)
class Condition:
    """`field` (a path in the event's payload, like payment.amount_minor) `op` `value`."""

    field: str
    op: str
    value: Any

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": self.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(str(data.get("field", "")), str(data.get("op", "")), data.get("value"))

    def holds(self, payload: Mapping[str, Any]) -> bool:
        actual = _value_at(payload, self.field)
        expected = self.value
        if self.op == "equals":
            return _same(actual, expected)
        if self.op == "not_equals":
            return not _same(actual, expected)
        if actual is None or actual is _MISSING:
            return False
        if self.op == "contains":
            if isinstance(actual, list):
                return any(_same(item, expected) for item in actual)
            return str(_plain(expected)) in str(_plain(actual))
        if self.op == "in":
            options = expected if isinstance(expected, list) else [expected]
            if isinstance(actual, list):
                return any(_same(item, option) for item in actual for option in options)
            return any(_same(actual, option) for option in options)
        order = _order(actual, expected)
        if order is None:
            return False
        return order > 0 if self.op == "greater" else order < 0 if self.op == "less" else False

    def describe(self, trigger: str) -> str:
        found = TRIGGERS[trigger].field(self.field) if trigger in TRIGGERS else None
        name = found.label if found else self.field
        return f"{name} {OPERATORS.get(self.op, self.op)} {self.value!r}"


def matches(conditions: Sequence[Condition], payload: Mapping[str, Any]) -> bool:
    """Whether every condition holds for the payload (no conditions: always)."""
    return all(condition.holds(payload) for condition in conditions)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def condition_problems(condition: Condition, trigger: Trigger, number: int) -> list[FieldError]:
    where = f"Condition {number}"
    found = trigger.field(condition.field)
    if found is None:
        known = ", ".join(f.path for f in trigger.fields)
        return [
            FieldError(
                "conditions",
                f"{where}: “{condition.field}” is not part of “{trigger.label}”; choose one "
                f"of {known}.",
            )
        ]
    if condition.op not in OPERATORS:
        return [
            FieldError(
                "conditions",
                f"{where}: compare with is, is not, contains, is more than, is less than or "
                "is one of.",
            )
        ]
    value, kind, op = condition.value, found.kind, condition.op
    problem = ""
    if op == "in":
        if not isinstance(value, list) or not value:
            problem = "list the values it may be one of"
    elif kind in ("number", "money"):
        if op == "contains":
            problem = f"{found.label} is a number; compare it with is, is more or is less"
        elif not _is_number(value) and not (op in ("equals", "not_equals") and value is None):
            problem = f"{found.label} is compared with a number"
    elif kind in ("date", "datetime"):
        if op == "contains":
            problem = f"{found.label} is a date; compare it with is, is after or is before"
        elif not isinstance(value, str) or not _iso(value):
            problem = f"write the date like 2026-12-31 to compare {found.label} with it"
    elif kind == "bool":
        if op not in ("equals", "not_equals") or not isinstance(value, bool):
            problem = f"{found.label} is yes or no; compare it with is or is not"
    elif kind == "list":
        if op not in ("contains", "in"):
            problem = f"{found.label} is a list; compare it with contains or is one of"
    elif op in ("greater", "less"):
        problem = f"{found.label} is text; compare it with is, is not, contains or is one of"
    elif not isinstance(value, str | int | float) or isinstance(value, bool):
        problem = f"compare {found.label} with some text"
    return [FieldError("conditions", f"{where}: {problem}.")] if problem else []


def _iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


# --- what the service hands out -------------------------------------------------------------------


@dataclass(frozen=True)
class AutomationDraft:
    name: str
    trigger: str
    actions: tuple[Action, ...]
    conditions: tuple[Condition, ...] = ()
    description: str = ""
    enabled: bool = False

    def problems(self) -> list[FieldError]:
        """Everything wrong with it that can be told without the database."""
        errors: list[FieldError] = []
        name = self.name.strip()
        if not name:
            errors.append(FieldError("name", "An automation needs a name."))
        elif len(name) > 100:
            errors.append(FieldError("name", "The name is too long (at most 100 characters)."))
        trigger = TRIGGERS.get(self.trigger)
        if trigger is None:
            errors.append(FieldError("trigger", "Choose what starts the automation."))
        if len(self.conditions) > MAX_CONDITIONS:
            errors.append(
                FieldError("conditions", f"An automation has at most {MAX_CONDITIONS} conditions.")
            )
        elif trigger is not None:
            for number, condition in enumerate(self.conditions, start=1):
                errors.extend(condition_problems(condition, trigger, number))
        if not self.actions:
            errors.append(FieldError("actions", "An automation needs at least one action."))
        elif len(self.actions) > MAX_ACTIONS:
            errors.append(
                FieldError("actions", f"An automation has at most {MAX_ACTIONS} actions.")
            )
        else:
            for number, action in enumerate(self.actions, start=1):
                errors.extend(action_problems(action, self.trigger, number))
        return errors


@dataclass(frozen=True)
class Automation:
    id: int
    name: str
    description: str
    trigger: str
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    enabled: bool
    recipe: str | None  # the built-in recipe it is, if it is one
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def builtin(self) -> bool:
        return self.recipe is not None

    @property
    def trigger_label(self) -> str:
        found = TRIGGERS.get(self.trigger)
        return found.label if found else self.trigger

    def draft(self) -> AutomationDraft:
        return AutomationDraft(
            name=self.name,
            trigger=self.trigger,
            actions=self.actions,
            conditions=self.conditions,
            description=self.description,
            enabled=self.enabled,
        )


@dataclass(frozen=True)
class RunStep:
    """One action of a run: done or not, what it did, and what it made (batch_id,
    message_id, task_id)."""

    action: Action
    done: bool
    note: str
    made: Mapping[str, Any]


@dataclass(frozen=True)
class Run:
    id: int
    automation_id: int
    automation_name: str
    event_id: int
    event_type: str
    subject_kind: str
    subject_id: int | None
    subject: str  # what the event was about, in a few words ("Payment PAY-1 (USD 45.00)")
    status: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    error: str
    outcome: str
    steps: tuple[RunStep, ...]

    @property
    def needs_person(self) -> bool:
        return self.status == RunStatus.FAILED


@dataclass(frozen=True)
class AutomationSummary:
    """An automation as its list shows it: the last run, and how many wait (retrying) or
    need a person (failed)."""

    automation: Automation
    last_run: Run | None
    runs: int
    retrying: int
    failed: int


@dataclass(frozen=True)
class Task:
    id: int
    title: str
    notes: str
    due_on: date | None
    related_kind: str
    related_id: int | None
    done: bool
    done_at: datetime | None
    done_by: str
    automation_id: int | None
    run_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class DomainEvent:
    id: int
    type: str
    subject_kind: str
    subject_id: int | None
    subject: str
    payload: Mapping[str, Any]
    occurred_at: datetime
    dispatched: bool
    forwarded: bool


@dataclass(frozen=True)
class Recipe:
    key: str
    name: str
    description: str
    trigger: str
    actions: tuple[Action, ...]
    conditions: tuple[Condition, ...] = ()


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "payment_receipt",
        "Payment receipt",
        "Thanks the family with a receipt when a payment succeeds.",
        PAYMENT_SUCCEEDED,
        (Action(SEND_TEMPLATE, template="Payment receipt"),),
    ),
    Recipe(
        "failed_payment_notice",
        "Failed-payment notice",
        "Tells the family when their card is declined, with a link to pay another way "
        "(a technical failure is the office's to retry, not the family's).",
        PAYMENT_FAILED,
        (Action(SEND_TEMPLATE, template="Payment failed"),),
        (Condition("payment.failure_kind", "in", ["hard_decline", "soft_decline"]),),
    ),
    Recipe(
        "lesson_reminder",
        "Lesson reminder",
        "Reminds the students' guardians of a lesson the day before.",
        LESSON_UPCOMING,
        (Action(SEND_TEMPLATE, template="Lesson reminder"),),
    ),
    Recipe(
        "overdue_reminder",
        "Overdue reminder",
        "Reminds the family when an invoice is past its due date, with a link to pay.",
        INVOICE_OVERDUE,
        (Action(SEND_TEMPLATE, template="Invoice overdue"),),
    ),
)


@dataclass(frozen=True)
class Pass:
    """What one look at the work did."""

    dispatched: int = 0  # events turned into runs
    forwarded: int = 0  # events handed to the outbound webhooks
    ran: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def full(self) -> bool:
        return max(self.dispatched, self.forwarded, self.ran) >= BATCH


def describe_event(event_type: str, payload: Mapping[str, Any]) -> str:
    """An event's subject in a few words, for logs and lists."""

    def part(path: str) -> Any:
        value = _value_at(payload, path)
        return "" if value is _MISSING or value is None else value

    def money(prefix: str) -> str:
        minor, currency = part(f"{prefix}.amount_minor"), part(f"{prefix}.currency")
        try:
            return str(Money(int(minor), str(currency)))
        except (SwitchboardError, TypeError, ValueError):
            return ""

    if event_type.startswith("payment."):
        return f"Payment {part('payment.reference')} ({money('payment')})"
    if event_type.startswith("refund."):
        return f"Refund of {money('refund')} on payment {part('payment.reference')}"
    if event_type.startswith("invoice."):
        return f"Invoice {part('invoice.number')}, due {part('invoice.due_on')}"
    if event_type.startswith("lesson."):
        return f"{part('lesson.title')} ({part('lesson.ref')})"
    if event_type.startswith("student."):
        return f"{part('student.first_name')} {part('student.last_name')}".strip()
    if event_type.startswith("sync."):
        return f"Calendar {part('issue.kind')} for lesson {part('issue.lesson_id')}"
    if event_type.startswith("provider."):
        return f"{part('connection.name')} is down"
    return event_type


# --- the service ----------------------------------------------------------------------------------


class AutomationService:
    """Automations, their runs, the follow-up tasks, and the worker that runs them. `clock`
    is injectable so tests can move through the retry schedule."""

    def __init__(
        self,
        db: Database,
        events: EventHub,
        settings: SettingsService,
        messaging: MessagingService,
        outbound: OutboundWebhooks,
        payments: PaymentService,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._events = events
        self._settings = settings
        self._outbound = outbound
        self._clock = clock
        self._runner = ActionRunner(db, settings, messaging, outbound, payments, events.publish)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] | None = None
        self._in_flight: set[int] = set()
        self._holder = claims.holder()  # how this worker's claims name it to other engines

    @staticmethod
    def triggers() -> list[Trigger]:
        """Every trigger, with the payload fields its conditions may test."""
        return list(TRIGGERS.values())

    # --- automations ----------------------------------------------------------------------------

    async def automations(self) -> list[AutomationSummary]:
        """Every automation, built-in recipes first, each with its last run."""
        return await self._db.read(_summaries)

    async def automation(self, automation_id: int) -> Automation:
        return await self._db.read(lambda session: _automation(_get(session, automation_id)))

    async def save(
        self,
        draft: AutomationDraft,
        *,
        automation_id: int | None = None,
        version: int | None = None,
    ) -> Automation:
        """Create (no id) or change an automation, checked first: every problem is listed as a
        FieldError. `version` (the one read) refuses to overwrite someone else's change."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        errors = draft.problems()
        if errors:
            raise ValidationFailed(errors)

        def write(session: Session) -> Automation:
            problems = _template_problems(session, draft.actions)
            was: dict[str, Any] | None = None
            if automation_id is None:
                row = AutomationRow()
                session.add(row)
            else:
                row = _get(session, automation_id)
                was = _automation_trail(row)
                if version is not None and row.version != version:
                    raise StaleEdit(
                        "Someone else changed this automation while you were editing it. Close "
                        "it and open it again to see their change."
                    )
                if row.recipe is not None and draft.trigger != row.trigger:
                    problems.append(
                        FieldError(
                            "trigger",
                            "A built-in recipe keeps its trigger; make a new automation for "
                            "another one.",
                        )
                    )
                row.version += 1
            if problems:
                raise ValidationFailed(problems)
            row.name = draft.name.strip()
            row.description = draft.description.strip()
            row.trigger = draft.trigger
            row.conditions = [condition.as_dict() for condition in draft.conditions]
            row.actions = [action.as_dict() for action in draft.actions]
            row.enabled = draft.enabled
            try:
                session.flush()
            except IntegrityError:
                raise ValidationFailed(
                    [FieldError("name", f"There is already an automation called {row.name!r}.")]
                ) from None
            now = _automation_trail(row)
            if was is None:
                before, after = None, now
            else:
                old, new = audit.changes(was, now)
                before, after = {"name": was["name"], **old}, {"name": now["name"], **new}
            audit.record(session, who, "automation.saved", "automation", row.id, before, after)
            return _automation(row)

        saved = await self._db.write(write)
        self._events.publish(TOPIC, {"automation": saved.id})
        log.info("automation saved", extra={"automation": saved.id, "trigger": saved.trigger})
        return saved

    async def set_enabled(self, automation_id: int, enabled: bool) -> Automation:
        """Switch an automation on (it acts on events from now on) or off (runs still waiting
        are set aside when their turn comes)."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()

        def write(session: Session) -> Automation:
            row = _get(session, automation_id)
            if row.enabled != enabled:
                row.enabled = enabled
                audit.record(
                    session,
                    who,
                    "automation.enabled" if enabled else "automation.disabled",
                    "automation",
                    automation_id,
                    {"name": row.name, "enabled": not enabled},
                    {"name": row.name, "enabled": enabled},
                )
            return _automation(row)

        changed = await self._db.write(write)
        self._events.publish(TOPIC, {"automation": automation_id})
        log.info("automation %s", "enabled" if enabled else "disabled", extra={"id": automation_id})
        return changed

    async def delete(self, automation_id: int) -> None:
        """Delete a custom automation and its run log (tasks it made stay). A built-in recipe
        is switched off instead."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()

        def write(session: Session) -> None:
            row = _get(session, automation_id)
            if row.recipe is not None:
                raise SwitchboardError(
                    f"“{row.name}” is a built-in recipe; switch it off instead of deleting it."
                )
            audit.record(
                session,
                who,
                "automation.deleted",
                "automation",
                automation_id,
                _automation_trail(row),
                None,
            )
            session.delete(row)

        await self._db.write(write)
        self._events.publish(TOPIC, {"automation": automation_id, "deleted": True})

    async def ensure_recipes(self) -> int:
        """Add the built-in recipes the school does not have yet, switched off; how many."""

        def write(session: Session) -> int:
            have = set(session.scalars(select(AutomationRow.recipe)))
            names = set(session.scalars(select(AutomationRow.name)))
            added = 0
            for recipe in RECIPES:
                if recipe.key in have:
                    continue
                name = recipe.name if recipe.name not in names else f"{recipe.name} (recipe)"
                session.add(
                    AutomationRow(
                        name=name,
                        description=recipe.description,
                        trigger=recipe.trigger,
                        conditions=[condition.as_dict() for condition in recipe.conditions],
                        actions=[action.as_dict() for action in recipe.actions],
                        enabled=False,
                        recipe=recipe.key,
                    )
                )
                added += 1
            return added

        return await self._db.write(write)

    # --- the run log ----------------------------------------------------------------------------

    async def runs(
        self, automation_id: int | None = None, *, status: str | None = None, limit: int = 200
    ) -> list[Run]:
        """Runs, newest first: of one automation, or all; of one status, or any."""
        return await self._db.read(_runs, automation_id, status, limit)

    async def run(self, run_id: int) -> Run:
        def read(session: Session) -> Run:
            found = _runs(session, None, None, 1, run_id)
            if not found:
                raise NotFound(f"There is no automation run {run_id}.")
            return found[0]

        return await self._db.read(read)

    async def retry(self, run_id: int) -> Run:
        """Try a failed (or waiting, or set aside) run again now, from the action it stopped
        at; what it did already is not done again."""
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        now = self._clock()

        def write(session: Session) -> None:
            row = session.get(AutomationRunRow, run_id)
            if row is None:
                raise NotFound(f"There is no automation run {run_id}.")
            if row.status in (RunStatus.SUCCEEDED, RunStatus.RUNNING):
                raise SwitchboardError(
                    "This run is done or running now; there is nothing to retry."
                )
            automation = _get(session, row.automation_id)
            if not automation.enabled:
                raise SwitchboardError(
                    f"“{automation.name}” is switched off; switch it on to retry its runs."
                )
            _run_trail(
                session, who, "automation_run.retried", row, automation.name, RunStatus.RETRYING
            )
            row.status, row.next_attempt_at, row.finished_at = RunStatus.RETRYING, now, None

        await self._db.write(write)
        self._changed(run_id, RunStatus.RETRYING)
        self.wake()
        return await self.run(run_id)

    async def dismiss(self, run_id: int) -> Run:
        """Set a failed or waiting run aside: it is not tried again (retry still can)."""
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        now = self._clock()

        def write(session: Session) -> None:
            row = session.get(AutomationRunRow, run_id)
            if row is None:
                raise NotFound(f"There is no automation run {run_id}.")
            if row.status in (RunStatus.SUCCEEDED, RunStatus.RUNNING):
                raise SwitchboardError("This run is done or running now; it cannot be set aside.")
            name = _get(session, row.automation_id).name
            _run_trail(session, who, "automation_run.dismissed", row, name, RunStatus.DISMISSED)
            row.status, row.next_attempt_at, row.finished_at = RunStatus.DISMISSED, None, now

        await self._db.write(write)
        self._changed(run_id, RunStatus.DISMISSED)
        return await self.run(run_id)

    async def events(self, limit: int = 200, event_type: str | None = None) -> list[DomainEvent]:
        """The latest domain events, newest first (what happened, whether or not anything
        acted on it)."""

        def read(session: Session) -> list[DomainEvent]:
            query = select(DomainEventRow).order_by(DomainEventRow.id.desc()).limit(limit)
            if event_type is not None:
                query = query.where(DomainEventRow.type == event_type)
            return [
                DomainEvent(
                    row.id,
                    row.type,
                    row.subject_kind,
                    row.subject_id,
                    describe_event(row.type, row.payload),
                    dict(row.payload),
                    row.occurred_at,
                    row.dispatched_at is not None,
                    row.forwarded_at is not None,
                )
                for row in session.scalars(query)
            ]

        return await self._db.read(read)

    # --- tasks ----------------------------------------------------------------------------------

    async def tasks(self, *, open_only: bool = True, limit: int = 500) -> list[Task]:
        """Follow-up tasks, the soonest due first (done ones last, when asked for)."""

        def read(session: Session) -> list[Task]:
            query = select(TaskRow).order_by(
                TaskRow.done, TaskRow.due_on.is_(None), TaskRow.due_on, TaskRow.id
            )
            if open_only:
                query = query.where(TaskRow.done.is_(False))
            return [_task(row) for row in session.scalars(query.limit(limit))]

        return await self._db.read(read)

    async def add_task(
        self,
        title: str,
        *,
        due_on: date | None = None,
        notes: str = "",
        related_kind: str = "",
        related_id: int | None = None,
    ) -> Task:
        """A task a person adds by hand."""
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        if not title.strip():
            raise ValidationFailed([FieldError("title", "A task needs a title.")])
        if len(title.strip()) > 200:
            raise ValidationFailed([FieldError("title", "The title is too long (at most 200).")])

        def write(session: Session) -> Task:
            row = TaskRow(
                title=title.strip(),
                notes=notes,
                due_on=due_on,
                related_kind=related_kind,
                related_id=related_id,
            )
            session.add(row)
            session.flush()
            audit.record(session, who, "task.added", "task", row.id, None, _task_trail(row))
            return _task(row)

        task = await self._db.write(write)
        self._events.publish(TOPIC_TASKS, {"id": task.id})
        return task

    async def complete_task(self, task_id: int, *, by: str = "", done: bool = True) -> Task:
        """Mark a task done (or, with done=False, not done after all). `by`: who did it, if
        not the person acting."""
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        now = self._clock()

        def write(session: Session) -> Task:
            row = session.get(TaskRow, task_id)
            if row is None:
                raise NotFound(f"There is no task {task_id}.")
            if row.done != done:
                audit.record(
                    session,
                    who,
                    "task.completed" if done else "task.reopened",
                    "task",
                    task_id,
                    {"title": row.title, "done": row.done},
                    {"title": row.title, "done": done},
                )
            row.done = done
            row.done_at = now if done else None
            row.done_by = (by or who)[:120] if done else ""
            return _task(row)

        task = await self._db.write(write)
        self._events.publish(TOPIC_TASKS, {"id": task_id})
        return task

    # --- the time-based triggers ----------------------------------------------------------------

    async def scan(self, now: datetime | None = None) -> int:
        """Record the invoices that became overdue and the lessons starting within 24 hours,
        each once (the engine's scheduler calls this every few minutes); how many."""
        moment = now or self._clock()
        zone = ZoneInfo(str(self._settings.get("school.timezone") or "UTC"))
        recorded = await self._db.write(scan_due, moment, zone)
        if recorded:
            log.info("time-based events recorded", extra={"count": recorded})
            self.wake()
        return recorded

    # --- the worker -----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the worker on the running loop until `stop()`."""
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._stop_listening = on_recorded(self._wake_from_any_thread)
        self._task = self._loop.create_task(self._run(), name="automations")

    async def stop(self) -> None:
        """Stop the worker. A run cut short is taken up again where its steps say it stopped
        (after its lease, or at the next start)."""
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # What it had claimed and not finished may be taken up (by the next start, or
            # another worker of this computer); a start after this claims under a new name.
            claims.release(self._holder)
            self._holder = claims.holder()

    def wake(self) -> None:
        """Look for work now (call on the worker's loop)."""
        self._wake.set()

    def _wake_from_any_thread(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        try:
            # Runs cut short when a process of this computer stopped (this engine's last run,
            # say) are taken up now; another engine's, running or not, wait for their lease.
            await self._db.write(_recover, self._clock())
        except Exception:
            log.exception("automations: could not take up interrupted runs")
        while True:
            self._wake.clear()  # before looking: a wake during the look is not lost
            try:
                done = await self.process()
                wait = 0.0 if done.full else await self._db.read(_seconds_until_due, self._clock())
            except Exception:
                log.exception("automations: processing failed; trying again shortly")
                wait = POLL_SECONDS
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait, POLL_SECONDS))

    async def process(self, now: datetime | None = None) -> Pass:
        """One look at the work: dispatch new events into runs, forward them to the outbound
        webhooks, and do the runs that are due."""
        moment = now or self._clock()
        dispatched = await self._db.write(_dispatch, moment, BATCH)
        forwarded = await self._forward(moment)
        outcomes = await self._run_due(moment)
        if dispatched or outcomes:
            self._events.publish(TOPIC, {"dispatched": dispatched, "ran": len(outcomes)})
        return Pass(
            dispatched=dispatched,
            forwarded=forwarded,
            ran=len(outcomes),
            succeeded=outcomes.count(RunStatus.SUCCEEDED),
            retrying=outcomes.count(RunStatus.RETRYING),
            failed=outcomes.count(RunStatus.FAILED),
        )

    async def _forward(self, now: datetime) -> int:
        """Store each event not forwarded yet as an outbound webhook, marked forwarded in the
        same transaction: once, whichever engine takes it."""
        outbound = self._outbound

        def write(session: Session) -> tuple[int, list[tuple[Emission, int]]]:
            rows = session.scalars(
                select(DomainEventRow)
                .where(DomainEventRow.forwarded_at.is_(None))
                .order_by(DomainEventRow.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            stored: list[tuple[Emission, int]] = []
            for row in rows:
                event = EventFacts.of(row)
                try:
                    emission = outbound.emission(event.type, webhook_payload(event))
                except OutboundWebhookError as exc:
                    # It can never be sent (too large, say): marked, so it is not tried for ever.
                    log.error("domain event not forwarded: %s", exc, extra={"event": row.id})
                    row.forwarded_at, row.webhook_message_id = now, ""
                    continue
                stored.append((emission, store_emission(session, emission)))
                row.forwarded_at, row.webhook_message_id = now, emission.message_id
            return len(rows), stored

        forwarded, stored = await self._db.write(write)
        for emission, endpoints in stored:
            outbound.emitted(emission, endpoints)
        return forwarded

    async def _run_due(self, now: datetime) -> list[str]:
        claimed = await self._db.write(_claim, now, BATCH, frozenset(self._in_flight), self._holder)
        outcomes: list[str] = []
        for run in claimed:
            self._in_flight.add(run.run_id)
            try:
                outcome = await self._execute(run, now)
            finally:
                self._in_flight.discard(run.run_id)
            self._changed(run.run_id, outcome)
            outcomes.append(outcome)
        return outcomes

    async def _execute(self, run: _Claimed, now: datetime) -> str:
        zone = ZoneInfo(str(self._settings.get("school.timezone") or "UTC"))
        today = now.astimezone(zone).date()
        notes: list[str] = []
        for index, raw in enumerate(run.steps):
            if raw.get("done"):
                notes.append(str(raw.get("note", "")))
                continue
            made = {k: v for k, v in raw.items() if k not in ("action", "done", "note")}
            step = Step(
                run.run_id,
                index,
                run.automation_id,
                run.automation_name,
                run.event,
                Action.from_dict(raw.get("action") or {}),
                made,
            )
            try:
                note = await self._runner.run(step, today)
            except NothingToDo as exc:
                note = str(exc)
            except ActionFailed as exc:
                return await self._failed(run, index, str(exc), exc.permanent, now)
            except Exception as exc:
                log.exception("automation action failed", extra={"run": run.run_id})
                return await self._failed(run, index, _plainly(exc), False, now)
            if not await self._db.write(_step_done, run.run_id, index, note, self._holder):
                log.warning("automation run taken up elsewhere", extra={"run": run.run_id})
                return RunStatus.RUNNING
            notes.append(note)
        finished = max(now, self._clock())
        outcome = " ".join(n for n in notes if n)
        if not await self._db.write(_succeeded, run.run_id, finished, outcome, self._holder):
            return RunStatus.RUNNING
        log.info("automation ran", extra={"run": run.run_id, "automation": run.automation_id})
        return RunStatus.SUCCEEDED

    async def _failed(
        self, run: _Claimed, index: int, error: str, permanent: bool, now: datetime
    ) -> str:
        text = f"Action {index + 1}: {error}" if len(run.steps) > 1 else error
        status = await self._db.write(_fail, run.run_id, text, permanent, now, self._holder)
        log.warning(
            "automation run %s",
            status,
            extra={"run": run.run_id, "attempts": run.attempts, "error": text[:300]},
        )
        return status

    def _changed(self, run_id: int, status: str) -> None:
        self._events.publish(TOPIC, {"run": run_id, "status": status})


def _plainly(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SwitchboardError) else f"{type(exc).__name__}: {exc}"


# --- in the database ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    run_id: int
    attempts: int
    automation_id: int
    automation_name: str
    event: EventFacts
    steps: tuple[Mapping[str, Any], ...]


def _get(session: Session, automation_id: int) -> AutomationRow:
    row = session.get(AutomationRow, automation_id)
    if row is None:
        raise NotFound("That automation no longer exists; someone may have deleted it.")
    return row


def _automation(row: AutomationRow) -> Automation:
    return Automation(
        id=row.id,
        name=row.name,
        description=row.description,
        trigger=row.trigger,
        conditions=tuple(Condition.from_dict(c) for c in row.conditions or ()),
        actions=tuple(Action.from_dict(a) for a in row.actions or ()),
        enabled=row.enabled,
        recipe=row.recipe,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def _task(row: TaskRow) -> Task:
    return Task(
        id=row.id,
        title=row.title,
        notes=row.notes,
        due_on=row.due_on,
        related_kind=row.related_kind,
        related_id=row.related_id,
        done=row.done,
        done_at=row.done_at,
        done_by=row.done_by,
        automation_id=row.automation_id,
        run_id=row.run_id,
        created_at=row.created_at,
    )


def _automation_trail(row: AutomationRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "description": row.description,
        "trigger": row.trigger,
        "conditions": list(row.conditions or ()),
        "actions": list(row.actions or ()),
        "enabled": row.enabled,
    }


def _run_trail(
    session: Session, who: str, action: str, row: AutomationRunRow, name: str, status: str
) -> None:
    audit.record(
        session,
        who,
        action,
        "automation_run",
        row.id,
        {"automation": name, "status": row.status, "error": row.error},
        {"automation": name, "status": status},
    )


def _task_trail(row: TaskRow) -> dict[str, Any]:
    return {
        "title": row.title,
        "due_on": row.due_on,
        "related": f"{row.related_kind} {row.related_id}" if row.related_kind else None,
    }


def _template_problems(session: Session, actions: Sequence[Action]) -> list[FieldError]:
    names = set(session.scalars(select(TemplateRow.name)))
    return [
        FieldError(
            "actions",
            f"Action {number}: there is no message template called “{action.template}”.",
        )
        for number, action in enumerate(actions, start=1)
        if action.kind == SEND_TEMPLATE and action.template.strip() and action.template not in names
    ]


def _runs(
    session: Session,
    automation_id: int | None,
    status: str | None,
    limit: int,
    run_id: int | None = None,
) -> list[Run]:
    query = (
        select(AutomationRunRow, AutomationRow.name, DomainEventRow)
        .join(AutomationRow, AutomationRow.id == AutomationRunRow.automation_id)
        .join(DomainEventRow, DomainEventRow.id == AutomationRunRow.event_id)
        .order_by(AutomationRunRow.id.desc())
        .limit(limit)
    )
    if automation_id is not None:
        query = query.where(AutomationRunRow.automation_id == automation_id)
    if status is not None:
        query = query.where(AutomationRunRow.status == status)
    if run_id is not None:
        query = query.where(AutomationRunRow.id == run_id)
    return [_run(row, name, event) for row, name, event in session.execute(query)]


def _run(row: AutomationRunRow, name: str, event: DomainEventRow) -> Run:
    return Run(
        id=row.id,
        automation_id=row.automation_id,
        automation_name=name,
        event_id=event.id,
        event_type=event.type,
        subject_kind=event.subject_kind,
        subject_id=event.subject_id,
        subject=describe_event(event.type, event.payload),
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        next_attempt_at=row.next_attempt_at,
        error=row.error,
        outcome=row.outcome,
        steps=tuple(
            RunStep(
                action=Action.from_dict(step.get("action") or {}),
                done=bool(step.get("done")),
                note=str(step.get("note", "")),
                made={k: v for k, v in step.items() if k not in ("action", "done", "note")},
            )
            for step in row.steps or ()
        ),
    )


def _summaries(session: Session) -> list[AutomationSummary]:
    rows = session.scalars(
        select(AutomationRow).order_by(AutomationRow.recipe.is_(None), AutomationRow.name)
    ).all()
    counts: dict[tuple[int, str], int] = {
        (automation_id, status): int(count)
        for automation_id, status, count in session.execute(
            select(AutomationRunRow.automation_id, AutomationRunRow.status, func.count()).group_by(
                AutomationRunRow.automation_id, AutomationRunRow.status
            )
        )
    }
    last_ids = [
        run_id
        for run_id in session.scalars(
            select(func.max(AutomationRunRow.id)).group_by(AutomationRunRow.automation_id)
        )
        if run_id is not None
    ]
    last: dict[int, Run] = {}
    if last_ids:
        query = (
            select(AutomationRunRow, AutomationRow.name, DomainEventRow)
            .join(AutomationRow, AutomationRow.id == AutomationRunRow.automation_id)
            .join(DomainEventRow, DomainEventRow.id == AutomationRunRow.event_id)
            .where(AutomationRunRow.id.in_(last_ids))
        )
        last = {
            row.automation_id: _run(row, name, event) for row, name, event in session.execute(query)
        }
    return [
        AutomationSummary(
            automation=_automation(row),
            last_run=last.get(row.id),
            runs=sum(n for (a, _s), n in counts.items() if a == row.id),
            retrying=counts.get((row.id, RunStatus.RETRYING), 0),
            failed=counts.get((row.id, RunStatus.FAILED), 0),
        )
        for row in rows
    ]


def _dispatch(session: Session, now: datetime, limit: int) -> int:
    """Make the runs the next undispatched events call for, and mark them dispatched, in one
    transaction: an event is dispatched exactly once."""
    events = list(
        session.scalars(
            select(DomainEventRow)
            .where(DomainEventRow.dispatched_at.is_(None))
            .order_by(DomainEventRow.id)
            .limit(limit)
            # Another engine dispatching at the same moment takes the next events.
            .with_for_update(skip_locked=True)
        )
    )
    if not events:
        return 0
    automations = list(
        session.scalars(
            select(AutomationRow)
            .where(AutomationRow.enabled.is_(True))
            .where(AutomationRow.trigger.in_({event.type for event in events}))
            .order_by(AutomationRow.id)
        )
    )
    existing = set(
        session.execute(
            select(AutomationRunRow.automation_id, AutomationRunRow.event_id).where(
                AutomationRunRow.event_id.in_([event.id for event in events])
            )
        ).all()
    )
    for event in events:
        event.dispatched_at = now
        if _made_by_automation(event):
            continue
        for automation in automations:
            if automation.trigger != event.type or (automation.id, event.id) in existing:
                continue
            try:
                conditions = [Condition.from_dict(c) for c in automation.conditions or ()]
                wanted = matches(conditions, event.payload)
            except Exception:
                log.exception(
                    "automation conditions could not be read", extra={"id": automation.id}
                )
                wanted = False
            if not wanted:
                continue
            session.add(
                AutomationRunRow(
                    automation_id=automation.id,
                    event_id=event.id,
                    status=RunStatus.PENDING,
                    next_attempt_at=now,
                    created_at=now,
                    # The actions as they are now: a later edit does not change a run under way.
                    steps=[
                        {"action": dict(action), "done": False} for action in automation.actions
                    ],
                )
            )
    return len(events)


def _made_by_automation(event: DomainEventRow) -> bool:
    """A pay link an automation asked for that failed (the gateway could not make it) starts
    no automation: a notice whose link could not be made would otherwise ask for another,
    and so on. It is still forwarded to the webhooks. (Its success is the family paying, and
    does start them: a receipt.)"""
    payment = event.payload.get("payment")
    return (
        event.type == PAYMENT_FAILED
        and isinstance(payment, dict)
        and payment.get("by_automation") is True
    )


def _claim(
    session: Session, now: datetime, limit: int, busy: frozenset[int], holder: str
) -> list[_Claimed]:
    """Take the runs that are due (a running one whose lease ran out, too: its process died),
    leased to `holder` for `LEASE`; runs of automations switched off are set aside. Locked as
    they are read, so another engine claiming at the same moment takes other runs."""
    query = (
        select(AutomationRunRow, AutomationRow, DomainEventRow)
        .join(AutomationRow, AutomationRow.id == AutomationRunRow.automation_id)
        .join(DomainEventRow, DomainEventRow.id == AutomationRunRow.event_id)
        .where(AutomationRunRow.status.in_(CLAIMABLE))
        .where(AutomationRunRow.next_attempt_at <= now)
        .order_by(AutomationRunRow.next_attempt_at, AutomationRunRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=AutomationRunRow)
    )
    if busy:
        query = query.where(AutomationRunRow.id.notin_(busy))
    claimed: list[_Claimed] = []
    for run, automation, event in session.execute(query).all():
        if not automation.enabled:
            run.status, run.next_attempt_at, run.finished_at = RunStatus.DISMISSED, None, now
            run.error = "The automation was switched off before this run was done."
            continue
        run.status, run.claimed_by = RunStatus.RUNNING, holder
        run.attempts += 1
        run.started_at = run.started_at or now
        run.next_attempt_at = now + LEASE
        claimed.append(
            _Claimed(
                run.id,
                run.attempts,
                automation.id,
                automation.name,
                EventFacts.of(event),
                tuple(dict(step) for step in run.steps or ()),
            )
        )
    return claimed


def _recover(session: Session, now: datetime) -> int:
    """Runs left running by a process that is gone are due again now; how many. A run another
    engine is running (or may be: on another computer) keeps its claim until its lease."""
    runs = session.scalars(
        select(AutomationRunRow)
        .where(AutomationRunRow.status == RunStatus.RUNNING)
        .with_for_update(skip_locked=True)
    ).all()
    abandoned = [run for run in runs if claims.gone(run.claimed_by)]
    for run in abandoned:
        run.status, run.next_attempt_at, run.claimed_by = RunStatus.RETRYING, now, None
    return len(abandoned)


def _held(session: Session, run_id: int, holder: str) -> AutomationRunRow | None:
    """The run, if `holder` still holds it (its lease may have run out and another engine
    taken it up meanwhile: then this one must not write over that engine's work)."""
    row = session.get(AutomationRunRow, run_id, with_for_update=True)
    if row is None or row.status != RunStatus.RUNNING or row.claimed_by != holder:
        return None
    return row


def _step_done(session: Session, run_id: int, index: int, note: str, holder: str) -> bool:
    row = _held(session, run_id, holder)
    if row is None:
        return False  # deleted with its automation, or taken up by another engine
    steps = [dict(step) for step in row.steps]
    steps[index] = {**steps[index], "done": True, "note": note}
    row.steps = steps
    return True


def _succeeded(session: Session, run_id: int, now: datetime, outcome: str, holder: str) -> bool:
    row = _held(session, run_id, holder)
    if row is None:
        return False
    row.status, row.finished_at, row.next_attempt_at = RunStatus.SUCCEEDED, now, None
    row.error, row.outcome, row.claimed_by = "", outcome[:4000], None
    return True


def _fail(
    session: Session, run_id: int, error: str, permanent: bool, now: datetime, holder: str
) -> str:
    row = _held(session, run_id, holder)
    if row is None:
        return RunStatus.RUNNING if session.get(AutomationRunRow, run_id) else RunStatus.DISMISSED
    row.error, row.claimed_by = error[:4000], None
    if permanent or row.attempts >= MAX_ATTEMPTS:
        row.status, row.next_attempt_at, row.finished_at = RunStatus.FAILED, None, now
    else:
        delay = RETRY_DELAYS[min(row.attempts, len(RETRY_DELAYS)) - 1]
        row.status, row.next_attempt_at = RunStatus.RETRYING, now + delay
    return row.status


def _seconds_until_due(session: Session, now: datetime) -> float:
    waiting = session.scalar(
        select(DomainEventRow.id)
        .where((DomainEventRow.dispatched_at.is_(None)) | (DomainEventRow.forwarded_at.is_(None)))
        .limit(1)
    )
    if waiting is not None:
        return 0.0
    due = session.scalar(
        select(func.min(AutomationRunRow.next_attempt_at)).where(
            AutomationRunRow.status.in_(CLAIMABLE)
        )
    )
    if due is None:
        return POLL_SECONDS
    if due.tzinfo is None:  # a bare aggregate comes back without the column's type
        due = due.replace(tzinfo=now.tzinfo)
    return max((due - now).total_seconds(), 0.0)
