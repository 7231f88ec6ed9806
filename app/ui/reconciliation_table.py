"""Reconciliation records in tables that stay quick with tens of thousands of rows, and the
plain words both reconciliation pages use for statuses, sides and sources.

`LineModel` holds the records as the service returns them and formats a row only when the view
draws it (kept in a small cache), so 50 000 rows cost no more to show than 50. Filtering and
sorting a long list is `arrange_lines`, a plain function the page runs off the GUI thread; the
model only swaps in the result. No widget is made per row.

Signals (LineModel):
    sort_requested(int, object): a heading was clicked (column, Qt.SortOrder); the page sorts.
    checks_changed(): a row's tick box changed (a checkable model).

Signals (LineTable):
    opened(object): Enter or a double click on a record (its Line).
    current_changed(object): the current record changed (its Line, or None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

from app.domain.money import Money, MoneyError, exponent
from app.domain.reconciliation import Status
from app.services.reconciliation.service import Line
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED

Index = QModelIndex | QPersistentModelIndex
LINE_ROLE = Qt.ItemDataRole.UserRole + 1

EXCEPTIONS = tuple(status.value for status in Status if status.is_exception)

STATUS_LABELS = {
    Status.MATCHED.value: "Matched",
    Status.EXPECTED.value: "Not due yet",
    Status.MISSING.value: "Missing",
    Status.UNEXPECTED.value: "Not in our records",
    Status.AMOUNT_OVER.value: "More arrived",
    Status.AMOUNT_UNDER.value: "Less arrived",
    Status.CURRENCY_MISMATCH.value: "Other currency",
    Status.DUPLICATE.value: "Duplicate",
    Status.RESOLVED.value: "Written off",
}
STATUS_EXPLAINED = {
    Status.MATCHED.value: "It agrees with its counterparts on the other sides.",
    Status.EXPECTED.value: (
        "Nothing matches it yet, and nothing is due yet: gateways and banks take a few days."
    ),
    Status.MISSING.value: "Nothing matches it, and its counterpart should have arrived by now.",
    Status.UNEXPECTED.value: (
        "The gateway or the bank has it, but Switchboard's own records do not."
    ),
    # "Further along": the money goes from our records to the gateway, its payout, the bank.
    Status.AMOUNT_OVER.value: (
        "Matched, but more arrived further along (at the gateway or in the bank) than the "
        "record before it says."
    ),
    Status.AMOUNT_UNDER.value: (
        "Matched, but less arrived further along (at the gateway or in the bank) than the "
        "record before it says, such as a charge taken off on the way."
    ),
    Status.CURRENCY_MISMATCH.value: "Its counterpart is in another currency.",
    Status.DUPLICATE.value: "A second record of something already matched.",
    Status.RESOLVED.value: "Someone wrote it off, with a reason.",
}
STATUS_COLOURS = {
    Status.MATCHED.value: HEALTHY,
    Status.EXPECTED.value: PAUSED,
    Status.RESOLVED.value: PAUSED,
    Status.MISSING.value: DOWN,
    Status.CURRENCY_MISMATCH.value: DOWN,
    Status.UNEXPECTED.value: DEGRADED,
    Status.AMOUNT_OVER.value: DEGRADED,
    Status.AMOUNT_UNDER.value: DEGRADED,
    Status.DUPLICATE.value: DEGRADED,
}
STATUS_ORDER = {status.value: position for position, status in enumerate(Status)}
SIDE_LABELS = {"ledger": "Our records", "gateway": "Gateway", "bank": "Bank"}
KIND_LABELS = {
    "payment": "payment",
    "refund": "refund",
    "fee": "fee",
    "adjustment": "adjustment",
    "payout": "payout",
    "credit": "money in",
    "debit": "money out",
}
NO_GATEWAY = "No gateway"


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " ").capitalize())


def amount_text(minor: int, currency: str, locale: str) -> str:
    try:
        return Money(minor, currency).format(locale)
    except MoneyError:
        return f"{minor} {currency}".strip()


def amounts_text(amounts: dict[str, int], locale: str) -> str:
    """Several currencies side by side: "US$1,200.00 · ZWG 32,400.00"."""
    return " · ".join(amount_text(minor, currency, locale) for currency, minor in amounts.items())


def source_name(source: str, names: dict[str, str]) -> str:
    """A record's source as the office knows it: the gateway's or bank account's name, "Bank"
    (a bank line of no known account), or that it went through no gateway."""
    if source in ("", "ledger"):
        return NO_GATEWAY
    if source == "bank":
        return "Bank"
    return names.get(source, source)


@dataclass
class LineWords:
    """How a record reads: the school's time zone and locale, and the sources' names."""

    zone: ZoneInfo
    locale: str
    names: dict[str, str]

    def where(self, line: Line) -> str:
        side = SIDE_LABELS.get(line.side, line.side)
        if line.side == "bank" and line.source in ("", "bank"):
            return side
        return f"{side} · {source_name(line.source, self.names)}"

    def day(self, line: Line) -> str:
        return self.day_of(line.at)

    def day_of(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.zone):%d %b %Y}"

    def amount(self, line: Line) -> str:
        return amount_text(line.amount_minor, line.currency, self.locale)

    def difference(self, line: Line) -> str:
        if not line.diff_minor:
            return ""
        sign = "+" if line.diff_minor > 0 else "−"
        return sign + amount_text(abs(line.diff_minor), line.currency, self.locale)

    def sentence(self, line: Line) -> str:
        """The record in one line of words, for the side-by-side panel and dialogs."""
        what = KIND_LABELS.get(line.kind, line.kind)
        text = f"{self.where(line)}: {what} of {self.amount(line)} on {self.day(line)}"
        if line.reference:
            text += f", reference {line.reference}"
        return text


Key = Callable[[Line, dict[str, str]], Any]


@dataclass(frozen=True)
class LineColumn:
    """A column of records: its heading, its text, and what it sorts by, most significant
    first (each a plain value: a string, a number or a time)."""

    title: str
    text: Callable[[LineWords, Line], str]
    keys: tuple[Key, ...]
    right: bool = False
    stretch: bool = False

    def key(self, line: Line, names: dict[str, str]) -> tuple[Any, ...]:
        return tuple(key(line, names) for key in self.keys)


def _side(line: Line, _names: dict[str, str]) -> str:
    return line.side


def _kind(line: Line, _names: dict[str, str]) -> str:
    return line.kind


def _source(line: Line, names: dict[str, str]) -> str:
    return source_name(line.source, names).casefold()


QUEUE_COLUMNS: tuple[LineColumn, ...] = (
    LineColumn("Date", lambda w, line: w.day(line), (lambda line, _n: line.at.timestamp(),)),
    LineColumn("Where", lambda w, line: w.where(line), (_side, _source)),
    LineColumn(
        "What",
        lambda _w, line: KIND_LABELS.get(line.kind, line.kind),
        (lambda line, _n: line.kind,),
    ),
    LineColumn("Reference", lambda _w, line: line.reference, (lambda line, _n: line.reference,)),
    LineColumn(
        "Description",
        lambda _w, line: line.description,
        (lambda line, _n: line.description.casefold(),),
        stretch=True,
    ),
    LineColumn(
        "Amount",
        lambda w, line: w.amount(line),
        (lambda line, _n: line.currency, lambda line, _n: line.amount_minor),
        right=True,
    ),
    LineColumn(
        "Status",
        lambda _w, line: status_label(line.status),
        (lambda line, _n: STATUS_ORDER.get(line.status, 99),),
    ),
    LineColumn(
        "Difference",
        lambda w, line: w.difference(line),
        (lambda line, _n: line.diff_minor,),
        right=True,
    ),
)
STATUS_COLUMN = 6
CACHED_ROWS = 4_000  # formatted rows kept; a screenful is about 40


class LineModel(QAbstractTableModel):
    sort_requested = Signal(int, object)
    checks_changed = Signal()

    def __init__(
        self,
        words: LineWords,
        columns: Sequence[LineColumn] = QUEUE_COLUMNS,
        *,
        checkable: bool = False,
        sorts_itself: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.words = words
        self.columns = tuple(columns)
        self.checkable = checkable
        # A short list sorts itself in well under a millisecond; a long one asks the page
        # (sort_requested), which sorts it off the GUI thread.
        self.sorts_itself = sorts_itself
        self._lines: list[Line] = []
        self._texts: dict[int, tuple[str, ...]] = {}
        self._checked: set[int] = set()
        self.status_column = next(
            (n for n, column in enumerate(self.columns) if column.title == "Status"), -1
        )

    # --- contents -------------------------------------------------------------------------------

    def set_lines(self, lines: list[Line]) -> None:
        """Show these records (the list is kept as it is, not copied)."""
        self.beginResetModel()
        self._lines = lines
        self._texts.clear()
        self._checked.clear()
        self.endResetModel()

    def lines(self) -> list[Line]:
        return self._lines

    def line(self, row: int) -> Line:
        return self._lines[row]

    def row_of(self, number: int) -> int | None:
        for row, line in enumerate(self._lines):
            if line.number == number:
                return row
        return None

    def forget_texts(self) -> None:
        """Format every row again when next drawn (the names or the locale changed)."""
        self._texts.clear()
        if self._lines:
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(self._lines) - 1, len(self.columns) - 1)
            )

    def checked(self) -> list[Line]:
        return [line for line in self._lines if line.number in self._checked]

    def set_checked(self, number: int, checked: bool = True) -> None:
        row = self.row_of(number)
        if row is None:
            return
        if checked:
            self._checked.add(number)
        else:
            self._checked.discard(number)
        index = self.index(row, 0)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.CheckStateRole])
        self.checks_changed.emit()

    # --- Qt -------------------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt API
        return 0 if parent.isValid() else len(self._lines)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt API
        return 0 if parent.isValid() else len(self.columns)

    def _row_texts(self, row: int) -> tuple[str, ...]:
        texts = self._texts.get(row)
        if texts is None:
            if len(self._texts) >= CACHED_ROWS:
                self._texts.clear()
            line = self._lines[row]
            texts = self._texts[row] = tuple(
                column.text(self.words, line) for column in self.columns
            )
        return texts

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, column = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._row_texts(row)[column]
        line = self._lines[row]
        if role == LINE_ROLE:
            return line
        if role == Qt.ItemDataRole.ForegroundRole and column == self.status_column:
            colour = STATUS_COLOURS.get(line.status)
            return QColor(colour) if colour else None
        if role == Qt.ItemDataRole.TextAlignmentRole and self.columns[column].right:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == self.status_column:
                return STATUS_EXPLAINED.get(line.status, "")
            if self.columns[column].title == "Description":
                return line.description or None
            return self.words.sentence(line)
        if role == Qt.ItemDataRole.CheckStateRole and self.checkable and column == 0:
            ticked = line.number in self._checked
            return Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked
        return None

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not (index.isValid() and self.checkable and role == Qt.ItemDataRole.CheckStateRole):
            return False
        ticked = Qt.CheckState(value) == Qt.CheckState.Checked
        self.set_checked(self._lines[index.row()].number, ticked)
        return True

    def flags(self, index: Index) -> Qt.ItemFlag:
        flags = super().flags(index)
        if self.checkable and index.isValid() and index.column() == 0:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].title
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if column < 0:
            return
        if self.sorts_itself:
            names = self.words.names
            key = self.columns[column].key
            self.layoutAboutToBeChanged.emit()
            self._lines = sorted(
                self._lines,
                key=lambda line: key(line, names),
                reverse=order == Qt.SortOrder.DescendingOrder,
            )
            self._texts.clear()
            self.layoutChanged.emit()
            return
        self.sort_requested.emit(column, order)


class LineTable(QTableView):
    opened = Signal(object)
    current_changed = Signal(object)

    def __init__(self, model: LineModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lines = model
        self.setModel(model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        vertical = self.verticalHeader()
        vertical.setVisible(False)
        # Every row the same height: the view never measures 50 000 rows.
        vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vertical.setDefaultSectionSize(26)
        header = self.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        for number, column in enumerate(model.columns):
            if column.stretch:
                header.setSectionResizeMode(number, QHeaderView.ResizeMode.Stretch)
        self.doubleClicked.connect(lambda index: self.opened.emit(index.data(LINE_ROLE)))
        self.selectionModel().currentRowChanged.connect(
            lambda current, _previous: self.current_changed.emit(
                current.data(LINE_ROLE) if current.isValid() else None
            )
        )

    def current_line(self) -> Line | None:
        index = self.currentIndex()
        return index.data(LINE_ROLE) if index.isValid() else None

    def selected_lines(self) -> list[Line]:
        """The selected records, in the order shown (the current one when none is selected)."""
        rows = sorted({index.row() for index in self.selectionModel().selectedRows()})
        if not rows:
            current = self.current_line()
            return [current] if current is not None else []
        return [self.lines.line(row) for row in rows]

    def select_row(self, row: int) -> None:
        index = self.lines.index(row, 0)
        self.setCurrentIndex(index)
        self.scrollTo(index)

    def set_widths(self, widths: Iterable[int]) -> None:
        header = self.horizontalHeader()
        for number, width in enumerate(widths):
            if header.sectionResizeMode(number) != QHeaderView.ResizeMode.Stretch:
                header.resizeSection(number, width)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        line = self.current_line()
        if line is not None and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.opened.emit(line)
            return
        # Delete is deliberately not a shortcut here: writing off needs a reason.
        super().keyPressEvent(event)


# --- filtering and sorting a long list, off the GUI thread ------------------------------------


@dataclass(frozen=True)
class Arrangement:
    """What the queue shows: one status (None: every one loaded), one source (None: all), the
    words searched for, and the order."""

    status: str | None = None
    source: str | None = None
    words: tuple[str, ...] = ()
    column: int = -1
    descending: bool = False


def haystacks(lines: Sequence[Line], names: dict[str, str]) -> list[str]:
    """What search looks in, per record: reference, description, where it is, its kind and
    the amount as typed ("125.50")."""
    places: dict[str, int] = {}

    def typed(line: Line) -> str:
        if line.currency not in places:
            try:
                places[line.currency] = exponent(line.currency)
            except MoneyError:
                places[line.currency] = 2
        digits = places[line.currency]
        value = abs(line.amount_minor)
        if not digits:
            return str(value)
        return f"{value // 10**digits}.{value % 10**digits:0{digits}d}"

    return [
        " ".join(
            (
                line.reference or "",
                line.description or "",
                SIDE_LABELS.get(line.side, line.side),
                source_name(line.source, names),
                KIND_LABELS.get(line.kind, line.kind),
                status_label(line.status),
                typed(line),
                line.currency,
            )
        ).casefold()
        for line in lines
    ]


def _sortable(values: list[Any]) -> npt.NDArray[Any]:
    if values and isinstance(values[0], int | float) and not isinstance(values[0], bool):
        return np.array(values)
    return np.array([str(value) for value in values])


def sort_order(
    lines: Sequence[Line], column: LineColumn, names: dict[str, str], descending: bool = False
) -> list[int]:
    """The positions of `lines` in `column`'s order.

    Sorted by numpy, which releases the GIL; `list.sort` holds it through every comparison
    (measured: 58 ms for 50 000 tuples, all that time the window could not draw). Each key is
    a list of plain strings and numbers, never one tuple per record: 50 000 short-lived tuples
    set off a full garbage collection (measured: 114 ms)."""
    arrays = [_sortable([key(line, names) for line in lines]) for key in column.keys]
    # lexsort sorts by its last key first
    order = np.argsort(arrays[0], kind="stable") if len(arrays) == 1 else np.lexsort(arrays[::-1])
    ranked: list[int] = order.tolist()
    return ranked[::-1] if descending else ranked


def arrange_lines(
    lines: Sequence[Line],
    hay: Sequence[str],
    how: Arrangement,
    names: dict[str, str],
    columns: Sequence[LineColumn] = QUEUE_COLUMNS,
    keep: int | None = None,
) -> tuple[list[Line], int | None]:
    """The records `how` asks for, in its order, and the row of record `keep` among them (None
    when it is not there). Plain Python with no Qt: it runs on a worker thread."""
    chosen = range(len(lines))
    if how.status is not None:
        chosen = [n for n in chosen if lines[n].status == how.status]  # type: ignore[assignment]
    if how.source is not None:
        wanted = "" if how.source == "ledger" else how.source
        chosen = [n for n in chosen if lines[n].source == wanted]  # type: ignore[assignment]
    for word in how.words:
        chosen = [n for n in chosen if word in hay[n]]  # type: ignore[assignment]
    shown = [lines[n] for n in chosen]
    if 0 <= how.column < len(columns) and len(shown) > 1:
        order = sort_order(shown, columns[how.column], names, how.descending)
        shown = [shown[n] for n in order]
    row = None
    if keep is not None:
        row = next((n for n, line in enumerate(shown) if line.number == keep), None)
    return shown, row
