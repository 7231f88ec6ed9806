"""The Settings page: every declared setting with its explanation; Save keeps the good changes,
shows each refused one beside its field, and obeys the signed-in role."""

from __future__ import annotations

from pathlib import Path

from app.domain.access import Principal, Role
from app.ui.main_window import MainWindow
from app.views.settings import SettingsPage
from tests.ui.conftest import Gui

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _page(gui: Gui, window: MainWindow) -> SettingsPage:
    page = window.show_page("settings")
    assert isinstance(page, SettingsPage)
    gui.run(page.settle())
    return page


def test_good_changes_are_saved_and_a_bad_one_is_explained_beside_it(
    gui: Gui, window: MainWindow
) -> None:
    page = _page(gui, window)
    settings = gui.bridge.services.settings
    assert page.fields["security.idle_lock_minutes"].value() == 10
    page.fields["security.idle_lock_minutes"].widget.setValue(5)  # type: ignore[attr-defined]
    page.fields["approvals.refund_above"].widget.setValue(200)  # type: ignore[attr-defined]
    page.fields["school.timezone"].widget.setText("Mars/Olympus_Mons")  # type: ignore[attr-defined]
    assert not gui.run(page.save())
    assert settings.get("security.idle_lock_minutes") == 5
    assert settings.get("approvals.refund_above") == 200
    error = page.fields["school.timezone"].error
    assert error.isVisible()
    assert "is not a time zone name" in error.text()
    assert page.notice.text() == "2 saved. 1 not saved: see the reasons below."
    page.fields["school.timezone"].widget.setText("Africa/Harare")  # type: ignore[attr-defined]
    assert gui.run(page.save())
    assert settings.get("school.timezone") == "Africa/Harare"
    gui.run(page.settle())
    window.grab().save(str(SCREENSHOTS / "settings.png"))


def test_a_viewer_may_change_only_their_own_view(gui: Gui, window: MainWindow) -> None:
    gui.bridge.principal = Principal("Vic", Role.VIEWER, 7)
    page = _page(gui, window)
    settings = gui.bridge.services.settings
    page.fields["appearance.theme"].widget.setCurrentIndex(  # type: ignore[attr-defined]
        page.fields["appearance.theme"].widget.findData("dark")  # type: ignore[attr-defined]
    )
    page.fields["approvals.refund_above"].widget.setValue(1)  # type: ignore[attr-defined]
    assert not gui.run(page.save())
    assert settings.get("appearance.theme") == "dark"
    assert settings.get("approvals.refund_above") == 0
    assert page.fields["approvals.refund_above"].error.text() == (
        "Vic (Viewer) may not change the settings; ask someone with the Administrator role."
    )
