"""The Billing run page, step by step: prepare (nothing charged; what is skipped says why),
review, charge after asking (progress and results), retry the failed ones, and a run left
unfinished found again and finished by charging the rest."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from app.domain.school import GuardianDraft, InvoiceDraft, InvoiceLine
from app.services.billing import FINISHED, PAUSED, PREPARED
from app.ui.main_window import MainWindow
from app.views.billing import BillingPage
from tests.ui.conftest import Gui
from tests.ui.test_new_charge import gateway


def families(gui: Gui) -> dict[str, int]:
    """Three families with an invoice due: one pays, one's card is declined, one has no card."""
    services = gui.bridge.services
    card = gateway(gui)
    ids = {}
    for name, token in (("Moyo", "pm_sandbox_visa"), ("Dube", "pm_sandbox_declined_visa")):
        guardian = gui.call(
            services.school.save_guardian,
            GuardianDraft("Rudo", name, email=f"{name.lower()}@example.org"),
        )
        gui.call(services.routing.save_method, guardian.id, card, "card", token)
        ids[name] = guardian.id
    ids["Ncube"] = gui.call(
        services.school.save_guardian, GuardianDraft("Ann", "Ncube", email="ncube@example.org")
    ).id
    for guardian in ids.values():
        gui.call(
            services.school.save_invoice,
            InvoiceDraft(
                "USD",
                date.today() - timedelta(days=20),
                date.today() - timedelta(days=5),
                (InvoiceLine("Term fees", 1, 30_000),),
                guardian_id=guardian,
            ),
        )
    return ids


def open_billing(gui: Gui, window: MainWindow) -> BillingPage:
    page: BillingPage = window.show_page("billing")  # type: ignore[assignment]
    gui.run(page.settle())
    return page


def statuses(page: BillingPage) -> list[tuple[str, str]]:
    return [
        (page.model.index(row, 1).data(), page.model.index(row, 3).data())
        for row in range(page.model.rowCount())
    ]


def test_a_run_is_prepared_reviewed_charged_and_its_failures_retried(
    gui: Gui, window: MainWindow
) -> None:
    families(gui)
    page = open_billing(gui, window)
    assert page.prepare_button.isVisible()
    assert not page.table.isVisible()
    run = gui.run(page.prepare())
    assert run is not None
    assert run.status == PREPARED
    gui.run(page.settle())
    assert sorted(statuses(page)) == [
        ("Ann Ncube", "skipped"),
        ("Rudo Dube", "to charge"),
        ("Rudo Moyo", "to charge"),
    ]
    assert page.charge_button.text() == "Charge 2 invoices"
    assert "1 skipped" in page.summary.text()
    assert gui.call(gui.bridge.services.payments.payments, 10) == []  # nothing charged yet
    gui.save(page, "billing-review")

    task = asyncio.ensure_future(page.charge())
    gui.answer(page, "Charge")
    finished = gui.run(task)
    assert finished is not None
    assert finished.status == FINISHED
    gui.run(page.settle())
    assert sorted(statuses(page)) == [
        ("Ann Ncube", "skipped"),
        ("Rudo Dube", "failed"),
        ("Rudo Moyo", "paid"),
    ]
    assert page.progress.value() == page.progress.maximum() == 2
    assert page.summary.text() == "Done: 1 paid, 1 failed; 1 skipped."
    assert page.retry_button.isVisible()
    assert page.retry_button.text() == "Retry 1 failed"
    gui.save(page, "billing-results")

    again = gui.run(page.retry())  # the card is still declined: a new payment, failed again
    assert again is not None
    assert again.status == FINISHED
    payments = gui.call(gui.bridge.services.payments.payments, 10)
    assert len(payments) == 3  # Moyo once, Dube twice, nobody charged twice for one try
    page.start_over()
    assert page.prepare_button.isVisible()


def test_an_unfinished_run_is_found_again_and_finished(gui: Gui, window: MainWindow) -> None:
    families(gui)
    billing = gui.bridge.services.billing
    run = gui.call(billing.prepare, date.today())
    gui.call(billing.retry_failed, run.id)  # leaves it paused, as a run paused midway
    assert gui.call(billing.run_of, run.id).status == PAUSED
    page = open_billing(gui, window)
    assert page.run is not None
    assert page.run.id == run.id
    assert page.charge_button.text() == "Charge the rest"
    assert "paused" in page.summary.text()
    finished = gui.run(page.charge())
    assert finished is not None
    assert finished.status == FINISHED
