"""The "Move to a shared database" assistant, opened from Settings: it tests the connection,
copies and verifies with a progress bar and Cancel, shows the verification table, and makes the
shared database this computer's from the next start (the password in the credential store, not
in the file); a refused or cancelled move says why and copies nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot
from sqlalchemy import create_engine, text

from app.config import DATABASE_CHOICE_FILE
from app.domain.access import Principal, Role
from app.services.database_move import move
from app.store.database import postgres_url
from app.ui import tasks
from app.ui.database_move import DatabaseMoveDialog
from app.views.settings import SettingsPage
from tests.support.databases import PostgresServer
from tests.support.memory_keyring import MemoryKeyring
from tests.ui.conftest import Gui

FAST = {"latency_ms": 1, "latency_p95_ms": 2, "error_rate": 0}


@pytest.fixture
def target(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty PostgreSQL database (the move creates its tables)."""
    name = postgres_server.create()
    yield postgres_server.url_of(name)
    postgres_server.drop(name)


def _dialog(gui: Gui, qtbot: QtBot, target: str) -> DatabaseMoveDialog:
    gui.call(
        gui.bridge.services.connections.add, "sandbox-payments", "Card payments", FAST,
        {"api_key": "sk_1"},
    )  # fmt: skip
    dialog = DatabaseMoveDialog(gui.bridge)
    qtbot.addWidget(dialog)
    parts = urlsplit(target)
    dialog.server.setText(parts.hostname or "")
    dialog.port.setValue(parts.port or 5432)
    dialog.database.setText(parts.path.lstrip("/"))
    dialog.user.setText(parts.username or "")
    dialog.password.setText(parts.password or "")
    dialog.resize(640, 640)
    dialog.show()
    return dialog


def _connections_in(url: str) -> int:
    engine = create_engine(postgres_url(url))
    try:
        with engine.connect() as connection:
            return int(connection.scalar(text("SELECT count(*) FROM provider_connections")) or 0)
    finally:
        engine.dispose()


def test_settings_offers_the_move(gui: Gui, qtbot: QtBot) -> None:
    page = SettingsPage(gui.bridge)
    qtbot.addWidget(page)
    page.show()
    gui.run(page.settle())
    assert page.move_button.text() == "Move to a shared database…"
    page.move_button.click()
    dialog = gui.find(DatabaseMoveDialog)
    assert dialog.windowTitle() == "Move to a shared database"
    assert dialog.port.value() == 5432
    assert dialog.password.echoMode() == dialog.password.EchoMode.Password


def test_the_dialog_tests_copies_verifies_and_makes_the_choice(
    gui: Gui, qtbot: QtBot, target: str, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    dialog = _dialog(gui, qtbot, target)
    found = gui.run(dialog.test_connection())
    assert found is not None
    assert found.empty
    assert "the database is empty" in dialog.status.text()

    report = gui.run(dialog.copy_and_verify(), timeout=60)
    assert report is not None
    assert report.verified
    assert dialog.status.text().startswith(f"Verified: {report.rows:,} rows copied")
    assert dialog.table.isVisibleTo(dialog)
    shown = {line.what: line for line in dialog.model.records()}
    assert shown["provider_connections"].here == shown["provider_connections"].shared == 1
    assert all(line.ok for line in shown.values())
    assert not dialog.bar.isVisibleTo(dialog)
    assert dialog.use_button.isEnabled()
    shot = gui.save(dialog, "database_move_verified")
    assert shot.stat().st_size > 0
    Path("/tmp/database_move_verified.png").write_bytes(shot.read_bytes())

    choice = gui.run(dialog.use_shared())
    assert choice == gui.bridge.services.config.paths.config_dir / DATABASE_CHOICE_FILE
    written = json.loads(choice.read_text())["url"]
    assert urlsplit(written).password is None
    assert memory_keyring.entries[("Switchboard:database", written)] == urlsplit(target).password
    box = gui.find(QMessageBox, dialog)
    assert "next start" in box.text()
    assert "kept as it was" in box.text()
    box.close()
    assert not dialog.use_button.isEnabled()


def test_a_database_that_holds_data_is_refused_and_named(
    gui: Gui, qtbot: QtBot, target: str
) -> None:
    dialog = _dialog(gui, qtbot, target)
    move(gui.bridge.services.config.db_url, target)  # someone's school is there already
    found = gui.run(dialog.test_connection())
    assert found is not None
    assert not found.empty
    assert gui.run(dialog.copy_and_verify(), timeout=60) is None
    assert dialog.error.isVisibleTo(dialog)
    assert "already holds school data" in dialog.error.text()
    assert not dialog.use_button.isEnabled()
    gui.save(dialog, "database_move_refused")


def test_cancel_stops_the_copy_and_nothing_is_kept(gui: Gui, qtbot: QtBot, target: str) -> None:
    dialog = _dialog(gui, qtbot, target)
    work = tasks.start(dialog.copy_and_verify(), owner=dialog)
    gui.wait_until(lambda: dialog.progress is not None)
    assert dialog.cancel_button.isVisibleTo(dialog)
    dialog.cancel_button.click()
    assert gui.run(work, timeout=60) is None
    assert dialog.status.text().startswith("Stopped as you asked")
    assert not dialog.use_button.isEnabled()
    assert dialog.copy_button.isEnabled()
    assert _connections_in(target) == 0


def test_someone_who_is_not_an_administrator_is_told_so(
    gui: Gui, qtbot: QtBot, target: str
) -> None:
    dialog = _dialog(gui, qtbot, target)
    gui.bridge.principal = Principal("Chipo", Role.FINANCE, user_id=2)
    assert gui.run(dialog.test_connection()) is None
    assert "may not move the database to a shared server" in dialog.error.text()


def test_missing_fields_are_named_before_anything_is_tried(gui: Gui, qtbot: QtBot) -> None:
    dialog = DatabaseMoveDialog(gui.bridge)
    qtbot.addWidget(dialog)
    dialog.show()
    assert gui.run(dialog.copy_and_verify()) is None
    assert dialog.error.text() == "Fill in the server and the database and the user."
