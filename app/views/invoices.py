"""Invoices: what each family owes, in which currency, and what is overdue."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import QDate, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QDateEdit,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.domain.clock import today_in
from app.domain.currencies import EXPONENTS
from app.domain.errors import FieldError
from app.domain.money import Money, MoneyError
from app.domain.school import InvoiceDraft, InvoiceLine, InvoiceRecord, InvoiceStatus, StudentRecord
from app.services.school import TOPIC_GUARDIANS, TOPIC_INVOICES, TOPIC_STUDENTS
from app.ui.bridge import EngineBridge
from app.ui.dialogs import FieldProblems, RecordDialog
from app.ui.formatting import day, money, totals
from app.ui.records_page import RecordsPage
from app.ui.table import RECORD_ROLE, Column
from app.ui.theme import DOWN, HEALTHY, PAUSED

COMMON_CURRENCIES = ("USD", "ZWG", "ZAR", "BWP", "EUR", "GBP")
FILTERS = ("All", "Open", "Overdue", "Paid", "Draft", "Void")
DATE_FORMAT = "d MMM yyyy"


def shown_status(invoice: InvoiceRecord, today: date) -> str:
    return "overdue" if invoice.is_overdue(today) else invoice.status.value


def status_color(invoice: InvoiceRecord, today: date) -> str | None:
    if invoice.is_overdue(today):
        return DOWN
    return {
        InvoiceStatus.PAID: HEALTHY,
        InvoiceStatus.DRAFT: PAUSED,
        InvoiceStatus.VOID: PAUSED,
    }.get(invoice.status)


def _qdate(value: date) -> QDate:
    return QDate(value.year, value.month, value.day)


def _date(value: QDate) -> date:
    return date(value.year(), value.month(), value.day())


class InvoiceDialog(RecordDialog):
    def __init__(
        self,
        save: Callable[[InvoiceDraft], Awaitable[InvoiceRecord]],
        students: Sequence[StudentRecord],
        locale: str,
        default_currency: str,
        today: date,
        record: InvoiceRecord | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(f"Invoice {record.number}" if record else "New invoice", save, parent)
        self.setMinimumWidth(620)
        self.locale = locale
        self.students = {student.id: student for student in students}
        draft = record.draft() if record else None

        self.student = QComboBox()
        self.student.setEditable(True)
        self.student.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for student in sorted(
            students, key=lambda s: (s.last_name.casefold(), s.first_name.casefold())
        ):
            self.student.addItem(f"{student.name} · {student.ref}", student.id)
        completer = self.student.completer()
        if completer is not None:
            completer.setFilterMode(Qt.MatchFlag.MatchContains)
            completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.add_field("student_id", "Student", self.student)
        self.bill_to = QComboBox()
        self.add_field("guardian_id", "Bill to", self.bill_to)
        self.student.currentIndexChanged.connect(self._fill_bill_to)
        if draft and draft.student_id is not None:
            self.student.setCurrentIndex(max(self.student.findData(draft.student_id), 0))
        self._fill_bill_to()
        if draft and draft.guardian_id is not None:
            self.bill_to.setCurrentIndex(max(self.bill_to.findData(draft.guardian_id), 0))

        self.currency = QComboBox()
        codes = [default_currency, *[c for c in COMMON_CURRENCIES if c != default_currency]]
        codes += sorted(set(EXPONENTS) - set(codes))
        self.currency.addItems(codes)
        self.currency.setCurrentText(draft.currency if draft else default_currency)
        self.currency.currentTextChanged.connect(lambda _code: self._update_total())
        self.add_field("currency", "Currency", self.currency)
        self.issued = QDateEdit(_qdate(draft.issued_on if draft else today))
        self.issued.setCalendarPopup(True)
        self.issued.setDisplayFormat(DATE_FORMAT)
        self.add_field("issued_on", "Issued on", self.issued)
        self.due = QDateEdit(_qdate(draft.due_on if draft else today + timedelta(days=14)))
        self.due.setCalendarPopup(True)
        self.due.setDisplayFormat(DATE_FORMAT)
        self.add_field("due_on", "Due on", self.due)
        self.status = QComboBox()
        for status in InvoiceStatus:
            self.status.addItem(status.value.capitalize(), status)
        self.status.setCurrentIndex(
            list(InvoiceStatus).index(draft.status if draft else InvoiceStatus.OPEN)
        )
        self.add_field("status", "Status", self.status)

        holder = QWidget()
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        self.lines = QTableWidget(0, 3)
        self.lines.setHorizontalHeaderLabels(["Description", "Quantity", "Unit price"])
        self.lines.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.lines.verticalHeader().setVisible(False)
        self.lines.setFixedHeight(150)
        self.lines.cellChanged.connect(lambda _row, _column: self._update_total())
        column.addWidget(self.lines)
        row = QHBoxLayout()
        add_line = QPushButton("Add line")
        add_line.clicked.connect(lambda: self.add_line("", 1, ""))
        remove_line = QPushButton("Remove line")
        remove_line.clicked.connect(self._remove_line)
        self.total = QLabel()
        self.total.setObjectName("EmptyTitle")
        row.addWidget(add_line)
        row.addWidget(remove_line)
        row.addStretch(1)
        column.addLayout(row)
        self.total.setAlignment(Qt.AlignmentFlag.AlignRight)
        column.addWidget(self.total)
        self.add_field("lines", "Lines", holder)
        for line in draft.lines if draft else ():
            unit = Money(line.unit_minor, self.currency.currentText()).for_input(locale)
            self.add_line(line.description, line.quantity, unit)
        if not self.lines.rowCount():
            self.add_line("", 1, "")
        self.notes = QPlainTextEdit(draft.notes if draft else "")
        self.notes.setFixedHeight(50)
        self.add_field("notes", "Notes", self.notes)
        self.number = self.add_field(
            "number", "Number", QLabel(record.number if record else "given when saved")
        )
        self._update_total()

    def _fill_bill_to(self, _index: int = 0) -> None:
        self.bill_to.clear()
        student = self.students.get(self.student.currentData())
        if student is None:
            return
        for link in student.guardians:
            star = " ★" if link.is_primary else ""
            self.bill_to.addItem(
                f"{link.guardian_name} ({link.relationship}){star}", link.guardian_id
            )
        self.bill_to.addItem(f"{student.name} (the student)", None)

    def add_line(self, description: str, quantity: int, unit_price: str) -> None:
        row = self.lines.rowCount()
        self.lines.insertRow(row)
        self.lines.setItem(row, 0, QTableWidgetItem(description))
        self.lines.setItem(row, 1, QTableWidgetItem(str(quantity)))
        price = QTableWidgetItem(unit_price)
        price.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.lines.setItem(row, 2, price)

    def _remove_line(self) -> None:
        row = self.lines.currentRow()
        if row >= 0:
            self.lines.removeRow(row)
            self._update_total()

    def _cell(self, row: int, column: int) -> str:
        item = self.lines.item(row, column)
        return item.text().strip() if item is not None else ""

    def read_lines(self) -> tuple[InvoiceLine, ...]:
        currency = self.currency.currentText()
        lines: list[InvoiceLine] = []
        problems: list[FieldError] = []
        for row in range(self.lines.rowCount()):
            description, quantity, price = (self._cell(row, column) for column in range(3))
            if not (description or price):
                continue  # a blank line is simply left out
            try:
                amount = Money.parse(price, currency, locale=self.locale, allow_zero=True)
            except MoneyError as exc:
                problems.append(FieldError("lines", f"Line {row + 1}: {exc}"))
                continue
            if not quantity.isdigit():
                problems.append(
                    FieldError("lines", f"Line {row + 1}: quantity must be a whole number.")
                )
                continue
            lines.append(InvoiceLine(description, int(quantity), amount.minor))
        if problems:
            raise FieldProblems(problems)
        return tuple(lines)

    def _update_total(self) -> None:
        try:
            lines = self.read_lines()
            amount = sum(line.amount_minor for line in lines)
            total = money(amount, self.currency.currentText(), self.locale)
        except (FieldProblems, MoneyError):
            total = "—"
        self.total.setText(f"Total: {total}")

    def draft(self) -> InvoiceDraft:
        return InvoiceDraft(
            currency=self.currency.currentText(),
            issued_on=_date(self.issued.date()),
            due_on=_date(self.due.date()),
            lines=self.read_lines(),
            student_id=self.student.currentData(),
            guardian_id=self.bill_to.currentData(),
            status=InvoiceStatus(self.status.currentData()),
            notes=self.notes.toPlainText(),
        )


class InvoicesPage(RecordsPage):
    key = "invoices"
    title = "Invoices"
    icon_name = "invoices"
    noun = "invoice"
    plural = "invoices"
    topics = (TOPIC_INVOICES, TOPIC_STUDENTS, TOPIC_GUARDIANS)
    default_sort = (0, Qt.SortOrder.DescendingOrder)
    empty_text = "Bill families for lessons: each invoice has lines, a currency and a due date."

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        self.students: list[StudentRecord] = []
        super().__init__(bridge, parent)
        self.status_filter = QComboBox()
        self.status_filter.addItems(FILTERS)
        self.status_filter.currentTextChanged.connect(self._apply_filter)
        self.filters.addWidget(QLabel("Show"))
        self.filters.addWidget(self.status_filter)
        self.filters.addStretch(1)

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    @property
    def today(self) -> date:
        """Overdue means past due where the school is (as the Overview counts it)."""
        return today_in(ZoneInfo(self.bridge.services.settings.get("school.timezone")))

    def columns(self) -> list[Column[Any]]:
        return [
            Column("Number", lambda i: i.number),
            Column("Bill to", lambda i: i.bill_to, stretch=True),
            Column("Student", lambda i: i.student_name),
            Column("Issued", lambda i: day(i.issued_on, self.locale), sort=lambda i: i.issued_on),
            Column("Due", lambda i: day(i.due_on, self.locale), sort=lambda i: i.due_on),
            Column(
                "Total",
                lambda i: money(i.total_minor, i.currency, self.locale),
                sort=lambda i: (i.currency, i.total_minor),
                right=True,
            ),
            Column(
                "Status",
                lambda i: shown_status(i, self.today),
                color=lambda i: status_color(i, self.today),
            ),
        ]

    def search_text(self, record: InvoiceRecord) -> str:
        return " ".join(
            (record.currency, record.notes, *(line.description for line in record.lines))
        )

    def _apply_filter(self, choice: str) -> None:
        today = self.today
        wanted = choice.lower()
        self.table.proxy.set_predicate(
            None if wanted == "all" else (lambda invoice: shown_status(invoice, today) == wanted)
        )
        self.update_footer()

    def update_footer(self) -> None:
        super().update_footer()
        sums: dict[str, int] = defaultdict(int)
        for row in range(self.table.proxy.rowCount()):
            invoice = self.table.proxy.index(row, 0).data(RECORD_ROLE)
            if invoice is not None and invoice.status is not InvoiceStatus.VOID:
                sums[invoice.currency] += invoice.total_minor
        if sums:
            self.footer.setText(
                f"{self.footer.text()} · {totals(sorted(sums.items()), self.locale)}"
            )

    async def fetch(self) -> list[InvoiceRecord]:
        school = self.bridge.services.school
        self.students = await self.bridge.call(school.students)
        return await self.bridge.call(school.invoices)

    def describe(self, record: InvoiceRecord) -> str:
        return f"invoice {record.number}"

    def make_dialog(self, record: InvoiceRecord | None) -> InvoiceDialog:
        school = self.bridge.services.school
        settings = self.bridge.services.settings

        async def save(draft: InvoiceDraft) -> InvoiceRecord:
            if record is None:
                return await self.bridge.call(school.save_invoice, draft)
            return await self.bridge.call(
                school.save_invoice, draft, invoice_id=record.id, version=record.version
            )

        return InvoiceDialog(
            save,
            self.students,
            self.locale,
            settings.get("school.currency"),
            self.today,
            record,
            self,
        )

    async def remove(self, record: InvoiceRecord) -> None:
        await self.bridge.call(self.bridge.services.school.delete_invoice, record.id)
