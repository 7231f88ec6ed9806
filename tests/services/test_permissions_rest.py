"""Who may import settings, move the database, replay a range of outbound webhooks and decide
an approval: the guarded calls the school and money tables leave out, each tried as every
role. A role that may gets past the check (the call succeeds, or fails for another reason);
any other is refused with its sentence, and nothing is left changed: not the database, the
settings in use, the credential store nor this computer's database choice."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import NotAllowed, Permission, Principal, Role
from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.services import Services, access
from app.services.approvals import ApprovalNeeded
from app.services.database_move import check_target, move_database, use_shared_database
from app.services.payments import SUCCEEDED
from app.store.base import Base
from tests.services.test_permissions_money import Call, School, order
from tests.support.memory_keyring import MemoryKeyring

# A PostgreSQL address nothing answers at: the check comes before any connection, so a refused
# role is told so at once, and an administrator is told the server cannot be reached.
NOWHERE = "postgresql://office@127.0.0.1:1/switchboard"
# Who asks for what waits for approval: never the one who decides it.
BOB = Principal("Bob", Role.FINANCE, 101)
ADA = Principal("Ada", Role.ADMINISTRATOR, 104)


class Office(School):
    """What a guarded call needs to exist first; made as the service user (or, for a request
    waiting for approval, as whoever asks), before acting."""

    async def settings_export(self, *, change_connection: bool) -> Path:
        """A settings export with the school's name changed, and the gateway's error rate too
        when `change_connection` (an import of it then also needs to change connections)."""
        await self.gateway()
        out = await self.services.backups.export_settings(self.folder / "settings.json")
        document = json.loads(out.read_text("utf-8"))
        document["settings"]["school.name"] = "Bulawayo Music School"
        if change_connection:
            document["connections"][0]["config"]["error_rate"] = 0.25
        out.write_text(json.dumps(document), encoding="utf-8")
        return out

    async def refund_waiting(self) -> int:
        """Bob's refund of USD 250.00, waiting for a second person's approval."""
        await self.services.settings.set("approvals.refund_above", 100)
        payment = await self.services.payments.charge(
            replace(order(await self.gateway()), amount=Money(30_000, "USD"))
        )
        assert payment.status == SUCCEEDED
        with access.acting_as(BOB), pytest.raises(ApprovalNeeded) as waiting:
            await self.services.payments.refund(payment.id, Money(25_000, "USD"), "moved away")
        return waiting.value.approval.id

    async def gateway_off_waiting(self, *, remove: bool) -> int:
        """Ada switching a gateway off (pausing or removing it), waiting for approval."""
        await self.services.settings.set("approvals.gateway_off", True)
        gateway = await self.gateway()
        connections = self.services.connections
        with access.acting_as(ADA), pytest.raises(ApprovalNeeded) as waiting:
            await (connections.remove(gateway) if remove else connections.set_paused(gateway, True))
        return waiting.value.approval.id


# --- each guarded call: what it needs first, then the call itself ----------------------------


async def import_settings(office: Office) -> Call:
    out = await office.settings_export(change_connection=False)
    return lambda: office.services.backups.import_settings(out)


async def import_settings_and_connections(office: Office) -> Call:
    """MANAGE_SETTINGS is checked first, then MANAGE_CONNECTIONS for the connection changed;
    only an administrator holds the first, so the refusal names the settings."""
    out = await office.settings_export(change_connection=True)
    return lambda: office.services.backups.import_settings(out)


async def move(office: Office) -> Call:
    source = office.services.config.db_url
    return lambda: move_database(source, NOWHERE)


async def probe_target(office: Office) -> Call:
    return lambda: check_target(NOWHERE)


async def use_shared(office: Office) -> Call:
    paths = office.services.config.paths
    return lambda: use_shared_database(paths, NOWHERE, "the server's password")


async def replay_range(office: Office) -> Call:
    """An event emitted before the endpoint was added: a replay of the hour sends it."""
    outbound = office.services.outbound
    since = datetime.now(UTC) - timedelta(hours=1)
    await outbound.emit("payment.succeeded", {"payment": 1})
    await outbound.add_endpoint("http://127.0.0.1:9/hooks")
    until = datetime.now(UTC) + timedelta(hours=1)
    return lambda: outbound.replay_range(since, until)


async def approve_refund(office: Office) -> Call:
    approval = await office.refund_waiting()
    return lambda: office.services.approvals.approve(approval)


async def reject_refund(office: Office) -> Call:
    approval = await office.refund_waiting()
    return lambda: office.services.approvals.reject(approval, "already credited")


async def approve_pause(office: Office) -> Call:
    approval = await office.gateway_off_waiting(remove=False)
    return lambda: office.services.approvals.approve(approval)


async def reject_pause(office: Office) -> Call:
    approval = await office.gateway_off_waiting(remove=False)
    return lambda: office.services.approvals.reject(approval, "the term is not over")


async def approve_removal(office: Office) -> Call:
    approval = await office.gateway_off_waiting(remove=True)
    return lambda: office.services.approvals.approve(approval)


async def reject_removal(office: Office) -> Call:
    approval = await office.gateway_off_waiting(remove=True)
    return lambda: office.services.approvals.reject(approval, "families still pay through it")


# --- the specification --------------------------------------------------------------------

ADMINISTRATOR, FINANCE = Role.ADMINISTRATOR, Role.FINANCE
MONEY = {ADMINISTRATOR, FINANCE}
ADMIN = {ADMINISTRATOR}
P = Permission

SPEC: list[tuple[str, set[Role], Permission, Callable[[Office], Awaitable[Call]]]] = [
    # the call                                   who may  refused as "may not P.X"     set-up
    ("backups.import_settings",                  ADMIN, P.MANAGE_SETTINGS,         import_settings),
    ("backups.import_settings-connections",      ADMIN, P.MANAGE_SETTINGS,         import_settings_and_connections),  # noqa: E501
    ("database_move.move_database",              ADMIN, P.MOVE_DATABASE,           move),
    ("database_move.check_target",               ADMIN, P.MOVE_DATABASE,           probe_target),
    ("database_move.use_shared_database",        ADMIN, P.MOVE_DATABASE,           use_shared),
    ("outbound.replay_range",                    ADMIN, P.REPLAY_EVENTS,           replay_range),
    ("approvals.approve-refund",                 MONEY, P.APPROVE_REFUNDS,         approve_refund),
    ("approvals.reject-refund",                  MONEY, P.APPROVE_REFUNDS,         reject_refund),
    ("approvals.approve-gateway_pause",          ADMIN, P.APPROVE_GATEWAY_CHANGES, approve_pause),
    ("approvals.reject-gateway_pause",           ADMIN, P.APPROVE_GATEWAY_CHANGES, reject_pause),
    ("approvals.approve-gateway_removal",        ADMIN, P.APPROVE_GATEWAY_CHANGES, approve_removal),
    ("approvals.reject-gateway_removal",         ADMIN, P.APPROVE_GATEWAY_CHANGES, reject_removal),
]  # fmt: skip


async def everything(services: Services, credentials: MemoryKeyring) -> dict[str, Any]:
    """Every row of every table, the settings in use, the credential store and this
    computer's database choice: to show that a refused call changed nothing."""
    await services.requests.flush()

    def read(session: Session) -> dict[str, list[str]]:
        return {
            table.name: sorted(repr(tuple(row)) for row in session.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }

    config_dir = services.config.paths.config_dir
    return {
        "tables": await services.db.read(read),
        "settings": services.settings.values(),
        "credentials": dict(credentials.entries),
        "config files": sorted(
            (path.name, path.read_bytes()) for path in config_dir.glob("*") if path.is_file()
        ),
    }


@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.value)
@pytest.mark.parametrize(
    ("call", "allowed", "permission", "setup"), SPEC, ids=[row[0] for row in SPEC]
)
async def test_each_role_is_allowed_or_refused_each_remaining_guarded_call(
    services: Services,
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
    role: Role,
    call: str,
    allowed: set[Role],
    permission: Permission,
    setup: Callable[[Office], Awaitable[Call]],
) -> None:
    act = await setup(Office(services, tmp_path))
    before = await everything(services, memory_keyring)
    with access.acting_as(Principal("someone", role)):
        if role in allowed:
            try:
                await act()
            except NotAllowed as wrongly:
                pytest.fail(f"{role.label} was refused {call}: {wrongly}")
            except SwitchboardError:
                return  # past the check; refused for another reason (no server there, say)
            # The same look that finds nothing changed after a refusal sees what this did.
            assert await everything(services, memory_keyring) != before, f"{call} did nothing"
            return
        with pytest.raises(NotAllowed) as refused:
            await act()
    who_may = " or ".join(each.label for each in Role if each in allowed)
    assert str(refused.value) == (
        f"someone ({role.label}) may not {permission.value}; ask someone with the {who_may} role."
    )
    assert refused.value.permission is permission
    assert await everything(services, memory_keyring) == before
