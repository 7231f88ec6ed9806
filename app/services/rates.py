"""Exchange rates: fetched from the connected rates sources, kept with the day they were
published, and used to convert amounts with the rate shown.

A conversion uses the latest rate published on or before the day asked for: directly (the
source's base to another currency), inverted, or across the base (USD to ZAR through the
ECB's euro rates). The result is rounded half up to the target currency's minor unit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.domain.errors import SwitchboardError
from app.domain.money import Money, exponent
from app.providers.http import ProviderError
from app.providers.rates import RATES, RateSheet, RatesSource
from app.services.connections import ConnectionService
from app.store.database import Database
from app.store.payments import ExchangeRateRow

log = logging.getLogger("switchboard.rates")


@dataclass(frozen=True)
class Conversion:
    original: Money
    converted: Money
    rate: Decimal  # units of the target per unit of the original's currency
    on: date  # the day the rate was published
    source: str

    def explain(self) -> str:
        """ "1 USD = 0.950300 EUR (European Central Bank rates, 20 Nov 2026)" """
        return (
            f"1 {self.original.currency} = {self.rate:.6f} {self.converted.currency} "
            f"({self.source}, {self.on:%d %b %Y})"
        )


class RatesService:
    def __init__(self, db: Database, connections: ConnectionService) -> None:
        self._db = db
        self._connections = connections

    async def refresh(self) -> dict[str, str]:
        """Fetch and keep the latest rates of every connected source; per source, what came of
        it (a sentence), so one source failing does not stop the others."""
        outcome: dict[str, str] = {}
        for record in await self._connections.connections():
            if RATES not in record.spec.capabilities or record.paused:
                continue
            provider = await self._connections.provider(record.id)
            if not isinstance(provider, RatesSource):
                continue
            try:
                sheet = await provider.latest()
            except ProviderError as exc:
                outcome[record.name] = str(exc)
                log.warning("rates not fetched", extra={"connection": record.id, "why": str(exc)})
                continue
            await self._db.write(_keep, record.id, sheet)
            outcome[record.name] = f"{len(sheet.rates)} rates of {sheet.on:%d %b %Y}"
        return outcome

    async def convert(self, amount: Money, to: str, on: date | None = None) -> Conversion:
        """`amount` in `to`, at the latest rate published on or before `on` (today)."""
        exponent(to)  # an unknown currency is a MoneyError
        if amount.currency == to:
            return Conversion(amount, amount, Decimal(1), on or date.today(), "same currency")
        found = await self._db.read(_rate_between, amount.currency, to, on or date.today())
        if found is None:
            raise SwitchboardError(
                f"No exchange rate from {amount.currency} to {to} is known yet; connect a rates "
                "source (the European Central Bank's is free) and let it fetch its rates."
            )
        rate, published, connection_id = found
        source = (await self._connections.connection(connection_id)).name
        places = Decimal(1).scaleb(-exponent(to))
        value = (amount.amount * rate).quantize(places, rounding=ROUND_HALF_UP)
        converted = Money(int(value.scaleb(exponent(to))), to)
        return Conversion(amount, converted, rate, published, source)


def _keep(session: Session, connection_id: int, sheet: RateSheet) -> None:
    rows = [
        {
            "connection_id": connection_id,
            "on": sheet.on,
            "base": sheet.base,
            "currency": currency,
            "rate": str(rate),
        }
        for currency, rate in sheet.rates.items()
    ]
    if session.get_bind().dialect.name == "sqlite":
        statement = sqlite_insert(ExchangeRateRow).on_conflict_do_nothing()
        session.execute(statement, rows)
        return
    for row in rows:  # other databases: skip the day's rates already kept
        exists = session.scalar(
            select(ExchangeRateRow.id).filter_by(
                connection_id=connection_id, on=row["on"], base=sheet.base, currency=row["currency"]
            )
        )
        if exists is None:
            session.add(ExchangeRateRow(**row))


def _rate_between(
    session: Session, source: str, target: str, on: date
) -> tuple[Decimal, date, int] | None:
    """Units of `target` per unit of `source`, the day it was published, and by which
    connection: the most recent day on or before `on` that gives both."""
    rows = session.execute(
        select(
            ExchangeRateRow.connection_id,
            ExchangeRateRow.on,
            ExchangeRateRow.base,
            ExchangeRateRow.currency,
            ExchangeRateRow.rate,
        )
        .where(ExchangeRateRow.on <= on)
        .where(ExchangeRateRow.currency.in_((source, target)))
        .order_by(ExchangeRateRow.on.desc(), ExchangeRateRow.connection_id)
        .limit(2000)
    ).all()
    sheets: dict[tuple[int, date, str], dict[str, Decimal]] = {}
    for connection_id, published, base, currency, rate in rows:
        sheets.setdefault((connection_id, published, base), {})[currency] = Decimal(rate)
    for (connection_id, published, base), rates in sheets.items():  # newest first
        sheet = {**rates, base: Decimal(1)}
        if source in sheet and target in sheet:
            return sheet[target] / sheet[source], published, connection_id
    return None
