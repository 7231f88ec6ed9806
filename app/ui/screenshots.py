"""`switchboard screenshots --out DIR`: every page rendered offscreen with the current data."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import qasync

from app.config import Config

SIZE = (1280, 800)
SETTLE_SECONDS = 0.15


def _connect_dialog(window: Any, out_dir: Path) -> Path:
    """The "Connect a provider" dialog as it opens from the dashboard, its first kind chosen."""
    from PySide6.QtWidgets import QApplication

    from app.ui.connect_dialog import ConnectDialog

    dashboard = window.show_page("dashboard")
    connections = dashboard.bridge.services.connections

    async def never(_draft: Any) -> Any:
        raise AssertionError("screenshots save nothing")

    dialog = ConnectDialog(connections.kinds(), never, never, None, dashboard)
    dialog.name.setText("Card payments")
    dialog.show()
    QApplication.processEvents()
    path = out_dir / "connect-dialog.png"
    if not dialog.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    dialog.close()
    dialog.deleteLater()
    return path


def render_all(config: Config, out_dir: Path) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.ui.application import make_application
    from app.ui.shell import Shell

    out_dir.mkdir(parents=True, exist_ok=True)
    app = make_application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    shell = Shell(app, config, use_tray=False, interactive=False, sign_in=False)
    written: list[Path] = []
    try:
        window = shell.start()
        window.resize(*SIZE)
        for page in window.pages:
            window.show_page(page.key)
            loop.run_until_complete(page.settle())
            # What follows a load by a moment (the dashboard's second plot) is on screen too.
            loop.run_until_complete(asyncio.sleep(SETTLE_SECONDS))
            QApplication.processEvents()
            path = out_dir / f"{page.key}.png"
            if not window.grab().save(str(path)):
                raise OSError(f"could not write {path}")
            written.append(path)
        written.append(_connect_dialog(window, out_dir))
    finally:
        shell.stop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    return written
