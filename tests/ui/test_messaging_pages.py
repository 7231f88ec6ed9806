"""The Messages page, the bulk send wizard and the Templates editor, driven as the office
drives them, sending through the Sandbox SMS connection: a send prepared and checked (who gets
it, who is left out and why, what it costs), confirmed and followed to 100 %, then read back on
the Messages page; a send cancelled on its way; a wizard closed before confirming leaves
nothing to send; a paused send resumed; opt-outs kept; and a Shona SMS text written with its
preview and segment counter following the typing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from app.domain.messages import Channel, MessageStatus
from app.domain.templating import Variant
from app.providers.sandbox_sms import simulator_of
from app.services.audiences import Audience
from app.services.message_templates import TemplateDraft
from app.ui import tasks
from app.ui.theme import ThemeController
from app.views.bulk_send import AUDIENCE, CHECK, SEND, TEMPLATE, BulkSendDialog
from app.views.messages import MessagesPage, OptOutsDialog
from app.views.templates import TemplatesPage
from tests.support.messaging import add_families, e164_of
from tests.ui.conftest import Gui

PAGE_SIZE = (1180, 800)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
NOTICE = "Concert notice"


@pytest.fixture
def light(qapp: QApplication) -> Iterator[None]:
    """The light theme, as the screenshots in the docs show the app; put back afterwards."""
    style, palette = qapp.styleSheet(), qapp.palette()
    ThemeController(qapp, "light")
    yield
    qapp.setStyleSheet(style)
    qapp.setPalette(palette)


BEFORE: dict[int, Counter[str]] = {}


def sandbox(gui: Gui, **config: Any) -> int:
    """The Sandbox SMS connected; what its simulated account had received before is noted
    (one simulated account per connection id lives as long as the process)."""
    services = gui.bridge.services
    record = gui.call(services.connections.add, "sandbox-sms", "Sandbox SMS", config, {})
    BEFORE[record.id] = Counter(simulator_of(record.id, record.config, {}).received)
    return record.id


def received(connection: int) -> dict[str, int]:
    """The messages the simulated account took since this test connected it, per number."""
    now = Counter(simulator_of(connection, {}, {}).received)
    return dict(now - BEFORE.get(connection, Counter()))


@pytest.fixture
def school(gui: Gui) -> dict[str, Any]:
    """A school in Zimbabwe (local numbers read as +263), a notice to send to families, and
    three violin families in Grade 5 with phones, one more without a phone."""
    services = gui.bridge.services
    gui.call(services.settings.set, "school.locale", "en_ZW")
    gui.call(services.settings.set, "school.timezone", "Africa/Harare")
    gui.call(services.settings.set, "school.name", "Msasa Park Music School")
    template = gui.call(
        services.templates.save,
        TemplateDraft(
            NOTICE,
            "The end-of-term concert, to every family.",
            variants=(
                Variant(
                    "en",
                    Channel.SMS,
                    text="Dear {{ guardian.first_name }}, {{ student.first_name }} plays in "
                    "the concert on Friday at 17:00. {{ school.name }}",
                ),
                Variant(
                    "en",
                    Channel.EMAIL,
                    subject="The concert on Friday",
                    text="Dear {{ guardian.first_name }},\n\nSee you on Friday at 17:00.",
                ),
            ),
        ),
    )
    families = add_families(services.db, 3, grade="5", lesson="Violin")
    families += add_families(services.db, 1, grade="5", lesson="Violin", start=3, with_phone=False)
    add_families(services.db, 2, grade="4", lesson="Piano", start=10)
    return {"template": template, "families": families}


def opened(gui: Gui, qtbot: QtBot, page: QWidget) -> Any:
    qtbot.addWidget(page)
    page.resize(*PAGE_SIZE)
    page.show()
    gui.run(page.settle())  # type: ignore[attr-defined]
    return page


def start_wizard(gui: Gui, page: MessagesPage) -> tuple[Any, BulkSendDialog]:
    opening = tasks.start(page.new_send(), owner=page)
    return opening, gui.find(BulkSendDialog, page)


def prepare(gui: Gui, qtbot: QtBot, wizard: BulkSendDialog, channel: Channel | None) -> None:
    """Choose the notice, Grade 5 violin guardians, the channel, and press Prepare."""
    wizard.choose(NOTICE)
    qtbot.mouseClick(wizard.next_button, Qt.MouseButton.LeftButton)
    assert wizard.step == AUDIENCE
    wizard.grade.setCurrentIndex(wizard.grade.findData("5"))
    qtbot.keyClicks(wizard.lesson, "violin")
    wizard.channel.setCurrentIndex(wizard.channel.findData(channel.value if channel else None))
    qtbot.mouseClick(wizard.next_button, Qt.MouseButton.LeftButton)
    gui.run(wizard.preparing)
    assert wizard.step == CHECK, wizard.problem.text()


def test_without_a_provider_the_messages_page_says_how_to_start(gui: Gui, qtbot: QtBot) -> None:
    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    assert page.states.state == "empty"
    assert "Connect an SMS or e-mail provider" in page.states._empty_text.text()
    gui.save(page, "messages-empty")
    sandbox(gui)
    gui.wait_until(lambda: "“New send…”: choose a template" in page.states._empty_text.text())


def test_the_wizard_checks_who_gets_it_then_sends_to_100_percent(
    gui: Gui, qtbot: QtBot, school: dict[str, Any], light: None
) -> None:
    services = gui.bridge.services
    connection = sandbox(gui)
    gui.call(services.messaging.opt_out, Channel.SMS, "077 1000001")
    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    assert page.states.state == "empty"
    opening, wizard = start_wizard(gui, page)
    assert wizard.step == TEMPLATE
    wizard.choose(NOTICE)
    gui.wait_until(lambda: "Dear Tendai, Rudo plays" in wizard.template_preview.text())
    assert wizard.template_warning.isHidden()
    wizard.choose("Lesson reminder")  # needs a lesson, which a send to a group has not
    gui.wait_until(lambda: wizard.template_warning.isVisibleTo(wizard))
    assert "would be left out" in wizard.template_warning.text()

    prepare(gui, qtbot, wizard, Channel.SMS)

    summary = wizard.summary.text()
    assert "2 people get this message</b>: 2 by SMS." in summary
    assert "2 people are left out: 1 opted out, 1 no address" in summary
    assert "SMS: 2 parts, about US$0.02 at Sandbox SMS's price of 0.0079 USD a part" in summary
    assert "Nothing has been sent yet" in summary
    assert wizard.example.text().startswith("To Parent0 Moyo (SMS, +263771000000)")
    assert "Dear Parent0, Child0 plays in the concert" in wizard.example.text()
    left_out = {
        wizard.left_out_model.data(wizard.left_out_model.index(row, 0)): (
            wizard.left_out_model.data(wizard.left_out_model.index(row, 2))
        )
        for row in range(wizard.left_out_model.rowCount())
    }
    assert left_out == {"Parent1 Moyo": "opted out", "Parent3 Moyo": "no address"}
    assert wizard.next_button.text() == "Send 2 messages"
    assert sum(received(connection).values()) == 0  # nothing went yet
    wizard.resize(780, 640)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    gui.save(wizard, "bulk-send-check")
    assert wizard.grab().save(str(SCREENSHOTS / "bulk-send.png"))

    qtbot.mouseClick(wizard.next_button, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: wizard.step == SEND)
    finished = gui.run(wizard.sending)

    assert finished.status == "done"
    assert wizard.progress.maximum() == 2
    assert wizard.progress.value() == 2  # 100 %
    assert wizard.send_status.text() == "Done: 2 messages handed to the provider."
    assert "SMS parts: 2 · cost so far: US$0.02" in wizard.recap.text()
    assert not wizard.stop_button.isVisible()
    assert wizard.next_button.text() == "Close"
    assert received(connection) == {e164_of(0): 1, e164_of(2): 1}
    gui.save(wizard, "bulk-send-done")
    qtbot.mouseClick(wizard.next_button, Qt.MouseButton.LeftButton)  # Close
    batch = gui.run(opening)

    assert batch is not None
    assert batch.id == finished.id
    assert page.states.state == "content"
    assert page.batches.current_record().id == batch.id
    row = {
        page.batch_model.columns[c].title: page.batch_model.data(page.batch_model.index(0, c))
        for c in range(page.batch_model.columnCount())
    }
    assert row["Send"] == NOTICE
    assert row["To"] == "guardians of Grade 5 taking violin"
    assert row["Status"] == "Done"
    assert (row["Messages"], row["Left out"], row["SMS parts"]) == ("4", "2", "2")
    assert row["Cost"] == "US$0.02"
    gui.wait_until(lambda: page.message_model.rowCount() == 4)
    statuses = {m.recipient: m.status for m in page.message_model.records()}
    assert statuses["Parent1 Moyo"] is MessageStatus.OPTED_OUT
    assert statuses["Parent3 Moyo"] is MessageStatus.SKIPPED
    assert statuses["Parent0 Moyo"] in (
        MessageStatus.QUEUED,
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
    )
    page.status_filter.setCurrentText("Left out (opted out, no address)")
    assert page.messages.proxy.rowCount() == 2
    assert page.shown.text() == "2 of 4 messages"
    page.status_filter.setCurrentIndex(0)
    qtbot.keyClicks(page.search, "parent2")
    assert page.messages.proxy.rowCount() == 1
    page.search.clear()
    page.messages.selectRow(0)
    assert "plays in the concert" in page.message_text.text()
    assert not page.resume_button.isEnabled()
    assert not page.cancel_button.isEnabled()
    gui.save(page, "messages")
    assert page.grab().save(str(SCREENSHOTS / "messages.png"))


def test_a_send_is_cancelled_on_its_way_and_the_rest_never_goes(
    gui: Gui, qtbot: QtBot, school: dict[str, Any]
) -> None:
    services = gui.bridge.services
    connection = sandbox(gui, rate_per_second=10)
    add_families(services.db, 46, grade="5", lesson="Violin", start=100)
    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    opening, wizard = start_wizard(gui, page)
    prepare(gui, qtbot, wizard, Channel.SMS)
    assert wizard.next_button.text() == "Send 49 messages"

    qtbot.mouseClick(wizard.next_button, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: wizard.progress.value() >= 3)
    assert wizard.stop_button.isVisible()
    assert not wizard.next_button.isVisible()
    qtbot.mouseClick(wizard.stop_button, Qt.MouseButton.LeftButton)
    finished = gui.run(wizard.sending, timeout=30)

    assert finished.status == "cancelled"
    went = sum(received(connection).values())
    cancelled = finished.count(MessageStatus.CANCELLED)
    assert cancelled > 0
    assert went + cancelled == 49
    assert wizard.send_status.text().startswith(f"Cancelled: {went} messages had gone")
    qtbot.mouseClick(wizard.next_button, Qt.MouseButton.LeftButton)
    gui.run(opening)
    assert page.batch_model.data(page.batch_model.index(0, 3)) == "Cancelled"


def test_closing_the_wizard_before_confirming_cancels_what_it_prepared(
    gui: Gui, qtbot: QtBot, school: dict[str, Any]
) -> None:
    services = gui.bridge.services
    connection = sandbox(gui)
    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    opening, wizard = start_wizard(gui, page)
    prepare(gui, qtbot, wizard, None)
    batch_id = wizard.batch.id
    assert gui.call(services.messaging.batch, batch_id).status == "prepared"

    wizard.close()
    gui.run(wizard.dropping)
    assert gui.run(opening) is None

    dropped = gui.call(services.messaging.batch, batch_id)
    assert dropped.status == "cancelled"
    assert dropped.count(MessageStatus.PREPARED) == 0
    assert sum(received(connection).values()) == 0
    gui.wait_until(lambda: page.batch_model.rowCount() == 1)
    gui.wait_until(lambda: page.batch_model.data(page.batch_model.index(0, 3)) == "Cancelled")


def test_going_back_from_the_check_drops_the_prepared_send(
    gui: Gui, qtbot: QtBot, school: dict[str, Any]
) -> None:
    services = gui.bridge.services
    sandbox(gui)
    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    opening, wizard = start_wizard(gui, page)
    prepare(gui, qtbot, wizard, Channel.SMS)
    first = wizard.batch.id
    gui.run(wizard.back())
    assert wizard.step == AUDIENCE
    assert gui.call(services.messaging.batch, first).status == "cancelled"
    wizard.to_teachers.setChecked(True)
    qtbot.mouseClick(wizard.next_button, Qt.MouseButton.LeftButton)
    gui.run(wizard.preparing)
    # The test families' teacher has no phone: the wizard says who is left out, and why.
    assert wizard.step == CHECK
    assert "0 people get this message" in wizard.summary.text()
    assert not wizard.next_button.isEnabled()
    wizard.reject()
    gui.run(wizard.dropping)
    gui.run(opening)


def test_a_send_paused_for_want_of_a_connection_is_resumed_from_the_page(
    gui: Gui, qtbot: QtBot, school: dict[str, Any]
) -> None:
    services = gui.bridge.services
    connection = sandbox(gui)
    gui.call(services.connections.set_paused, connection, True)
    batch = gui.call(
        services.messaging.prepare,
        NOTICE,
        Audience(grade="5", lesson="violin"),
        channel=Channel.SMS,
    )
    paused = gui.call(services.messaging.send, batch.id)
    assert paused.status == "paused"
    gui.call(services.connections.set_paused, connection, False)

    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    assert page.batch_model.data(page.batch_model.index(0, 3)) == "Paused"
    assert paused.message in page.detail.text()
    assert page.resume_button.text() == "Resume"
    assert page.resume_button.isEnabled()
    assert page.cancel_button.isEnabled()

    resumed = gui.run(page.resume())

    assert resumed is not None
    assert resumed.status == "done"
    assert sorted(received(connection)) == [e164_of(n) for n in range(3)]
    gui.wait_until(lambda: page.batch_model.data(page.batch_model.index(0, 3)) == "Done")
    assert not page.resume_button.isEnabled()
    assert "Done" in page.notice.text()


def test_a_prepared_send_is_cancelled_from_the_page_after_asking(
    gui: Gui, qtbot: QtBot, school: dict[str, Any]
) -> None:
    services = gui.bridge.services
    sandbox(gui)
    batch = gui.call(services.messaging.prepare, NOTICE, Audience(grade="5"), channel=Channel.SMS)
    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    assert page.batch_model.data(page.batch_model.index(0, 3)) == "Prepared, not sent"
    assert page.resume_button.text() == "Send…"

    cancelling = tasks.start(page.cancel(), owner=page)
    gui.answer(page, "Keep it")
    assert gui.run(cancelling) is None
    assert gui.call(services.messaging.batch, batch.id).status == "prepared"

    cancelling = tasks.start(page.cancel(), owner=page)
    gui.answer(page, "Cancel the send")
    assert gui.run(cancelling).status == "cancelled"
    gui.wait_until(lambda: page.batch_model.data(page.batch_model.index(0, 3)) == "Cancelled")
    assert not page.cancel_button.isEnabled()


def test_opt_outs_are_listed_added_and_removed(
    gui: Gui, qtbot: QtBot, school: dict[str, Any]
) -> None:
    services = gui.bridge.services
    page = opened(gui, qtbot, MessagesPage(gui.bridge))
    showing = tasks.start(page.open_opt_outs(), owner=page)
    dialog = gui.find(OptOutsDialog, page)
    qtbot.keyClicks(dialog.address, "12")
    assert gui.run(dialog.add()) is False
    assert "not a valid phone number" in dialog.problem.text()
    dialog.address.setText("077 1000002")
    assert gui.run(dialog.add()) is True
    assert dialog.model.rowCount() == 1
    assert dialog.model.data(dialog.model.index(0, 1)) == e164_of(2)
    assert dialog.model.data(dialog.model.index(0, 2)) == "the office"
    assert gui.call(services.messaging.opt_outs)[0][:2] == ("sms", e164_of(2))

    dialog.table.selectRow(0)
    removing = tasks.start(dialog.remove(dialog.table.current_record()), owner=dialog)
    gui.answer(dialog, "Remove the opt-out")
    assert gui.run(removing) is True
    assert dialog.model.rowCount() == 0
    assert gui.call(services.messaging.opt_outs) == []
    dialog.reject()
    gui.run(showing)


# --- templates ------------------------------------------------------------------------------------


def template_page(gui: Gui, qtbot: QtBot, name: str) -> TemplatesPage:
    page: TemplatesPage = opened(gui, qtbot, TemplatesPage(gui.bridge))
    assert page.states.state == "content"
    template = next(t for t in page.model.records() if t.name == name)
    page.table.select_key(template.id)
    assert page.editing is not None
    assert page.editing.id == template.id
    return page


def test_a_shona_sms_text_is_written_with_its_preview_and_counter_following(
    gui: Gui, qtbot: QtBot, light: None
) -> None:
    services = gui.bridge.services
    page = template_page(gui, qtbot, "Lesson reminder")
    assert [page.variant_list.item(n).text() for n in range(page.variant_list.count())] == [
        "English (en) · E-mail",
        "English (en) · SMS",
    ]
    page.language.setCurrentIndex(page.language.findData("sn"))
    page.channel.setCurrentIndex(page.channel.findData("sms"))
    qtbot.mouseClick(page.add_button, Qt.MouseButton.LeftButton)

    assert page.variant_list.currentItem().text() == "Shona (sn) · SMS"
    assert page.text.toPlainText().startswith("Reminder: {{ student.first_name }}")  # from English
    assert page.counter.isVisibleTo(page)
    assert not page.subject.isVisibleTo(page)
    page.text.clear()
    qtbot.keyClicks(page.text, "Mhoro {{ guardian.first_name }}! {{ student.first_name }} ")
    qtbot.keyClicks(page.text, "ane {{ lesson.title }} {{ lesson.starts }}. {{ school.name }}")
    gui.wait_until(
        lambda: "Mhoro Tendai! Rudo ane Violin, Grade 5" in page.preview_view.toPlainText()
    )
    assert page.counter.text().startswith("1 SMS · GSM-7 · ")
    assert page.dirty
    assert page.save_button.isEnabled()

    page.text.setPlainText(page.text.toPlainText() + " Tinokutendai kwazvo. " * 5)
    gui.wait_until(lambda: page.counter.text().startswith("2 SMS parts · GSM-7"))
    page.text.setPlainText(page.text.toPlainText() + " “Makorokoto!”")
    gui.wait_until(lambda: "UCS-2" in page.counter.text())
    assert page.shown is not None
    assert page.shown.sms is not None
    assert page.counter.text().startswith(f"{page.shown.sms.segments} SMS parts · UCS-2")
    assert page.counter.text().endswith("160 and 153): “ ”. Replace them to send fewer parts.")
    assert page.problems.isHidden()
    page.resize(1280, 820)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    gui.save(page, "templates")
    assert page.grab().save(str(SCREENSHOTS / "templates.png"))

    saved = gui.run(page.save())

    assert saved is not None
    assert page.notice.text() == "Saved Lesson reminder."
    assert not page.dirty
    stored = gui.call(services.templates.template, "Lesson reminder")
    shona = next(v for v in stored.variants if v.language == "sn")
    assert shona.channel is Channel.SMS
    assert shona.text.startswith("Mhoro {{ guardian.first_name }}!")
    assert page.table.proxy.index(page.table.currentIndex().row(), 1).data() == (
        "E-mail, SMS · en, sn"
    )


def test_a_sandbox_escape_in_a_template_is_shown_as_a_problem_not_a_crash(
    gui: Gui, qtbot: QtBot
) -> None:
    page = template_page(gui, qtbot, "Payment receipt")
    page.variant_list.setCurrentRow(1)  # English SMS
    page.text.setPlainText("{{ ''.__class__.__mro__ }}")
    gui.wait_until(lambda: page.problems.isVisibleTo(page))
    assert "uses something templates may not use" in page.problems.text()
    assert "uses something templates may not use" in page.preview_view.toPlainText()
    assert "<class" not in page.preview_view.toPlainText()

    page.text.setPlainText("{{ oops ")
    gui.wait_until(lambda: "has a mistake on line 1" in page.problems.text())
    assert gui.run(page.save()) is None
    assert "has a mistake on line 1" in page.problems.text()
    stored = gui.call(gui.bridge.services.templates.template, "Payment receipt")
    assert "oops" not in next(v for v in stored.variants if v.channel is Channel.SMS).text


def test_a_new_template_without_a_name_shows_the_problem_beside_the_name(
    gui: Gui, qtbot: QtBot
) -> None:
    page: TemplatesPage = opened(gui, qtbot, TemplatesPage(gui.bridge))
    qtbot.mouseClick(page.new_button, Qt.MouseButton.LeftButton)
    assert page.new
    assert page.name.text() == ""
    page.text.setPlainText("Hello {{ guardian.first_name }}")
    assert gui.run(page.save()) is None
    assert page.name_error.text() == "A template needs a name."
    assert "needs a subject" in page.problems.text()
    page.name.setText("Welcome")
    page.subject.setText("Welcome to {{ school.name }}")
    page._changed()
    saved = gui.run(page.save())
    assert saved is not None
    assert saved.name == "Welcome"
    gui.wait_until(lambda: page.table.current_record() is not None)
    assert page.table.current_record().id == saved.id


def test_deleting_a_template_asks_first(gui: Gui, qtbot: QtBot, school: dict[str, Any]) -> None:
    page = template_page(gui, qtbot, NOTICE)
    deleting = tasks.start(page.delete(), owner=page)
    gui.answer(page, "Delete")
    assert gui.run(deleting) is True
    names = [t.name for t in gui.call(gui.bridge.services.templates.templates)]
    assert NOTICE not in names
    assert NOTICE not in [t.name for t in page.model.records()]
    assert page.editing is not None
    assert page.editing.name != NOTICE
