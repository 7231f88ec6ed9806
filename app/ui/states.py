"""A page's four faces: its content, an empty state that says how to start, a busy state and
an error state with a way to try again.

Signals (PageStates):
    retry(): the user asked to try again after an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)


def _centered(*widgets: QWidget) -> QWidget:
    """The widgets in a column of fixed width in the middle of the page. Stretches centre the
    column; aligning the widgets themselves would cost wrapped labels their height-for-width."""
    column = QWidget()
    column.setFixedWidth(COLUMN_WIDTH)
    inner = QVBoxLayout(column)
    inner.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        inner.addWidget(widget)
    row = QHBoxLayout()
    row.addStretch(1)
    row.addWidget(column)
    row.addStretch(1)
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.addStretch(1)
    layout.addLayout(row)
    layout.addStretch(2)
    return holder


def _label(text: str, name: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    if name:
        label.setObjectName(name)
    return label


COLUMN_WIDTH = 520


class PageStates(QStackedWidget):
    retry = Signal()

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.content = content
        self.addWidget(content)

        self._empty_title = _label("", "EmptyTitle")
        self._empty_text = _label("", "Muted")
        self._empty_actions = QHBoxLayout()
        self._empty_actions.addStretch(1)
        self._empty_actions.addStretch(1)
        actions = QWidget()
        actions.setLayout(self._empty_actions)
        self._empty = _centered(self._empty_title, self._empty_text, actions)
        self.addWidget(self._empty)

        busy_bar = QProgressBar()
        busy_bar.setRange(0, 0)
        self._busy_text = _label("Loading…", "Muted")
        self._busy = _centered(self._busy_text, busy_bar)
        self.addWidget(self._busy)

        self._error_text = _label("")
        retry = QPushButton("Try again")
        retry.clicked.connect(self.retry.emit)
        self._error = _centered(
            _label("Something went wrong", "EmptyTitle"), self._error_text, retry
        )
        self.addWidget(self._error)

    def show_content(self) -> None:
        self.setCurrentWidget(self.content)

    def show_busy(self, text: str = "Loading…") -> None:
        self._busy_text.setText(text)
        self.setCurrentWidget(self._busy)

    def show_error(self, message: str) -> None:
        self._error_text.setText(message)
        self.setCurrentWidget(self._error)

    def show_empty(
        self, title: str, text: str, actions: Sequence[tuple[str, Callable[[], object]]] = ()
    ) -> None:
        self._empty_title.setText(title)
        self._empty_text.setText(text)
        # Between the two stretches that centre them: drop the old buttons, add the new ones.
        while self._empty_actions.count() > 2:
            item = self._empty_actions.takeAt(1)
            if item is not None and item.widget() is not None:
                item.widget().deleteLater()
        for position, (label, callback) in enumerate(actions, start=1):
            button = QPushButton(label)
            button.clicked.connect(lambda _checked=False, callback=callback: callback())
            self._empty_actions.insertWidget(position, button)
        self.setCurrentWidget(self._empty)

    @property
    def state(self) -> str:
        current = self.currentWidget()
        return {
            id(self.content): "content",
            id(self._empty): "empty",
            id(self._busy): "busy",
            id(self._error): "error",
        }[id(current)]
