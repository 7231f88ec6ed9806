"""Live metrics count each second's calls per connection and publish every ended second."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from app.providers.http import RequestRecord
from app.services.events import EventHub
from app.services.live import LiveMetrics, p95


def call(connection: int, second: int, ms: float, error: str | None = None) -> RequestRecord:
    at = datetime.fromtimestamp(second + 0.5, UTC)
    return RequestRecord(connection, "op", "GET", "https://x", 200, ms, error, 1, at)


async def test_each_ended_second_is_published_once_with_its_figures() -> None:
    hub = EventHub()
    hub.bind(asyncio.get_running_loop())
    published: list[dict[str, Any]] = []
    hub.subscribe(lambda event: published.append(dict(event.payload)))
    now = [1000.2]
    live = LiveMetrics(hub, clock=lambda: now[0])
    for ms in (10, 20, 30, 400):
        live.add(call(1, 999, ms))
    live.add(call(1, 999, 50, "http_5xx"))
    live.add(call(1, 999, 0, "breaker_open"))  # refused: never left, not a request
    live.add(call(2, 998, 5, "http_4xx"))  # about our request: not a provider failure
    live.add(call(1, 1000, 7))  # this second has not ended
    assert live.tick() == 2
    assert published == [
        {
            "seconds": [
                {"t": 998, "samples": {2: [1, 0, 5.0, 5.0]}},
                {"t": 999, "samples": {1: [5, 1, 102.0, 400.0]}},
            ]
        }
    ]
    now[0] = 1001.1
    live.tick()
    await asyncio.sleep(0.06)  # events on one topic reach a listener at most every 50 ms
    assert published[-1] == {"seconds": [{"t": 1000, "samples": {1: [1, 0, 7.0, 7.0]}}]}
    assert live.tick() == 0


def test_the_95th_percentile_is_a_real_observed_latency() -> None:
    assert p95([]) is None
    assert p95(list(range(1, 101))) == 95
    assert p95([3.0]) == 3.0
