"""A page that lists records: search, a sortable table, New / Edit / Delete, CSV import and
export, an empty state, a count of what is shown, and an optional detail panel.

Subclasses provide `columns()`, `async fetch()`, `make_dialog(record)` (a RecordDialog; None
for a new record), `async remove(record)`, and may add filters to `self.filters` and a
`detail` widget with `show_detail(record)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.csv_transfer import CsvKind
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.csv_import import CsvActions
from app.ui.dialogs import RecordDialog, confirm, run_dialog, tell
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable


class RecordsPage(Page):
    noun: ClassVar[str]
    plural: ClassVar[str]
    csv_kinds: ClassVar[tuple[CsvKind, ...]] = ()
    empty_text: ClassVar[str] = ""
    # The column the list is sorted by when the page opens, and in which direction.
    default_sort: ClassVar[tuple[int, Qt.SortOrder]] = (1, Qt.SortOrder.AscendingOrder)

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText(f"Search {self.plural}…  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(240)
        self.actions.addWidget(self.search)
        self.new_button = QPushButton(f"New {self.noun}")
        self.new_button.setToolTip(f"Add a {self.noun} (Ctrl+N)")
        self.new_button.clicked.connect(lambda: self.edit(None))
        self.actions.addWidget(self.new_button)
        self.csv = CsvActions(self, bridge, self.csv_kinds) if self.csv_kinds else None
        QShortcut(QKeySequence.StandardKey.Find, self, self._focus_search)
        QShortcut(QKeySequence.StandardKey.New, self, lambda: self.edit(None))

        self.model: RecordModel[Any] = RecordModel(self.columns(), search=self.search_text)
        self.table = RecordTable(self.model)
        self.table.sortByColumn(*self.default_sort)
        self._fitted = False
        self.table.opened.connect(self.edit)
        self.table.delete_requested.connect(
            lambda record: tasks.start(self.delete(record), owner=self)
        )
        self.search.textChanged.connect(self._on_query)
        self.search.returnPressed.connect(self.table.setFocus)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        self.filters = QHBoxLayout()
        layout.addLayout(self.filters)
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(self.table)
        layout.addWidget(self.split, 1)
        footer = QHBoxLayout()
        self.footer = QLabel()
        self.footer.setObjectName("Muted")
        footer.addWidget(self.footer, 1)
        self.edit_button = QPushButton("Edit…")
        self.edit_button.clicked.connect(lambda: self.edit(self.table.current_record()))
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(
            lambda: tasks.start(self.delete(self.table.current_record()), owner=self)
        )
        footer.addWidget(self.edit_button)
        footer.addWidget(self.delete_button)
        layout.addLayout(footer)
        self.table.selection_changed.connect(self._on_selection)
        self.model.modelReset.connect(self.update_footer)
        self.table.proxy.layoutChanged.connect(self.update_footer)
        self.table.proxy.rowsInserted.connect(self.update_footer)
        self.table.proxy.rowsRemoved.connect(self.update_footer)
        self._on_selection(None)

    # --- to provide -----------------------------------------------------------------------------

    def columns(self) -> list[Column[Any]]:
        return []

    def search_text(self, record: Any) -> str:
        """Extra text that search should find a record by (beyond its visible columns)."""
        return ""

    def show_detail(self, record: Any) -> None:
        """Show the selected record (or None) in a detail panel, if the page has one."""

    def empty_actions(self) -> list[tuple[str, Any]]:
        actions: list[tuple[str, Any]] = [(f"Add a {self.noun}", lambda: self.edit(None))]
        if self.csv is not None:
            kind = self.csv_kinds[0]
            actions.append(
                ("Import from a spreadsheet (CSV)…", lambda: self.csv.choose_import(kind))
            )  # type: ignore[union-attr]
        return actions

    # --- behaviour ------------------------------------------------------------------------------

    async def load(self) -> None:
        records = await self.fetch()  # type: ignore[attr-defined]
        self.model.set_records(records)
        if not records:
            self.states.show_empty(f"No {self.plural} yet", self.empty_text, self.empty_actions())
            return
        self.states.show_content()
        if not self._fitted:
            self.table.fit_columns()
            self._fitted = True
        if self.table.current_record() is None and self.table.proxy.rowCount():
            self.table.selectRow(0)

    def update_footer(self) -> None:
        shown, total = self.table.proxy.rowCount(), self.model.rowCount()
        noun = self.noun if total == 1 else self.plural
        self.footer.setText(f"{total} {noun}" if shown == total else f"{shown} of {total} {noun}")

    def edit(self, record: Any) -> None:
        tasks.start(self.open_editor(record), owner=self)

    async def open_editor(self, record: Any) -> Any:
        """Open the record's dialog (a new record for None); the saved record, or None."""
        dialog: RecordDialog = self.make_dialog(record)  # type: ignore[attr-defined]
        if await run_dialog(dialog) != QDialog.DialogCode.Accepted:
            return None
        saved = dialog.saved
        await self.settle()
        if saved is not None:
            self.table.select_key(self.model.key(saved))
        return saved

    async def delete(self, record: Any) -> bool:
        if record is None:
            return False
        label = self.describe(record)
        if not await confirm(
            self, f"Delete {self.noun}", f"Delete {label}? This cannot be undone.", "Delete"
        ):
            return False
        try:
            await self.remove(record)  # type: ignore[attr-defined]
        except SwitchboardError as exc:
            tell(self, f"{label} was not deleted", str(exc))
            return False
        return True

    def describe(self, record: Any) -> str:
        return str(getattr(record, "name", self.noun))

    def _focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def _on_query(self, text: str) -> None:
        self.table.proxy.set_query(text)
        self.update_footer()

    def _on_selection(self, record: Any) -> None:
        self.edit_button.setEnabled(record is not None)
        self.delete_button.setEnabled(record is not None)
        self.show_detail(record)
