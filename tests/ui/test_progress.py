"""Long work shows a progress window with counts; Cancel stops the work."""

from __future__ import annotations

import asyncio

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from app.services.progress import Cancelled, Progress
from app.ui.progress import ProgressWindow, with_progress
from tests.ui.conftest import Gui


async def slow_work(progress: Progress) -> str:
    progress.start(100)
    while True:
        progress.check()
        progress.advance()
        await asyncio.sleep(0.02)


def test_slow_work_shows_counts_and_cancel_stops_it(gui: Gui, qtbot: QtBot) -> None:
    parent = QWidget()
    qtbot.addWidget(parent)
    parent.show()
    running = asyncio.ensure_future(
        with_progress(parent, "Importing students", slow_work), loop=gui.loop
    )
    window = gui.find(ProgressWindow, parent)
    gui.wait_until(lambda: "of 100" in window.label.text())
    assert window.label.text().startswith("Importing students: ")
    qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    with pytest.raises(Cancelled):
        gui.run(running)


def test_quick_work_never_flashes_a_window(gui: Gui, qtbot: QtBot) -> None:
    parent = QWidget()
    qtbot.addWidget(parent)

    async def quick(progress: Progress) -> int:
        return 7

    assert gui.run(with_progress(parent, "Checking", quick)) == 7
    assert not any(window.isVisible() for window in parent.findChildren(ProgressWindow))
