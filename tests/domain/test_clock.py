"""Times people type are wall-clock times in the school's zone, across clock changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from app.domain.clock import skipped_time, wall_time

LONDON = ZoneInfo("Europe/London")


def test_a_time_the_clocks_skip_does_not_exist() -> None:
    # On 29 March 2026 London's clocks go from 01:00 straight to 02:00.
    assert wall_time(date(2026, 3, 29), time(1, 30), LONDON) is None
    assert "clocks go forward" in skipped_time(date(2026, 3, 29), time(1, 30), LONDON)


def test_a_time_the_clocks_show_twice_means_the_first() -> None:
    # On 25 October 2026 London's clocks show 01:00–02:00 twice (BST, then GMT).
    moment = wall_time(date(2026, 10, 25), time(1, 30), LONDON)
    assert moment is not None
    assert moment.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_an_ordinary_time_is_that_time_in_the_zone() -> None:
    moment = wall_time(date(2026, 11, 23), time(14, 0), ZoneInfo("Africa/Harare"))
    assert moment is not None
    assert moment.astimezone(UTC) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
