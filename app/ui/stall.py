"""The GUI thread's responsiveness, measured: a 10 ms heartbeat timer and how late it fires.
A beat that comes 40 ms late means the window could not answer for 40 ms."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer

INTERVAL_MS = 10


@dataclass(frozen=True)
class Lateness:
    beats: int
    p50_ms: float
    p99_ms: float
    worst_ms: float

    def as_json(self) -> dict[str, float]:
        return {
            "beats": self.beats,
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "worst_ms": round(self.worst_ms, 2),
        }


class StallMonitor(QObject):
    def __init__(self, interval_ms: int = INTERVAL_MS, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval = interval_ms / 1000
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._beat)
        self._late: list[float] = []
        self._last = 0.0

    def start(self) -> None:
        self._late.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _beat(self) -> None:
        now = time.perf_counter()
        self._late.append(max(0.0, now - self._last - self.interval) * 1000)
        self._last = now

    def lateness(self) -> Lateness:
        late = np.asarray(self._late or [0.0])
        return Lateness(
            len(self._late),
            float(np.percentile(late, 50)),
            float(np.percentile(late, 99)),
            float(late.max()),
        )
