"""The Settings page's "Start Switchboard when I sign in to this computer": it shows and changes
the operating system's registration for this user (here an XDG autostart entry under tmp_path),
and explains a change the system refused, putting the checkbox back."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QScrollArea
from pytestqt.qtbot import QtBot

from app.services.autostart import Autostart
from app.views.settings import SettingsPage
from tests.ui.conftest import Gui

COMMAND = ["/opt/switchboard/switchboard", "gui"]


def _page(gui: Gui, qtbot: QtBot, autostart: Autostart) -> SettingsPage:
    page = SettingsPage(gui.bridge, autostart=autostart)
    qtbot.addWidget(page)
    page.resize(900, 700)
    page.show()
    gui.run(page.settle())
    return page


def test_the_checkbox_shows_and_changes_the_registration(
    gui: Gui, qtbot: QtBot, tmp_path: Path
) -> None:
    autostart = Autostart(platform="linux", home=tmp_path, environ={}, command=COMMAND)
    autostart.enable()  # registered earlier, e.g. by the installer
    entry = tmp_path / ".config" / "autostart" / "switchboard.desktop"
    page = _page(gui, qtbot, autostart)
    box = page.autostart_box
    assert box.text() == "Start Switchboard when I sign in to this computer"
    assert box.isChecked()

    box.click()
    gui.wait_until(lambda: not entry.exists())
    assert not box.isChecked()
    assert not page.autostart_error.isVisible()

    box.click()
    gui.wait_until(entry.exists)
    assert "Exec=/opt/switchboard/switchboard gui\n" in entry.read_text("utf-8")
    assert box.isChecked()
    # Nothing about it went to the school's (possibly shared) database.
    assert not [key for key in gui.bridge.services.settings.values() if "start" in key]
    scroll = page.findChild(QScrollArea)
    assert scroll is not None
    scroll.ensureWidgetVisible(box)
    gui.save(page, "settings-autostart")


def test_a_refused_change_is_explained_and_the_checkbox_goes_back(
    gui: Gui, qtbot: QtBot, tmp_path: Path
) -> None:
    blocker = tmp_path / "config"
    blocker.write_text("a file where the config folder should be")
    autostart = Autostart(
        platform="linux", home=tmp_path, environ={"XDG_CONFIG_HOME": str(blocker)}, command=COMMAND
    )
    page = _page(gui, qtbot, autostart)
    assert not page.autostart_box.isChecked()

    page.autostart_box.click()
    gui.wait_until(page.autostart_error.isVisible)
    assert not page.autostart_box.isChecked()
    assert page.autostart_error.text().startswith(
        "Could not set Switchboard to start when you sign in ("
    )
    assert str(blocker / "autostart" / "switchboard.desktop") in page.autostart_error.text()
    assert blocker.read_text() == "a file where the config folder should be"
