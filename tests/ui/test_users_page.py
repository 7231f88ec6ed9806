"""The Users page: an administrator adds colleagues and changes roles; a person sets up their
own two-step sign-in with the QR code and gets their backup codes once; what the signed-in
role may not do is refused with the service's sentence."""

from __future__ import annotations

from pathlib import Path

import pyotp
from PySide6.QtWidgets import QDialogButtonBox

from app.domain.access import Role
from app.ui.main_window import MainWindow
from app.views.users import AddUserDialog, BackupCodesDialog, TwoStepDialog, UsersPage
from tests.ui.conftest import Gui

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _ok(dialog) -> None:  # type: ignore[no-untyped-def]
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()


def test_an_administrator_adds_a_colleague_and_sets_up_their_own_two_step_sign_in(
    gui: Gui, window: MainWindow
) -> None:
    users = gui.bridge.services.users
    admin = gui.call(users.create_administrator, "Ada", PASSWORD)
    gui.bridge.principal = admin.principal
    page = window.show_page("users")
    assert isinstance(page, UsersPage)
    gui.run(page.settle())
    assert [u.name for u in page.model.records()] == ["Ada", "service"]
    assert page.me_label.text() == "You are Ada (Administrator)."

    page.add_button.click()
    dialog = gui.find(AddUserDialog)
    dialog.name.setText("Bob")
    dialog.role.setCurrentIndex(dialog.role.findData(Role.FINANCE))
    dialog.password.setText("bob's long password")
    dialog.repeat.setText("bob's long passwordX")
    _ok(dialog)
    gui.wait_until(lambda: dialog.problem.isVisible())
    assert "two passwords differ" in dialog.problem.text()
    dialog.repeat.setText("bob's long password")
    _ok(dialog)
    gui.wait_until(lambda: not dialog.isVisible())
    gui.wait_until(lambda: len(page.model.records()) == 3)
    bob = next(u for u in page.model.records() if u.name == "Bob")
    assert bob.role is Role.FINANCE

    page.enrol_button.click()
    enrol = gui.find(TwoStepDialog)
    enrol.password.setText(PASSWORD)
    enrol.code.setText(pyotp.TOTP(enrol.enrolment.secret).now())
    enrol.grab().save(str(SCREENSHOTS / "two-step.png"))
    _ok(enrol)
    codes = gui.find(BackupCodesDialog)
    assert len(codes.text.toPlainText().split()) == 10
    codes.accept()
    gui.wait_until(lambda: page.model.records()[0].two_step)
    assert page.enrol_button.text() == "Move two-step sign-in to a new phone…"
    gui.save(window, "users")
    window.grab().save(str(SCREENSHOTS / "users.png"))


def test_a_staff_member_is_refused_user_management_with_the_reason(
    gui: Gui, window: MainWindow
) -> None:
    users = gui.bridge.services.users
    gui.call(users.create_administrator, "Ada", PASSWORD)
    carol = gui.call(users.add, "Carol", Role.STAFF, "carol's long password")
    gui.bridge.principal = carol.principal
    page = window.show_page("users")
    gui.run(page.settle())
    page.add_button.click()
    dialog = gui.find(AddUserDialog)
    dialog.name.setText("Mallory")
    dialog.password.setText("mallory's password")
    dialog.repeat.setText("mallory's password")
    _ok(dialog)
    gui.wait_until(lambda: dialog.problem.isVisible())
    assert dialog.problem.text() == (
        "Carol (Staff) may not manage users; ask someone with the Administrator role."
    )
    dialog.reject()
    assert [u.name for u in gui.call(users.users)] == ["Ada", "Carol", "service"]
