"""The Approvals page: a refund that waits for a second person is approved by a colleague who
signs in at this PC, without taking the window over from whoever is signed in."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from app.domain.access import Role
from app.domain.money import Money
from app.services.approvals import ApprovalNeeded, Status
from app.services.payments import SUCCEEDED, Candidate, ChargeOrder
from app.ui.main_window import MainWindow
from app.ui.sign_in import SecondPersonDialog
from app.views.approvals import ApprovalsPage
from tests.ui.conftest import Gui

FAST_SANDBOX = {"approval_rate": "1", "error_rate": "0", "latency_ms": "1", "latency_p95_ms": "2"}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_a_colleague_approves_a_waiting_refund_at_this_pc(gui: Gui, window: MainWindow) -> None:
    services = gui.bridge.services
    gui.call(services.settings.set, "approvals.refund_above", 100)
    gui.call(services.users.create_administrator, "Ada", "ada's long password")
    bob = gui.call(services.users.add, "Bob", Role.FINANCE, "bob's long password")
    gui.call(services.users.add, "Carol", Role.FINANCE, "carol's long password")
    gateway = gui.call(
        services.connections.add, "sandbox-payments", "Sandbox", FAST_SANDBOX, {"api_key": "k1"}
    )
    payment = gui.call(
        services.payments.charge,
        ChargeOrder(
            f"test-{uuid.uuid4().hex}", Money(30_000, "USD"), "card",
            (Candidate(gateway.id, "pm_sandbox_ok"),),
        ),
    )  # fmt: skip
    assert payment.status == SUCCEEDED
    gui.bridge.principal = bob.principal
    try:
        gui.call(services.payments.refund, payment.id, Money(25_000, "USD"), "moved away")
    except ApprovalNeeded:
        pass
    else:
        raise AssertionError("a refund above the limit went through without approval")

    page = window.show_page("approvals")
    assert isinstance(page, ApprovalsPage)
    gui.run(page.settle())
    [waiting] = page.model.records()
    assert (waiting.status, waiting.requested_by) == (Status.WAITING, "Bob")
    page.table.selectRow(0)
    assert page.approve_button.isEnabled()
    window.grab().save(str(SCREENSHOTS / "approvals.png"))

    page.approve_button.click()
    dialog = gui.find(SecondPersonDialog)
    dialog.form.name.setText("Bob")  # the one who asked cannot approve
    dialog.form.password.setText("bob's long password")
    dialog.form.button.click()
    gui.wait_until(lambda: not dialog.isVisible())
    box_text = gui.wait_until(lambda: _message(window))
    assert "Bob asked for this" in box_text
    _close_messages(window)

    page.table.selectRow(0)
    page.approve_button.click()
    dialog = gui.find(SecondPersonDialog)
    dialog.form.name.setText("Carol")
    dialog.form.password.setText("carol's long password")
    dialog.form.button.click()
    gui.wait_until(lambda: not page.model.records())  # only waiting ones are listed
    for _ in range(200):  # approved at once, then carried out: wait for the outcome
        if gui.call(services.approvals.approvals)[0].status is not Status.APPROVED:
            break
        gui.run(asyncio.sleep(0.05))
    [refund] = gui.call(services.payments.refunds, payment.id)
    assert refund.amount == Money(25_000, "USD")
    assert gui.bridge.principal == bob.principal  # the window still belongs to Bob
    [done] = gui.call(services.approvals.approvals)
    assert (done.status, done.decided_by) == (Status.DONE, "Carol")


def _message(window: MainWindow) -> str:
    boxes = [box for box in window.findChildren(QMessageBox) if box.isVisible()]
    return boxes[0].text() if boxes else ""


def _close_messages(window: MainWindow) -> None:
    for box in window.findChildren(QMessageBox):
        box.close()
