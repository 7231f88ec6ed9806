"""A QR code drawn as a pixmap (for enrolling an authenticator app): the qrcode library makes
the matrix, Qt paints it, so no imaging library is needed."""

from __future__ import annotations

import qrcode
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QPainter, QPixmap


def qr_pixmap(text: str, size: int = 220) -> QPixmap:
    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text)
    code.make(fit=True)
    matrix = code.get_matrix()
    cells = len(matrix)
    cell = max(1, size // cells)
    pixmap = QPixmap(cell * cells, cell * cells)
    pixmap.fill(QColor("white"))  # dark on light whatever the theme: cameras need contrast
    painter = QPainter(pixmap)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor("black"))
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                painter.drawRect(QRect(x * cell, y * cell, cell, cell))
    painter.end()
    return pixmap
