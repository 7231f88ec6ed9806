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

Reading the trail (the Audit page, `entries`, the CSV export) needs the VIEW_AUDIT permission;
checking it (`verify`) is open to everyone. Each commit that wrote entries publishes `audit`
({"seq": the last one}) on the engine's event hub, so the page shows new entries as they come.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    ColumnElement,
    Engine,
    Row,
    String,
    and_,
    cast,
    event,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.services import access, claims
from app.services.events import EventHub
from app.services.progress import Progress
from app.services.settings import get_state, put_state
from app.store.audit import AuditRow
from app.store.base import utcnow
from app.store.database import Database

GENESIS = "0" * 64  # the prev_hash of the first entry
ANCHOR = "audit.anchor"  # app state: {"seq", "id", "hash"} of the last entry written
HIDDEN = "[hidden]"
SECRET_NAME = re.compile(r"secret|token|passw|pwd|key|auth|cookie|signature", re.IGNORECASE)
MACHINE = socket.gethostname()[:255] or "unknown"
VERIFY_BATCH = 1_000
TOPIC = "audit"
PAGE_SIZE = 200
EXPORT_BATCH = 2_000
EXPORTED = "audit.exported"
CSV_COLUMNS = (
    "seq", "at", "actor", "machine", "action", "record_kind", "record_id", "before", "after",
    "hash",
)  # fmt: skip
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula


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
    hash: str = ""


@dataclass(frozen=True)
class TrailFilter:
    """Which entries to show or export; every field given must match.

    `action` is an action ("connection.added") or a family of them ("connection" matches
    "connection.added", "connection.removed"...). `text` is words that must each appear
    somewhere in the entry: its summary, who, the action or the record."""

    since: datetime | None = None  # from this moment on
    until: datetime | None = None  # up to (not including) this moment
    actor: str | None = None
    action: str | None = None
    record_kind: str | None = None
    record_id: str | None = None
    text: str = ""

    def as_json(self) -> dict[str, Any]:
        """The fields given, for the export's own entry and `--json`."""
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in asdict(self).items()
            if value not in (None, "")
        }


@dataclass(frozen=True)
class TrailPage:
    """Entries newest first, how many match in all, and the cursor for the next, older page
    (pass it as `before`; None when these are the oldest)."""

    entries: list[TrailEntry]
    total: int
    older: int | None


@dataclass(frozen=True)
class TrailChoices:
    """What the filters can offer: everyone who acted, every action and kind of record."""

    actors: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    record_kinds: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    entries: int


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

    The next seq is read in the same transaction as the insert. That is safe because writes to
    the trail are serialized: in-process by the Database's single writer thread, across
    processes by SQLite's `BEGIN IMMEDIATE` (the write lock is held from the start of the
    transaction), and across engines sharing PostgreSQL by an advisory lock held to the end of
    the transaction. The unique seq is the backstop: two writers racing for one seq make one of
    them fail and roll back, never fork the chain."""
    claims.exclusive(session, "audit")
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
    session.info[_WRITTEN] = row.seq
    return row


# --- telling the pages --------------------------------------------------------------------------

_WRITTEN = "switchboard.audit.written"  # session.info: the last seq written, until commit
# Each database's hub, so a commit can tell the right engine's pages (tests open many).
_hubs: WeakKeyDictionary[Engine, EventHub] = WeakKeyDictionary()


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    """Once the entries are committed (never before: a page would read the old trail)."""
    seq = session.info.pop(_WRITTEN, None)
    bind = session.bind
    if seq is None or not isinstance(bind, Engine):
        return
    hub = _hubs.get(bind)
    if hub is not None:
        hub.publish(TOPIC, {"seq": seq})


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_WRITTEN, None)


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
        hash=row.hash,
    )


class AuditService:
    """Reads the trail for the audit page and the command line: checks the chain, lists and
    filters entries a page at a time, and exports them to CSV.

    Publishes `audit` ({"seq": the last entry}) after each commit that wrote entries."""

    def __init__(self, db: Database, events: EventHub | None = None) -> None:
        self._db = db
        if events is not None:
            _hubs[db.write_engine] = events

    async def verify(self) -> VerifyResult:
        """Open to everyone: anyone may check that the trail is intact."""
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
        """The newest entries first, filtered by whichever of the fields are given (`action`:
        an action or a family, as in TrailFilter)."""
        where = TrailFilter(
            since=since,
            until=until,
            actor=actor,
            action=action,
            record_kind=record_kind,
            record_id=None if record_id is None else str(record_id),
        )
        return (await self.page(where, limit=limit)).entries

    async def page(
        self, where: TrailFilter | None = None, *, before: int | None = None, limit: int = PAGE_SIZE
    ) -> TrailPage:
        """One page of the entries matching `where`, newest first, from just older than the
        entry numbered `before` (the previous page's `older`). Paging by number, not by
        offset, keeps the hundredth page as quick as the first."""
        access.require(Permission.VIEW_AUDIT)
        where = where or TrailFilter()
        limit = max(0, limit)

        def query(session: Session) -> TrailPage:
            conditions = _conditions(where)
            total = session.scalar(select(func.count()).select_from(AuditRow).where(*conditions))
            statement = select(AuditRow).where(*conditions).order_by(AuditRow.seq.desc())
            if before is not None:
                statement = statement.where(AuditRow.seq < before)
            rows = list(session.scalars(statement.limit(limit + 1)))
            older = rows[limit - 1].seq if len(rows) > limit and limit else None
            return TrailPage([_entry(row) for row in rows[:limit]], int(total or 0), older)

        return await self._db.read(query)

    async def choices(self) -> TrailChoices:
        """Everyone who acted and every action and kind of record in the trail, sorted."""
        access.require(Permission.VIEW_AUDIT)

        def query(session: Session) -> TrailChoices:
            def distinct(column: Any) -> list[str]:
                return list(session.scalars(select(column).distinct().order_by(column)))

            return TrailChoices(
                distinct(AuditRow.actor), distinct(AuditRow.action), distinct(AuditRow.record_kind)
            )

        return await self._db.read(query)

    async def export(
        self, path: Path, where: TrailFilter | None = None, progress: Progress | None = None
    ) -> ExportResult:
        """Every entry matching `where`, oldest first, to a CSV file at `path` (RFC 4180,
        UTF-8), read and written a batch at a time so a trail of any size fits in memory.
        The file appears whole or not at all: a cancelled or failed export leaves none.
        The export is itself an entry in the trail ("audit.exported")."""
        who = access.require(Permission.VIEW_AUDIT).name  # the writer thread cannot see it
        where = where or TrailFilter()
        progress = progress or Progress()
        count = await self._db.read(_export_csv, path, where, progress)
        summary = {"file": str(path), "entries": count, "filter": where.as_json()}

        def note(session: Session) -> None:
            record(session, who, EXPORTED, "export", path.name[:64], None, summary)

        await self._db.write(note)
        return ExportResult(path, count)


def _conditions(where: TrailFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.since is not None:
        conditions.append(AuditRow.at >= where.since)
    if where.until is not None:
        conditions.append(AuditRow.at < where.until)
    if where.actor is not None:
        conditions.append(AuditRow.actor == where.actor)
    if where.action:
        family = where.action.rstrip(".")
        # A range the index on action serves ("/" follows "."), then only the family itself
        # and what follows it after a dot ("connection-x" is in the range, not the family).
        conditions.append(
            and_(
                AuditRow.action >= family,
                AuditRow.action < family + "/",
                or_(
                    AuditRow.action == family,
                    func.substr(AuditRow.action, len(family) + 1, 1) == ".",
                ),
            )
        )
    if where.record_kind is not None:
        conditions.append(AuditRow.record_kind == where.record_kind)
    if where.record_id is not None:
        conditions.append(AuditRow.record_id == where.record_id)
    for word in where.text.split():
        conditions.append(_mentions(word))
    return conditions


def _mentions(word: str) -> ColumnElement[bool]:
    """The entry holds `word` anywhere, case aside (ILIKE: PostgreSQL's LIKE minds case)."""
    # The summary is stored as JSON text with non-ASCII letters escaped ("Zo\u00eb"), so a
    # word is looked for both as typed and as JSON writes it.
    spellings = {word, json.dumps(word)[1:-1]}
    columns = (
        cast(AuditRow.summary, String),
        AuditRow.actor,
        AuditRow.action,
        AuditRow.record_kind,
        AuditRow.record_id,
        AuditRow.machine,
    )
    found: ColumnElement[bool] = false()
    for spelling in spellings:
        pattern = "%" + _like_escape(spelling) + "%"
        for column in columns:
            found = found | column.ilike(pattern, escape="\\")
    return found


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- CSV ----------------------------------------------------------------------------------------


def _export_csv(session: Session, path: Path, where: TrailFilter, progress: Progress) -> int:
    conditions = _conditions(where)
    total = int(session.scalar(select(func.count()).select_from(AuditRow).where(*conditions)) or 0)
    progress.start(total)
    partial = path.with_name(path.name + ".partial")
    written = 0
    try:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(CSV_COLUMNS)
            for batch in _batches(session, conditions):
                progress.check()
                writer.writerows(_csv_row(entry) for entry in batch)
                written += len(batch)
                progress.advance(len(batch))
            progress.check()
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


_EXPORTED_COLUMNS = (
    AuditRow.seq,
    AuditRow.at,
    AuditRow.actor,
    AuditRow.machine,
    AuditRow.action,
    AuditRow.record_kind,
    AuditRow.record_id,
    AuditRow.summary,
    AuditRow.hash,
)


def _batches(session: Session, conditions: list[ColumnElement[bool]]) -> Iterator[list[Row[Any]]]:
    """The matching entries in seq order, EXPORT_BATCH at a time (keyset: each batch starts
    after the last one's seq, so memory stays flat and nothing is read twice). Plain rows, not
    ORM objects: a large trail exports several times faster."""
    after = 0
    while True:
        batch = list(
            session.execute(
                select(*_EXPORTED_COLUMNS)
                .where(*conditions, AuditRow.seq > after)
                .order_by(AuditRow.seq)
                .limit(EXPORT_BATCH)
            )
        )
        if not batch:
            return
        yield batch
        after = batch[-1].seq


def _csv_row(row: Row[Any]) -> list[str]:
    summary = row.summary if isinstance(row.summary, dict) else {}
    cells = [
        str(row.seq),
        row.at.astimezone(UTC).isoformat(),
        row.actor,
        row.machine,
        row.action,
        row.record_kind,
        row.record_id,
        _json_cell(summary.get("before")),
        _json_cell(summary.get("after")),
        row.hash,
    ]
    return [guard_cell(cell) for cell in cells]


def _json_cell(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def guard_cell(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula: an apostrophe before a cell that
    starts like one (OWASP's advice for CSV injection)."""
    return "'" + value if value.startswith(FORMULA_START) else value
