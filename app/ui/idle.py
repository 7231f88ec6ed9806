"""When to lock the window: after a while with no key press or mouse use anywhere in the app,
and when the operating system says the screen was locked (where it tells us: the desktop
session's screen saver on Linux, over D-Bus).

Signals:
    idle(): nobody used the app for the idle time.
    screen_locked(): the operating system locked the screen.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QEvent, QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import QApplication

log = logging.getLogger("switchboard.ui")

_INPUT = {
    QEvent.Type.KeyPress,
    QEvent.Type.MouseButtonPress,
    QEvent.Type.MouseMove,
    QEvent.Type.Wheel,
    QEvent.Type.TouchBegin,
}


class IdleWatch(QObject):
    idle = Signal()
    screen_locked = Signal()

    def __init__(self, app: QApplication, minutes: int) -> None:
        super().__init__(app)
        self._app = app
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.idle.emit)
        self.set_minutes(minutes)
        app.installEventFilter(self)
        self._listen_to_screen_saver()

    def set_minutes(self, minutes: int) -> None:
        """0 turns the idle lock off."""
        self._timer.stop()
        self._timer.setInterval(max(0, minutes) * 60_000)
        if minutes > 0:
            self._timer.start()

    def set_interval_ms(self, milliseconds: int) -> None:
        """For tests: an idle time shorter than a minute."""
        self._timer.setInterval(milliseconds)
        self._timer.start()

    def restart(self) -> None:
        if self._timer.interval() > 0:
            self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._app.removeEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in _INPUT and self._timer.isActive():
            self._timer.start()  # restarts the countdown
        return False

    def _listen_to_screen_saver(self) -> None:
        """freedesktop's ScreenSaver.ActiveChanged(true) when the session locks (GNOME, KDE,
        Xfce...). Windows and macOS: not wired yet; the idle lock still applies there."""
        try:
            from PySide6.QtDBus import QDBusConnection
        except ImportError:
            return
        bus = QDBusConnection.sessionBus()
        if not bus.isConnected():
            return
        ok = bus.connect(
            "",
            "/org/freedesktop/ScreenSaver",
            "org.freedesktop.ScreenSaver",
            "ActiveChanged",
            self,
            "1on_screen_saver(bool)",  # SLOT(): the "1" marks a slot, as Qt's macro writes it
        )
        if not ok:
            log.debug("no screen saver signals on this session bus")

    @Slot(bool)
    def on_screen_saver(self, active: bool) -> None:
        if active:
            self.screen_locked.emit()
