"""PySide6-Essentials 6.12.0 with pyqtgraph 0.14.0 dies ("Fatal Python error: none_dealloc")
after a few hundred PlotDataItem.setData calls in a live plot; 6.11.x is clean. pyproject pins
PySide6 below 6.12: this test is what must pass before that pin is lifted.

It runs in a child process, so a fatal crash fails this test instead of killing the suite.
Checked on 2026-11-23: the same script dies with "none_dealloc" under PySide6-Essentials 6.12.0
and completes every frame under 6.11.3.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FRAMES = 600
CURVES = 5

SCRIPT = f"""
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

app = QApplication([])
plot = pg.PlotWidget()
curves = [plot.plot(pen=pg.mkPen(width=1)) for _ in range({CURVES})]
plot.show()
x = np.arange(900, dtype=np.float64)
frames = 0

def tick():
    global frames
    for number, curve in enumerate(curves):
        curve.setData(x, np.sin(x / 50 + frames / 10 + number))
    app.processEvents()
    frames += 1
    if frames >= {FRAMES}:
        app.quit()

timer = QTimer()
timer.timeout.connect(tick)
timer.start(0)
app.exec()
print("frames", frames)
"""


@pytest.mark.slow
def test_a_live_plot_survives_thousands_of_set_data_calls() -> None:
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        env=environment,
        check=False,
    )
    assert "Fatal Python error" not in completed.stderr, completed.stderr[-2000:]
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["frames", str(FRAMES)]
