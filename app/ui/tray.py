"""The system-tray icon and its menu: Open, Pause background work, Quit.

Signals (Tray):
    open_requested(): the user clicked the icon or chose Open.
    pause_toggled(bool): the user paused (True) or resumed (False) background work.
    quit_requested(): the user chose Quit.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon


class Tray(QObject):
    open_requested = Signal()
    pause_toggled = Signal(bool)
    quit_requested = Signal()

    def __init__(self, app_icon: QIcon, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.menu = QMenu()
        self.open_action = QAction("Open Switchboard", self.menu)
        self.open_action.triggered.connect(self.open_requested.emit)
        self.pause_action = QAction("Pause background work", self.menu)
        self.pause_action.setCheckable(True)
        self.pause_action.toggled.connect(self.pause_toggled.emit)
        self.quit_action = QAction("Quit Switchboard", self.menu)
        self.quit_action.triggered.connect(self.quit_requested.emit)
        self.menu.addAction(self.open_action)
        self.menu.addAction(self.pause_action)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)

        self.icon = QSystemTrayIcon(app_icon, self)
        self.icon.setToolTip("Switchboard")
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)

    @staticmethod
    def available() -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable()

    def show(self) -> None:
        self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    def set_paused(self, paused: bool) -> None:
        """Reflect the engine's state without emitting pause_toggled again."""
        blocked = self.pause_action.blockSignals(True)
        self.pause_action.setChecked(paused)
        self.pause_action.blockSignals(blocked)

    def set_tooltip(self, text: str) -> None:
        self.icon.setToolTip(text)

    def notify(self, title: str, text: str) -> None:
        self.icon.showMessage(title, text, QSystemTrayIcon.MessageIcon.Information, 5000)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (
            QSystemTrayIcon.ActivationReason.Trigger,
            QSystemTrayIcon.ActivationReason.DoubleClick,
        ):
            self.open_requested.emit()


def tooltip(
    last_sync: datetime | None, next_sync: datetime | None, zone: ZoneInfo, paused: bool
) -> str:
    """What hovering over the icon says: the calendars' last and next sync."""
    lines = ["Switchboard"]
    if paused:
        lines.append("Background work paused")
    if last_sync is not None or next_sync is not None:
        last = f"{last_sync.astimezone(zone):%H:%M}" if last_sync else "not yet"
        upcoming = (
            "paused" if paused else (f"{next_sync.astimezone(zone):%H:%M}" if next_sync else "—")
        )
        lines.append(f"Calendars synced {last}, next {upcoming}")
    return "\n".join(lines)
