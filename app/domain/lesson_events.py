"""A lesson as its teacher's calendar shows it, and what a change made in the calendar means
for the lesson.

The school owns what a lesson is (its title, room, students and notes): the calendar shows them,
and a teacher's edits to that text are written over with the school's. What a teacher may change
from the calendar is when the lesson is, and whether it takes place: a move or a deletion comes
back as a proposal for the office to accept or reject.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from app.domain.clock import after
from app.domain.school import LessonRecord, LessonStatus, SeriesRecord
from app.domain.sync import EventContent

LESSON = "lesson"  # the local kind of a lesson's sync item
SERIES = "series"  # ... and of a series' (its recurring event)


def lesson_content(lesson: LessonRecord) -> EventContent | None:
    """The lesson's event; None for a cancelled lesson, whose event is deleted."""
    if lesson.status is LessonStatus.CANCELLED:
        return None
    return EventContent(
        start=lesson.starts_at,
        end=lesson.ends_at,
        summary=lesson.title,
        location=lesson.room_name,
        description=_description(lesson.students, lesson.online, lesson.notes),
        online_meeting=lesson.online,
    )


def series_content(series: SeriesRecord) -> EventContent:
    """The series' recurring event: its first lesson, repeating by its rule on the wall clock
    of its time zone (a 17:00 lesson stays at 17:00 when the clocks change)."""
    slot = slot_content(series, series.first_start)
    return replace(slot, recurrence=(f"RRULE:{series.rule}",), timezone=series.timezone)


def slot_content(series: SeriesRecord, original_start: datetime) -> EventContent:
    """One occurrence of the series as the series makes it: what its lesson holds until it is
    changed on its own."""
    return EventContent(
        start=original_start,
        end=after(original_start, series.minutes),
        summary=series.title,
        location=series.room_name,
        description=_description(series.students, series.online, series.notes),
        online_meeting=series.online,
    )


def _description(students: tuple[tuple[int, str], ...], online: bool, notes: str) -> str:
    lines = []
    if students:
        lines.append("Students: " + ", ".join(name for _, name in students))
    if online:
        lines.append("Online lesson")
    if notes:
        lines.append(notes)
    return "\n".join(lines)


@dataclass(frozen=True)
class Times:
    """When a lesson is: what a teacher may change from the calendar."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, content: EventContent) -> Times:
        return cls(content.start, content.end)

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Times:
        return cls(datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"]))


def moved(school: EventContent, calendar: EventContent) -> bool:
    """Whether the calendar has the lesson at another time than the school."""
    return Times.of(school) != Times.of(calendar)


def version(content: EventContent | None) -> dict[str, Any]:
    """One side's version of a lesson, as an issue keeps it for the office to compare: when,
    and what it said (empty: not there, deleted or cancelled)."""
    if content is None:
        return {}
    return {
        **Times.of(content).as_dict(),
        "summary": content.summary,
        "location": content.location,
        "description": content.description,
    }
