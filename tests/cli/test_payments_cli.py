"""`switchboard charge`, `payments list` and `refund`, run as a user runs them, against sandbox
gateways whose books are kept in the data folder between runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.config import resolve_config
from app.services import Services
from app.store.school import Guardian, Invoice

SANDBOX = [
    "--set",
    "latency_ms=1",
    "--set",
    "latency_p95_ms=2",
    "--set",
    "error_rate=0",
    "--set",
    "approval_rate=1",
    "--secret",
    "api_key=env:SANDBOX_KEY",
]


def prepare(run: Any, tmp_path: Path, declined: bool = False) -> int:
    """Two sandbox gateways, and a guardian whose card is saved at both; the guardian's id."""
    for name in ("Cards A", "Cards B"):
        added = run("connection", "add", "sandbox-payments", "--name", name, *SANDBOX)
        assert added.returncode == 0, added.stderr

    async def setup() -> int:
        services = await Services.open(resolve_config(str(tmp_path / "data"), environ={}))
        try:

            def write(session: Session) -> int:
                guardian = Guardian(ref="G-1", first_name="Ann", last_name="Moyo")
                session.add(guardian)
                session.flush()
                return guardian.id

            payer = await services.db.write(write)
            token = "pm_sandbox_declined_1" if declined else "pm_sandbox_visa_1"
            for record in await services.connections.connections():
                await services.routing.save_method(payer, record.id, "card", token)
            return payer
        finally:
            await services.close()

    return asyncio.run(setup())


def test_a_charge_a_listing_and_refunds(run: Any, tmp_path: Path) -> None:
    payer = prepare(run, tmp_path)
    charged = run(
        "charge", "--amount", "1,250.50", "--currency", "USD", "--payer", str(payer), "--json"
    )
    assert charged.returncode == 0, charged.stderr
    payment = json.loads(charged.stdout)
    assert (payment["status"], payment["amount"], payment["currency"]) == (
        "succeeded",
        "1250.50",
        "USD",
    )
    assert payment["attempts"][0]["why"].startswith("chose Cards ")

    listed = json.loads(run("payments", "list", "--json").stdout)
    assert [item["id"] for item in listed] == [payment["id"]]

    part = run("refund", str(payment["id"]), "--amount", "250.50", "--json")
    assert part.returncode == 0, part.stderr
    assert json.loads(part.stdout)["status"] == "succeeded"
    rest = run("refund", str(payment["id"]), "--json")
    assert json.loads(rest.stdout)["amount"] == "1000.00"
    again = run("refund", str(payment["id"]))
    assert again.returncode == 1
    assert again.stderr == "switchboard: Nothing is left to refund on this payment.\n"


def test_the_same_key_twice_charges_once(run: Any, tmp_path: Path) -> None:
    payer = prepare(run, tmp_path)
    command = ["charge", "--amount", "40", "--currency", "USD", "--payer", str(payer)]
    first = json.loads(run(*command, "--key", "term-1", "--json").stdout)
    second = json.loads(run(*command, "--key", "term-1", "--json").stdout)
    assert first["id"] == second["id"]
    conflicting = run(
        "charge", "--amount", "41", "--currency", "USD", "--payer", str(payer), "--key", "term-1"
    )
    assert conflicting.returncode == 1
    assert "was used for another payment" in conflicting.stderr


def test_an_invoice_is_charged_once_for_what_is_owed(run: Any, tmp_path: Path) -> None:
    payer = prepare(run, tmp_path)

    async def invoice() -> int:
        services = await Services.open(resolve_config(str(tmp_path / "data"), environ={}))
        try:

            def write(session: Session) -> int:
                from datetime import date

                row = Invoice(
                    number="INV-1",
                    guardian_id=payer,
                    currency="USD",
                    total_minor=35_000,
                    issued_on=date(2026, 11, 1),
                    due_on=date(2026, 11, 30),
                )
                session.add(row)
                session.flush()
                return row.id

            return await services.db.write(write)
        finally:
            await services.close()

    invoice_id = asyncio.run(invoice())
    first = run("charge", "--invoice", str(invoice_id), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["amount"] == "350.00"
    second = run("charge", "--invoice", str(invoice_id))
    assert second.returncode == 1
    assert second.stderr == "switchboard: Invoice INV-1 is paid.\n"


def test_a_declined_card_fails_with_the_bank_s_answer(run: Any, tmp_path: Path) -> None:
    payer = prepare(run, tmp_path, declined=True)
    declined = run("charge", "--amount", "10", "--currency", "USD", "--payer", str(payer))
    assert declined.returncode == 1
    assert "failed" in declined.stdout
    assert "Your card was declined." in declined.stdout
    assert declined.stdout.count("attempt ") == 1  # a hard decline is not tried elsewhere


def test_bad_amounts_are_refused_in_a_sentence(run: Any, tmp_path: Path) -> None:
    for amount, message in (
        ("12.505", "has too many decimals"),
        ("-5", "negative"),
        ("0", "more than zero"),
        ("ten", "is not an amount"),
    ):
        refused = run("charge", "--amount", amount, "--currency", "USD", "--payer", "1")
        assert refused.returncode == 1
        assert message in refused.stderr
    unknown = run("charge", "--amount", "5", "--currency", "XYZ", "--payer", "1")
    assert "is not a currency" in unknown.stderr
