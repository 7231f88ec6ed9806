"""Import from and export to CSV files, for any page whose records the CSV service knows.

The import always shows a preview first: every row as the file has it, every problem with its
row and column, and what will be created or updated. The Import button only works when the
whole file is fine; nothing is ever half-imported.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QMenu,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.csv_transfer import CsvKind, ImportPreview, ImportRejected, RowError
from app.services.progress import Cancelled
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import run_dialog, tell
from app.ui.progress import with_progress
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN

NOUNS = {
    CsvKind.STUDENTS: ("student", "students"),
    CsvKind.GUARDIANS: ("guardian", "guardians"),
    CsvKind.TEACHERS: ("teacher", "teachers"),
    CsvKind.LESSONS: ("lesson", "lessons"),
}


def _count(number: int, kind: CsvKind) -> str:
    singular, plural = NOUNS[kind]
    return f"{number} {singular if number == 1 else plural}"


def describe(preview: ImportPreview) -> str:
    if preview.errors:
        problems = len(preview.errors)
        return (
            f"The file has {problems} problem{'s' if problems != 1 else ''}. Nothing has been "
            "imported: fix them in the spreadsheet, save it, and choose the file again."
        )
    parts = []
    if preview.created:
        parts.append(f"{_count(preview.created, preview.kind)} will be added")
    if preview.updated:
        parts.append(f"{_count(preview.updated, preview.kind)} will be updated")
    if preview.new_rooms:
        parts.append(f"new rooms: {', '.join(preview.new_rooms)}")
    return ("; ".join(parts) or "Nothing to change") + "."


class ImportDialog(QDialog):
    def __init__(
        self, preview: ImportPreview, file_name: str, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.preview = preview
        self.setWindowTitle(f"Import {NOUNS[preview.kind][1]} from {file_name}")
        self.resize(900, 600)
        layout = QVBoxLayout(self)
        self.summary = QLabel(describe(preview))
        self.summary.setWordWrap(True)
        if preview.errors:
            self.summary.setObjectName("FieldError")
        layout.addWidget(self.summary)

        bad_rows = {error.row for error in preview.errors}
        indexed = list(zip(preview.row_numbers, preview.rows, strict=True))
        row_columns: list[Column[tuple[int, tuple[str, ...]]]] = [
            Column("Row", lambda item: str(item[0]), sort=lambda item: item[0])
        ]
        for position, name in enumerate(preview.columns):
            row_columns.append(
                Column(
                    name,
                    lambda item, position=position: (
                        item[1][position] if position < len(item[1]) else ""
                    ),
                    color=lambda item: DOWN if item[0] in bad_rows else None,
                )
            )
        self.rows_model: RecordModel[tuple[int, tuple[str, ...]]] = RecordModel(
            row_columns, key=lambda item: item[0]
        )
        self.rows_model.set_records(indexed)
        self.rows_table = RecordTable(self.rows_model)

        self.errors_model: RecordModel[RowError] = RecordModel(
            [
                Column("Row", lambda error: str(error.row), sort=lambda error: error.row),
                Column("Column", lambda error: error.column),
                Column("Problem", lambda error: error.reason, stretch=True),
            ],
            key=lambda error: (error.row, error.column, error.reason),
        )
        self.errors_model.set_records(preview.errors)
        self.errors_table = RecordTable(self.errors_model)
        self.errors_table.opened.connect(lambda error: self.rows_table.select_key(error.row))

        split = QSplitter(Qt.Orientation.Vertical)
        if preview.errors:
            split.addWidget(self.errors_table)
        split.addWidget(self.rows_table)
        layout.addWidget(split, 1)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.import_button = QPushButton("Import")
        self.import_button.setEnabled(preview.ok)
        self.import_button.setDefault(preview.ok)
        self.buttons.addButton(self.import_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.rows_table.fit_columns()
        self.errors_table.fit_columns()


class CsvActions:
    """Adds "Import…" and "Export…" buttons for the given kinds to a page's action row."""

    def __init__(self, page: Any, bridge: EngineBridge, kinds: tuple[CsvKind, ...]) -> None:
        self.page = page
        self.bridge = bridge
        self.dialog: ImportDialog | None = None
        self.import_button = QPushButton("Import…")
        self.export_button = QPushButton("Export…")
        if len(kinds) == 1:
            kind = kinds[0]
            self.import_button.clicked.connect(lambda: self.choose_import(kind))
            self.export_button.clicked.connect(lambda: self.choose_export(kind))
        else:
            import_menu, export_menu = QMenu(page), QMenu(page)
            for kind in kinds:
                title = NOUNS[kind][1].capitalize()
                import_menu.addAction(f"{title}…", lambda kind=kind: self.choose_import(kind))
                export_menu.addAction(f"{title}…", lambda kind=kind: self.choose_export(kind))
            self.import_button.setMenu(import_menu)
            self.export_button.setMenu(export_menu)
        page.actions.addWidget(self.import_button)
        page.actions.addWidget(self.export_button)

    def choose_import(self, kind: CsvKind) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.page, f"Import {NOUNS[kind][1]}", "", "CSV files (*.csv *.txt);;All files (*)"
        )
        if path:
            tasks.start(self.import_file(kind, Path(path)), owner=self.page)

    def choose_export(self, kind: CsvKind) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.page, f"Export {NOUNS[kind][1]}", f"{kind.value}.csv", "CSV files (*.csv)"
        )
        if path:
            tasks.start(self.export_file(kind, Path(path)), owner=self.page)

    async def import_file(self, kind: CsvKind, path: Path) -> bool:
        """Preview, let the user confirm, import. True when the records were imported."""
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            tell(
                self.page, "Cannot read the file", f"{path} cannot be read: {exc.strerror or exc}."
            )
            return False
        csv = self.bridge.services.csv
        try:
            preview = await with_progress(
                self.page,
                f"Checking {path.name}",
                lambda progress: self.bridge.call(csv.preview, kind, data, progress),
            )
        except Cancelled:
            return False
        self.dialog = ImportDialog(preview, path.name, self.page)
        accepted = await run_dialog(self.dialog) == QDialog.DialogCode.Accepted
        self.dialog = None
        if not accepted:
            return False
        try:
            result = await with_progress(
                self.page,
                f"Importing {NOUNS[kind][1]}",
                lambda progress: self.bridge.call(
                    csv.import_, kind, data, progress, preview, file_name=path.name
                ),
            )
        except Cancelled:
            tell(self.page, "Import stopped", "The import was stopped; nothing was imported.")
            return False
        except ImportRejected as exc:
            tell(self.page, "Nothing was imported", str(exc))
            return False
        done = [f"{_count(result.created, kind)} added", f"{_count(result.updated, kind)} updated"]
        tell(self.page, "Import finished", f"{path.name}: {', '.join(done)}.", problem=False)
        return True

    async def export_file(self, kind: CsvKind, path: Path) -> None:
        try:
            data = await self.bridge.call(self.bridge.services.csv.export, kind)
        except SwitchboardError as exc:
            tell(self.page, "Nothing was exported", str(exc))
            return
        try:
            await asyncio.to_thread(path.write_bytes, data)
        except OSError as exc:
            tell(
                self.page,
                "Cannot save the file",
                f"{path} cannot be written: {exc.strerror or exc}.",
            )
            return
        tell(self.page, "Export finished", f"Saved {NOUNS[kind][1]} to {path}.", problem=False)
