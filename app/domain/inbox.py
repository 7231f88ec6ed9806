"""Where an event a provider sent stands in the inbox."""

from __future__ import annotations

RECEIVED = "received"  # on disk and acknowledged; not processed yet
PROCESSED = "processed"
SKIPPED = "skipped"  # nothing in Switchboard acts on this kind of event
FAILED = "failed"  # tried and will be tried again
DEAD = "dead"  # gave up after the last attempt: needs a person
STATUSES = (RECEIVED, PROCESSED, SKIPPED, FAILED, DEAD)
