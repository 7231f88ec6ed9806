"""The demo school's reconciliation: its sandboxes' ledgers, two bank accounts' statements with
what banks do to payouts, and a run every Monday morning then one now, so the Reconciliation
pages open on a believable history with a few things to look at."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from app.services import Services
from app.services.demo import seed_demo
from app.services.reconciliation.service import Line

TODAY = date(2026, 11, 18)  # a Wednesday


def exceptions(lines: list[Line]) -> list[tuple[str, str, str]]:
    return sorted(
        (line.side, line.status, line.description)
        for line in lines
        if line.status not in ("matched", "expected")
    )


@pytest.mark.slow
async def test_the_demo_reconciles_every_payment_and_leaves_what_the_banks_did(
    services: Services,
) -> None:
    await seed_demo(services, today=TODAY)
    recon = services.reconciliation

    runs = await recon.runs()
    lines = await recon.lines()

    assert [run.trigger for run in runs] == ["manual"] + ["scheduled"] * (len(runs) - 1)
    assert len(runs) >= 6  # every Monday of the history, then now
    assert all(run.as_of.weekday() == 0 for run in runs[1:])
    assert runs[-1].counts["records"] < runs[0].counts["records"]  # the books grew
    kinds = Counter((line.side, line.status) for line in lines if line.kind == "payment")
    assert set(kinds) == {("ledger", "matched"), ("gateway", "matched")}  # every payment met
    assert kinds["ledger", "matched"] == kinds["gateway", "matched"] > 100
    assert {line.source for line in lines if line.side == "bank"} == {
        "bank:main account (us$)",
        "bank:zig account",
    }
    left = exceptions(lines)
    assert ("bank", "unexpected", "DEPOSIT SANDBOX PAYMENTS") in left
    assert [status for side, status, _ in left if side == "gateway"].count("missing") == 2
    assert any(
        status.startswith("amount_") and text.endswith("LESS CHARGES") for _, status, text in left
    )
    assert ("bank", "unexpected", "MONTHLY ACCOUNT FEE") in left
    assert sum(run.counts["statuses"].get("matched", {}).get("n", 0) for run in runs[:1]) > 200


@pytest.mark.slow
async def test_the_demo_deposit_of_two_payouts_split_by_their_amounts_matches_both(
    services: Services,
) -> None:
    await seed_demo(services, today=TODAY)
    recon = services.reconciliation
    lines = await recon.lines()
    [deposit] = [line for line in lines if line.description == "DEPOSIT SANDBOX PAYMENTS"]
    missing = [line for line in lines if line.kind == "payout" and line.status == "missing"]

    await recon.split(
        deposit.number,
        [line.amount_minor for line in missing],
        "Two payouts paid in as one deposit",
    )
    await recon.run()

    for line in missing:
        assert (await recon.line(line.number)).status == "matched"
    parts = [line for line in await recon.lines() if line.description.startswith("DEPOSIT")]
    assert sorted(line.status for line in parts) == ["matched", "matched"]
