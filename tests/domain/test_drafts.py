"""Drafts list every problem with what a person typed, before anything is saved."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from app.domain.school import (
    Channel,
    GuardianDraft,
    InvoiceDraft,
    InvoiceLine,
    LessonDraft,
    StudentDraft,
    TeacherDraft,
)


def fields(problems: list) -> set[str]:
    return {problem.field for problem in problems}


def test_a_complete_student_has_no_problems() -> None:
    assert (
        StudentDraft(
            "Tendai", "Moyo", email="tendai@example.org", phone="+263 77 123 4567"
        ).problems()
        == []
    )


def test_a_student_lists_every_problem_at_once() -> None:
    draft = StudentDraft(
        " ",
        "",
        email="not-an-email",
        phone="12",
        date_of_birth=date.today() + timedelta(days=3),
        ref="bad ref!",
    )
    assert fields(draft.problems()) == {
        "first_name",
        "last_name",
        "email",
        "phone",
        "date_of_birth",
        "ref",
    }


def test_a_guardian_needs_a_way_to_be_reached_that_fits_their_channel() -> None:
    assert "email" in fields(GuardianDraft("Rudo", "Moyo").problems())
    assert "preferred_channel" in fields(
        GuardianDraft(
            "Rudo", "Moyo", email="r@example.org", preferred_channel=Channel.SMS
        ).problems()
    )


def test_a_teacher_time_zone_must_exist() -> None:
    assert fields(TeacherDraft("Ann", "Dube", timezone="Mars/Olympus").problems()) == {"timezone"}


def test_a_lesson_must_end_after_it_starts_and_within_eight_hours() -> None:
    start = datetime(2026, 11, 24, 14, tzinfo=UTC)
    assert "ends_at" in fields(LessonDraft("Piano", 1, start, start).problems())
    assert "ends_at" in fields(
        LessonDraft("Piano", 1, start, start + timedelta(hours=9)).problems()
    )
    assert LessonDraft("Piano", 1, start, start + timedelta(minutes=45)).problems() == []


def test_a_lesson_with_naive_times_is_refused() -> None:
    naive = datetime(2026, 11, 24, 14)
    assert fields(LessonDraft("Piano", 1, naive, naive + timedelta(hours=1)).problems()) == {
        "starts_at",
        "ends_at",
    }


def test_an_invoice_needs_a_payer_lines_a_positive_total_and_due_after_issue() -> None:
    draft = InvoiceDraft(
        currency="XYZ",
        issued_on=date(2026, 11, 10),
        due_on=date(2026, 11, 1),
        lines=(InvoiceLine("", 0, -5),),
    )
    assert fields(draft.problems()) == {"currency", "student_id", "due_on", "lines"}
