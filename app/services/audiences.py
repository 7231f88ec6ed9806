"""Who a message goes to: one person, or an audience such as "guardians of Grade 5 violin
students", resolved against the school's records at the moment a send is prepared.

Each recipient comes with what templates may use about them (`data`): the guardian or teacher,
their students, and the school.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.domain.errors import NotFound, SwitchboardError
from app.store.school import Guardian, Lesson, LessonStudent, Student, StudentGuardian, Teacher

GUARDIANS = "guardians"
TEACHERS = "teachers"


@dataclass(frozen=True)
class Audience:
    """Whom to send to. `who`: guardians or teachers. Filters narrow it (all must hold): the
    students' grade, a word in the title of a lesson they take (an instrument: "violin"), a
    teacher whose students' guardians it is, or the people chosen by id."""

    who: str = GUARDIANS
    grade: str = ""
    lesson: str = ""
    teacher_id: int | None = None
    ids: tuple[int, ...] = ()

    def describe(self) -> str:
        people = "teachers" if self.who == TEACHERS else "guardians"
        parts: list[str] = []
        if self.ids:
            parts.append(f"{len(self.ids)} chosen")
        if self.grade:
            parts.append(f"of Grade {self.grade}")
        if self.lesson:
            parts.append(f"taking {self.lesson}")
        if self.teacher_id is not None:
            parts.append(f"taught by teacher {self.teacher_id}")
        return " ".join([f"{'All ' if not parts else ''}{people}", *parts]).strip()

    def as_dict(self) -> dict[str, Any]:
        return {
            "who": self.who,
            "grade": self.grade,
            "lesson": self.lesson,
            "teacher_id": self.teacher_id,
            "ids": list(self.ids),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Audience:
        return cls(
            who=str(data.get("who") or GUARDIANS),
            grade=str(data.get("grade") or ""),
            lesson=str(data.get("lesson") or ""),
            teacher_id=data.get("teacher_id"),
            ids=tuple(int(i) for i in data.get("ids") or ()),
        )


@dataclass(frozen=True)
class Recipient:
    kind: str  # guardian | teacher
    id: int
    name: str
    email: str
    phone: str
    preferred_channel: str
    language: str
    data: dict[str, Any] = field(default_factory=dict)


def _person(first: str, last: str) -> dict[str, str]:
    return {"first_name": first, "last_name": last, "name": f"{first} {last}".strip()}


def _student(student: Student) -> dict[str, Any]:
    return {**_person(student.first_name, student.last_name), "grade": student.grade}


def resolve(session: Session, audience: Audience) -> list[Recipient]:
    """The audience's people, each once, in name order."""
    if audience.who == TEACHERS:
        return _teachers(session, audience)
    if audience.who != GUARDIANS:
        raise SwitchboardError(f"Messages go to guardians or teachers, not {audience.who!r}.")
    return _guardians(session, audience)


def _guardians(session: Session, audience: Audience) -> list[Recipient]:
    query = select(Guardian).options(
        selectinload(Guardian.student_links).selectinload(StudentGuardian.student)
    )
    if audience.ids:
        query = query.where(Guardian.id.in_(audience.ids))
    student_filter = _students_matching(session, audience)
    recipients: list[Recipient] = []
    for guardian in session.scalars(query.order_by(Guardian.last_name, Guardian.first_name)):
        students = [
            link.student
            for link in guardian.student_links
            if link.student.active and (student_filter is None or link.student.id in student_filter)
        ]
        if student_filter is not None and not students:
            continue
        recipients.append(
            Recipient(
                kind="guardian",
                id=guardian.id,
                name=f"{guardian.first_name} {guardian.last_name}".strip(),
                email=guardian.email,
                phone=guardian.phone,
                preferred_channel=guardian.preferred_channel,
                language=guardian.language or "en",
                data={
                    "guardian": _person(guardian.first_name, guardian.last_name),
                    "students": [_student(student) for student in students],
                    "student": _student(students[0]) if students else {},
                },
            )
        )
    if audience.ids and not recipients and not student_filter:
        raise NotFound("None of the chosen guardians exist any more.")
    return recipients


def _students_matching(session: Session, audience: Audience) -> set[int] | None:
    """Ids of the students the filters allow; None when nothing filters by student."""
    if not (audience.grade or audience.lesson or audience.teacher_id is not None):
        return None
    query = select(Student.id).where(Student.active.is_(True))
    if audience.grade:
        query = query.where(Student.grade == audience.grade)
    if audience.lesson or audience.teacher_id is not None:
        lessons = select(LessonStudent.student_id).join(
            Lesson, Lesson.id == LessonStudent.lesson_id
        )
        if audience.lesson:
            lessons = lessons.where(Lesson.title.icontains(audience.lesson.strip()))
        if audience.teacher_id is not None:
            lessons = lessons.where(Lesson.teacher_id == audience.teacher_id)
        query = query.where(Student.id.in_(lessons))
    return set(session.scalars(query))


def _teachers(session: Session, audience: Audience) -> list[Recipient]:
    query = select(Teacher).where(Teacher.active.is_(True))
    if audience.ids:
        query = query.where(Teacher.id.in_(audience.ids))
    if audience.teacher_id is not None:
        query = query.where(Teacher.id == audience.teacher_id)
    return [
        Recipient(
            kind="teacher",
            id=teacher.id,
            name=f"{teacher.first_name} {teacher.last_name}".strip(),
            email=teacher.email,
            phone=teacher.phone,
            preferred_channel="sms" if teacher.phone and not teacher.email else "email",
            language="en",
            data={"teacher": _person(teacher.first_name, teacher.last_name)},
        )
        for teacher in session.scalars(query.order_by(Teacher.last_name, Teacher.first_name))
    ]


def recipients_by_ids(session: Session, kind: str, ids: Iterable[int]) -> list[Recipient]:
    who = TEACHERS if kind == "teacher" else GUARDIANS
    return resolve(session, Audience(who=who, ids=tuple(ids)))
