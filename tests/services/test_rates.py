"""Exchange rates from the ECB's daily XML and Open Exchange Rates, kept with their day, and
conversions that say which rate they used."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest

from app.domain.errors import SwitchboardError
from app.domain.money import Money, MoneyError
from app.providers.rates import parse_ecb
from app.services import Services
from tests.fakes.rates import FakeEcb, FakeOpenExchangeRates
from tests.fakes.server import served

NOV_20 = 1_795_132_800  # 2026-11-20 00:00 UTC


@pytest.fixture
def ecb() -> Iterator[str]:
    fake = FakeEcb("2026-11-20", {"USD": "1.0523", "ZAR": "19.0184", "XYZ": "3", "GBP": "0.83205"})
    with served(fake.app) as url:
        yield url


@pytest.fixture
def oxr() -> Iterator[str]:
    fake = FakeOpenExchangeRates("app-123", NOV_20, {"ZWG": 26.78, "EUR": 0.9503, "USD": 1})
    with served(fake.app) as url:
        yield url


async def connect_ecb(services: Services, url: str) -> None:
    await services.connections.add("ecb-rates", "ECB", {"api_url": url}, {})


@pytest.mark.asyncio
async def test_ecb_rates_are_kept_and_convert_directly_inverted_and_across(
    services: Services, ecb: str
) -> None:
    await connect_ecb(services, ecb)
    assert await services.rates.refresh() == {"ECB": "3 rates of 20 Nov 2026"}  # XYZ ignored
    to_usd = await services.rates.convert(Money(100_00, "EUR"), "USD")
    assert to_usd.converted == Money(105_23, "USD")
    assert to_usd.explain() == "1 EUR = 1.052300 USD (ECB, 20 Nov 2026)"
    back = await services.rates.convert(Money(105_23, "USD"), "EUR")
    assert back.converted == Money(100_00, "EUR")
    across = await services.rates.convert(Money(1_000_00, "USD"), "ZAR")
    assert across.rate == Decimal("19.0184") / Decimal("1.0523")
    assert across.converted == Money(18_073_17, "ZAR")  # 18 073.1730…, rounded half up


@pytest.mark.asyncio
async def test_a_second_refresh_of_the_same_day_keeps_one_copy(
    services: Services, ecb: str
) -> None:
    await connect_ecb(services, ecb)
    await services.rates.refresh()
    await services.rates.refresh()
    converted = await services.rates.convert(Money(100, "EUR"), "GBP")
    assert converted.converted == Money(83, "GBP")


@pytest.mark.asyncio
async def test_a_rate_from_before_the_day_asked_is_never_one_published_after(
    services: Services, ecb: str
) -> None:
    await connect_ecb(services, ecb)
    await services.rates.refresh()
    with pytest.raises(SwitchboardError, match="No exchange rate from EUR to USD"):
        await services.rates.convert(Money(100, "EUR"), "USD", on=date(2026, 11, 19))


@pytest.mark.asyncio
async def test_open_exchange_rates_with_its_app_id(services: Services, oxr: str) -> None:
    await services.connections.add(
        "openexchangerates", "OXR", {"api_url": oxr}, {"app_id": "app-123"}
    )
    assert await services.rates.refresh() == {"OXR": "2 rates of 20 Nov 2026"}
    converted = await services.rates.convert(Money(50_00, "USD"), "ZWG")
    assert converted.converted == Money(1_339_00, "ZWG")
    assert converted.explain() == "1 USD = 26.780000 ZWG (OXR, 20 Nov 2026)"


@pytest.mark.asyncio
async def test_a_wrong_app_id_is_said_and_other_sources_still_refresh(
    services: Services, oxr: str, ecb: str
) -> None:
    await services.connections.add(
        "openexchangerates", "OXR", {"api_url": oxr}, {"app_id": "wrong"}
    )
    await connect_ecb(services, ecb)
    outcome = await services.rates.refresh()
    assert outcome["ECB"] == "3 rates of 20 Nov 2026"
    assert "HTTP 401" in outcome["OXR"]


@pytest.mark.asyncio
async def test_unknown_currencies_and_missing_rates_are_clear(services: Services) -> None:
    with pytest.raises(MoneyError, match="is not a currency"):
        await services.rates.convert(Money(100, "USD"), "XXY")
    with pytest.raises(SwitchboardError, match="connect a rates source"):
        await services.rates.convert(Money(100, "USD"), "EUR")
    assert (await services.rates.convert(Money(100, "USD"), "USD")).converted == Money(100, "USD")


def test_what_is_not_the_ecb_s_xml_is_refused_in_a_sentence() -> None:
    for body, why in (
        (b"<html>maintenance</html>", "no dated Cube"),
        (b"<not xml", "not readable XML"),
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "not readable XML"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_ecb(body)
