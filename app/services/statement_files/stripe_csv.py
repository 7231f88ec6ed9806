"""Stripe's balance reports as CSV: what Stripe took, gave back, kept in fees and paid out.

Read: the Balance report's "Itemized balance change from activity" and "Itemized payouts", the
Payout reconciliation report's "Itemized payout reconciliation" and "Itemized ending balance
reconciliation" (all keyed by `balance_transaction_id`, with `created_utc`, `currency` in lower
case, and `gross`, `fee`, `net` in major units, fee positive and net = gross - fee), and the
Dashboard's older export of balance transactions (`id, Type, Source, Amount, Fee, Net,
Currency, Created (UTC), Available On (UTC), Description, ..., Transfer`). The summary reports
have no transactions and are refused with a pointer to the itemized ones.

A charge is known by its PaymentIntent (`payment_intent_id`, an optional column of the
itemized reports) when the report has it, as Switchboard records payments by it; otherwise by
its `source_id`. `reporting_category` (or the export's `Type`) gives the kind: charge/payment
are payments, refund/payment_refund refunds, fee/stripe_fee fees, payout a payout. Stripe
writes a payout as negative (money leaving the Stripe balance); a Record's payout is positive
(money reaching the bank), so the sign is turned. A payout that came back (payout_reversal,
payout_cancel, payout_failure) is a negative payout, so the payout and its return cancel out.
Everything else (disputes, transfers, partial-capture reversals, other adjustments) is an
ADJUSTMENT.

Sources (read 2026): https://docs.stripe.com/reports/balance ,
https://docs.stripe.com/reports/report-types/payout-reconciliation ,
https://docs.stripe.com/reports/reporting-categories ,
https://docs.stripe.com/api/balance_transactions/object (amount signs, currency lower case);
the Dashboard export's columns as public importers read them (e.g. "id,Type,Source,Amount,Fee,
Net,Currency,Created (UTC),Available On (UTC),Description,Transfer").
"""

from __future__ import annotations

from app.domain.reconciliation import Kind, ParsedFile, Record, RowError, Side
from app.services.statement_files.records import Draft, settle_ids
from app.services.statement_files.text import Table, cell, decode, read_table, reject, rejected
from app.services.statement_files.values import (
    ValueProblem,
    read_amount,
    read_currency,
    read_utc_timestamp,
    shown,
)

_KINDS = {
    "charge": Kind.PAYMENT,
    "payment": Kind.PAYMENT,
    "refund": Kind.REFUND,
    "payment_refund": Kind.REFUND,
    "fee": Kind.FEE,
    "stripe_fee": Kind.FEE,
    "stripe_fx_fee": Kind.FEE,
    "payout": Kind.PAYOUT,
    "payout_reversal": Kind.PAYOUT,
    "payout_cancel": Kind.PAYOUT,
    "payout_failure": Kind.PAYOUT,
}

# Each field with the columns that hold it, in the order they are preferred.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("balance_transaction_id", "id"),
    "created": ("created_utc", "Created (UTC)", "effective_at_utc"),
    "currency": ("currency", "Currency"),
    "gross": ("gross", "Amount"),
    "fee": ("fee", "Fee"),
    "net": ("net", "Net"),
    "category": ("reporting_category", "Type"),
    "source": ("source_id", "Source", "payout_id"),
    "intent": ("payment_intent_id",),
    "description": ("description", "Description"),
    "payout": ("automatic_payout_id", "Transfer", "payout_id"),
    "customer": ("customer_name", "customer_email", "Customer Name", "Customer Email"),
}
_REQUIRED = ("id", "created", "currency", "gross", "category")


def looks_like(headers: list[str]) -> bool:
    keys = {header.strip().lower() for header in headers}
    itemized = "balance_transaction_id" in keys and "gross" in keys
    export = {"id", "type", "source", "amount", "fee", "net", "currency"} <= keys and (
        "created (utc)" in keys
    )
    return itemized or export


def read_stripe_csv(name: str, data: bytes, *, source: str) -> ParsedFile:
    table = read_table(name, decode(name, data))
    index = _columns(name, table)
    drafts: list[Draft] = []
    errors: list[RowError] = []
    for row, cells in table.rows:

        def value(field: str, cells: list[str] = cells) -> str:
            return cell(cells, index.get(field))

        def column(field: str) -> str:
            position = index.get(field)
            return table.headers[position] if position is not None else ""

        problems: list[RowError] = []
        code = ""
        try:
            code = read_currency(value("currency"))
        except ValueProblem as error:
            problems.append(RowError(row, column("currency"), str(error)))
        at = None
        try:
            at = read_utc_timestamp(value("created"))
        except ValueProblem as error:
            problems.append(RowError(row, column("created"), str(error)))
        amounts: dict[str, int] = {}
        for field in ("gross", "fee", "net"):
            text = value(field)
            if not code or (field != "gross" and not text):
                continue
            try:
                amounts[field] = read_amount(text, code)
            except ValueProblem as error:
                problems.append(RowError(row, column(field), str(error)))
        own_id = value("id")
        if not own_id:
            problems.append(RowError(row, column("id"), "the balance transaction id is empty"))
        gross, fee = amounts.get("gross"), amounts.get("fee", 0)
        net = amounts.get("net")
        if gross is not None and net is not None and gross - fee != net:
            problems.append(
                RowError(
                    row,
                    column("net"),
                    f"the net {shown(value('net'))} is not the gross {shown(value('gross'))} "
                    f"less the fee {shown(value('fee') or '0')}",
                )
            )
        if problems or gross is None or at is None:
            errors.extend(problems)
            continue
        category = value("category").strip().lower()
        kind = _KINDS.get(category, Kind.ADJUSTMENT)
        # A charge by the PaymentIntent when the report has the column: the id we record
        # (its source is the charge, `ch_…`); a refund keeps its own `re_…`.
        intent = value("intent") if kind is Kind.PAYMENT else ""
        reference = intent or value("source")
        payout = value("payout")
        if kind is Kind.PAYOUT:
            gross = -gross  # Stripe: leaving the balance; a Record: reaching the bank
            payout = payout or reference
        record = Record(
            side=Side.GATEWAY,
            source=source,
            external_id="",
            kind=kind,
            amount_minor=gross,
            currency=code,
            at=at,
            reference=reference,
            fee_minor=fee,
            payout=payout,
            description=value("description") or category,
            counterparty=value("customer"),
        )
        drafts.append(Draft(row, record, own_id=own_id))
    records = settle_ids(drafts)
    if errors:
        raise rejected(name, errors)
    currencies = {record.currency for record in records}
    return ParsedFile(
        format="stripe-csv",
        records=records,
        currency=currencies.pop() if len(currencies) == 1 else "",
    )


def _columns(name: str, table: Table) -> dict[str, int]:
    keys = {header.strip().lower() for header in table.headers}
    if "reporting_category" in keys and "count" in keys and "balance_transaction_id" not in keys:
        raise reject(
            name,
            "this is a summary report with totals only; download the itemized report "
            "(Itemized balance change from activity, or Itemized payout reconciliation)",
        )
    index: dict[str, int] = {}
    for field, names in _COLUMNS.items():
        found = table.column(*names)
        if found is not None:
            index[field] = found
    missing = [_COLUMNS[field][0] for field in _REQUIRED if field not in index]
    if missing:
        raise reject(
            name,
            "this does not look like a Stripe balance report: it has no "
            + ", ".join(repr(column) for column in missing)
            + " column; download an itemized balance or payout reconciliation report",
        )
    return index
