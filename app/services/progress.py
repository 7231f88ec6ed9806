"""How far a long job has got, and a way to ask it to stop.

The job (on a database or worker thread) advances the counts and checks for cancellation between
items; whoever watches (the GUI's progress dialog, the CLI) reads the counts and may cancel. A
cancelled job raises `Cancelled` and, inside a transaction, changes nothing.
"""

from __future__ import annotations

import threading

from app.domain.errors import SwitchboardError


class Cancelled(SwitchboardError):
    """The job stopped because someone asked it to; nothing it had started was kept."""


class Progress:
    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self._stop = threading.Event()

    def start(self, total: int) -> None:
        self.total = total
        self.done = 0

    def advance(self, count: int = 1) -> None:
        self.done += count

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Raise Cancelled if the job was asked to stop."""
        if self._stop.is_set():
            raise Cancelled("Stopped as you asked; nothing was changed.")
