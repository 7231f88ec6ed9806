"""The base of every page in the sidebar: a title row with actions, the four states, and
refreshing when the engine says the page's data changed (only while the page is visible;
a hidden page just remembers it is stale)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.domain.errors import SwitchboardError
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.states import PageStates

log = logging.getLogger("switchboard.ui")


class Page(QWidget):
    """Subclasses set the class attributes and implement `async load()`: fetch the page's data
    through the bridge and show it (the content, or the empty state that says how to start).

    Signals:
        navigate(str): the page wants another page shown: its key, or "key:argument" for a page
            that can be opened on something (see `open_with`).
        demo_requested(): the user asked to explore the demo school.
    """

    navigate = Signal(str)
    demo_requested = Signal()

    key: ClassVar[str]
    title: ClassVar[str]
    icon_name: ClassVar[str]
    topics: ClassVar[tuple[str, ...]] = ()
    # A page about something busy (calls, webhooks) refreshes at most this often, however
    # many events arrive; 0: at each one.
    refresh_every: ClassVar[float] = 0.0
    shortcut_hint: ClassVar[str] = ""

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self._stale = True
        self._loaded_once = False
        self._again = False
        self._refreshing: asyncio.Task[Any] | None = None
        self._last_refresh = 0.0
        self._later = QTimer(self)
        self._later.setSingleShot(True)
        self._later.timeout.connect(self.schedule_refresh)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 12)
        header = QHBoxLayout()
        heading = QLabel(self.title)
        heading.setObjectName("PageTitle")
        header.addWidget(heading)
        header.addStretch(1)
        self.actions = QHBoxLayout()
        header.addLayout(self.actions)
        layout.addLayout(header)

        self.body = QWidget()
        self.states = PageStates(self.body)
        self.states.retry.connect(self.schedule_refresh)
        layout.addWidget(self.states, 1)
        bridge.event.connect(self._on_event)

    # --- refreshing -----------------------------------------------------------------------------

    async def refresh(self) -> None:
        if not self._loaded_once:
            self.states.show_busy()
        self._stale = False
        self._last_refresh = time.monotonic()
        try:
            await self.load()  # type: ignore[attr-defined]
        except SwitchboardError as exc:
            self.states.show_error(str(exc))
            return
        except Exception as exc:
            log.exception("page failed to load", extra={"page": self.key})
            self.states.show_error(
                f"{self.title} could not be loaded ({type(exc).__name__}). The details are in "
                "the log file; try again, and if it keeps failing send the log to your IT helper."
            )
            return
        self._loaded_once = True

    def schedule_refresh(self) -> None:
        """Refresh soon; several requests while a refresh runs lead to exactly one more."""
        if self._refreshing is not None and not self._refreshing.done():
            self._again = True
            return
        self._refreshing = tasks.start(self._refresh_until_current(), owner=self)

    async def _refresh_until_current(self) -> None:
        while True:
            self._again = False
            await self.refresh()
            if not self._again:
                return

    def open_with(self, argument: str) -> None:
        """Show what `argument` names (a page opened with "key:argument"); by default nothing."""

    async def settle(self) -> None:
        """Wait until the page shows current data: screenshots and tests await this."""
        while True:
            running = self._refreshing
            if running is not None and not running.done():
                await running
            elif self._stale:
                await self.refresh()
            else:
                return

    @property
    def is_stale(self) -> bool:
        return self._stale

    def _on_event(self, topic: str, _payload: dict[str, Any]) -> None:
        if topic in self.topics:
            self._stale = True
            if not self.isVisible():
                return
            wait = self.refresh_every - (time.monotonic() - self._last_refresh)
            if wait <= 0:
                self.schedule_refresh()
            elif not self._later.isActive():
                self._later.start(int(wait * 1000))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:
            self.schedule_refresh()
