"""Amounts, dates and time zones as statement files write them, read exactly.

Amounts become integer minor units of their currency, never floats: "1,234.50" USD is 123450,
"1.234,50" with a decimal comma is the same, "(12.00)" and "12.00-" are negative. Digit
grouping must be in threes, so "12,3" is refused rather than read as 123. An amount with more
decimals than its currency has is refused unless the extra digits are zeros ("1000.00" JPY).

Dates written with numbers only can be read two ways (03/04/2026); a file writes all its dates
one way, so the order is taken from a date that settles it (25/04/2026), and refused when no
date in the file does and none was chosen. Dotted dates (31.12.2026) are day first wherever
they are written. A date without a time is placed at noon UTC, so it is the same calendar day
in every time zone from UTC-11 to UTC+11 where the office may look at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.domain.money import MAX_MINOR, exponent, is_known_currency

NOON = time(12, 0)


class ValueProblem(ValueError):
    """A cell that cannot be read; the message is the plain reason."""


def shown(text: str, limit: int = 40) -> str:
    """A cell quoted for a message, shortened when long."""
    text = " ".join(text.split())
    return f"'{text}'" if len(text) <= limit else f"'{text[: limit - 1]}…'"


# --- currencies --------------------------------------------------------------------------------


def read_currency(text: str) -> str:
    code = text.strip().upper()
    if not code:
        raise ValueProblem("the currency is empty")
    if not is_known_currency(code):
        raise ValueProblem(
            f"the currency {shown(text)} is not an ISO 4217 code Switchboard knows "
            "(such as USD, EUR, GBP)"
        )
    return code


# --- amounts -----------------------------------------------------------------------------------

_SYMBOLS = "$£€¥₹₦₱₩₪₫฿₺₴₽"
_GROUPING_SPACES = " \u00a0\u202f\u2009'’"
_POINT = re.compile(r"\d+(\.\d+)?|\d{1,3}(,\d{3})+(\.\d+)?|\.\d+")
_COMMA = re.compile(r"\d+(,\d+)?|\d{1,3}(\.\d{3})+(,\d+)?|,\d+")
_MAX_AMOUNT_TEXT = 40


def read_amount(text: str, currency: str, *, decimal_comma: bool = False) -> int:
    """A signed decimal amount in major units, as integer minor units of `currency`."""
    raw = text.strip()
    if not raw:
        raise ValueProblem("the amount is empty")
    not_a_number = ValueProblem(f"the amount {shown(raw)} is not a number")
    if len(raw) > _MAX_AMOUNT_TEXT:
        raise not_a_number
    body = raw.replace("\u2212", "-")  # the typographic minus sign
    negative = False
    if body.startswith("(") and body.endswith(")"):
        negative, body = True, body[1:-1].strip()
    if body.endswith("-"):
        negative, body = not negative, body[:-1].strip()
    elif body.endswith("+"):
        body = body[:-1].strip()
    if body[:1] in "+-":
        negative, body = (not negative) if body[0] == "-" else negative, body[1:].strip()
    if body.upper().startswith(currency) or body.upper().endswith(currency):
        body = body.upper().replace(currency, "").strip()
    body = body.strip(_SYMBOLS).strip()
    if body[:1] in "+-":  # "$-12.00"
        negative, body = (not negative) if body[0] == "-" else negative, body[1:].strip()
    for space in _GROUPING_SPACES:
        body = body.replace(space, "")
    pattern, grouping, point = (_COMMA, ".", ",") if decimal_comma else (_POINT, ",", ".")
    if not pattern.fullmatch(body):
        raise not_a_number
    try:
        value = Decimal(body.replace(grouping, "").replace(point, "."))
    except InvalidOperation:
        raise not_a_number from None
    return _to_minor(-value if negative else value, raw, currency)


def read_minor_units(text: str, currency: str) -> int:
    """An unsigned whole number of minor units, as PayPal's settlement report writes amounts."""
    raw = text.strip()
    if not raw.isdigit() or not raw.isascii():
        raise ValueProblem(f"the amount {shown(raw)} is not a whole number of minor units")
    if len(raw) > _MAX_AMOUNT_TEXT:
        raise ValueProblem(f"the amount {shown(raw)} is too large to be real; check the zeros")
    minor = int(raw)
    if minor > MAX_MINOR:
        raise ValueProblem(f"the amount {shown(raw)} is too large to be real; check the zeros")
    return minor


def _to_minor(value: Decimal, raw: str, currency: str) -> int:
    places = exponent(currency)
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        unit = "no decimals" if places == 0 else f"{places} decimals"
        raise ValueProblem(
            f"the amount {shown(raw)} has more decimals than {currency} has ({unit})"
        )
    minor = int(scaled)
    if abs(minor) > MAX_MINOR:
        raise ValueProblem(f"the amount {shown(raw)} is too large to be real; check the zeros")
    return minor


def uses_decimal_comma(samples: list[str]) -> bool:
    """Whether amounts written by a program that did not say are "1.234,56" rather than
    "1,234.56": decided by an amount with one or two digits after a comma, or with a dot
    followed by three digits and a comma."""
    for sample in samples:
        body = sample.strip()
        if re.search(r",\d{1,2}\)?-?$", body) or re.search(r"\.\d{3},", body):
            return True
        if re.search(r"\.\d{1,2}\)?-?$", body) or re.search(r",\d{3}\.", body):
            return False
    return False


# --- time zones --------------------------------------------------------------------------------

# Abbreviations as PayPal and banks print them. Each names one offset: "PDT" is always UTC-7,
# whichever day it is. Ambiguous ones (IST: India, Ireland or Israel; AST: Atlantic or Arabia;
# BST: British or Bangladesh is taken as British, the only one PayPal prints) are left out, so
# they are refused instead of guessed. CST is US Central, as PayPal's US accounts write it.
_ZONE_HOURS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 1, "BST": 1, "CET": 1, "CEST": 2, "MET": 1,
    "MEST": 2, "EET": 2, "EEST": 3, "MSK": 3, "TRT": 3, "GST": 4, "PKT": 5, "ICT": 7, "WIB": 7,
    "SGT": 8, "HKT": 8, "AWST": 8, "PHT": 8, "JST": 9, "KST": 9, "ACST": 9.5, "ACDT": 10.5,
    "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13, "HST": -10, "AKST": -9, "AKDT": -8,
    "PST": -8, "PDT": -7, "MST": -7, "MDT": -6, "CST": -6, "CDT": -5, "EST": -5, "EDT": -4,
    "NST": -3.5, "NDT": -2.5, "BRT": -3, "ART": -3, "SAST": 2, "WAT": 1, "CAT": 2, "EAT": 3,
}  # fmt: skip
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?")


def read_zone(text: str) -> tzinfo:
    """A time zone written as an abbreviation ("PDT", "CET"), an offset ("+02:00",
    "GMT-07:00", "-0700") or an IANA name ("Europe/Paris"). Unknown and ambiguous
    abbreviations are refused."""
    raw = text.strip()
    key = raw.upper()
    if "/" in raw and len(raw) <= 64:
        try:
            return ZoneInfo(raw)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if key in _ZONE_HOURS:
        return _fixed(timedelta(hours=_ZONE_HOURS[key]), key)
    match = _OFFSET.fullmatch(key)
    if match:
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if offset <= timedelta(hours=14):
            return _fixed(-offset if sign == "-" else offset, "")
    if not raw:
        raise ValueProblem("the time zone is empty")
    raise ValueProblem(
        f"the time zone {shown(raw)} is not one Switchboard can be sure of; write it as an "
        "offset from UTC such as +01:00, or change the report's time zone"
    )


def _fixed(offset: timedelta, name: str) -> tzinfo:
    if not offset:
        return UTC
    return timezone(offset, name) if name else timezone(offset)


# --- dates -------------------------------------------------------------------------------------


class DateOrder(StrEnum):
    """How a file writes dates with numbers only. AUTO reads ISO dates (2026-01-31), month
    names and dotted dates as they are, and takes day/month order from the file itself."""

    AUTO = "auto"
    YMD = "ymd"
    DMY = "dmy"
    MDY = "mdy"

    @property
    def form(self) -> str:
        return {
            DateOrder.AUTO: "year-month-day",
            DateOrder.YMD: "year-month-day",
            DateOrder.DMY: "day/month/year",
            DateOrder.MDY: "month/day/year",
        }[self]


_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip
_REST = r"(?:(?:[T ]|,\s*)\s*(?P<rest>.+))?"
_ISO_DATE = re.compile(r"(?P<y>\d{4})([-/.])(?P<m>\d{1,2})\2(?P<d>\d{1,2})" + _REST)
_COMPACT_DATE = re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})")
_NUMERIC_DATE = re.compile(
    r"(?P<a>\d{1,2})(?P<sep>[-/.])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})" + _REST
)
_DAY_MONTH_NAME = re.compile(
    r"(?P<d>\d{1,2})[ -](?P<mon>[A-Za-z]{3,9})\.?[ -](?P<y>\d{4}|\d{2})" + _REST
)
_MONTH_NAME_DAY = re.compile(r"(?P<mon>[A-Za-z]{3,9})\.? (?P<d>\d{1,2}),? (?P<y>\d{4})" + _REST)
_TIME = re.compile(
    r"(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,]\d{1,9})?)?\s*(?P<ampm>[AaPp]\.?[Mm]\.?)?"
    r"\s*(?P<zone>Z|[+-]\d{2}:?\d{2}|[A-Za-z]{2,5}(?:[+-]\d{1,2}(?::?\d{2})?)?)?"
)  # fmt: skip


@dataclass(frozen=True)
class WrittenDate:
    """A date (and maybe a time and zone) as read from a cell, before a zone is chosen."""

    day: date
    clock: time | None = None
    zone: tzinfo | None = None

    def instant(self, zone: tzinfo | None = None) -> datetime:
        """When it was: exact when the cell or `zone` says the zone; otherwise noon UTC of
        its date, since a time without a zone does not say which day it was everywhere."""
        if self.clock is not None and (self.zone or zone) is not None:
            return datetime.combine(self.day, self.clock, self.zone or zone).astimezone(UTC)
        return datetime.combine(self.day, NOON, UTC)


def numeric_order(text: str) -> DateOrder | None:
    """The order a numeric date must have been written in, when the date itself says:
    25/04/2026 is day first, 04/25/2026 month first, 31.12.2026 day first by convention."""
    match = _NUMERIC_DATE.fullmatch(text.strip())
    if not match:
        return None
    a, b = int(match["a"]), int(match["b"])
    if match["sep"] == "." or (a > 12 >= b):
        return DateOrder.DMY
    if b > 12 >= a:
        return DateOrder.MDY
    return None


def file_order(texts: list[str]) -> tuple[DateOrder | None, str]:
    """The day/month order a file's dates settle on, and a cell that shows it; None with ""
    when no date settles it, and None with a reason when two dates disagree."""
    found: dict[DateOrder, str] = {}
    for text in texts:
        order = numeric_order(text)
        if order is not None:
            found.setdefault(order, text)
    if len(found) > 1:
        return None, (
            f"the dates {shown(found[DateOrder.DMY])} and {shown(found[DateOrder.MDY])} are "
            "written in different orders (day first and month first)"
        )
    if found:
        ((order, _),) = found.items()
        return order, ""
    return None, ""


def read_date(text: str, order: DateOrder = DateOrder.AUTO) -> WrittenDate:
    """A date, with an optional time ("14:05", "2:05 PM", "14:05:00Z", "14:05 +01:00")."""
    raw = text.strip()
    if not raw:
        raise ValueProblem("the date is empty")
    wrong = ValueProblem(_not_a_date(raw, order))
    if len(raw) > 60:
        raise wrong
    day: date | None = None
    rest: str | None = None
    try:
        if match := _ISO_DATE.fullmatch(raw):
            day = date(int(match["y"]), int(match["m"]), int(match["d"]))
            rest = match["rest"]
        elif match := _COMPACT_DATE.fullmatch(raw):
            day = date(int(match["y"]), int(match["m"]), int(match["d"]))
        elif match := _NUMERIC_DATE.fullmatch(raw):
            a, b, year = int(match["a"]), int(match["b"]), _year(match["y"])
            chosen = order
            if chosen in (DateOrder.AUTO, DateOrder.YMD):
                settled = numeric_order(raw)
                if settled is None:
                    raise ValueProblem(
                        f"the date {shown(raw)} could be day/month/year or month/day/year; "
                        "choose the date format for this file"
                    )
                chosen = settled
            day = date(year, b, a) if chosen is DateOrder.DMY else date(year, a, b)
            rest = match["rest"]
        elif (match := _DAY_MONTH_NAME.fullmatch(raw)) or (match := _MONTH_NAME_DAY.fullmatch(raw)):
            month = _MONTHS.get(match["mon"].lower())
            if month is None:
                raise wrong
            day = date(_year(match["y"]), month, int(match["d"]))
            rest = match["rest"]
    except ValueError as error:
        if isinstance(error, ValueProblem):
            raise
        raise wrong from None
    if day is None:
        raise wrong
    if rest is None:
        return WrittenDate(day)
    clock, zone = read_time(rest, whole=raw, order=order)
    return WrittenDate(day, clock, zone)


def read_time(
    text: str, *, whole: str = "", order: DateOrder = DateOrder.AUTO
) -> tuple[time, tzinfo | None]:
    """A time of day with an optional zone ("14:05:33", "2:05 PM", "10:00:00-07:00")."""
    match = _TIME.fullmatch(text.strip())
    wrong = ValueProblem(
        _not_a_date(whole, order) if whole else f"the time {shown(text)} is not a time of day"
    )
    if not match:
        raise wrong
    hour, minute, second = int(match["h"]), int(match["mi"]), int(match["s"] or 0)
    if match["ampm"]:
        if not 1 <= hour <= 12:
            raise wrong
        hour = hour % 12 + (12 if match["ampm"][0].lower() == "p" else 0)
    try:
        clock = time(hour, minute, second)
    except ValueError:
        raise wrong from None
    zone = read_zone(match["zone"]) if match["zone"] else None
    return clock, zone


def _year(text: str) -> int:
    return int(text) if len(text) == 4 else 2000 + int(text)


def _not_a_date(raw: str, order: DateOrder) -> str:
    if order in (DateOrder.DMY, DateOrder.MDY):
        return f"the date {shown(raw)} is not a date in the form {order.form}"
    return f"the date {shown(raw)} is not a date Switchboard can read; write it like 2026-01-31"


def read_utc_timestamp(text: str) -> datetime:
    """A timestamp in a column that is UTC by its name ("created_utc", "Created (UTC)"):
    "2026-01-31 14:05:00", "2026-01-31T14:05:00Z" or a date alone."""
    if not _ISO_DATE.fullmatch(text.strip()):
        if not text.strip():
            raise ValueProblem("the date is empty")
        raise ValueProblem(
            f"the date {shown(text)} is not in the form 2026-01-31 14:05:00; download the "
            "report again rather than a copy a spreadsheet re-saved"
        )
    written = read_date(text, DateOrder.YMD)
    if written.clock is None:
        return written.instant()
    return datetime.combine(written.day, written.clock, written.zone or UTC).astimezone(UTC)
