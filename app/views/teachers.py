"""Teachers: who teaches what, how to reach them, and the time zone their calendar lives in."""

from __future__ import annotations

import zoneinfo
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QCompleter, QWidget

from app.domain.school import TeacherDraft, TeacherRecord
from app.services.csv_transfer import CsvKind
from app.services.school import TOPIC_TEACHERS
from app.ui.dialogs import RecordDialog, line_edit
from app.ui.records_page import RecordsPage
from app.ui.table import Column
from app.ui.theme import PAUSED

SCHOOL_ZONE = "(the school's time zone)"


class TeacherDialog(RecordDialog):
    def __init__(
        self,
        save: Callable[[TeacherDraft], Awaitable[TeacherRecord]],
        record: TeacherRecord | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Edit teacher" if record else "New teacher", save, parent)
        draft = record.draft() if record else TeacherDraft("", "")
        self.first_name = self.add_field("first_name", "First name", line_edit(draft.first_name))
        self.last_name = self.add_field("last_name", "Last name", line_edit(draft.last_name))
        self.subjects = self.add_field(
            "subjects", "Subjects", line_edit(draft.subjects, "e.g. Piano, Theory")
        )
        self.email = self.add_field("email", "E-mail", line_edit(draft.email, "name@example.org"))
        self.phone = self.add_field("phone", "Phone", line_edit(draft.phone, "+263 77 123 4567"))
        self.timezone = QComboBox()
        self.timezone.setEditable(True)
        self.timezone.addItem(SCHOOL_ZONE)
        self.timezone.addItems(sorted(zoneinfo.available_timezones()))
        completer = self.timezone.completer()
        if completer is not None:
            completer.setFilterMode(Qt.MatchFlag.MatchContains)
            completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.timezone.setCurrentText(draft.timezone or SCHOOL_ZONE)
        self.add_field(
            "timezone",
            "Time zone",
            self.timezone,
            "Only for teachers whose calendar is in another time zone than the school.",
        )
        self.active = QCheckBox("Active (teaching this term)")
        self.active.setChecked(draft.active)
        self.add_field("active", "", self.active)
        self.ref = self.add_field("ref", "Reference", line_edit(draft.ref, "given automatically"))

    def draft(self) -> TeacherDraft:
        zone = self.timezone.currentText().strip()
        return TeacherDraft(
            first_name=self.first_name.text(),
            last_name=self.last_name.text(),
            ref=self.ref.text().strip(),
            email=self.email.text().strip(),
            phone=self.phone.text().strip(),
            subjects=self.subjects.text(),
            timezone="" if zone in ("", SCHOOL_ZONE) else zone,
            active=self.active.isChecked(),
        )


class TeachersPage(RecordsPage):
    key = "teachers"
    title = "Teachers"
    icon_name = "teachers"
    noun = "teacher"
    plural = "teachers"
    topics = (TOPIC_TEACHERS,)
    csv_kinds = (CsvKind.TEACHERS,)
    empty_text = (
        "Add the people who teach, with the subjects they teach, or import them from a "
        "spreadsheet. Lessons are scheduled with a teacher."
    )

    def columns(self) -> list[Column[Any]]:
        return [
            Column("Ref", lambda t: t.ref),
            Column(
                "Name",
                lambda t: t.name,
                sort=lambda t: (t.last_name.casefold(), t.first_name.casefold()),
            ),
            Column("Subjects", lambda t: t.subjects, stretch=True),
            Column("Phone", lambda t: t.phone),
            Column("E-mail", lambda t: t.email),
            Column("Time zone", lambda t: t.timezone or "school's"),
            Column(
                "Status",
                lambda t: "active" if t.active else "inactive",
                color=lambda t: None if t.active else PAUSED,
            ),
        ]

    async def fetch(self) -> list[TeacherRecord]:
        return await self.bridge.call(self.bridge.services.school.teachers)

    def make_dialog(self, record: TeacherRecord | None) -> TeacherDialog:
        school = self.bridge.services.school

        async def save(draft: TeacherDraft) -> TeacherRecord:
            if record is None:
                return await self.bridge.call(school.save_teacher, draft)
            return await self.bridge.call(
                school.save_teacher, draft, teacher_id=record.id, version=record.version
            )

        return TeacherDialog(save, record, self)

    async def remove(self, record: TeacherRecord) -> None:
        await self.bridge.call(self.bridge.services.school.delete_teacher, record.id)
