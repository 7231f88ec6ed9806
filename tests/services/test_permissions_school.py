"""Who may change the school's side of Switchboard, checked in the services themselves (so the
command line and the engine obey it as the window does), and what each change leaves in the
audit trail.

`GUARDED` is the specification: one line per state-changing call, the permission it needs,
what must exist first (made as the service user), and the audit entry it writes. Every call is
tried as each of the four roles: a role that `WHO_MAY` lists gets past the check (the call
succeeds, or fails for some reason other than NotAllowed); any other is refused with its
sentence and the database is left exactly as it was, audit trail included.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import NotAllowed, Permission, Principal, Role
from app.domain.errors import SwitchboardError
from app.domain.messages import Channel
from app.domain.school import (
    GuardianDraft,
    InvoiceDraft,
    InvoiceLine,
    InvoiceStatus,
    LessonDraft,
    StudentDraft,
    TeacherDraft,
)
from app.domain.templating import Variant
from app.services import Services, access
from app.services.audiences import Recipient
from app.services.audit import AuditService, TrailEntry
from app.services.automation_actions import CREATE_TASK, Action
from app.services.automations import AutomationDraft, RunStatus
from app.services.calendar_sync import _upsert_issue
from app.services.message_templates import TemplateDraft
from app.store.automations import AutomationRunRow, DomainEventRow
from app.store.base import Base
from app.store.calendar_sync import SyncIssueRow
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.google_oauth import FakeGoogleOAuth
from tests.support.google import GoogleServers

ADMINISTRATOR, FINANCE, STAFF, VIEWER = Role

# Who may do what, written out here rather than read from the roles' grants: the spec.
WHO_MAY = {
    Permission.EDIT_SCHOOL: {ADMINISTRATOR, STAFF},
    Permission.TAKE_PAYMENTS: {ADMINISTRATOR, FINANCE},
    Permission.SYNC_CALENDARS: {ADMINISTRATOR, STAFF},
    Permission.SEND_MESSAGES: {ADMINISTRATOR, STAFF},
    Permission.MANAGE_CONNECTIONS: {ADMINISTRATOR},
    Permission.MANAGE_SETTINGS: {ADMINISTRATOR},
}
ASK = {
    Permission.EDIT_SCHOOL: "Administrator or Staff",
    Permission.TAKE_PAYMENTS: "Administrator or Finance",
    Permission.SYNC_CALENDARS: "Administrator or Staff",
    Permission.SEND_MESSAGES: "Administrator or Staff",
    Permission.MANAGE_CONNECTIONS: "Administrator",
    Permission.MANAGE_SETTINGS: "Administrator",
}

EDIT_SCHOOL, TAKE_PAYMENTS = Permission.EDIT_SCHOOL, Permission.TAKE_PAYMENTS
SYNC_CALENDARS, SEND_MESSAGES = Permission.SYNC_CALENDARS, Permission.SEND_MESSAGES
MANAGE_CONNECTIONS, MANAGE_SETTINGS = Permission.MANAGE_CONNECTIONS, Permission.MANAGE_SETTINGS

TODAY = date.today()
STARTS = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
STUDENT = StudentDraft("Tariro", "Moyo", grade="5", email="tariro@example.org")
GUARDIAN = GuardianDraft("Rudo", "Moyo", email="rudo@example.org")
TEACHER = TeacherDraft("Farai", "Chari", email="farai@school.example")
STUDENTS_CSV = b"first_name,last_name,grade\r\nChipo,Banda,4\r\nTendai,Phiri,5\r\n"
TEMPLATE = TemplateDraft("Closure", variants=(Variant("en", Channel.EMAIL, "Closed", "Today."),))
TASK_DRAFT = (Action(CREATE_TASK, title="Call the family"),)
PARENT = Recipient("guardian", 0, "Rudo Moyo", "rudo@example.org", "", "email", "en")


# --- what must exist before a call (made as the service user); each gives the id the call needs


async def nothing(services: Services) -> int:
    return 0


async def a_student(services: Services) -> int:
    return (await services.school.save_student(STUDENT)).id


async def a_guardian(services: Services) -> int:
    return (await services.school.save_guardian(GUARDIAN)).id


async def a_teacher(services: Services) -> int:
    return (await services.school.save_teacher(TEACHER)).id


async def a_lesson(services: Services) -> int:
    teacher = await a_teacher(services)
    return (await services.school.save_lesson(lesson_of(teacher))).id


async def a_draft_invoice(services: Services) -> int:
    student = await a_student(services)
    return (await services.school.save_invoice(invoice_for(student, InvoiceStatus.DRAFT))).id


async def a_template(services: Services) -> int:
    return (await services.templates.save(TEMPLATE)).id


async def an_automation(services: Services) -> int:
    draft = AutomationDraft("Follow up", "payment.failed", TASK_DRAFT, enabled=True)
    return (await services.automations.save(draft)).id


async def a_failed_run(services: Services) -> int:
    automation = await an_automation(services)

    def insert(session: Session) -> int:
        event = DomainEventRow(type="payment.failed", subject_kind="payment", payload={})
        session.add(event)
        session.flush()
        run = AutomationRunRow(
            automation_id=automation, event_id=event.id, status=RunStatus.FAILED, error="Down."
        )
        session.add(run)
        session.flush()
        return run.id

    return await services.db.write(insert)


async def a_task(services: Services) -> int:
    return (await services.automations.add_task("Ring the bank")).id


async def a_prepared_send(services: Services) -> int:
    await a_template(services)
    return (await services.messaging.prepare("Closure", recipients=[PARENT])).id


async def an_opt_out(services: Services) -> int:
    await services.messaging.opt_out(Channel.EMAIL, "rudo@example.org")
    return 0


async def a_connection(services: Services) -> int:
    """Any connection (not a calendar): enough to reach past the permission check."""
    record = await services.connections.add(
        "sandbox-payments", "Sandbox Pay", {"latency_ms": "1"}, {"api_key": "sk_sandbox_1"}
    )
    return record.id


async def a_sync_issue(services: Services) -> int:
    """A lesson moved in a calendar, waiting for the office to accept or reject it."""
    lesson = await a_lesson(services)
    connection = await a_connection(services)

    def raise_issue(session: Session) -> int:
        _upsert_issue(session, connection, "move", lesson, "evt-1", "", {}, {}, "Moved.")
        return session.scalars(select(SyncIssueRow.id)).one()

    return await services.db.write(raise_issue)


def lesson_of(teacher: int, days: int = 0) -> LessonDraft:
    starts = STARTS + timedelta(days=days)
    return LessonDraft("Piano", teacher, starts, starts + timedelta(hours=1))


def invoice_for(student: int, status: InvoiceStatus = InvoiceStatus.OPEN) -> InvoiceDraft:
    line = InvoiceLine("Piano, May", 1, 4_500)
    due = TODAY + timedelta(days=14)
    return InvoiceDraft("USD", TODAY, due, (line,), student_id=student, status=status)


# --- the specification ---------------------------------------------------------------------------

Call = Callable[[Services, int], Any]


@dataclass(frozen=True)
class Guarded:
    call: str  # service.method, as the test's name
    permission: Permission
    setup: Callable[[Services], Awaitable[int]]
    run: Call
    trail: str | None  # the entry an allowed call writes; None: it may fail past the check


GUARDED = [
    # school records
    Guarded("school.save_student", EDIT_SCHOOL, nothing, lambda s, _: s.school.save_student(STUDENT), "student.saved"),  # noqa: E501
    Guarded("school.delete_student", EDIT_SCHOOL, a_student, lambda s, i: s.school.delete_student(i), "student.deleted"),  # noqa: E501
    Guarded("school.save_guardian", EDIT_SCHOOL, nothing, lambda s, _: s.school.save_guardian(GUARDIAN), "guardian.saved"),  # noqa: E501
    Guarded("school.delete_guardian", EDIT_SCHOOL, a_guardian, lambda s, i: s.school.delete_guardian(i), "guardian.deleted"),  # noqa: E501
    Guarded("school.save_teacher", EDIT_SCHOOL, nothing, lambda s, _: s.school.save_teacher(TEACHER), "teacher.saved"),  # noqa: E501
    Guarded("school.delete_teacher", EDIT_SCHOOL, a_teacher, lambda s, i: s.school.delete_teacher(i), "teacher.deleted"),  # noqa: E501
    Guarded("school.save_lesson", EDIT_SCHOOL, a_teacher, lambda s, i: s.school.save_lesson(lesson_of(i)), "lesson.saved"),  # noqa: E501
    Guarded("school.delete_lesson", EDIT_SCHOOL, a_lesson, lambda s, i: s.school.delete_lesson(i), "lesson.deleted"),  # noqa: E501
    Guarded("school.save_series", EDIT_SCHOOL, a_teacher, lambda s, i: s.school.save_series(lesson_of(i), 4), "series.saved"),  # noqa: E501
    Guarded("school.add_room", EDIT_SCHOOL, nothing, lambda s, _: s.school.add_room("Studio 2", 6), "room.added"),  # noqa: E501
    Guarded("school.save_invoice", TAKE_PAYMENTS, a_student, lambda s, i: s.school.save_invoice(invoice_for(i)), "invoice.saved"),  # noqa: E501
    Guarded("school.delete_invoice", TAKE_PAYMENTS, a_draft_invoice, lambda s, i: s.school.delete_invoice(i), "invoice.deleted"),  # noqa: E501
    Guarded("csv.import_", EDIT_SCHOOL, nothing, lambda s, _: s.csv.import_("students", STUDENTS_CSV, file_name="new.csv"), "records.imported"),  # noqa: E501
    # calendars
    Guarded("calendar_sync.sign_in", SYNC_CALENDARS, a_connection, lambda s, i: s.calendar_sync.sign_in(i), None),  # noqa: E501
    Guarded("calendar_sync.sign_out", SYNC_CALENDARS, a_connection, lambda s, i: s.calendar_sync.sign_out(i), None),  # noqa: E501
    Guarded("calendar_sync.keep_channel", SYNC_CALENDARS, a_connection, lambda s, i: s.calendar_sync.keep_channel(i), None),  # noqa: E501
    Guarded("calendar_sync.sync", SYNC_CALENDARS, a_connection, lambda s, i: s.calendar_sync.sync(i), None),  # noqa: E501
    Guarded("calendar_sync.sync_all", SYNC_CALENDARS, nothing, lambda s, _: s.calendar_sync.sync_all(), None),  # noqa: E501
    Guarded("calendar_sync.accept", SYNC_CALENDARS, a_sync_issue, lambda s, i: s.calendar_sync.accept(i), "calendar_change.accepted"),  # noqa: E501
    Guarded("calendar_sync.reject", SYNC_CALENDARS, a_sync_issue, lambda s, i: s.calendar_sync.reject(i), "calendar_change.rejected"),  # noqa: E501
    # messages
    Guarded("messaging.prepare", SEND_MESSAGES, nothing, lambda s, _: s.messaging.prepare("Payment failed", recipients=[PARENT]), None),  # noqa: E501
    Guarded("messaging.send", SEND_MESSAGES, a_prepared_send, lambda s, i: s.messaging.send(i), "send.confirmed"),  # noqa: E501
    Guarded("messaging.cancel", SEND_MESSAGES, a_prepared_send, lambda s, i: s.messaging.cancel(i), None),  # noqa: E501
    Guarded("messaging.cancel_prepared", SEND_MESSAGES, a_prepared_send, lambda s, i: s.messaging.cancel_prepared(i), "send.cancelled"),  # noqa: E501
    Guarded("messaging.opt_out", SEND_MESSAGES, nothing, lambda s, _: s.messaging.opt_out(Channel.EMAIL, "rudo@example.org"), "opt_out.added"),  # noqa: E501
    Guarded("messaging.opt_in", SEND_MESSAGES, an_opt_out, lambda s, _: s.messaging.opt_in(Channel.EMAIL, "rudo@example.org"), "opt_out.removed"),  # noqa: E501
    Guarded("templates.save", SEND_MESSAGES, nothing, lambda s, _: s.templates.save(TEMPLATE), "template.saved"),  # noqa: E501
    Guarded("templates.remove", SEND_MESSAGES, a_template, lambda s, i: s.templates.remove(i), "template.removed"),  # noqa: E501
    # automations and the office's follow-up work
    Guarded("automations.save", MANAGE_CONNECTIONS, nothing, lambda s, _: s.automations.save(AutomationDraft("Follow up", "payment.failed", TASK_DRAFT)), "automation.saved"),  # noqa: E501
    Guarded("automations.set_enabled", MANAGE_CONNECTIONS, an_automation, lambda s, i: s.automations.set_enabled(i, False), "automation.disabled"),  # noqa: E501
    Guarded("automations.delete", MANAGE_CONNECTIONS, an_automation, lambda s, i: s.automations.delete(i), "automation.deleted"),  # noqa: E501
    Guarded("automations.retry", SEND_MESSAGES, a_failed_run, lambda s, i: s.automations.retry(i), "automation_run.retried"),  # noqa: E501
    Guarded("automations.dismiss", SEND_MESSAGES, a_failed_run, lambda s, i: s.automations.dismiss(i), "automation_run.dismissed"),  # noqa: E501
    Guarded("automations.add_task", SEND_MESSAGES, nothing, lambda s, _: s.automations.add_task("Ring the bank"), "task.added"),  # noqa: E501
    Guarded("automations.complete_task", SEND_MESSAGES, a_task, lambda s, i: s.automations.complete_task(i), "task.completed"),  # noqa: E501
    # settings
    Guarded("settings.set", MANAGE_SETTINGS, nothing, lambda s, _: s.settings.set("school.name", "Msasa Park Music School"), "setting.changed"),  # noqa: E501
]  # fmt: skip

# Open to every role, and still in the trail: a person's own view, and an export.
OPEN = [
    Guarded("settings.set appearance", MANAGE_SETTINGS, nothing, lambda s, _: s.settings.set("appearance.theme", "dark"), "setting.changed"),  # noqa: E501
    Guarded("settings.set diagnostics", MANAGE_SETTINGS, nothing, lambda s, _: s.settings.set("diagnostics.log_level", "DEBUG"), "setting.changed"),  # noqa: E501
    Guarded("csv.export", EDIT_SCHOOL, a_student, lambda s, _: s.csv.export("students"), "records.exported"),  # noqa: E501
]  # fmt: skip


# --- helpers -------------------------------------------------------------------------------------


def someone(role: Role) -> Principal:
    return Principal("someone", role)


async def attempt(services: Services, case: Guarded, made: int) -> None:
    result = case.run(services, made)
    if inspect.isawaitable(result):
        await result


async def snapshot(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table."""

    def read(session: Session) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table.name: sorted((tuple(row) for row in session.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }

    return await services.db.read(read)


async def trail(services: Services, **where: Any) -> list[TrailEntry]:
    return await AuditService(services.db).entries(**where)


def roles_for(cases: list[Guarded]) -> list[tuple[Guarded, Role]]:
    return [(case, role) for case in cases for role in Role]


def named(value: object) -> str:
    return value.call if isinstance(value, Guarded) else str(value)


# --- each call, each role ------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "role"), roles_for(GUARDED), ids=named)
async def test_each_guarded_call_is_allowed_or_refused_by_role(
    services: Services, case: Guarded, role: Role
) -> None:
    made = await case.setup(services)
    before = await snapshot(services)
    refused: NotAllowed | None = None

    with access.acting_as(someone(role)):
        try:
            await attempt(services, case, made)
        except NotAllowed as exc:
            refused = exc
        except SwitchboardError:
            if case.trail is not None:
                raise  # this call should have gone through for a role that may

    if role in WHO_MAY[case.permission]:
        assert refused is None, f"{role.label} should be allowed to call {case.call}"
        if case.trail is not None:
            [entry] = await trail(services, action=case.trail, actor="someone")
            assert entry.machine
    else:
        assert refused is not None, f"{role.label} should be refused {case.call}"
        assert str(refused) == (
            f"someone ({role.label}) may not {case.permission.value}; "
            f"ask someone with the {ASK[case.permission]} role."
        )
        assert await snapshot(services) == before


@pytest.mark.parametrize(("case", "role"), roles_for(OPEN), ids=named)
async def test_a_person_s_own_view_and_an_export_are_open_to_every_role_and_recorded(
    services: Services, case: Guarded, role: Role
) -> None:
    made = await case.setup(services)
    with access.acting_as(someone(role)):
        await attempt(services, case, made)
    [entry] = await trail(services, action=case.trail, actor="someone")
    assert entry.after


# --- end to end ----------------------------------------------------------------------------------


async def test_a_staff_member_saving_a_student_is_named_in_the_trail_with_what_changed(
    services: Services,
) -> None:
    ms_dube = Principal("Ms Dube", STAFF)
    with access.acting_as(ms_dube):
        added = await services.school.save_student(STUDENT)
        await services.school.save_student(
            StudentDraft("Tariro", "Moyo-Dube", grade="6", email="new@example.org"),
            student_id=added.id,
            version=added.version,
        )

    changed, created = await trail(services, record_kind="student", record_id=added.id)
    assert (created.action, created.actor) == ("student.saved", "Ms Dube")
    assert created.before is None
    assert created.after["name"] == "Tariro Moyo"
    assert created.after["grade"] == "5"
    assert created.after["personal"] == ["email"]  # that it was given, not what it is
    assert "tariro@example.org" not in str(created.after)
    assert (changed.action, changed.actor) == ("student.saved", "Ms Dube")
    assert changed.before == {"ref": added.ref, "name": "Tariro Moyo", "grade": "5"}
    assert changed.after == {
        "ref": added.ref,
        "name": "Tariro Moyo-Dube",
        "grade": "6",
        "personal_changed": ["email"],
    }
    assert (await AuditService(services.db).verify()).ok


async def test_a_viewer_refused_leaves_no_entry_and_no_change(services: Services) -> None:
    with access.acting_as(Principal("Mr Viewer", VIEWER)), pytest.raises(NotAllowed):
        await services.school.save_student(STUDENT)

    assert await services.school.students() == []
    assert await trail(services, actor="Mr Viewer") == []
    assert await trail(services) == []


async def test_the_service_user_acts_when_nobody_signed_in_and_is_named(
    services: Services,
) -> None:
    teacher = await a_teacher(services)  # the command line and the engine: no acting_as
    lessons = await services.school.save_series(lesson_of(teacher), 3)

    series, saved = await trail(services)
    assert (saved.action, saved.actor) == ("teacher.saved", access.SERVICE_NAME)
    assert (series.action, series.actor) == ("series.saved", access.SERVICE_NAME)
    assert series.after["lessons"] == [lesson.id for lesson in lessons]
    assert series.after["weeks"] == 3


async def test_an_import_is_one_entry_with_its_counts_and_the_file_s_name(
    services: Services,
) -> None:
    with access.acting_as(Principal("Ms Dube", STAFF)):
        await services.csv.import_("students", STUDENTS_CSV, file_name="C:\\Office\\new.csv")

    [entry] = await trail(services)
    assert (entry.action, entry.record_kind, entry.record_id) == (
        "records.imported",
        "records",
        "students",
    )
    assert entry.after == {"file": "new.csv", "added": 2, "updated": 0, "new_rooms": []}


async def test_a_send_confirmed_and_cancelled_names_who_without_what_the_messages_say(
    services: Services,
) -> None:
    await a_template(services)
    staff = Principal("Ms Dube", STAFF)
    with access.acting_as(staff):
        first = await services.messaging.prepare("Closure", recipients=[PARENT])
        await services.messaging.send(first.id)  # no e-mail connection: it waits, paused
        second = await services.messaging.prepare("Closure", recipients=[PARENT])
        await services.messaging.cancel_prepared(second.id)

    cancelled, confirmed = await trail(services, actor="Ms Dube")
    assert confirmed.action == "send.confirmed"
    assert confirmed.record_id == str(first.id)
    assert confirmed.after["template"] == "Closure"
    assert confirmed.after["messages"] == 1
    assert cancelled.action == "send.cancelled"
    assert cancelled.record_id == str(second.id)
    assert "Today." not in str([confirmed.after, cancelled.after])  # the message itself


async def test_a_setting_whose_name_looks_secret_is_changed_without_its_value_in_the_trail(
    services: Services,
) -> None:
    await services.settings.set("receiver.tls_key", "/etc/switchboard/receiver-key.pem")
    await services.settings.set("school.name", "Msasa Park Music School")

    named_school, secret_looking = await trail(services, action="setting.changed")
    assert named_school.after == {"school.name": "Msasa Park Music School"}
    assert secret_looking.record_id == "receiver.tls_key"
    assert "receiver-key" not in str([secret_looking.before, secret_looking.after])


async def test_staff_sign_a_teacher_s_google_calendar_in_and_out_though_they_cannot_edit_it(
    services: Services, google_servers: GoogleServers
) -> None:
    oauth = FakeGoogleOAuth()
    google = FakeGoogleCalendar(oauth, owner="farai@school.example")
    google_servers.oauth.target, google_servers.calendar.target = oauth.app, google.app
    record = await services.connections.add(
        "google-calendar",
        "Mr Chari's calendar",
        {
            "client_id": oauth.client_id,
            "teacher": "farai@school.example",
            "api_url": google_servers.calendar_url,
            "auth_url": google_servers.oauth_url + "/o/oauth2/v2/auth",
            "token_url": google_servers.oauth_url + "/token",
            "revoke_url": google_servers.oauth_url + "/revoke",
        },
        {"client_secret": oauth.client_secret},
    )
    visits: list[httpx.Response] = []

    async def browser(url: str) -> None:  # the teacher consents in the system browser
        async def visit() -> None:
            async with httpx.AsyncClient(follow_redirects=True, timeout=10) as http:
                visits.append(await http.get(url))

        opened.append(asyncio.get_running_loop().create_task(visit()))

    opened: list[asyncio.Task[None]] = []

    services.calendar_sync.open_browser = browser
    staff = Principal("Ms Dube", STAFF)
    with access.acting_as(staff):
        with pytest.raises(NotAllowed):  # Staff may not change the connection itself
            await services.connections.update(record.id, "Renamed", dict(record.config), {})
        await services.calendar_sync.sign_in(record.id)
        signed_in = await services.connections.connection(record.id)
        await services.calendar_sync.sign_out(record.id)

    assert "refresh_token" in signed_in.secret_fields
    assert "refresh_token" not in (await services.connections.connection(record.id)).secret_fields
    actions = [entry.action for entry in await trail(services, actor="Ms Dube")]
    assert actions[0] == "calendar.signed_out"
    assert "calendar.signed_in" in actions
    assert visits
