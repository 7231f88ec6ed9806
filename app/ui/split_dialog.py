"""The dialog that splits one record of a gateway or the bank into parts (a deposit that is a
payout and a family's transfer together), each matched on its own afterwards. The parts are
typed as plain amounts; what is left to share out is shown as they are typed, and the split is
made only when nothing is left and a reason is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFormLayout, QLabel, QLineEdit, QPushButton, QWidget

from app.domain.money import Money, MoneyError
from app.ui.reason_dialog import ReasonDialog
from app.ui.reconciliation_table import amount_text

MAX_PARTS = 12


class SplitDialog(ReasonDialog):
    """Asks for the parts of a record and why; `save(parts_minor, reason)` makes the split."""

    def __init__(
        self,
        described: str,
        whole_minor: int,
        currency: str,
        locale: str,
        save: Callable[[list[int], str], Awaitable[Any]],
        parent: QWidget | None = None,
    ) -> None:
        self.whole = abs(whole_minor)
        self.sign = -1 if whole_minor < 0 else 1
        self.currency, self.locale = currency, locale
        self._save_parts = save
        self.parts: list[QLineEdit] = []
        self.left = QLabel()
        super().__init__(
            "Split the record into parts",
            f"{described}\n\nWhen one record is several things together (a deposit that is a "
            "payout and a family's transfer), give the amount of each part. Each part is then "
            "matched on its own; undoing the split puts the whole back.",
            "Split",
            self.save_with,
            parent,
            example="For example: the payout and the Smiths' transfer together",
        )
        self.form = QFormLayout()
        self.middle.addLayout(self.form)
        self.add_button = QPushButton("&Add a part")
        self.add_button.clicked.connect(lambda: self.add_part().setFocus())
        self.middle.addWidget(self.add_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.left.setObjectName("Muted")
        self.middle.addWidget(self.left)
        self.add_part()
        self.add_part()
        self.parts[0].setFocus()

    def add_part(self) -> QLineEdit:
        field = QLineEdit()
        field.setPlaceholderText(Money(0, self.currency).for_input(self.locale))
        field.textChanged.connect(lambda _text: self.changed())
        self.parts.append(field)
        self.form.addRow(f"Part {len(self.parts)}", field)
        self.add_button.setEnabled(len(self.parts) < MAX_PARTS)
        self.changed()
        # Grow to show the new part rather than squeeze the explanation, once the layout has
        # taken the row in (an event later).
        QTimer.singleShot(0, self.adjustSize)
        return field

    def amounts(self) -> list[int]:
        """The parts typed so far, signed as the whole is (empty fields are left out)."""
        typed = [field.text() for field in self.parts if field.text().strip()]
        return [
            self.sign * Money.parse(text, self.currency, locale=self.locale).minor for text in typed
        ]

    def ready(self) -> bool:
        """Shows what is left to share out; ready when nothing is, and a reason is given."""
        try:
            shared = sum(abs(minor) for minor in self.amounts())
        except MoneyError as exc:
            self.left.setText(str(exc))
            return False
        rest = self.whole - shared
        whole = amount_text(self.whole, self.currency, self.locale)
        if rest > 0:
            left = amount_text(rest, self.currency, self.locale)
            self.left.setText(f"{left} of {whole} left to share out.")
        elif rest < 0:
            over = amount_text(-rest, self.currency, self.locale)
            self.left.setText(f"The parts are {over} more than the whole, {whole}.")
        else:
            self.left.setText(f"The parts add up to the whole, {whole}.")
        return rest == 0 and super().ready()

    async def save_with(self, reason: str) -> Any:
        return await self._save_parts(self.amounts(), reason)
