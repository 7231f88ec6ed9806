"""Wall-clock times: what a person means by "Monday at 14:00" in a given time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def wall_time(day: date, at: time, zone: ZoneInfo) -> datetime | None:
    """`day at` on the clocks of `zone`, or None when the clocks skip that time (DST gap).
    A time the clocks show twice (DST fold) means the first of the two."""
    local = datetime.combine(day, at, tzinfo=zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return local


def today_in(zone: ZoneInfo) -> date:
    """Today's date where the school is, which may not be the computer's own today."""
    return datetime.now(zone).date()


def after(start: datetime, minutes: int) -> datetime:
    """`minutes` of real time after `start`, across any clock change, in `start`'s zone.
    (Adding a timedelta to an aware datetime adds wall-clock time instead.)"""
    return (start.astimezone(UTC) + timedelta(minutes=minutes)).astimezone(start.tzinfo)


def skipped_time(day: date, at: time, zone: ZoneInfo) -> str:
    """The sentence for a time `wall_time` refused."""
    return (
        f"{day.isoformat()} {at:%H:%M} does not exist in {zone.key} because the clocks go "
        "forward then; choose a time outside that hour."
    )
