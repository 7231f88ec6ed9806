"""Model/view tables for lists that grow: a typed record model, a search-and-filter proxy, and
a table view with the keyboard behaviour people expect (Enter opens, Delete deletes).

Signals (RecordTable):
    opened(object): the user double-clicked or pressed Enter on a record.
    delete_requested(object): the user pressed Delete on a record.
    selection_changed(object): the current record changed (None when nothing is selected).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

R = TypeVar("R")

RECORD_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
SEARCH_ROLE = Qt.ItemDataRole.UserRole + 3

Index = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True)
class Column(Generic[R]):
    title: str
    text: Callable[[R], str]
    sort: Callable[[R], Any] | None = None
    right: bool = False
    color: Callable[[R], str | None] | None = None
    stretch: bool = False
    tooltip: Callable[[R], str] | None = None
    width: int | None = None  # pixels at first, for a column whose texts are long


class RecordModel(QAbstractTableModel, Generic[R]):
    """Immutable records in rows; `set_records` swaps them all (the services return snapshots)."""

    def __init__(
        self,
        columns: Sequence[Column[R]],
        key: Callable[[R], Hashable] = lambda record: record.id,  # type: ignore[attr-defined]
        search: Callable[[R], str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self._key = key
        self._search = search
        self._records: list[R] = []
        self._search_text: list[str] = []

    def set_records(self, records: Sequence[R]) -> None:
        self.beginResetModel()
        self._records = list(records)
        self._search_text = [self._haystack(record) for record in self._records]
        self.endResetModel()

    def _haystack(self, record: R) -> str:
        parts = [column.text(record) for column in self.columns]
        if self._search is not None:
            parts.append(self._search(record))
        return " ".join(parts).casefold()

    def records(self) -> list[R]:
        return list(self._records)

    def texts_changed(self) -> None:
        """What the columns show changed without the records changing (a state the page
        holds, like "syncing"): redraw every row."""
        if self._records:
            self._search_text = [self._haystack(record) for record in self._records]
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(self._records) - 1, len(self.columns) - 1)
            )

    def record(self, row: int) -> R:
        return self._records[row]

    def row_of(self, key: Hashable) -> int | None:
        for row, record in enumerate(self._records):
            if self._key(record) == key:
                return row
        return None

    def key(self, record: R) -> Hashable:
        return self._key(record)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt API
        return 0 if parent.isValid() else len(self._records)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt API
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        record = self._records[index.row()]
        column = self.columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(record)
        if role == SORT_ROLE:
            return column.sort(record) if column.sort else column.text(record).casefold()
        if role == RECORD_ROLE:
            return record
        if role == SEARCH_ROLE:
            return self._search_text[index.row()]
        if role == Qt.ItemDataRole.TextAlignmentRole and column.right:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and column.color:
            color = column.color(record)
            return QColor(color) if color else None
        if role == Qt.ItemDataRole.ToolTipRole and column.tooltip:
            return column.tooltip(record)
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].title
        return None


class RecordFilter(QSortFilterProxyModel):
    """Keeps rows whose text holds every word typed (any order), and that pass `predicate`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._words: list[str] = []
        self._predicate: Callable[[Any], bool] | None = None
        self.setSortRole(SORT_ROLE)

    def set_query(self, text: str) -> None:
        self.beginFilterChange()
        self._words = text.casefold().split()
        self.endFilterChange()

    def set_predicate(self, predicate: Callable[[Any], bool] | None) -> None:
        self.beginFilterChange()
        self._predicate = predicate
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        index = model.index(source_row, 0, source_parent)
        if self._predicate is not None and not self._predicate(model.data(index, RECORD_ROLE)):
            return False
        haystack = model.data(index, SEARCH_ROLE) or ""
        return all(word in haystack for word in self._words)

    def lessThan(self, left: Index, right: Index) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return bool(a < b)
        except TypeError:  # None against a value: empty cells sort first
            return a is None and b is not None


class RecordTable(QTableView):
    opened = Signal(object)
    delete_requested = Signal(object)
    selection_changed = Signal(object)

    def __init__(self, model: RecordModel[Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = model
        self.proxy = RecordFilter(self)
        self.proxy.setSourceModel(model)
        self.setModel(self.proxy)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSortingEnabled(True)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(28)
        header = self.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(not any(column.stretch for column in model.columns))
        for number, column in enumerate(model.columns):
            if column.stretch:
                header.setSectionResizeMode(number, QHeaderView.ResizeMode.Stretch)
            elif column.width is not None:
                header.resizeSection(number, column.width)
        self.doubleClicked.connect(lambda index: self.opened.emit(index.data(RECORD_ROLE)))
        self.selectionModel().currentRowChanged.connect(
            lambda current, _previous: self.selection_changed.emit(self.current_record())
        )
        model.modelAboutToBeReset.connect(self._remember_selection)
        model.modelReset.connect(self._restore_selection)
        self._remembered: Hashable | None = None

    def current_record(self) -> Any:
        index = self.currentIndex()
        return index.data(RECORD_ROLE) if index.isValid() else None

    def select_key(self, key: Hashable) -> bool:
        row = self.source.row_of(key)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.source.index(row, 0))
        if not index.isValid():
            return False
        self.setCurrentIndex(index)
        self.scrollTo(index)
        return True

    def fit_columns(self) -> None:
        self.resizeColumnsToContents()
        header = self.horizontalHeader()
        for number in range(header.count()):
            header.resizeSection(number, min(header.sectionSize(number) + 16, 320))

    def _remember_selection(self) -> None:
        record = self.current_record()
        self._remembered = self.source.key(record) if record is not None else None

    def _restore_selection(self) -> None:
        if self._remembered is not None:
            self.select_key(self._remembered)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        record = self.current_record()
        if record is not None and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.opened.emit(record)
            return
        if record is not None and event.key() == Qt.Key.Key_Delete:
            self.delete_requested.emit(record)
            return
        super().keyPressEvent(event)
