"""The Audit trail page: entries newest first a page at a time, filters that narrow them, the
chosen entry before and after, new entries as they are made, a check that names a tampered
entry, and an export to CSV."""

from __future__ import annotations

import csv
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QFileDialog
from pytestqt.qtbot import QtBot
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.domain.access import Principal, Role
from app.services import access
from app.services.audit import ANCHOR, GENESIS, PAGE_SIZE, entry_hash, record
from app.services.settings import put_state
from app.store.audit import AuditRow
from app.store.base import utcnow
from app.ui import tasks
from app.ui.theme import ThemeController
from app.views.audit import AuditPage, action_words, change_words
from tests.ui.conftest import Gui

SIZE = (1280, 760)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "audit.png"
T = TypeVar("T")
COMPUTERS = {  # who works where, in the screenshot's office
    "Ms Moyo": "OFFICE-PC",
    "Mrs Chikwanha": "OFFICE-PC",
    "Mr Banda": "BURSAR-LAPTOP",
    "engine": "school-server",
    "service": "school-server",
}
FAST = {"approval_rate": "1", "error_rate": "0", "latency_ms": "1", "latency_p95_ms": "2"}


@pytest.fixture
def light(qapp: QApplication) -> Iterator[None]:
    """The light theme, as the screenshots in the docs show the app; put back afterwards."""
    style, palette = qapp.styleSheet(), qapp.palette()
    ThemeController(qapp, "light")
    yield
    qapp.setStyleSheet(style)
    qapp.setPalette(palette)


def opened(gui: Gui, qtbot: QtBot) -> AuditPage:
    page = AuditPage(gui.bridge)
    qtbot.addWidget(page)
    page.resize(*SIZE)
    page.show()
    gui.run(page.settle())
    return page


async def acting(who: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`fn(*args)` done by `who` (on the engine's loop, where the call runs)."""
    with access.acting_as(Principal(who, Role.ADMINISTRATOR)):
        return await fn(*args)


def add_connection(gui: Gui, name: str, actor: str = "Ms Moyo") -> int:
    connections = gui.bridge.services.connections
    added = gui.call(
        acting, actor, connections.add, "sandbox-payments", name, FAST, {"api_key": "k"}
    )
    return int(added.id)


Entry = tuple[str, str, str, str, dict[str, Any] | None, dict[str, Any] | None]


def write(gui: Gui, entries: list[Entry], hours_apart: float = 0) -> None:
    """Entries written as the services write them (`record`); with `hours_apart`, the last
    one now and each before it that much earlier (the chain then no longer verifies)."""

    def add(session: Session) -> None:
        for actor, action, kind, record_id, before, after in entries:
            record(session, actor, action, kind, record_id, before, after)
        if hours_apart:
            rows = session.scalars(select(AuditRow).order_by(AuditRow.seq.desc()))
            for back, row in enumerate(rows):
                row.at = utcnow() - timedelta(hours=hours_apart * back)

    gui.call(gui.bridge.services.db.write, add)


def shown(page: AuditPage) -> list[tuple[str, str, str]]:
    """(who, what, record) of each row as the table shows them."""
    model = page.table.model()
    return [
        (
            model.index(row, 1).data(),
            model.index(row, 3).data(),
            model.index(row, 4).data(),
        )
        for row in range(model.rowCount())
    ]


def test_without_entries_the_page_says_what_the_trail_is(gui: Gui, qtbot: QtBot) -> None:
    page = opened(gui, qtbot)
    assert page.states.state == "empty"


def test_entries_are_listed_newest_first_and_the_filters_narrow_them(
    gui: Gui, qtbot: QtBot
) -> None:
    connections = gui.bridge.services.connections
    cards = add_connection(gui, "Card payments", actor="Ms Moyo")
    add_connection(gui, "Mobile money", actor="Mr Banda")
    gui.call(acting, "Ms Moyo", connections.update, cards, "Card payments (EUR)", FAST, {})
    gui.call(acting, "engine", connections.set_paused, cards, True)
    page = opened(gui, qtbot)
    assert page.states.state == "content"
    assert shown(page) == [
        ("engine", "Connection paused", f"Connection {cards}"),
        ("Ms Moyo", "Connection changed", f"Connection {cards}"),
        ("Mr Banda", "Connection added", "Connection 2"),
        ("Ms Moyo", "Connection added", f"Connection {cards}"),
    ]
    assert page.footer.text() == "Entries 1–4 of 4, newest first"
    # One line says what changed; what stayed (the kind) is left to the detail pane.
    assert change_words(page.model.record(1)) == "name: Card payments → Card payments (EUR)"
    # The newest entry is chosen; its before and after are beside the list.
    assert "Connection paused" in page.detail.toPlainText()

    page.actor.setCurrentIndex(page.actor.findData("Ms Moyo"))
    gui.wait_until(lambda: len(shown(page)) == 2)
    assert [what for _, what, _ in shown(page)] == ["Connection changed", "Connection added"]
    page.action.setCurrentIndex(page.action.findData("connection.changed"))
    gui.wait_until(lambda: len(shown(page)) == 1)
    page.actor.setCurrentIndex(0)
    page.action.setCurrentIndex(page.action.findData("connection"))  # the whole family
    gui.wait_until(lambda: len(shown(page)) == 4)

    qtbot.keyClick(page, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert page.search.hasFocus()
    qtbot.keyClicks(page.search, "mobile")
    gui.wait_until(lambda: shown(page) == [("Mr Banda", "Connection added", "Connection 2")])
    page.search.clear()
    page.record_id.setText(str(cards))
    gui.wait_until(lambda: len(shown(page)) == 3)
    page.record_id.setText("999")
    gui.wait_until(lambda: page.footer.text() == "No entries match these filters.")
    assert page.states.state == "content"  # the filters stay, to be changed back


def test_a_change_made_elsewhere_in_the_app_appears_at_once(gui: Gui, qtbot: QtBot) -> None:
    add_connection(gui, "Card payments")
    page = opened(gui, qtbot)
    assert len(shown(page)) == 1
    add_connection(gui, "Mobile money", actor="Mr Banda")  # publishes "audit" once committed
    gui.wait_until(lambda: len(shown(page)) == 2)
    assert shown(page)[0] == ("Mr Banda", "Connection added", "Connection 2")


def test_a_long_trail_is_read_a_page_at_a_time(gui: Gui, qtbot: QtBot) -> None:
    write(
        gui,
        [
            ("office", "connection.changed", "connection", "1", {"n": n}, {"n": n + 1})
            for n in range(PAGE_SIZE + 50)
        ],
    )
    page = opened(gui, qtbot)
    total = PAGE_SIZE + 50
    assert page.model.rowCount() == PAGE_SIZE
    assert page.footer.text() == f"Entries 1–{PAGE_SIZE} of {total}, newest first"
    assert page.model.record(0).seq == total
    assert not page.newer.isEnabled()
    page.older.click()
    gui.run(page.settle())
    assert page.footer.text() == f"Entries {PAGE_SIZE + 1}–{total} of {total}, newest first"
    assert [entry.seq for entry in page.model.records()] == list(range(50, 0, -1))
    assert not page.older.isEnabled()
    page.newer.click()
    gui.run(page.settle())
    assert page.model.record(0).seq == total


def test_verifying_names_a_tampered_entry_and_shows_it(gui: Gui, qtbot: QtBot) -> None:
    for name in ("Card payments", "Mobile money", "Bank transfers"):
        add_connection(gui, name)
    page = opened(gui, qtbot)
    intact = gui.run(page.verify_trail())
    assert intact.ok
    assert page.verdict.text() == (
        "✓ The trail is intact: all 3 entries are as they were written, none removed or added."
    )
    assert not page.show_bad.isVisible()

    def tamper(session: Session) -> None:
        session.execute(
            text(
                "UPDATE audit_trail SET summary = json_set(summary, '$.after.name', 'Forged') "
                "WHERE seq = 2"
            )
        )

    gui.call(gui.bridge.services.db.write, tamper)
    page.verify_button.click()
    gui.wait_until(lambda: page.verdict.text().startswith("✗"))
    assert page.verdict.text() == (
        "✗ Entry 2 is not as Switchboard wrote it: its contents were changed after it was "
        "written. The database was changed outside Switchboard; keep a copy of it and tell "
        "your administrator."
    )
    assert page.show_bad.isVisible()
    assert page.show_bad.text() == "Show entry 2"
    page.show_bad.click()
    gui.run(page.settle())
    assert page.table.current_record().seq == 2
    assert page.footer.text() == "Entries numbered 2 to 1, of 3, newest first"
    page.newer.click()  # back to the newest entries
    gui.run(page.settle())
    assert page.footer.text() == "Entries 1–3 of 3, newest first"
    assert "Forged" in page.detail.toPlainText()


def test_export_writes_what_the_filters_show_to_a_csv_file(
    gui: Gui, qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cards = add_connection(gui, "Card payments", actor="Ms Moyo")
    add_connection(gui, "Mobile money", actor="Mr Banda")
    gui.call(acting, "Ms Moyo", gui.bridge.services.connections.remove, cards)
    page = opened(gui, qtbot)
    page.actor.setCurrentIndex(page.actor.findData("Ms Moyo"))
    gui.wait_until(lambda: len(shown(page)) == 2)
    path = tmp_path / "trail.csv"
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *_args, **_kw: (str(path), "CSV files (*.csv)")
    )
    page.export_button.click()
    gui.wait_until(lambda: page.notice.text() == "Saved 2 entries to trail.csv.")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["seq"], row["actor"], row["action"]) for row in rows] == [
        ("1", "Ms Moyo", "connection.added"),
        ("3", "Ms Moyo", "connection.removed"),
    ]
    # The export is itself in the trail; the page shows it, as it shows every new entry.
    page.actor.setCurrentIndex(0)
    gui.wait_until(lambda: len(shown(page)) == 4)
    assert shown(page)[0][1] == action_words("audit.exported") == "Audit trail exported"


def test_an_export_to_a_folder_that_is_gone_says_so_and_writes_nothing(
    gui: Gui, qtbot: QtBot, tmp_path: Path
) -> None:
    add_connection(gui, "Card payments")
    page = opened(gui, qtbot)
    exporting = tasks.start(page.export_csv(tmp_path / "gone" / "trail.csv"))
    gui.answer(page, "OK")
    assert gui.run(exporting) is None
    assert len(gui.call(gui.bridge.services.audit.entries)) == 1


def test_screenshot_of_a_week_in_the_office(gui: Gui, qtbot: QtBot, light: None) -> None:
    """docs/screenshots/audit.png: a week of changes in a music school's office, the trail
    checked, a change chosen to see it before and after."""
    gui.call(gui.bridge.services.settings.set, "school.timezone", "Africa/Harare")
    stripe = {"kind": "stripe", "name": "Card payments (Stripe)"}
    write(
        gui,
        [
            (
                "Ms Moyo",
                "connection.added",
                "connection",
                "1",
                None,
                {
                    **stripe,
                    "settings": {"currency": "USD", "statement_descriptor": "HARARE MUSIC"},
                    "in_credential_store": ["api_key", "webhook_secret"],
                },
            ),
            (
                "Ms Moyo",
                "connection.added",
                "connection",
                "2",
                None,
                {
                    "kind": "paynow",
                    "name": "EcoCash (Paynow)",
                    "settings": {"integration_id": "18204"},
                    "in_credential_store": ["integration_key"],
                },
            ),
            (
                "Mr Banda",
                "connection.added",
                "connection",
                "3",
                None,
                {
                    "kind": "twilio",
                    "name": "SMS to parents",
                    "settings": {"from": "+263 77 210 4455"},
                    "in_credential_store": ["auth_token"],
                },
            ),
            (
                "Mr Banda",
                "refund.requested",
                "refund",
                "14",
                None,
                {
                    "payment": 212,
                    "amount_minor": 4500,
                    "currency": "USD",
                    "reason": "Lesson cancelled (teacher ill)",
                },
            ),
            ("engine", "connection.paused", "connection", "3", {"paused": False}, {"paused": True}),
            (
                "Ms Moyo",
                "connection.resumed",
                "connection",
                "3",
                {"paused": True},
                {"paused": False},
            ),
            (
                "Ms Moyo",
                "connection.changed",
                "connection",
                "1",
                {
                    "name": "Card payments (Stripe)",
                    "settings": {"statement_descriptor": "HARARE MUSIC"},
                },
                {"name": "Card payments", "settings": {"statement_descriptor": "HMS LESSONS"}},
            ),
            (
                "Mr Banda",
                "refund.requested",
                "refund",
                "15",
                None,
                {
                    "payment": 236,
                    "amount_minor": 12000,
                    "currency": "USD",
                    "reason": "Term fees paid twice",
                },
            ),
            (
                "Mrs Chikwanha",
                "connection.changed",
                "connection",
                "2",
                {"settings": {"result_url": "https://old.example.org/paynow"}},
                {"settings": {"result_url": "https://pay.hararemusic.ac.zw/paynow"}},
            ),
            (
                "Mrs Chikwanha",
                "connection.removed",
                "connection",
                "4",
                {"kind": "sendgrid", "name": "Old newsletter e-mail"},
                None,
            ),
            (
                "Mr Banda",
                "audit.exported",
                "export",
                "audit-trail-november.csv",
                None,
                {
                    "file": "audit-trail-november.csv",
                    "entries": 412,
                    "filter": {"since": "2026-11-01T00:00:00+02:00"},
                },
            ),
        ],
        hours_apart=9,
    )

    def rechain(session: Session) -> None:
        """The entries were re-dated for the picture: chain them as they now are."""
        previous = GENESIS
        last = None
        for row in session.scalars(select(AuditRow).order_by(AuditRow.seq)):
            row.machine = COMPUTERS.get(row.actor, row.machine)
            row.prev_hash = previous
            row.hash = entry_hash(row)
            previous, last = row.hash, row
        assert last is not None
        put_state(session, ANCHOR, {"seq": last.seq, "id": last.id, "hash": last.hash})

    gui.call(gui.bridge.services.db.write, rechain)
    page = opened(gui, qtbot)
    assert gui.run(page.verify_trail()).ok
    changed = next(
        e for e in page.model.records() if e.action == "connection.changed" and e.record_id == "1"
    )
    assert page.table.select_key(changed.id)
    assert "HMS LESSONS" in page.detail.toPlainText()
    QApplication.processEvents()
    gui.save(page, "audit")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT))
