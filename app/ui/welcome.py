"""The first-run welcome: explore a demo school, or set up the real one."""

from __future__ import annotations

from enum import IntEnum

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


class WelcomeChoice(IntEnum):
    SET_UP = 1
    DEMO = 2


class WelcomeDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Welcome to Switchboard")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        title = QLabel("Welcome to Switchboard")
        title.setObjectName("PageTitle")
        layout.addWidget(title)
        text = QLabel(
            "Switchboard keeps your school's students, lessons and invoices together with the "
            "services the school relies on: payment gateways, calendars and messages.\n\n"
            "You can look around a demo school first. Its families, lessons and money are "
            "invented and kept apart from your own data, and you can leave it at any time."
        )
        text.setWordWrap(True)
        layout.addWidget(text)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.demo_button = QPushButton("Explore a demo school")
        self.demo_button.clicked.connect(lambda: self.done(WelcomeChoice.DEMO))
        self.set_up_button = QPushButton("Set up my school")
        self.set_up_button.setDefault(True)
        self.set_up_button.clicked.connect(lambda: self.done(WelcomeChoice.SET_UP))
        buttons.addWidget(self.demo_button)
        buttons.addWidget(self.set_up_button)
        layout.addLayout(buttons)
        self.setWindowModality(Qt.WindowModality.WindowModal)
