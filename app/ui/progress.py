"""Long engine work with a progress window: counts as they move, and a Cancel that stops it.

Quick work never flashes a window: it appears only when the work takes longer than a moment.
(Qt's QProgressDialog is not used: when modal it processes events inside setValue, which would
re-enter the asyncio loop.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QProgressBar, QVBoxLayout, QWidget

from app.services.progress import Progress

T = TypeVar("T")

SHOW_AFTER_MS = 400
REFRESH_MS = 100


class ProgressWindow(QDialog):
    def __init__(self, title: str, progress: Progress, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(380)
        self.progress = progress
        self.title = title
        layout = QVBoxLayout(self)
        self.label = QLabel(f"{title}…")
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button = buttons.button(QDialogButtonBox.StandardButton.Cancel)
        buttons.rejected.connect(self.cancel)
        for widget in (self.label, self.bar, buttons):
            layout.addWidget(widget)
        self._refresh = QTimer(self)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self.update_counts)
        self._refresh.start()
        QTimer.singleShot(SHOW_AFTER_MS, self._show_if_running)

    def _show_if_running(self) -> None:
        if self._refresh.isActive():
            self.show()

    def update_counts(self) -> None:
        done, total = self.progress.done, self.progress.total
        if total:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
            self.label.setText(f"{self.title}: {done:,} of {total:,}")

    def cancel(self) -> None:
        self.progress.cancel()
        self.cancel_button.setEnabled(False)
        self.label.setText("Stopping…")

    def reject(self) -> None:  # Escape or closing the window cancels, as the button does
        self.cancel()

    def finish(self) -> None:
        self._refresh.stop()
        self.hide()
        self.deleteLater()


async def with_progress(parent: QWidget, title: str, work: Callable[[Progress], Awaitable[T]]) -> T:
    """Run `work(progress)` with a progress window over `parent`; Cancel raises Cancelled
    from the work."""
    progress = Progress()
    window = ProgressWindow(title, progress, parent)
    try:
        return await work(progress)
    finally:
        window.finish()
