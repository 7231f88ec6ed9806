"""Live metrics: each connection's traffic second by second, as it happens, for the dashboard's
live graphs. Kept in memory only (the database has the request log and its rollups).

Publishes `metrics.live` once a second: {"seconds": [{"t": the second (epoch), "samples":
{connection id: [requests, failures, average ms, 95th percentile ms]}}, ...]} for every second
that ended since the last tick (one event, so coalescing can never drop a second), listing the
connections that had traffic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.providers.http import PROVIDER_FAILURES, REFUSED, RequestRecord
from app.services.events import EventHub

TOPIC = "metrics.live"


@dataclass
class _Second:
    requests: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)


def p95(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


class LiveMetrics:
    def __init__(self, events: EventHub, clock: Callable[[], float] = time.time) -> None:
        self._events = events
        self._clock = clock
        self._seconds: dict[int, dict[int, _Second]] = {}  # second -> connection -> figures

    def add(self, record: RequestRecord) -> None:
        """Count one call attempt in the second it was made (call on the engine loop)."""
        if not record.connection_id or record.error_class in REFUSED:
            return
        second = int(record.at.timestamp())
        figures = self._seconds.setdefault(second, {}).setdefault(record.connection_id, _Second())
        figures.requests += 1
        if record.error_class in PROVIDER_FAILURES:
            figures.failures += 1
        figures.latencies.append(record.latency_ms)

    def tick(self) -> int:
        """Publish every second that has ended; returns how many were published."""
        now = int(self._clock())
        ended = sorted(second for second in self._seconds if second < now)
        seconds = []
        for second in ended:
            by_connection = self._seconds.pop(second)
            samples = {
                connection_id: [
                    figures.requests,
                    figures.failures,
                    sum(figures.latencies) / len(figures.latencies) if figures.latencies else None,
                    p95(figures.latencies),
                ]
                for connection_id, figures in by_connection.items()
            }
            seconds.append({"t": second, "samples": samples})
        if seconds:
            self._events.publish(TOPIC, {"seconds": seconds})
        return len(ended)
