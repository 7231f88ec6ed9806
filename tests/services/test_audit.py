"""The audit trail: every change to a connection and every refund asked for is an entry in a hash
chain, and any entry changed, removed, inserted or moved behind Switchboard's back is named.
It is read a page at a time through filters and exported to CSV by those allowed to read it."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.domain.access import NotAllowed, Principal, Role
from app.domain.errors import ValidationFailed
from app.domain.money import Money
from app.services import Services, access
from app.services.audit import (
    CSV_COLUMNS,
    EXPORTED,
    GENESIS,
    TOPIC,
    AuditService,
    TrailFilter,
    entry_hash,
    record,
)
from app.services.events import EngineEvent
from app.services.payments import Candidate, ChargeOrder
from app.services.progress import Cancelled, Progress
from app.store.audit import AuditRow
from app.store.base import utcnow
from tests.support.polling import until

SANDBOX_KEY = "sk_sandbox_123456"
FAST_SANDBOX = {"approval_rate": "1", "error_rate": "0", "latency_ms": "1", "latency_p95_ms": "2"}


async def add_sandbox(services: Services, name: str, secret: str = SANDBOX_KEY) -> int:
    record = await services.connections.add(
        "sandbox-payments", name, FAST_SANDBOX, {"api_key": secret}
    )
    return record.id


async def four_entries(services: Services) -> AuditService:
    """Added, changed, paused, removed: four entries."""
    first = await add_sandbox(services, "Sandbox Pay")
    await services.connections.update(first, "Sandbox Cards", {**FAST_SANDBOX}, {})
    await services.connections.set_paused(first, True)
    await services.connections.remove(first)
    return AuditService(services.db)


async def sql(services: Services, *statements: str) -> None:
    def run(session: Session) -> None:
        for statement in statements:
            session.execute(text(statement))

    await services.db.write(run)


async def row_id(services: Services, seq: int) -> int:
    def query(session: Session) -> int:
        return int(session.scalar(select(AuditRow.id).where(AuditRow.seq == seq)) or 0)

    return await services.db.read(query)


async def test_the_chain_grows_with_each_change_and_verifies(services: Services) -> None:
    trail = AuditService(services.db)
    assert (await trail.verify()).ok
    trail = await four_entries(services)
    result = await trail.verify()
    assert result.ok, result.first_bad
    assert result.entries == 4
    entries = await trail.entries()
    assert [entry.action for entry in entries] == [
        "connection.removed",
        "connection.paused",
        "connection.changed",
        "connection.added",
    ]
    assert [entry.seq for entry in entries] == [4, 3, 2, 1]
    added = entries[-1]
    assert added.actor == access.SERVICE_NAME  # no one signed in: the service user
    assert added.machine
    assert added.record_kind == "connection"
    assert added.before is None
    assert added.after["name"] == "Sandbox Pay"
    assert added.after["kind"] == "sandbox-payments"
    assert added.after["in_credential_store"] == ["api_key"]
    changed = entries[-2]
    assert changed.before == {"kind": "sandbox-payments", "name": "Sandbox Pay"}
    assert changed.after == {"kind": "sandbox-payments", "name": "Sandbox Cards"}
    assert [entry.seq for entry in await trail.entries(action="connection.paused")] == [3]


async def test_only_the_settings_that_changed_are_recorded(services: Services) -> None:
    connection = await add_sandbox(services, "Sandbox Pay")
    with access.acting_as(Principal("Ms Moyo", Role.ADMINISTRATOR)):
        await services.connections.update(
            connection, "Sandbox Pay", {**FAST_SANDBOX, "latency_ms": "5"}, {}
        )
    [changed] = await AuditService(services.db).entries(action="connection.changed")
    assert changed.actor == "Ms Moyo"
    assert changed.before == {"kind": "sandbox-payments", "settings": {"latency_ms": 1.0}}
    assert changed.after == {"kind": "sandbox-payments", "settings": {"latency_ms": 5.0}}


async def test_a_refused_change_leaves_no_entry(services: Services) -> None:
    await add_sandbox(services, "Sandbox Pay")
    with pytest.raises(ValidationFailed):
        await add_sandbox(services, "sandbox pay")
    result = await AuditService(services.db).verify()
    assert (result.ok, result.entries) == (True, 1)


async def test_pausing_twice_is_one_change(services: Services) -> None:
    connection = await add_sandbox(services, "Sandbox Pay")
    await services.connections.set_paused(connection, True)
    await services.connections.set_paused(connection, True)
    await services.connections.set_paused(connection, False)
    actions = [entry.action for entry in await AuditService(services.db).entries()]
    assert actions == ["connection.resumed", "connection.paused", "connection.added"]


async def test_a_refund_asked_for_is_recorded_with_its_amount_and_payment(
    services: Services,
) -> None:
    gateway = await add_sandbox(services, "Sandbox Cards")
    paid = await services.payments.charge(
        ChargeOrder(
            idempotency_key=f"test-{uuid.uuid4().hex}",
            amount=Money(4_500, "USD"),
            method="card",
            candidates=(Candidate(gateway, "pm_sandbox_ok"),),
        )
    )
    assert paid.status == "succeeded"
    refund = await services.payments.refund(paid.id, Money(1_500, "USD"), "left the school")
    trail = AuditService(services.db)
    [entry] = await trail.entries(record_kind="refund")
    assert entry.action == "refund.requested"
    assert entry.record_id == str(refund.id)
    assert entry.after == {
        "payment": paid.id,
        "amount_minor": 1_500,
        "currency": "USD",
        "reason": "left the school",
    }
    assert (await trail.verify()).ok


async def test_an_edited_entry_is_named(services: Services) -> None:
    trail = await four_entries(services)
    await sql(
        services,
        "UPDATE audit_trail SET summary = json_set(summary, '$.after.name', 'Forged') "
        "WHERE seq = 2",
    )
    result = await trail.verify()
    assert not result.ok
    assert result.first_bad is not None
    assert (result.first_bad.seq, result.first_bad.id) == (2, await row_id(services, 2))
    assert "changed after it was written" in result.first_bad.reason


async def test_an_entry_deleted_from_the_middle_is_named(services: Services) -> None:
    trail = await four_entries(services)
    await sql(services, "DELETE FROM audit_trail WHERE seq = 2")
    result = await trail.verify()
    assert result.first_bad is not None
    assert (result.first_bad.seq, result.first_bad.id) == (3, await row_id(services, 3))
    assert "entry 2 before it is missing" in result.first_bad.reason


async def test_the_last_entry_deleted_is_named_from_the_anchor(services: Services) -> None:
    trail = await four_entries(services)
    last = await row_id(services, 4)
    await sql(services, "DELETE FROM audit_trail WHERE seq = 4")
    result = await trail.verify()
    assert result.first_bad is not None
    assert (result.first_bad.seq, result.first_bad.id) == (4, last)
    assert "missing from the end" in result.first_bad.reason


async def test_every_entry_deleted_is_noticed(services: Services) -> None:
    trail = await four_entries(services)
    await sql(services, "DELETE FROM audit_trail")
    result = await trail.verify()
    assert result.first_bad is not None
    assert result.first_bad.seq == 1
    assert "entries 1 to 4 are missing" in result.first_bad.reason


async def test_two_entries_swapped_are_named(services: Services) -> None:
    trail = await four_entries(services)
    await sql(
        services,
        "UPDATE audit_trail SET seq = -1 WHERE seq = 2",
        "UPDATE audit_trail SET seq = 2 WHERE seq = 3",
        "UPDATE audit_trail SET seq = 3 WHERE seq = -1",
    )
    result = await trail.verify()
    assert result.first_bad is not None
    assert result.first_bad.seq == 2
    assert "does not follow the entry before it" in result.first_bad.reason


def forged(seq: int, prev_hash: str) -> AuditRow:
    row = AuditRow(
        seq=seq,
        at=utcnow(),
        actor="office",
        machine="elsewhere",
        action="connection.added",
        record_kind="connection",
        record_id="99",
        summary={"before": None, "after": {"name": "Forged"}},
        prev_hash=prev_hash,
    )
    row.hash = entry_hash(row)  # a forger who knows the scheme
    return row


async def test_a_forged_entry_with_a_wrong_link_is_named(services: Services) -> None:
    trail = await four_entries(services)
    await services.db.write(lambda session: session.add(forged(5, GENESIS)))
    result = await trail.verify()
    assert result.first_bad is not None
    assert (result.first_bad.seq, result.first_bad.id) == (5, await row_id(services, 5))
    assert "does not follow" in result.first_bad.reason


async def test_a_forged_entry_linked_correctly_is_still_noticed(services: Services) -> None:
    trail = await four_entries(services)
    last_hash = (await trail.verify()).last_hash
    await services.db.write(lambda session: session.add(forged(5, last_hash)))
    result = await trail.verify()
    assert result.first_bad is not None
    assert result.first_bad.seq == 5
    assert "added outside Switchboard" in result.first_bad.reason


async def test_a_forged_entry_inserted_at_the_start_is_named(services: Services) -> None:
    trail = await four_entries(services)
    await sql(services, "UPDATE audit_trail SET seq = seq + 10")
    await sql(services, "UPDATE audit_trail SET seq = seq - 9")  # 2..5, room for a new 1
    await services.db.write(lambda session: session.add(forged(1, GENESIS)))
    result = await trail.verify()
    assert result.first_bad is not None
    assert result.first_bad.seq == 2
    assert "does not follow" in result.first_bad.reason


async def test_no_secret_value_ever_reaches_the_database(services: Services) -> None:
    first_secret = f"sk_unique_{uuid.uuid4().hex}"
    second_secret = f"sk_unique_{uuid.uuid4().hex}"
    connection = await add_sandbox(services, "Sandbox Pay", first_secret)
    await services.connections.update(
        connection, "Sandbox Cards", FAST_SANDBOX, {"api_key": second_secret}
    )
    await services.connections.remove(connection)

    def everything(session: Session) -> list[Any]:
        return list(session.execute(text("SELECT * FROM audit_trail")).all())

    rows = await services.db.read(everything)
    assert len(rows) == 3
    assert "replaced_in_credential_store" in str(rows[1])
    path = services.db.sqlite_path
    assert path is not None
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            content = file.read_bytes()
            assert first_secret.encode() not in content
            assert second_secret.encode() not in content


# --- reading: filters, pages, choices ----------------------------------------------------------

DAY = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


async def seed(
    services: Services, entries: list[tuple[str, str, str, str, dict[str, Any]]]
) -> None:
    """Entries (actor, action, record kind, record id, after) written through `record`, the
    n-th dated n days after DAY."""

    def write(session: Session) -> None:
        for actor, action, kind, record_id, after in entries:
            record(session, actor, action, kind, record_id, None, after)

    await services.db.write(write)

    def redate(session: Session) -> None:
        for seq in range(1, len(entries) + 1):
            row = session.scalars(select(AuditRow).where(AuditRow.seq == seq)).one()
            row.at = DAY + timedelta(days=seq - 1)

    await services.db.write(redate)


OFFICE_DAYS = [
    ("Ms Moyo", "connection.added", "connection", "1", {"name": "Stripe cards"}),
    ("Mr Banda", "refund.requested", "refund", "7", {"reason": "left the school"}),
    ("Ms Moyo", "connection.changed", "connection", "1", {"name": "Stripe cards (EUR)"}),
    ("engine", "connection.paused", "connection", "2", {"name": "Zoë's SMS gateway"}),
    ("Ms Moyo", "connections.tidied", "connection", "3", {"name": "Not a connection.* action"}),
]


async def seqs(trail: AuditService, **where: Any) -> list[int]:
    return [entry.seq for entry in (await trail.page(TrailFilter(**where))).entries]


async def test_filters_narrow_the_trail_newest_first(services: Services) -> None:
    await seed(services, OFFICE_DAYS)
    trail = services.audit
    assert await seqs(trail) == [5, 4, 3, 2, 1]
    assert await seqs(trail, actor="Ms Moyo") == [5, 3, 1]
    assert await seqs(trail, action="connection") == [4, 3, 1]  # the family, not "connections."
    assert await seqs(trail, action="connection.") == [4, 3, 1]
    assert await seqs(trail, action="connection.changed") == [3]
    assert await seqs(trail, record_kind="refund") == [2]
    assert await seqs(trail, record_kind="connection", record_id="1") == [3, 1]
    assert await seqs(trail, since=DAY + timedelta(days=1), until=DAY + timedelta(days=3)) == [
        3,
        2,
    ]
    assert await seqs(trail, text="stripe") == [3, 1]
    assert await seqs(trail, text="stripe EUR") == [3]
    assert await seqs(trail, text="zoë") == [4]  # stored escaped in JSON, found as typed
    assert await seqs(trail, text="banda") == [2]  # who acted counts too
    assert await seqs(trail, text="100%") == []  # LIKE's wildcards are plain letters here
    assert await seqs(trail, actor="Ms Moyo", text="EUR") == [3]
    page = await trail.page(TrailFilter(actor="nobody"))
    assert (page.entries, page.total, page.older) == ([], 0, None)


async def test_pages_follow_each_other_without_gaps_or_repeats(services: Services) -> None:
    await seed(
        services,
        [("office", "connection.changed", "connection", str(n), {"n": n}) for n in range(1, 451)],
    )
    trail = services.audit
    seen: list[int] = []
    cursor: int | None = None
    pages = 0
    while True:
        page = await trail.page(TrailFilter(), before=cursor, limit=200)
        assert page.total == 450
        seen += [entry.seq for entry in page.entries]
        pages += 1
        if page.older is None:
            break
        cursor = page.older
    assert pages == 3
    assert seen == list(range(450, 0, -1))
    narrowed = await trail.page(TrailFilter(record_id="7"), before=7)
    assert (narrowed.entries, narrowed.total) == ([], 1)  # the page after entry 7: nothing


async def test_the_filters_offer_everyone_who_acted_and_every_action(services: Services) -> None:
    await seed(services, OFFICE_DAYS)
    choices = await services.audit.choices()
    assert choices.actors == ["Mr Banda", "Ms Moyo", "engine"]
    assert choices.actions == [
        "connection.added",
        "connection.changed",
        "connection.paused",
        "connections.tidied",
        "refund.requested",
    ]
    assert choices.record_kinds == ["connection", "refund"]


async def test_a_committed_entry_is_announced_to_the_pages(services: Services) -> None:
    heard: list[EngineEvent] = []
    unsubscribe = services.events.subscribe(heard.append)
    try:
        await add_sandbox(services, "Sandbox Pay")
        event = await until(lambda: next((e for e in heard if e.topic == TOPIC), None))
        assert event.payload == {"seq": 1}
        with pytest.raises(ValidationFailed):  # refused: nothing committed, nothing announced
            await add_sandbox(services, "sandbox pay")
        await add_sandbox(services, "Sandbox Cards")
        await until(lambda: [e.payload for e in heard if e.topic == TOPIC][-1] == {"seq": 2})
    finally:
        unsubscribe()


# --- exporting ----------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


async def test_the_export_holds_every_matching_entry_oldest_first(
    services: Services, tmp_path: Path
) -> None:
    await four_entries(services)
    path = tmp_path / "trail.csv"
    result = await services.audit.export(path, TrailFilter(action="connection"))
    assert (result.path, result.entries) == (path, 4)
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == 5  # RFC 4180: CRLF after the header and each record
    assert raw.startswith(b"seq,at,actor,machine,action,record_kind,record_id,before,after,hash")
    rows = read_csv(path)
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [row["seq"] for row in rows] == ["1", "2", "3", "4"]
    assert [row["action"] for row in rows] == [
        "connection.added",
        "connection.changed",
        "connection.paused",
        "connection.removed",
    ]
    entries = {entry.seq: entry for entry in await services.audit.entries(action="connection")}
    for row in rows:
        entry = entries[int(row["seq"])]
        assert datetime.fromisoformat(row["at"]) == entry.at
        assert row["at"].endswith("+00:00")
        assert (row["actor"], row["machine"], row["record_kind"], row["record_id"]) == (
            entry.actor,
            entry.machine,
            entry.record_kind,
            entry.record_id,
        )
        assert row["hash"] == entry.hash
        assert len(entry.hash) == 64
    assert rows[0]["before"] == ""
    assert json.loads(rows[0]["after"])["name"] == "Sandbox Pay"
    assert json.loads(rows[1]["before"]) == {"kind": "sandbox-payments", "name": "Sandbox Pay"}
    assert SANDBOX_KEY not in path.read_text(encoding="utf-8")

    [exported] = await services.audit.entries(action=EXPORTED)
    assert exported.seq == 5
    assert exported.actor == access.actor()
    assert exported.after == {
        "file": str(path),
        "entries": 4,
        "filter": {"action": "connection"},
    }
    assert (await services.audit.verify()).ok


async def test_the_export_keeps_spreadsheets_from_running_cells_as_formulas(
    services: Services, tmp_path: Path
) -> None:
    await seed(
        services,
        [
            ('=HYPERLINK("http://evil.example")', "connection.added", "connection", "+1", {}),
            ("@SUM(A1:A9)", "connection.added", "connection", "-2", {"a": 1}),
            ("Ms Moyo", "connection.added", "connection", "3", {"note": "=1+1"}),
        ],
    )
    path = tmp_path / "trail.csv"
    await services.audit.export(path)
    rows = read_csv(path)
    assert [row["actor"] for row in rows] == [
        '\'=HYPERLINK("http://evil.example")',
        "'@SUM(A1:A9)",
        "Ms Moyo",
    ]
    assert [row["record_id"] for row in rows] == ["'+1", "'-2", "3"]
    assert json.loads(rows[2]["after"]) == {"note": "=1+1"}  # inside JSON: not a formula


async def test_a_cancelled_export_leaves_no_file_and_no_entry(
    services: Services, tmp_path: Path
) -> None:
    await four_entries(services)
    progress = Progress()
    progress.cancel()
    folder = tmp_path / "exports"
    folder.mkdir()
    with pytest.raises(Cancelled):
        await services.audit.export(folder / "trail.csv", progress=progress)
    assert not any(folder.iterdir())  # neither the file nor its partial
    assert await services.audit.entries(action=EXPORTED) == []


@pytest.mark.parametrize("role", [Role.STAFF, Role.VIEWER])
async def test_staff_and_viewers_may_not_read_or_export_the_trail_but_may_verify_it(
    services: Services, tmp_path: Path, role: Role
) -> None:
    await four_entries(services)
    path = tmp_path / "trail.csv"
    with access.acting_as(Principal("Ms Dube", role)):
        for reading in (
            services.audit.page(),
            services.audit.entries(),
            services.audit.choices(),
            services.audit.export(path),
        ):
            with pytest.raises(NotAllowed, match="may not read the audit trail"):
                await reading
        assert (await services.audit.verify()).ok
    assert not path.exists()
    assert await services.audit.entries(action=EXPORTED) == []


async def test_finance_may_read_and_export_the_trail_as_themselves(
    services: Services, tmp_path: Path
) -> None:
    await four_entries(services)
    with access.acting_as(Principal("Mr Banda", Role.FINANCE)):
        assert (await services.audit.page()).total == 4
        await services.audit.export(tmp_path / "trail.csv")
    [exported] = await services.audit.entries(action=EXPORTED)
    assert exported.actor == "Mr Banda"
