"""Field checks shared by the edit dialogs, the CSV importer and the services.

Each `parse_*` turns what a person typed into a value or raises `ValueError` with a sentence that
says what is wrong and how to write it; each `check_*` returns that sentence or None.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import date, time

NAME_MAX = 100
TEXT_MAX = 2000
REF_MAX = 32

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
_PHONE_CHARS = re.compile(r"^\+?[0-9 ()./-]+$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def check_required(value: str, label: str, max_len: int = NAME_MAX) -> str | None:
    if not value.strip():
        return f"{label} is required."
    return check_length(value, label, max_len)


def check_length(value: str, label: str, max_len: int) -> str | None:
    if len(value) > max_len:
        return f"{label} is {len(value)} characters long; the most is {max_len}."
    return None


def check_email(value: str) -> str | None:
    if not value:
        return None
    if len(value) > 254 or not _EMAIL.match(value):
        return f"{value!r} is not an e-mail address like name@example.org."
    return None


def check_phone(value: str) -> str | None:
    if not value:
        return None
    digits = sum(ch.isdigit() for ch in value)
    if not _PHONE_CHARS.match(value) or not 7 <= digits <= 15:
        return f"{value!r} is not a phone number like +263 77 123 4567."
    return None


def check_ref(value: str) -> str | None:
    if not value:
        return None
    if len(value) > REF_MAX or not _REF.match(value):
        return (
            f"{value!r} is not a usable reference: use up to {REF_MAX} letters, digits, "
            "dots, dashes or slashes, like S-0042."
        )
    return None


def check_timezone(value: str) -> str | None:
    if not value:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{value!r} is not a time zone name such as Africa/Harare or Europe/London."
    return None


def parse_date(text: str) -> date:
    value = text.strip()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date written as YYYY-MM-DD, like 2014-03-07."
        ) from None


def parse_time(text: str) -> time:
    value = text.strip()
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value)
    if not match:
        raise ValueError(f"{value!r} is not a time written as HH:MM (24-hour), like 14:30.")
    return time(int(match.group(1)), int(match.group(2)))


def parse_positive_int(text: str, label: str, maximum: int) -> int:
    value = text.strip()
    if not value.isdigit() or int(value) == 0:
        raise ValueError(f"{label} must be a whole number above zero, not {value!r}.")
    number = int(value)
    if number > maximum:
        raise ValueError(f"{label} must be at most {maximum}, not {number}.")
    return number


def parse_bool(text: str, label: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "y", "true", "1"):
        return True
    if value in ("no", "n", "false", "0", ""):
        return False
    raise ValueError(f"{label} must be yes or no, not {text.strip()!r}.")
