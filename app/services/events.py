"""The engine's event stream: services publish what changed, subscribers (the Qt bridge, the
CLI) hear it. Events are coalesced per topic so a flood of changes reaches a subscriber at most
about twenty times a second; they are notifications, not a durable log (the database is that).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("switchboard.events")

Subscriber = Callable[["EngineEvent"], None]


@dataclass(frozen=True)
class EngineEvent:
    """Something changed. `count` is how many publications this delivery stands for."""

    topic: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    count: int = 1


class EventHub:
    """Fan-out with per-topic coalescing, run on one asyncio loop; `publish` is thread-safe."""

    def __init__(self, min_interval: float = 0.05) -> None:
        self.min_interval = min_interval
        self._subscribers: list[Subscriber] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_sent: dict[str, float] = {}
        self._pending: dict[str, EngineEvent] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, topic: str, payload: Mapping[str, Any] | None = None) -> None:
        event = EngineEvent(topic, dict(payload or {}))
        loop = self._loop
        if loop is None or loop.is_closed():
            self._deliver(event)  # no loop (a one-shot CLI command): deliver at once
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._accept(event)
        else:
            loop.call_soon_threadsafe(self._accept, event)

    def _accept(self, event: EngineEvent) -> None:
        pending = self._pending.get(event.topic)
        if pending is not None:
            self._pending[event.topic] = EngineEvent(event.topic, event.payload, pending.count + 1)
            return
        wait = self._last_sent.get(event.topic, -1e9) + self.min_interval - time.monotonic()
        if wait <= 0:
            self._deliver(event)
            return
        self._pending[event.topic] = event
        assert self._loop is not None
        self._loop.call_later(wait, self._flush, event.topic)

    def _flush(self, topic: str) -> None:
        event = self._pending.pop(topic, None)
        if event is not None:
            self._deliver(event)

    def flush_all(self) -> None:
        """Deliver whatever is held back (at shutdown, so a last change is not swallowed)."""
        for topic in list(self._pending):
            self._flush(topic)

    def _deliver(self, event: EngineEvent) -> None:
        self._last_sent[event.topic] = time.monotonic()
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed", extra={"topic": event.topic})
