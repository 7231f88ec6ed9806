"""The school's own records as the services hand them out (records) and take them in (drafts).

Records are immutable snapshots safe to pass between threads; drafts are what a dialog or an
import row wants saved. `problems()` on a draft lists everything wrong with it, without touching
the database (references to other records are checked by the service).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from app.domain.errors import FieldError
from app.domain.money import MAX_MINOR, Money, is_known_currency
from app.domain.validation import (
    NAME_MAX,
    TEXT_MAX,
    check_email,
    check_length,
    check_phone,
    check_ref,
    check_required,
    check_timezone,
)

LESSON_MAX = timedelta(hours=8)


class Channel(StrEnum):
    """How a guardian prefers to be reached."""

    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"


class LessonStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


def _collect(*checks: tuple[str, str | None]) -> list[FieldError]:
    return [FieldError(name, message) for name, message in checks if message]


def full_name(first: str, last: str) -> str:
    return f"{first} {last}".strip()


# --- students and guardians ----------------------------------------------------------------------


@dataclass(frozen=True)
class GuardianLink:
    """A guardian's tie to a student, seen from either side."""

    guardian_id: int
    student_id: int
    relationship: str = "guardian"
    is_primary: bool = False
    guardian_name: str = ""
    student_name: str = ""


@dataclass(frozen=True)
class StudentDraft:
    first_name: str
    last_name: str
    ref: str = ""
    date_of_birth: date | None = None
    grade: str = ""
    email: str = ""
    phone: str = ""
    notes: str = ""
    active: bool = True
    guardians: tuple[GuardianLink, ...] = ()

    def problems(self) -> list[FieldError]:
        errors = _collect(
            ("ref", check_ref(self.ref)),
            ("first_name", check_required(self.first_name, "First name")),
            ("last_name", check_required(self.last_name, "Last name")),
            ("grade", check_length(self.grade, "Grade", 40)),
            ("email", check_email(self.email)),
            ("phone", check_phone(self.phone)),
            ("notes", check_length(self.notes, "Notes", TEXT_MAX)),
        )
        if self.date_of_birth and self.date_of_birth > date.today():
            errors.append(FieldError("date_of_birth", "Date of birth is in the future."))
        if self.date_of_birth and self.date_of_birth.year < 1900:
            errors.append(FieldError("date_of_birth", "Date of birth is before 1900."))
        ids = [link.guardian_id for link in self.guardians]
        if len(ids) != len(set(ids)):
            errors.append(FieldError("guardians", "The same guardian is listed twice."))
        for link in self.guardians:
            problem = check_required(link.relationship, "Relationship", 40)
            if problem:
                errors.append(FieldError("guardians", problem))
        return errors


@dataclass(frozen=True)
class StudentRecord:
    id: int
    ref: str
    first_name: str
    last_name: str
    date_of_birth: date | None
    grade: str
    email: str
    phone: str
    notes: str
    active: bool
    version: int
    guardians: tuple[GuardianLink, ...] = ()

    @property
    def name(self) -> str:
        return full_name(self.first_name, self.last_name)

    def draft(self) -> StudentDraft:
        return StudentDraft(
            first_name=self.first_name,
            last_name=self.last_name,
            ref=self.ref,
            date_of_birth=self.date_of_birth,
            grade=self.grade,
            email=self.email,
            phone=self.phone,
            notes=self.notes,
            active=self.active,
            guardians=self.guardians,
        )


@dataclass(frozen=True)
class GuardianDraft:
    first_name: str
    last_name: str
    ref: str = ""
    email: str = ""
    phone: str = ""
    preferred_channel: Channel = Channel.EMAIL
    language: str = "en"

    def problems(self) -> list[FieldError]:
        errors = _collect(
            ("ref", check_ref(self.ref)),
            ("first_name", check_required(self.first_name, "First name")),
            ("last_name", check_required(self.last_name, "Last name")),
            ("email", check_email(self.email)),
            ("phone", check_phone(self.phone)),
            ("language", check_required(self.language, "Language", 16)),
        )
        if not self.email and not self.phone:
            errors.append(FieldError("email", "Give an e-mail address or a phone number."))
        if self.preferred_channel is Channel.EMAIL and self.phone and not self.email:
            errors.append(
                FieldError("preferred_channel", "E-mail is preferred but no address is given.")
            )
        if self.preferred_channel in (Channel.SMS, Channel.WHATSAPP) and not self.phone:
            errors.append(
                FieldError(
                    "preferred_channel", f"{self.preferred_channel.value} needs a phone number."
                )
            )
        return errors


@dataclass(frozen=True)
class GuardianRecord:
    id: int
    ref: str
    first_name: str
    last_name: str
    email: str
    phone: str
    preferred_channel: Channel
    language: str
    version: int
    students: tuple[GuardianLink, ...] = ()

    @property
    def name(self) -> str:
        return full_name(self.first_name, self.last_name)

    def draft(self) -> GuardianDraft:
        return GuardianDraft(
            first_name=self.first_name,
            last_name=self.last_name,
            ref=self.ref,
            email=self.email,
            phone=self.phone,
            preferred_channel=self.preferred_channel,
            language=self.language,
        )


# --- teachers and rooms --------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherDraft:
    first_name: str
    last_name: str
    ref: str = ""
    email: str = ""
    phone: str = ""
    subjects: str = ""
    timezone: str = ""
    active: bool = True

    def problems(self) -> list[FieldError]:
        return _collect(
            ("ref", check_ref(self.ref)),
            ("first_name", check_required(self.first_name, "First name")),
            ("last_name", check_required(self.last_name, "Last name")),
            ("email", check_email(self.email)),
            ("phone", check_phone(self.phone)),
            ("subjects", check_length(self.subjects, "Subjects", 200)),
            ("timezone", check_timezone(self.timezone)),
        )


@dataclass(frozen=True)
class TeacherRecord:
    id: int
    ref: str
    first_name: str
    last_name: str
    email: str
    phone: str
    subjects: str
    timezone: str
    active: bool
    version: int

    @property
    def name(self) -> str:
        return full_name(self.first_name, self.last_name)

    def draft(self) -> TeacherDraft:
        return TeacherDraft(
            first_name=self.first_name,
            last_name=self.last_name,
            ref=self.ref,
            email=self.email,
            phone=self.phone,
            subjects=self.subjects,
            timezone=self.timezone,
            active=self.active,
        )


@dataclass(frozen=True)
class RoomDraft:
    name: str
    capacity: int | None = None

    def problems(self) -> list[FieldError]:
        errors = _collect(("name", check_required(self.name, "Room name")))
        if self.capacity is not None and not 1 <= self.capacity <= 1000:
            errors.append(FieldError("capacity", "Capacity must be from 1 to 1000 people."))
        return errors


@dataclass(frozen=True)
class RoomRecord:
    id: int
    name: str
    capacity: int | None


# --- lessons -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LessonDraft:
    """A lesson to save. Times are timezone-aware; the service stores them in UTC."""

    title: str
    teacher_id: int
    starts_at: datetime
    ends_at: datetime
    ref: str = ""
    room_id: int | None = None
    student_ids: tuple[int, ...] = ()
    status: LessonStatus = LessonStatus.SCHEDULED
    online: bool = False
    notes: str = ""

    def problems(self) -> list[FieldError]:
        errors = _collect(
            ("ref", check_ref(self.ref)),
            ("title", check_required(self.title, "Title", NAME_MAX)),
            ("notes", check_length(self.notes, "Notes", TEXT_MAX)),
        )
        naive = [
            label
            for label, moment in (("starts_at", self.starts_at), ("ends_at", self.ends_at))
            if moment.tzinfo is None or moment.utcoffset() is None
        ]
        errors.extend(FieldError(label, "The time needs a time zone.") for label in naive)
        if not naive:
            if self.ends_at <= self.starts_at:
                errors.append(FieldError("ends_at", "The lesson must end after it starts."))
            elif self.ends_at - self.starts_at > LESSON_MAX:
                errors.append(FieldError("ends_at", "A lesson cannot last more than 8 hours."))
        if len(set(self.student_ids)) != len(self.student_ids):
            errors.append(FieldError("student_ids", "The same student is listed twice."))
        return errors


@dataclass(frozen=True)
class LessonRecord:
    id: int
    ref: str
    title: str
    teacher_id: int
    teacher_name: str
    room_id: int | None
    room_name: str
    starts_at: datetime
    ends_at: datetime
    status: LessonStatus
    online: bool
    notes: str
    version: int
    students: tuple[tuple[int, str], ...] = ()
    series_id: int | None = None  # the series it is an occurrence of, if any
    original_start: datetime | None = None  # ... and its start there (when it was not moved)

    @property
    def duration(self) -> timedelta:
        return self.ends_at - self.starts_at

    def draft(self) -> LessonDraft:
        return LessonDraft(
            title=self.title,
            teacher_id=self.teacher_id,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            ref=self.ref,
            room_id=self.room_id,
            student_ids=tuple(student_id for student_id, _ in self.students),
            status=self.status,
            online=self.online,
            notes=self.notes,
        )


@dataclass(frozen=True)
class SeriesRecord:
    """Lessons that repeat: `rule` (an RRULE's value) in `timezone`, from `first_start`, each
    `minutes` long. Their texts are the occurrences'; each occurrence is a lesson."""

    id: int
    teacher_id: int
    title: str
    rule: str
    timezone: str
    first_start: datetime
    minutes: int
    room_name: str = ""
    online: bool = False
    notes: str = ""
    students: tuple[tuple[int, str], ...] = ()


MAX_WEEKS = 60  # a school year and a bit


# --- invoices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceLine:
    description: str
    quantity: int
    unit_minor: int

    @property
    def amount_minor(self) -> int:
        return self.quantity * self.unit_minor


@dataclass(frozen=True)
class InvoiceDraft:
    currency: str
    issued_on: date
    due_on: date
    lines: tuple[InvoiceLine, ...]
    number: str = ""
    student_id: int | None = None
    guardian_id: int | None = None
    status: InvoiceStatus = InvoiceStatus.OPEN
    notes: str = ""

    def problems(self) -> list[FieldError]:
        errors = _collect(
            ("number", check_ref(self.number)),
            ("notes", check_length(self.notes, "Notes", TEXT_MAX)),
        )
        if not is_known_currency(self.currency):
            errors.append(
                FieldError("currency", f"{self.currency!r} is not a currency code like USD.")
            )
        if self.student_id is None and self.guardian_id is None:
            errors.append(FieldError("student_id", "Choose who the invoice is for."))
        if self.due_on < self.issued_on:
            errors.append(FieldError("due_on", "The due date is before the issue date."))
        if not self.lines:
            errors.append(FieldError("lines", "An invoice needs at least one line."))
        for number, line in enumerate(self.lines, start=1):
            problem = check_required(line.description, f"Line {number} description", 200)
            if problem:
                errors.append(FieldError("lines", problem))
            if not 1 <= line.quantity <= 1000:
                errors.append(FieldError("lines", f"Line {number} quantity must be 1 to 1000."))
            if line.unit_minor < 0:
                errors.append(FieldError("lines", f"Line {number} has a negative price."))
            elif line.amount_minor > MAX_MINOR:
                errors.append(FieldError("lines", f"Line {number} is not a believable amount."))
        total = sum(line.amount_minor for line in self.lines)
        if self.lines and total <= 0:
            errors.append(FieldError("lines", "The invoice total must be more than zero."))
        elif total > MAX_MINOR:
            errors.append(FieldError("lines", "The invoice total is not a believable amount."))
        return errors


@dataclass(frozen=True)
class InvoiceRecord:
    id: int
    number: str
    student_id: int | None
    student_name: str
    guardian_id: int | None
    guardian_name: str
    currency: str
    total_minor: int
    issued_on: date
    due_on: date
    status: InvoiceStatus
    notes: str
    version: int
    lines: tuple[InvoiceLine, ...] = field(default=())

    @property
    def total(self) -> Money:
        return Money(self.total_minor, self.currency)

    @property
    def bill_to(self) -> str:
        return self.guardian_name or self.student_name

    def is_overdue(self, today: date) -> bool:
        return self.status is InvoiceStatus.OPEN and self.due_on < today

    def draft(self) -> InvoiceDraft:
        return InvoiceDraft(
            currency=self.currency,
            issued_on=self.issued_on,
            due_on=self.due_on,
            lines=self.lines,
            number=self.number,
            student_id=self.student_id,
            guardian_id=self.guardian_id,
            status=self.status,
            notes=self.notes,
        )


# --- the overview page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SchoolOverview:
    """The figures on the Overview page, for one moment in the school's time zone."""

    active_students: int
    guardians: int
    active_teachers: int
    rooms: int
    lessons_this_week: int
    lesson_hours_this_week: float
    lessons_per_day: tuple[tuple[date, int], ...]
    open_invoices: tuple[tuple[str, int, int], ...]  # currency, count, total minor units
    overdue_invoices: tuple[tuple[str, int, int], ...]

    @property
    def is_empty(self) -> bool:
        return not (self.active_students or self.active_teachers or self.lessons_this_week)
