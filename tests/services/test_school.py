"""The school service saves what the rules allow, refuses the rest with reasons, and tells
listeners what changed."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from app.domain.errors import StaleEdit, SwitchboardError, ValidationFailed
from app.domain.school import (
    GuardianDraft,
    GuardianLink,
    InvoiceDraft,
    InvoiceLine,
    InvoiceStatus,
    LessonDraft,
    LessonStatus,
    StudentDraft,
    TeacherDraft,
)
from app.services import Services
from app.services.events import EngineEvent

pytestmark = pytest.mark.both_databases  # SQLite, then PostgreSQL

MONDAY_2PM = datetime(2026, 11, 23, 12, tzinfo=UTC)  # 14:00 in Harare


async def family(services: Services):
    school = services.school
    mother = await school.save_guardian(GuardianDraft("Rudo", "Moyo", email="rudo@example.org"))
    student = await school.save_student(
        StudentDraft("Tendai", "Moyo", guardians=(GuardianLink(mother.id, 0, "mother"),))
    )
    return mother, student


async def test_new_records_get_the_next_reference_and_a_version(services: Services) -> None:
    mother, student = await family(services)
    second = await services.school.save_student(StudentDraft("Chipo", "Moyo"))
    assert (student.ref, second.ref, mother.ref) == ("S-0001", "S-0002", "G-0001")
    assert student.version == 1


async def test_the_first_guardian_becomes_the_invoice_recipient(services: Services) -> None:
    _, student = await family(services)
    assert [link.is_primary for link in student.guardians] == [True]
    assert student.guardians[0].guardian_name == "Rudo Moyo"


async def test_a_reference_already_in_use_is_refused(services: Services) -> None:
    await services.school.save_student(StudentDraft("A", "B", ref="S-0042"))
    with pytest.raises(ValidationFailed) as refused:
        await services.school.save_student(StudentDraft("C", "D", ref="S-0042"))
    assert refused.value.errors[0].field == "ref"


async def test_saving_an_edit_made_on_an_old_copy_is_refused(services: Services) -> None:
    _, student = await family(services)
    await services.school.save_student(
        StudentDraft("Tendai", "Moyo-Dube"), student_id=student.id, version=student.version
    )
    with pytest.raises(StaleEdit, match="Someone else changed"):
        await services.school.save_student(
            StudentDraft("Tendai", "Moyo"), student_id=student.id, version=student.version
        )


async def test_a_teacher_cannot_be_in_two_lessons_at_once(services: Services) -> None:
    await services.settings.set("school.timezone", "Africa/Harare")
    school = services.school
    teacher = await school.save_teacher(TeacherDraft("Ann", "Dube"))
    await school.save_lesson(
        LessonDraft("Piano", teacher.id, MONDAY_2PM, MONDAY_2PM + timedelta(minutes=45))
    )
    with pytest.raises(ValidationFailed) as refused:
        await school.save_lesson(
            LessonDraft(
                "Theory",
                teacher.id,
                MONDAY_2PM + timedelta(minutes=30),
                MONDAY_2PM + timedelta(hours=1),
            )
        )
    assert refused.value.errors[0].field == "teacher_id"
    assert "Mon 23 Nov 14:00–14:45" in refused.value.errors[0].message


async def test_rooms_and_students_are_not_double_booked_but_cancelled_lessons_free_the_slot(
    services: Services,
) -> None:
    school = services.school
    _, student = await family(services)
    ann = await school.save_teacher(TeacherDraft("Ann", "Dube"))
    ben = await school.save_teacher(TeacherDraft("Ben", "Ncube"))
    room = await school.add_room("Studio 1")
    end = MONDAY_2PM + timedelta(minutes=45)
    first = await school.save_lesson(
        LessonDraft("Piano", ann.id, MONDAY_2PM, end, room_id=room.id, student_ids=(student.id,))
    )
    with pytest.raises(ValidationFailed) as refused:
        await school.save_lesson(
            LessonDraft(
                "Violin", ben.id, MONDAY_2PM, end, room_id=room.id, student_ids=(student.id,)
            )
        )
    assert {error.field for error in refused.value.errors} == {"room_id", "student_ids"}
    await school.save_lesson(
        LessonDraft(
            "Piano",
            ann.id,
            MONDAY_2PM,
            end,
            room_id=room.id,
            student_ids=(student.id,),
            status=LessonStatus.CANCELLED,
        ),
        lesson_id=first.id,
        version=first.version,
    )
    moved = await school.save_lesson(
        LessonDraft("Violin", ben.id, MONDAY_2PM, end, room_id=room.id, student_ids=(student.id,))
    )
    assert moved.room_name == "Studio 1"


async def test_lessons_are_listed_by_the_time_range_they_overlap(services: Services) -> None:
    teacher = await services.school.save_teacher(TeacherDraft("Ann", "Dube"))
    for day in range(3):
        start = MONDAY_2PM + timedelta(days=day)
        await services.school.save_lesson(
            LessonDraft(f"Day {day}", teacher.id, start, start + timedelta(hours=1))
        )
    found = await services.school.lessons(
        MONDAY_2PM + timedelta(minutes=30), MONDAY_2PM + timedelta(days=1)
    )
    assert [lesson.title for lesson in found] == ["Day 0"]


async def test_people_with_history_cannot_be_deleted(services: Services) -> None:
    mother, student = await family(services)
    await services.school.save_invoice(
        InvoiceDraft(
            "USD",
            date(2026, 11, 1),
            date(2026, 11, 15),
            (InvoiceLine("Piano", 4, 2500),),
            student_id=student.id,
            guardian_id=mother.id,
        )
    )
    with pytest.raises(SwitchboardError, match="untick “Active”"):
        await services.school.delete_student(student.id)
    with pytest.raises(SwitchboardError, match="invoice"):
        await services.school.delete_guardian(mother.id)


async def test_invoices_are_numbered_per_year_and_total_their_lines(services: Services) -> None:
    _, student = await family(services)
    lines = (InvoiceLine("Piano", 4, 2500), InvoiceLine("Exam fee", 1, 1999))
    first = await services.school.save_invoice(
        InvoiceDraft("USD", date(2026, 11, 1), date(2026, 11, 15), lines, student_id=student.id)
    )
    second = await services.school.save_invoice(
        InvoiceDraft("ZWG", date(2026, 12, 1), date(2026, 12, 15), lines[:1], student_id=student.id)
    )
    assert (first.number, second.number) == ("INV-2026-0001", "INV-2026-0002")
    assert first.total.minor == 11999
    assert first.total.currency == "USD"
    assert [line.description for line in first.lines] == ["Piano", "Exam fee"]


async def test_only_draft_or_void_invoices_can_be_deleted(services: Services) -> None:
    _, student = await family(services)
    invoice = await services.school.save_invoice(
        InvoiceDraft(
            "USD",
            date(2026, 11, 1),
            date(2026, 11, 15),
            (InvoiceLine("Piano", 4, 2500),),
            student_id=student.id,
        )
    )
    with pytest.raises(SwitchboardError, match="void"):
        await services.school.delete_invoice(invoice.id)
    voided = await services.school.save_invoice(
        InvoiceDraft(
            "USD",
            date(2026, 11, 1),
            date(2026, 11, 15),
            invoice.lines,
            student_id=student.id,
            status=InvoiceStatus.VOID,
        ),
        invoice_id=invoice.id,
    )
    await services.school.delete_invoice(voided.id)
    assert await services.school.invoices() == []


async def test_the_overview_counts_the_week_and_money_owed_per_currency(services: Services) -> None:
    await services.settings.set("school.timezone", "Africa/Harare")
    _, student = await family(services)
    teacher = await services.school.save_teacher(TeacherDraft("Ann", "Dube"))
    await services.school.save_lesson(
        LessonDraft("Piano", teacher.id, MONDAY_2PM, MONDAY_2PM + timedelta(minutes=45))
    )
    await services.school.save_invoice(
        InvoiceDraft(
            "USD",
            date(2026, 11, 1),
            date(2026, 11, 15),
            (InvoiceLine("Piano", 4, 2500),),
            student_id=student.id,
        )
    )
    overview = await services.school.overview(MONDAY_2PM)
    assert overview.lessons_this_week == 1
    assert overview.lesson_hours_this_week == pytest.approx(0.75)
    assert overview.open_invoices == (("USD", 1, 10000),)
    assert overview.overdue_invoices == (("USD", 1, 10000),)
    assert overview.lessons_per_day[0] == (date(2026, 11, 23), 1)


async def test_changes_are_published_by_topic(services: Services) -> None:
    heard: list[EngineEvent] = []
    services.events.subscribe(heard.append)
    await services.school.save_teacher(TeacherDraft("Ann", "Dube"))
    await asyncio.sleep(0.1)
    assert "school.teachers" in [event.topic for event in heard]
