"""The school's records: reading, saving and deleting students, guardians, teachers, rooms,
lessons and invoices.

The `apply_*` functions work inside one open session and raise `ValidationFailed` listing every
problem; `SchoolService` runs them in a write transaction and publishes what changed. The CSV
importer calls the same functions for every row inside a single transaction, so a file and a
dialog are checked by exactly the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session, selectinload

from app.domain.access import Permission
from app.domain.clock import after, skipped_time, wall_time
from app.domain.errors import FieldError, NotFound, StaleEdit, SwitchboardError, ValidationFailed
from app.domain.school import (
    MAX_WEEKS,
    Channel,
    GuardianDraft,
    GuardianLink,
    GuardianRecord,
    InvoiceDraft,
    InvoiceLine,
    InvoiceRecord,
    InvoiceStatus,
    LessonDraft,
    LessonRecord,
    LessonStatus,
    RoomDraft,
    RoomRecord,
    SchoolOverview,
    SeriesRecord,
    StudentDraft,
    StudentRecord,
    TeacherDraft,
    TeacherRecord,
    full_name,
)
from app.domain.validation import check_required
from app.services import access, audit
from app.services.domain_events import record_lesson, record_lessons_created, record_student
from app.services.events import EventHub
from app.services.settings import SettingsService
from app.store.base import Base
from app.store.database import Database
from app.store.school import (
    Guardian,
    Invoice,
    InvoiceLineRow,
    Lesson,
    LessonSeries,
    LessonStudent,
    Room,
    Student,
    StudentGuardian,
    Teacher,
)

TOPIC_STUDENTS = "school.students"
TOPIC_GUARDIANS = "school.guardians"
TOPIC_TEACHERS = "school.teachers"
TOPIC_ROOMS = "school.rooms"
TOPIC_LESSONS = "school.lessons"
TOPIC_INVOICES = "school.invoices"

REF_PREFIX = {Student: "S-", Guardian: "G-", Teacher: "T-", Lesson: "L-"}

M = TypeVar("M", bound=Base)


# --- shared helpers ------------------------------------------------------------------------------


def _load(session: Session, model: type[M], record_id: int, what: str) -> M:
    row = session.get(model, record_id)
    if row is None:
        raise NotFound(f"That {what} no longer exists; someone may have deleted it.")
    return row


def _check_version(row: Any, version: int | None, what: str) -> None:
    if version is not None and row.version != version:
        raise StaleEdit(
            f"Someone else changed this {what} while you were editing it. "
            "Close the form and open it again to see their change."
        )


def next_ref(session: Session, model: type[Student | Guardian | Teacher | Lesson]) -> str:
    """The next free reference like S-0042: one more than the highest numbered one."""
    prefix = REF_PREFIX[model]
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    refs = session.scalars(select(model.ref).where(model.ref.like(f"{prefix}%")))
    highest = max((int(m.group(1)) for ref in refs if (m := pattern.match(ref))), default=0)
    width = 6 if model is Lesson else 4
    return f"{prefix}{highest + 1:0{width}d}"


def find_by_ref(session: Session, model: type[M], ref: str) -> M | None:
    return session.scalars(select(model).where(model.ref == ref)).first()  # type: ignore[attr-defined]


def _check_ref_free(
    session: Session,
    model: type[Student | Guardian | Teacher | Lesson],
    ref: str,
    own_id: int | None,
) -> FieldError | None:
    query = select(model.id).where(model.ref == ref)
    if own_id is not None:
        query = query.where(model.id != own_id)
    if session.scalars(query).first() is not None:
        return FieldError("ref", f"The reference {ref} is already used by another record.")
    return None


def _raise_if(errors: Sequence[FieldError]) -> None:
    if errors:
        raise ValidationFailed(errors)


# --- students and guardians ----------------------------------------------------------------------


def _student_record(row: Student) -> StudentRecord:
    links = tuple(
        GuardianLink(
            guardian_id=link.guardian_id,
            student_id=row.id,
            relationship=link.relationship_label,
            is_primary=link.is_primary,
            guardian_name=full_name(link.guardian.first_name, link.guardian.last_name),
            student_name=full_name(row.first_name, row.last_name),
        )
        for link in sorted(
            row.guardian_links, key=lambda link: (not link.is_primary, link.guardian_id)
        )
    )
    return StudentRecord(
        id=row.id,
        ref=row.ref,
        first_name=row.first_name,
        last_name=row.last_name,
        date_of_birth=row.date_of_birth,
        grade=row.grade,
        email=row.email,
        phone=row.phone,
        notes=row.notes,
        active=row.active,
        version=row.version,
        guardians=links,
    )


def _guardian_record(row: Guardian) -> GuardianRecord:
    links = tuple(
        GuardianLink(
            guardian_id=row.id,
            student_id=link.student_id,
            relationship=link.relationship_label,
            is_primary=link.is_primary,
            guardian_name=full_name(row.first_name, row.last_name),
            student_name=full_name(link.student.first_name, link.student.last_name),
        )
        for link in sorted(row.student_links, key=lambda link: link.student_id)
    )
    return GuardianRecord(
        id=row.id,
        ref=row.ref,
        first_name=row.first_name,
        last_name=row.last_name,
        email=row.email,
        phone=row.phone,
        preferred_channel=Channel(row.preferred_channel),
        language=row.language,
        version=row.version,
        students=links,
    )


def apply_student(
    session: Session,
    draft: StudentDraft,
    row: Student | None = None,
    *,
    link_guardians: bool = True,
) -> Student:
    """Create (row is None) or update a student from a draft; with `link_guardians`, the
    student's guardians become exactly those in the draft."""
    errors = draft.problems()
    own_id = row.id if row is not None else None
    if draft.ref and (clash := _check_ref_free(session, Student, draft.ref, own_id)):
        errors.append(clash)
    if link_guardians:
        if sum(link.is_primary for link in draft.guardians) > 1:
            errors.append(FieldError("guardians", "Only one guardian can receive the invoices."))
        for link in draft.guardians:
            if session.get(Guardian, link.guardian_id) is None:
                errors.append(FieldError("guardians", "One of the guardians no longer exists."))
    _raise_if(errors)
    if row is None:
        row = Student(ref=draft.ref or next_ref(session, Student))
        session.add(row)
    else:
        row.ref = draft.ref or row.ref
        row.version += 1
    row.first_name = draft.first_name.strip()
    row.last_name = draft.last_name.strip()
    row.date_of_birth = draft.date_of_birth
    row.grade = draft.grade.strip()
    row.email = draft.email.strip()
    row.phone = draft.phone.strip()
    row.notes = draft.notes
    row.active = draft.active
    if link_guardians:
        has_primary = any(link.is_primary for link in draft.guardians)
        row.guardian_links = [
            StudentGuardian(
                guardian_id=link.guardian_id,
                relationship_label=link.relationship.strip() or "guardian",
                is_primary=link.is_primary or (not has_primary and index == 0),
            )
            for index, link in enumerate(draft.guardians)
        ]
    session.flush()
    return row


def apply_guardian(session: Session, draft: GuardianDraft, row: Guardian | None = None) -> Guardian:
    errors = draft.problems()
    own_id = row.id if row is not None else None
    if draft.ref and (clash := _check_ref_free(session, Guardian, draft.ref, own_id)):
        errors.append(clash)
    _raise_if(errors)
    if row is None:
        row = Guardian(ref=draft.ref or next_ref(session, Guardian))
        session.add(row)
    else:
        row.ref = draft.ref or row.ref
        row.version += 1
    row.first_name = draft.first_name.strip()
    row.last_name = draft.last_name.strip()
    row.email = draft.email.strip()
    row.phone = draft.phone.strip()
    row.preferred_channel = draft.preferred_channel.value
    row.language = draft.language.strip()
    session.flush()
    return row


def link_guardian(
    session: Session, student: Student, guardian: Guardian, relationship: str, primary: bool
) -> None:
    """Tie a guardian to a student (or update the tie), keeping a single primary guardian."""
    existing = {link.guardian_id: link for link in student.guardian_links}
    before = {
        (other.guardian_id, other.relationship_label, other.is_primary)
        for other in existing.values()
    }
    link = existing.get(guardian.id)
    if link is None:
        link = StudentGuardian(guardian_id=guardian.id, relationship_label=relationship)
        student.guardian_links.append(link)
    link.relationship_label = relationship or link.relationship_label
    if primary or not any(other.is_primary for other in student.guardian_links):
        for other in student.guardian_links:
            other.is_primary = other is link
    after = {
        (other.guardian_id, other.relationship_label, other.is_primary)
        for other in student.guardian_links
    }
    if after != before:
        # The student's family changed: an edit opened before this must not overwrite it.
        student.version += 1
    session.flush()


# --- teachers and rooms --------------------------------------------------------------------------


def _teacher_record(row: Teacher) -> TeacherRecord:
    return TeacherRecord(
        id=row.id,
        ref=row.ref,
        first_name=row.first_name,
        last_name=row.last_name,
        email=row.email,
        phone=row.phone,
        subjects=row.subjects,
        timezone=row.timezone,
        active=row.active,
        version=row.version,
    )


def apply_teacher(session: Session, draft: TeacherDraft, row: Teacher | None = None) -> Teacher:
    errors = draft.problems()
    own_id = row.id if row is not None else None
    if draft.ref and (clash := _check_ref_free(session, Teacher, draft.ref, own_id)):
        errors.append(clash)
    _raise_if(errors)
    if row is None:
        row = Teacher(ref=draft.ref or next_ref(session, Teacher))
        session.add(row)
    else:
        row.ref = draft.ref or row.ref
        row.version += 1
    row.first_name = draft.first_name.strip()
    row.last_name = draft.last_name.strip()
    row.email = draft.email.strip()
    row.phone = draft.phone.strip()
    row.subjects = draft.subjects.strip()
    row.timezone = draft.timezone.strip()
    row.active = draft.active
    session.flush()
    return row


def room_named(session: Session, name: str, *, create: bool) -> Room | None:
    """The room with this name (ignoring case and outer spaces), created if asked."""
    cleaned = " ".join(name.split())
    problem = check_required(cleaned, "Room name")
    if problem:
        raise ValidationFailed([FieldError("room", problem)])
    room = session.scalars(select(Room).where(func.lower(Room.name) == cleaned.lower())).first()
    if room is None and create:
        room = Room(name=cleaned)
        session.add(room)
        session.flush()
    return room


# --- lessons -------------------------------------------------------------------------------------


def _lesson_record(row: Lesson) -> LessonRecord:
    return LessonRecord(
        id=row.id,
        ref=row.ref,
        title=row.title,
        teacher_id=row.teacher_id,
        teacher_name=full_name(row.teacher.first_name, row.teacher.last_name),
        room_id=row.room_id,
        room_name=row.room.name if row.room else "",
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        status=LessonStatus(row.status),
        online=row.online,
        notes=row.notes,
        version=row.version,
        students=tuple(
            sorted(
                (
                    (link.student_id, full_name(link.student.first_name, link.student.last_name))
                    for link in row.student_links
                ),
                key=lambda pair: pair[1],
            )
        ),
        series_id=row.series_id,
        original_start=row.original_start,
    )


def series_records(session: Session, *where: ColumnElement[bool]) -> list[SeriesRecord]:
    rows = list(session.scalars(select(LessonSeries).where(*where).order_by(LessonSeries.id)))
    wanted = {student_id for row in rows for student_id in row.student_ids}
    names = {
        student.id: full_name(student.first_name, student.last_name)
        for student in session.scalars(select(Student).where(Student.id.in_(wanted)))
    }
    rooms = dict(session.execute(select(Room.id, Room.name)).all()) if rows else {}
    return [
        SeriesRecord(
            row.id,
            row.teacher_id,
            row.title,
            row.rule,
            row.timezone,
            row.first_start,
            row.minutes,
            room_name=rooms.get(row.room_id, "") if row.room_id else "",
            online=row.online,
            notes=row.notes,
            students=tuple(
                sorted(
                    ((sid, names[sid]) for sid in row.student_ids if sid in names),
                    key=lambda pair: pair[1],
                )
            ),
        )
        for row in rows
    ]


def apply_series(session: Session, draft: LessonDraft, weeks: int, zone: ZoneInfo) -> list[int]:
    """A lesson every week for `weeks` weeks from the draft's, on the same wall-clock time in
    `zone` (the school's) whatever its clocks do meanwhile: the series and each occurrence,
    checked all together (one that would double-book refuses the whole series, saying which
    weeks). The occurrences' ids."""
    if not 2 <= weeks <= MAX_WEEKS:
        raise ValidationFailed(
            [FieldError("repeat", f"A weekly lesson repeats for 2 to {MAX_WEEKS} weeks.")]
        )
    first = draft.starts_at.astimezone(zone)
    minutes = int((draft.ends_at - draft.starts_at).total_seconds() // 60)
    series = LessonSeries(
        teacher_id=draft.teacher_id,
        title=draft.title.strip(),
        rule=f"FREQ=WEEKLY;COUNT={weeks}",
        timezone=zone.key,
        first_start=draft.starts_at,
        minutes=minutes,
        room_id=draft.room_id,
        online=draft.online,
        notes=draft.notes,
        student_ids=list(draft.student_ids),
    )
    session.add(series)
    session.flush()
    problems: list[FieldError] = []
    made: list[int] = []
    for week in range(weeks):
        day = first.date() + timedelta(weeks=week)
        starts = wall_time(day, first.timetz().replace(tzinfo=None), zone)
        if starts is None:
            problems.append(FieldError("starts_at", skipped_time(day, first.time(), zone)))
            continue
        occurrence = replace(draft, starts_at=starts, ends_at=after(starts, minutes), ref="")
        try:
            row = apply_lesson(session, occurrence, zone)
        except ValidationFailed as exc:
            problems.extend(
                FieldError(error.field, f"Week {week + 1} ({day:%a %d %b}): {error.message}")
                for error in exc.errors
            )
            continue
        row.series_id, row.original_start = series.id, starts
        made.append(row.id)
    _raise_if(problems)
    return made


def lesson_records(session: Session, *where: ColumnElement[bool]) -> list[LessonRecord]:
    """The lessons that meet every condition, earliest first, read as plain columns (for the
    services that read many lessons in their own transaction, as calendar sync does: a
    teacher's year of lessons in a few queries rather than thousands of objects)."""
    rows = session.execute(
        select(
            Lesson.id, Lesson.ref, Lesson.title, Lesson.teacher_id, Teacher.first_name,
            Teacher.last_name, Lesson.room_id, Room.name, Lesson.starts_at, Lesson.ends_at,
            Lesson.status, Lesson.online, Lesson.notes, Lesson.version, Lesson.series_id,
            Lesson.original_start,
        )
        .join(Teacher, Teacher.id == Lesson.teacher_id)
        .outerjoin(Room, Room.id == Lesson.room_id)
        .where(*where)
        .order_by(Lesson.starts_at, Lesson.id)
    ).all()  # fmt: skip
    students: dict[int, list[tuple[int, str]]] = {}
    ids = [row[0] for row in rows]
    for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
        for lesson_id, student_id, first, last in session.execute(
            select(LessonStudent.lesson_id, Student.id, Student.first_name, Student.last_name)
            .join(Student, Student.id == LessonStudent.student_id)
            .where(LessonStudent.lesson_id.in_(ids[start : start + 900]))
        ):
            students.setdefault(lesson_id, []).append((student_id, full_name(first, last)))
    return [
        LessonRecord(
            id=row[0],
            ref=row[1],
            title=row[2],
            teacher_id=row[3],
            teacher_name=full_name(row[4], row[5]),
            room_id=row[6],
            room_name=row[7] or "",
            starts_at=row[8],
            ends_at=row[9],
            status=LessonStatus(row[10]),
            online=row[11],
            notes=row[12],
            version=row[13],
            students=tuple(sorted(students.get(row[0], ()), key=lambda pair: pair[1])),
            series_id=row[14],
            original_start=row[15],
        )
        for row in rows
    ]


def _lesson_query() -> Select[Lesson]:
    return select(Lesson).options(
        selectinload(Lesson.teacher),
        selectinload(Lesson.room),
        selectinload(Lesson.student_links).selectinload(LessonStudent.student),
    )


def _overlapping(starts: datetime, ends: datetime, own_id: int | None) -> ColumnElement[bool]:
    condition = and_(
        Lesson.starts_at < ends,
        Lesson.ends_at > starts,
        Lesson.status != LessonStatus.CANCELLED.value,
    )
    return and_(condition, Lesson.id != own_id) if own_id is not None else condition


def _when(lesson: Lesson, zone: ZoneInfo) -> str:
    start = lesson.starts_at.astimezone(zone)
    end = lesson.ends_at.astimezone(zone)
    return f"{start:%a %d %b %H:%M}–{end:%H:%M}"


def lesson_clashes(
    session: Session, draft: LessonDraft, own_id: int | None, zone: ZoneInfo
) -> list[FieldError]:
    """Double bookings: the teacher, the room or a student already has a lesson at that time."""
    if draft.status is LessonStatus.CANCELLED:
        return []
    errors: list[FieldError] = []
    overlap = _overlapping(draft.starts_at, draft.ends_at, own_id)
    teacher_clash = session.scalars(
        select(Lesson).where(overlap, Lesson.teacher_id == draft.teacher_id).limit(1)
    ).first()
    if teacher_clash is not None:
        name = full_name(teacher_clash.teacher.first_name, teacher_clash.teacher.last_name)
        errors.append(
            FieldError(
                "teacher_id",
                f"{name} already teaches “{teacher_clash.title}” on {_when(teacher_clash, zone)}.",
            )
        )
    if draft.room_id is not None:
        room_clash = session.scalars(
            select(Lesson).where(overlap, Lesson.room_id == draft.room_id).limit(1)
        ).first()
        if room_clash is not None and room_clash.room is not None:
            errors.append(
                FieldError(
                    "room_id",
                    f"{room_clash.room.name} is taken by “{room_clash.title}” on "
                    f"{_when(room_clash, zone)}.",
                )
            )
    if draft.student_ids:
        student_clash = session.execute(
            select(Lesson, Student)
            .join(LessonStudent, LessonStudent.lesson_id == Lesson.id)
            .join(Student, Student.id == LessonStudent.student_id)
            .where(overlap, LessonStudent.student_id.in_(draft.student_ids))
            .limit(1)
        ).first()
        if student_clash is not None:
            lesson, student = student_clash
            errors.append(
                FieldError(
                    "student_ids",
                    f"{full_name(student.first_name, student.last_name)} already has "
                    f"“{lesson.title}” on {_when(lesson, zone)}.",
                )
            )
    return errors


def apply_lesson(
    session: Session, draft: LessonDraft, zone: ZoneInfo, row: Lesson | None = None
) -> Lesson:
    errors = draft.problems()
    own_id = row.id if row is not None else None
    if draft.ref and (clash := _check_ref_free(session, Lesson, draft.ref, own_id)):
        errors.append(clash)
    teacher = session.get(Teacher, draft.teacher_id)
    if teacher is None:
        errors.append(FieldError("teacher_id", "Choose a teacher."))
    if draft.room_id is not None and session.get(Room, draft.room_id) is None:
        errors.append(FieldError("room_id", "That room no longer exists."))
    missing = set(draft.student_ids) - set(
        session.scalars(select(Student.id).where(Student.id.in_(draft.student_ids)))
    )
    if missing:
        errors.append(FieldError("student_ids", "One of the students no longer exists."))
    if not errors:
        errors.extend(lesson_clashes(session, draft, own_id, zone))
    _raise_if(errors)
    if row is None:
        row = Lesson(ref=draft.ref or next_ref(session, Lesson))
        session.add(row)
    else:
        row.ref = draft.ref or row.ref
        row.version += 1
    row.title = draft.title.strip()
    row.teacher_id = draft.teacher_id
    row.room_id = draft.room_id
    row.starts_at = draft.starts_at
    row.ends_at = draft.ends_at
    row.status = draft.status.value
    row.online = draft.online
    row.notes = draft.notes
    row.student_links = [LessonStudent(student_id=student_id) for student_id in draft.student_ids]
    session.flush()
    return row


# --- invoices ------------------------------------------------------------------------------------


def _invoice_record(row: Invoice) -> InvoiceRecord:
    return InvoiceRecord(
        id=row.id,
        number=row.number,
        student_id=row.student_id,
        student_name=full_name(row.student.first_name, row.student.last_name)
        if row.student
        else "",
        guardian_id=row.guardian_id,
        guardian_name=(
            full_name(row.guardian.first_name, row.guardian.last_name) if row.guardian else ""
        ),
        currency=row.currency,
        total_minor=row.total_minor,
        issued_on=row.issued_on,
        due_on=row.due_on,
        status=InvoiceStatus(row.status),
        notes=row.notes,
        version=row.version,
        lines=tuple(
            InvoiceLine(line.description, line.quantity, line.unit_minor) for line in row.lines
        ),
    )


def _invoice_query() -> Select[Invoice]:
    return select(Invoice).options(
        selectinload(Invoice.student), selectinload(Invoice.guardian), selectinload(Invoice.lines)
    )


def next_invoice_number(session: Session, year: int) -> str:
    prefix = f"INV-{year}-"
    numbers = session.scalars(select(Invoice.number).where(Invoice.number.like(f"{prefix}%")))
    highest = max(
        (int(number[len(prefix) :]) for number in numbers if number[len(prefix) :].isdigit()),
        default=0,
    )
    return f"{prefix}{highest + 1:04d}"


def apply_invoice(session: Session, draft: InvoiceDraft, row: Invoice | None = None) -> Invoice:
    errors = draft.problems()
    if draft.number:
        query = select(Invoice.id).where(Invoice.number == draft.number)
        if row is not None:
            query = query.where(Invoice.id != row.id)
        if session.scalars(query).first() is not None:
            errors.append(FieldError("number", f"Invoice number {draft.number} is already used."))
    if draft.student_id is not None and session.get(Student, draft.student_id) is None:
        errors.append(FieldError("student_id", "That student no longer exists."))
    if draft.guardian_id is not None and session.get(Guardian, draft.guardian_id) is None:
        errors.append(FieldError("guardian_id", "That guardian no longer exists."))
    _raise_if(errors)
    if row is None:
        row = Invoice(number=draft.number or next_invoice_number(session, draft.issued_on.year))
        session.add(row)
    else:
        row.number = draft.number or row.number
        row.version += 1
    row.student_id = draft.student_id
    row.guardian_id = draft.guardian_id
    row.currency = draft.currency
    row.issued_on = draft.issued_on
    row.due_on = draft.due_on
    row.status = draft.status.value
    row.notes = draft.notes
    row.lines = [
        InvoiceLineRow(
            position=position,
            description=line.description.strip(),
            quantity=line.quantity,
            unit_minor=line.unit_minor,
        )
        for position, line in enumerate(draft.lines, start=1)
    ]
    row.total_minor = sum(line.amount_minor for line in draft.lines)
    session.flush()
    return row


# --- the audit trail -----------------------------------------------------------------------------

# Kept out of the trail's values (it cannot be erased): only that they changed is noted.
PERSONAL = ("email", "phone", "date_of_birth", "notes")


def _student_trail(row: Student) -> dict[str, Any]:
    return {
        "ref": row.ref,
        "name": full_name(row.first_name, row.last_name),
        "grade": row.grade,
        "active": row.active,
        "guardians": sorted(link.guardian_id for link in row.guardian_links),
        "primary_guardian": next(
            (link.guardian_id for link in row.guardian_links if link.is_primary), None
        ),
        "email": row.email,
        "phone": row.phone,
        "date_of_birth": row.date_of_birth,
        "notes": row.notes,
    }


def _guardian_trail(row: Guardian) -> dict[str, Any]:
    return {
        "ref": row.ref,
        "name": full_name(row.first_name, row.last_name),
        "preferred_channel": row.preferred_channel,
        "language": row.language,
        "email": row.email,
        "phone": row.phone,
    }


def _teacher_trail(row: Teacher) -> dict[str, Any]:
    return {
        "ref": row.ref,
        "name": full_name(row.first_name, row.last_name),
        "subjects": row.subjects,
        "timezone": row.timezone,
        "active": row.active,
        "email": row.email,
        "phone": row.phone,
    }


def _lesson_trail(row: Lesson) -> dict[str, Any]:
    return {
        "ref": row.ref,
        "title": row.title,
        "teacher": row.teacher_id,
        "room": row.room_id,
        "starts_at": row.starts_at.astimezone(UTC),
        "ends_at": row.ends_at.astimezone(UTC),
        "status": row.status,
        "online": row.online,
        "students": sorted(link.student_id for link in row.student_links),
        "notes": row.notes,
    }


def _invoice_trail(row: Invoice) -> dict[str, Any]:
    return {
        "number": row.number,
        "student": row.student_id,
        "guardian": row.guardian_id,
        "currency": row.currency,
        "total_minor": row.total_minor,
        "status": row.status,
        "issued_on": row.issued_on,
        "due_on": row.due_on,
        "lines": [
            [line.description, line.quantity, line.unit_minor]
            for line in sorted(row.lines, key=lambda line: line.position)
        ],
        "notes": row.notes,
    }


def _shown(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key not in PERSONAL}


def _label(values: Mapping[str, Any]) -> dict[str, Any]:
    """What names the record in every entry about it."""
    return {key: values[key] for key in ("ref", "name", "title", "number") if key in values}


def trail_saved(
    session: Session,
    who: str,
    kind: str,
    record_id: int,
    was: Mapping[str, Any] | None,
    now: Mapping[str, Any],
) -> None:
    """A `<kind>.saved` entry: the new record, or what changed (personal fields by name only)."""
    if was is None:
        filled = [key for key in PERSONAL if now.get(key)]
        before, after = None, {**_shown(now), **({"personal": filled} if filled else {})}
    else:
        old, new = audit.changes(_shown(was), _shown(now))
        before, after = {**_label(was), **old}, {**_label(now), **new}
        personal = [key for key in PERSONAL if key in now and was.get(key) != now.get(key)]
        if personal:
            after["personal_changed"] = personal
    audit.record(session, who, f"{kind}.saved", kind, record_id, before, after)


def trail_deleted(
    session: Session, who: str, kind: str, record_id: int, was: Mapping[str, Any]
) -> None:
    audit.record(session, who, f"{kind}.deleted", kind, record_id, _shown(was), None)


# --- the service ---------------------------------------------------------------------------------


class SchoolService:
    """Async face of the functions above: each call is one transaction, and a change publishes
    `school.<kind>` with the ids that changed."""

    def __init__(self, db: Database, events: EventHub, settings: SettingsService) -> None:
        self._db = db
        self._events = events
        self._settings = settings

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self._settings.get("school.timezone"))

    def _changed(self, topic: str, ids: Iterable[int] = (), **extra: Any) -> None:
        self._events.publish(topic, {"ids": list(ids), **extra})

    # students

    async def students(self) -> list[StudentRecord]:
        def query(session: Session) -> list[StudentRecord]:
            rows = session.scalars(
                select(Student)
                .options(
                    selectinload(Student.guardian_links).selectinload(StudentGuardian.guardian)
                )
                .order_by(Student.last_name, Student.first_name, Student.id)
            )
            return [_student_record(row) for row in rows]

        return await self._db.read(query)

    async def student(self, student_id: int) -> StudentRecord:
        def query(session: Session) -> StudentRecord:
            return _student_record(_load(session, Student, student_id, "student"))

        return await self._db.read(query)

    async def save_student(
        self, draft: StudentDraft, *, student_id: int | None = None, version: int | None = None
    ) -> StudentRecord:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()

        def write(session: Session) -> StudentRecord:
            row = None
            if student_id is not None:
                row = _load(session, Student, student_id, "student")
                _check_version(row, version, "student")
            was = _student_trail(row) if row is not None else None
            saved = record_student(session, apply_student(session, draft, row), row is None)
            session.refresh(saved)
            trail_saved(session, who, "student", saved.id, was, _student_trail(saved))
            return _student_record(saved)

        record = await self._db.write(write)
        self._changed(TOPIC_STUDENTS, [record.id])
        self._changed(TOPIC_GUARDIANS, [link.guardian_id for link in record.guardians])
        return record

    async def delete_student(self, student_id: int) -> None:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()

        def write(session: Session) -> None:
            row = _load(session, Student, student_id, "student")
            invoices = session.scalar(
                select(func.count()).select_from(Invoice).where(Invoice.student_id == student_id)
            )
            if invoices:
                raise SwitchboardError(
                    f"{full_name(row.first_name, row.last_name)} has {invoices} invoice(s), so "
                    "their record must stay; untick “Active” instead to hide them."
                )
            trail_deleted(session, who, "student", student_id, _student_trail(row))
            session.delete(row)

        await self._db.write(write)
        self._changed(TOPIC_STUDENTS, [student_id], deleted=True)
        self._changed(TOPIC_LESSONS)

    # guardians

    async def guardians(self) -> list[GuardianRecord]:
        def query(session: Session) -> list[GuardianRecord]:
            rows = session.scalars(
                select(Guardian)
                .options(selectinload(Guardian.student_links).selectinload(StudentGuardian.student))
                .order_by(Guardian.last_name, Guardian.first_name, Guardian.id)
            )
            return [_guardian_record(row) for row in rows]

        return await self._db.read(query)

    async def save_guardian(
        self, draft: GuardianDraft, *, guardian_id: int | None = None, version: int | None = None
    ) -> GuardianRecord:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()

        def write(session: Session) -> GuardianRecord:
            row = None
            if guardian_id is not None:
                row = _load(session, Guardian, guardian_id, "guardian")
                _check_version(row, version, "guardian")
            was = _guardian_trail(row) if row is not None else None
            saved = apply_guardian(session, draft, row)
            session.refresh(saved)
            trail_saved(session, who, "guardian", saved.id, was, _guardian_trail(saved))
            return _guardian_record(saved)

        record = await self._db.write(write)
        self._changed(TOPIC_GUARDIANS, [record.id])
        self._changed(TOPIC_STUDENTS, [link.student_id for link in record.students])
        return record

    async def delete_guardian(self, guardian_id: int) -> None:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()

        def write(session: Session) -> None:
            row = _load(session, Guardian, guardian_id, "guardian")
            invoices = session.scalar(
                select(func.count()).select_from(Invoice).where(Invoice.guardian_id == guardian_id)
            )
            if invoices:
                raise SwitchboardError(
                    f"{full_name(row.first_name, row.last_name)} has {invoices} invoice(s) "
                    "addressed to them, so their record must stay."
                )
            trail_deleted(session, who, "guardian", guardian_id, _guardian_trail(row))
            session.delete(row)

        await self._db.write(write)
        self._changed(TOPIC_GUARDIANS, [guardian_id], deleted=True)
        self._changed(TOPIC_STUDENTS)

    # teachers

    async def teachers(self) -> list[TeacherRecord]:
        def query(session: Session) -> list[TeacherRecord]:
            rows = session.scalars(select(Teacher).order_by(Teacher.last_name, Teacher.first_name))
            return [_teacher_record(row) for row in rows]

        return await self._db.read(query)

    async def save_teacher(
        self, draft: TeacherDraft, *, teacher_id: int | None = None, version: int | None = None
    ) -> TeacherRecord:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()

        def write(session: Session) -> TeacherRecord:
            row = None
            if teacher_id is not None:
                row = _load(session, Teacher, teacher_id, "teacher")
                _check_version(row, version, "teacher")
            was = _teacher_trail(row) if row is not None else None
            saved = apply_teacher(session, draft, row)
            trail_saved(session, who, "teacher", saved.id, was, _teacher_trail(saved))
            return _teacher_record(saved)

        record = await self._db.write(write)
        self._changed(TOPIC_TEACHERS, [record.id])
        self._changed(TOPIC_LESSONS)
        return record

    async def delete_teacher(self, teacher_id: int) -> None:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()

        def write(session: Session) -> None:
            row = _load(session, Teacher, teacher_id, "teacher")
            lessons = session.scalar(
                select(func.count()).select_from(Lesson).where(Lesson.teacher_id == teacher_id)
            )
            if lessons:
                raise SwitchboardError(
                    f"{full_name(row.first_name, row.last_name)} has {lessons} lesson(s) on "
                    "record, so they must stay; untick “Active” instead."
                )
            trail_deleted(session, who, "teacher", teacher_id, _teacher_trail(row))
            session.delete(row)

        await self._db.write(write)
        self._changed(TOPIC_TEACHERS, [teacher_id], deleted=True)

    # rooms

    async def rooms(self) -> list[RoomRecord]:
        def query(session: Session) -> list[RoomRecord]:
            rows = session.scalars(select(Room).order_by(Room.name))
            return [RoomRecord(row.id, row.name, row.capacity) for row in rows]

        return await self._db.read(query)

    async def add_room(self, name: str, capacity: int | None = None) -> RoomRecord:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()
        draft = RoomDraft(name, capacity)
        _raise_if(draft.problems())

        def write(session: Session) -> RoomRecord:
            if room_named(session, name, create=False) is not None:
                raise ValidationFailed(
                    [FieldError("name", f"There is already a room called {name.strip()}.")]
                )
            room = room_named(session, name, create=True)
            assert room is not None
            room.capacity = capacity
            audit.record(
                session,
                who,
                "room.added",
                "room",
                room.id,
                None,
                {"name": room.name, "capacity": room.capacity},
            )
            return RoomRecord(room.id, room.name, room.capacity)

        record = await self._db.write(write)
        self._changed(TOPIC_ROOMS, [record.id])
        return record

    # lessons

    async def lessons(self, start: datetime, end: datetime) -> list[LessonRecord]:
        """Lessons that overlap [start, end), earliest first."""

        def query(session: Session) -> list[LessonRecord]:
            rows = session.scalars(
                _lesson_query()
                .where(Lesson.starts_at < end, Lesson.ends_at > start)
                .order_by(Lesson.starts_at, Lesson.id)
            )
            return [_lesson_record(row) for row in rows]

        return await self._db.read(query)

    async def lesson(self, lesson_id: int) -> LessonRecord:
        def query(session: Session) -> LessonRecord:
            row = session.scalars(_lesson_query().where(Lesson.id == lesson_id)).first()
            if row is None:
                raise NotFound("That lesson no longer exists; someone may have deleted it.")
            return _lesson_record(row)

        return await self._db.read(query)

    async def save_lesson(
        self, draft: LessonDraft, *, lesson_id: int | None = None, version: int | None = None
    ) -> LessonRecord:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()
        zone = self.zone

        def write(session: Session) -> int:
            row = None
            if lesson_id is not None:
                row = _load(session, Lesson, lesson_id, "lesson")
                _check_version(row, version, "lesson")
            was = _lesson_trail(row) if row is not None else None
            status = row.status if row is not None else None
            saved = record_lesson(session, apply_lesson(session, draft, zone, row), status)
            trail_saved(session, who, "lesson", saved.id, was, _lesson_trail(saved))
            return saved.id

        saved_id = await self._db.write(write)
        self._changed(TOPIC_LESSONS, [saved_id])
        return await self.lesson(saved_id)

    async def save_series(self, draft: LessonDraft, weeks: int) -> list[LessonRecord]:
        """The lesson every week for `weeks` weeks, on the school's wall-clock time; all of it
        or nothing (see `apply_series`)."""
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()
        zone = self.zone

        def write(session: Session) -> list[int]:
            made = record_lessons_created(session, apply_series(session, draft, weeks, zone))
            first = session.get(Lesson, made[0]) if made else None
            if first is not None and first.series_id is not None:
                audit.record(
                    session,
                    who,
                    "series.saved",
                    "series",
                    first.series_id,
                    None,
                    {**_shown(_lesson_trail(first)), "weeks": weeks, "lessons": made},
                )
            return made

        made = await self._db.write(write)
        self._changed(TOPIC_LESSONS, made)

        def query(session: Session) -> list[LessonRecord]:
            return lesson_records(session, Lesson.id.in_(made))

        return await self._db.read(query)

    async def clashes(self, draft: LessonDraft, lesson_id: int | None = None) -> list[FieldError]:
        """The double bookings saving `draft` would make (the teacher, the room or a student
        already has a lesson then), without saving it."""
        zone = self.zone
        return await self._db.read(lambda session: lesson_clashes(session, draft, lesson_id, zone))

    async def delete_lesson(self, lesson_id: int) -> None:
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()

        def write(session: Session) -> None:
            row = _load(session, Lesson, lesson_id, "lesson")
            trail_deleted(session, who, "lesson", lesson_id, _lesson_trail(row))
            session.delete(row)

        await self._db.write(write)
        self._changed(TOPIC_LESSONS, [lesson_id], deleted=True)

    # invoices

    async def invoices(self) -> list[InvoiceRecord]:
        def query(session: Session) -> list[InvoiceRecord]:
            rows = session.scalars(
                _invoice_query().order_by(Invoice.issued_on.desc(), Invoice.id.desc())
            )
            return [_invoice_record(row) for row in rows]

        return await self._db.read(query)

    async def invoice(self, invoice_id: int) -> InvoiceRecord:
        def query(session: Session) -> InvoiceRecord:
            row = session.scalars(_invoice_query().where(Invoice.id == invoice_id)).first()
            if row is None:
                raise NotFound("That invoice no longer exists; someone may have deleted it.")
            return _invoice_record(row)

        return await self._db.read(query)

    async def save_invoice(
        self, draft: InvoiceDraft, *, invoice_id: int | None = None, version: int | None = None
    ) -> InvoiceRecord:
        access.require(Permission.TAKE_PAYMENTS)
        who = access.actor()

        def write(session: Session) -> int:
            row = None
            if invoice_id is not None:
                row = _load(session, Invoice, invoice_id, "invoice")
                _check_version(row, version, "invoice")
            was = _invoice_trail(row) if row is not None else None
            saved = apply_invoice(session, draft, row)
            trail_saved(session, who, "invoice", saved.id, was, _invoice_trail(saved))
            return saved.id

        saved_id = await self._db.write(write)
        self._changed(TOPIC_INVOICES, [saved_id])
        return await self.invoice(saved_id)

    async def delete_invoice(self, invoice_id: int) -> None:
        access.require(Permission.TAKE_PAYMENTS)
        who = access.actor()

        def write(session: Session) -> None:
            row = _load(session, Invoice, invoice_id, "invoice")
            if row.status not in (InvoiceStatus.DRAFT.value, InvoiceStatus.VOID.value):
                raise SwitchboardError(
                    f"Invoice {row.number} is {row.status}; only draft or void invoices can be "
                    "deleted. Mark it void to cancel it."
                )
            trail_deleted(session, who, "invoice", invoice_id, _invoice_trail(row))
            session.delete(row)

        await self._db.write(write)
        self._changed(TOPIC_INVOICES, [invoice_id], deleted=True)

    # overview

    async def overview(self, now: datetime) -> SchoolOverview:
        zone = self.zone
        today = now.astimezone(zone).date()
        week_start, week_end = week_bounds(today, zone)
        horizon = [today + timedelta(days=offset) for offset in range(14)]
        horizon_start = datetime.combine(today, datetime.min.time(), zone)
        horizon_end = horizon_start + timedelta(days=14)

        def query(session: Session) -> SchoolOverview:
            def count(model: type[Base], *where: ColumnElement[bool]) -> int:
                return session.scalar(select(func.count()).select_from(model).where(*where)) or 0

            scheduled = Lesson.status != LessonStatus.CANCELLED.value
            week = session.execute(
                select(Lesson.starts_at, Lesson.ends_at).where(
                    scheduled, Lesson.starts_at >= week_start, Lesson.starts_at < week_end
                )
            ).all()
            upcoming = session.scalars(
                select(Lesson.starts_at).where(
                    scheduled, Lesson.starts_at >= horizon_start, Lesson.starts_at < horizon_end
                )
            )
            per_day = dict.fromkeys(horizon, 0)
            for starts_at in upcoming:
                day = starts_at.astimezone(zone).date()
                if day in per_day:
                    per_day[day] += 1

            def invoice_totals(*where: ColumnElement[bool]) -> tuple[tuple[str, int, int], ...]:
                rows = session.execute(
                    select(Invoice.currency, func.count(), func.sum(Invoice.total_minor))
                    .where(Invoice.status == InvoiceStatus.OPEN.value, *where)
                    .group_by(Invoice.currency)
                    .order_by(Invoice.currency)
                ).all()
                return tuple((currency, n, int(total or 0)) for currency, n, total in rows)

            return SchoolOverview(
                active_students=count(Student, Student.active.is_(True)),
                guardians=count(Guardian),
                active_teachers=count(Teacher, Teacher.active.is_(True)),
                rooms=count(Room),
                lessons_this_week=len(week),
                lesson_hours_this_week=sum((end - start).total_seconds() for start, end in week)
                / 3600,
                lessons_per_day=tuple(per_day.items()),
                open_invoices=invoice_totals(),
                overdue_invoices=invoice_totals(Invoice.due_on < today),
            )

        return await self._db.read(query)


def week_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Monday 00:00 to the next Monday 00:00 of the week holding `day`, in `zone`."""
    monday = day - timedelta(days=day.weekday())
    start = datetime.combine(monday, datetime.min.time(), zone)
    return start, datetime.combine(monday + timedelta(days=7), datetime.min.time(), zone)
