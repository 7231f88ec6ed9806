"""The main window: a sidebar of pages, the page stack, a demo banner when exploring, and a
status bar with the engine's state, the database and the last background run.

Until someone signs in (and again after an idle lock or a sign-out) the window shows the
sign-in panel instead of its pages.

Signals:
    close_requested(): the user closed the window (the shell decides: hide to tray or quit).
    leave_demo_requested(): the user wants to leave the demo school.
    lock_requested(): the user asked to lock the window (Ctrl+L).
    sign_out_requested(): the user signed out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.domain.access import Principal
from app.domain.errors import SwitchboardError
from app.engine import EngineState
from app.services.jobs import TOPIC as TOPIC_JOBS
from app.services.jobs import JobRunRecord
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.icons import icon
from app.ui.page import Page
from app.ui.sign_in import SignInForm, SignInPanel
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED, ThemeController

STATE_COLORS = {
    EngineState.RUNNING.value: (HEALTHY, "Background work running"),
    EngineState.PAUSED.value: (PAUSED, "Background work paused"),
    EngineState.STARTING.value: (DEGRADED, "Starting…"),
    EngineState.STOPPING.value: (DEGRADED, "Stopping…"),
    EngineState.STOPPED.value: (PAUSED, "Engine stopped"),
    EngineState.FAILED.value: (DOWN, "Engine failed; see the log"),
}


class MainWindow(QMainWindow):
    close_requested = Signal()
    leave_demo_requested = Signal()
    lock_requested = Signal()
    sign_out_requested = Signal()

    def __init__(
        self,
        bridge: EngineBridge,
        theme: ThemeController,
        pages: Sequence[Page],
        *,
        demo: bool = False,
    ) -> None:
        super().__init__()
        self.bridge = bridge
        self.theme = theme
        self.pages = list(pages)
        self.setMinimumSize(QSize(960, 600))
        self.resize(1280, 800)

        central = QWidget()
        outer = QHBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("Sidebar")
        self.sidebar.setFixedWidth(200)
        self.sidebar.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.sidebar.setIconSize(QSize(20, 20))
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        outer.addWidget(self.sidebar)

        right = QVBoxLayout()
        right.setContentsMargins(0, 0, 0, 0)
        if demo:
            right.addWidget(self._demo_banner())
        self.stack = QStackedWidget()
        right.addWidget(self.stack, 1)
        outer.addLayout(right, 1)
        self.gate = QStackedWidget()
        self.gate.addWidget(central)
        self.sign_in_panel = SignInPanel(bridge)
        self.gate.addWidget(self.sign_in_panel)
        self.setCentralWidget(self.gate)
        self._shortcuts: list[QShortcut] = []

        for number, page in enumerate(self.pages, start=1):
            item = QListWidgetItem(page.title)
            item.setData(Qt.ItemDataRole.UserRole, page.key)
            item.setToolTip(f"{page.title} (Ctrl+{number})")
            self.sidebar.addItem(item)
            self.stack.addWidget(page)
            page.navigate.connect(self.show_page)
            shortcut = QShortcut(QKeySequence(f"Ctrl+{number}"), self)
            shortcut.activated.connect(lambda key=page.key: self.show_page(key))
            self._shortcuts.append(shortcut)
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        self._tint_icons(theme.dark)
        theme.changed.connect(self._tint_icons)

        self._engine_label = QLabel()
        self._database_label = QLabel(bridge.services.db.display_name)
        self._database_label.setObjectName("Muted")
        self._last_run_label = QLabel("No background run yet")
        self._last_run_label.setObjectName("Muted")
        self._who_label = QLabel()
        self._who_label.setObjectName("Muted")
        self.lock_button = QPushButton("Lock")
        self.lock_button.setToolTip("Lock the window until you sign in again (Ctrl+L)")
        self.lock_button.clicked.connect(self.lock_requested.emit)
        self.sign_out_button = QPushButton("Sign out")
        self.sign_out_button.clicked.connect(self.sign_out_requested.emit)
        lock_key = QShortcut(QKeySequence("Ctrl+L"), self)
        lock_key.activated.connect(self._lock_key)
        status = self.statusBar()
        status.addWidget(self._engine_label)
        status.addWidget(self._database_label, 1)
        status.addPermanentWidget(self._last_run_label)
        status.addPermanentWidget(self._who_label)
        status.addPermanentWidget(self.lock_button)
        status.addPermanentWidget(self.sign_out_button)
        self.show_signed_in(None)
        self.show_engine_state(bridge.engine.state.value)
        bridge.engine_state.connect(self.show_engine_state)
        bridge.event.connect(self._on_event)
        tasks.start(self.refresh_last_run(), owner=self)
        if self.pages:
            self.sidebar.setCurrentRow(0)

    def _demo_banner(self) -> QWidget:
        banner = QWidget()
        banner.setObjectName("DemoBanner")
        banner.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        row = QHBoxLayout(banner)
        row.setContentsMargins(12, 6, 12, 6)
        text = QLabel(
            "You are exploring a demo school: the families and money here are invented, and "
            "nothing you do reaches a real person or a real account."
        )
        text.setWordWrap(True)
        row.addWidget(text, 1)
        leave = QPushButton("Leave the demo")
        leave.clicked.connect(self.leave_demo_requested.emit)
        row.addWidget(leave)
        return banner

    def _tint_icons(self, _dark: bool) -> None:
        color = self.theme.colors.text
        for row, page in enumerate(self.pages):
            self.sidebar.item(row).setIcon(icon(page.icon_name, color))

    # --- signing in -----------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        return self.gate.currentWidget() is self.sign_in_panel

    def lock(self, *, first_run: bool = False, reason: str = "", name: str = "") -> SignInForm:
        """Hide the pages behind the sign-in panel (the first run's form if `first_run`)."""
        form = self.sign_in_panel.ask(first_run=first_run, reason=reason, name=name)
        self.gate.setCurrentWidget(self.sign_in_panel)
        self._set_locked_controls(True)
        return form

    def unlock(self, principal: Principal | None) -> None:
        self.show_signed_in(principal)
        self.gate.setCurrentIndex(0)
        self._set_locked_controls(False)
        if self.pages:
            self.current_page.setFocus()

    def show_signed_in(self, principal: Principal | None) -> None:
        shown = principal is not None and not principal.service
        self._who_label.setText(
            f"Signed in as {principal.name} ({principal.role.label})"
            if principal is not None and shown
            else ""
        )
        self.lock_button.setVisible(shown)
        self.sign_out_button.setVisible(shown)

    def _set_locked_controls(self, locked: bool) -> None:
        for shortcut in self._shortcuts:
            shortcut.setEnabled(not locked)
        self.lock_button.setEnabled(not locked)
        self.sign_out_button.setEnabled(not locked)

    def _lock_key(self) -> None:
        if self.lock_button.isVisible() and not self.locked:
            self.lock_requested.emit()

    # --- pages ----------------------------------------------------------------------------------

    def page(self, key: str) -> Page:
        for page in self.pages:
            if page.key == key:
                return page
        raise KeyError(key)

    def show_page(self, key: str) -> Page:
        """Show a page by its key, or by "key:argument" to open it on something."""
        key, _, argument = key.partition(":")
        page = self.page(key)
        self.sidebar.setCurrentRow(self.pages.index(page))
        if argument:
            page.open_with(argument)
        return page

    @property
    def current_page(self) -> Page:
        return self.pages[self.stack.currentIndex()]

    def bring_forward(self) -> None:
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    # --- status bar -----------------------------------------------------------------------------

    def show_engine_state(self, state: str) -> None:
        color, text = STATE_COLORS.get(state, (PAUSED, state))
        self._engine_label.setText(f"<span style='color:{color}'>●</span> {text}")

    def _on_event(self, topic: str, _payload: dict[str, Any]) -> None:
        if topic == TOPIC_JOBS:
            tasks.start(self.refresh_last_run(), owner=self)

    async def refresh_last_run(self) -> None:
        try:
            run: JobRunRecord | None = await self.bridge.call(
                self.bridge.services.jobs.last_finished
            )
        except SwitchboardError:
            self._last_run_label.setText("Last background run unknown")
            return
        if run is None or run.finished_at is None:
            self._last_run_label.setText("No background run yet")
            return
        zone = ZoneInfo(self.bridge.services.settings.get("school.timezone"))
        when = run.finished_at.astimezone(zone)
        today = datetime.now(zone).date()
        stamp = f"{when:%H:%M}" if when.date() == today else f"{when:%d %b %H:%M}"
        outcome = "" if run.outcome == "ok" else f" ({run.outcome})"
        self._last_run_label.setText(f"Last background run {stamp}{outcome}")

    def closeEvent(self, event: QCloseEvent) -> None:
        event.ignore()
        self.close_requested.emit()
