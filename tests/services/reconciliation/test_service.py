"""Reconciliation as the bursar works it, on a real database: a Stripe settlement report and a
bank statement imported as files, payments and refunds from the ledger, a run, and decisions
that later runs keep."""

from __future__ import annotations

import csv
import functools
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.access import Principal, Role
from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.domain.payments import BalanceEntry, GatewayLedger
from app.domain.reconciliation import FileRejected
from app.services import Services, access
from app.services.payments import Candidate, ChargeOrder
from app.services.reconciliation.books import payment_number, refund_number
from app.store.payments import PaymentRow, RefundRow
from app.store.reconciliation import ReconRecordRow

AS_OF = datetime(2026, 3, 31, 12, tzinfo=UTC)
BURSAR = Principal("Ms Banda", Role.FINANCE)

DATA = Path(__file__).parents[2] / "data" / "reconciliation"
STRIPE = (DATA / "stripe_march.csv").read_text(encoding="utf-8")
BANK = (DATA / "bank_march.csv").read_text(encoding="utf-8")


@pytest.fixture
async def gateway(services: Services) -> int:
    record = await services.connections.add(
        "sandbox-payments",
        f"Sandbox {uuid.uuid4().hex[:6]}",
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, "approval_rate": 1},
        {"api_key": "sk_sandbox"},
    )
    return record.id


async def ledger(services: Services, connection_id: int) -> dict[str, int]:
    """Two payments the gateway took (one partly refunded), one it never did."""

    def write(session: Session) -> dict[str, int]:
        made = {}
        for ref, amount, day in (("ch_1", 12_000, 2), ("ch_9", 7_500, 1)):
            row = PaymentRow(
                reference=f"P-{ref}",
                idempotency_key=f"k-{ref}",
                request_digest="x",
                amount_minor=amount,
                currency="USD",
                method="card",
                status="succeeded",
                connection_id=connection_id,
                gateway_id=ref,
                created_at=datetime(2026, 3, day, 9, tzinfo=UTC),
            )
            session.add(row)
            session.flush()
            made[ref] = payment_number(row.id)
        refund = RefundRow(
            payment_id=-made["ch_1"] // 2,
            reference="R-1",
            amount_minor=2_000,
            currency="USD",
            status="succeeded",
            gateway_id="re_1",
            created_at=datetime(2026, 3, 3, 16, tzinfo=UTC),
        )
        session.add(refund)
        session.flush()
        made["re_1"] = refund_number(refund.id)
        return made

    return await services.db.write(write)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


async def stored(services: Services) -> int:
    def count(session: Session) -> int:
        return int(session.scalar(select(func.count()).select_from(ReconRecordRow)) or 0)

    return await services.db.read(count)


async def imported(services: Services, gateway: int, folder: Path) -> None:
    recon = services.reconciliation
    source = await recon.source_for_connection(gateway)
    await recon.import_file(write(folder, "stripe.csv", STRIPE), source=source)
    bank = await recon.source_for_bank("Main account")
    await recon.import_file(write(folder, "bank.csv", BANK), "bank-csv", source=bank)


async def statuses(services: Services) -> dict[str, str]:
    return {
        f"{line.side}:{line.reference or line.description}": line.status
        for line in await services.reconciliation.lines()
    }


async def test_three_way_the_ledger_the_stripe_report_and_the_bank_statement(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    numbers = await ledger(services, gateway)
    await imported(services, gateway, tmp_path)

    summary = await services.reconciliation.run(as_of=AS_OF)

    assert await statuses(services) == {
        "ledger:ch_1": "matched",
        "ledger:re_1": "matched",
        "ledger:ch_9": "missing",  # the gateway never took it
        "gateway:ch_1": "matched",
        "gateway:re_1": "matched",
        "gateway:ch_2": "unexpected",  # the ledger does not know it
        "gateway:po_1": "matched",  # 116.22 - 20.00 + 48.25, and the bank has it
        "bank:STRIPE PAYOUT PO_1": "matched",
        "bank:ACCOUNT FEE": "unexpected",
    }
    assert (summary.count("matched"), summary.count("missing"), summary.exceptions) == (6, 1, 3)
    charge = await services.reconciliation.line(numbers["ch_1"])
    assert (charge.fee_minor, charge.stage) == (378, 3)  # in the bank; Stripe kept 3.78
    counterparts = await services.reconciliation.counterparts(numbers["ch_1"])
    assert [(c.side, c.reference) for c in counterparts] == [("gateway", "ch_1")]

    def fee(session: Session) -> int | None:
        return session.get(PaymentRow, -numbers["ch_1"] // 2).fee_minor  # type: ignore[union-attr]

    assert await services.db.read(fee) == 378


async def test_payments_taken_through_a_gateway_meet_its_ledger_read_through_the_api(
    services: Services, gateway: int
) -> None:
    """What the payments service recorded and what the sandbox (Stripe's dialect) lists as its
    balance transactions are the same payments: none is missing beside an unexpected twin."""
    taken = []
    for minor in (4_000, 6_500):
        payment = await services.payments.charge(
            ChargeOrder(
                idempotency_key=uuid.uuid4().hex,
                amount=Money(minor, "USD"),
                method="card",
                candidates=(Candidate(gateway, "pm_card_visa"),),
            )
        )
        assert payment.status == "succeeded"
        taken.append(payment)
    refund = await services.payments.refund(taken[0].id, Money(1_500, "USD"), "lesson cancelled")
    assert refund.status == "succeeded"
    recon = services.reconciliation

    await recon.pull(gateway)
    summary = await recon.run()

    lines = await recon.lines()
    assert {(line.side, line.kind, line.status) for line in lines} == {
        ("ledger", "payment", "matched"),
        ("ledger", "refund", "matched"),
        ("gateway", "payment", "matched"),
        ("gateway", "refund", "matched"),
    }
    assert (summary.count("matched"), summary.exceptions) == (6, 0)
    paid = await recon.line(payment_number(taken[1].id))
    assert paid.stage == 1  # the gateway agrees; paid out only once the money is available
    assert paid.fee_minor == 219  # the sandbox's 2.9 % + 30


async def test_importing_the_same_file_again_changes_nothing(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    await imported(services, gateway, tmp_path)
    before = await stored(services)

    source = await services.reconciliation.source_for_connection(gateway)
    again = await services.reconciliation.import_file(
        write(tmp_path, "stripe-again.csv", STRIPE), source=source
    )

    assert again.added == 0
    assert "nothing changed" in again.sentence
    assert await stored(services) == before


async def test_a_file_with_a_bad_row_is_refused_whole_with_the_row_and_column(
    services: Services, tmp_path: Path
) -> None:
    bank = await services.reconciliation.source_for_bank("Main account")
    broken = BANK + "2026-03-09,TUITION,12.3x,USD\n"

    with pytest.raises(FileRejected) as refused:
        await services.reconciliation.import_file(
            write(tmp_path, "bank.csv", broken), "bank-csv", source=bank
        )

    assert [(e.row, e.column) for e in refused.value.errors] == [(4, "Amount")]
    assert "nothing from it was kept" in str(refused.value)
    assert await stored(services) == 0


async def test_a_settlement_report_for_the_bank_is_refused(
    services: Services, tmp_path: Path
) -> None:
    bank = await services.reconciliation.source_for_bank("Main account")

    with pytest.raises(SwitchboardError, match="gateway records"):
        await services.reconciliation.import_file(
            write(tmp_path, "stripe.csv", STRIPE), source=bank
        )
    assert await stored(services) == 0


async def test_decisions_need_a_reason_and_later_runs_keep_them(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    numbers = await ledger(services, gateway)
    await imported(services, gateway, tmp_path)
    recon = services.reconciliation
    await recon.run(as_of=AS_OF)
    fee_line = next(line for line in await recon.lines() if line.description == "ACCOUNT FEE")
    stray = next(line for line in await recon.lines() if line.reference == "ch_2")

    with pytest.raises(SwitchboardError, match="Say why"):
        await recon.write_off([fee_line.number], "  ")
    with pytest.raises(SwitchboardError, match="different sides"):
        await recon.match([numbers["ch_9"], numbers["ch_1"]], "same family")

    with access.acting_as(BURSAR):
        await recon.write_off([fee_line.number], "Monthly account fee")
        match = await recon.match(
            [numbers["ch_9"], stray.number], "Paid by the family's other card"
        )
    await recon.run(as_of=AS_OF)
    summary = await recon.run(as_of=AS_OF)  # and again: decisions are inputs of every run

    assert (await recon.line(fee_line.number)).status == "resolved"
    kept = await recon.line(numbers["ch_9"])
    assert (kept.status, kept.how) == ("matched", "manual")
    assert [c.number for c in await recon.counterparts(numbers["ch_9"])] == [stray.number]
    assert [(x.side, x.reference, x.status) for x in await recon.lines(exceptions_only=True)] == []
    assert summary.exceptions == 0

    with access.acting_as(BURSAR):
        await recon.unmatch([numbers["ch_9"]], "Wrong family")
    await recon.run(as_of=AS_OF)
    assert (await recon.line(numbers["ch_9"])).status == "missing"
    assert (await recon.line(stray.number)).status == "unexpected"
    trail = await recon.decisions()
    assert [(d.action, d.made_by) for d in trail] == [
        ("unmatch", "Ms Banda"),
        ("match", "Ms Banda"),
        ("write_off", "Ms Banda"),
    ]
    assert trail[1].id == match.id
    assert trail[1].reason == "Paid by the family's other card"


async def test_suggestions_for_an_exception_are_the_nearest_open_amounts(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    numbers = await ledger(services, gateway)
    await imported(services, gateway, tmp_path)
    await services.reconciliation.run(as_of=AS_OF)

    suggested = await services.reconciliation.suggestions(numbers["ch_9"])

    assert [s.reference for s in suggested][:1] == ["ch_2"]  # 50.00 is the nearest to 75.00
    assert all(s.side != "ledger" for s in suggested)


async def test_a_run_is_stored_with_its_inputs_counts_and_totals(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    await ledger(services, gateway)
    await imported(services, gateway, tmp_path)

    first = await services.reconciliation.run("scheduled", as_of=AS_OF)
    runs = await services.reconciliation.runs()

    assert [run.id for run in runs] == [first.id]
    assert runs[0].trigger == "scheduled"
    assert runs[0].inputs["ledger"] == 3
    assert (runs[0].inputs["gateway"], runs[0].inputs["payouts"]) == (3, 1)
    assert runs[0].counts["statuses"]["missing"] == {"n": 1, "amounts": {"USD": 7_500}}
    assert runs[0].counts["records"] == 9


async def test_the_report_exports_to_csv(services: Services, gateway: int, tmp_path: Path) -> None:
    await ledger(services, gateway)
    await imported(services, gateway, tmp_path)
    await services.reconciliation.run(as_of=AS_OF)

    written = await services.reconciliation.export_csv(tmp_path / "report.csv")

    with (tmp_path / "report.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert written == len(rows) == 9
    assert {row["status"] for row in rows} >= {"matched", "missing", "unexpected"}


async def a_transfer(services: Services, minor: int, day: int) -> int:
    """A family's bank transfer recorded in Switchboard (no gateway): it settles in the bank."""

    def write(session: Session) -> int:
        row = PaymentRow(
            reference="P-TRANSFER",
            idempotency_key=f"k-{uuid.uuid4().hex}",
            request_digest="x",
            amount_minor=minor,
            currency="USD",
            method="bank_transfer",
            status="succeeded",
            gateway_id="",
            created_at=datetime(2026, 3, day, 9, tzinfo=UTC),
        )
        session.add(row)
        session.flush()
        return payment_number(row.id)

    return await services.db.write(write)


async def one_deposit(services: Services, gateway: int, folder: Path) -> int:
    """The Stripe report, and a bank statement whose one deposit is the payout (144.47) and a
    family's transfer (75.00) together; the deposit's number."""
    recon = services.reconciliation
    source = await recon.source_for_connection(gateway)
    await recon.import_file(write(folder, "stripe.csv", STRIPE), source=source)
    bank = await recon.source_for_bank("Main account")
    statement = "Date,Description,Amount,Currency\n2026-03-07,DEPOSIT,219.47,USD\n"
    await recon.import_file(write(folder, "bank.csv", statement), "bank-csv", source=bank)
    await recon.run(as_of=AS_OF)
    [deposit] = [line for line in await recon.lines() if line.description == "DEPOSIT"]
    return deposit.number


async def test_a_deposit_split_into_its_parts_matches_each_part_on_its_own(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    await ledger(services, gateway)
    transfer = await a_transfer(services, 7_500, 6)
    deposit = await one_deposit(services, gateway, tmp_path)
    recon = services.reconciliation
    assert (await recon.line(deposit)).status == "unexpected"  # 219.47 is nothing on its own
    assert (await recon.line(transfer)).status == "missing"

    with access.acting_as(BURSAR):
        decision = await recon.split(
            deposit, [14_447, 7_500], "The payout and the Smiths' transfer in one deposit"
        )
    await recon.run(as_of=AS_OF)

    bank = [line for line in await recon.lines() if line.side == "bank"]
    assert sorted((line.amount_minor, line.status) for line in bank) == [
        (7_500, "matched"),
        (14_447, "matched"),
    ]
    assert {line.description for line in bank} == {"DEPOSIT (part 1 of 2)", "DEPOSIT (part 2 of 2)"}
    assert (await recon.line(transfer)).status == "matched"
    [payout] = [line for line in await recon.lines() if line.reference == "po_1"]
    assert payout.status == "matched"
    assert [(d.action, d.records, d.made_by) for d in await recon.decisions()] == [
        ("split", [deposit], "Ms Banda")
    ]

    await recon.undo(decision.id)
    await recon.run(as_of=AS_OF)

    assert [line.number for line in await recon.lines() if line.side == "bank"] == [deposit]
    assert (await recon.line(deposit)).status == "unexpected"


async def test_a_split_must_add_up_and_only_records_of_a_gateway_or_the_bank_split(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    numbers = await ledger(services, gateway)
    deposit = await one_deposit(services, gateway, tmp_path)
    recon = services.reconciliation

    with pytest.raises(
        SwitchboardError, match=r"add up to the whole, USD 219\.47; USD 0\.47 is left over"
    ):
        await recon.split(deposit, [14_400, 7_500], "two things")
    with pytest.raises(SwitchboardError, match="at least two parts"):
        await recon.split(deposit, [21_947], "one thing")
    with pytest.raises(SwitchboardError, match="same sign"):
        await recon.split(deposit, [22_947, -1_000], "a credit and a debit")
    with pytest.raises(SwitchboardError, match="refunding part of it"):
        await recon.split(numbers["ch_1"], [6_000, 6_000], "two lessons")
    with pytest.raises(SwitchboardError, match="Say why"):
        await recon.split(deposit, [14_447, 7_500], " ")
    assert await recon.decisions() == []  # nothing refused was kept

    await recon.split(deposit, [14_447, 7_500], "payout and a transfer")
    with pytest.raises(SwitchboardError, match="already split"):
        await recon.split(deposit, [10_000, 11_947], "another way")
    with pytest.raises(SwitchboardError, match="choose its parts instead"):
        await recon.write_off([deposit], "bank error")


async def test_a_split_whose_part_is_in_a_later_decision_cannot_be_undone_before_it(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    await ledger(services, gateway)
    deposit = await one_deposit(services, gateway, tmp_path)
    recon = services.reconciliation
    split = await recon.split(deposit, [14_447, 7_000, 500], "payout, transfer, fee")
    await recon.run(as_of=AS_OF)
    [small] = [line for line in await recon.lines() if line.amount_minor == 500]
    later = await recon.write_off([small.number], "bank's rounding")

    with pytest.raises(SwitchboardError, match="bank's rounding"):
        await recon.undo(split.id)

    await recon.undo(later.id)
    await recon.undo(split.id)
    await recon.run(as_of=AS_OF)
    assert (await recon.line(deposit)).status == "unexpected"


async def test_a_top_up_from_the_bank_meets_its_debit_and_a_released_hold_needs_nobody(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    """Read from a gateway's API: money the school's bank paid into the gateway is a payout the
    other way (the bank shows a debit); a hold and its release cancel out."""
    usd = functools.partial(Money, currency="USD")
    at = int(datetime(2026, 3, 10, 9, tzinfo=UTC).timestamp())

    def entry(gateway_id: str, kind: str, minor: int, source: str = "") -> BalanceEntry:
        return BalanceEntry(
            gateway_id, kind, usd(minor), usd(0), usd(minor), source or gateway_id, at, at
        )

    ledger = GatewayLedger(
        [
            entry("TOP-1", "topup", 50_000),
            entry("HOLD-1", "hold", -3_000, source="CAPTURE-7"),
            entry("HOLD-2", "hold", 3_000, source="CAPTURE-7"),
        ],
        [],
    )
    recon = services.reconciliation
    await recon.keep_ledger(gateway, ledger, AS_OF)
    bank = await recon.source_for_bank("Main account")
    statement = "Date,Description,Amount,Currency\n2026-03-10,TRANSFER TO PAYPAL,-500.00,USD\n"
    await recon.import_file(write(tmp_path, "bank.csv", statement), "bank-csv", source=bank)

    await recon.run(as_of=AS_OF)

    assert {
        (line.side, line.kind, line.amount_minor, line.status) for line in await recon.lines()
    } == {
        ("gateway", "payout", -50_000, "matched"),
        ("bank", "debit", -50_000, "matched"),
        ("gateway", "adjustment", -3_000, "matched"),
        ("gateway", "adjustment", 3_000, "matched"),
    }


async def test_a_run_as_of_a_moment_sees_only_what_had_happened_by_then(
    services: Services, gateway: int, tmp_path: Path
) -> None:
    numbers = await ledger(services, gateway)
    await imported(services, gateway, tmp_path)

    summary = await services.reconciliation.run(as_of=datetime(2026, 3, 2, 12, tzinfo=UTC))

    lines = await services.reconciliation.lines()
    assert {line.number for line in lines if line.side == "ledger"} == {
        numbers["ch_1"],  # 2 March 09:00
        numbers["ch_9"],  # 1 March
    }
    assert {line.reference for line in lines if line.side == "gateway"} == {"ch_1"}
    assert not [line for line in lines if line.side == "bank"]  # the statement starts on the 7th
    assert summary.counts["records"] == 3
