"""A gateway's balance movements and payouts, read through its API, as reconciliation records."""

from __future__ import annotations

from datetime import UTC, datetime

from app.domain.payments import BalanceEntry, GatewayLedger, Payout
from app.domain.reconciliation import Kind, Record, Side

# The gateways' names for a movement, to ours. A payout's own movement is left out: the payout
# itself is the record (it is what the bank must show). Holds, conversions and the like are
# adjustments: a hold and its release cancel out (see matching), the rest are for a person.
KINDS = {
    "charge": Kind.PAYMENT,
    "payment": Kind.PAYMENT,
    "refund": Kind.REFUND,
    "payment_refund": Kind.REFUND,
    "payment_failure_refund": Kind.REFUND,
    "stripe_fee": Kind.FEE,
    "fee": Kind.FEE,
    "application_fee": Kind.FEE,
    "tax_fee": Kind.FEE,
}
SKIPPED = frozenset({"payout", "payout_cancel", "payout_failure", "transfer"})
GONE = frozenset({"failed", "canceled"})  # payouts that never reach the bank
TOPUP = "topup"


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def entry_record(source: str, entry: BalanceEntry) -> Record | None:
    if entry.kind in SKIPPED:
        return None
    if entry.kind == TOPUP:
        # Money the school's bank paid into the gateway: a payout the other way, which the
        # bank shows as a debit of the same amount.
        return Record(
            side=Side.GATEWAY,
            source=source,
            external_id=entry.gateway_id,
            kind=Kind.PAYOUT,
            amount_minor=-entry.amount.minor,
            currency=entry.amount.currency,
            at=_at(entry.created),
            reference=entry.gateway_id,
            description="top-up from the bank",
        )
    return Record(
        side=Side.GATEWAY,
        source=source,
        external_id=entry.gateway_id,
        kind=KINDS.get(entry.kind, Kind.ADJUSTMENT),
        amount_minor=entry.amount.minor,
        currency=entry.amount.currency,
        at=_at(entry.created),
        reference=entry.source,
        fee_minor=entry.fee.minor,
        payout=entry.payout,
        description=entry.kind,
    )


def payout_record(source: str, payout: Payout) -> Record | None:
    if payout.status in GONE:
        return None
    return Record(
        side=Side.GATEWAY,
        source=source,
        external_id=payout.gateway_id,
        kind=Kind.PAYOUT,
        amount_minor=payout.amount.minor,
        currency=payout.amount.currency,
        at=_at(payout.arrival or payout.created),
        reference=payout.gateway_id,
        description=f"payout ({payout.status})",
    )


def gateway_records(source: str, ledger: GatewayLedger) -> list[Record]:
    records = [entry_record(source, entry) for entry in ledger.entries]
    records += [payout_record(source, payout) for payout in ledger.payouts]
    return [record for record in records if record is not None]
