"""The Backups page, driven as a school's administrator drives it: it says how backups happen
when there are none, lists those in the folder, Back up now adds one, Restore… shows what the
backup holds and asks before handing it to the shell, a damaged backup is refused with the
reason, and the settings are exported and imported. The shell's restore stops the engine,
restores and opens the restored database."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.qtbot import QtBot

from app.config import Config
from app.services.backup import STAMP, BackupInfo
from app.ui import tasks
from app.ui.shell import Shell
from app.ui.theme import ThemeController
from app.views.backups import BackupsPage
from tests.ui.conftest import Gui

PAGE_SIZE = (1180, 720)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "backups.png"
FAST = {"latency_ms": 1, "latency_p95_ms": 2, "error_rate": 0}
KEY = {"api_key": "sk_test_1"}


def opened(gui: Gui, qtbot: QtBot) -> BackupsPage:
    page = BackupsPage(gui.bridge)
    qtbot.addWidget(page)
    page.resize(*PAGE_SIZE)
    page.show()
    gui.run(page.settle())
    return page


def rows(page: BackupsPage) -> list[dict[str, str]]:
    model = page.table.model()
    titles = [column.title for column in page.model.columns]
    return [
        {title: model.index(row, column).data() for column, title in enumerate(titles)}
        for row in range(model.rowCount())
    ]


def add_gateway(gui: Gui, name: str) -> None:
    connections = gui.bridge.services.connections
    gui.call(connections.add, "sandbox-payments", name, FAST, KEY)


def message(gui: Gui, parent: BackupsPage) -> QMessageBox:
    return gui.find(QMessageBox, parent)


def test_without_backups_the_page_says_how_they_are_made(gui: Gui, qtbot: QtBot) -> None:
    page = opened(gui, qtbot)
    assert page.states.state == "empty"
    text = page.states._empty_text.text()
    assert "backs up the database every 24 hours" in text
    assert "Back up now makes one at once." in text
    gui.save(page, "backups-empty")


def test_the_page_lists_the_backups_in_the_folder(gui: Gui, qtbot: QtBot) -> None:
    backups = gui.bridge.services.backups
    gui.call(backups.create)
    gui.call(backups.create, automatic=True)
    page = opened(gui, qtbot)
    assert page.states.state == "content"
    listed = rows(page)
    assert sorted(row["How"] for row in listed) == ["automatic", "by hand"]
    assert all(row["File"].startswith("switchboard-") for row in listed)
    assert all(row["Size"].endswith("KB") for row in listed)
    assert "keeps the newest 14" in page.schedule.text()


def test_back_up_now_adds_a_backup_to_the_list(gui: Gui, qtbot: QtBot) -> None:
    page = opened(gui, qtbot)
    made = gui.run(page.back_up_now())
    assert isinstance(made, BackupInfo)
    assert made.path.exists()
    assert page.states.state == "content"
    assert [row["File"] for row in rows(page)] == [made.name]
    assert page.status.text().startswith(f"Backed up to {made.path}")
    assert page.table.current_record() == made

    again = gui.run(page.back_up_now())
    assert again is not None
    assert len(rows(page)) == 2


def test_restore_shows_what_the_backup_holds_and_asks_before_handing_it_on(
    gui: Gui, qtbot: QtBot
) -> None:
    add_gateway(gui, "Card payments")
    page = opened(gui, qtbot)
    made = gui.run(page.back_up_now())
    assert made is not None
    requested: list[str] = []
    page.restore_requested.connect(requested.append)

    asking = tasks.start(page.restore(made.path))
    box = message(gui, page)
    assert f"{made.name} (taken " in box.text()
    assert "holds 1 connection" in box.text()
    assert "kept beside it, so this can be undone" in box.text()
    gui.save(box, "backups-restore-question")
    gui.answer(page, "Cancel")
    assert gui.run(asking) is False
    assert requested == []

    assert page.table.current_record() == made
    page.restore_button.click()  # the backup selected
    gui.answer(page, "Restore")
    gui.wait_until(lambda: requested)
    assert requested == [str(made.path)]


def test_a_damaged_backup_is_refused_with_the_reason(
    gui: Gui, qtbot: QtBot, tmp_path: Path
) -> None:
    page = opened(gui, qtbot)
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database at all" * 50)
    requested: list[str] = []
    page.restore_requested.connect(requested.append)
    refusing = tasks.start(page.restore(damaged))
    box = message(gui, page)
    assert box.windowTitle() == "This backup cannot be restored"
    assert "damaged.db is not a Switchboard backup" in box.text()
    box.accept()
    assert gui.run(refusing) is False
    assert requested == []


def test_settings_are_exported_and_imported(gui: Gui, qtbot: QtBot, tmp_path: Path) -> None:
    page = opened(gui, qtbot)
    out = gui.run(page.export_settings_to(tmp_path / "settings.json"))
    assert out is not None
    told = message(gui, page)
    assert "Secrets are not in it" in told.text()
    told.accept()
    document = json.loads(out.read_text("utf-8"))
    document["settings"]["school.name"] = "Harare Music School"
    out.write_text(json.dumps(document))

    importing = tasks.start(page.import_settings_from(out))
    gui.answer(page, "Import")
    report = gui.run(importing)
    assert report is not None
    assert report.settings_changed == ["school.name"]
    assert gui.bridge.services.settings.get("school.name") == "Harare Music School"


def test_screenshot_of_the_backups_page(gui: Gui, qtbot: QtBot, qapp: QApplication) -> None:
    """The page as a school sees it after a few days (docs/screenshots/backups.png)."""
    gui.call(gui.bridge.services.settings.set, "school.timezone", "Africa/Harare")
    style, palette = qapp.styleSheet(), qapp.palette()
    ThemeController(qapp, "light")
    try:
        add_gateway(gui, "Card payments")
        backups = gui.bridge.services.backups
        nightly = gui.call(backups.create, automatic=True)
        # Named as the scheduled backups of the last four nights named them (an hour or more
        # ago, so the one made by hand below is the newest even within the same second).
        last_night = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        for days in (1, 2, 3):
            stamp = (last_night - timedelta(days=days)).strftime(STAMP)
            shutil.copyfile(nightly.path, nightly.path.with_name(f"switchboard-auto-{stamp}.db"))
        nightly.path.rename(
            nightly.path.with_name(f"switchboard-auto-{last_night.strftime(STAMP)}.db")
        )
        page = opened(gui, qtbot)
        gui.run(page.back_up_now())
        assert len(rows(page)) == 5
        assert rows(page)[0]["How"] == "by hand"
        assert [row["How"] for row in rows(page)[1:]] == ["automatic"] * 4
        gui.save(page, "backups")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert page.grab().save(str(SCREENSHOT))
    finally:  # later tests see the application as they would have
        qapp.setStyleSheet(style)
        qapp.setPalette(palette)


# --- the shell's restore -----------------------------------------------------------------------


@pytest.fixture
def shells(qapp: QApplication, gui_loop: qasync.QEventLoop) -> Iterator[list[Shell]]:
    asyncio.set_event_loop(gui_loop)
    started: list[Shell] = []
    yield started
    for shell in started:
        shell.stop()
    for widget in QApplication.topLevelWidgets():
        widget.hide()
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    while tasks.running():
        gui_loop.run_until_complete(asyncio.sleep(0.01))


def test_the_shell_stops_the_engine_restores_and_opens_the_restored_database(
    qapp: QApplication, gui_loop: qasync.QEventLoop, shells: list[Shell], config: Config
) -> None:
    def run(awaitable, timeout: float = 30):  # type: ignore[no-untyped-def]
        return gui_loop.run_until_complete(asyncio.wait_for(awaitable, timeout))

    shell = Shell(qapp, config, use_tray=False, interactive=False, sign_in=False)
    shells.append(shell)
    shell.start()
    assert shell.bridge is not None
    services = shell.bridge.services
    run(shell.bridge.call(services.connections.add, "sandbox-payments", "Card payments", FAST, KEY))
    made = run(shell.bridge.call(services.backups.create))
    run(shell.bridge.call(services.connections.add, "sandbox-payments", "Later", FAST, KEY))
    first_engine = shell.engine

    report = run(shell.restore_from(made.path))

    assert report is not None
    assert shell.engine is not first_engine
    assert shell.window is not None
    assert shell.window.isVisible()
    bridge = shell.bridge
    assert bridge is not None
    restored = run(bridge.call(bridge.services.connections.connections))
    assert [record.name for record in restored] == ["Card payments"]
    told = next(
        box
        for box in shell.window.findChildren(QMessageBox)
        if box.windowTitle() == "The database was restored"
    )
    assert "restore that file to undo" in told.text()
