"""The audit trail: every change to a connection and every refund asked for is an entry in a hash
chain, and any entry changed, removed, inserted or moved behind Switchboard's back is named."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.domain.errors import ValidationFailed
from app.domain.money import Money
from app.services import Services
from app.services.audit import GENESIS, AuditService, entry_hash
from app.services.payments import Candidate, ChargeOrder
from app.store.audit import AuditRow
from app.store.base import utcnow

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
    assert added.actor == "office"
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
    await services.connections.update(
        connection, "Sandbox Pay", {**FAST_SANDBOX, "latency_ms": "5"}, {}, actor="Ms Moyo"
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
