"""Icons from the app's SVG resources, tinted to the theme's text colour."""

from __future__ import annotations

from functools import cache
from importlib import resources

from PySide6.QtCore import QByteArray, QSize, Qt
from PySide6.QtGui import QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

SIZES = (16, 20, 24, 32, 48, 64, 128, 256)


@cache
def _svg(name: str) -> str:
    return (resources.files("app.resources") / "icons" / f"{name}.svg").read_text("utf-8")


def icon(name: str, color: str = "#1f2328") -> QIcon:
    """The named icon drawn in `color` (its `currentColor`), crisp at every common size."""
    renderer = QSvgRenderer(QByteArray(_svg(name).replace("currentColor", color).encode()))
    result = QIcon()
    for size in SIZES:
        pixmap = QPixmap(QSize(size, size))
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        renderer.render(painter)
        painter.end()
        result.addPixmap(pixmap)
    return result


def app_icon() -> QIcon:
    return icon("switchboard")
