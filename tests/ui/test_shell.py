"""The app shell: window, tray, pausing, single instance, the demo school, crash dialog, themes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.qtbot import QtBot

from app.config import Config, demo_config
from app.engine import EngineState
from app.ui import tasks
from app.ui.crash import crash_message, install_crash_handler
from app.ui.shell import Shell
from app.ui.single_instance import SingleInstance, instance_key
from app.ui.theme import DARK, LIGHT, ThemeController
from app.ui.tray import Tray
from app.ui.welcome import WelcomeDialog
from tests.support.polling import until


@pytest.fixture
def shell_loop(qapp: QApplication, gui_loop: qasync.QEventLoop):
    asyncio.set_event_loop(gui_loop)
    shells: list[Shell] = []
    yield gui_loop, shells
    for shell in shells:
        shell.stop()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    while tasks.running():
        gui_loop.run_until_complete(asyncio.sleep(0.01))


def run(loop: qasync.QEventLoop, awaitable, timeout: float = 20):  # type: ignore[no-untyped-def]
    return loop.run_until_complete(asyncio.wait_for(awaitable, timeout))


def test_without_a_tray_closing_the_window_quits(
    qapp, shell_loop, config: Config, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    _loop, shells = shell_loop
    quits: list[bool] = []
    monkeypatch.setattr(qapp, "quit", lambda: quits.append(True))
    shell = Shell(qapp, config, use_tray=False, interactive=False, sign_in=False)
    shells.append(shell)
    window = shell.start()
    assert window.isVisible()
    assert window.windowTitle() == "My School — Switchboard"
    window.close()
    assert quits == [True]
    assert shell.engine is None  # stopped on the way out


def test_with_a_tray_closing_hides_the_window_and_work_goes_on(
    qapp, shell_loop, config: Config, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    loop, shells = shell_loop
    monkeypatch.setattr(Tray, "available", staticmethod(lambda: True))
    quits: list[bool] = []
    monkeypatch.setattr(qapp, "quit", lambda: quits.append(True))
    shell = Shell(qapp, config, interactive=False, sign_in=False)
    shells.append(shell)
    window = shell.start()
    assert shell.tray is not None
    window.close()
    assert not window.isVisible()
    assert quits == []
    assert shell.engine is not None
    assert shell.engine.state is EngineState.RUNNING
    shell.tray.open_requested.emit()
    assert window.isVisible()
    shell.tray.pause_action.setChecked(True)
    run(loop, until(lambda: "paused" in window._engine_label.text()))
    assert shell.engine.state is EngineState.PAUSED
    shell.tray.pause_action.setChecked(False)
    run(loop, until(lambda: "running" in window._engine_label.text()))
    shell.tray.quit_action.trigger()
    assert quits == [True]
    assert shell.engine is None


@pytest.mark.slow
def test_the_first_run_offers_the_demo_school_which_is_kept_apart(
    qapp, shell_loop, config: Config, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    loop, shells = shell_loop
    shell = Shell(qapp, config, use_tray=False, sign_in=False)
    shells.append(shell)
    window = shell.start()
    run(
        loop,
        until(
            lambda: any(
                isinstance(w, WelcomeDialog) and w.isVisible()
                for w in QApplication.topLevelWidgets()
            )
        ),
    )
    welcome = next(
        w for w in QApplication.topLevelWidgets() if isinstance(w, WelcomeDialog) and w.isVisible()
    )
    welcome.demo_button.click()
    run(
        loop,
        until(
            lambda: shell.config.demo and shell.window is not None and shell.window is not window
        ),
    )
    demo_window = shell.window
    assert (
        demo_window.windowTitle().startswith("Msasa Park Music School (demo)")
        or "(demo)" in demo_window.windowTitle()
    )
    overview = demo_window.page("overview")
    run(
        loop,
        until(
            lambda: (
                overview.states.state == "content"
                and overview.students.value.text() not in ("—", "0")
            ),
            60,  # the demo school is seeded first: a hang guard, not a measure
        ),
        90,
    )
    assert shell.config == demo_config(config)
    assert (config.paths.data_dir / "demo" / "switchboard.db").exists()
    # Leaving the demo returns to the school's own (still empty) database.
    demo_window.leave_demo_requested.emit()
    run(loop, until(lambda: not shell.config.demo and shell.window is not None))
    home_overview = shell.window.page("overview")
    run(loop, home_overview.settle())
    assert home_overview.states.state == "empty"


def test_a_second_launch_brings_the_first_window_forward(
    qapp, shell_loop, tmp_path: Path, qtbot: QtBot
) -> None:  # type: ignore[no-untyped-def]
    key = instance_key(tmp_path)
    first, second, third = (
        SingleInstance(key, qapp),
        SingleInstance(key, qapp),
        SingleInstance(key, qapp),
    )
    assert first.claim() is True
    with qtbot.waitSignal(first.activated, timeout=5000):
        assert second.claim() is False
    first.release()
    # Once the first has gone, the next launch becomes the first.
    assert third.claim() is True
    third.release()
    for instance in (first, second, third):
        instance.deleteLater()


def test_different_data_folders_are_different_instances(tmp_path: Path) -> None:
    assert instance_key(tmp_path / "a") != instance_key(tmp_path / "b")


def test_the_crash_dialog_names_the_log_and_hides_secrets(
    qapp, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from app.logs import REDACTOR

    REDACTOR.add("planted-crash-secret-123")
    log_path = tmp_path / "logs" / "switchboard.log"
    message = crash_message(RuntimeError("token planted-crash-secret-123 refused"), log_path)
    assert str(log_path) in message
    assert "planted-crash-secret-123" not in message
    import sys

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    install_crash_handler(log_path)
    try:
        raise ValueError("something unexpected")
    except ValueError as error:
        sys.excepthook(type(error), error, error.__traceback__)
    box = next(
        w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
    )
    assert "something unexpected" in box.text()
    box.close()
    box.deleteLater()


def test_themes_follow_the_choice_and_the_system(qapp) -> None:  # type: ignore[no-untyped-def]
    theme = ThemeController(qapp, "dark")
    assert theme.dark
    assert qapp.palette().color(QPalette.ColorRole.Window).name() == DARK.window
    theme.set_mode("light")
    assert not theme.dark
    assert qapp.palette().color(QPalette.ColorRole.Window).name() == LIGHT.window
    theme.set_mode("system")  # offscreen reports no preference: light
    assert qapp.palette().color(QPalette.ColorRole.Window).name() == LIGHT.window


def test_a_demo_that_cannot_open_returns_to_the_school_with_the_reason(
    qapp, shell_loop, config: Config
) -> None:  # type: ignore[no-untyped-def]
    loop, shells = shell_loop
    (config.paths.data_dir / "demo").write_text("a file where the demo folder should be")
    shell = Shell(qapp, config, use_tray=False, interactive=False, sign_in=False)
    shells.append(shell)
    shell.start()
    run(loop, shell.switch_to(demo=True))
    assert not shell.config.demo
    assert shell.window is not None
    assert shell.window.isVisible()
    message = next(
        w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
    )
    assert "cannot create its folder" in message.text()
    message.close()
