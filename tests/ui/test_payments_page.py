"""The Payments page: the latest payments with what became of each, every attempt with the
router's reasons, refunds, and refunding from the page."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.domain.money import Money
from app.services.payments import Candidate, ChargeOrder, Payment
from app.store.school import Guardian
from app.ui.main_window import MainWindow
from app.views.payments import PaymentsPage
from tests.fakes.rates import FakeEcb
from tests.fakes.server import served
from tests.ui.conftest import Gui


def take_payment(gui: Gui, method: str = "pm_sandbox_visa_1") -> Payment:
    services = gui.bridge.services
    record = gui.call(
        services.connections.add,
        "sandbox-payments",
        f"Sandbox Cards {uuid.uuid4().hex[:4]}",
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, "approval_rate": 1},
        {"api_key": "k"},
    )

    def write(session: Session) -> int:
        guardian = Guardian(ref=f"G-{uuid.uuid4().hex[:4]}", first_name="Ann", last_name="Moyo")
        session.add(guardian)
        session.flush()
        return guardian.id

    payer = gui.call(services.db.write, write)
    gui.call(services.routing.save_method, payer, record.id, "card", method)
    payment: Payment = gui.call(
        lambda: services.routing.charge(
            services.payments,
            guardian_id=payer,
            amount=Money(12_050, "USD"),
            method="card",
            idempotency_key=uuid.uuid4().hex,
        )
    )
    return payment


def open_payments(gui: Gui, window: MainWindow) -> PaymentsPage:
    page: PaymentsPage = window.show_page("payments")  # type: ignore[assignment]
    gui.run(page.settle())
    return page


def test_without_payments_the_page_says_how_to_take_one(gui: Gui, window: MainWindow) -> None:
    page = open_payments(gui, window)
    assert page.states.state == "empty"


def test_a_payment_is_listed_with_its_attempts_and_the_router_s_reasons(
    gui: Gui, window: MainWindow
) -> None:
    payment = take_payment(gui)
    page = open_payments(gui, window)
    assert page.states.state == "content"
    assert page.model.rowCount() == 1
    shown = [page.model.index(0, column).data() for column in range(page.model.columnCount())]
    assert shown[1:4] == ["Ann Moyo", "$120.50", "paid"]
    gui.wait_until(lambda: "Attempts" in page.detail.toPlainText())
    text = page.detail.toPlainText()
    assert f"Payment {payment.id}: $120.50 by card, paid" in text
    assert "1. Sandbox Cards" in text
    assert "Why this gateway: chose Sandbox Cards" in text
    assert page.refund_button.isEnabled()
    gui.save(window, "payments")


def test_refunding_part_then_too_much_from_the_page(gui: Gui, window: MainWindow) -> None:
    payment = take_payment(gui)
    page = open_payments(gui, window)
    gui.wait_until(lambda: page._shown is not None)
    refund = gui.run(page.refund(page._shown, "20.50"))  # type: ignore[arg-type]
    assert refund is not None
    assert page.notice.text() == "Refund of $20.50: succeeded."
    gui.run(page.settle())
    gui.wait_until(lambda: "Refunds" in page.detail.toPlainText())
    assert "$20.50: succeeded" in page.detail.toPlainText()
    assert gui.run(page.refund(page._shown, "200")) is None  # type: ignore[arg-type]
    assert page.notice.text().startswith("Only USD 100.00 of this payment is left")
    assert gui.run(page.refund(page._shown, "1.234")) is None  # type: ignore[arg-type]
    assert "too many decimals" in page.notice.text()
    assert gui.call(gui.bridge.services.payments.payment, payment.id).refunded == Money(
        2_050, "USD"
    )


def test_a_payment_in_another_currency_shows_what_it_is_in_the_school_s(
    gui: Gui, window: MainWindow
) -> None:
    services = gui.bridge.services
    fake = FakeEcb("2026-11-20", {"USD": "1.0523"})
    with served(fake.app) as url:
        gui.call(services.connections.add, "ecb-rates", "ECB", {"api_url": url}, {})
        gui.call(services.rates.refresh)
    record = gui.call(
        services.connections.add,
        "sandbox-payments",
        "Sandbox Euro Cards",
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, "approval_rate": 1},
        {"api_key": "k"},
    )
    gui.call(
        services.payments.charge,
        ChargeOrder(
            idempotency_key=uuid.uuid4().hex,
            amount=Money(10_000, "EUR"),
            method="card",
            candidates=(Candidate(record.id, "pm_sandbox_visa"),),
        ),
    )
    page = open_payments(gui, window)
    gui.wait_until(lambda: "Attempts" in page.detail.toPlainText())
    assert "In USD:    $105.23 at 1 EUR = 1.052300 USD (ECB, 20 Nov 2026)" in (
        page.detail.toPlainText()
    )
