"""Who may move money and change connections, checked in the services themselves (so the
command line and the engine obey it as the pages do): each guarded call against each role,
and every change an entry in the audit trail that names who made it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import NotAllowed, Permission, Principal, Role
from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.domain.payments import GatewayLedger
from app.domain.routing_rules import RuleDraft
from app.services import Services, access
from app.services.payments import SUCCEEDED, Candidate, ChargeOrder, LinkOrder
from app.services.reconciliation.books import payment_number
from app.store.base import Base
from app.store.integration import WebhookInboxEntry
from app.store.school import Guardian, Invoice

FAST_SANDBOX = {"approval_rate": "1", "error_rate": "0", "latency_ms": "1", "latency_p95_ms": "2"}
DUE = date(2026, 11, 20)
BANK = (Path(__file__).parents[1] / "data" / "reconciliation" / "bank_march.csv").read_text(
    encoding="utf-8"
)

Call = Callable[[], Awaitable[object]]


@dataclass
class School:
    """What a guarded call needs to exist first; made as the service user, before acting."""

    services: Services
    folder: Path

    async def gateway(self) -> int:
        record = await self.services.connections.add(
            "sandbox-payments", f"Sandbox {uuid.uuid4().hex[:6]}", FAST_SANDBOX, {"api_key": "sk_1"}
        )
        return record.id

    async def paid(self) -> int:
        """A payment of USD 45.00 that went through."""
        payment = await self.services.payments.charge(order(await self.gateway()))
        assert payment.status == SUCCEEDED
        return payment.id

    async def family(self) -> tuple[int, int, int]:
        """A guardian with a card saved at a gateway, and an invoice of theirs due: (guardian,
        invoice, gateway)."""
        gateway = await self.gateway()

        def write(session: Session) -> tuple[int, int]:
            guardian = Guardian(ref=f"G-{uuid.uuid4().hex[:6]}", first_name="Ann", last_name="Lee")
            session.add(guardian)
            session.flush()
            invoice = Invoice(
                number=f"INV-{uuid.uuid4().hex[:6]}",
                guardian_id=guardian.id,
                currency="USD",
                total_minor=5_000,
                issued_on=date(2026, 11, 1),
                due_on=DUE,
            )
            session.add(invoice)
            session.flush()
            return guardian.id, invoice.id

        guardian, invoice = await self.services.db.write(write)
        await self.services.routing.save_method(guardian, gateway, "card", "pm_sandbox_visa")
        return guardian, invoice, gateway

    async def billing_run(self) -> int:
        await self.family()
        return (await self.services.billing.prepare(DUE)).id

    async def rule(self) -> int:
        rule = await self.services.routing.save_rule(
            RuleDraft(gateways=(await self.gateway(),), currency="USD")
        )
        return rule.id

    async def dead_event(self) -> int:
        gateway = await self.gateway()

        def write(session: Session) -> int:
            row = WebhookInboxEntry(
                connection_id=gateway,
                provider_event_id=f"evt_{uuid.uuid4().hex}",
                event_type="payment_intent.succeeded",
                body=b"{}",
                status="dead",
                attempts=8,
            )
            session.add(row)
            session.flush()
            return row.id

        return await self.services.db.write(write)

    def statement(self) -> Path:
        path = self.folder / f"bank-{uuid.uuid4().hex[:6]}.csv"
        path.write_text(BANK, encoding="utf-8")
        return path

    async def bank(self) -> str:
        return await self.services.reconciliation.source_for_bank("Main account")

    async def reconciled(self) -> tuple[int, int]:
        """A payment in the ledger and the bank's payout line of USD 144.47, after a run:
        (the payment's record, the bank line's record)."""
        payment = await self.paid()
        recon = self.services.reconciliation
        await recon.import_file(self.statement(), "bank-csv", source=await self.bank())
        await recon.run()
        [payout] = [line for line in await recon.lines() if line.amount_minor == 14_447]
        return payment_number(payment), payout.number


def order(gateway: int, key: str = "") -> ChargeOrder:
    return ChargeOrder(
        idempotency_key=key or f"test-{uuid.uuid4().hex}",
        amount=Money(4_500, "USD"),
        method="card",
        candidates=(Candidate(gateway, "pm_sandbox_ok"),),
    )


# --- each guarded call: what it needs first, then the call itself --------------------------


async def charge(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.payments.charge(order(gateway))


async def create_link(school: School) -> Call:
    gateway = await school.gateway()
    link = LinkOrder(f"link-{uuid.uuid4().hex}", Money(4_500, "USD"), gateway, "Term fees")
    return lambda: school.services.payments.create_link(link)


async def refund(school: School) -> Call:
    payment = await school.paid()
    return lambda: school.services.payments.refund(payment, Money(1_000, "USD"))


async def charge_saved_method(school: School) -> Call:
    guardian, _, _ = await school.family()
    return lambda: school.services.routing.charge(
        school.services.payments,
        guardian_id=guardian,
        amount=Money(4_500, "USD"),
        method="card",
        idempotency_key=uuid.uuid4().hex,
    )


async def save_method(school: School) -> Call:
    guardian, _, gateway = await school.family()
    return lambda: school.services.routing.save_method(guardian, gateway, "card", "pm_new")


async def prepare_billing(school: School) -> Call:
    await school.family()
    return lambda: school.services.billing.prepare(DUE)


async def run_billing(school: School) -> Call:
    run = await school.billing_run()
    return lambda: school.services.billing.run(run)


async def cancel_billing(school: School) -> Call:
    run = await school.billing_run()
    return lambda: school.services.billing.cancel(run)


async def retry_billing(school: School) -> Call:
    run = await school.billing_run()
    return lambda: school.services.billing.retry_failed(run)


async def pause_billing(school: School) -> Call:
    run = await school.billing_run()

    async def pause() -> None:
        school.services.billing.stop(run)

    return pause


async def charge_invoice(school: School) -> Call:
    _, invoice, _ = await school.family()
    return lambda: school.services.billing.charge_invoice(invoice)


async def import_statement(school: School) -> Call:
    bank, path = await school.bank(), school.statement()
    return lambda: school.services.reconciliation.import_file(path, "bank-csv", source=bank)


async def pull_gateway(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.reconciliation.pull(gateway)


async def keep_ledger(school: School) -> Call:
    gateway = await school.gateway()
    ledger = GatewayLedger(entries=[], payouts=[])
    until = datetime.now(UTC)
    return lambda: school.services.reconciliation.keep_ledger(gateway, ledger, until)


async def add_bank_account(school: School) -> Call:
    return lambda: school.services.reconciliation.source_for_bank("Savings")


async def add_gateway_source(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.reconciliation.source_for_connection(gateway)


async def remember_mapping(school: School) -> Call:
    bank = await school.bank()
    return lambda: school.services.reconciliation.remember(bank, "bank-csv", None)


async def reconcile(school: School) -> Call:
    await school.paid()
    return lambda: school.services.reconciliation.run()


async def match(school: School) -> Call:
    payment, payout = await school.reconciled()
    return lambda: school.services.reconciliation.match([payment, payout], "same money")


async def unmatch(school: School) -> Call:
    payment, _ = await school.reconciled()
    return lambda: school.services.reconciliation.unmatch([payment], "wrong family")


async def write_off(school: School) -> Call:
    _, payout = await school.reconciled()
    return lambda: school.services.reconciliation.write_off([payout], "bank's rounding")


async def split(school: School) -> Call:
    _, payout = await school.reconciled()
    return lambda: school.services.reconciliation.split(payout, [10_000, 4_447], "two payouts")


async def undo(school: School) -> Call:
    _, payout = await school.reconciled()
    decision = await school.services.reconciliation.write_off([payout], "bank's rounding")
    return lambda: school.services.reconciliation.undo(decision.id)


async def save_rule(school: School) -> Call:
    draft = RuleDraft(gateways=(await school.gateway(),), currency="EUR")
    return lambda: school.services.routing.save_rule(draft)


async def remove_rule(school: School) -> Call:
    rule = await school.rule()
    return lambda: school.services.routing.remove_rule(rule)


async def move_rule(school: School) -> Call:
    await school.rule()
    rule = await school.rule()
    return lambda: school.services.routing.move_rule(rule, 0)


async def add_connection(school: School) -> Call:
    return lambda: school.services.connections.add(
        "sandbox-payments", "Sandbox Two", FAST_SANDBOX, {"api_key": "sk_2"}
    )


async def change_connection(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.connections.update(gateway, "Renamed", FAST_SANDBOX, {})


async def forget_secret(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.connections.forget_secret(gateway, "api_key")


async def remove_connection(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.connections.remove(gateway)


async def pause_connection(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.connections.set_paused(gateway, True)


async def reset_breakers(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.connections.reset_breakers(gateway)


async def hold_open(school: School) -> Call:
    gateway = await school.gateway()
    return lambda: school.services.connections.hold_open(gateway)


async def replay_event(school: School) -> Call:
    event = await school.dead_event()
    return lambda: school.services.inbox_worker.replay([event])


# --- the specification --------------------------------------------------------------------

ADMINISTRATOR, FINANCE = Role.ADMINISTRATOR, Role.FINANCE
MONEY = {ADMINISTRATOR, FINANCE}  # the bursar's work
ADMIN = {ADMINISTRATOR}
P = Permission

SPEC: list[tuple[str, set[Role], Permission, Callable[[School], Awaitable[Call]]]] = [
    # the call                              who may  refused as "may not P.X"  set-up
    ("payments.charge",                     MONEY, P.TAKE_PAYMENTS,       charge),
    ("payments.create_link",                MONEY, P.TAKE_PAYMENTS,       create_link),
    ("payments.refund",                     MONEY, P.REFUND,              refund),
    ("routing.charge",                      MONEY, P.TAKE_PAYMENTS,       charge_saved_method),
    ("routing.save_method",                 MONEY, P.TAKE_PAYMENTS,       save_method),
    ("billing.prepare",                     MONEY, P.RUN_BILLING,         prepare_billing),
    ("billing.run",                         MONEY, P.RUN_BILLING,         run_billing),
    ("billing.stop",                        MONEY, P.RUN_BILLING,         pause_billing),
    ("billing.cancel",                      MONEY, P.RUN_BILLING,         cancel_billing),
    ("billing.retry_failed",                MONEY, P.RUN_BILLING,         retry_billing),
    ("billing.charge_invoice",              MONEY, P.RUN_BILLING,         charge_invoice),
    ("reconciliation.import_file",          MONEY, P.RECONCILE,           import_statement),
    ("reconciliation.pull",                 MONEY, P.RECONCILE,           pull_gateway),
    ("reconciliation.keep_ledger",          MONEY, P.RECONCILE,           keep_ledger),
    ("reconciliation.source_for_bank",      MONEY, P.RECONCILE,           add_bank_account),
    ("reconciliation.source_for_connection", MONEY, P.RECONCILE,         add_gateway_source),
    ("reconciliation.remember",             MONEY, P.RECONCILE,           remember_mapping),
    ("reconciliation.run",                  MONEY, P.RECONCILE,           reconcile),
    ("reconciliation.match",                MONEY, P.RECONCILE,           match),
    ("reconciliation.unmatch",              MONEY, P.RECONCILE,           unmatch),
    ("reconciliation.write_off",            MONEY, P.RECONCILE,           write_off),
    ("reconciliation.split",                MONEY, P.RECONCILE,           split),
    ("reconciliation.undo",                 MONEY, P.RECONCILE,           undo),
    ("routing.save_rule",                   ADMIN, P.MANAGE_CONNECTIONS,  save_rule),
    ("routing.remove_rule",                 ADMIN, P.MANAGE_CONNECTIONS,  remove_rule),
    ("routing.move_rule",                   ADMIN, P.MANAGE_CONNECTIONS,  move_rule),
    ("connections.add",                     ADMIN, P.MANAGE_CONNECTIONS,  add_connection),
    ("connections.update",                  ADMIN, P.MANAGE_CONNECTIONS,  change_connection),
    ("connections.forget_secret",           ADMIN, P.MANAGE_CONNECTIONS,  forget_secret),
    ("connections.remove",                  ADMIN, P.MANAGE_CONNECTIONS,  remove_connection),
    ("connections.set_paused",              ADMIN, P.MANAGE_CONNECTIONS,  pause_connection),
    ("connections.reset_breakers",          ADMIN, P.MANAGE_CONNECTIONS,  reset_breakers),
    ("connections.hold_open",               ADMIN, P.MANAGE_CONNECTIONS,  hold_open),
    ("inbox_worker.replay",                 ADMIN, P.REPLAY_EVENTS,       replay_event),
]  # fmt: skip


async def everything(services: Services) -> dict[str, list[str]]:
    """Every row of every table, to show that a refused call changed nothing."""
    await services.requests.flush()

    def read(session: Session) -> dict[str, list[str]]:
        return {
            table.name: sorted(repr(tuple(row)) for row in session.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }

    return await services.db.read(read)


@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.value)
@pytest.mark.parametrize(
    ("call", "allowed", "permission", "setup"), SPEC, ids=[row[0] for row in SPEC]
)
async def test_each_role_is_allowed_or_refused_each_guarded_call(
    services: Services,
    tmp_path: Path,
    role: Role,
    call: str,
    allowed: set[Role],
    permission: Permission,
    setup: Callable[[School], Awaitable[Call]],
) -> None:
    act = await setup(School(services, tmp_path))
    before = await everything(services)
    with access.acting_as(Principal("someone", role)):
        if role in allowed:
            try:
                await act()
            except NotAllowed as refused:
                pytest.fail(f"{role.label} was refused {call}: {refused}")
            except SwitchboardError:
                pass  # past the check; refused for another reason (nothing left, say)
            return
        with pytest.raises(NotAllowed) as refused:
            await act()
    who_may = " or ".join(each.label for each in Role if each in allowed)
    assert str(refused.value) == (
        f"someone ({role.label}) may not {permission.value}; ask someone with the {who_may} role."
    )
    assert refused.value.permission is permission
    assert await everything(services) == before


# --- what the trail keeps -----------------------------------------------------------------

BURSAR = Principal("Ms Banda", Role.FINANCE)
OFFICE = Principal("Mr Dube", Role.STAFF)


async def test_a_bursar_takes_and_refunds_a_payment_and_the_trail_names_her(
    services: Services, tmp_path: Path
) -> None:
    gateway = await School(services, tmp_path).gateway()
    with access.acting_as(BURSAR):
        paid = await services.payments.charge(order(gateway))
        refund = await services.payments.refund(paid.id, Money(1_500, "USD"), "left the school")
    assert (paid.status, refund.status) == (SUCCEEDED, SUCCEEDED)

    [charged] = await services.audit.entries(action="payment.charged")
    assert (charged.actor, charged.record_kind, charged.record_id) == (
        "Ms Banda",
        "payment",
        str(paid.id),
    )
    assert charged.after["amount_minor"] == 4_500
    assert charged.after["currency"] == "USD"
    assert charged.after["gateways"] == [{"id": gateway, "name": paid_gateway_name(charged)}]
    assert "pm_sandbox_ok" not in json.dumps(charged.after)  # no card token, ever
    [asked] = await services.audit.entries(action="refund.requested")
    assert (asked.actor, asked.record_id) == ("Ms Banda", str(refund.id))
    assert asked.after == {
        "payment": paid.id,
        "amount_minor": 1_500,
        "currency": "USD",
        "reason": "left the school",
    }
    assert (await services.audit.verify()).ok


def paid_gateway_name(entry: Any) -> str:
    [gateway] = entry.after["gateways"]
    assert str(gateway["name"]).startswith("Sandbox ")
    return str(gateway["name"])


async def test_office_staff_are_refused_a_refund_and_nothing_is_recorded(
    services: Services, tmp_path: Path
) -> None:
    payment = await School(services, tmp_path).paid()
    entries = len(await services.audit.entries())
    with access.acting_as(OFFICE), pytest.raises(NotAllowed) as refused:
        await services.payments.refund(payment)
    assert str(refused.value) == (
        "Mr Dube (Staff) may not refund payments; ask someone with the Administrator or "
        "Finance role."
    )
    assert await services.payments.refunds(payment) == []
    assert (await services.payments.payment(payment)).refundable == Money(4_500, "USD")
    assert len(await services.audit.entries()) == entries


async def test_a_service_user_made_a_viewer_may_not_refund(
    services: Services, tmp_path: Path
) -> None:
    """The command line and the engine act as the service user: its role binds them too."""
    payment = await School(services, tmp_path).paid()
    before = access.service_user()
    access.set_service_user(Principal(before.name, Role.VIEWER, before.user_id, service=True))
    try:
        with pytest.raises(NotAllowed, match=r"^The service user \(Viewer\) may not refund"):
            await services.payments.refund(payment)
    finally:
        access.set_service_user(before)
    assert await services.payments.refunds(payment) == []


async def test_each_decision_on_the_money_is_in_the_trail_with_its_lines_and_amounts(
    services: Services, tmp_path: Path
) -> None:
    school = School(services, tmp_path)
    payment, payout = await school.reconciled()
    recon = services.reconciliation
    with access.acting_as(BURSAR):
        matched = await recon.match([payment, payout], "the payout of that payment")
        await recon.undo(matched.id)
        parts = await recon.split(payout, [10_000, 4_447], "two payouts in one")
    entries = {entry.action: entry for entry in await services.audit.entries(actor="Ms Banda")}
    assert set(entries) == {
        "reconciliation.matched",
        "reconciliation.undone",
        "reconciliation.split",
    }
    assert entries["reconciliation.matched"].after == {
        "reason": "the payout of that payment",
        "records": 2,
        "totals_minor": {"USD": 4_500 + 14_447},
        "lines": [
            {
                "record": payment,
                "side": "ledger",
                "reference": f"payment {-payment // 2}",
                "description": "",
                "amount_minor": 4_500,
                "currency": "USD",
            },
            {
                "record": payout,
                "side": "bank",
                "reference": "",
                "description": "STRIPE PAYOUT PO_1",
                "amount_minor": 14_447,
                "currency": "USD",
            },
        ],
    }
    undone = entries["reconciliation.undone"]
    assert (undone.record_id, undone.before["action"], undone.after) == (
        str(matched.id),
        "match",
        {"standing": False},
    )
    assert entries["reconciliation.split"].record_id == str(parts.id)
    assert entries["reconciliation.split"].after["parts_minor"] == [10_000, 4_447]
    [imported] = await services.audit.entries(action="reconciliation.imported")
    assert imported.actor == access.SERVICE_NAME  # set up by no one signed in
    assert (imported.after["rows"], imported.after["source"]) == (
        imported.after["added"],
        "Main account",
    )


async def test_anyone_may_read_and_export_and_the_export_is_recorded(
    services: Services, tmp_path: Path
) -> None:
    await School(services, tmp_path).reconciled()
    path = tmp_path / "report.csv"
    with access.acting_as(Principal("Ms Viewer", Role.VIEWER)):
        assert await services.payments.payments()
        assert await services.reconciliation.lines()
        assert await services.routing.rules() == []
        assert await services.connections.connections()
        rows = await services.reconciliation.export_csv(path)
    [exported] = await services.audit.entries(action="reconciliation.exported")
    assert exported.actor == "Ms Viewer"
    assert exported.after == {"file": str(path), "rows": rows}


async def test_a_billing_run_started_canceled_and_retried_is_in_the_trail(
    services: Services, tmp_path: Path
) -> None:
    await School(services, tmp_path).family()
    with access.acting_as(BURSAR):
        run = await services.billing.prepare(DUE)
        await services.billing.run(run.id)
        await services.billing.retry_failed(run.id)
        await services.billing.cancel(run.id)
    trail = [
        (entry.action, entry.before, entry.after)
        for entry in reversed(await services.audit.entries(record_kind="billing_run"))
    ]
    assert [action for action, _, _ in trail] == [
        "billing.prepared",
        "billing.started",
        "billing.retried",
        "billing.canceled",
    ]
    assert trail[0][2] == {
        "due_before": DUE.isoformat(),
        "invoices": {"waiting": 1},
        "totals_minor": {"USD": 5_000},
    }
    assert trail[1][1] == {"status": "prepared"}
    assert trail[2][1:] == (
        {"status": "finished", "failed": 0},
        {"status": "paused", "waiting_again": 0},
    )
    assert (trail[3][1], trail[3][2]["status"]) == ({"status": "paused"}, "canceled")


async def test_a_replayed_event_is_recorded_with_what_it_was(
    services: Services, tmp_path: Path
) -> None:
    event = await School(services, tmp_path).dead_event()
    with access.acting_as(Principal("Ms Moyo", Role.ADMINISTRATOR)):
        assert await services.inbox_worker.replay([event, 999_999]) == 1
    [replayed] = await services.audit.entries(action="event.replayed")
    assert (replayed.actor, replayed.record_id) == ("Ms Moyo", str(event))
    assert replayed.before["status"] == "dead"
    assert replayed.after == {"status": "received", "attempts": 0}


async def test_breakers_reset_and_a_secret_forgotten_are_recorded(
    services: Services, tmp_path: Path
) -> None:
    gateway = await School(services, tmp_path).gateway()
    with access.acting_as(Principal("Ms Moyo", Role.ADMINISTRATOR)):
        await services.connections.reset_breakers(gateway)
        await services.connections.forget_secret(gateway, "api_key")
    actions = [entry.action for entry in await services.audit.entries(actor="Ms Moyo")]
    assert actions == ["connection.secret_forgotten", "connection.breakers_reset"]
    assert (await services.connections.connection(gateway)).secret_fields == ()


async def test_a_secret_the_engine_renews_needs_no_permission_and_is_recorded(
    services: Services, tmp_path: Path
) -> None:
    """A calendar's channel token is renewed during a sync, by whoever syncs: not a change
    to the connection anyone asked for."""
    gateway = await School(services, tmp_path).gateway()
    with access.acting_as(Principal("Mr Dube", Role.STAFF)):
        await services.connections.renew_secret(gateway, "channel_token", "tok-0123456789")
    [renewed] = await services.audit.entries(action="connection.secret_renewed")
    assert renewed.actor == "Mr Dube"
    assert "tok-0123456789" not in json.dumps([renewed.before, renewed.after])
    assert "channel_token" in (await services.connections.connection(gateway)).secret_fields
