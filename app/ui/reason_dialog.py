"""The dialog that asks why before a decision is made (a match by hand, a write-off, a split):
the reason is required and kept with the decision. Dialogs that ask for more put their fields
in `middle` and say when they are `ready()`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.ui import tasks


class ReasonDialog(QDialog):
    """Asks why, then `save(reason)`; what it saved is kept in `saved`."""

    def __init__(
        self,
        title: str,
        text: str,
        action: str,
        save: Callable[[str], Awaitable[Any]],
        parent: QWidget | None = None,
        *,
        example: str = "For example: bank charge for November; paid in cash",
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(520)
        self._save = save
        self.saved: Any = None
        layout = QVBoxLayout(self)
        explanation = QLabel(text)
        explanation.setWordWrap(True)
        explanation.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(explanation)
        self.middle = QVBoxLayout()
        layout.addLayout(self.middle)
        label = QLabel("&Why? (required, kept with the decision)")
        self.reason = QLineEdit()
        self.reason.setPlaceholderText(example)
        self.reason.setMaxLength(500)
        label.setBuddy(self.reason)
        layout.addWidget(label)
        layout.addWidget(self.reason)
        self.banner = QLabel()
        self.banner.setObjectName("FieldError")
        self.banner.setWordWrap(True)
        self.banner.hide()
        layout.addWidget(self.banner)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText(action)
        self.ok_button.setDefault(True)
        buttons.accepted.connect(lambda: tasks.start(self.submit(), owner=self))
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.reason.textChanged.connect(lambda _text: self.changed())
        self.changed()

    def ready(self) -> bool:
        """Whether the decision can be asked for as the fields stand."""
        return bool(self.reason.text().strip())

    def changed(self) -> None:
        self.banner.hide()
        self.ok_button.setEnabled(self.ready())

    async def save_with(self, reason: str) -> Any:
        return await self._save(reason)

    async def submit(self) -> bool:
        """Make the decision with the reason typed; False (and why shown) when it was not."""
        reason = " ".join(self.reason.text().split())
        if not reason:
            self.banner.setText("Say why, in a few words: the reason is kept with the decision.")
            self.banner.show()
            return False
        self.ok_button.setEnabled(False)
        try:
            self.saved = await self.save_with(reason)
        except SwitchboardError as exc:
            self.banner.setText(str(exc))
            self.banner.show()
            return False
        finally:
            self.ok_button.setEnabled(self.ready())
        self.accept()
        return True
