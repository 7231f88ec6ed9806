"""Uncaught exceptions: written to the log in full, shown to the user as a dialog that says
where the log is, and never a silent disappearance. The dialog shows only the redacted
one-line message, never a secret."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QMessageBox

from app.logs import REDACTOR

log = logging.getLogger("switchboard.crash")


def crash_message(error: BaseException, log_path: Path) -> str:
    summary = REDACTOR.redact(f"{type(error).__name__}: {error}")
    if len(summary) > 300:
        summary = summary[:297] + "…"
    return (
        "Switchboard ran into a problem it did not expect. Your data is safe: what was saved "
        "stays saved, and you can keep working.\n\n"
        f"What happened: {summary}\n\n"
        f"The details are in the log file:\n{log_path}\n\n"
        "If this keeps happening, send that file to your IT helper."
    )


# A dialog with no parent belongs to Python: hold it until it is closed, or it vanishes at once.
_showing: set[QMessageBox] = set()


def show_crash_dialog(error: BaseException, log_path: Path) -> QMessageBox:
    box = QMessageBox(
        QMessageBox.Icon.Critical, "Something went wrong", crash_message(error, log_path)
    )
    _showing.add(box)
    box.finished.connect(lambda _result: _showing.discard(box))
    open_folder = box.addButton("Open log folder", QMessageBox.ButtonRole.ActionRole)
    box.addButton(QMessageBox.StandardButton.Close)
    open_folder.clicked.connect(
        lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_path.parent)))
    )
    box.open()
    return box


def install_crash_handler(log_path: Path) -> None:
    def handle(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, trace)
            return
        log.critical("uncaught exception", exc_info=(kind, error, trace))
        if QApplication.instance() is not None:
            show_crash_dialog(error, log_path)

    sys.excepthook = handle
