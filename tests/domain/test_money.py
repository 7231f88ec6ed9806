"""Money is exact: integer minor units with each currency's ISO 4217 exponent."""

from __future__ import annotations

import pytest

from app.domain.money import Money, MoneyError, exponent


@pytest.mark.parametrize(("currency", "places"), [("USD", 2), ("JPY", 0), ("BHD", 3), ("ZWG", 2)])
def test_each_currency_has_its_iso_exponent(currency: str, places: int) -> None:
    assert exponent(currency) == places


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("1250.50", "USD", 125050),
        ("1,250.5", "USD", 125050),
        ("700", "JPY", 700),
        ("1.234", "BHD", 1234),
    ],
)
def test_amounts_are_read_as_people_type_them(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency).minor == minor


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("10.005", "USD", "too many decimals"),
        ("10.5", "JPY", "no decimals"),
        ("-5", "USD", "negative"),
        ("0", "USD", "more than zero"),
        ("", "USD", "Enter an amount"),
        ("ten", "USD", "not an amount"),
        ("1e400", "USD", "not"),
        ("10", "XXX", "not a currency"),
        ("99999999999999999", "USD", "not a believable amount"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(text: str, currency: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        Money.parse(text, currency)


def test_amounts_format_in_the_schools_locale() -> None:
    assert Money(125050, "USD").format("en_US") == "$1,250.50"
    assert Money(125050, "ZWG").format("en_ZW") == "ZWG1,250.50"


def test_different_currencies_never_add_up() -> None:
    with pytest.raises(MoneyError, match="Cannot combine"):
        Money(100, "USD") + Money(100, "ZWG")


def test_money_refuses_floats() -> None:
    with pytest.raises(MoneyError):
        Money(10.5, "USD")  # type: ignore[arg-type]
