"""Signing in to the window: the first run creates the administrator, the pages stay hidden until
someone signs in, the window locks itself when idle, and whoever signs in is who the services
see (the permission checks and the audit trail)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pyotp
import pytest
import qasync
from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtWidgets import QApplication

from app.config import Config
from app.domain.access import Principal, Role
from app.services import access
from app.ui import tasks
from app.ui.shell import NOBODY, Shell
from tests.support.polling import until

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def shell_loop(qapp: QApplication, gui_loop: qasync.QEventLoop):  # type: ignore[no-untyped-def]
    asyncio.set_event_loop(gui_loop)
    shells: list[Shell] = []
    yield gui_loop, shells
    for shell in shells:
        if shell.idle is not None:
            shell.idle.stop()
        shell.stop()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    while tasks.running():
        gui_loop.run_until_complete(asyncio.sleep(0.01))


def run(loop: qasync.QEventLoop, awaitable, timeout: float = 30):  # type: ignore[no-untyped-def]
    return loop.run_until_complete(asyncio.wait_for(awaitable, timeout))


async def acting() -> Principal:
    return access.current()


def test_the_first_run_creates_the_administrator_then_idle_locks_and_signs_in_again(
    qapp, shell_loop, config: Config
) -> None:  # type: ignore[no-untyped-def]
    loop, shells = shell_loop
    shell = Shell(qapp, config, use_tray=False, interactive=False)
    shells.append(shell)
    window = shell.start()
    assert window.locked
    run(loop, until(lambda: window.sign_in_panel.form is not None))
    run(loop, until(lambda: window.sign_in_panel.form.first_run))  # type: ignore[union-attr]
    assert window.sign_in_panel.title.text() == "Create the administrator"
    assert shell.bridge is not None
    assert run(loop, shell.bridge.call(acting)) == NOBODY  # nobody yet: read-only
    run(loop, asyncio.sleep(0.2))  # let the new form's layout settle before the screenshot
    window.sign_in_panel.grab().save(str(SCREENSHOTS / "first-run.png"))

    form = window.sign_in_panel.form
    assert form is not None
    form.name.setText("Ada")
    form.password.setText(PASSWORD)
    form.repeat.setText("something else entirely")
    run(loop, form.submit())
    assert "two passwords differ" in form.problem.text()
    assert window.locked
    form.repeat.setText(PASSWORD)
    principal = run(loop, form.submit())
    assert principal is not None
    assert principal.name == "Ada"
    assert not window.locked
    assert window._who_label.text() == "Signed in as Ada (Administrator)"
    assert form.password.text() == ""  # not kept in the widget
    assert run(loop, shell.bridge.call(acting)) == principal

    # Idle: the window locks itself, and the services no longer see Ada.
    assert shell.idle is not None
    shell.idle.set_interval_ms(300)
    run(loop, until(lambda: window.locked))
    assert "without use" in window.sign_in_panel.explanation.text()
    assert run(loop, shell.bridge.call(acting)) == NOBODY
    form = window.sign_in_panel.form
    assert form is not None
    assert form.name.text() == "Ada"  # who was signed in
    shell.idle.set_minutes(0)  # no second lock while this test types
    form.password.setText("not my password")
    run(loop, form.submit())
    assert "do not match" in form.problem.text()
    assert window.locked
    form.password.setText(PASSWORD)
    run(loop, form.submit())
    assert not window.locked


def test_a_colleague_signs_in_at_the_locked_window_with_their_code(
    qapp, shell_loop, config: Config
) -> None:  # type: ignore[no-untyped-def]
    loop, shells = shell_loop
    shell = Shell(qapp, config, use_tray=False, interactive=False)
    shells.append(shell)
    window = shell.start()
    assert shell.bridge is not None
    users = shell.bridge.services.users
    # Set up as the service user (the window itself acts as nobody until someone signs in).
    run(loop, shell.bridge.call_as(None, users.create_administrator, "Ada", PASSWORD))
    bob = run(loop, shell.bridge.call_as(None, users.add, "Bob", Role.STAFF, "bob's long password"))
    enrolment = users.new_enrolment("Bob")
    code = pyotp.TOTP(enrolment.secret).now()
    run(
        loop,
        shell.bridge.call_as(
            bob.principal, users.enrol, "Bob", "bob's long password", enrolment, code
        ),
    )
    run(loop, shell.ask_to_sign_in())
    assert window.sign_in_panel.title.text() == "Sign in to Switchboard"
    form = window.sign_in_panel.form
    assert form is not None
    form.name.setText("bob")
    form.password.setText("bob's long password")
    run(loop, form.submit())
    assert form.code.isVisible()  # the second step is asked for
    assert window.locked
    window.sign_in_panel.grab().save(str(SCREENSHOTS / "sign-in.png"))
    form.code.setText("000000")
    run(loop, form.submit())
    assert "code is not right" in form.problem.text()
    # The next time step's code (one step of drift is allowed; the current step's code was
    # spent at enrolment, and a code works once).
    totp = pyotp.TOTP(enrolment.secret)
    form.password.setText("bob's long password")
    form.code.setText(totp.at(time.time() + totp.interval))
    signed = run(loop, form.submit())
    assert signed is not None
    assert signed.role is Role.STAFF
    assert window._who_label.text() == "Signed in as Bob (Staff)"
    window.sign_out_button.click()
    assert window.locked
    assert run(loop, shell.bridge.call(acting)) == NOBODY
