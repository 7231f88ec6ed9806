"""Exchange-rate sources (the `RatesSource` capability): the European Central Bank's daily
reference rates, and Open Exchange Rates (an API key; Fixer answers in the same shape).

A source answers a `RateSheet`: on which day, against which base currency, how many units of
each currency one unit of the base buys. Rates are exact decimals as published, never floats.

Relied on: the ECB's "Euro foreign exchange reference rates" (ecb.europa.eu, /stats/eurofxref/
eurofxref-daily.xml: a gesmes envelope whose Cube elements carry `time`, then `currency` and
`rate`; published around 16:00 CET on working days), and Open Exchange Rates' API docs
(docs.openexchangerates.org: /api/latest.json, `Authorization: Token <app id>`, answers
`{"timestamp", "base", "rates"}`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, runtime_checkable

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from app.domain.money import is_known_currency
from app.providers.base import Provider
from app.providers.http import ProviderError, ResilientClient
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    RatePolicy,
    ResiliencePolicy,
)

RATES = "rates"  # the capability's name in a spec's `capabilities`
ECB_URL = "https://www.ecb.europa.eu"
OXR_URL = "https://openexchangerates.org"
ECB_DAILY = Operation("eurofxref-daily", "GET", "/stats/eurofxref/eurofxref-daily.xml")
OXR_LATEST = Operation("latest", "GET", "/api/latest.json")
ECB_NAMESPACE = "{http://www.ecb.int/vocabulary/2002-08-01/eurofxref}"


class RatesUnreadable(ProviderError):
    """A rates source answered something that is not a sheet of rates."""

    error_class = "unreadable"


@dataclass(frozen=True)
class RateSheet:
    base: str
    on: date
    rates: Mapping[str, Decimal]  # units of each currency per one unit of `base`


@runtime_checkable
class RatesSource(Protocol):
    async def latest(self) -> RateSheet: ...


def _rate(text: object, currency: str) -> Decimal:
    try:
        rate = Decimal(str(text))
    except InvalidOperation:
        raise ValueError(f"the rate for {currency} is not a number") from None
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"the rate for {currency} is not a positive number")
    return rate


def parse_ecb(xml: bytes) -> RateSheet:
    """The ECB's daily XML; ValueError when it is not one."""
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise ValueError(f"not readable XML ({exc})") from None
    day = next((cube for cube in root.iter(f"{ECB_NAMESPACE}Cube") if cube.get("time")), None)
    if day is None:
        raise ValueError("no dated Cube in the ECB's answer")
    try:
        on = date.fromisoformat(str(day.get("time")))
    except ValueError:
        raise ValueError("the ECB's date is not a date") from None
    rates: dict[str, Decimal] = {}
    for cube in day:
        currency = str(cube.get("currency", "")).upper()
        if is_known_currency(currency):
            rates[currency] = _rate(cube.get("rate"), currency)
    if not rates:
        raise ValueError("the ECB's answer has no rates")
    return RateSheet("EUR", on, rates)


def parse_oxr(body: bytes) -> RateSheet:
    """Open Exchange Rates' (or Fixer's) latest.json; ValueError when it is not one."""
    try:
        data: Any = json.loads(body, parse_float=Decimal, parse_int=Decimal)
    except ValueError:
        raise ValueError("not readable JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("rates"), dict):
        raise ValueError("no rates in the answer")
    base = str(data.get("base", "")).upper()
    if not is_known_currency(base):
        raise ValueError(f"the base {base!r} is not a currency")
    if "date" in data:  # Fixer
        on = date.fromisoformat(str(data["date"]))
    else:
        on = datetime.fromtimestamp(int(data.get("timestamp", 0)), UTC).date()
    rates = {
        code.upper(): _rate(value, code)
        for code, value in data["rates"].items()
        if is_known_currency(str(code).upper()) and str(code).upper() != base
    }
    if not rates:
        raise ValueError("the answer has no rates")
    return RateSheet(base, on, rates)


class EcbRates(Provider):
    async def latest(self) -> RateSheet:
        return await _sheet(self, ECB_DAILY, parse_ecb)


class OpenExchangeRates(Provider):
    async def latest(self) -> RateSheet:
        return await _sheet(self, OXR_LATEST, parse_oxr)


async def _sheet(provider: Provider, operation: Operation, parse: Any) -> RateSheet:
    response = await provider.call(operation)
    if response.status_code >= 400:
        raise ProviderError(
            f"{provider.spec.name} answered HTTP {response.status_code} when asked for rates.",
            status=response.status_code,
        )
    try:
        sheet: RateSheet = parse(response.content)
    except ValueError as exc:
        raise RatesUnreadable(f"{provider.spec.name}'s rates could not be read: {exc}.") from None
    return sheet


def _ecb(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return EcbRates(spec, client, config, secrets)


def _oxr(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return OpenExchangeRates(spec, client, config, secrets)


ADDRESS = ConfigField(
    "api_url",
    "Address (advanced)",
    FieldKind.URL,
    required=False,
    help="Leave empty to use the source's own address.",
)

ECB = ProviderSpec(
    key="ecb-rates",
    name="European Central Bank rates",
    category=Category.RATES,
    description=(
        "The euro reference rates the European Central Bank publishes every working day, free "
        "and without an account (about 30 currencies; for others, use Open Exchange Rates)."
    ),
    fields=(ADDRESS,),
    auth=AuthKind.NONE,
    capabilities=frozenset({RATES}),
    health=ECB_DAILY,
    base_url=lambda config: str(config.get("api_url") or ECB_URL),
    factory=_ecb,
    policy=ResiliencePolicy(timeout=20.0, rate=RatePolicy(requests=1, per_seconds=1)),
    health_interval=3600.0,
)

OPEN_EXCHANGE_RATES = ProviderSpec(
    key="openexchangerates",
    name="Open Exchange Rates",
    category=Category.RATES,
    description=(
        "Rates for about 170 currencies, the Zimbabwe Gold and the Zambian kwacha included, "
        "with an App ID from openexchangerates.org (the free plan is enough)."
    ),
    fields=(
        ConfigField("app_id", "App ID", FieldKind.SECRET, help="From your account's App IDs."),
        ADDRESS,
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset({RATES}),
    health=OXR_LATEST,
    base_url=lambda config: str(config.get("api_url") or OXR_URL),
    factory=_oxr,
    policy=ResiliencePolicy(timeout=20.0, rate=RatePolicy(requests=1, per_seconds=1)),
    headers=lambda _config, secrets: {"Authorization": f"Token {secrets.get('app_id', '')}"},
    health_interval=3600.0,
)
