"""Dialogs that never block the event loop, and the record form every edit dialog builds on.

A modal `exec()` inside a coroutine would re-enter the asyncio loop; instead `run_dialog`
opens the dialog window-modal and awaits its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import FieldError, SwitchboardError, ValidationFailed
from app.ui import tasks


async def run_dialog(dialog: QDialog) -> int:
    """Open `dialog` window-modal and wait for it to finish; returns its result code."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def finished(result: int) -> None:
        if not done.done():
            done.set_result(result)

    dialog.finished.connect(finished)
    # A dialog destroyed unanswered (its window closed under it) counts as cancelled.
    dialog.destroyed.connect(lambda *_: finished(QDialog.DialogCode.Rejected))
    dialog.open()
    return await done


async def confirm(parent: QWidget, title: str, text: str, action: str) -> bool:
    box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=parent)
    yes = box.addButton(action, QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Cancel", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(yes)
    await run_dialog(box)
    return box.clickedButton() is yes


# A message with no parent window belongs to Python: held here until closed, or it would vanish.
_unparented: set[QMessageBox] = set()


def tell(parent: QWidget | None, title: str, text: str, *, problem: bool = True) -> QMessageBox:
    """Show a message without waiting for it to be closed."""
    icon = QMessageBox.Icon.Warning if problem else QMessageBox.Icon.Information
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    if parent is None:
        _unparented.add(box)
        box.finished.connect(lambda _result: _unparented.discard(box))
    box.open()
    return box


def line_edit(text: str = "", placeholder: str = "") -> QLineEdit:
    edit = QLineEdit(text)
    edit.setPlaceholderText(placeholder)
    return edit


class FieldProblems(Exception):
    """Raised by `RecordDialog.draft()` when what was typed cannot even become a draft."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(error) for error in self.errors))


class RecordDialog(QDialog):
    """Create or edit one record. Subclasses add fields with `add_field` (named like the
    domain's FieldError fields) and implement `draft()`, which returns the draft or raises
    FieldProblems for what cannot be read (a date typed wrong); Save checks the draft as the service
    will, then saves through `save`, showing every problem beside its field."""

    def __init__(
        self,
        title: str,
        save: Callable[[Any], Awaitable[Any]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(460)
        self._save = save
        self.saved: Any = None
        self._errors: dict[str, QLabel] = {}

        layout = QVBoxLayout(self)
        self.banner = QLabel()
        self.banner.setObjectName("FieldError")
        self.banner.setWordWrap(True)
        self.banner.hide()
        layout.addWidget(self.banner)
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addLayout(self.form)
        self.extra = QVBoxLayout()
        layout.addLayout(self.extra)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setDefault(True)
        self.buttons.accepted.connect(lambda: tasks.start(self.submit(), owner=self))
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    def add_field(self, name: str, label: str, widget: QWidget, help_text: str = "") -> QWidget:
        holder = QWidget()
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(widget)
        error = QLabel()
        error.setObjectName("FieldError")
        error.setWordWrap(True)
        error.hide()
        column.addWidget(error)
        if help_text:
            hint = QLabel(help_text)
            hint.setObjectName("Muted")
            hint.setWordWrap(True)
            column.addWidget(hint)
        self.form.addRow(label, holder)
        self._errors[name] = error
        if help_text:
            widget.setToolTip(help_text)
        return widget

    def show_errors(self, errors: Iterable[FieldError]) -> None:
        self.clear_errors()
        unplaced: list[str] = []
        for error in errors:
            label = self._errors.get(error.field)
            if label is None:
                unplaced.append(error.message)
            elif label.isHidden():
                label.setText(error.message)
                label.show()
            else:
                label.setText(f"{label.text()}\n{error.message}")
        if unplaced:
            self.show_banner("\n".join(unplaced))

    def show_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.show()

    def clear_errors(self) -> None:
        self.banner.hide()
        for label in self._errors.values():
            label.hide()
            label.clear()

    def error_text(self, name: str) -> str:
        """The problem shown beside a field ("" when none): for tests and accessibility."""
        label = self._errors.get(name)
        return label.text() if label is not None and not label.isHidden() else ""

    async def submit(self) -> bool:
        """Check, save, close. False (and the problems shown) when it could not be saved."""
        self.clear_errors()
        try:
            draft = self.draft()  # type: ignore[attr-defined]
        except FieldProblems as exc:
            self.show_errors(exc.errors)
            return False
        problems = draft.problems()
        if problems:
            self.show_errors(problems)
            return False
        self.save_button.setEnabled(False)
        try:
            self.saved = await self._save(draft)
        except ValidationFailed as exc:
            self.show_errors(exc.errors)
            return False
        except SwitchboardError as exc:
            self.show_banner(str(exc))
            return False
        finally:
            self.save_button.setEnabled(True)
        self.accept()
        return True
