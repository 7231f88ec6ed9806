"""Settlement reports and bank statements, read into reconciliation records.

`read_statement` turns one file into a ParsedFile, or refuses it whole with FileRejected listing
every problem found: nothing from a file with a bad row is kept, so a half-read statement can
never look reconciled. `detect_format` suggests the format from the file's content; `FORMATS`
is what the office chooses from. Pure Python: no Qt, no database, no network.
"""

from __future__ import annotations

from pathlib import Path

from app.domain.errors import SwitchboardError
from app.domain.reconciliation import ParsedFile, Side
from app.services.statement_files import camt053, ofx, paypal_csv, stripe_csv
from app.services.statement_files.bank_csv import read_bank_csv
from app.services.statement_files.mapping import ColumnMapping, MappingError, Sign, guess_mapping
from app.services.statement_files.text import decode, read_file, read_rows
from app.services.statement_files.values import DateOrder

__all__ = [
    "FORMATS",
    "ColumnMapping",
    "DateOrder",
    "MappingError",
    "Sign",
    "detect_format",
    "guess_mapping",
    "read_statement",
]

FORMATS: tuple[tuple[str, str], ...] = (
    ("stripe-csv", "Stripe balance or payout report (CSV)"),
    ("paypal-csv", "PayPal settlement or activity report (CSV)"),
    ("bank-csv", "Bank statement (CSV)"),
    ("ofx", "Bank statement (OFX/QFX)"),
    ("camt053", "Bank statement (ISO 20022 CAMT.053 XML)"),
    ("generic-csv", "Other CSV (choose the columns)"),
)
_KEYS = {key for key, _ in FORMATS}
_SNIFF_BYTES = 64 * 1024


def read_statement(
    path: Path,
    fmt: str,
    *,
    source: str,
    mapping: ColumnMapping | None = None,
    currency: str = "",
    date_order: DateOrder = DateOrder.AUTO,
) -> ParsedFile:
    """The records in the file at `path`, read as `fmt` (a key of FORMATS) for `source`.

    `mapping` says which column is which for "bank-csv" (guessed from the headers when None)
    and "generic-csv" (guessed when None; its `side` decides gateway or bank). `currency` is the
    account's currency for files that do not state one (a bank CSV without a currency column,
    an OFX without CURDEF). `date_order` settles day/month order in a PayPal activity download
    whose dates do not settle it themselves.
    """
    if fmt not in _KEYS:
        raise SwitchboardError(
            f"{fmt!r} is not a statement format Switchboard reads; choose one of "
            + ", ".join(key for key, _ in FORMATS)
            + "."
        )
    data = read_file(path)
    name = path.name
    if fmt == "stripe-csv":
        return stripe_csv.read_stripe_csv(name, data, source=source)
    if fmt == "paypal-csv":
        return paypal_csv.read_paypal_csv(name, data, source=source, date_order=date_order)
    if fmt == "ofx":
        return ofx.read_ofx(name, data, source=source, currency=currency)
    if fmt == "camt053":
        return camt053.read_camt053(name, data, source=source)
    side = Side.BANK if fmt == "bank-csv" else None
    return read_bank_csv(
        name, data, source=source, mapping=mapping, currency=currency, fmt=fmt, side=side
    )


def detect_format(path: Path) -> str | None:
    """The format the file's content shows (OFX header, CAMT.053 namespace, Stripe's or
    PayPal's CSV header), or None when it could be any CSV or cannot be read."""
    try:
        with path.open("rb") as handle:
            head_bytes = handle.read(_SNIFF_BYTES)
    except OSError:
        return None
    head = head_bytes.decode("utf-8", errors="replace").lstrip("\ufeff")
    if ofx.looks_like(head):
        return "ofx"
    if camt053.looks_like(head):
        return "camt053"
    try:
        text = decode(path.name, head_bytes)
        # Only whole lines: the last one may be cut where the sniffed bytes end.
        lines = text.splitlines()
        rows = read_rows(path.name, "\n".join(lines[:2] if len(lines) > 1 else lines))
    except SwitchboardError:
        return None
    if not rows:
        return None
    first = rows[0][1]
    if stripe_csv.looks_like(first):
        return "stripe-csv"
    if paypal_csv.looks_like(first):
        return "paypal-csv"
    return None
