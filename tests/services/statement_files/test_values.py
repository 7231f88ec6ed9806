"""Amounts and dates as files write them: exact minor units, and no guessing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.services.statement_files.values import (
    DateOrder,
    ValueProblem,
    read_amount,
    read_date,
    read_zone,
    uses_decimal_comma,
)


@pytest.mark.parametrize(
    ("written", "currency", "comma", "minor"),
    [
        ("1234.56", "USD", False, 123456),
        ("1,234.56", "USD", False, 123456),
        ("-1,234.56", "USD", False, -123456),
        ("(12.00)", "USD", False, -1200),
        ("12.00-", "USD", False, -1200),
        ("+3", "USD", False, 300),
        (".50", "USD", False, 50),
        ("$1,234.50", "USD", False, 123450),
        ("$-5.00", "USD", False, -500),
        ("\u22125.00", "EUR", False, -500),  # the typographic minus
        ("EUR 12.00", "EUR", False, 1200),
        ("1'234.50", "CHF", False, 123450),
        ("1.234,56", "EUR", True, 123456),
        ("1 234,56", "EUR", True, 123456),
        ("-4,90", "EUR", True, -490),
        ("5000", "JPY", False, 5000),
        ("5,000", "JPY", False, 5000),
        ("12.345", "KWD", False, 12345),
        ("0.00", "USD", False, 0),
    ],
)
def test_amounts_become_exact_minor_units(
    written: str, currency: str, comma: bool, minor: int
) -> None:
    assert read_amount(written, currency, decimal_comma=comma) == minor


@pytest.mark.parametrize(
    ("written", "currency", "comma", "reason"),
    [
        ("12,3x", "USD", False, "the amount '12,3x' is not a number"),
        ("1,23", "USD", False, "the amount '1,23' is not a number"),
        ("1.2.3", "USD", False, "the amount '1.2.3' is not a number"),
        ("1E+03", "USD", False, "the amount '1E+03' is not a number"),
        ("NaN", "USD", False, "the amount 'NaN' is not a number"),
        ("1,234.56", "EUR", True, "the amount '1,234.56' is not a number"),
        ("1.5", "JPY", False, "the amount '1.5' has more decimals than JPY has (no decimals)"),
        ("1.0001", "KWD", False, "the amount '1.0001' has more decimals than KWD has (3 decimals)"),
        (
            "10000000000000.01",
            "USD",
            False,
            "the amount '10000000000000.01' is too large to be real; check the zeros",
        ),
        ("", "USD", False, "the amount is empty"),
    ],
)
def test_amounts_that_are_not_money_are_refused_with_the_reason(
    written: str, currency: str, comma: bool, reason: str
) -> None:
    with pytest.raises(ValueProblem) as caught:
        read_amount(written, currency, decimal_comma=comma)

    assert str(caught.value) == reason


def test_a_decimal_comma_is_recognised_from_the_amounts_themselves() -> None:
    assert uses_decimal_comma(["", "80,00", "1.200,00"])
    assert uses_decimal_comma(["1.234.567,5"])
    assert not uses_decimal_comma(["1,250.00"])
    assert not uses_decimal_comma(["5,000", "12.5"])
    assert not uses_decimal_comma(["5,000"])  # no evidence: the decimal point


@pytest.mark.parametrize(
    ("written", "order", "expected"),
    [
        ("2026-01-31", DateOrder.AUTO, datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("2026/01/31", DateOrder.AUTO, datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("20260131", DateOrder.AUTO, datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("31/01/2026", DateOrder.AUTO, datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("01/31/2026", DateOrder.AUTO, datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("02/03/2026", DateOrder.DMY, datetime(2026, 3, 2, 12, tzinfo=UTC)),
        ("02/03/2026", DateOrder.MDY, datetime(2026, 2, 3, 12, tzinfo=UTC)),
        ("02.03.2026", DateOrder.AUTO, datetime(2026, 3, 2, 12, tzinfo=UTC)),
        ("2.3.26", DateOrder.AUTO, datetime(2026, 3, 2, 12, tzinfo=UTC)),
        ("31 January 2026", DateOrder.AUTO, datetime(2026, 1, 31, 12, tzinfo=UTC)),
        ("Sept 3, 2026", DateOrder.AUTO, datetime(2026, 9, 3, 12, tzinfo=UTC)),
        ("2026-01-31T14:05:00Z", DateOrder.AUTO, datetime(2026, 1, 31, 14, 5, tzinfo=UTC)),
        ("2026-01-31 14:05:00-08:00", DateOrder.AUTO, datetime(2026, 1, 31, 22, 5, tzinfo=UTC)),
        ("2026-01-31 2:05 PM PST", DateOrder.AUTO, datetime(2026, 1, 31, 22, 5, tzinfo=UTC)),
        ("2026-01-31 12:30 AM +0000", DateOrder.AUTO, datetime(2026, 1, 31, 0, 30, tzinfo=UTC)),
    ],
)
def test_dates_as_files_write_them(written: str, order: DateOrder, expected: datetime) -> None:
    assert read_date(written, order).instant() == expected


UNREADABLE = "is not a date Switchboard can read; write it like 2026-01-31"


@pytest.mark.parametrize(
    ("written", "order", "reason"),
    [
        (
            "03/04/2026",
            DateOrder.AUTO,
            "the date '03/04/2026' could be day/month/year or month/day/year; choose the date "
            "format for this file",
        ),
        (
            "13/13/2026",
            DateOrder.DMY,
            "the date '13/13/2026' is not a date in the form day/month/year",
        ),
        ("2026-02-30", DateOrder.AUTO, f"the date '2026-02-30' {UNREADABLE}"),
        ("31 Foo 2026", DateOrder.AUTO, f"the date '31 Foo 2026' {UNREADABLE}"),
        ("2026-01-31 25:00", DateOrder.AUTO, f"the date '2026-01-31 25:00' {UNREADABLE}"),
        ("yesterday", DateOrder.AUTO, f"the date 'yesterday' {UNREADABLE}"),
    ],
)
def test_dates_that_cannot_be_read_for_sure_are_refused(
    written: str, order: DateOrder, reason: str
) -> None:
    with pytest.raises(ValueProblem) as caught:
        read_date(written, order)

    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("written", "hours"),
    [("PDT", -7), ("PST", -8), ("CET", 1), ("CEST", 2), ("GMT", 0), ("+05:30", 5.5),
     ("GMT-07:00", -7), ("UTC+1", 1), ("-0330", -3.5), ("AEDT", 11)],
)  # fmt: skip
def test_time_zones_by_abbreviation_or_offset(written: str, hours: float) -> None:
    zone = read_zone(written)

    assert zone.utcoffset(None) == timedelta(hours=hours)


def test_a_time_zone_by_its_iana_name_knows_summer_time() -> None:
    paris = read_zone("Europe/Paris")

    assert read_date("2026-01-15 12:00").instant(paris) == datetime(2026, 1, 15, 11, tzinfo=UTC)
    assert read_date("2026-07-15 12:00").instant(paris) == datetime(2026, 7, 15, 10, tzinfo=UTC)


@pytest.mark.parametrize("written", ["IST", "AST", "Mars/Olympus", "+15:00", ""])
def test_ambiguous_and_unknown_time_zones_are_refused(written: str) -> None:
    with pytest.raises(ValueProblem):
        read_zone(written)
