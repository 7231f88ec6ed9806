"""Wall-clock times: what a person means by "Monday at 14:00" in a given time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo


def wall_time(day: date, at: time, zone: ZoneInfo) -> datetime | None:
    """`day at` on the clocks of `zone`, or None when the clocks skip that time (DST gap).
    A time the clocks show twice (DST fold) means the first of the two."""
    local = datetime.combine(day, at, tzinfo=zone)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return local


def skipped_time(day: date, at: time, zone: ZoneInfo) -> str:
    """The sentence for a time `wall_time` refused."""
    return (
        f"{day.isoformat()} {at:%H:%M} does not exist in {zone.key} because the clocks go "
        "forward then; choose a time outside that hour."
    )
