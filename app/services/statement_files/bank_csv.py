"""Bank statements and other CSVs, read through a ColumnMapping.

Every bank lays its CSV out its own way, so the office says which column is which (or accepts
`guess_mapping`'s suggestion) and the choice is remembered per source. Either one signed amount
column, an amount with a column that says credit or debit, or a money-in and a money-out column.
A bank line is a CREDIT or a DEBIT by its sign; a gateway line is a PAYOUT, FEE, REFUND or
ADJUSTMENT when its type column says so ("Payout", "Stripe fee", "Refund"...), else a PAYMENT
when positive and a REFUND when negative.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import tzinfo
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.domain.reconciliation import Kind, ParsedFile, Record, RowError, Side
from app.services.statement_files.mapping import ColumnMapping, Sign, guess_mapping
from app.services.statement_files.records import Draft, settle_ids
from app.services.statement_files.text import Table, cell, decode, read_table, reject, rejected
from app.services.statement_files.values import (
    DateOrder,
    ValueProblem,
    file_order,
    read_amount,
    read_currency,
    read_date,
    shown,
)

T = TypeVar("T")

_CREDIT_WORDS = {"cr", "c", "credit", "h", "haben", "in", "+", "crdt"}
_DEBIT_WORDS = {"dr", "d", "debit", "s", "soll", "out", "-", "dbit"}


def gateway_kind(label: str, amount: int) -> tuple[Kind, int]:
    """A gateway line's kind from its type text, and its amount as a Record holds it: a
    payout is positive when money went to the bank, whatever sign the gateway gave it."""
    words = label.lower()
    if re.search(r"payout|withdraw|transfer to bank", words):
        return Kind.PAYOUT, -amount
    if re.search(r"\bfees?\b", words):
        return Kind.FEE, amount
    if "refund" in words:
        return Kind.REFUND, amount
    if re.search(r"conversion|reversal|chargeback|dispute|adjust|correction|hold|deposit", words):
        return Kind.ADJUSTMENT, amount
    if words.strip() and amount < 0:
        return Kind.ADJUSTMENT, amount
    return (Kind.PAYMENT if amount >= 0 else Kind.REFUND), amount


def read_bank_csv(
    name: str,
    data: bytes,
    *,
    source: str,
    mapping: ColumnMapping | None,
    currency: str = "",
    fmt: str = "bank-csv",
    side: Side | None = Side.BANK,
) -> ParsedFile:
    """A CSV read with `mapping` (or the guessed one). `side` forces the side ("bank-csv");
    None takes it from the mapping ("generic-csv")."""
    table = read_table(name, decode(name, data))
    if mapping is None:
        mapping = guess_mapping(table.headers)
        if mapping is None:
            raise reject(
                name,
                "Switchboard cannot tell which columns hold the date and the amount; choose "
                "the columns for this file",
            )
    if side is not None and mapping.side is not side:
        mapping = replace(mapping, side=side)
    return _read(name, table, mapping, source=source, currency=currency, fmt=fmt)


def _read(
    name: str, table: Table, mapping: ColumnMapping, *, source: str, currency: str, fmt: str
) -> ParsedFile:
    index: dict[str, int] = {}
    for purpose, header in mapping.columns.items():
        found = table.column(header)
        if found is None:
            raise reject(
                name,
                f"the file has no column {header!r} (chosen for the {purpose}); choose the "
                "columns again",
                column=header,
            )
        index[purpose] = found
    fixed = mapping.fixed_currency or currency
    if "currency" not in index and not fixed:
        raise reject(name, "the file has no currency column; choose the currency of this account")
    fixed = fixed.upper()
    zone: tzinfo | None = None
    if mapping.time_zone:
        try:
            zone = ZoneInfo(mapping.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise reject(
                name, f"the time zone {mapping.time_zone!r} is not one Switchboard knows"
            ) from None
    order = mapping.date_order
    if order is DateOrder.AUTO:
        settled, conflict = file_order([cell(cells, index["date"]) for _, cells in table.rows])
        if conflict:
            raise reject(
                name, f"{conflict}; choose the date format for this file", column=mapping.date
            )
        order = settled or DateOrder.AUTO

    drafts: list[Draft] = []
    errors: list[RowError] = []
    for number, cells in table.rows:
        line = _Row(number, cells, index, mapping)
        code = fixed
        if "currency" in index:
            code = line.read("currency", lambda text: read_currency(text or fixed)) or ""
        at = line.read("date", lambda text: read_date(text, order).instant(zone))
        amount = line.amount(code) if code else None
        fee = line.fee(code) if code else 0
        if line.problems or at is None or amount is None or fee is None:
            errors.extend(line.problems)
            continue
        if mapping.side is Side.BANK:
            kind = Kind.CREDIT if amount >= 0 else Kind.DEBIT
        else:
            kind, amount = gateway_kind(line.value("type"), amount)
        record = Record(
            side=mapping.side,
            source=source,
            external_id="",
            kind=kind,
            amount_minor=amount,
            currency=code,
            at=at,
            reference=line.value("reference"),
            fee_minor=fee,
            description=line.value("description"),
            counterparty=line.value("counterparty"),
        )
        drafts.append(Draft(number, record, own_id=line.value("id")))
    records = settle_ids(drafts)
    if errors:
        raise rejected(name, errors)
    currencies = {record.currency for record in records}
    return ParsedFile(
        format=fmt, records=records, currency=currencies.pop() if len(currencies) == 1 else ""
    )


class _Row:
    """One data row being read: its cells by purpose, and the problems found so far."""

    def __init__(
        self, number: int, cells: list[str], index: dict[str, int], mapping: ColumnMapping
    ) -> None:
        self.number = number
        self.cells = cells
        self.index = index
        self.mapping = mapping
        self.problems: list[RowError] = []

    def value(self, purpose: str) -> str:
        return cell(self.cells, self.index.get(purpose))

    def problem(self, purpose: str, reason: str) -> None:
        self.problems.append(RowError(self.number, self.mapping.columns.get(purpose, ""), reason))

    def read(self, purpose: str, reader: Callable[[str], T]) -> T | None:
        try:
            return reader(self.value(purpose))
        except ValueProblem as error:
            self.problem(purpose, str(error))
            return None

    def fee(self, code: str) -> int | None:
        """What a gateway kept, as a positive number (0 when the row has none)."""
        if not self.value("fee"):
            return 0
        comma = self.mapping.decimal_comma
        return self.read("fee", lambda text: abs(read_amount(text, code, decimal_comma=comma)))

    def amount(self, code: str) -> int | None:
        """The signed amount, money in positive, or None after noting why not."""
        comma = self.mapping.decimal_comma
        if self.mapping.amount:
            amount = self.read("amount", lambda text: read_amount(text, code, decimal_comma=comma))
            if amount is None or not self.mapping.direction:
                out_positive = self.mapping.sign is Sign.OUT_POSITIVE
                return -amount if amount is not None and out_positive else amount
            word = self.value("direction").strip().lower()
            if word in _CREDIT_WORDS:
                return abs(amount)
            if word in _DEBIT_WORDS:
                return -abs(amount)
            self.problem(
                "direction",
                f"{shown(self.value('direction'))} does not say credit or debit (write CR or DR)",
            )
            return None
        money_in, money_out = self.value("credit"), self.value("debit")
        if not money_in and not money_out:
            self.problem("credit", "the row has no amount in or out")
            return None
        credit = self.read(
            "credit", lambda text: abs(read_amount(text, code, decimal_comma=comma)) if text else 0
        )
        debit = self.read(
            "debit", lambda text: abs(read_amount(text, code, decimal_comma=comma)) if text else 0
        )
        if credit is None or debit is None:
            return None
        if credit and debit:
            self.problem("debit", "the row has an amount both in and out; only one can be filled")
            return None
        return credit - debit
