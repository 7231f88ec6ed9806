"""The one crossing between the engine thread and the GUI thread.

Views never touch the engine's services directly: they `await bridge.call(fn, ...)`, which runs
the coroutine on the engine loop and resumes on the GUI loop (qasync), and they listen to
`bridge.event`, which re-emits the engine's coalesced events on the GUI thread.

Each call acts as the person signed in to the window (`principal`), so the services' permission
checks and the audit trail see them, not the service user the engine's own work runs as.

Signals:
    event(str, object): an engine event: its topic and payload dict (GUI thread).
    engine_state(str): the engine's state changed ("running", "paused", ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Qt, Signal

from app.domain.access import Principal
from app.engine import TOPIC_STATE, Engine
from app.services import Services
from app.services.access import acting_as
from app.services.events import EngineEvent

T = TypeVar("T")


class EngineBridge(QObject):
    event = Signal(str, object)
    engine_state = Signal(str)
    _arrived = Signal(object)  # emitted on the engine thread, delivered queued on the GUI thread

    def __init__(self, engine: Engine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine = engine
        self.principal: Principal | None = None  # who signed in; None: the service user
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
        return await self.call_as(self.principal, fn, *args, **kwargs)

    async def call_as(
        self,
        principal: Principal | None,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """`call`, acting as `principal` (a second person approving something at this PC)."""
        future = self._engine.submit(_invoke(principal, fn, args, kwargs))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop listening to the engine (before it stops)."""
        self._unsubscribe()

    def _dispatch(self, event: EngineEvent) -> None:
        if event.topic == TOPIC_STATE:
            self.engine_state.emit(str(event.payload.get("state", "")))
        self.event.emit(event.topic, dict(event.payload))


async def _invoke(
    principal: Principal | None,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    if principal is None:
        return await fn(*args, **kwargs)
    with acting_as(principal):
        return await fn(*args, **kwargs)
