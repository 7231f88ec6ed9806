"""Lessons that repeat every week: one lesson per week on the school's wall clock, whatever the
clocks do meanwhile, each linked to its series with the start it has there; all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.domain.errors import ValidationFailed
from app.domain.school import LessonDraft, TeacherDraft
from app.services import Services


@pytest.mark.parametrize(
    ("zone", "first", "utc_before", "utc_after"),
    [
        # Europe/London: BST begins on Sunday 28 March 2027.
        ("Europe/London", datetime(2027, 3, 15, 17, 0), 17, 16),
        # America/New_York: EDT begins on Sunday 14 March 2027.
        ("America/New_York", datetime(2027, 3, 1, 17, 0), 22, 21),
    ],
)
async def test_a_weekly_lesson_keeps_its_wall_clock_time_when_the_clocks_change(
    services: Services, zone: str, first: datetime, utc_before: int, utc_after: int
) -> None:
    await services.settings.set("school.timezone", zone)
    teacher = await services.school.save_teacher(TeacherDraft("Ann", "Dube"))
    start = first.replace(tzinfo=ZoneInfo(zone))

    lessons = await services.school.save_series(
        LessonDraft("Piano", teacher.id, start, start + timedelta(minutes=45)), weeks=4
    )

    assert len(lessons) == 4
    assert {lesson.series_id for lesson in lessons} == {lessons[0].series_id}
    for lesson in lessons:
        local = lesson.starts_at.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute, local.weekday()) == (17, 0, first.weekday())
        assert lesson.original_start == lesson.starts_at
        assert lesson.duration == timedelta(minutes=45)
    hours = [lesson.starts_at.astimezone(UTC).hour for lesson in lessons]
    assert hours[0] == utc_before
    assert hours[-1] == utc_after


async def test_a_series_that_would_double_book_is_refused_whole_naming_the_weeks(
    services: Services,
) -> None:
    await services.settings.set("school.timezone", "Africa/Harare")
    teacher = await services.school.save_teacher(TeacherDraft("Ann", "Dube"))
    zone = ZoneInfo("Africa/Harare")
    taken = datetime(2027, 2, 15, 15, tzinfo=zone)  # the third Monday
    await services.school.save_lesson(
        LessonDraft("Theory", teacher.id, taken, taken + timedelta(hours=1))
    )
    start = datetime(2027, 2, 1, 15, tzinfo=zone)

    with pytest.raises(ValidationFailed, match=r"Week 3 \(Mon 15 Feb\): Ann Dube already teaches"):
        await services.school.save_series(
            LessonDraft("Piano", teacher.id, start, start + timedelta(hours=1)), weeks=6
        )

    lessons = await services.school.lessons(start, start + timedelta(weeks=7))
    assert [lesson.title for lesson in lessons] == ["Theory"]  # nothing of the series kept


async def test_a_series_repeats_for_two_to_sixty_weeks(services: Services) -> None:
    teacher = await services.school.save_teacher(TeacherDraft("Ann", "Dube"))
    start = datetime(2027, 2, 1, 15, tzinfo=UTC)
    draft = LessonDraft("Piano", teacher.id, start, start + timedelta(hours=1))

    for weeks in (1, 61):
        with pytest.raises(ValidationFailed, match="2 to 60 weeks"):
            await services.school.save_series(draft, weeks=weeks)
