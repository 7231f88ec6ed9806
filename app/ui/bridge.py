"""The one crossing between the engine thread and the GUI thread.

Views never touch the engine's services directly: they `await bridge.call(fn, ...)`, which runs
the coroutine on the engine loop and resumes on the GUI loop (qasync), and they listen to
`bridge.event`, which re-emits the engine's coalesced events on the GUI thread.

Signals:
    event(str, object): an engine event: its topic and payload dict (GUI thread).
    engine_state(str): the engine's state changed ("running", "paused", ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Qt, Signal

from app.engine import TOPIC_STATE, Engine
from app.services import Services
from app.services.events import EngineEvent

T = TypeVar("T")


class EngineBridge(QObject):
    event = Signal(str, object)
    engine_state = Signal(str)
    _arrived = Signal(object)  # emitted on the engine thread, delivered queued on the GUI thread

    def __init__(self, engine: Engine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine = engine
        self._arrived.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe = engine.events.subscribe(self._arrived.emit)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def services(self) -> Services:
        """For reading plain attributes (config, database name). Call services through `call`."""
        return self._engine.services

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the engine loop and await its result on the GUI loop."""
        future = self._engine.submit(_invoke(fn, args, kwargs))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop listening to the engine (before it stops)."""
        self._unsubscribe()

    def _dispatch(self, event: EngineEvent) -> None:
        if event.topic == TOPIC_STATE:
            self.engine_state.emit(str(event.payload.get("state", "")))
        self.event.emit(event.topic, dict(event.payload))


async def _invoke(
    fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    return await fn(*args, **kwargs)
