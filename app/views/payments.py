"""Payments: the latest payments, what became of each, every attempt at a gateway with the
router's reasons, its refunds, and refunding it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from PySide6.QtGui import QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.domain.money import Money, MoneyError
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.payments import (
    FAILED,
    PENDING,
    PROCESSING,
    SENT,
    SUCCEEDED,
    TOPIC,
    UNKNOWN,
    Payment,
    Refund,
)
from app.services.rates import Conversion
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import run_dialog
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED
from app.views.new_charge import NewChargeDialog

SHOWN = 500
STATUS_LABELS = {
    SUCCEEDED: "paid",
    PROCESSING: "on its way",
    FAILED: "failed",
    UNKNOWN: "not known yet",
    PENDING: "being taken",
}
STATUS_COLOURS = {SUCCEEDED: HEALTHY, PROCESSING: PAUSED, FAILED: DOWN, UNKNOWN: DEGRADED}
ATTEMPT_LABELS = {SENT: "no answer yet", SUCCEEDED: "paid", PROCESSING: "on its way"}


def describe(
    payment: Payment,
    refunds: list[Refund],
    names: dict[int, str],
    zone: ZoneInfo,
    locale: str,
    conversion: Conversion | None = None,
) -> str:
    """A payment in full: what, who, where, every attempt and why, and its refunds."""

    def gateway(connection_id: int | None) -> str:
        if connection_id is None:
            return "no gateway"
        return names.get(connection_id, f"connection {connection_id}")

    status = STATUS_LABELS.get(payment.status, payment.status)
    lines = [
        f"Payment {payment.id}: {payment.amount.format(locale)} by {payment.method}, {status}",
        f"Taken:     {payment.created_at.astimezone(zone):%d %b %Y %H:%M}",
    ]
    if conversion is not None:
        lines.append(
            f"In {conversion.converted.currency}:    {conversion.converted.format(locale)} "
            f"at {conversion.explain()}"
        )
    if payment.payer:
        lines.append(f"Payer:     {payment.payer}")
    if payment.invoice_id is not None:
        lines.append(f"Invoice:   number {payment.invoice_id}")
    if payment.connection_id is not None:
        lines.append(f"Gateway:   {gateway(payment.connection_id)} ({payment.gateway_id})")
    if payment.fee is not None:
        lines.append(f"Fee:       {payment.fee.format(locale)}")
    if payment.refunded.minor:
        lines.append(f"Refunded:  {payment.refunded.format(locale)}")
    if payment.failure is not None and payment.status != SUCCEEDED:
        lines.append(f"Why:       {payment.failure.message}")
    lines += ["", f"Reference: {payment.reference}", f"Key:       {payment.idempotency_key}"]
    lines += ["", "Attempts"]
    for attempt in payment.attempts:
        outcome = (
            attempt.failure.message
            if attempt.failure is not None and attempt.status not in (SUCCEEDED, PROCESSING)
            else ATTEMPT_LABELS.get(attempt.status, attempt.status)
        )
        took = f" ({attempt.latency_ms:.0f} ms)" if attempt.latency_ms is not None else ""
        lines.append(f"  {attempt.number}. {gateway(attempt.connection_id)}: {outcome}{took}")
        explanation = attempt.why.get("explanation")
        if explanation and (attempt.number == 1 or attempt.why != payment.attempts[0].why):
            lines.append(f"     Why this gateway: {explanation}")
    if not payment.attempts:
        lines.append("  none yet")
    if refunds:
        lines += ["", "Refunds"]
        for refund in refunds:
            extra = f" ({refund.failure_message})" if refund.failure_message else ""
            lines.append(f"  {refund.amount.format(locale)}: {refund.status}{extra}")
    return "\n".join(lines)


class PaymentsPage(Page):
    key = "payments"
    title = "Payments"
    icon_name = "payments"
    topics = (TOPIC, TOPIC_CONNECTIONS)
    refresh_every = 1.0

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.names: dict[int, str] = {}
        self._shown: Payment | None = None

        self.status = QComboBox()
        self.status.addItem("Every status", None)
        for status, label in STATUS_LABELS.items():
            self.status.addItem(label.capitalize(), status)
        self.connection = QComboBox()
        self.connection.setMinimumWidth(180)
        for combo in (self.status, self.connection):
            combo.currentIndexChanged.connect(lambda _i: self.schedule_refresh())
            self.actions.addWidget(combo)
        self.new_button = QPushButton("New charge…")
        self.new_button.setToolTip("Charge an invoice or an amount now (Ctrl+N)")
        self.new_button.clicked.connect(lambda: tasks.start(self.new_charge(), owner=self))
        self.actions.addWidget(self.new_button)
        QShortcut(QKeySequence.StandardKey.New, self, activated=self.new_button.click)

        self.model: RecordModel[Payment] = RecordModel(self.columns())
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)  # newest first, as they are read
        self.table.proxy.sort(-1)
        self.table.selection_changed.connect(self._selected)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setFont(QFont("monospace"))
        self.detail.setPlaceholderText("Choose a payment to see its attempts and refunds.")
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        self.refund_button = QPushButton("Refund…")
        self.refund_button.setToolTip("Refund all or part of the selected payment")
        self.refund_button.setEnabled(False)
        self.refund_button.clicked.connect(self._ask_refund)
        self.footer = QLabel()
        self.footer.setObjectName("Muted")
        self.notice = QLabel()
        bottom = QHBoxLayout()
        bottom.addWidget(self.footer)
        bottom.addWidget(self.notice, 1)
        bottom.addWidget(self.refund_button)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.services.settings.get("school.timezone"))

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    def columns(self) -> list[Column[Payment]]:
        return [
            Column("Taken", lambda p: f"{p.created_at.astimezone(self.zone):%d %b %H:%M}"),
            Column("Payer", lambda p: p.payer or "—", stretch=True),
            Column(
                "Amount",
                lambda p: p.amount.format(self.locale),
                sort=lambda p: (p.amount.currency, p.amount.minor),
                right=True,
            ),
            Column(
                "Status",
                lambda p: STATUS_LABELS.get(p.status, p.status),
                color=lambda p: STATUS_COLOURS.get(p.status),
                tooltip=lambda p: p.failure.message if p.failure else "",
            ),
            Column(
                "Gateway",
                lambda p: self.names.get(p.connection_id, "—") if p.connection_id else "—",
            ),
            Column("Attempts", lambda p: str(len(p.attempts)), right=True),
        ]

    async def load(self) -> None:
        services = self.bridge.services
        records = await self.bridge.call(services.connections.connections)
        self.names = {record.id: record.name for record in records}
        current = self.connection.currentData()
        self.connection.blockSignals(True)
        self.connection.clear()
        self.connection.addItem("Every gateway", None)
        for record in records:
            if "payments" in record.spec.capabilities:
                self.connection.addItem(record.name, record.id)
        self.connection.setCurrentIndex(max(self.connection.findData(current), 0))
        self.connection.blockSignals(False)
        status, connection = self.status.currentData(), self.connection.currentData()
        payments: list[Payment] = await self.bridge.call(
            services.payments.payments, SHOWN, status=status, connection_id=connection
        )
        if not payments and status is None and connection is None:
            self.states.show_empty(
                "No payments yet",
                "Payments taken from families appear here, with every attempt at a gateway and "
                "why that gateway was chosen. Take one now, or charge every invoice that is "
                "due with a billing run.",
                [
                    ("New charge…", self.new_button.click),
                    ("Open the invoices", lambda: self.navigate.emit("invoices")),
                ],
            )
            return
        self.model.set_records(payments)
        self.footer.setText(
            (f"The latest {len(payments):,} payments" if len(payments) > 1 else "One payment")
            if payments
            else "No payments match these filters."
        )
        self.states.show_content()
        if self.table.current_record() is None and payments:
            self.table.selectRow(0)
        elif self._shown is not None:
            fresh = next((p for p in payments if p.id == self._shown.id), None)
            if fresh is not None and fresh != self._shown:
                self._shown = None
                self._selected(fresh)

    async def new_charge(self) -> Payment | None:
        """Open the New charge dialog; the payment made, if any, is selected afterwards."""
        services = self.bridge.services
        invoices = await self.bridge.call(services.school.invoices)
        guardians = await self.bridge.call(services.school.guardians)
        currency = str(services.settings.get("school.currency"))
        dialog = NewChargeDialog(self.bridge, invoices, guardians, self.locale, currency, self)
        await run_dialog(dialog)
        if dialog.payment is not None:
            await self.refresh()
            self.table.select_key(dialog.payment.id)
        return dialog.payment

    def _selected(self, payment: Payment | None) -> None:
        self.refund_button.setEnabled(payment is not None and payment.refundable.minor > 0)
        if payment is None or payment == self._shown:
            return
        self._shown = payment
        tasks.start(self.show_payment(payment), owner=self)

    async def show_payment(self, payment: Payment) -> None:
        services = self.bridge.services
        refunds = await self.bridge.call(services.payments.refunds, payment.id)
        conversion = None
        home = str(services.settings.get("school.currency"))
        if payment.amount.currency != home:
            try:
                conversion = await self.bridge.call(
                    services.rates.convert,
                    payment.amount,
                    home,
                    payment.created_at.astimezone(self.zone).date(),
                )
            except SwitchboardError:
                conversion = None  # no rates source connected, or none for this currency
        if self._shown is payment:
            self.detail.setPlainText(
                describe(payment, refunds, self.names, self.zone, self.locale, conversion)
            )

    def _ask_refund(self) -> None:
        payment = self._shown
        if payment is None:
            return
        text, given = QInputDialog.getText(
            self,
            "Refund",
            f"Refund how much of {payment.amount.format(self.locale)}? "
            f"({payment.refundable.format(self.locale)} can still be refunded.)",
            text=payment.refundable.for_input(self.locale),
        )
        if given:
            tasks.start(self.refund(payment, text), owner=self)

    async def refund(self, payment: Payment, text: str) -> Refund | None:
        """Refund `text` (an amount as typed) of the payment; says what happened below."""
        try:
            amount = Money.parse(text, payment.amount.currency, locale=self.locale)
        except MoneyError as exc:
            self.notice.setText(str(exc))
            return None
        try:
            refund: Refund = await self.bridge.call(
                self.bridge.services.payments.refund, payment.id, amount
            )
        except SwitchboardError as exc:
            self.notice.setText(str(exc))
            return None
        self.notice.setText(
            f"Refund of {refund.amount.format(self.locale)}: {refund.status}."
            + (f" {refund.failure_message}" if refund.failure_message else "")
        )
        self._shown = None
        self.schedule_refresh()
        return refund
