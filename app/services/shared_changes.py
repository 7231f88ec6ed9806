"""Other computers' (and programs') changes to the shared database, heard live.

The services publish what they change on the engine's event hub, and the window's pages listen.
A change made elsewhere — another office computer's engine on the same PostgreSQL database, or a
command run beside the app on a SQLite file — reaches this computer's pages too:

- PostgreSQL: every engine sends the data topics its hub publishes as `NOTIFY switchboard`
  (the topic, the payload when small, and who sent it), and listens on that channel on a
  connection of its own; what another engine sent is published here with `remote` set. The
  server delivers a notification only once its transaction committed, to everyone listening.
- SQLite: there is nobody to notify, so every second the connection this process writes with is
  asked `PRAGMA data_version`, which changes only when another connection committed (and this
  process writes through that one connection only): another program wrote, and every data topic
  is published (`remote` set), so each page reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from app.services.events import EngineEvent, EventHub
from app.services.leadership import conninfo, engine_name
from app.store.database import Database

log = logging.getLogger("switchboard.shared_changes")

CHANNEL = "switchboard"
POLL_SECONDS = 1.0
PAYLOAD_LIMIT = 7000  # NOTIFY carries at most 8000 bytes
# What the services publish about data; the others (live metrics, the engine's state, tasks in
# this window) are about this computer only.
DATA_TOPICS = (
    "alerts",
    "approvals",
    "audit",
    "automations",
    "billing",
    "calendar_sync",
    "connections",
    "inbox",
    "messages",
    "outbound_webhooks",
    "payments",
    "reconciliation",
    "routing.rules",
    "school.guardians",
    "school.invoices",
    "school.lessons",
    "school.rooms",
    "school.students",
    "school.teachers",
    "templates",
    "users",
)


def is_data_topic(topic: str) -> bool:
    return topic in DATA_TOPICS or topic.startswith("settings.")


class SharedChanges:
    """Sends this engine's changes to the others and publishes theirs here, until `stop()`."""

    def __init__(self, db: Database, hub: EventHub, *, name: str | None = None) -> None:
        self._db = db
        self._hub = hub
        self.name = name or engine_name()
        self._stopping = threading.Event()
        self._outgoing: list[EngineEvent] = []
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin (on the engine's loop)."""
        if not self._db.is_postgres:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="changes")
            return
        self._unsubscribe = self._hub.subscribe(self._heard)
        for target, role in ((self._listen, "listen"), (self._send, "notify")):
            thread = threading.Thread(target=target, name=f"switchboard-shared-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)

    async def close(self) -> None:
        """Stop (on the engine's loop)."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await asyncio.to_thread(self._stop_threads)

    def _stop_threads(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(10)
        self._threads.clear()

    # --- this engine's changes ------------------------------------------------------------------

    def _heard(self, event: EngineEvent) -> None:
        if not is_data_topic(event.topic) or "remote" in event.payload:
            return
        with self._wake:
            self._outgoing.append(event)
            self._wake.notify()

    def _send(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._connect() as connection:
                    while not self._stopping.is_set():
                        with self._wake:
                            while not self._outgoing and not self._stopping.is_set():
                                self._wake.wait(1.0)
                            batch, self._outgoing = self._outgoing, []
                        for event in batch:
                            connection.execute(
                                "SELECT pg_notify(%s, %s)", (CHANNEL, self._message(event))
                            )
            except psycopg.Error as exc:
                log.warning("could not tell other computers of a change: %s", type(exc).__name__)
                self._stopping.wait(POLL_SECONDS)

    def _message(self, event: EngineEvent) -> str:
        message: dict[str, Any] = {"topic": event.topic, "from": self.name}
        try:
            payload = json.dumps(dict(event.payload), default=str)
        except (TypeError, ValueError):
            payload = "{}"
        message["payload"] = json.loads(payload) if len(payload) < PAYLOAD_LIMIT else {}
        return json.dumps(message)

    # --- the others' changes --------------------------------------------------------------------

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._connect() as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    while not self._stopping.is_set():
                        for notice in connection.notifies(timeout=POLL_SECONDS):
                            self._arrived(notice.payload)
            except psycopg.Error as exc:
                log.warning("not hearing other computers' changes: %s", type(exc).__name__)
                self._stopping.wait(POLL_SECONDS)

    def _arrived(self, text: str) -> None:
        try:
            message = json.loads(text)
            topic, sender = str(message["topic"]), str(message["from"])
            payload = dict(message.get("payload") or {})
        except (ValueError, KeyError, TypeError):
            return
        if sender != self.name and is_data_topic(topic):
            self._hub.publish(topic, {**payload, "remote": sender})

    async def _poll(self) -> None:
        last: tuple[int, int] | None = None
        while True:
            try:
                now = await self._db.data_version()
            except Exception as exc:
                log.warning("not hearing other programs' changes: %s", type(exc).__name__)
                await asyncio.sleep(POLL_SECONDS)
                continue
            # The same connection, another version: another program committed meanwhile.
            if last is not None and now[0] == last[0] and now[1] != last[1]:
                for topic in DATA_TOPICS:
                    self._hub.publish(topic, {"remote": "another program"})
            last = now
            await asyncio.sleep(POLL_SECONDS)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            conninfo(self._db.url),
            autocommit=True,
            connect_timeout=5,
            application_name=f"Switchboard changes {self.name}"[:63],
        )
