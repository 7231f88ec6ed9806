"""Families to send messages to, written straight into a test's database (thousands at once),
and a simulated Twilio account served over loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.providers.sandbox_sms import SimulatedTwilio
from app.store.database import Database
from app.store.school import Guardian, Lesson, LessonStudent, Student, StudentGuardian, Teacher
from tests.fakes.server import served

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-test-token"


def phone(number: int) -> str:
    """A valid Zimbabwean mobile number, written as people write them (local form)."""
    return f"077 {1_000_000 + number:07d}"


def e164_of(number: int) -> str:
    return f"+26377{1_000_000 + number:07d}"


@dataclass(frozen=True)
class Family:
    guardian_id: int
    student_id: int


def add_families(
    db: Database,
    count: int,
    *,
    grade: str = "5",
    lesson: str = "Violin",
    channel: str = "sms",
    language: str = "en",
    start: int = 0,
    with_phone: bool = True,
) -> list[Family]:
    """`count` guardians, each with one student of `grade` taking a `lesson`."""

    def write(session: Session) -> list[Family]:
        teacher = Teacher(ref=f"T-{start}-{grade}-{lesson}", first_name="Chipo", last_name="Dube")
        session.add(teacher)
        session.flush()
        taught = Lesson(
            ref=f"L-{start}-{grade}-{lesson}",
            title=f"{lesson}, Grade {grade}",
            teacher_id=teacher.id,
            starts_at=datetime.now(UTC) + timedelta(days=1),
            ends_at=datetime.now(UTC) + timedelta(days=1, hours=1),
        )
        session.add(taught)
        families: list[Family] = []
        for n in range(start, start + count):
            guardian = Guardian(
                ref=f"G{n:05d}",
                first_name=f"Parent{n}",
                last_name="Moyo",
                email=f"parent{n}@example.org",
                phone=phone(n) if with_phone else "",
                preferred_channel=channel,
                language=language,
            )
            student = Student(
                ref=f"S{n:05d}", first_name=f"Child{n}", last_name="Moyo", grade=grade
            )
            session.add_all([guardian, student])
            session.flush()
            session.add(StudentGuardian(student_id=student.id, guardian_id=guardian.id))
            session.add(LessonStudent(lesson_id=taught.id, student_id=student.id))
            families.append(Family(guardian.id, student.id))
        return families

    return db._write(write, ())


@contextlib.contextmanager
def twilio_served(
    rate: float | None = None, **options: object
) -> Iterator[tuple[SimulatedTwilio, str]]:
    simulated = SimulatedTwilio(account_sid=ACCOUNT, auth_token=TOKEN, rate=rate, **options)  # type: ignore[arg-type]
    with served(simulated.app) as url:
        yield simulated, url
