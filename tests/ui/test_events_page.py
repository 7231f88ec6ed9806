"""The Events page: a page of events at a time however many there are, filters, the selected
event in full, replay, and a graph of events a minute."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot
from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.domain.inbox import DEAD, PROCESSED, RECEIVED, SKIPPED
from app.services.inbox import InboxEvent
from app.store.base import utcnow
from app.store.integration import WebhookInboxEntry
from app.ui.main_window import MainWindow
from app.views.events import PAGE_SIZE, SHOWN_CHARACTERS, EventsPage, describe
from tests.ui.conftest import Gui


def add_connection(gui: Gui, name: str) -> int:
    record = gui.call(
        gui.bridge.services.connections.add, "sandbox-payments", name, {}, {"api_key": "k"}
    )
    return int(record.id)


def seed(gui: Gui, connection_id: int, count: int, status: str, kind: str, first: int = 0) -> None:
    """Events written straight into the inbox, already in `status` (so the running worker,
    which takes only new and failed ones, leaves them as they are)."""
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "connection_id": connection_id,
            "provider_event_id": f"evt_{connection_id}_{first + n}",
            "event_type": kind,
            "received_at": now - timedelta(seconds=n),
            "headers": {"webhook-id": f"evt_{first + n}", "content-type": "application/json"},
            "body": json.dumps({"type": kind, "amount": 1200 + n}).encode(),
            "status": status,
            "attempts": 0 if status == RECEIVED else 1,
            "last_error": "RuntimeError: down" if status == DEAD else None,
        }
        for n in range(count)
    ]

    def write(session: Session) -> None:
        session.execute(insert(WebhookInboxEntry), rows)

    gui.call(gui.bridge.services.db.write, write)


def open_events(gui: Gui, window: MainWindow) -> EventsPage:
    page: EventsPage = window.show_page("events")  # type: ignore[assignment]
    gui.run(page.settle())
    return page


def test_without_events_the_page_says_where_they_come_from(gui: Gui, window: MainWindow) -> None:
    page = open_events(gui, window)
    assert page.states.state == "empty"
    gui.save(window, "events-empty")


def test_a_hundred_thousand_events_are_read_a_page_at_a_time(gui: Gui, window: MainWindow) -> None:
    gateway = add_connection(gui, "Gateway")
    seed(gui, gateway, 100_000, PROCESSED, "payment.succeeded")
    page = open_events(gui, window)
    assert page.states.state == "content"
    assert page.model.rowCount() == PAGE_SIZE
    assert page.footer.text() == "Events 1–500 of 100,000, newest first"
    assert not page.newer.isEnabled()
    page.older.click()
    gui.run(page.settle())
    assert page.footer.text() == "Events 501–1,000 of 100,000, newest first"
    assert page.newer.isEnabled()
    gui.save(window, "events")


def test_filters_narrow_the_list_by_connection_status_and_type(
    gui: Gui, window: MainWindow
) -> None:
    cards = add_connection(gui, "Cards")
    bank = add_connection(gui, "Bank")
    seed(gui, cards, 30, PROCESSED, "payment.succeeded")
    seed(gui, cards, 4, DEAD, "payment.failed", first=100)
    seed(gui, bank, 12, SKIPPED, "customer.updated")
    page = open_events(gui, window)
    assert page.total == 46
    page.status.setCurrentIndex(page.status.findData(DEAD))
    gui.run(page.settle())
    assert page.total == 4
    assert {row.event_type for row in page.model.records()} == {"payment.failed"}
    page.status.setCurrentIndex(0)
    page.connection.setCurrentIndex(page.connection.findData(bank))
    gui.run(page.settle())
    assert page.total == 12
    page.connection.setCurrentIndex(0)
    page.kind.setText("PAYMENT")
    gui.run(page.settle())
    assert page.total == 34
    page.kind.setText("50%_")  # typed as is, not as a pattern
    gui.run(page.settle())
    assert page.total == 0
    assert page.footer.text() == "No events match these filters."
    assert page.states.state == "content"


def test_the_selected_event_shows_its_headers_and_pretty_body(gui: Gui, window: MainWindow) -> None:
    seed(gui, add_connection(gui, "Cards"), 3, DEAD, "payment.failed")
    page = open_events(gui, window)
    page.table.selectRow(1)  # newest first: the second newest
    gui.wait_until(lambda: "Provider id: evt_1_1" in page.detail.toPlainText())
    text = page.detail.toPlainText()
    assert "from Cards" in text
    assert "Status:      dead letter after 1 attempt(s)" in text
    assert "Last error:  RuntimeError: down" in text
    assert "  webhook-id: evt_1" in text
    assert '  "amount": 1201' in text  # pretty-printed


def test_dead_letters_are_replayed_with_the_keyboard(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    seed(gui, add_connection(gui, "Cards"), 3, DEAD, "payment.failed")
    page = open_events(gui, window)
    page.open_with("dead")
    gui.run(page.settle())
    page.table.selectAll()
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    gui.wait_until(lambda: "3 event(s) will be processed again" in page.notice.text())
    inbox = gui.bridge.services.inbox
    # Nothing in Switchboard acts on a sandbox gateway's events yet: set aside, once each.
    gui.wait_until(lambda: gui.engine.submit(inbox.count(None, SKIPPED)).result(5) == 3)
    events = gui.call(inbox.recent)
    assert {event.attempts for event in events} == {1}


def test_the_graph_counts_events_a_minute(gui: Gui, window: MainWindow) -> None:
    seed(gui, add_connection(gui, "Cards"), 90, PROCESSED, "payment.succeeded")
    page = open_events(gui, window)
    heights = page.bars.opts["height"]
    assert sum(heights) == 90
    assert len(heights) in (2, 3)  # 90 seconds of events span two or three minutes


def test_a_huge_or_deeply_nested_body_is_shown_cut_short_not_choked_on() -> None:
    event = InboxEvent(
        id=7,
        connection_id=1,
        provider_event_id="evt_7",
        event_type="t",
        received_at=utcnow(),
        status=PROCESSED,
        attempts=1,
        last_error=None,
        processed_at=None,
        headers={},
        body=json.dumps({"items": list(range(200_000))}).encode(),
    )
    text = describe(event, ZoneInfo("UTC"), "Cards")
    assert len(text) < SHOWN_CHARACTERS + 1000
    assert "`switchboard events show 7` prints it all" in text
    deep = replace(event, body=b"[" * 100_000 + b"]" * 100_000)
    assert "[[[[" in describe(deep, ZoneInfo("UTC"), "Cards")
