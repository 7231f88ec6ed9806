"""The Automations page, driven as the office drives it: the payment receipt recipe switched on
here sends a receipt when a payment succeeds, and its run shows as done with a link to the send;
an automation made in the editor (a student added, in grade 5) adds a follow-up task, which is
marked done on the Tasks tab; a run that needs a person is retried and dismissed; the editor
shows each problem beside its part and refuses to overwrite someone else's change; a built-in
recipe cannot be deleted.

The engine's automation worker runs as in the app; the tests also ask it for a pass
(`process()`, through the bridge) so they need not wait for its wake-up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.qtbot import QtBot

from app.domain.money import Money
from app.domain.school import StudentDraft
from app.services.automation_actions import CREATE_TASK, SEND_TEMPLATE, Action
from app.services.automations import AutomationDraft, AutomationSummary, RunStatus
from app.services.payments import Candidate, ChargeOrder
from app.ui import tasks
from app.ui.main_window import MainWindow
from app.ui.theme import ThemeController
from app.views.automation_editor import AutomationDialog
from app.views.automations import AutomationsPage
from app.views.messages import MessagesPage
from tests.support.messaging import add_families
from tests.ui.conftest import Gui

PAGE_SIZE = (1180, 800)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "automations.png"
RECIPES = ["Payment receipt", "Failed-payment notice", "Lesson reminder", "Overdue reminder"]


@pytest.fixture
def light(qapp: QApplication) -> Iterator[None]:
    """The light theme, as the screenshots in the docs show the app; put back afterwards."""
    style, palette = qapp.styleSheet(), qapp.palette()
    ThemeController(qapp, "light")
    yield
    qapp.setStyleSheet(style)
    qapp.setPalette(palette)


@pytest.fixture
def school(gui: Gui) -> None:
    """A school in Zimbabwe: numbers written without a country code are +263."""
    services = gui.bridge.services
    gui.call(services.settings.set, "school.locale", "en_ZW")
    gui.call(services.settings.set, "school.timezone", "Africa/Harare")


def opened(gui: Gui, qtbot: QtBot) -> AutomationsPage:
    page = AutomationsPage(gui.bridge)
    qtbot.addWidget(page)
    page.resize(*PAGE_SIZE)
    page.show()
    gui.run(page.settle())
    return page


def names(page: AutomationsPage) -> list[str]:
    return [summary.automation.name for summary in page.model.records()]


def choose(gui: Gui, page: AutomationsPage, name: str) -> AutomationSummary:
    summary = next(s for s in page.model.records() if s.automation.name == name)
    assert page.table.select_key(summary.automation.id)
    gui.run(page.settle())
    return summary


def process(gui: Gui) -> Any:
    """One pass of the automation worker, on the engine."""
    return gui.call(gui.bridge.services.automations.process)


def cell(table: Any, row: int, column: int) -> str:
    return str(table.proxy.index(row, column).data())


def sandbox_sms(gui: Gui) -> None:
    services = gui.bridge.services
    gui.call(services.connections.add, "sandbox-sms", "Sandbox SMS", {"undelivered_rate": 0.0}, {})


def sandbox_gateway(gui: Gui) -> int:
    record = gui.call(
        gui.bridge.services.connections.add,
        "sandbox-payments",
        f"Sandbox Cards {uuid.uuid4().hex[:4]}",
        {"approval_rate": 1.0, "error_rate": 0.0, "latency_ms": 1.0, "latency_p95_ms": 2.0},
        {"api_key": "sk_sandbox_test"},
    )
    return int(record.id)


def welcome_call(gui: Gui, page: AutomationsPage, qtbot: QtBot) -> Any:
    """Make, in the editor, a task for every new student in grade 5."""
    making = tasks.start(page.new_automation(), owner=page)
    dialog = gui.find(AutomationDialog, page)
    qtbot.keyClicks(dialog.name, "Welcome call")
    dialog.choose_trigger("student.added")
    qtbot.mouseClick(dialog.conditions.add_button, Qt.MouseButton.LeftButton)
    [condition] = dialog.condition_rows()
    condition.choose("student.grade", "equals", "5")
    [action] = dialog.action_rows()
    action.kind.setCurrentIndex(action.kind.findData(CREATE_TASK))
    qtbot.keyClicks(action.title, "Welcome call to the family of {student.first_name}")
    action.due_in_days.setValue(2)
    dialog.enabled.setChecked(True)
    gui.save(dialog, "automation-editor")
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    return gui.run(making)


def test_the_payment_receipt_switched_on_here_sends_and_its_run_links_to_the_send(
    gui: Gui, qtbot: QtBot, window: MainWindow, school: None, light: None
) -> None:
    services = gui.bridge.services
    sandbox_sms(gui)
    gateway = sandbox_gateway(gui)
    [family] = add_families(services.db, 1)
    page: AutomationsPage = window.show_page("automations")  # type: ignore[assignment]
    gui.run(page.settle())
    assert page.states.state == "content"
    assert names(page) == RECIPES  # the recipes, first and switched off
    assert [cell(page.table, row, 3) for row in range(4)] == ["Off"] * 4
    receipt = choose(gui, page, "Payment receipt")
    assert "has not run: it is switched off" in page.no_runs.text()
    assert page.switch_button.text() == "Switch on"

    qtbot.mouseClick(page.switch_button, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: page.selected() is not None and page.selected().automation.enabled)
    assert page.switch_button.text() == "Switch off"
    assert cell(page.table, 0, 3) == "On"

    paid = gui.call(
        services.payments.charge,
        ChargeOrder(
            idempotency_key=f"test-{uuid.uuid4().hex}",
            amount=Money(4500, "USD"),
            method="card",
            candidates=(Candidate(gateway, "pm_sandbox_ok"),),
            guardian_id=family.guardian_id,
        ),
    )
    process(gui)
    gui.wait_until(lambda: page.run_model.rowCount() == 1 and cell(page.runs, 0, 2) == "done")
    run = page.selected_run()
    assert run is not None
    assert run.automation_id == receipt.automation.id
    assert run.status == RunStatus.SUCCEEDED
    assert cell(page.runs, 0, 1) == f"Payment {paid.reference} (USD 45.00)"
    assert cell(page.runs, 0, 6) == "Sent “Payment receipt” to 1 person."
    assert cell(page.table, 0, 4).endswith(" · done")  # the last run
    assert "Send “Payment receipt” to the family on their channel — done" in (
        page.run_detail.toPlainText()
    )
    assert page.open_send_button.isEnabled()
    assert not page.retry_button.isEnabled()
    assert not page.dismiss_button.isEnabled()

    # A custom automation beside the recipes, for the screenshot.
    gui.call(
        services.automations.save,
        AutomationDraft(
            "Thank big payers",
            "payment.succeeded",
            (Action(SEND_TEMPLATE, template="Payment receipt", channel="email"),),
        ),
    )
    gui.wait_until(lambda: len(names(page)) == 5)
    assert names(page)[:4] == RECIPES
    assert page.selected() is not None
    assert page.selected().automation.id == receipt.automation.id
    page.grab().save(str(gui.screenshots / "automations.png"))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT))

    batch_id = run.steps[0].made["batch_id"]
    qtbot.mouseClick(page.open_send_button, Qt.MouseButton.LeftButton)
    assert window.current_page.key == "messages"
    messages: MessagesPage = window.current_page  # type: ignore[assignment]
    gui.run(messages.settle())
    gui.wait_until(lambda: messages.batches.current_record() is not None)
    assert messages.batches.current_record().id == batch_id


def test_an_automation_made_in_the_editor_adds_a_task_that_is_marked_done(
    gui: Gui, qtbot: QtBot, school: None
) -> None:
    services = gui.bridge.services
    page = opened(gui, qtbot)
    saved = welcome_call(gui, page, qtbot)
    assert saved.enabled
    assert saved.conditions[0].value == "5"
    gui.wait_until(lambda: "Welcome call" in names(page))
    assert page.selected() is not None
    assert page.selected().automation.id == saved.id
    assert cell(page.table, 4, 1) == "A student was added"
    assert cell(page.table, 4, 2) == (
        "If Grade is 5: Create the task “Welcome call to the family of {student.first_name}”"
    )
    assert "has not run yet" in page.no_runs.text()
    assert page.task_stack.currentWidget() is page.no_tasks

    gui.call(services.school.save_student, StudentDraft("Nyasha", "Gumbo", grade="5"))
    gui.call(services.school.save_student, StudentDraft("Farai", "Sibanda", grade="4"))
    process(gui)
    gui.wait_until(lambda: page.task_model.rowCount() == 1)
    page.tabs.setCurrentIndex(1)
    assert page.tabs.tabText(1) == "Tasks (1 open)"
    assert cell(page.task_table, 0, 0) == "Welcome call to the family of Nyasha"
    assert cell(page.task_table, 0, 2) == "Nyasha Gumbo"
    assert cell(page.task_table, 0, 3) == "Welcome call"
    assert cell(page.task_table, 0, 4) == "open"
    gui.save(page, "automations-tasks")
    gui.wait_until(lambda: page.run_model.rowCount() == 1)  # Farai is in grade 4: no run
    assert cell(page.runs, 0, 2) == "done"

    qtbot.mouseClick(page.done_button, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: page.task_model.rowCount() == 0)
    assert page.task_stack.currentWidget() is page.no_tasks
    assert page.tabs.tabText(1) == "Tasks"
    page.show_done.setChecked(True)
    gui.wait_until(lambda: page.task_model.rowCount() == 1)
    assert cell(page.task_table, 0, 4).startswith("done ")
    assert page.done_button.text() == "Mark not done"
    [task] = gui.call(services.automations.tasks, open_only=False)
    assert task.done
    assert task.done_by


def test_a_run_that_needs_a_person_is_retried_then_dismissed(
    gui: Gui, qtbot: QtBot, school: None
) -> None:
    services = gui.bridge.services
    gui.call(
        services.automations.save,
        AutomationDraft(
            "Tell the family",
            "student.added",
            (Action(SEND_TEMPLATE, template="Lesson reminder"),),
            enabled=True,
        ),
    )
    page = opened(gui, qtbot)
    choose(gui, page, "Tell the family")
    gui.call(services.school.save_student, StudentDraft("Rufaro", "Chari", grade="3"))
    process(gui)
    gui.wait_until(lambda: page.run_model.rowCount() == 1 and cell(page.runs, 0, 2) != "running")
    gui.wait_until(lambda: cell(page.runs, 0, 2) == "needs a person")
    assert "Rufaro Chari has no guardian to send to" in cell(page.runs, 0, 5)
    assert cell(page.table, 4, 6) == "1"  # failed
    assert "It needs a person" in page.run_detail.toPlainText()
    assert page.retry_button.isEnabled()
    assert page.dismiss_button.isEnabled()
    gui.save(page, "automations-needs-a-person")

    qtbot.mouseClick(page.retry_button, Qt.MouseButton.LeftButton)
    process(gui)
    gui.wait_until(lambda: page.selected_run() is not None and page.selected_run().attempts == 2)
    gui.wait_until(lambda: cell(page.runs, 0, 2) == "needs a person")

    qtbot.mouseClick(page.dismiss_button, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: cell(page.runs, 0, 2) == "set aside")
    assert not page.dismiss_button.isEnabled()
    assert page.retry_button.isEnabled()
    gui.wait_until(lambda: cell(page.table, 4, 6) == "")


def test_the_editor_shows_each_problem_beside_its_part(
    gui: Gui, qtbot: QtBot, school: None
) -> None:
    page = opened(gui, qtbot)
    making = tasks.start(page.new_automation(), owner=page)
    dialog = gui.find(AutomationDialog, page)
    [action] = dialog.action_rows()
    qtbot.mouseClick(action.remove_button, Qt.MouseButton.LeftButton)
    assert gui.run(dialog.submit()) is False
    assert dialog.error_text("name") == "An automation needs a name."
    assert dialog.error_text("trigger") == "Choose what starts the automation."
    assert dialog.error_text("actions") == "An automation needs at least one action."
    gui.save(dialog, "automation-editor-errors")

    qtbot.keyClicks(dialog.name, "Thank big payers")
    dialog.choose_trigger("payment.succeeded")
    dialog.add_condition().choose("payment.amount_minor", "greater", "lots")
    dialog.add_action()  # a send with no template chosen
    assert gui.run(dialog.submit()) is False
    assert dialog.error_text("name") == ""
    assert dialog.error_text("conditions") == "Condition 1: Amount is compared with a number."
    assert dialog.error_text("actions") == "Action 1: choose the message template to send."

    dialog.condition_rows()[0].value.setText("10000")
    [send] = dialog.action_rows()
    send.template.setCurrentIndex(send.template.findData("Payment receipt"))
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    saved = gui.run(making)
    assert saved.conditions[0].value == 10000
    assert saved.actions == (Action(SEND_TEMPLATE, template="Payment receipt"),)
    assert not saved.enabled
    gui.wait_until(lambda: "Thank big payers" in names(page))
    assert "switched off: switch it on to use it" in page.notice.text()


def test_a_change_someone_else_saved_meanwhile_is_not_overwritten(
    gui: Gui, qtbot: QtBot, school: None
) -> None:
    services = gui.bridge.services
    page = opened(gui, qtbot)
    receipt = choose(gui, page, "Payment receipt")
    editing = tasks.start(page.edit_automation(receipt), owner=page)
    dialog = gui.find(AutomationDialog, page)
    assert not dialog.trigger.isEnabled()  # a recipe keeps its trigger
    assert [row.action() for row in dialog.action_rows()] == list(receipt.automation.actions)
    current = gui.call(services.automations.automation, receipt.automation.id)
    gui.call(
        services.automations.save,
        replace(current.draft(), description="Changed at the other desk."),
        automation_id=current.id,
        version=current.version,
    )
    dialog.description.setText("Changed here.")
    assert gui.run(dialog.submit()) is False
    assert "Someone else changed this automation" in dialog.banner.text()
    dialog.reject()
    assert gui.run(editing) is None
    again = gui.call(services.automations.automation, receipt.automation.id)
    assert again.description == "Changed at the other desk."


def test_a_built_in_recipe_cannot_be_deleted(gui: Gui, qtbot: QtBot, school: None) -> None:
    page = opened(gui, qtbot)
    receipt = choose(gui, page, "Payment receipt")
    deleting = tasks.start(page.delete_automation(receipt), owner=page)
    gui.answer(page, "Delete")
    assert gui.run(deleting) is False
    refusal = gui.find(QMessageBox, page)
    assert refusal.text() == (
        "“Payment receipt” is a built-in recipe; switch it off instead of deleting it."
    )
    refusal.close()
    summaries = gui.call(gui.bridge.services.automations.automations)
    assert sorted(s.automation.name for s in summaries) == sorted(RECIPES)
