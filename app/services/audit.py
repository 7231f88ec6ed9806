"""The tamper-evident audit trail: who did what to which record, from which machine, and when.

Every entry is written by `record` inside the write transaction of the change it describes, so
the entry commits with the change or not at all. Entries form a hash chain: each one's hash is
SHA-256 over a canonical JSON of its contents and the hash of the entry before it, and
`seq` numbers them 1, 2, 3... without gaps. The last entry's seq, id and hash are also kept as
app state (the anchor), so removing entries from the end shows too. `verify` walks the chain
and names the first entry that was changed, removed, inserted or moved.

What this catches is a change made to the database behind Switchboard's back (a row edited,
deleted or added with a database tool); someone who rewrites every entry from a point on and
the anchor as well is caught only by comparing the last hash with one noted elsewhere
(`VerifyResult.last_hash`).

Secrets never enter a summary: keys named like a secret (secret, token, password, key,
auth...) are left out, and the values of the change's secret fields are blanked wherever they
appear.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.services.settings import get_state, put_state
from app.store.audit import AuditRow
from app.store.base import utcnow
from app.store.database import Database

GENESIS = "0" * 64  # the prev_hash of the first entry
ANCHOR = "audit.anchor"  # app state: {"seq", "id", "hash"} of the last entry written
HIDDEN = "[hidden]"
# Who acted, until people sign in: the desktop app's staff, a command, the background engine.
OFFICE, COMMAND_LINE, ENGINE = "office", "command line", "engine"
SECRET_NAME = re.compile(r"secret|token|passw|pwd|key|auth|cookie|signature", re.IGNORECASE)
MACHINE = socket.gethostname()[:255] or "unknown"
VERIFY_BATCH = 1_000


@dataclass(frozen=True)
class TrailEntry:
    id: int
    seq: int
    at: datetime
    actor: str
    machine: str
    action: str
    record_kind: str
    record_id: str
    before: Any
    after: Any


@dataclass(frozen=True)
class BadEntry:
    """The first entry that is not as it was written; `id` is None for an entry that is gone."""

    seq: int
    id: int | None
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    first_bad: BadEntry | None
    last_hash: str  # note it somewhere safe to catch a rewrite of the whole chain

    @property
    def ok(self) -> bool:
        return self.first_bad is None


# --- writing ------------------------------------------------------------------------------------


def record(
    session: Session,
    actor: str,
    action: str,
    record_kind: str,
    record_id: int | str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    secret_values: Iterable[str] = (),
) -> AuditRow:
    """Append one entry inside the caller's open write transaction.

    The next seq is read in the same transaction as the insert. That is safe because writes are
    serialized: in-process by the Database's single writer thread, across processes by SQLite's
    `BEGIN IMMEDIATE` (the write lock is held from the start of the transaction). The unique
    seq is the backstop: two writers racing for one seq make one of them fail and roll back,
    never fork the chain."""
    hide = [value for value in secret_values if value]
    summary = _plain({"before": _clean(before, hide), "after": _clean(after, hide)})
    last = session.scalar(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1))
    row = AuditRow(
        seq=last.seq + 1 if last is not None else 1,
        at=utcnow(),
        actor=actor[:100],
        machine=MACHINE,
        action=action,
        record_kind=record_kind,
        record_id=str(record_id),
        summary=summary,
        prev_hash=last.hash if last is not None else GENESIS,
    )
    row.hash = entry_hash(row)
    session.add(row)
    session.flush()
    put_state(session, ANCHOR, {"seq": row.seq, "id": row.id, "hash": row.hash})
    return row


def changes(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only what differs between two summaries: (the old values, the new values). Nested
    mappings (a connection's settings) are compared key by key."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for key in {**before, **after}:
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if isinstance(was, Mapping) and isinstance(now, Mapping):
            old[key], new[key] = changes(was, now)
        else:
            old[key], new[key] = was, now
    return old, new


def entry_hash(row: AuditRow) -> str:
    content = {
        "seq": row.seq,
        "at": row.at.astimezone(UTC).isoformat(),
        "actor": row.actor,
        "machine": row.machine,
        "action": row.action,
        "record_kind": row.record_kind,
        "record_id": row.record_id,
        "summary": row.summary,
        "prev_hash": row.prev_hash,
    }
    return hashlib.sha256(_canonical(content).encode("utf-8")).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _clean(value: Any, hide: list[str]) -> Any:
    """`value` without keys named like secrets and with secret values blanked."""
    if isinstance(value, Mapping):
        return {
            str(key): _clean(item, hide)
            for key, item in value.items()
            if not SECRET_NAME.search(str(key))
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, hide) for item in value]
    if isinstance(value, str) and any(secret in value for secret in hide):
        return HIDDEN
    return value


def _plain(value: Any) -> Any:
    """JSON types only, as the database gives them back, so the hash is the same on reading."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


# --- verifying ----------------------------------------------------------------------------------


def verify(session: Session) -> VerifyResult:
    """Walk the chain in seq order; the first entry that was changed, removed, inserted or moved,
    and why."""
    expected, prev_hash, last = 1, GENESIS, None
    count = 0
    rows = session.scalars(
        select(AuditRow).order_by(AuditRow.seq).execution_options(yield_per=VERIFY_BATCH)
    )
    anchor = get_state(session, ANCHOR)
    for row in rows:
        count += 1
        bad = _check(row, expected, prev_hash)
        if bad is not None:
            return VerifyResult(count, bad, prev_hash)
        expected, prev_hash, last = row.seq + 1, row.hash, row
    bad = _check_end(last, anchor)
    return VerifyResult(count, bad, prev_hash)


def _check(row: AuditRow, expected: int, prev_hash: str) -> BadEntry | None:
    if row.seq != expected:
        if row.seq > expected:
            missing = (
                f"entry {expected} before it is missing"
                if row.seq == expected + 1
                else f"entries {expected} to {row.seq - 1} before it are missing"
            )
            return BadEntry(row.seq, row.id, f"{missing} (removed from the database)")
        return BadEntry(row.seq, row.id, f"its number is out of order (expected {expected})")
    if row.prev_hash != prev_hash:
        if expected == 1:
            reason = "it does not start the chain (an entry was inserted or moved to the start)"
        else:
            reason = (
                "it does not follow the entry before it (entries were inserted, moved or reordered)"
            )
        return BadEntry(row.seq, row.id, reason)
    if row.hash != entry_hash(row):
        return BadEntry(row.seq, row.id, "its contents were changed after it was written")
    return None


def _check_end(last: AuditRow | None, anchor: Any) -> BadEntry | None:
    """The chain must end where the last write left it."""
    if not isinstance(anchor, Mapping):
        if last is None:
            return None
        return BadEntry(last.seq, last.id, "the record of where the trail ends is missing")
    end = int(anchor.get("seq", 0))
    end_id = anchor.get("id")
    last_seq = last.seq if last is not None else 0
    if last_seq < end:
        first_missing = last_seq + 1
        gone = (
            f"entry {end} is missing"
            if first_missing == end
            else f"entries {first_missing} to {end} are missing"
        )
        return BadEntry(
            first_missing,
            int(end_id) if first_missing == end and end_id is not None else None,
            f"{gone} from the end of the trail (removed from the database)",
        )
    if last is not None and last_seq > end:
        return BadEntry(
            end + 1,
            None,
            f"entries after {end} were added outside Switchboard",
        )
    if last is not None and last.hash != anchor.get("hash"):
        return BadEntry(
            last.seq, last.id, "it is not the entry the trail ended with (it was replaced)"
        )
    return None


# --- the service --------------------------------------------------------------------------------


def _entry(row: AuditRow) -> TrailEntry:
    summary = row.summary if isinstance(row.summary, dict) else {}
    return TrailEntry(
        id=row.id,
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        machine=row.machine,
        action=row.action,
        record_kind=row.record_kind,
        record_id=row.record_id,
        before=summary.get("before"),
        after=summary.get("after"),
    )


class AuditService:
    """Reads the trail: checks the chain, and lists entries for the audit page."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def verify(self) -> VerifyResult:
        return await self._db.read(verify)

    async def entries(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        record_kind: str | None = None,
        record_id: int | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[TrailEntry]:
        """The newest entries first, filtered by whichever of the fields are given."""

        def query(session: Session) -> list[TrailEntry]:
            statement = select(AuditRow).order_by(AuditRow.seq.desc()).limit(max(0, limit))
            if actor is not None:
                statement = statement.where(AuditRow.actor == actor)
            if action is not None:
                statement = statement.where(AuditRow.action == action)
            if record_kind is not None:
                statement = statement.where(AuditRow.record_kind == record_kind)
            if record_id is not None:
                statement = statement.where(AuditRow.record_id == str(record_id))
            if since is not None:
                statement = statement.where(AuditRow.at >= since)
            if until is not None:
                statement = statement.where(AuditRow.at < until)
            return [_entry(row) for row in session.scalars(statement)]

        return await self._db.read(query)
