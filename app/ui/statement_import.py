"""Bringing a settlement report or bank statement in, in the office's words: what kind of file
it is and whose records it holds, which column is which for a CSV whose layout the bank chose,
and, for a file that was refused, every row found wrong (nothing from it is kept).

The dialogs only ask; the page does the reading and importing through the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.currencies import EXPONENTS
from app.domain.errors import SwitchboardError
from app.domain.reconciliation import FileRejected, RowError, Side
from app.services.statement_files import FORMATS, ColumnMapping, DateOrder, Sign
from app.ui.table import Column, RecordModel, RecordTable

GATEWAY_FORMATS = ("stripe-csv", "paypal-csv")
BANK_FORMATS = ("bank-csv", "ofx", "camt053")
MAPPED_FORMATS = ("bank-csv", "generic-csv")
# Formats whose files may not say their currency: the account's is asked for.
CURRENCY_FORMATS = ("bank-csv", "ofx", "generic-csv")
COMMON_CURRENCIES = ("USD", "ZWG", "ZAR", "BWP", "EUR", "GBP")
FORMAT_LABELS = dict(FORMATS)
PREVIEW_ROWS = 8
NONE = "(none)"


def _banner() -> QLabel:
    label = QLabel()
    label.setObjectName("FieldError")
    label.setWordWrap(True)
    label.hide()
    return label


def _muted(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("Muted")
    label.setWordWrap(True)
    return label


def currency_combo(chosen: str) -> QComboBox:
    combo = QComboBox()
    combo.addItems([*COMMON_CURRENCIES, *sorted(set(EXPONENTS) - set(COMMON_CURRENCIES))])
    if chosen:
        combo.setCurrentText(chosen)
    return combo


@dataclass(frozen=True)
class FileChoice:
    """What the office said about a file: its format, whose records (a gateway connection or
    a bank account by name) and the account's currency for files that do not say it."""

    fmt: str
    side: Side
    connection_id: int | None = None
    account: str = ""
    currency: str = ""

    @property
    def needs_mapping(self) -> bool:
        return self.fmt in MAPPED_FORMATS


class ImportFileDialog(QDialog):
    """What kind of file this is and whose records it holds."""

    def __init__(
        self,
        file_name: str,
        detected: str | None,
        gateways: Sequence[tuple[int, str]],
        accounts: Sequence[str],
        currency: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Import {file_name}")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        self.note = _muted(
            f"Switchboard recognised {file_name} as: {FORMAT_LABELS[detected]}."
            if detected
            else f"Switchboard cannot tell what kind of file {file_name} is; choose it below."
        )
        layout.addWidget(self.note)
        self.banner = _banner()
        layout.addWidget(self.banner)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.format = QComboBox()
        for key, label in FORMATS:
            self.format.addItem(label, key)
        self.format.setCurrentIndex(max(self.format.findData(detected or "bank-csv"), 0))
        form.addRow("&Kind of file", self.format)

        self.side_row = QWidget()
        sides = QHBoxLayout(self.side_row)
        sides.setContentsMargins(0, 0, 0, 0)
        self.gateway_side = QRadioButton("A payment gateway's")
        self.bank_side = QRadioButton("A bank account's")
        self.bank_side.setChecked(True)
        self.sides = QButtonGroup(self)
        for button in (self.gateway_side, self.bank_side):
            self.sides.addButton(button)
            sides.addWidget(button)
        sides.addStretch(1)
        form.addRow("Whose records", self.side_row)

        self.gateway = QComboBox()
        for connection_id, name in gateways:
            self.gateway.addItem(name, connection_id)
        self.gateway_hint = _muted("Connect the gateway on the Dashboard first.")
        self.gateway_hint.setVisible(not gateways)
        gateway_box = QWidget()
        gateway_column = QVBoxLayout(gateway_box)
        gateway_column.setContentsMargins(0, 0, 0, 0)
        gateway_column.addWidget(self.gateway)
        gateway_column.addWidget(self.gateway_hint)
        form.addRow("&Gateway", gateway_box)
        self.gateway_box = gateway_box

        self.account = QComboBox()
        self.account.setEditable(True)
        self.account.addItems(list(accounts))
        self.account.setCurrentText(accounts[0] if accounts else "")
        line_edit = self.account.lineEdit()
        if line_edit is not None:
            line_edit.setPlaceholderText("Main account")
        self.account.setToolTip("The bank account the statement is from, by a name you choose")
        form.addRow("Bank &account", self.account)

        self.currency = currency_combo(currency)
        self.currency.setToolTip("Used for amounts when the file does not say their currency")
        form.addRow("Account &currency", self.currency)
        layout.addLayout(form)
        self.form = form

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Next")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.format.currentIndexChanged.connect(lambda _i: self._shape())
        self.sides.buttonToggled.connect(lambda *_: self._shape())
        self._shape()

    @property
    def fmt(self) -> str:
        return str(self.format.currentData())

    @property
    def side(self) -> Side:
        if self.fmt in GATEWAY_FORMATS:
            return Side.GATEWAY
        if self.fmt in BANK_FORMATS:
            return Side.BANK
        return Side.GATEWAY if self.gateway_side.isChecked() else Side.BANK

    def _shape(self) -> None:
        """Ask only what this kind of file needs."""
        gateway = self.side is Side.GATEWAY
        self.form.setRowVisible(self.side_row, self.fmt == "generic-csv")
        self.form.setRowVisible(self.gateway_box, gateway)
        self.form.setRowVisible(self.account, not gateway)
        self.form.setRowVisible(self.currency, self.fmt in CURRENCY_FORMATS)
        self.banner.hide()

    def choice(self) -> FileChoice:
        """What was chosen; SwitchboardError with what is still needed."""
        if self.side is Side.GATEWAY:
            if self.gateway.currentData() is None:
                raise SwitchboardError(
                    "Choose the gateway the report is from; connect it on the Dashboard first."
                )
            return FileChoice(
                self.fmt, Side.GATEWAY, int(self.gateway.currentData()), "", self._currency()
            )
        account = " ".join(self.account.currentText().split())
        if not account:
            raise SwitchboardError("Give the bank account a name, such as 'Main account'.")
        return FileChoice(self.fmt, Side.BANK, None, account, self._currency())

    def _currency(self) -> str:
        return self.currency.currentText() if self.fmt in CURRENCY_FORMATS else ""

    def accept(self) -> None:
        try:
            self.choice()
        except SwitchboardError as exc:
            self.banner.setText(str(exc))
            self.banner.show()
            return
        super().accept()


class ColumnMappingDialog(QDialog):
    """Which column of a CSV holds what, prefilled with the source's remembered choice or
    Switchboard's guess, with the file's first rows to look at."""

    def __init__(
        self,
        file_name: str,
        headers: Sequence[str],
        sample: Sequence[tuple[int, Sequence[str]]],
        side: Side,
        mapping: ColumnMapping | None,
        *,
        remembered: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Choose the columns of {file_name}")
        self.resize(860, 640)
        self.headers = list(headers)
        self.side = side
        self.mapping: ColumnMapping | None = None
        layout = QVBoxLayout(self)
        if remembered:
            intro = "These are the columns chosen last time for this account; check them."
        elif mapping is not None:
            intro = "Switchboard guessed which column is which from their names; check them."
        else:
            intro = "Switchboard cannot tell which column is which; choose them below."
        layout.addWidget(_muted(intro + " The first rows of the file are shown to help."))

        preview_columns: list[Column[tuple[int, Sequence[str]]]] = [
            Column("Row", lambda item: str(item[0]), sort=lambda item: item[0], right=True)
        ]
        for position, header in enumerate(self.headers):
            preview_columns.append(
                Column(
                    header or f"Column {position + 1}",
                    lambda item, position=position: (
                        item[1][position] if position < len(item[1]) else ""
                    ),
                )
            )
        self.preview_model: RecordModel[tuple[int, Sequence[str]]] = RecordModel(
            preview_columns, key=lambda item: item[0]
        )
        self.preview_model.set_records(list(sample[:PREVIEW_ROWS]))
        self.preview = RecordTable(self.preview_model)
        self.preview.setSortingEnabled(False)
        self.preview.proxy.sort(-1)
        self.preview.setMaximumHeight(
            self.preview.horizontalHeader().sizeHint().height()
            + min(len(sample), PREVIEW_ROWS) * 28
            + 24
        )
        self.preview.fit_columns()
        layout.addWidget(self.preview)

        self.banner = _banner()
        layout.addWidget(self.banner)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.combos: dict[str, QComboBox] = {}

        def combo(name: str, label: str, tip: str = "", required: bool = False) -> QComboBox:
            box = QComboBox()
            if not required:
                box.addItem(NONE, "")
            for header in self.headers:
                box.addItem(header, header)
            if tip:
                box.setToolTip(tip)
            self.combos[name] = box
            form.addRow(label, box)
            return box

        combo("date", "&Date", "The day the money moved (or was booked)", required=True)

        amount_row = QWidget()
        amounts = QHBoxLayout(amount_row)
        amounts.setContentsMargins(0, 0, 0, 0)
        self.one_column = QRadioButton("In one column")
        self.two_columns = QRadioButton("Money in and money out in two columns")
        self.amount_kind = QButtonGroup(self)
        for button in (self.one_column, self.two_columns):
            self.amount_kind.addButton(button)
            amounts.addWidget(button)
        amounts.addStretch(1)
        form.addRow("Amounts", amount_row)
        self.amount = combo("amount", "&Amount", "One column: money in and money out together")
        self.sign = QComboBox()
        self.sign.addItem("money in (most banks)", Sign.IN_POSITIVE.value)
        self.sign.addItem("money out (card statements)", Sign.OUT_POSITIVE.value)
        form.addRow("A positive amount is", self.sign)
        self.direction = combo(
            "direction",
            "Credit or debit column",
            "Only if a column says which way each amount went (CR/DR, C/D)",
        )
        self.credit = combo("credit", "Money &in", "The column of money that came in")
        self.debit = combo("debit", "Money &out", "The column of money that went out")
        combo("currency", "Currency column", "Leave as (none) when the file has no currency")
        combo("reference", "&Reference", "The payment's reference, as the other side knows it")
        combo("description", "Descri&ption")
        combo("id", "Transaction ID", "A column that tells the rows apart, if there is one")
        combo("counterparty", "Paid by or to")
        if side is Side.GATEWAY:
            combo("fee", "Fee", "What the gateway kept, if the file says")
            combo("type", "Type", "Payment, refund, fee or payout, if the file says")
        self.date_order = QComboBox()
        self.date_order.addItem("as the file shows them", DateOrder.AUTO.value)
        self.date_order.addItem("year-month-day", DateOrder.YMD.value)
        self.date_order.addItem("day/month/year", DateOrder.DMY.value)
        self.date_order.addItem("month/day/year", DateOrder.MDY.value)
        form.addRow("Dates are written", self.date_order)
        self.decimal_comma = QCheckBox("Amounts are written with a decimal comma (1.234,56)")
        form.addRow("", self.decimal_comma)
        layout.addLayout(form)
        self.form = form

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.import_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.import_button.setText("Import")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        self._fill(mapping)
        self.amount_kind.buttonToggled.connect(lambda *_: self._shape())
        self._shape()
        # A problem shown is about the choice made then: any change clears it.
        for box in (*self.combos.values(), self.sign, self.date_order):
            box.currentIndexChanged.connect(lambda _i: self.banner.hide())
        self.decimal_comma.toggled.connect(lambda _on: self.banner.hide())

    def _fill(self, mapping: ColumnMapping | None) -> None:
        if mapping is None:
            self.one_column.setChecked(True)
            return
        for name, box in self.combos.items():
            wanted = getattr(mapping, name, "")
            found = box.findData(wanted) if wanted else -1
            if found >= 0:
                box.setCurrentIndex(found)
        (self.two_columns if mapping.credit else self.one_column).setChecked(True)
        self.sign.setCurrentIndex(max(self.sign.findData(mapping.sign.value), 0))
        self.date_order.setCurrentIndex(max(self.date_order.findData(mapping.date_order.value), 0))
        self.decimal_comma.setChecked(mapping.decimal_comma)

    def _shape(self) -> None:
        self.banner.hide()
        one = self.one_column.isChecked()
        for widget in (self.amount, self.sign, self.direction):
            self.form.setRowVisible(widget, one)
        for widget in (self.credit, self.debit):
            self.form.setRowVisible(widget, not one)

    def choose(self, **columns: str) -> None:
        """Set columns by what they are for (tests and keyboard-free use): date="Date"."""
        for name, header in columns.items():
            box = self.combos[name]
            box.setCurrentIndex(box.findData(header))
        if columns.get("credit") or columns.get("debit"):
            self.two_columns.setChecked(True)
        elif columns.get("amount"):
            self.one_column.setChecked(True)

    def chosen(self) -> ColumnMapping:
        """The mapping as chosen; MappingError (a SwitchboardError) with what is wrong."""
        one = self.one_column.isChecked()

        def value(name: str) -> str:
            box = self.combos.get(name)
            return str(box.currentData() or "") if box is not None else ""

        mapping = ColumnMapping(
            date=value("date"),
            amount=value("amount") if one else "",
            credit="" if one else value("credit"),
            debit="" if one else value("debit"),
            direction=value("direction") if one else "",
            currency=value("currency"),
            reference=value("reference"),
            description=value("description"),
            id=value("id"),
            counterparty=value("counterparty"),
            fee=value("fee"),
            type=value("type"),
            date_order=DateOrder(self.date_order.currentData()),
            decimal_comma=self.decimal_comma.isChecked(),
            sign=Sign(self.sign.currentData()),
        )
        return replace(mapping, side=self.side)

    def accept(self) -> None:
        try:
            self.mapping = self.chosen()
        except SwitchboardError as exc:
            self.banner.setText(str(exc))
            self.banner.show()
            return
        super().accept()


def rejection_summary(file_name: str, error: FileRejected) -> str:
    problems = len(error.errors) + error.more
    counted = f"{problems} problem{'s' if problems != 1 else ''}"
    return (
        f"{file_name} was not imported, and nothing from it was kept: Switchboard found "
        f"{counted}. Correct the file (or choose its kind and columns again), then import it "
        "again."
    )


class RejectedFileDialog(QDialog):
    """Every row found wrong in a refused file: its row, its column and why."""

    def __init__(self, file_name: str, error: FileRejected, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{file_name} was not imported")
        self.resize(720, 460)
        layout = QVBoxLayout(self)
        self.summary = QLabel(rejection_summary(file_name, error))
        self.summary.setObjectName("FieldError")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.model: RecordModel[RowError] = RecordModel(
            [
                Column("Row", lambda e: str(e.row), sort=lambda e: e.row, right=True),
                Column("Column", lambda e: e.column or "—"),
                Column("Problem", lambda e: e.reason, stretch=True, tooltip=lambda e: e.reason),
            ],
            key=lambda e: (e.row, e.column, e.reason),
        )
        self.model.set_records(error.errors)
        self.table = RecordTable(self.model)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.fit_columns()
        layout.addWidget(self.table, 1)
        if error.more:
            layout.addWidget(
                _muted(f"…and {error.more} more problems like these, not listed here.")
            )
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)

    def rows(self) -> list[tuple[int, str, str]]:
        """The problems listed (row, column, reason): for tests and accessibility."""
        return [(e.row, e.column, e.reason) for e in self.model.records()]
