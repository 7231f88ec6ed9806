"""Reconciliation's plain types: the records the three sides hold (our ledger, each gateway, the
bank), the statuses a record can end in, the rules that match them, and what a file import found
wrong with a row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from app.domain.errors import SwitchboardError


class Side(StrEnum):
    LEDGER = "ledger"  # what Switchboard recorded: payments and refunds
    GATEWAY = "gateway"  # what a gateway says it took, gave back, charged in fees and paid out
    BANK = "bank"  # what reached (or left) the school's bank account


class Kind(StrEnum):
    PAYMENT = "payment"  # money in from a payer (ledger payment, gateway charge)
    REFUND = "refund"  # money back to a payer (negative)
    FEE = "fee"  # a gateway's charge that stands on its own (negative)
    ADJUSTMENT = "adjustment"  # a dispute, a reversal, a correction by the gateway (signed)
    PAYOUT = "payout"  # the gateway's transfer to the bank: positive when money goes to the bank
    CREDIT = "credit"  # a bank line that brought money in
    DEBIT = "debit"  # a bank line that took money out


class Status(StrEnum):
    MATCHED = "matched"  # the record agrees with its counterparts
    EXPECTED = "expected"  # no counterpart yet, and none is due yet
    MISSING = "missing"  # no counterpart, and its settlement window has passed
    UNEXPECTED = "unexpected"  # the gateway or the bank has it; the ledger does not
    AMOUNT_OVER = "amount_over"  # the counterpart is for more than the record
    AMOUNT_UNDER = "amount_under"  # the counterpart is for less than the record
    CURRENCY_MISMATCH = "currency_mismatch"
    DUPLICATE = "duplicate"  # a second record of something already matched
    RESOLVED = "resolved"  # an exception someone wrote off, with a reason

    @property
    def is_exception(self) -> bool:
        return self not in (Status.MATCHED, Status.EXPECTED, Status.RESOLVED)


class How(StrEnum):
    """How a record came to its status (shown beside it, kept in the report)."""

    AUTO = "auto"
    MANUAL = "manual"


class Strategy(StrEnum):
    ONE_TO_ONE = "one_to_one"
    ONE_TO_MANY = "one_to_many"  # one ledger record settled by several gateway records
    MANY_TO_ONE = "many_to_one"  # many records settled together: a payout, a bank deposit


@dataclass(frozen=True)
class Record:
    """One line of one side, in the form every source is brought to.

    `amount_minor` is signed from the school's point of view: money coming in is positive. On the
    gateway side it is the gross amount and `fee_minor` what the gateway kept, so the net is the
    difference. `reference` is the key the other side knows it by (the gateway's charge or refund
    id on the ledger and gateway sides, the payout id on a payout, the bank's reference text on a
    bank line), and `payout` the payout a gateway record was paid out in, when the gateway says.
    `external_id` is unique within `source`; importing a record with an id already held changes
    nothing.
    """

    side: Side
    source: str  # "connection:3", "file:bank-main", "ledger"
    external_id: str
    kind: Kind
    amount_minor: int
    currency: str
    at: datetime  # aware; when it happened (booked, created, arrived)
    reference: str = ""
    fee_minor: int = 0
    payout: str = ""
    description: str = ""
    counterparty: str = ""


@dataclass(frozen=True)
class MatchRules:
    """How closely records must agree to be matched without a person."""

    amount_drift_minor: int = 0  # allowed difference, in minor units, before it is over/under
    date_window_days: int = 3  # how far apart two records may be when no reference links them
    settlement_days: int = 7  # after this long without a counterpart, expected becomes missing


@dataclass(frozen=True)
class RowError:
    """One problem with one row of an imported file: 1-based row, the column, and why."""

    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.reason}"


class FileRejected(SwitchboardError):
    """A file that cannot be imported; every row found wrong is listed, and nothing was kept."""

    def __init__(self, name: str, errors: list[RowError], *, more: int = 0) -> None:
        self.errors = errors
        self.more = more
        shown = "; ".join(str(error) for error in errors[:3])
        extra = len(errors) - 3 + more
        tail = f" (and {extra} more)" if extra > 0 else ""
        super().__init__(
            f"{name} was not imported, nothing from it was kept: {shown}{tail}. Correct the file "
            "or choose its format again, then import it again."
        )


@dataclass(frozen=True)
class ParsedFile:
    """The records a file holds, ready to import. `format` is what it was read as."""

    format: str
    records: list[Record] = field(default_factory=list)
    currency: str = ""  # the statement's currency when the file states one
    period: tuple[datetime, datetime] | None = None  # the statement's dates when stated
