"""`switchboard gui`: the Qt application, the asyncio loop on top of it (qasync), a single
instance per data folder, logging, the crash dialog, then the shell."""

from __future__ import annotations

import asyncio
import signal
import sys

import qasync
from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app import __version__
from app.config import Config
from app.engine import EngineError
from app.logs import setup_logging
from app.ui.crash import install_crash_handler
from app.ui.icons import app_icon
from app.ui.shell import Shell
from app.ui.single_instance import SingleInstance, instance_key

# The engine and database threads run Python too. CPython hands the GIL to a waiting thread only
# after the holder's switch interval (5 ms by default), so with busy background threads each
# GUI callback can wait several intervals. 1 ms keeps the window responsive (bench ui-stall).
GUI_SWITCH_INTERVAL = 0.001


def make_application() -> QApplication:
    sys.setswitchinterval(GUI_SWITCH_INTERVAL)
    QCoreApplication.setApplicationName("Switchboard")
    QCoreApplication.setOrganizationName("Switchboard")
    QCoreApplication.setApplicationVersion(__version__)
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setDesktopFileName("switchboard")
    app.setWindowIcon(app_icon())
    return app


def _quit_on_signals(shell: Shell) -> None:
    """Ctrl+C in a terminal and SIGTERM (a logout, `kill`) quit cleanly: engine stopped, window
    state saved. Python only sees a signal when it runs, so a slow timer gives it the chance."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: QTimer.singleShot(0, shell.quit))
    wake = QTimer(shell)
    wake.setInterval(250)
    wake.timeout.connect(lambda: None)
    wake.start()


def run_gui(home: Config, *, demo: bool = False) -> int:
    app = make_application()
    home.paths.create()
    instance = SingleInstance(instance_key(home.paths.data_dir))
    if not instance.claim():
        print("Switchboard is already running; its window was brought forward.")
        return 0
    log_path = setup_logging(home.paths.log_dir)
    install_crash_handler(log_path)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    shell = Shell(app, home, demo=demo)
    # With a tray, closing the window only hides it; the tray's Quit ends the app.
    app.setQuitOnLastWindowClosed(False)
    try:
        shell.start()
    except EngineError as exc:
        QMessageBox.critical(
            None,
            "Switchboard cannot start",
            f"{exc}\n\nThe details are in the log file:\n{log_path}",
        )
        return 1
    except BaseException:
        shell.stop()  # the engine may be running: never leave its thread behind
        raise
    instance.activated.connect(shell.bring_forward)
    _quit_on_signals(shell)
    try:
        with loop:
            loop.run_forever()
    finally:
        shell.stop()
        instance.release()
    return 0
