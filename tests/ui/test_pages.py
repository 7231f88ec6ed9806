"""Each page opens, shows its data or says how to start, and edits records through its dialogs."""

from __future__ import annotations

from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.domain.clock import today_in
from app.domain.school import (
    Channel,
    GuardianDraft,
    GuardianLink,
    InvoiceDraft,
    InvoiceLine,
    LessonDraft,
    StudentDraft,
    TeacherDraft,
)
from app.services.school import week_bounds
from app.ui import tasks
from app.ui.main_window import MainWindow
from app.views.guardians import GuardiansPage
from app.views.invoices import InvoiceDialog, InvoicesPage
from app.views.lessons import LessonDialog, LessonsPage, RoomDialog
from app.views.students import GuardianDialog, GuardianPicker, StudentDialog, StudentsPage
from app.views.teachers import TeacherDialog, TeachersPage
from tests.ui.conftest import Gui

ZONE = "Africa/Harare"


def small_school(gui: Gui) -> dict:
    services = gui.bridge.services
    gui.call(services.settings.set, "school.timezone", ZONE)
    gui.call(services.settings.set, "school.locale", "en_ZW")
    school = services.school
    mother = gui.call(
        school.save_guardian,
        GuardianDraft("Rudo", "Moyo", email="rudo@example.org", phone="+263 77 123 4567"),
    )
    tendai = gui.call(
        school.save_student,
        StudentDraft(
            "Tendai", "Moyo", grade="Grade 5", guardians=(GuardianLink(mother.id, 0, "mother"),)
        ),
    )
    chipo = gui.call(school.save_student, StudentDraft("Chipo", "Dube", grade="Form 1"))
    ann = gui.call(school.save_teacher, TeacherDraft("Ann", "Ncube", subjects="Piano"))
    room = gui.call(school.add_room, "Studio 1")
    monday, _ = week_bounds(today_in(ZoneInfo(ZONE)), ZoneInfo(ZONE))  # the school's week
    start = monday + timedelta(hours=14)
    lesson = gui.call(
        school.save_lesson,
        LessonDraft(
            "Piano — Tendai",
            ann.id,
            start,
            start + timedelta(minutes=45),
            room_id=room.id,
            student_ids=(tendai.id,),
        ),
    )
    invoice = gui.call(
        school.save_invoice,
        InvoiceDraft(
            "USD",
            date.today(),
            date.today() + timedelta(days=14),
            (InvoiceLine("Piano lessons", 4, 2000),),
            student_id=tendai.id,
            guardian_id=mother.id,
        ),
    )
    return {
        "mother": mother,
        "tendai": tendai,
        "chipo": chipo,
        "ann": ann,
        "room": room,
        "lesson": lesson,
        "invoice": invoice,
        "start": start,
    }


def test_every_page_shows_the_schools_data(gui: Gui, window: MainWindow) -> None:
    small_school(gui)
    expected_rows = {"students": 2, "teachers": 1, "lessons": 1, "invoices": 1}
    for page in window.pages:
        window.show_page(page.key)
        gui.run(page.settle())
        # Without a provider connection the dashboard, the request log, the events and the
        # payment pages say how to start; so do the reconciliation pages before a first run.
        waiting = (
            "dashboard",
            "requests",
            "events",
            "payments",
            "billing",
            "routing-rules",
            "gateway-analytics",
            "reconciliation",
            "reconciliation-exceptions",
            "calendar-sync",
            "conflicts",
            "jobs",  # the tests' engine schedules nothing
            "messages",  # nothing sent yet
            "outbound-webhooks",  # no endpoint registered
            "approvals",  # nothing waits for a second person
            "backups",  # none taken yet
        )
        expected = "empty" if page.key in waiting else "content"
        assert page.states.state == expected, page.key
        if page.key in expected_rows:
            assert page.table.proxy.rowCount() == expected_rows[page.key], page.key
        gui.save(window, page.key)
    overview = window.page("overview")
    assert overview.students.value.text() == "2"
    assert "US$80.00" in overview.open.detail.text()


def test_an_empty_school_gets_an_empty_state_on_every_page(gui: Gui, window: MainWindow) -> None:
    for page in window.pages:
        window.show_page(page.key)
        gui.run(page.settle())
        # The built-in message templates and automation recipes are there from the start.
        # So is the service user, who the engine and the command line act as.
        from_the_start = ("templates", "automations", "users", "settings")
        assert page.states.state == ("content" if page.key in from_the_start else "empty"), page.key
        gui.save(window, f"{page.key}-empty")


def test_the_empty_overview_leads_to_the_students_page(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    overview = window.page("overview")
    gui.run(overview.settle())
    from PySide6.QtWidgets import QPushButton

    button = next(
        b for b in overview.states.findChildren(QPushButton) if b.text() == "Add students"
    )
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert window.current_page.key == "students"


def test_a_student_is_added_through_the_dialog_and_selected(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    page: StudentsPage = window.show_page("students")  # type: ignore[assignment]
    gui.run(page.settle())
    task = tasks.start(page.open_editor(None), owner=page)
    dialog = gui.find(StudentDialog, page)
    qtbot.keyClicks(dialog.first_name, "Nyasha")
    qtbot.keyClicks(dialog.last_name, "Gumbo")
    qtbot.keyClicks(dialog.date_of_birth, "2015-06-01")
    qtbot.keyClicks(dialog.grade, "Grade 4")
    gui.save(dialog, "student-dialog")
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    saved = gui.run(task)
    assert saved.name == "Nyasha Gumbo"
    assert saved.ref == "S-0001"
    assert page.states.state == "content"
    assert page.table.current_record().id == saved.id
    assert "Grade 4" in page.detail.facts.text()


def test_problems_are_shown_beside_their_fields_and_nothing_is_saved(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    page: StudentsPage = window.show_page("students")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(None)
    dialog = gui.find(StudentDialog, page)
    qtbot.keyClicks(dialog.email, "tendai@")
    qtbot.keyClicks(dialog.date_of_birth, "07/03/2014")
    assert gui.run(dialog.submit()) is False
    assert "YYYY-MM-DD" in dialog.error_text("date_of_birth")
    dialog.date_of_birth.clear()
    assert gui.run(dialog.submit()) is False
    assert dialog.error_text("first_name") == "First name is required."
    assert "not an e-mail address" in dialog.error_text("email")
    assert dialog.isVisible()
    gui.save(dialog, "student-dialog-errors")
    dialog.reject()
    assert gui.call(gui.bridge.services.school.students) == []


def test_editing_a_student_links_guardians_and_shows_them(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    father = gui.call(
        gui.bridge.services.school.save_guardian,
        GuardianDraft("Tafadzwa", "Dube", phone="+263 71 222 3333", preferred_channel=Channel.SMS),
    )
    page: StudentsPage = window.show_page("students")  # type: ignore[assignment]
    gui.run(page.settle())
    page.table.select_key(data["chipo"].id)
    qtbot.keyClick(page.table, Qt.Key.Key_Return)
    dialog = gui.find(StudentDialog, page)
    assert dialog.first_name.text() == "Chipo"
    picking = tasks.start(dialog.pick_guardian())
    picker = gui.find(GuardianPicker, dialog)
    qtbot.keyClicks(picker.search, "tafadzwa")
    picker.table.selectRow(0)
    picker.relationship.setCurrentText("father")
    picker.accept()
    gui.run(picking)
    assert dialog.guardian_list.item(0).text() == "Tafadzwa Dube — father ★"
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: not dialog.isVisible())
    gui.wait_until(lambda: "Tafadzwa Dube" in page.detail.family.text())
    assert "prefers SMS" in page.detail.family.text()
    stored = gui.call(gui.bridge.services.school.student, data["chipo"].id)
    assert [
        (link.guardian_id, link.relationship, link.is_primary) for link in stored.guardians
    ] == [(father.id, "father", True)]


def test_a_new_guardian_made_from_the_student_dialog_is_linked(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    page: StudentsPage = window.show_page("students")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(None)
    dialog = gui.find(StudentDialog, page)
    creating = tasks.start(dialog.new_guardian())
    guardian_dialog = gui.find(GuardianDialog, dialog)
    qtbot.keyClicks(guardian_dialog.first_name, "Sipho")
    qtbot.keyClicks(guardian_dialog.last_name, "Ndlovu")
    qtbot.keyClicks(guardian_dialog.email, "sipho@example.org")
    guardian_dialog.language.setCurrentIndex(2)
    qtbot.mouseClick(guardian_dialog.save_button, Qt.MouseButton.LeftButton)
    gui.run(creating)
    assert guardian_dialog.saved.language == "nd"
    assert dialog.links[0].guardian_name == "Sipho Ndlovu"


def test_saving_over_someone_elses_change_is_refused_in_plain_words(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    page: TeachersPage = window.show_page("teachers")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(page.table.current_record())
    dialog = gui.find(TeacherDialog, page)
    gui.call(
        gui.bridge.services.school.save_teacher,
        TeacherDraft("Ann", "Ncube-Moyo"),
        teacher_id=data["ann"].id,
        version=data["ann"].version,
    )
    dialog.subjects.setText("Piano, Theory")
    assert gui.run(dialog.submit()) is False
    assert "Someone else changed this teacher" in dialog.banner.text()


def test_a_double_booked_lesson_is_refused_beside_the_teacher(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    page: LessonsPage = window.show_page("lessons")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(None)
    dialog = gui.find(LessonDialog, page)
    start = data["start"].astimezone(ZoneInfo(ZONE))
    dialog.title.setText("Theory — Chipo")
    dialog.day.setDate(start.date())
    dialog.start.setTime(start.time())
    dialog.check_student(data["chipo"].id)
    assert gui.run(dialog.submit()) is False
    assert "Ann Ncube already teaches “Piano — Tendai”" in dialog.error_text("teacher_id")
    dialog.start.setTime((start + timedelta(hours=1)).time())
    assert gui.run(dialog.submit()) is True
    gui.wait_until(lambda: page.table.proxy.rowCount() == 2)
    gui.save(page, "lessons-two")


def test_a_lesson_made_to_repeat_every_week_is_one_lesson_a_week(
    gui: Gui, window: MainWindow
) -> None:
    data = small_school(gui)
    page: LessonsPage = window.show_page("lessons")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(None)
    dialog = gui.find(LessonDialog, page)
    start = data["start"].astimezone(ZoneInfo(ZONE)) + timedelta(hours=2)
    dialog.title.setText("Cello — Chipo")
    dialog.day.setDate(start.date())
    dialog.start.setTime(start.time())
    assert not dialog.weeks.isEnabled()  # a lesson does not repeat unless asked
    dialog.repeat.setCurrentIndex(1)
    dialog.weeks.setValue(3)
    gui.save(dialog, "lesson-repeating")

    assert gui.run(dialog.submit()) is True

    lessons = gui.call(
        gui.bridge.services.school.lessons, start - timedelta(days=1), start + timedelta(weeks=4)
    )
    cello = [lesson for lesson in lessons if lesson.title == "Cello — Chipo"]
    assert [lesson.starts_at for lesson in cello] == [
        start + timedelta(weeks=week) for week in range(3)
    ]
    assert len({lesson.series_id for lesson in cello}) == 1
    page.edit(cello[0])
    edit = gui.find(LessonDialog, page)
    assert not edit.weeks.isVisible()  # an occurrence is changed on its own


def test_the_lessons_page_moves_week_by_week(gui: Gui, window: MainWindow, qtbot: QtBot) -> None:
    small_school(gui)
    page: LessonsPage = window.show_page("lessons")  # type: ignore[assignment]
    gui.run(page.settle())
    this_week = page.week_label.text()
    assert page.table.proxy.rowCount() == 1
    qtbot.mouseClick(page.next_week, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: page.week_label.text() != this_week)
    gui.run(page.settle())
    assert page.table.proxy.rowCount() == 0
    assert page.states.state == "content"  # an empty week is still a week, not "no lessons yet"
    qtbot.mouseClick(page.this_week, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: page.table.proxy.rowCount() == 1)


def test_an_invoice_is_written_with_lines_in_the_schools_currency(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    page: InvoicesPage = window.show_page("invoices")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(None)
    dialog = gui.find(InvoiceDialog, page)
    dialog.student.setCurrentIndex(dialog.student.findData(data["tendai"].id))
    assert dialog.bill_to.currentData() == data["mother"].id  # the primary guardian is billed
    dialog.lines.item(0, 0).setText("Piano lessons — December")
    dialog.lines.item(0, 1).setText("4")
    dialog.lines.item(0, 2).setText("20.005")
    assert gui.run(dialog.submit()) is False
    assert "too many decimals" in dialog.error_text("lines")
    dialog.lines.item(0, 2).setText("20.50")
    assert dialog.total.text() == "Total: US$82.00"
    gui.save(dialog, "invoice-dialog")
    assert gui.run(dialog.submit()) is True
    gui.wait_until(lambda: page.table.proxy.rowCount() == 2)
    assert dialog.saved.number == f"INV-{date.today().year}-0002"
    page.status_filter.setCurrentText("Open")
    assert page.table.proxy.rowCount() == 2
    page.status_filter.setCurrentText("Paid")
    assert page.table.proxy.rowCount() == 0


def test_deleting_asks_first_and_explains_a_refusal(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    page: StudentsPage = window.show_page("students")  # type: ignore[assignment]
    gui.run(page.settle())
    deleting = tasks.start(page.delete(data["tendai"]))
    gui.answer(page, "Delete")
    assert gui.run(deleting) is False
    refusal = gui.find(QMessageBox, page)
    assert "1 invoice(s)" in refusal.text()
    refusal.close()

    deleting = tasks.start(page.delete(data["chipo"]))
    gui.answer(page, "Delete")
    assert gui.run(deleting) is True
    gui.wait_until(lambda: page.model.rowCount() == 1)


def test_search_finds_students_by_their_guardians_phone(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    small_school(gui)
    page: StudentsPage = window.show_page("students")  # type: ignore[assignment]
    gui.run(page.settle())
    qtbot.keyClicks(page.search, "123 4567")
    assert page.table.proxy.rowCount() == 1
    assert page.footer.text() == "1 of 2 students"


def test_a_change_made_elsewhere_refreshes_the_visible_page(gui: Gui, window: MainWindow) -> None:
    page: TeachersPage = window.show_page("teachers")  # type: ignore[assignment]
    gui.run(page.settle())
    assert page.states.state == "empty"
    gui.call(gui.bridge.services.school.save_teacher, TeacherDraft("Ann", "Ncube"))
    gui.wait_until(lambda: page.model.rowCount() == 1)
    assert page.states.state == "content"


def test_a_lesson_across_the_clock_change_keeps_its_length_when_saved_again(
    gui: Gui, window: MainWindow
) -> None:
    services = gui.bridge.services
    gui.call(services.settings.set, "school.timezone", "Europe/London")
    teacher = gui.call(services.school.save_teacher, TeacherDraft("Ann", "Ncube"))
    page: LessonsPage = window.show_page("lessons")  # type: ignore[assignment]
    gui.run(page.settle())
    page.go_to_week(date(2030, 10, 27))
    gui.run(page.settle())
    page.edit(None)
    dialog = gui.find(LessonDialog, page)
    dialog.title.setText("Night rehearsal")
    dialog.teacher.setCurrentIndex(dialog.teacher.findData(teacher.id))
    dialog.day.setDate(date(2030, 10, 27))  # London's clocks go back at 02:00 that night
    dialog.start.setTime(time(0, 30))
    dialog.duration.setValue(180)
    assert gui.run(dialog.submit()) is True
    lesson = dialog.saved
    assert lesson.duration == timedelta(minutes=180)
    for _ in range(2):  # open and save, unchanged, twice
        page.edit(lesson)
        again = gui.find(LessonDialog, page)
        assert again.duration.value() == 180
        assert gui.run(again.submit()) is True
        lesson = again.saved
    assert lesson.duration == timedelta(minutes=180)


def test_an_existing_invoice_is_edited_in_a_comma_decimal_locale(
    gui: Gui, window: MainWindow
) -> None:
    data = small_school(gui)
    gui.call(gui.bridge.services.settings.set, "school.locale", "de_DE")
    page: InvoicesPage = window.show_page("invoices")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(data["invoice"])
    dialog = gui.find(InvoiceDialog, page)
    assert dialog.lines.item(0, 2).text() == "20,00"
    dialog.lines.item(0, 1).setText("5")
    assert gui.run(dialog.submit()) is True
    assert dialog.saved.total_minor == 10000
    assert dialog.saved.version == data["invoice"].version + 1


def test_an_edited_lesson_moves_and_keeps_its_students(gui: Gui, window: MainWindow) -> None:
    data = small_school(gui)
    page: LessonsPage = window.show_page("lessons")  # type: ignore[assignment]
    gui.run(page.settle())
    page.table.select_key(data["lesson"].id)
    page.edit(page.table.current_record())
    dialog = gui.find(LessonDialog, page)
    dialog.start.setTime(time(16, 0))
    assert gui.run(dialog.submit()) is True
    moved = gui.call(gui.bridge.services.school.lesson, data["lesson"].id)
    assert moved.starts_at.astimezone(ZoneInfo(ZONE)).time() == time(16, 0)
    assert moved.students == ((data["tendai"].id, "Tendai Moyo"),)
    gui.wait_until(lambda: "16:00" in page.table.proxy.index(0, 1).data())


def test_an_absurd_invoice_amount_is_refused_not_crashed_on(gui: Gui, window: MainWindow) -> None:
    data = small_school(gui)
    page: InvoicesPage = window.show_page("invoices")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(data["invoice"])
    dialog = gui.find(InvoiceDialog, page)
    dialog.lines.item(0, 1).setText("1000")
    dialog.lines.item(0, 2).setText("9999999999999")
    assert dialog.total.text() == "Total: —"
    assert gui.run(dialog.submit()) is False
    assert "not a believable amount" in dialog.error_text("lines")


def test_a_guardians_details_are_changed_on_the_guardians_page(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    page: GuardiansPage = window.show_page("guardians")  # type: ignore[assignment]
    gui.run(page.settle())
    assert page.table.proxy.index(0, 2).data() == "Tendai Moyo"  # her children
    page.table.select_key(data["mother"].id)
    qtbot.keyClick(page.table, Qt.Key.Key_Return)
    dialog = gui.find(GuardianDialog, page)
    dialog.phone.setText("+263 77 999 0000")
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: page.table.proxy.index(0, 3).data() == "+263 77 999 0000")


def test_a_guardian_without_invoices_can_be_deleted(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    small_school(gui)
    aunt = gui.call(
        gui.bridge.services.school.save_guardian,
        GuardianDraft("Ruth", "Dube", email="ruth@example.org"),
    )
    page: GuardiansPage = window.show_page("guardians")  # type: ignore[assignment]
    gui.run(page.settle())
    deleting = tasks.start(page.delete(aunt))
    gui.answer(page, "Delete")
    assert gui.run(deleting) is True
    gui.wait_until(lambda: page.model.rowCount() == 1)


def test_a_guardian_is_edited_from_the_student_dialog(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    page: StudentsPage = window.show_page("students")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(gui.call(gui.bridge.services.school.student, data["tendai"].id))
    dialog = gui.find(StudentDialog, page)
    editing = tasks.start(dialog.edit_guardian(0))
    guardian_dialog = gui.find(GuardianDialog, dialog)
    guardian_dialog.first_name.setText("Rudorwashe")
    qtbot.mouseClick(guardian_dialog.save_button, Qt.MouseButton.LeftButton)
    gui.run(editing)
    assert dialog.guardian_list.item(0).text().startswith("Rudorwashe Moyo — mother")


def test_a_room_is_created_from_the_lesson_dialog(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    data = small_school(gui)
    page: LessonsPage = window.show_page("lessons")  # type: ignore[assignment]
    gui.run(page.settle())
    page.edit(None)
    dialog = gui.find(LessonDialog, page)
    creating = tasks.start(dialog.create_room())
    room_dialog = gui.find(RoomDialog, dialog)
    assert gui.run(room_dialog.submit()) is False
    assert room_dialog.error_text("name") == "Room name is required."
    room_dialog.name.setText("Studio 1")
    assert gui.run(room_dialog.submit()) is False
    assert "already a room called Studio 1" in room_dialog.error_text("name")
    room_dialog.name.setText("Marimba Hall")
    room_dialog.capacity.setValue(20)
    qtbot.mouseClick(room_dialog.save_button, Qt.MouseButton.LeftButton)
    gui.run(creating)
    assert dialog.room.currentText() == "Marimba Hall"
    dialog.title.setText("Marimba band")
    start = data["start"].astimezone(ZoneInfo(ZONE)) + timedelta(hours=2)
    dialog.day.setDate(start.date())
    dialog.start.setTime(start.time())
    assert gui.run(dialog.submit()) is True
    assert dialog.saved.room_name == "Marimba Hall"
