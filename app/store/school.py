"""The school core: students, guardians, teachers, rooms, lessons and invoices."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.store.base import Base, BigId, utcnow


class Tracked:
    """Creation and change times, and a version number that catches two people editing at once."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class Student(Tracked, Base):
    __tablename__ = "students"
    __table_args__ = (Index("ix_students_name", "last_name", "first_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date | None]
    grade: Mapped[str] = mapped_column(String(40), default="")
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(default=True)

    guardian_links: Mapped[list[StudentGuardian]] = relationship(
        back_populates="student", cascade="all, delete-orphan", passive_deletes=True
    )


class Guardian(Tracked, Base):
    __tablename__ = "guardians"
    __table_args__ = (Index("ix_guardians_name", "last_name", "first_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    preferred_channel: Mapped[str] = mapped_column(String(16), default="email")
    language: Mapped[str] = mapped_column(String(16), default="en")

    student_links: Mapped[list[StudentGuardian]] = relationship(
        back_populates="guardian", cascade="all, delete-orphan", passive_deletes=True
    )


class StudentGuardian(Base):
    """Who looks after whom; `is_primary` marks the guardian invoices go to."""

    __tablename__ = "student_guardians"

    student_id: Mapped[int] = mapped_column(
        ForeignKey("students.id", ondelete="CASCADE"), primary_key=True
    )
    guardian_id: Mapped[int] = mapped_column(
        ForeignKey("guardians.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    relationship_label: Mapped[str] = mapped_column("relationship", String(40), default="guardian")
    is_primary: Mapped[bool] = mapped_column(default=False)

    student: Mapped[Student] = relationship(back_populates="guardian_links")
    guardian: Mapped[Guardian] = relationship(back_populates="student_links")


class Teacher(Tracked, Base):
    __tablename__ = "teachers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    subjects: Mapped[str] = mapped_column(String(200), default="")
    # Empty means the school's time zone.
    timezone: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(default=True)


class Room(Base):
    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    capacity: Mapped[int | None]
    notes: Mapped[str] = mapped_column(Text, default="")


class LessonSeries(Tracked, Base):
    """Lessons that repeat (every week, say): the rule in the time zone whose wall clock they
    keep, and when the first one starts. Each occurrence is a lesson of its own, linked here
    with the start it has in the series, so one can be moved or cancelled alone."""

    __tablename__ = "lesson_series"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teachers.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(200))  # an RRULE's value: FREQ=WEEKLY;COUNT=12
    timezone: Mapped[str] = mapped_column(String(64))
    first_start: Mapped[datetime]
    minutes: Mapped[int]
    # What every occurrence is unless changed on its own (for the calendar's recurring event).
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="SET NULL"))
    online: Mapped[bool] = mapped_column(default=False)
    notes: Mapped[str] = mapped_column(Text, default="")
    student_ids: Mapped[list[int]] = mapped_column(default=list)


class Lesson(Tracked, Base):
    __tablename__ = "lessons"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        Index("ix_lessons_teacher_start", "teacher_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(100))
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teachers.id", ondelete="RESTRICT"))
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="SET NULL"))
    starts_at: Mapped[datetime] = mapped_column(index=True)
    ends_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    online: Mapped[bool] = mapped_column(default=False)
    notes: Mapped[str] = mapped_column(Text, default="")
    series_id: Mapped[int | None] = mapped_column(
        ForeignKey("lesson_series.id", ondelete="SET NULL"), index=True
    )
    original_start: Mapped[datetime | None]  # its start in the series, if it is in one

    teacher: Mapped[Teacher] = relationship()
    room: Mapped[Room | None] = relationship()
    student_links: Mapped[list[LessonStudent]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class LessonStudent(Base):
    __tablename__ = "lesson_students"

    lesson_id: Mapped[int] = mapped_column(
        ForeignKey("lessons.id", ondelete="CASCADE"), primary_key=True
    )
    student_id: Mapped[int] = mapped_column(
        ForeignKey("students.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    student: Mapped[Student] = relationship()


class Invoice(Tracked, Base):
    """A bill to a family. `total_minor` is the sum of the lines, kept by the service."""

    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        CheckConstraint("due_on >= issued_on", name="due_after_issue"),
        Index("ix_invoices_status_due", "status", "due_on"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    student_id: Mapped[int | None] = mapped_column(
        ForeignKey("students.id", ondelete="RESTRICT"), index=True
    )
    guardian_id: Mapped[int | None] = mapped_column(
        ForeignKey("guardians.id", ondelete="RESTRICT"), index=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int]
    issued_on: Mapped[date]
    due_on: Mapped[date]
    status: Mapped[str] = mapped_column(String(16), default="open")
    notes: Mapped[str] = mapped_column(Text, default="")

    student: Mapped[Student | None] = relationship()
    guardian: Mapped[Guardian | None] = relationship()
    lines: Mapped[list[InvoiceLineRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="InvoiceLineRow.position"
    )


class InvoiceLineRow(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    description: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int]
    unit_minor: Mapped[int]
