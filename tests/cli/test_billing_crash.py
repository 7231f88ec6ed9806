"""`switchboard billing-run` killed with SIGKILL in the middle of 500 invoices, then run again:
every invoice is charged exactly once, counted on the gateways' side."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import resolve_config
from app.services import Services
from app.store.payments import BillingRunRow, PaymentMethodRow, PaymentRow
from app.store.school import Guardian, Invoice
from tests.cli.conftest import SWITCHBOARD
from tests.fakes.ledger_gateway import LedgerGateway
from tests.fakes.server import served

INVOICES = 500
FAMILIES = 50


def school(data: Path, connections: list[int]) -> None:
    """50 families with a card saved at both gateways, and 10 invoices due for each."""

    async def build() -> None:
        services = await Services.open(resolve_config(str(data), environ={}))
        try:

            def write(session: Session) -> None:
                for family in range(FAMILIES):
                    guardian = Guardian(
                        ref=f"G-{family}", first_name="Parent", last_name=f"{family}"
                    )
                    session.add(guardian)
                    session.flush()
                    for connection_id in connections:
                        session.add(
                            PaymentMethodRow(
                                guardian_id=guardian.id,
                                connection_id=connection_id,
                                method="card",
                                token=f"pm_card_{family}",
                            )
                        )
                    for n in range(INVOICES // FAMILIES):
                        session.add(
                            Invoice(
                                number=f"INV-{family:03d}-{n}",
                                guardian_id=guardian.id,
                                currency="USD",
                                total_minor=10_000 + family,
                                issued_on=date(2026, 11, 1),
                                due_on=date(2026, 11, 20),
                            )
                        )

            await services.db.write(write)
        finally:
            await services.close()

    asyncio.run(build())


def invoices_of(data: Path, references: list[str]) -> Counter[int]:
    """Which invoice each charge (by its attempt's reference) was for."""

    async def read() -> Counter[int]:
        services = await Services.open(resolve_config(str(data), environ={}))
        try:

            def query(session: Session) -> Counter[int]:
                rows = session.execute(select(PaymentRow.reference, PaymentRow.invoice_id))
                by_reference: dict[str, int] = dict(rows.all())
                return Counter(
                    by_reference[reference.rsplit("-", 1)[0]] for reference in references
                )

            return await services.db.read(query)
        finally:
            await services.close()

    return asyncio.run(read())


def run_status(data: Path) -> str:
    async def read() -> str:
        services = await Services.open(resolve_config(str(data), environ={}))
        try:
            return str(
                await services.db.read(lambda session: session.scalar(select(BillingRunRow.status)))
            )
        finally:
            await services.close()

    return asyncio.run(read())


def test_a_billing_run_killed_midway_charges_every_invoice_exactly_once(
    run: Any, tmp_path: Path
) -> None:
    first, second = LedgerGateway(delay=0.005), LedgerGateway(delay=0.005)
    data = tmp_path / "data"
    with served(first.app) as first_url, served(second.app) as second_url:
        connections = []
        for name, url in (("Gateway A", first_url), ("Gateway B", second_url)):
            added = run(
                "connection", "add", "stripe", "--name", name,
                "--set", f"api_url={url}", "--secret", "secret_key=env:SANDBOX_KEY", "--json",
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            connections.append(json.loads(added.stdout)["id"])
        school(data, connections)

        command = [str(SWITCHBOARD), "--data-dir", str(data), "billing-run", "--due-before"]
        billing = subprocess.Popen(
            [*command, "2026-11-30", "--json"],
            env=run.environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while len(first.charges()) + len(second.charges()) < INVOICES * 0.3:
            assert billing.poll() is None, billing.stderr.read() if billing.stderr else ""
            assert time.monotonic() < deadline, "the billing run made no progress"
            time.sleep(0.005)
        os.kill(billing.pid, signal.SIGKILL)
        billing.wait(timeout=30)
        charged_before = len(first.charges()) + len(second.charges())
        assert charged_before < INVOICES
        assert run_status(data) == "running"  # killed, not finished

        resumed = run("billing-run", "--json")
        assert resumed.returncode == 0, resumed.stderr
        report = json.loads(resumed.stdout)
        assert report["status"] == "finished"
        failed = [item for item in report["items"] if item["status"] != "succeeded"]
        assert report["counts"] == {"succeeded": INVOICES}, [item["message"] for item in failed]

        charges = first.charges() + second.charges()
        references = [charge["metadata"]["switchboard_reference"] for charge in charges]
        per_invoice = invoices_of(data, references)
        assert len(charges) == INVOICES
        assert len(per_invoice) == INVOICES
        assert set(per_invoice.values()) == {1}
