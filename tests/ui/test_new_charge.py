"""The New charge dialog on the Payments page: an invoice's balance or any amount charged to a
payer's saved method, where it will go said before, what happened said after, and one payment
however often Charge is pressed."""

from __future__ import annotations

import asyncio

from PySide6.QtGui import QGuiApplication

from app.domain.money import Money
from app.services.payments import FAILED, PROCESSING, SUCCEEDED
from app.ui.main_window import MainWindow
from app.views.new_charge import NewChargeDialog
from app.views.payments import PaymentsPage
from tests.fakes.paypal import FakePayPal
from tests.fakes.server import served
from tests.ui.conftest import Gui
from tests.ui.test_pages import small_school


def gateway(gui: Gui, approval: float = 1.0) -> int:
    record = gui.call(
        gui.bridge.services.connections.add,
        "sandbox-payments",
        "Sandbox Cards",
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, "approval_rate": approval},
        {"api_key": "k"},
    )
    return int(record.id)


def open_dialog(
    gui: Gui, window: MainWindow
) -> tuple[PaymentsPage, NewChargeDialog, asyncio.Future]:
    page: PaymentsPage = window.show_page("payments")  # type: ignore[assignment]
    gui.run(page.settle())
    task = asyncio.ensure_future(page.new_charge())
    dialog = gui.find(NewChargeDialog, page)
    gui.wait_until(lambda: dialog.method.count() or dialog.problem.text())
    return page, dialog, task


def test_an_invoice_is_charged_once_however_often_charge_is_pressed(
    gui: Gui, window: MainWindow
) -> None:
    school = small_school(gui)
    card = gateway(gui)
    routing = gui.bridge.services.routing
    gui.call(
        routing.save_method, school["mother"].id, card, "card", "pm_sandbox_visa", label="Visa 4242"
    )
    page, dialog, task = open_dialog(gui, window)
    assert dialog.for_invoice.isChecked()
    assert dialog.method.currentText() == "card (Visa 4242)"
    gui.wait_until(lambda: dialog.route.text())
    assert dialog.route.text().startswith("US$80.00 by card. Chose Sandbox Cards")
    gui.save(dialog, "new-charge")
    first, second = gui.run(asyncio.gather(dialog.charge(), dialog.charge()))
    assert first is not None
    assert first.status == SUCCEEDED
    assert second is not None
    assert second.id == first.id
    assert dialog.outcome.text() == f"Paid: US$80.00 (payment {first.id})."
    dialog.accept()
    assert gui.run(task) == first
    payments = gui.call(gui.bridge.services.payments.payments, 10)
    assert [payment.id for payment in payments] == [first.id]
    assert payments[0].invoice_id == school["invoice"].id
    assert page.table.current_record().id == first.id


def test_an_amount_is_checked_then_charged_and_a_decline_is_said_plainly(
    gui: Gui, window: MainWindow
) -> None:
    school = small_school(gui)
    card = gateway(gui)
    gui.call(
        gui.bridge.services.routing.save_method,
        school["mother"].id,
        card,
        "card",
        "pm_sandbox_declined_visa",
    )
    _, dialog, task = open_dialog(gui, window)
    dialog.for_amount.setChecked(True)
    gui.wait_until(lambda: dialog.method.count())
    dialog.amount.setText("12.345")
    assert gui.run(dialog.charge()) is None
    assert "too many decimals" in dialog.problem.text()
    dialog.amount.setText("45")
    dialog.description.setText("Exam fee")
    payment = gui.run(dialog.charge())
    assert payment is not None
    assert payment.status == FAILED
    assert payment.amount == Money(4_500, "USD")
    assert dialog.outcome.text().startswith("Not paid: ")
    dialog.accept()
    gui.run(task)


def test_a_payer_without_a_saved_method_is_told_what_to_do(gui: Gui, window: MainWindow) -> None:
    small_school(gui)
    gateway(gui)
    _, dialog, task = open_dialog(gui, window)
    assert "no payment method saved" in dialog.problem.text()
    assert not dialog.charge_button.isEnabled()
    dialog.reject()
    assert gui.run(task) is None


def test_a_payment_link_is_made_for_a_payer_without_a_saved_method(
    gui: Gui, window: MainWindow
) -> None:
    school = small_school(gui)
    fake = FakePayPal()
    with served(fake.app) as url:
        fake.base_url = url
        gui.call(
            gui.bridge.services.connections.add,
            "paypal",
            "PayPal",
            {"client_id": fake.client_id, "api_url": url},
            {"client_secret": fake.client_secret},
        )
        _, dialog, task = open_dialog(gui, window)
        assert dialog.method.currentText() == "Payment link at PayPal"
        gui.wait_until(lambda: dialog.route.text())
        assert "by a payment link" in dialog.route.text()
        assert dialog.charge_button.text() == "Make link"
        payment = gui.run(dialog.charge())
        assert payment is not None
        assert payment.status == PROCESSING
        assert payment.invoice_id == school["invoice"].id
        assert dialog.link.text() == payment.link
        assert dialog.link.text().startswith("https://www.sandbox.paypal.com/checkoutnow")
        assert dialog.outcome.text().startswith("Payment link for US$80.00 made")
        gui.save(dialog, "new-charge-link")
        dialog.copy_button.click()
        assert QGuiApplication.clipboard().text() == payment.link
        dialog.accept()
        gui.run(task)
