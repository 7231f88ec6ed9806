"""`python -m app.ui.qt_probe`: start Qt as the desktop app would and print what it found, as
JSON. Doctor runs it in a child process because Qt aborts the whole process when it cannot
reach a display."""

from __future__ import annotations

import json
import sys

from PySide6 import __version__ as pyside_version
from PySide6.QtWidgets import QApplication, QSystemTrayIcon


def main() -> None:
    app = QApplication(sys.argv[:1])
    print(
        json.dumps(
            {
                "platform": app.platformName(),
                "pyside": pyside_version,
                "tray": QSystemTrayIcon.isSystemTrayAvailable(),
            }
        )
    )


if __name__ == "__main__":
    main()
