"""A calendar's push notifications: Google Calendar tells the receiver that a watched calendar
changed (an empty POST on the channel, checked by its token: the "google-channel" verifier),
and the calendar is synced soon after. The notification says nothing of what changed; the sync
asks the calendar for that with its sync token.

The first message of a channel (`sync`) only says the channel is open; `exists` (and any other
state) means something changed.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.services.calendar_sync import CalendarSyncService
from app.services.inbox import InboxEvent
from app.services.inbox_worker import InboxWorker

CHANNEL_OPENED = "sync"


def register(worker: InboxWorker, calendar_sync: CalendarSyncService) -> None:
    def notification(_session: Session, event: InboxEvent) -> None:
        if event.event_type != CHANNEL_OPENED:
            calendar_sync.notified(event.connection_id)

    worker.register("google-calendar", "*", notification)
