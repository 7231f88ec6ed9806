"""UI fixtures: the one QApplication (pytest-qt's `qapp`), a qasync loop on it, and a running
engine with its bridge. Tests are plain functions that drive the loop with `gui.run(...)`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget
from pytestqt.qtbot import QtBot

from app.config import Config
from app.engine import Engine
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.main_window import MainWindow
from app.ui.theme import ThemeController
from app.views import build_pages
from tests.support.polling import until

T = TypeVar("T")


@pytest.fixture(scope="session")
def gui_loop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    # As in the app: closing a window must never end the event loop under a running test.
    qapp.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(qapp)
    yield loop
    loop.close()  # ends qasync's executor threads (asyncio.to_thread on the GUI loop)


@dataclass
class Gui:
    loop: qasync.QEventLoop
    engine: Engine
    bridge: EngineBridge
    screenshots: Path

    def run(self, awaitable: Awaitable[T], timeout: float = 15) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, timeout))

    def wait_until(self, condition: Callable[[], Any], timeout: float = 10) -> Any:
        return self.run(until(condition, timeout), timeout + 1)

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call a service on the engine and wait for it (test set-up)."""
        return self.run(self.bridge.call(fn, *args, **kwargs))

    def find(self, kind: type[T], parent: QWidget | None = None) -> T:
        """Wait for a visible widget of this kind (a dialog the page just opened)."""

        def visible() -> Any:
            candidates = (
                parent.findChildren(kind) if parent is not None else QApplication.topLevelWidgets()
            )
            return next((w for w in candidates if isinstance(w, kind) and w.isVisible()), None)

        return self.wait_until(visible)

    def answer(self, parent: QWidget, button: str) -> None:
        """Click `button` on the message box the page just opened."""
        box = self.find(QMessageBox, parent)
        next(b for b in box.buttons() if b.text() == button).click()

    def save(self, widget: QWidget, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        assert widget.grab().save(str(path))
        return path


@pytest.fixture
def gui(
    qapp: QApplication, gui_loop: qasync.QEventLoop, config: Config, tmp_path: Path
) -> Iterator[Gui]:
    asyncio.set_event_loop(gui_loop)
    engine = Engine(config, scheduler=False)
    engine.start()
    bridge = EngineBridge(engine)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    yield Gui(gui_loop, engine, bridge, shots)
    # Delete every window now (pytest-qt's deleteLater runs outside any event loop, so Qt would
    # keep it); destroying a page cancels the tasks it started. Then stop the engine.
    for widget in QApplication.topLevelWidgets():
        widget.hide()
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    deadline = time.monotonic() + 5
    while tasks.running() and time.monotonic() < deadline:
        gui_loop.run_until_complete(asyncio.sleep(0.01))
    assert tasks.running() == 0, (
        f"tasks outlived their test and widgets: {[t.get_coro() for t in tasks._running]}"
    )
    bridge.close()
    engine.stop()


@pytest.fixture
def window(gui: Gui, qapp: QApplication, qtbot: QtBot) -> MainWindow:
    """The main window with every page, shown."""
    window = MainWindow(gui.bridge, ThemeController(qapp), build_pages(gui.bridge))
    qtbot.addWidget(window)
    window.resize(1280, 860)
    window.show()
    return window
