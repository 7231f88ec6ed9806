"""A row that says long work is under way: an endless bar, what is being done and, after a
second, for how long ("Reconciling… 4 s"). Hidden while nothing runs."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

TICK_MS = 500


class BusyRow(QWidget):
    def __init__(self, bar_width: int = 220, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.bar.setMaximumWidth(bar_width)
        self.bar.setMaximumHeight(14)
        self.bar.setTextVisible(False)
        self.label = QLabel()
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar)
        row.addWidget(self.label, 1)
        self._text = ""
        self._since = 0.0
        self._ticker = QTimer(self)
        self._ticker.setInterval(TICK_MS)
        self._ticker.timeout.connect(self._tick)
        self.hide()

    @property
    def busy(self) -> bool:
        return not self.isHidden()

    def start(self, text: str) -> None:
        self._text, self._since = text, time.monotonic()
        self.label.setText(text)
        self.show()
        self._ticker.start()

    def stop(self) -> None:
        self.hide()
        self._ticker.stop()

    def _tick(self) -> None:
        seconds = int(time.monotonic() - self._since)
        if seconds >= 1:
            self.label.setText(f"{self._text} {seconds} s")
