"""Stable, unique ids for the records a file holds, and the all-or-nothing rule.

A record keeps the id the file gives it (Stripe's balance transaction, PayPal's transaction,
the bank's FITID or AcctSvcrRef), so re-importing the file, or a longer one that overlaps it,
changes nothing. A line without one gets `sha256:<digest of its content>#<n>`, where n counts
the identical lines before it: two genuinely identical lines (two 20.00 payments on one day
with the same text) stay two records, and reading the file again gives them the same two ids.

A gateway's transaction id names one transaction, so the same id twice with the same content
is one record (a report downloaded over overlapping days and joined). Otherwise a repeated id
gets "#2", "#3"... in file order, which is just as stable: banks are loose with ids (some derive
the FITID from the date and amount), and a gateway may give the legs of a currency conversion
one id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from app.domain.reconciliation import Record, Side


@dataclass(frozen=True)
class Draft:
    """A record read from a row, before its id is settled. `own_id` is the file's own
    transaction id ("" when it has none)."""

    row: int
    record: Record
    own_id: str = ""


def content_key(record: Record) -> str:
    """What makes two lines the same line: every field but the id, whitespace collapsed."""
    fields = (
        record.side,
        record.kind,
        record.at.isoformat(),
        str(record.amount_minor),
        record.currency,
        str(record.fee_minor),
        record.reference,
        record.payout,
        record.description,
        record.counterparty,
    )
    return "\x1f".join(" ".join(str(value).split()) for value in fields)


def settle_ids(drafts: list[Draft]) -> list[Record]:
    """The records with their final ids, unique within the file."""
    records: list[Record] = []
    seen_own: set[tuple[str, str]] = set()  # (id, content)
    own_count: dict[str, int] = {}
    content_count: dict[str, int] = {}
    for draft in drafts:
        key = content_key(draft.record)
        if draft.own_id:
            own = draft.own_id
            if draft.record.side is Side.GATEWAY and (own, key) in seen_own:
                continue  # the same transaction listed twice is one transaction
            seen_own.add((own, key))
            count = own_count[own] = own_count.get(own, 0) + 1
            external_id = own if count == 1 else f"{own}#{count}"
        else:
            count = content_count[key] = content_count.get(key, 0) + 1
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
            external_id = f"sha256:{digest}#{count}"
        records.append(replace(draft.record, external_id=external_id))
    return records
