"""The books of a run read from the database into the engine's frames, and records written to
it: one number per record across the run (stored records their row id, payments and refunds a
negative number of their own), so decisions about any record survive every run."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import polars as pl
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.domain.reconciliation import Kind, Record, Side
from app.services.reconciliation.matching import (
    BANK_SCHEMA,
    GATEWAY_SCHEMA,
    LEDGER_SCHEMA,
    PAYOUT_SCHEMA,
    Books,
)
from app.store.payments import PaymentRow, RefundRow
from app.store.reconciliation import ReconDecisionRow, ReconRecordRow, ReconSourceRow

LEDGER_PAYMENT_STATUSES = ("succeeded",)
LEDGER_REFUND_STATUSES = ("succeeded",)


def payment_number(payment_id: int) -> int:
    return -2 * payment_id


def refund_number(refund_id: int) -> int:
    return -(2 * refund_id + 1)


def ledger_row(number: int) -> tuple[str, int]:
    """("payment", id) or ("refund", id) for a ledger record's number."""
    if number % 2 == 0:
        return "payment", -number // 2
    return "refund", (-number - 1) // 2


def connection_source(connection_id: int | None) -> str:
    return f"connection:{connection_id}" if connection_id else ""


def epoch(moment: datetime) -> int:
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


@dataclass(frozen=True)
class LedgerLine:
    """A ledger record as the exceptions queue shows it."""

    number: int
    kind: str
    source: str
    reference: str
    amount_minor: int
    currency: str
    at: datetime
    description: str


def ledger_lines(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[LedgerLine]:
    payments = select(PaymentRow).where(PaymentRow.status.in_(LEDGER_PAYMENT_STATUSES))
    refunds = (
        select(RefundRow, PaymentRow.connection_id)
        .join(PaymentRow, RefundRow.payment_id == PaymentRow.id)
        .where(RefundRow.status.in_(LEDGER_REFUND_STATUSES))
    )
    if since is not None:
        payments = payments.where(PaymentRow.created_at >= since)
        refunds = refunds.where(RefundRow.created_at >= since)
    if until is not None:
        payments = payments.where(PaymentRow.created_at <= until)
        refunds = refunds.where(RefundRow.created_at <= until)
    lines = [
        LedgerLine(
            payment_number(row.id),
            Kind.PAYMENT.value,
            connection_source(row.connection_id),
            row.gateway_id if row.connection_id else row.reference,
            row.amount_minor,
            row.currency,
            row.created_at,
            row.description or row.reference,
        )
        for row in session.scalars(payments)
    ]
    lines.extend(
        LedgerLine(
            refund_number(refund.id),
            Kind.REFUND.value,
            connection_source(connection_id),
            refund.gateway_id,
            -refund.amount_minor,
            refund.currency,
            refund.created_at,
            refund.reason or refund.reference,
        )
        for refund, connection_id in session.execute(refunds)
    )
    return lines


def load_books(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> Books:
    """Every ledger record and stored record (from `since` and up to `until` when given: a
    run as of a moment sees what had happened by then) as the engine's frames."""
    ledger = [
        {
            "id": line.number,
            "source": line.source,
            "ref": line.reference,
            "kind": line.kind,
            "amount": line.amount_minor,
            "currency": line.currency,
            "at": epoch(line.at),
        }
        for line in ledger_lines(session, since, until)
    ]
    query = select(
        ReconRecordRow.id,
        ReconSourceRow.key,
        ReconRecordRow.side,
        ReconRecordRow.kind,
        ReconRecordRow.reference,
        ReconRecordRow.amount_minor,
        ReconRecordRow.fee_minor,
        ReconRecordRow.currency,
        ReconRecordRow.at,
        ReconRecordRow.payout,
        ReconRecordRow.description,
        ReconRecordRow.split_decision,
    ).join(ReconSourceRow, ReconRecordRow.source_id == ReconSourceRow.id)
    if since is not None:
        query = query.where(ReconRecordRow.at >= since)
    if until is not None:
        # A bank statement names days, not moments (a line is kept at noon of its day): a run
        # sees the bank's lines of its whole day, whatever the hour it runs at.
        day_ends = datetime.combine(until.astimezone(UTC).date(), time(), UTC) + timedelta(days=1)
        query = query.where(
            or_(
                ReconRecordRow.at <= until,
                and_(ReconRecordRow.side == Side.BANK.value, ReconRecordRow.at < day_ends),
            )
        )
    splits = standing_splits(session)
    gateway, payouts, bank = [], [], []
    for row in session.execute(query):
        number, source, side, kind, ref, amount, fee, currency, at, payout, text, split = row
        if number in splits or (split is not None and split not in splits.values()):
            continue  # a whole someone split is matched by its parts; undone parts are gone
        if side == Side.BANK.value:
            bank.append(
                {
                    "id": number,
                    "ref": ref,
                    "text": text,
                    "amount": amount,
                    "currency": currency,
                    "at": epoch(at),
                }
            )
        elif kind == Kind.PAYOUT.value:
            payouts.append(
                {
                    "id": number,
                    "source": source,
                    "ref": ref,
                    "amount": amount,
                    "currency": currency,
                    "at": epoch(at),
                }
            )
        else:
            gateway.append(
                {
                    "id": number,
                    "source": source,
                    "ref": ref,
                    "kind": kind,
                    "amount": amount,
                    "fee": fee,
                    "currency": currency,
                    "at": epoch(at),
                    "payout": payout,
                }
            )
    return Books(
        pl.DataFrame(ledger, schema=LEDGER_SCHEMA, orient="row"),
        pl.DataFrame(gateway, schema=GATEWAY_SCHEMA, orient="row"),
        pl.DataFrame(payouts, schema=PAYOUT_SCHEMA, orient="row"),
        pl.DataFrame(bank, schema=BANK_SCHEMA, orient="row"),
    )


def standing_splits(session: Session) -> dict[int, int]:
    """The records split into parts by a decision that stands: the whole → its decision."""
    rows = session.execute(
        select(ReconDecisionRow.id, ReconDecisionRow.records).where(
            ReconDecisionRow.action == "split", ReconDecisionRow.undone_at.is_(None)
        )
    )
    return {int(records[0]): decision for decision, records in rows if records}


def add_records(
    session: Session, source_id: int, records: Sequence[Record], import_id: int | None
) -> int:
    """Store the records not already held (by their external id); how many were new."""
    held = set(
        session.scalars(
            select(ReconRecordRow.external_id).where(ReconRecordRow.source_id == source_id)
        )
    )
    fresh: list[ReconRecordRow] = []
    for record in records:
        if record.external_id in held:
            continue
        held.add(record.external_id)
        fresh.append(
            ReconRecordRow(
                source_id=source_id,
                import_id=import_id,
                side=record.side.value,
                external_id=record.external_id,
                kind=record.kind.value,
                amount_minor=record.amount_minor,
                currency=record.currency,
                fee_minor=record.fee_minor,
                at=record.at,
                reference=record.reference,
                payout=record.payout,
                description=record.description,
                counterparty=record.counterparty,
            )
        )
    session.add_all(fresh)
    return len(fresh)


def numbers(values: Iterable[int]) -> list[int]:
    return sorted({int(value) for value in values})
