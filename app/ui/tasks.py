"""Starting coroutines from Qt slots, on the GUI loop (qasync).

asyncio keeps only weak references to tasks, so a task started and forgotten can vanish mid-way;
`start` keeps each task until it ends and hands an unexpected error to `sys.excepthook` (which
shows the crash dialog and logs it) instead of letting it disappear. A task started for a widget
is cancelled when that widget is destroyed, so no task touches a page that is gone.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from PySide6.QtCore import QObject

_running: set[asyncio.Task[Any]] = set()


def start(coroutine: Coroutine[Any, Any, Any], owner: QObject | None = None) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(coroutine)
    _running.add(task)
    task.add_done_callback(_finished)
    if owner is not None:
        owner.destroyed.connect(lambda *_: task.cancel())
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        sys.excepthook(type(error), error, error.__traceback__)


def running() -> int:
    """How many started tasks have not finished (tests wait for zero)."""
    return len(_running)
