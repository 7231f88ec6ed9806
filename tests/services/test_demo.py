"""The demo school: what `switchboard demo seed` puts into an empty database (a believable
music school in Harare, six weeks of lessons, two months of invoices, all of it data the app
itself accepts), and that it never mixes itself into a real school's records."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from app.config import DATABASE_FILE, Config, resolve_config
from app.domain.errors import SwitchboardError
from app.domain.school import (
    Channel,
    GuardianDraft,
    GuardianRecord,
    InvoiceRecord,
    InvoiceStatus,
    LessonRecord,
    LessonStatus,
    RoomRecord,
    StudentDraft,
    StudentRecord,
    TeacherDraft,
    TeacherRecord,
)
from app.services import Services
from app.services.demo import DemoSummary, seed_demo
from app.services.events import EngineEvent
from app.services.school import (
    TOPIC_GUARDIANS,
    TOPIC_INVOICES,
    TOPIC_LESSONS,
    TOPIC_ROOMS,
    TOPIC_STUDENTS,
    TOPIC_TEACHERS,
    lesson_clashes,
)
from app.store.database import Database
from app.store.school import Lesson, LessonStudent

TODAY = date(2026, 11, 18)  # a Wednesday
ZONE = ZoneInfo("Africa/Harare")
NOW = datetime.combine(TODAY, time(12), ZONE)  # what `today=` means for the lessons' statuses
EXAMPLE_EMAIL = re.compile(r"^[a-z0-9.]+@example\.(org|com|net)$")
ZIMBABWE_MOBILE = re.compile(r"^\+263 7[1378] \d{3} \d{4}$")


@dataclass(frozen=True)
class SeededSchool:
    """Everything the services hand out after one seed, read once for the read-only tests."""

    summary: DemoSummary
    settings: dict[str, Any]
    students: list[StudentRecord]
    guardians: list[GuardianRecord]
    teachers: list[TeacherRecord]
    rooms: list[RoomRecord]
    lessons: list[LessonRecord]
    invoices: list[InvoiceRecord]
    topics: list[str]
    db_url: str

    @contextmanager
    def session(self) -> Iterator[Session]:
        db = Database(self.db_url)
        try:
            with db.reading() as session:
                yield session
        finally:
            db.close()

    @property
    def individual_lessons(self) -> list[LessonRecord]:
        return [lesson for lesson in self.lessons if len(lesson.students) == 1]

    @property
    def group_lessons(self) -> list[LessonRecord]:
        return [lesson for lesson in self.lessons if len(lesson.students) > 1]


async def _all_lessons(services: Services) -> list[LessonRecord]:
    start = datetime(2000, 1, 1, tzinfo=ZONE)
    return await services.school.lessons(start, start.replace(year=2100))


async def _seed_and_read(config: Config, *, seed: int = 2026) -> SeededSchool:
    services = await Services.open(config)
    topics: list[str] = []

    def hear(event: EngineEvent) -> None:
        topics.append(event.topic)

    services.events.subscribe(hear)
    try:
        summary = await seed_demo(services, today=TODAY, seed=seed)
        services.events.flush_all()
        return SeededSchool(
            summary=summary,
            settings=services.settings.values(),
            students=await services.school.students(),
            guardians=await services.school.guardians(),
            teachers=await services.school.teachers(),
            rooms=await services.school.rooms(),
            lessons=await _all_lessons(services),
            invoices=await services.school.invoices(),
            topics=topics,
            db_url=config.db_url,
        )
    finally:
        await services.close()


def _fresh_config(folder: Path, template: Path) -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / DATABASE_FILE)
    return resolve_config(str(folder), environ={})


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> SeededSchool:
    """One demo school for every test that only reads it: seeding takes about a second."""
    config = _fresh_config(tmp_path_factory.mktemp("demo"), migrated_template)
    return asyncio.run(_seed_and_read(config))


def _local(moment: datetime) -> datetime:
    return moment.astimezone(ZONE)


def _age(born: date) -> int:
    return TODAY.year - born.year - ((TODAY.month, TODAY.day) < (born.month, born.day))


# --- the school ----------------------------------------------------------------------------------


def test_the_demo_is_a_music_school_in_harare(school: SeededSchool) -> None:
    assert school.settings["school.name"] == "Msasa Park Music School"
    assert school.settings["school.timezone"] == "Africa/Harare"
    assert school.settings["school.locale"] == "en_ZW"
    assert school.settings["school.currency"] == "USD"


def test_the_summary_counts_what_was_written(school: SeededSchool) -> None:
    summary = school.summary
    assert summary.students == len(school.students)
    assert summary.guardians == len(school.guardians)
    assert summary.teachers == len(school.teachers)
    assert summary.rooms == len(school.rooms)
    assert summary.lessons == len(school.lessons)
    assert summary.invoices == len(school.invoices)
    assert summary.currencies == ("USD", "ZWG")


def test_about_two_hundred_students_each_with_exactly_one_primary_guardian(
    school: SeededSchool,
) -> None:
    students = school.students
    assert 190 <= len(students) <= 210
    inactive = [student for student in students if not student.active]
    assert 1 <= len(inactive) <= 15
    for student in students:
        assert 1 <= len(student.guardians) <= 2, student.name
        assert sum(link.is_primary for link in student.guardians) == 1, student.name
        assert {link.relationship for link in student.guardians} <= {
            "mother",
            "father",
            "grandmother",
            "aunt",
            "guardian",
        }
        assert student.date_of_birth is not None
        assert 5 <= _age(student.date_of_birth) <= 18, student.name
        assert re.fullmatch(r"ECD B|Grade [1-7]|Form [1-6]", student.grade), student.grade
    # Older students may be reached directly; young children never are.
    assert any(student.phone for student in students)
    assert any(student.email for student in students)
    for student in students:
        if student.phone or student.email:
            assert student.date_of_birth is not None
            assert _age(student.date_of_birth) >= 13, student.name


def test_about_one_family_in_seven_has_two_or_three_children_at_the_school(
    school: SeededSchool,
) -> None:
    children = Counter(
        next(link.guardian_id for link in student.guardians if link.is_primary)
        for student in school.students
    )
    families_with_siblings = sum(1 for n in children.values() if n > 1)
    assert 0.08 <= families_with_siblings / len(children) <= 0.25
    assert set(children.values()) <= {1, 2, 3}
    # Siblings share all their guardians, not just the one who pays.
    by_primary: dict[int, set[tuple[int, ...]]] = defaultdict(set)
    for student in school.students:
        primary = next(link.guardian_id for link in student.guardians if link.is_primary)
        by_primary[primary].add(tuple(sorted(link.guardian_id for link in student.guardians)))
    assert all(len(sets) == 1 for sets in by_primary.values())
    assert all(guardian.students for guardian in school.guardians)


def test_guardians_can_be_reached_the_way_they_prefer(school: SeededSchool) -> None:
    guardians = school.guardians
    for guardian in guardians:
        assert guardian.phone or guardian.email
        if guardian.phone:
            assert ZIMBABWE_MOBILE.fullmatch(guardian.phone), guardian.phone
        if guardian.preferred_channel is Channel.EMAIL:
            assert guardian.email, guardian.name
        else:
            assert guardian.phone, guardian.name
    assert sum(bool(guardian.email) for guardian in guardians) / len(guardians) >= 0.6
    assert {guardian.preferred_channel for guardian in guardians} == set(Channel)
    assert {guardian.language for guardian in guardians} == {"en", "sn", "nd"}


def test_all_email_addresses_are_at_example_domains(school: SeededSchool) -> None:
    addresses = [
        *(student.email for student in school.students),
        *(guardian.email for guardian in school.guardians),
        *(teacher.email for teacher in school.teachers),
    ]
    for address in filter(None, addresses):
        assert EXAMPLE_EMAIL.fullmatch(address), address
    assert len(set(filter(None, addresses))) == len(list(filter(None, addresses)))


def test_twelve_active_teachers_and_eight_rooms(school: SeededSchool) -> None:
    teachers = school.teachers
    assert len(teachers) == 12
    assert all(teacher.active for teacher in teachers)
    subjects = {s.strip() for teacher in teachers for s in teacher.subjects.split(",")}
    assert {"Piano", "Violin", "Guitar", "Voice", "Marimba", "Mbira", "Drums", "Flute"} <= subjects
    assert {"Cello", "Theory"} <= subjects
    own_zone = [teacher for teacher in teachers if teacher.timezone]
    assert 1 <= len(own_zone) <= 2  # the rest follow the school's time zone

    rooms = {room.name: room.capacity for room in school.rooms}
    assert len(rooms) == 8
    assert rooms["Marimba Hall"] == 20
    assert all(capacity for capacity in rooms.values())


# --- lessons -------------------------------------------------------------------------------------


def test_lessons_fill_exactly_six_weeks_from_the_monday_of_last_week(school: SeededSchool) -> None:
    assert school.summary.first_day == date(2026, 11, 9)  # Monday of the week before TODAY
    assert school.summary.last_day == date(2026, 12, 20)  # Sunday of the fourth week after
    days = {_local(lesson.starts_at).date() for lesson in school.lessons}
    assert min(days) == school.summary.first_day
    assert max(days) == school.summary.last_day - timedelta(days=1)  # no lessons on Sundays
    assert len({day - timedelta(days=day.weekday()) for day in days}) == 6


def test_lessons_are_after_school_on_weekdays_and_saturday_mornings(school: SeededSchool) -> None:
    for lesson in school.lessons:
        start, end = _local(lesson.starts_at), _local(lesson.ends_at)
        assert start.date() == end.date()
        if start.weekday() < 5:
            assert time(14) <= start.time(), lesson.title
            assert end.time() <= time(18), lesson.title
        else:
            assert start.weekday() == 5, lesson.title
            assert time(8) <= start.time(), lesson.title
            assert end.time() <= time(13), lesson.title


def test_every_active_student_has_one_weekly_lesson_with_a_teacher_of_their_instrument(
    school: SeededSchool,
) -> None:
    teachers = {teacher.id: teacher for teacher in school.teachers}
    weekly: dict[int, set[tuple[int, str, int, int]]] = defaultdict(set)
    counts: Counter[int] = Counter()
    for lesson in school.individual_lessons:
        (student_id, _), start = lesson.students[0], _local(lesson.starts_at)
        minutes = int(lesson.duration.total_seconds() // 60)
        assert minutes in (30, 45, 60), lesson.title
        weekly[student_id].add((start.weekday(), f"{start:%H:%M}", minutes, lesson.teacher_id))
        counts[student_id] += 1
        instrument = lesson.title.split(" lesson — ")[0]
        assert instrument in teachers[lesson.teacher_id].subjects, lesson.title
        assert lesson.room_id is not None or lesson.online
    active = {student.id for student in school.students if student.active}
    assert set(counts) == active
    assert set(counts.values()) == {6}
    assert all(len(slots) == 1 for slots in weekly.values())


def test_a_few_weekly_group_lessons_have_six_to_fifteen_students(school: SeededSchool) -> None:
    capacity = {room.id: room.capacity for room in school.rooms}
    groups = school.group_lessons
    assert 3 <= len({lesson.title for lesson in groups}) <= 8
    for lesson in groups:
        assert 6 <= len(lesson.students) <= 15, lesson.title
        assert lesson.room_id is not None
        assert len(lesson.students) <= (capacity[lesson.room_id] or 0), lesson.title


def test_no_teacher_has_more_than_five_hours_of_lessons_a_day(school: SeededSchool) -> None:
    hours: Counter[tuple[int, date]] = Counter()
    for lesson in school.lessons:
        hours[lesson.teacher_id, _local(lesson.starts_at).date()] += (
            lesson.duration.total_seconds() / 3600
        )
    assert max(hours.values()) <= 5


def test_past_lessons_are_completed_a_handful_cancelled_and_the_rest_scheduled(
    school: SeededSchool,
) -> None:
    statuses = Counter(lesson.status for lesson in school.lessons)
    assert 1 <= statuses[LessonStatus.CANCELLED] <= 30
    for lesson in school.lessons:
        if lesson.status is LessonStatus.CANCELLED:
            assert lesson.notes, lesson.title
        elif lesson.ends_at <= NOW:
            assert lesson.status is LessonStatus.COMPLETED, lesson.title
        else:
            assert lesson.status is LessonStatus.SCHEDULED, lesson.title


def test_no_teacher_room_or_student_is_double_booked(school: SeededSchool) -> None:
    first, second = aliased(Lesson), aliased(Lesson)
    overlap = and_(
        first.id < second.id,
        first.starts_at < second.ends_at,
        second.starts_at < first.ends_at,
        first.status != LessonStatus.CANCELLED.value,
        second.status != LessonStatus.CANCELLED.value,
    )
    mine, theirs = aliased(LessonStudent), aliased(LessonStudent)
    with school.session() as session:

        def count(*conditions: Any) -> int:
            query = select(func.count()).select_from(first).join(second, and_(overlap, *conditions))
            return session.scalar(query) or 0

        assert count(first.teacher_id == second.teacher_id) == 0
        assert count(first.room_id == second.room_id) == 0
        student_overlaps = session.scalar(
            select(func.count())
            .select_from(first)
            .join(second, overlap)
            .join(mine, mine.lesson_id == first.id)
            .join(theirs, and_(theirs.lesson_id == second.id, theirs.student_id == mine.student_id))
        )
        assert student_overlaps == 0
        # And by the app's own rule, lesson by lesson, over this week (about 200 lessons).
        this_week = [
            lesson
            for lesson in school.lessons
            if _local(lesson.starts_at).isocalendar().week == TODAY.isocalendar().week
        ]
        assert len(this_week) > 150
        for lesson in this_week:
            assert lesson_clashes(session, lesson.draft(), lesson.id, ZONE) == [], lesson.title


def test_every_record_passes_the_checks_a_dialog_would_apply(school: SeededSchool) -> None:
    records: list[Any] = [
        *school.students,
        *school.guardians,
        *school.teachers,
        *school.lessons,
        *school.invoices,
    ]
    for record in records:
        assert record.draft().problems() == [], record


# --- invoices ------------------------------------------------------------------------------------


def test_invoices_are_in_usd_and_zwg_and_add_up_to_their_lines(school: SeededSchool) -> None:
    invoices = school.invoices
    assert {invoice.currency for invoice in invoices} == {"USD", "ZWG"}
    for invoice in invoices:
        assert invoice.total_minor == sum(line.amount_minor for line in invoice.lines)
        assert invoice.due_on == invoice.issued_on + timedelta(days=14)
    families = {invoice.guardian_id: invoice.currency for invoice in invoices}
    zwg = sum(currency == "ZWG" for currency in families.values()) / len(families)
    assert 0.15 <= zwg <= 0.45
    # A lesson of the same length costs about 27 times as much in ZWG as in USD.
    usd = {line.unit_minor for i in invoices if i.currency == "USD" for line in i.lines}
    zig = {line.unit_minor for i in invoices if i.currency == "ZWG" for line in i.lines}
    assert sorted(round(price / 27) for price in zig) == sorted(usd)


def test_each_active_student_is_billed_last_month_and_this_month_to_the_primary_guardian(
    school: SeededSchool,
) -> None:
    primary = {
        student.id: next(link.guardian_id for link in student.guardians if link.is_primary)
        for student in school.students
    }
    billed: dict[int, list[InvoiceRecord]] = defaultdict(list)
    for invoice in school.invoices:
        assert invoice.student_id is not None
        assert invoice.guardian_id == primary[invoice.student_id]
        billed[invoice.student_id].append(invoice)
    assert set(billed) == {student.id for student in school.students if student.active}
    for invoices in billed.values():
        assert sorted(invoice.issued_on.month for invoice in invoices) == [10, 11]
    for invoice in school.invoices:
        month = f"{invoice.issued_on:%B %Y}"
        assert invoice.lines[0].description.endswith(f"lessons — {month}"), invoice.lines[0]
        assert all(3 <= line.quantity <= 5 for line in invoice.lines)


def test_last_month_is_mostly_paid_and_the_rest_is_overdue_this_month_is_open(
    school: SeededSchool,
) -> None:
    last = [invoice for invoice in school.invoices if invoice.issued_on.month == 10]
    this = [invoice for invoice in school.invoices if invoice.issued_on.month == 11]
    last_statuses = Counter(invoice.status for invoice in last)
    assert last_statuses[InvoiceStatus.PAID] >= 0.7 * len(last)
    assert last_statuses[InvoiceStatus.OPEN] >= 1
    assert all(
        invoice.is_overdue(TODAY) for invoice in last if invoice.status is InvoiceStatus.OPEN
    )
    this_statuses = Counter(invoice.status for invoice in this)
    # Paid: charged in its first days (tests/services/test_demo_payments.py).
    assert set(this_statuses) == {InvoiceStatus.OPEN, InvoiceStatus.DRAFT, InvoiceStatus.PAID}
    assert this_statuses[InvoiceStatus.OPEN] > this_statuses[InvoiceStatus.PAID]
    assert 1 <= this_statuses[InvoiceStatus.DRAFT] <= 6
    assert not any(invoice.is_overdue(TODAY) for invoice in this)
    assert all(invoice.issued_on <= TODAY for invoice in school.invoices)


def test_open_pages_hear_that_the_school_changed(school: SeededSchool) -> None:
    assert {
        TOPIC_STUDENTS,
        TOPIC_GUARDIANS,
        TOPIC_TEACHERS,
        TOPIC_ROOMS,
        TOPIC_LESSONS,
        TOPIC_INVOICES,
    } <= set(school.topics)


# --- determinism and refusal ---------------------------------------------------------------------


def _fingerprint(seeded: SeededSchool) -> tuple[Any, ...]:
    return (
        seeded.summary,
        [(s.ref, s.name, s.date_of_birth, s.grade, s.email, s.phone) for s in seeded.students],
        [(g.ref, g.name, g.email, g.phone, g.preferred_channel) for g in seeded.guardians],
        [(t.ref, t.name) for t in seeded.teachers],
        [(x.ref, x.title, x.starts_at, x.status, x.students) for x in seeded.lessons],
        [(i.number, i.student_name, i.total_minor, i.status) for i in seeded.invoices],
    )


async def test_the_same_seed_and_day_give_the_same_school(
    school: SeededSchool, tmp_path: Path, migrated_template: Path
) -> None:
    again = await _seed_and_read(_fresh_config(tmp_path / "again", migrated_template))
    assert _fingerprint(again) == _fingerprint(school)

    other = await Services.open(_fresh_config(tmp_path / "other", migrated_template))
    try:
        await seed_demo(other, today=TODAY, seed=7)
        names = [student.name for student in await other.school.students()]
    finally:
        await other.close()
    assert names != [student.name for student in school.students]


@pytest.mark.parametrize("kind", ["student", "guardian", "teacher"])
async def test_refuses_a_database_that_already_holds_school_records_and_changes_nothing(
    services: Services, kind: str
) -> None:
    if kind == "student":
        await services.school.save_student(StudentDraft("Rudo", "Moyo"))
    elif kind == "guardian":
        await services.school.save_guardian(
            GuardianDraft("Tendai", "Moyo", phone="+263 77 123 4567", preferred_channel=Channel.SMS)
        )
    else:
        await services.school.save_teacher(TeacherDraft("Farai", "Moyo", subjects="Piano"))
    settings_before = services.settings.values()

    with pytest.raises(SwitchboardError, match="--data-dir") as refused:
        await seed_demo(services, today=TODAY)

    assert "demo" in str(refused.value)
    assert services.settings.values() == settings_before
    records = [
        *(await services.school.students()),
        *(await services.school.guardians()),
        *(await services.school.teachers()),
    ]
    assert len(records) == 1
    assert await services.school.rooms() == []
    assert await _all_lessons(services) == []
    assert await services.school.invoices() == []
