"""`switchboard screenshots --out DIR`: every page rendered offscreen with the current data."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import qasync

from app.config import Config

SIZE = (1280, 800)


def render_all(config: Config, out_dir: Path) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.ui.application import make_application
    from app.ui.shell import Shell

    out_dir.mkdir(parents=True, exist_ok=True)
    app = make_application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    shell = Shell(app, config, use_tray=False, interactive=False)
    written: list[Path] = []
    try:
        window = shell.start()
        window.resize(*SIZE)
        for page in window.pages:
            window.show_page(page.key)
            loop.run_until_complete(page.settle())
            QApplication.processEvents()
            path = out_dir / f"{page.key}.png"
            if not window.grab().save(str(path)):
                raise OSError(f"could not write {path}")
            written.append(path)
    finally:
        shell.stop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    return written
