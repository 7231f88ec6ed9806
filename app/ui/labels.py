"""Small labels pages share: a heading over a part of a page, and muted explanatory text."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel


def heading(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("CardLabel")
    return label


def muted(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("Muted")
    label.setWordWrap(True)
    return label
