"""Money as an integer of minor units and an ISO 4217 code; never a float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from babel.numbers import NumberFormatError, format_currency, format_decimal, parse_decimal

from app.domain.currencies import EXPONENTS
from app.domain.errors import SwitchboardError

# 10^15 minor units is far beyond any school's sums and still exact in a JSON double.
MAX_MINOR = 10**15


class MoneyError(SwitchboardError):
    """An amount or currency that cannot be money."""


def is_known_currency(code: str) -> bool:
    return code in EXPONENTS


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise MoneyError(
            f"{currency!r} is not a currency Switchboard knows; use an ISO 4217 code such as "
            "USD, EUR or ZWG."
        ) from None


def _typed(amount: Decimal, places: int, locale: str) -> str:
    pattern = "0." + "0" * places if places else "0"
    return format_decimal(amount, format=pattern, locale=locale, decimal_quantization=True)


@dataclass(frozen=True)
class Money:
    """An exact amount: `minor` units (cents, thebe, ...) of `currency`."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise MoneyError(
                f"An amount of money must be a whole number of minor units: {self.minor!r}."
            )
        exponent(self.currency)
        if abs(self.minor) > MAX_MINOR:
            raise MoneyError(
                f"{self.minor} minor units of {self.currency} is not a believable amount."
            )

    @classmethod
    def parse(
        cls, text: str, currency: str, *, locale: str = "en_US", allow_zero: bool = False
    ) -> Money:
        """Read an amount as a person types it ("1,250.50" in en_US), refusing more decimals
        than the currency has, negative amounts and (unless allowed) zero."""
        places = exponent(currency)
        cleaned = text.strip()
        if not cleaned:
            raise MoneyError("Enter an amount.")
        example = _typed(Decimal("1250.50"), places, locale)
        not_an_amount = f"{cleaned!r} is not an amount; write it like {example}."
        try:
            value = parse_decimal(cleaned, locale=locale, strict=True)
        except (NumberFormatError, InvalidOperation, ValueError):
            raise MoneyError(not_an_amount) from None
        if not value.is_finite():
            raise MoneyError(not_an_amount)
        if value < 0:
            raise MoneyError(f"{cleaned} is negative; enter the amount without a minus sign.")
        if value == 0 and not allow_zero:
            raise MoneyError("The amount must be more than zero.")
        scaled = value.scaleb(places)
        if scaled != scaled.to_integral_value():
            unit = "no decimals" if places == 0 else f"at most {places} decimals"
            raise MoneyError(f"{cleaned} has too many decimals: {currency} amounts have {unit}.")
        minor = int(scaled)
        if minor > MAX_MINOR:
            raise MoneyError(f"{cleaned} {currency} is not a believable amount; check the zeros.")
        return cls(minor, currency)

    @property
    def amount(self) -> Decimal:
        return Decimal(self.minor).scaleb(-exponent(self.currency))

    def for_input(self, locale: str = "en_US") -> str:
        """The amount as a person would type it in this locale: "1250.50", or "1250,50" in
        de_DE; no grouping, no currency sign, exactly the currency's decimals."""
        return _typed(self.amount, exponent(self.currency), locale)

    def format(self, locale: str = "en_US") -> str:
        return format_currency(self.amount, self.currency, locale=locale)

    def __str__(self) -> str:
        """Locale-neutral, for messages and logs: "EUR 1250.50"."""
        return f"{self.currency} {self.for_input()}"

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor - other.minor, self.currency)

    def __mul__(self, factor: int) -> Money:
        if isinstance(factor, bool) or not isinstance(factor, int):
            return NotImplemented
        return Money(self.minor * factor, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise MoneyError(f"Cannot combine {self.currency} and {other.currency} amounts.")
