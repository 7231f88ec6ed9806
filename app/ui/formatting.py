"""How dates, times and money read in the school's locale and time zone (Babel)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton, format_time

from app.domain.money import Money


def money(minor: int, currency: str, locale: str) -> str:
    return Money(minor, currency).format(locale)


def day(value: date, locale: str) -> str:
    """24 Nov 2026, in the locale's order and words."""
    return format_skeleton("yMMMd", value, locale=locale)


def weekday(value: date, locale: str) -> str:
    """Mon 24 Nov, in the locale's order and words."""
    return format_skeleton("MMMEd", value, locale=locale)


def clock(moment: datetime, zone: ZoneInfo, locale: str) -> str:
    return format_time(moment.astimezone(zone), "HH:mm", locale=locale)


def time_range(start: datetime, end: datetime, zone: ZoneInfo, locale: str) -> str:
    return f"{clock(start, zone, locale)}–{clock(end, zone, locale)}"


def totals(pairs: list[tuple[str, int]], locale: str) -> str:
    """Several currencies side by side: "US$1,200.00 · ZWG 32,400.00"."""
    return " · ".join(money(total, currency, locale) for currency, total in pairs) or "—"


def when(moment: datetime | None, zone: ZoneInfo) -> str:
    """A moment in the school's time: the time alone today, the day too otherwise (and the
    year, when not this one)."""
    if moment is None:
        return "—"
    local = moment.astimezone(zone)
    today = datetime.now(UTC).astimezone(zone).date()
    if local.date() == today:
        return f"{local:%H:%M:%S}"
    if local.year == today.year:
        return f"{local:%d %b %H:%M}"
    return f"{local:%d %b %Y %H:%M}"
