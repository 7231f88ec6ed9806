"""Which column of a CSV holds what, for the bank statements and other CSVs whose layout
each bank chooses for itself. The app remembers one mapping per source (`to_json`), and
`guess_mapping` fills one in from the header names English-speaking banks use."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from app.domain.errors import SwitchboardError
from app.domain.money import is_known_currency
from app.domain.reconciliation import Side
from app.services.statement_files.values import DateOrder


class MappingError(SwitchboardError):
    """A column mapping that cannot be used, in one plain sentence."""


class Sign(StrEnum):
    """What a positive number in the amount column means."""

    IN_POSITIVE = "in_positive"  # money in is positive, money out negative (most banks)
    OUT_POSITIVE = "out_positive"  # money out is positive (card statements, some exports)


@dataclass(frozen=True)
class ColumnMapping:
    """Column names as the file's header writes them; "" for a column the file has not.

    The amount is either one signed `amount` column or a `credit` and a `debit` column (money
    in and money out, either may be blank on a row). `direction`, when set, names a column that
    says which way the amount went (CR/DR, C/D, Credit/Debit, H/S). The currency comes from the
    `currency` column, else `fixed_currency`. `time_zone` is an IANA name (Europe/London) used
    for dates that carry a time but no zone; without it only their date counts.
    """

    date: str
    amount: str = ""
    credit: str = ""
    debit: str = ""
    direction: str = ""
    currency: str = ""
    fixed_currency: str = ""
    reference: str = ""
    description: str = ""
    id: str = ""
    counterparty: str = ""
    fee: str = ""
    type: str = ""
    date_order: DateOrder = DateOrder.AUTO
    decimal_comma: bool = False
    side: Side = Side.BANK
    sign: Sign = Sign.IN_POSITIVE
    time_zone: str = ""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.date.strip():
            problems.append("choose the column that holds the date")
        if self.amount and (self.credit or self.debit):
            problems.append("choose either one amount column or a money-in and a money-out column")
        elif not self.amount and not (self.credit and self.debit):
            problems.append(
                "choose the amount column, or both the money-in and the money-out columns"
            )
        if self.direction and not self.amount:
            problems.append("a column saying credit or debit needs one amount column beside it")
        if self.fixed_currency and not is_known_currency(self.fixed_currency):
            problems.append(f"{self.fixed_currency!r} is not a currency Switchboard knows")
        if self.side is Side.LEDGER:
            problems.append("a file is a gateway's or a bank's record, not the ledger")
        if problems:
            raise MappingError("; ".join(problems).capitalize() + ".")

    @property
    def columns(self) -> dict[str, str]:
        """Every column the mapping uses, by what it is for."""
        names = (
            "date", "amount", "credit", "debit", "direction", "currency", "reference",
            "description", "id", "counterparty", "fee", "type",
        )  # fmt: skip
        return {name: getattr(self, name) for name in names if getattr(self, name)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ColumnMapping:
        """A mapping saved by `to_json`; keys it does not know are ignored (a newer version
        may have written them), and a damaged one is a MappingError."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError):
            raise MappingError(
                "The saved column choice is damaged; choose the columns again."
            ) from None
        if not isinstance(data, dict):
            raise MappingError("The saved column choice is damaged; choose the columns again.")
        known = {field.name: field for field in fields(cls)}
        values: dict[str, Any] = {}
        try:
            for name, value in data.items():
                if name not in known:
                    continue
                if name == "date_order":
                    values[name] = DateOrder(value)
                elif name == "side":
                    values[name] = Side(value)
                elif name == "sign":
                    values[name] = Sign(value)
                elif name == "decimal_comma":
                    if not isinstance(value, bool):
                        raise ValueError(name)
                    values[name] = value
                else:
                    if not isinstance(value, str):
                        raise ValueError(name)
                    values[name] = value
            return cls(**values)
        except (ValueError, TypeError):
            raise MappingError(
                "The saved column choice is damaged; choose the columns again."
            ) from None


# Header names, most specific first; compared case-insensitively with spacing and
# punctuation ignored. "value date" comes after the booking dates: it is when interest starts.
_NAMES: dict[str, tuple[str, ...]] = {
    "date": (
        "date", "transaction date", "posting date", "posted date", "date posted", "booking date",
        "booked date", "trans date", "transaction posted date", "created", "created utc",
        "completed date", "value date",
    ),
    "amount": (
        "amount", "transaction amount", "amount gbp", "amount usd", "amount eur", "value",
        "net amount", "sum",
    ),
    "credit": (
        "credit", "credits", "paid in", "money in", "credit amount", "deposit", "deposits", "in",
    ),
    "debit": (
        "debit", "debits", "paid out", "money out", "debit amount", "withdrawal", "withdrawals",
        "out",
    ),
    "direction": ("credit debit", "debit credit", "dr cr", "cr dr", "credit debit indicator"),
    "currency": ("currency", "ccy", "currency code", "curr"),
    "reference": (
        "reference", "ref", "payment reference", "transaction reference", "check number",
        "cheque number", "customer reference", "bank reference",
    ),
    "description": (
        "description", "details", "narrative", "memo", "transaction description", "particulars",
        "transaction details", "remittance information", "text",
    ),
    "id": ("transaction id", "id", "fitid", "transaction number", "unique id"),
    "counterparty": (
        "counterparty", "name", "payee", "payer", "payee name", "beneficiary", "merchant",
        "other party", "counter party", "account name",
    ),
    "fee": ("fee", "fees"),
    "type": ("type", "transaction type"),
}  # fmt: skip


def _key(header: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in header.lower()).split())


def guess_mapping(headers: list[str]) -> ColumnMapping | None:
    """A mapping from common English header names, or None when the date or the amount
    cannot be told; the guess is for the office to confirm, never applied unseen."""
    by_key: dict[str, str] = {}
    for written in headers:
        by_key.setdefault(_key(written), written.strip())
    found: dict[str, str] = {}
    used: set[str] = set()
    for purpose, names in _NAMES.items():
        for name in names:
            header = by_key.get(name)
            if header is not None and header not in used:
                found[purpose] = header
                used.add(header)
                break
    if "date" not in found:
        return None
    if "amount" in found:
        found.pop("credit", None)
        found.pop("debit", None)
    elif not ("credit" in found and "debit" in found):
        return None
    else:
        found.pop("direction", None)
    return ColumnMapping(
        date=found["date"],
        amount=found.get("amount", ""),
        credit=found.get("credit", ""),
        debit=found.get("debit", ""),
        direction=found.get("direction", ""),
        currency=found.get("currency", ""),
        reference=found.get("reference", ""),
        description=found.get("description", ""),
        id=found.get("id", ""),
        counterparty=found.get("counterparty", ""),
        fee=found.get("fee", ""),
        type=found.get("type", ""),
    )
