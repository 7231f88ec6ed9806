"""PayPal's reports as CSV: the Activity download and the Settlement report (STL).

**Activity download** (Activity → Statements → Activity download, CSV): a header row
`Date, Time, TimeZone, Name, Type, Status, Currency, Gross, Fee, Net, From Email Address, ...,
Transaction ID, ..., Reference Txn ID, ..., Balance Impact`. The time zone column is honoured
("PDT", "CET", "GMT+01:00"...; an abbreviation that names more than one zone, such as IST, is a
row error, not a guess). PayPal documents the date as M/D/YYYY, but accounts outside the US get
D/M/YYYY, so the order is taken from a date in the file that settles it, else from the time
zone when every row is in a North American one, else it must be chosen. Gross and Net are
signed; Fee is negative when PayPal kept it and positive when it gave it back (net = gross +
fee). Rows with Balance Impact "Memo" (authorizations, pending eChecks) never touched the
balance and are left out; without that column, pending, denied and cancelled rows are.

**Settlement report** (STL-yyyymmdd.*.CSV from the secure FTP or the reports page): records
tagged RH, FH, SH, CH, SB, SF, SC, RF, RC, FF; CH names the columns of the SB rows that follow.
Amounts are unsigned minor units with CR/DR beside them, dates "2026/01/31 14:05:33 -0800",
and the kind comes from the T-code's group: T00 payments, T01 fees, T04 withdrawals to the
bank, T1107 refunds, T1108 fee reversals, the rest adjustments.

A withdrawal to the bank is a PAYOUT, positive for money that reached the bank; refunds are
REFUNDs, currency conversions and holds ADJUSTMENTs. Payments the school itself sent are
ADJUSTMENTs, not payments from payers.

Sources (read 2026): https://developer.paypal.com/docs/reports/sftp-reports/settlement-report/ ,
https://developer.paypal.com/docs/transaction-search/transaction-event-codes/ ,
https://developer.paypal.com/docs/reports/reference/tcodes/ ,
https://developer.paypal.com/api/nvp-soap/paypal-payments-standard/admin/download-history/ ,
and PayPal's Activity Download Specification (Date "[M]M/[D]D/YYYY", Timezone three-letter).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from app.domain.reconciliation import Kind, ParsedFile, Record, RowError, Side
from app.services.statement_files.records import Draft, settle_ids
from app.services.statement_files.text import (
    Table,
    cell,
    decode,
    read_rows,
    read_table,
    reject,
    rejected,
)
from app.services.statement_files.values import (
    DateOrder,
    ValueProblem,
    file_order,
    numeric_order,
    read_amount,
    read_currency,
    read_date,
    read_minor_units,
    read_time,
    read_zone,
    shown,
    uses_decimal_comma,
)

_NORTH_AMERICA = {
    "PST", "PDT", "MST", "MDT", "CST", "CDT", "EST", "EDT", "AKST", "AKDT", "HST", "NST", "NDT",
}  # fmt: skip
_SLASHED = re.compile(r"\d{1,2}[/-]\d{1,2}[/-]\d{2,4}")
_NOT_IN_BALANCE = {"pending", "denied", "canceled", "cancelled", "failed", "expired", "voided"}


def looks_like(first_row: list[str]) -> bool:
    keys = {value.strip().lower() for value in first_row}
    if first_row and first_row[0].strip().upper() == "RH":
        return True
    activity = {"date", "type", "status", "currency", "gross", "fee", "net", "transaction id"}
    return activity <= keys and bool(keys & {"timezone", "time zone"})


def read_paypal_csv(
    name: str, data: bytes, *, source: str, date_order: DateOrder = DateOrder.AUTO
) -> ParsedFile:
    text = decode(name, data)
    rows = read_rows(name, text)
    if not rows:
        raise reject(name, "the file is empty; download the report again")
    if rows[0][1][0].strip().upper() == "RH":
        return _read_settlement(name, rows, source=source)
    return _read_activity(name, read_table(name, text), source=source, date_order=date_order)


# --- Activity download -------------------------------------------------------------------------


def activity_kind(label: str, amount: int) -> tuple[Kind, int]:
    """The kind of an Activity row from its Type, and its amount as a Record holds it."""
    words = label.lower()
    if "withdraw" in words:  # "General Withdrawal", "Withdraw Funds to Bank Account"
        return Kind.PAYOUT, -amount
    if "bank deposit" in words:  # "Bank Deposit to PP Account": the school's bank pays in
        return Kind.PAYOUT, -amount  # a payout the other way: a debit at the bank
    if "conversion" in words:
        return Kind.ADJUSTMENT, amount
    if re.search(r"\bfees?\b", words):
        return Kind.FEE, amount
    if "refund" in words:
        return Kind.REFUND, amount
    if re.search(r"reversal|chargeback|dispute|hold|adjustment|deposit|authori[sz]ation", words):
        return Kind.ADJUSTMENT, amount
    return (Kind.PAYMENT if amount > 0 else Kind.ADJUSTMENT), amount


_ACTIVITY: dict[str, tuple[str, ...]] = {
    "date": ("Date",),
    "time": ("Time",),
    "zone": ("TimeZone", "Time Zone"),
    "name": ("Name",),
    "type": ("Type",),
    "status": ("Status",),
    "currency": ("Currency",),
    "gross": ("Gross",),
    "fee": ("Fee",),
    "net": ("Net",),
    "id": ("Transaction ID",),
    "from": ("From Email Address",),
    "to": ("To Email Address",),
    "item": ("Item Title", "Subject"),
    "impact": ("Balance Impact",),
}
_ACTIVITY_REQUIRED = ("date", "time", "zone", "type", "currency", "gross", "id")


def _read_activity(name: str, table: Table, *, source: str, date_order: DateOrder) -> ParsedFile:
    index: dict[str, int] = {}
    for field, names in _ACTIVITY.items():
        found = table.column(*names)
        if found is not None:
            index[field] = found
    missing = [_ACTIVITY[field][0] for field in _ACTIVITY_REQUIRED if field not in index]
    if missing:
        raise reject(
            name,
            "this does not look like a PayPal activity download: it has no "
            + ", ".join(repr(column) for column in missing)
            + " column; download it again as CSV with the default columns",
        )

    def column(field: str) -> str:
        position = index.get(field)
        return table.headers[position] if position is not None else ""

    rows = [
        (row, cells)
        for row, cells in table.rows
        if not _outside_balance(cell(cells, index.get("impact")), cell(cells, index.get("status")))
    ]
    order = date_order
    if order is DateOrder.AUTO:
        order = _activity_order(name, rows, index["date"], index["zone"], column("date"))
    comma = uses_decimal_comma(
        [cell(cells, index.get(field)) for _, cells in rows for field in ("gross", "fee", "net")]
    )
    drafts: list[Draft] = []
    errors: list[RowError] = []
    for row, cells in rows:
        problems: list[RowError] = []

        def value(field: str, cells: list[str] = cells) -> str:
            return cell(cells, index.get(field))

        at = None
        try:
            day = read_date(value("date"), order).day
            try:
                clock, _ = read_time(value("time"))
            except ValueProblem as error:
                problems.append(RowError(row, column("time"), str(error)))
                clock = None
            try:
                zone = read_zone(value("zone"))
            except ValueProblem as error:
                problems.append(RowError(row, column("zone"), str(error)))
                zone = None
            if clock is not None and zone is not None:
                at = datetime.combine(day, clock, zone).astimezone(UTC)
        except ValueProblem as error:
            problems.append(RowError(row, column("date"), str(error)))
        code = ""
        try:
            code = read_currency(value("currency"))
        except ValueProblem as error:
            problems.append(RowError(row, column("currency"), str(error)))
        amounts: dict[str, int] = {}
        for field in ("gross", "fee", "net"):
            text = value(field)
            if code and (field == "gross" or text):
                try:
                    amounts[field] = read_amount(text, code, decimal_comma=comma)
                except ValueProblem as error:
                    problems.append(RowError(row, column(field), str(error)))
        gross, fee, net = amounts.get("gross"), amounts.get("fee", 0), amounts.get("net")
        if gross is not None and net is not None and gross + fee != net:
            problems.append(
                RowError(
                    row,
                    column("net"),
                    f"the net {shown(value('net'))} is not the gross {shown(value('gross'))} "
                    f"plus the fee {shown(value('fee') or '0')}",
                )
            )
        own_id = value("id")
        if not own_id:
            problems.append(RowError(row, column("id"), "the transaction id is empty"))
        if problems or at is None or gross is None:
            errors.extend(problems)
            continue
        label = value("type")
        kind, amount = activity_kind(label, gross)
        description = " · ".join(part for part in (label, value("item")) if part)
        record = Record(
            side=Side.GATEWAY,
            source=source,
            external_id="",
            kind=kind,
            amount_minor=amount,
            currency=code,
            at=at,
            reference=own_id,
            fee_minor=-fee,  # PayPal writes what it kept as negative
            description=description,
            counterparty=value("name") or value("from" if gross >= 0 else "to"),
        )
        drafts.append(Draft(row, record, own_id=own_id))
    records = settle_ids(drafts)
    if errors:
        raise rejected(name, errors)
    return _parsed(records, period=None)


def _outside_balance(impact: str, status: str) -> bool:
    if impact:
        return impact.strip().lower() == "memo"
    return status.strip().lower() in _NOT_IN_BALANCE


def _activity_order(
    name: str, rows: list[tuple[int, list[str]]], date_at: int, zone_at: int, column: str
) -> DateOrder:
    dates = [cell(cells, date_at) for _, cells in rows]
    settled, conflict = file_order(dates)
    if conflict:
        raise reject(name, f"{conflict}; choose the date format for this file", column=column)
    if settled is not None:
        return settled
    zones = {cell(cells, zone_at).strip().upper() for _, cells in rows}
    if zones and zones <= _NORTH_AMERICA:
        return DateOrder.MDY  # PayPal's documented form, and what its US accounts get
    for text in dates:
        if numeric_order(text) is None and _SLASHED.fullmatch(text.strip()):
            raise reject(
                name,
                f"the dates (such as {shown(text)}) could be day/month/year or month/day/year "
                "and no date in the file settles it; choose the date format for this file",
                column=column,
            )
    return DateOrder.AUTO  # ISO and dotted dates read as they are


# --- Settlement report -------------------------------------------------------------------------

_STL: dict[str, tuple[str, ...]] = {
    "id": ("Transaction ID",),
    "invoice": ("Invoice ID",),
    "code": ("Transaction Event Code",),
    "started": ("Transaction Initiation Date",),
    "completed": ("Transaction Completion Date",),
    "direction": ("Transaction Debit or Credit",),
    "gross": ("Gross Transaction Amount",),
    "currency": ("Gross Transaction Currency",),
    "fee_direction": ("Fee Debit or Credit",),
    "fee": ("Fee Amount",),
    "fee_currency": ("Fee Currency",),
    "custom": ("Custom Field",),
    "consumer": ("Consumer ID",),
}
_STL_REQUIRED = ("id", "code", "completed", "direction", "gross", "currency")
_TCODE = re.compile(r"T(\d{2})(\d{2})")


def tcode_kind(code: str, credit: bool) -> Kind:
    """The kind of a settlement row from its T-code's group (T<group><type>)."""
    match = _TCODE.fullmatch(code)
    group = match[1] if match else ""
    if group == "00":
        return Kind.PAYMENT if credit else Kind.ADJUSTMENT
    if group == "01" or code == "T1108":
        return Kind.FEE
    if group == "04":
        return Kind.PAYOUT
    if code == "T1107":
        return Kind.REFUND
    return Kind.ADJUSTMENT


def _read_settlement(name: str, rows: list[tuple[int, list[str]]], *, source: str) -> ParsedFile:
    index: dict[str, int] | None = None
    headers: list[str] = []
    period_bounds: list[tuple[int, str, str]] = []
    drafts: list[Draft] = []
    errors: list[RowError] = []
    for row, cells in rows:
        tag = cells[0].strip().upper()
        if tag == "SH" and len(cells) >= 3:
            period_bounds.append((row, cells[1], cells[2]))
        if tag == "CH":
            headers = cells[1:]
            table = Table(headers)
            index = {}
            for field, names in _STL.items():
                found = table.column(*names)
                if found is not None:
                    index[field] = found
            missing = [_STL[field][0] for field in _STL_REQUIRED if field not in index]
            if missing:
                raise reject(
                    name,
                    "the settlement report's column row has no "
                    + ", ".join(repr(column) for column in missing)
                    + " column; download the report again",
                    row=row,
                )
        if tag != "SB":
            continue
        if index is None:
            raise reject(
                name,
                "a transaction row comes before the row naming the columns (CH); download the "
                "report again",
                row=row,
            )
        draft = _settlement_row(row, cells[1:], index, headers, errors, source)
        if draft is not None:
            drafts.append(draft)
    if index is None:
        raise reject(name, "this settlement report has no column row (CH); download it again")
    period = None
    if period_bounds:
        try:
            starts = [read_date(start, DateOrder.YMD).instant() for _, start, _ in period_bounds]
            ends = [read_date(end, DateOrder.YMD).instant() for _, _, end in period_bounds]
            period = (min(starts), max(ends))
        except ValueProblem as error:
            errors.append(RowError(period_bounds[0][0], "", str(error)))
    records = settle_ids(drafts)
    if errors:
        raise rejected(name, errors)
    return _parsed(records, period=period)


def _settlement_row(
    row: int,
    cells: list[str],
    index: dict[str, int],
    headers: list[str],
    errors: list[RowError],
    source: str,
) -> Draft | None:
    def value(field: str) -> str:
        return cell(cells, index.get(field))

    def column(field: str) -> str:
        position = index.get(field)
        return headers[position] if position is not None else ""

    problems: list[RowError] = []
    at = None
    try:
        at = read_date(value("completed") or value("started"), DateOrder.YMD).instant()
    except ValueProblem as error:
        problems.append(RowError(row, column("completed"), str(error)))
    code = ""
    try:
        code = read_currency(value("currency"))
    except ValueProblem as error:
        problems.append(RowError(row, column("currency"), str(error)))
    direction = value("direction").upper()
    if direction not in ("CR", "DR"):
        problems.append(
            RowError(row, column("direction"), f"{shown(value('direction'))} is neither CR nor DR")
        )
    gross = fee = None
    if code:
        try:
            gross = read_minor_units(value("gross"), code)
        except ValueProblem as error:
            problems.append(RowError(row, column("gross"), str(error)))
        fee = 0
        if value("fee"):
            try:
                fee = read_minor_units(value("fee"), code)
            except ValueProblem as error:
                problems.append(RowError(row, column("fee"), str(error)))
            fee_code = value("fee_currency").upper()
            if fee_code and fee_code != code:
                problems.append(
                    RowError(
                        row,
                        column("fee_currency"),
                        f"the fee is in {fee_code} but the amount in {code}",
                    )
                )
            if value("fee_direction").upper() == "CR":
                fee = -fee  # a fee given back
    tcode = value("code").upper()
    if not _TCODE.fullmatch(tcode):
        problems.append(
            RowError(row, column("code"), f"{shown(value('code'))} is not a PayPal T-code")
        )
    own_id = value("id")
    if not own_id:
        problems.append(RowError(row, column("id"), "the transaction id is empty"))
    if problems or at is None or gross is None or fee is None:
        errors.extend(problems)
        return None
    credit = direction == "CR"
    amount = gross if credit else -gross
    kind = tcode_kind(tcode, credit)
    if kind is Kind.PAYOUT:
        amount = -amount
    invoice = value("invoice") or value("custom")
    record = Record(
        side=Side.GATEWAY,
        source=source,
        external_id="",
        kind=kind,
        amount_minor=amount,
        currency=code,
        at=at,
        reference=own_id,
        fee_minor=fee,
        description=" · ".join(part for part in (tcode, invoice) if part),
        counterparty=value("consumer"),
    )
    return Draft(row, record, own_id=own_id)


def _parsed(records: list[Record], period: tuple[datetime, datetime] | None) -> ParsedFile:
    currencies = {record.currency for record in records}
    return ParsedFile(
        format="paypal-csv",
        records=records,
        currency=currencies.pop() if len(currencies) == 1 else "",
        period=period,
    )
