"""An administrator's routing rule as it is typed in the editor or on the command line: which
payments it is about (currency, method, payer's country, an amount band) and the gateways
allowed to take them, in order of preference. Rules are checked top to bottom; the first that
matches a payment decides (app/domain/routing.py `Rule`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.domain.errors import FieldError
from app.domain.money import Money, MoneyError, is_known_currency
from app.domain.routing import Rule

METHOD_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
NOTE_MAX = 200


@dataclass(frozen=True)
class RuleDraft:
    gateways: tuple[int, ...]  # connection ids, the preferred first
    currency: str = ""
    method: str = ""
    country: str = ""
    min_amount: str = ""  # as typed, in the rule's currency
    max_amount: str = ""
    note: str = ""
    locale: str = "en_US"

    def problems(self) -> list[FieldError]:
        errors: list[FieldError] = []
        if self.currency and not is_known_currency(self.currency):
            errors.append(
                FieldError("currency", f"{self.currency!r} is not an ISO 4217 currency code.")
            )
        if self.method and not METHOD_PATTERN.fullmatch(self.method):
            errors.append(
                FieldError("method", "A method is a short lower-case word like card or ach.")
            )
        if self.country and not re.fullmatch(r"[A-Z]{2}", self.country):
            errors.append(
                FieldError("country", "A country is its two-letter code, like ZW, DE or US.")
            )
        errors += self._band_problems()
        if not self.gateways:
            errors.append(FieldError("gateways", "Choose at least one gateway."))
        if len(set(self.gateways)) != len(self.gateways):
            errors.append(FieldError("gateways", "The same gateway is listed twice."))
        if len(self.note) > NOTE_MAX:
            errors.append(FieldError("note", f"The note is longer than {NOTE_MAX} characters."))
        return errors

    def _band_problems(self) -> list[FieldError]:
        if not (self.min_amount.strip() or self.max_amount.strip()):
            return []
        if not self.currency:
            return [FieldError("currency", "An amount band needs a currency.")]
        if not is_known_currency(self.currency):
            return []  # said above
        errors: list[FieldError] = []
        band: list[int | None] = []
        for name, text in (("min_amount", self.min_amount), ("max_amount", self.max_amount)):
            if not text.strip():
                band.append(None)
                continue
            try:
                band.append(Money.parse(text, self.currency, locale=self.locale).minor)
            except MoneyError as exc:
                errors.append(FieldError(name, str(exc)))
                band.append(None)
        low, high = band
        if low is not None and high is not None and low > high:
            errors.append(FieldError("max_amount", "The highest amount is below the lowest."))
        return errors

    def band(self) -> tuple[int | None, int | None]:
        """The amount band in minor units (call after `problems()` found none)."""

        def minor(text: str) -> int | None:
            if not text.strip():
                return None
            return Money.parse(text, self.currency, locale=self.locale).minor

        return minor(self.min_amount), minor(self.max_amount)


@dataclass(frozen=True)
class RoutingRule:
    """A saved rule, with its place in the order (0 is checked first)."""

    id: int
    position: int
    gateways: tuple[int, ...]
    currency: str
    method: str
    country: str
    min_minor: int | None
    max_minor: int | None
    note: str

    def as_rule(self) -> Rule:
        return Rule(
            gateways=tuple(str(gateway) for gateway in self.gateways),
            currency=self.currency,
            method=self.method,
            country=self.country,
            min_minor=self.min_minor,
            max_minor=self.max_minor,
        )

    def conditions(self, locale: str = "en_US") -> str:
        """Which payments it is about, in words: "EUR card payments from €500.00"."""
        parts = [self.currency, self.method or "", "payments"]
        text = " ".join(part for part in parts if part)
        if self.country:
            text += f" by payers in {self.country}"
        if self.min_minor is not None:
            text += f" from {Money(self.min_minor, self.currency).format(locale)}"
        if self.max_minor is not None:
            text += f" up to {Money(self.max_minor, self.currency).format(locale)}"
        return text if text != "payments" else "every payment"
