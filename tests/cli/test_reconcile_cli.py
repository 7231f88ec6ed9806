"""`switchboard reconcile`, run as a user runs it: import a settlement report or a statement,
match, and print the counts and amounts per status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.test_payments_cli import SANDBOX

DATA = Path(__file__).parents[1] / "data" / "reconciliation"


def test_a_stripe_report_then_a_bank_statement_reconciled_with_counts_and_amounts(
    run: Any,
) -> None:
    added = run("connection", "add", "sandbox-payments", "--name", "Cards", *SANDBOX)
    assert added.returncode == 0, added.stderr
    connection = added.stdout.split()[1]  # "Connection 1 added: ..."

    report = run("reconcile", "--connection", connection, "--file", str(DATA / "stripe_march.csv"))
    assert report.returncode == 0, report.stderr
    assert "4 new records of 4 imported" in report.stdout

    bank = run("reconcile", "--file", str(DATA / "bank_march.csv"), "--account", "Main", "--json")
    assert bank.returncode == 0, bank.stderr
    figures = json.loads(bank.stdout)
    assert figures["imported"] == [
        {"source": "Main", "name": "bank_march.csv", "rows": 2, "added": 2}
    ]
    statuses = figures["statuses"]
    # the payout and its bank line agree; the ledger has none of the charges
    assert statuses["matched"]["count"] == 2
    assert statuses["unexpected"] == {"count": 4, "amounts": {"USD": "195.00"}}
    assert figures["exceptions"] == 4
    assert figures["records"] == 6

    again = run("reconcile", "--file", str(DATA / "bank_march.csv"), "--account", "Main")
    assert again.returncode == 0, again.stderr
    assert "already imported; nothing changed" in again.stdout
    assert "unexpected" in again.stdout


def test_a_bad_file_is_refused_with_its_row_and_nothing_is_kept(run: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text("Date,Description,Amount,Currency\n2026-03-07,FEE,12.3x,USD\n")

    refused = run("reconcile", "--file", str(broken), "--format", "bank-csv")
    assert refused.returncode != 0
    assert "row 2" in refused.stderr
    assert "nothing from it was kept" in refused.stderr

    after = run("reconcile", "--json")
    assert json.loads(after.stdout)["records"] == 0


def test_a_settlement_report_needs_its_gateway(run: Any) -> None:
    refused = run("reconcile", "--file", str(DATA / "stripe_march.csv"))

    assert refused.returncode != 0
    assert "--connection" in refused.stderr
