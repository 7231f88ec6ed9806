"""What locks the signed-in window: the "Lock after idle (minutes)" setting is the idle time the
window's watch counts down (read at sign-in, and changed at once when the setting changes), and
the desktop session locking the screen locks the window too (IdleWatch.screen_locked; the D-Bus
side of it is tests/ui/test_screen_lock.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent, QTimer
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.config import Config
from app.domain.access import Principal
from app.services import access
from app.ui import tasks
from app.ui.idle import IdleWatch
from app.ui.shell import NOBODY, Shell
from tests.support.polling import until

PASSWORD = "correct horse battery"
SETTING = "security.idle_lock_minutes"


def run(loop: qasync.QEventLoop, awaitable: Any, timeout: float = 30) -> Any:
    return loop.run_until_complete(asyncio.wait_for(awaitable, timeout))


async def acting() -> Principal:
    return access.current()


@pytest.fixture
def shell(qapp: QApplication, gui_loop: qasync.QEventLoop, config: Config) -> Iterator[Shell]:
    """The window as the app opens it, with the first run's administrator not yet created."""
    asyncio.set_event_loop(gui_loop)
    shell = Shell(qapp, config, use_tray=False, interactive=False)
    shell.start()
    yield shell
    if shell.idle is not None:
        shell.idle.stop()
    shell.stop()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    while tasks.running():
        gui_loop.run_until_complete(asyncio.sleep(0.01))


def create_administrator(loop: qasync.QEventLoop, shell: Shell) -> None:
    """Ada, through the first run's form: signed in once it is sent."""
    window = shell.window
    assert window is not None
    panel = window.sign_in_panel
    run(loop, until(lambda: panel.form is not None and panel.form.first_run))
    form = panel.form
    assert form is not None
    form.name.setText("Ada")
    form.password.setText(PASSWORD)
    form.repeat.setText(PASSWORD)
    assert run(loop, form.submit()) is not None
    assert not window.locked


def countdown(watch: IdleWatch | None) -> QTimer:
    assert watch is not None
    timer = watch.findChild(QTimer)
    assert isinstance(timer, QTimer)
    return timer


def test_the_idle_minutes_setting_is_the_time_the_window_waits_before_locking(
    shell: Shell, gui_loop: qasync.QEventLoop, qtbot: QtBot
) -> None:
    loop, window, bridge = gui_loop, shell.window, shell.bridge
    assert window is not None
    assert bridge is not None
    settings = bridge.services.settings
    # Set before anyone signs in (as the service user): read when the watch starts.
    run(loop, bridge.call_as(None, settings.set, SETTING, 3))
    create_administrator(loop, shell)
    timer = countdown(shell.idle)
    assert timer.interval() == 3 * 60_000
    assert timer.isActive()

    # Changed while signed in (as Ada, from the settings page): the countdown follows at once.
    run(loop, bridge.call(settings.set, SETTING, 0))
    qtbot.waitUntil(lambda: not timer.isActive())
    assert timer.interval() == 0  # 0: never by itself
    run(loop, bridge.call(settings.set, SETTING, 1))
    qtbot.waitUntil(lambda: timer.isActive())
    assert timer.interval() == 60_000
    assert not window.locked

    # A minute is the setting's shortest; the test's watch runs the rest of it in 200 ms.
    assert shell.idle is not None
    shell.idle.set_interval_ms(200)
    qtbot.waitUntil(lambda: window.locked)
    assert window.sign_in_panel.explanation.text() == (
        "Locked after 1 minute without use. Sign in to go on."
    )
    assert run(loop, bridge.call(acting)) == NOBODY
    assert not timer.isActive()  # one lock, not one a minute while nobody is there

    # Ada signs in again: the countdown is the setting's again, not the test's 200 ms.
    form = window.sign_in_panel.form
    assert form is not None
    assert form.name.text() == "Ada"
    form.password.setText(PASSWORD)
    assert run(loop, form.submit()) is not None
    assert not window.locked
    assert timer.interval() == 60_000
    assert timer.isActive()


def test_the_screen_locking_shows_the_sign_in_screen(
    shell: Shell, gui_loop: qasync.QEventLoop
) -> None:
    loop, window, bridge = gui_loop, shell.window, shell.bridge
    assert window is not None
    assert bridge is not None
    create_administrator(loop, shell)
    watch = shell.idle
    assert watch is not None
    watch.on_screen_saver(False)  # the screen saver going away locks nothing
    assert not window.locked

    watch.screen_locked.emit()
    assert window.locked
    assert window.gate.currentWidget() is window.sign_in_panel
    assert window.sign_in_panel.explanation.text() == (
        "Locked because the screen was locked. Sign in to go on."
    )
    form = window.sign_in_panel.form
    assert form is not None
    assert form.name.text() == "Ada"
    assert run(loop, bridge.call(acting)) == NOBODY  # the services no longer see Ada
    watch.screen_locked.emit()  # locked already: still the same form
    assert window.sign_in_panel.form is form

    form.password.setText(PASSWORD)
    assert run(loop, form.submit()) is not None
    assert not window.locked
    assert run(loop, bridge.call(acting)).name == "Ada"
