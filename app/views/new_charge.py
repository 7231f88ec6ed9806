"""New charge: take a payment now, for an invoice (what is still owed on it, from its guardian)
or for any amount from a payer, on a method they have saved. Before charging, the dialog says
where the payment would go and why; afterwards, what happened.

Charging twice from one dialog (a double click, a second press after a lost answer) makes one
payment: the dialog's idempotency key is chosen once, when it opens, and an invoice's key is
the invoice's own (see BillingService.invoice_due)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.domain.money import Money, MoneyError
from app.domain.routing import PaymentAsk
from app.domain.school import GuardianRecord, InvoiceRecord, InvoiceStatus
from app.services.payments import FAILED, PROCESSING, SUCCEEDED, LinkOrder, Payment
from app.services.routing import SavedMethod
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.views.invoices import COMMON_CURRENCIES


@dataclass(frozen=True)
class Ask:
    """What the dialog would charge: from whom, how much, how, and under which key."""

    guardian_id: int
    amount: Money
    method: str
    key: str
    invoice_id: int | None = None
    description: str = ""
    link_at: int | None = None  # a payment link at this connection, not a saved method

    @property
    def what(self) -> str:
        return "a payment link" if self.link_at is not None else self.method


LINK = "link:"  # method entries that are payment links carry "link:<connection id>"


class NewChargeDialog(QDialog):
    def __init__(
        self,
        bridge: EngineBridge,
        invoices: list[InvoiceRecord],
        guardians: list[GuardianRecord],
        locale: str,
        currency: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("New charge")
        self.setMinimumWidth(560)
        self.bridge = bridge
        self.locale = locale
        self.key = f"ui:{uuid.uuid4().hex}"  # one payment per dialog, however often pressed
        self.payment: Payment | None = None
        self._methods: list[SavedMethod] = []
        self._links: list[tuple[int, str]] = []
        self._owed: Money | None = None

        self.for_invoice = QRadioButton("An invoice")
        self.for_amount = QRadioButton("Another amount")
        choice = QButtonGroup(self)
        choice.addButton(self.for_invoice)
        choice.addButton(self.for_amount)
        row = QHBoxLayout()
        row.addWidget(self.for_invoice)
        row.addWidget(self.for_amount)
        row.addStretch(1)

        self.invoice = QComboBox()
        open_ones = [
            invoice
            for invoice in sorted(invoices, key=lambda i: (i.due_on, i.number))
            if invoice.status is InvoiceStatus.OPEN and invoice.guardian_id is not None
        ]
        for invoice in open_ones:
            self.invoice.addItem(
                f"{invoice.number} · {invoice.bill_to} · {invoice.total.format(locale)} "
                f"due {invoice.due_on:%d %b %Y}",
                invoice.id,
            )
        self._invoices = {invoice.id: invoice for invoice in open_ones}
        self.payer = QComboBox()
        self.payer.setEditable(True)
        self.payer.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for guardian in sorted(guardians, key=lambda g: (g.last_name, g.first_name)):
            self.payer.addItem(f"{guardian.last_name}, {guardian.first_name}", guardian.id)
        self.amount = QLineEdit()
        self.amount.setPlaceholderText("amount")
        self.currency = QComboBox()
        self.currency.addItems([currency, *[c for c in COMMON_CURRENCIES if c != currency]])
        money = QHBoxLayout()
        money.setContentsMargins(0, 0, 0, 0)
        money.addWidget(self.amount, 1)
        money.addWidget(self.currency)
        self.money = QWidget()
        self.money.setLayout(money)
        self.description = QLineEdit()
        self.description.setPlaceholderText("what it is for (optional)")
        self.method = QComboBox()

        self.form = QFormLayout()
        self.form.addRow("Charge", row)
        self.form.addRow("Invoice", self.invoice)
        self.form.addRow("Payer", self.payer)
        self.form.addRow("Amount", self.money)
        self.form.addRow("For", self.description)
        self.form.addRow("Method", self.method)
        self.route = QLabel()
        self.route.setWordWrap(True)
        self.route.setObjectName("Muted")
        self.problem = QLabel()
        self.problem.setObjectName("FieldError")
        self.problem.setWordWrap(True)
        self.outcome = QLabel()
        self.outcome.setWordWrap(True)
        self.outcome.setObjectName("EmptyTitle")
        self.link = QLineEdit()
        self.link.setReadOnly(True)
        self.copy_button = QPushButton("Copy link")
        self.copy_button.clicked.connect(self._copy_link)
        link_row = QHBoxLayout()
        link_row.setContentsMargins(0, 0, 0, 0)
        link_row.addWidget(self.link, 1)
        link_row.addWidget(self.copy_button)
        self.link_box = QWidget()
        self.link_box.setLayout(link_row)
        self.link_box.hide()

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.charge_button = QPushButton("Charge")
        self.charge_button.setDefault(True)
        self.buttons.addButton(self.charge_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.charge_button.clicked.connect(lambda: tasks.start(self.charge(), owner=self))
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.route)
        layout.addWidget(self.problem)
        layout.addWidget(self.outcome)
        layout.addWidget(self.link_box)
        layout.addWidget(self.buttons)

        self.for_invoice.toggled.connect(lambda _on: self._changed())
        self.invoice.currentIndexChanged.connect(lambda _i: self._changed())
        self.payer.currentIndexChanged.connect(lambda _i: self._changed())
        self.method.currentIndexChanged.connect(lambda _i: self._preview_later())
        self.amount.editingFinished.connect(self._preview_later)
        self.currency.currentIndexChanged.connect(lambda _i: self._preview_later())
        if open_ones:
            self.for_invoice.setChecked(True)
        else:
            self.for_invoice.setEnabled(False)
            self.for_amount.setChecked(True)
        self._changed()

    # --- what is asked ---------------------------------------------------------------------------

    def _changed(self) -> None:
        by_invoice = self.for_invoice.isChecked()
        for widget in (self.invoice,):
            widget.setEnabled(by_invoice)
        for widget in (self.payer, self.money, self.description):
            widget.setEnabled(not by_invoice)
        tasks.start(self.load_methods(), owner=self)

    def _guardian(self) -> int | None:
        if self.for_invoice.isChecked():
            invoice = self._invoices.get(self.invoice.currentData())
            return invoice.guardian_id if invoice else None
        data = self.payer.currentData()
        return int(data) if data is not None else None

    async def load_methods(self) -> None:
        """The payer's saved methods, and for an invoice what is still owed on it."""
        guardian = self._guardian()
        routing = self.bridge.services.routing
        self._methods = await self.bridge.call(routing.methods, guardian) if guardian else []
        self._links = await self.bridge.call(self.bridge.services.payments.link_gateways)
        self._owed = None
        if self.for_invoice.isChecked() and self.invoice.currentData() is not None:
            try:
                due = await self.bridge.call(
                    self.bridge.services.billing.invoice_due, self.invoice.currentData()
                )
                self._owed = due.amount
            except SwitchboardError as exc:
                self.problem.setText(str(exc))
        self.method.blockSignals(True)
        self.method.clear()
        for method in sorted({saved.method for saved in self._methods}):
            labels = [saved.label for saved in self._methods if saved.method == method]
            shown = ", ".join(label for label in labels if label)
            self.method.addItem(f"{method} ({shown})" if shown else method, method)
        for connection_id, name in self._links:
            self.method.addItem(f"Payment link at {name}", f"{LINK}{connection_id}")
        self.method.blockSignals(False)
        await self.preview()

    def ask(self) -> Ask:
        """What would be charged; SwitchboardError with a sentence when it cannot be."""
        guardian = self._guardian()
        if guardian is None:
            raise SwitchboardError("Choose who pays.")
        method = str(self.method.currentData() or "")
        if not method:
            raise SwitchboardError(
                "This payer has no payment method saved at any gateway, and no connected "
                "gateway makes payment links; save a method first, or connect PayPal or Paynow."
            )
        link_at = int(method.removeprefix(LINK)) if method.startswith(LINK) else None
        if self.for_invoice.isChecked():
            invoice = self._invoices[self.invoice.currentData()]
            if self._owed is None:
                raise SwitchboardError(f"Invoice {invoice.number} cannot be charged.")
            return Ask(
                guardian,
                self._owed,
                method,
                "",  # the invoice's own key, decided when charging
                invoice.id,
                f"Invoice {invoice.number}",
                link_at,
            )
        try:
            amount = Money.parse(
                self.amount.text(), self.currency.currentText(), locale=self.locale
            )
        except MoneyError as exc:
            raise SwitchboardError(str(exc)) from None
        description = self.description.text().strip()
        return Ask(guardian, amount, method, self.key, None, description, link_at)

    def _preview_later(self) -> None:
        tasks.start(self.preview(), owner=self)

    async def preview(self) -> None:
        """Say where the payment would go and why, or what stops it."""
        self.problem.clear()
        self.route.clear()
        try:
            ask = self.ask()
        except SwitchboardError as exc:
            if self.for_invoice.isChecked() or self.amount.text().strip():
                self.problem.setText(str(exc))
            self.charge_button.setEnabled(self.payment is None and bool(self.method.count()))
            return
        if ask.link_at is not None:
            self.route.setText(
                f"{ask.amount.format(self.locale)} by a payment link: the family pays on the "
                "gateway's page, and the payment shows as paid once they have."
            )
            self.charge_button.setText("Make link")
            self.charge_button.setEnabled(self.payment is None)
            return
        self.charge_button.setText("Charge")
        try:
            _, decision = await self.bridge.call(
                self.bridge.services.routing.candidates,
                ask.guardian_id,
                PaymentAsk(ask.amount, ask.method),
            )
        except SwitchboardError as exc:
            self.problem.setText(str(exc))
            self.charge_button.setEnabled(False)
            return
        why = decision.explanation
        self.route.setText(
            f"{ask.amount.format(self.locale)} by {ask.method}. {why[:1].upper()}{why[1:]}"
        )
        self.charge_button.setEnabled(self.payment is None)

    # --- charging --------------------------------------------------------------------------------

    async def charge(self) -> Payment | None:
        """Charge what is asked (once, however often pressed) and say what happened."""
        if self.payment is not None:
            return self.payment
        try:
            ask = self.ask()
        except SwitchboardError as exc:
            self.problem.setText(str(exc))
            return None
        self.charge_button.setEnabled(False)
        self.problem.clear()
        self.outcome.setText("Charging…")
        services = self.bridge.services
        try:
            if ask.link_at is not None:
                payment: Payment = await self._make_link(ask)
            elif ask.invoice_id is not None:
                payment = await self.bridge.call(
                    services.billing.charge_invoice, ask.invoice_id, ask.method
                )
            else:
                payment = await self.bridge.call(
                    lambda: services.routing.charge(
                        services.payments,
                        guardian_id=ask.guardian_id,
                        amount=ask.amount,
                        method=ask.method,
                        idempotency_key=ask.key,
                        description=ask.description,
                    )
                )
        except SwitchboardError as exc:
            self.outcome.clear()
            self.problem.setText(str(exc))
            self.charge_button.setEnabled(True)
            return None
        self.payment = payment
        self.outcome.setText(self.said(payment))
        if payment.link:
            self.link.setText(payment.link)
            self.link.setCursorPosition(0)
            self.link_box.show()
        self.adjustSize()
        self.buttons.clear()
        close = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        if close is not None:
            close.clicked.connect(self.accept)
            close.setDefault(True)
        return payment

    async def _make_link(self, ask: Ask) -> Payment:
        services = self.bridge.services
        key = ask.key
        if ask.invoice_id is not None:
            key = (await self.bridge.call(services.billing.invoice_due, ask.invoice_id)).key
        order = LinkOrder(
            idempotency_key=key,
            amount=ask.amount,
            connection_id=int(ask.link_at or 0),
            description=ask.description,
            guardian_id=ask.guardian_id,
            invoice_id=ask.invoice_id,
        )
        payment: Payment = await self.bridge.call(services.payments.create_link, order)
        return payment

    def _copy_link(self) -> None:
        clipboard = QGuiApplication.clipboard()
        if clipboard is not None:
            clipboard.setText(self.link.text())
        self.copy_button.setText("Copied")

    def said(self, payment: Payment) -> str:
        amount = payment.amount.format(self.locale)
        if payment.link and payment.status == PROCESSING:
            return (
                f"Payment link for {amount} made (payment {payment.id}). Send it to the family; "
                "the payment shows as paid once they have paid on the page."
            )
        if payment.status == SUCCEEDED:
            return f"Paid: {amount} (payment {payment.id})."
        if payment.status == FAILED:
            why = payment.failure.message if payment.failure else "the gateway said no"
            return f"Not paid: {why}"
        if payment.status == PROCESSING:
            return (
                f"{amount} is on its way (payment {payment.id}); it shows as paid once it arrives."
            )
        return (
            f"Whether {amount} was taken is not known yet (payment {payment.id}). Switchboard "
            "keeps asking the gateway; nothing will be charged twice."
        )
