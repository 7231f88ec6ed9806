"""Students and their guardians: the list, a detail panel with the family's contacts, and the
dialogs to add and edit both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import date
from html import escape
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import FieldError
from app.domain.school import (
    Channel,
    GuardianDraft,
    GuardianLink,
    GuardianRecord,
    StudentDraft,
    StudentRecord,
)
from app.domain.validation import parse_date
from app.services.csv_transfer import CsvKind
from app.services.school import TOPIC_GUARDIANS, TOPIC_STUDENTS
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import FieldProblems, RecordDialog, line_edit, run_dialog
from app.ui.formatting import day
from app.ui.records_page import RecordsPage
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import PAUSED

RELATIONSHIPS = ("mother", "father", "grandmother", "grandfather", "aunt", "uncle", "guardian")
LANGUAGES = (("en", "English"), ("sn", "Shona"), ("nd", "Ndebele"))
CHANNEL_LABELS = {Channel.EMAIL: "E-mail", Channel.SMS: "SMS", Channel.WHATSAPP: "WhatsApp"}


def age_on(born: date | None, today: date) -> int | None:
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


class GuardianDialog(RecordDialog):
    def __init__(
        self,
        save: Callable[[GuardianDraft], Awaitable[GuardianRecord]],
        record: GuardianRecord | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Edit guardian" if record else "New guardian", save, parent)
        draft = record.draft() if record else GuardianDraft("", "")
        self.first_name = self.add_field("first_name", "First name", line_edit(draft.first_name))
        self.last_name = self.add_field("last_name", "Last name", line_edit(draft.last_name))
        self.email = self.add_field("email", "E-mail", line_edit(draft.email, "name@example.org"))
        self.phone = self.add_field("phone", "Phone", line_edit(draft.phone, "+263 77 123 4567"))
        self.channel = QComboBox()
        for channel, label in CHANNEL_LABELS.items():
            self.channel.addItem(label, channel)
        self.channel.setCurrentIndex(list(CHANNEL_LABELS).index(draft.preferred_channel))
        self.add_field("preferred_channel", "Reach them by", self.channel)
        self.language = QComboBox()
        self.language.setEditable(True)
        for code, label in LANGUAGES:
            self.language.addItem(f"{label} ({code})", code)
        index = self.language.findData(draft.language)
        if index >= 0:
            self.language.setCurrentIndex(index)
        else:
            self.language.setEditText(draft.language)
        self.add_field("language", "Language", self.language, "Messages use this language.")
        self.ref = self.add_field("ref", "Reference", line_edit(draft.ref, "given automatically"))

    def _language(self) -> str:
        """The code of a listed language, or whatever code was typed."""
        index = self.language.findText(self.language.currentText())
        return (
            str(self.language.itemData(index))
            if index >= 0
            else self.language.currentText().strip()
        )

    def draft(self) -> GuardianDraft:
        return GuardianDraft(
            first_name=self.first_name.text(),
            last_name=self.last_name.text(),
            ref=self.ref.text().strip(),
            email=self.email.text().strip(),
            phone=self.phone.text().strip(),
            preferred_channel=Channel(self.channel.currentData()),
            language=self._language(),
        )


class GuardianPicker(QDialog):
    """Choose an existing guardian (searchable) and how they are related to the student."""

    def __init__(self, guardians: Sequence[GuardianRecord], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add an existing guardian")
        self.resize(560, 420)
        layout = QVBoxLayout(self)
        self.search = line_edit(placeholder="Search by name, phone or e-mail…")
        layout.addWidget(self.search)
        self.model: RecordModel[GuardianRecord] = RecordModel(
            [
                Column("Name", lambda g: g.name, stretch=True),
                Column("Phone", lambda g: g.phone),
                Column("E-mail", lambda g: g.email),
            ],
            search=lambda g: " ".join(link.student_name for link in g.students),
        )
        self.model.set_records(guardians)
        self.table = RecordTable(self.model)
        self.search.textChanged.connect(self.table.proxy.set_query)
        self.table.opened.connect(lambda _record: self.accept())
        layout.addWidget(self.table, 1)
        form = QFormLayout()
        self.relationship = QComboBox()
        self.relationship.setEditable(True)
        self.relationship.addItems(RELATIONSHIPS)
        form.addRow("Relationship", self.relationship)
        layout.addLayout(form)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        if guardians:
            self.table.selectRow(0)

    @property
    def chosen(self) -> GuardianRecord | None:
        record = self.table.current_record()
        return record if isinstance(record, GuardianRecord) else None


class StudentDialog(RecordDialog):
    def __init__(
        self,
        bridge: EngineBridge,
        guardians: Sequence[GuardianRecord],
        record: StudentRecord | None = None,
        parent: QWidget | None = None,
    ) -> None:
        school = bridge.services.school

        async def save(draft: StudentDraft) -> StudentRecord:
            if record is None:
                return await bridge.call(school.save_student, draft)
            return await bridge.call(
                school.save_student, draft, student_id=record.id, version=record.version
            )

        super().__init__("Edit student" if record else "New student", save, parent)
        self.setMinimumWidth(580)
        self.bridge = bridge
        self.guardians = {guardian.id: guardian for guardian in guardians}
        draft = record.draft() if record else StudentDraft("", "")
        self.first_name = self.add_field("first_name", "First name", line_edit(draft.first_name))
        self.last_name = self.add_field("last_name", "Last name", line_edit(draft.last_name))
        born = draft.date_of_birth.isoformat() if draft.date_of_birth else ""
        self.date_of_birth = self.add_field(
            "date_of_birth", "Date of birth", line_edit(born, "YYYY-MM-DD, e.g. 2014-03-07")
        )
        self.grade = self.add_field(
            "grade", "Grade or class", line_edit(draft.grade, "e.g. Grade 5")
        )
        self.email = self.add_field("email", "E-mail", line_edit(draft.email, "optional"))
        self.phone = self.add_field("phone", "Phone", line_edit(draft.phone, "optional"))
        self.active = QCheckBox("Active (takes lessons)")
        self.active.setChecked(draft.active)
        self.add_field("active", "", self.active)
        self.notes = QPlainTextEdit(draft.notes)
        self.notes.setFixedHeight(60)
        self.add_field("notes", "Notes", self.notes)
        self.ref = self.add_field("ref", "Reference", line_edit(draft.ref, "given automatically"))

        self.links: list[GuardianLink] = list(draft.guardians)
        box = QWidget()
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        self.guardian_list = QListWidget()
        self.guardian_list.setFixedHeight(96)
        self.guardian_list.setToolTip("Double-click a guardian to change their details.")
        self.guardian_list.itemDoubleClicked.connect(
            lambda item: tasks.start(self.edit_guardian(self.guardian_list.row(item)), owner=self)
        )
        column.addWidget(self.guardian_list)
        buttons = QHBoxLayout()
        self.add_existing = QPushButton("Add existing…")
        self.add_existing.clicked.connect(lambda: tasks.start(self.pick_guardian(), owner=self))
        self.add_new = QPushButton("New guardian…")
        self.add_new.clicked.connect(lambda: tasks.start(self.new_guardian(), owner=self))
        self.make_primary = QPushButton("Send invoices")
        self.make_primary.clicked.connect(self._make_primary)
        self.remove_link = QPushButton("Remove")
        self.remove_link.clicked.connect(self._remove)
        for button in (self.add_existing, self.add_new, self.make_primary, self.remove_link):
            buttons.addWidget(button)
        column.addLayout(buttons)
        self.add_field("guardians", "Guardians", box, "Invoices go to the guardian marked ★.")
        self._show_links()

    def _show_links(self) -> None:
        self.guardian_list.clear()
        for link in self.links:
            star = " ★" if link.is_primary else ""
            item = QListWidgetItem(f"{link.guardian_name} — {link.relationship}{star}")
            item.setData(Qt.ItemDataRole.UserRole, link.guardian_id)
            self.guardian_list.addItem(item)

    def _selected(self) -> int:
        return self.guardian_list.currentRow()

    def _make_primary(self) -> None:
        row = self._selected()
        if row >= 0:
            self.links = [
                GuardianLink(**{**link.__dict__, "is_primary": index == row})
                for index, link in enumerate(self.links)
            ]
            self._show_links()

    def _remove(self) -> None:
        row = self._selected()
        if row >= 0:
            del self.links[row]
            self._show_links()

    def add_link(self, guardian: GuardianRecord, relationship: str) -> None:
        if any(link.guardian_id == guardian.id for link in self.links):
            self.show_errors([FieldError("guardians", f"{guardian.name} is already listed.")])
            return
        self.guardians[guardian.id] = guardian
        self.links.append(
            GuardianLink(
                guardian_id=guardian.id,
                student_id=0,
                relationship=relationship or "guardian",
                is_primary=not any(link.is_primary for link in self.links),
                guardian_name=guardian.name,
            )
        )
        self._show_links()

    async def pick_guardian(self) -> None:
        picker = GuardianPicker(list(self.guardians.values()), self)
        if await run_dialog(picker) == QDialog.DialogCode.Accepted and picker.chosen:
            self.add_link(picker.chosen, picker.relationship.currentText().strip())

    async def new_guardian(self) -> None:
        school = self.bridge.services.school
        dialog = GuardianDialog(
            lambda draft: self.bridge.call(school.save_guardian, draft), None, self
        )
        if await run_dialog(dialog) == QDialog.DialogCode.Accepted and dialog.saved:
            self.add_link(dialog.saved, "guardian")

    async def edit_guardian(self, row: int) -> None:
        link = self.links[row]
        guardian = self.guardians.get(link.guardian_id)
        if guardian is None:
            return
        school = self.bridge.services.school

        async def save(draft: GuardianDraft) -> GuardianRecord:
            return await self.bridge.call(
                school.save_guardian, draft, guardian_id=guardian.id, version=guardian.version
            )

        dialog = GuardianDialog(save, guardian, self)
        if await run_dialog(dialog) == QDialog.DialogCode.Accepted and dialog.saved:
            self.guardians[guardian.id] = dialog.saved
            self.links[row] = replace(link, guardian_name=dialog.saved.name)
            self._show_links()

    def draft(self) -> StudentDraft:
        born: date | None = None
        text = self.date_of_birth.text().strip()
        if text:
            try:
                born = parse_date(text)
            except ValueError as exc:
                raise FieldProblems([FieldError("date_of_birth", str(exc))]) from None
        return StudentDraft(
            first_name=self.first_name.text(),
            last_name=self.last_name.text(),
            ref=self.ref.text().strip(),
            date_of_birth=born,
            grade=self.grade.text(),
            email=self.email.text().strip(),
            phone=self.phone.text().strip(),
            notes=self.notes.toPlainText(),
            active=self.active.isChecked(),
            guardians=tuple(self.links),
        )


class StudentDetail(QWidget):
    """The selected student and how to reach their family."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumWidth(280)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 0, 0, 0)
        self.name = QLabel()
        self.name.setObjectName("EmptyTitle")
        self.facts = QLabel()
        self.facts.setObjectName("Muted")
        self.facts.setWordWrap(True)
        self.family = QLabel()
        self.family.setWordWrap(True)
        self.family.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setObjectName("Muted")
        for widget in (self.name, self.facts, self.family, self.notes):
            layout.addWidget(widget)
        layout.addStretch(1)

    def show_student(
        self, student: StudentRecord | None, guardians: dict[int, GuardianRecord], locale: str
    ) -> None:
        if student is None:
            self.name.setText("")
            self.facts.setText("Select a student to see their family's contacts.")
            self.family.setText("")
            self.notes.setText("")
            return
        self.name.setText(student.name)
        facts = [student.ref, student.grade]
        age = age_on(student.date_of_birth, date.today())
        if student.date_of_birth and age is not None:
            facts.append(f"born {day(student.date_of_birth, locale)} (age {age})")
        facts.append("active" if student.active else "inactive")
        own = " · ".join(part for part in (student.email, student.phone) if part)
        self.facts.setText(" · ".join(part for part in facts if part) + (f"\n{own}" if own else ""))
        lines = []
        for link in student.guardians:
            guardian = guardians.get(link.guardian_id)
            star = " ★ invoices" if link.is_primary else ""
            name, relationship = escape(link.guardian_name), escape(link.relationship)
            lines.append(f"<b>{name}</b> — {relationship}{star}")
            if guardian is not None:
                reach = CHANNEL_LABELS[guardian.preferred_channel]
                contact = " · ".join(
                    escape(part) for part in (guardian.phone, guardian.email) if part
                )
                lines.append(f"{contact}<br><i>prefers {reach}</i>")
        self.family.setText("<br>".join(lines) or "No guardian on record.")
        self.notes.setText(student.notes)


class StudentsPage(RecordsPage):
    key = "students"
    title = "Students"
    icon_name = "students"
    noun = "student"
    plural = "students"
    topics = (TOPIC_STUDENTS, TOPIC_GUARDIANS)
    csv_kinds = (CsvKind.STUDENTS, CsvKind.GUARDIANS)
    empty_text = (
        "Add your students one by one with their guardians, or import them from a spreadsheet: "
        "first students, then guardians (each guardian row lists the students' references)."
    )

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        self.guardians: dict[int, GuardianRecord] = {}
        super().__init__(bridge, parent)
        self.include_inactive = QCheckBox("Include inactive students")
        self.include_inactive.toggled.connect(self._apply_filter)
        self.filters.addWidget(self.include_inactive)
        self.filters.addStretch(1)
        self.detail = StudentDetail()
        self.split.addWidget(self.detail)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 1)
        self._apply_filter(False)

    def columns(self) -> list[Column[Any]]:
        def primary(student: StudentRecord) -> GuardianLink | None:
            return next((link for link in student.guardians if link.is_primary), None)

        def guardian_phone(student: StudentRecord) -> str:
            link = primary(student)
            guardian = self.guardians.get(link.guardian_id) if link else None
            return guardian.phone if guardian else ""

        return [
            Column("Ref", lambda s: s.ref),
            Column(
                "Name",
                lambda s: s.name,
                sort=lambda s: (s.last_name.casefold(), s.first_name.casefold()),
            ),
            Column("Grade", lambda s: s.grade),
            Column(
                "Invoices to",
                lambda s: link.guardian_name if (link := primary(s)) else "—",
                stretch=True,
            ),
            Column("Guardian's phone", guardian_phone),
            Column(
                "Status",
                lambda s: "active" if s.active else "inactive",
                color=lambda s: None if s.active else PAUSED,
            ),
        ]

    def search_text(self, record: StudentRecord) -> str:
        parts = [record.email, record.phone, record.notes]
        for link in record.guardians:
            guardian = self.guardians.get(link.guardian_id)
            parts.append(link.guardian_name)
            if guardian:
                parts.extend((guardian.phone, guardian.email))
        return " ".join(parts)

    def _apply_filter(self, include_inactive: bool) -> None:
        self.table.proxy.set_predicate(None if include_inactive else (lambda s: s.active))
        self.update_footer()

    async def fetch(self) -> list[StudentRecord]:
        school = self.bridge.services.school
        guardians = await self.bridge.call(school.guardians)
        self.guardians = {guardian.id: guardian for guardian in guardians}
        return await self.bridge.call(school.students)

    def show_detail(self, record: Any) -> None:
        if hasattr(self, "detail"):
            locale = self.bridge.services.settings.get("school.locale")
            self.detail.show_student(record, self.guardians, locale)

    def make_dialog(self, record: StudentRecord | None) -> StudentDialog:
        return StudentDialog(self.bridge, list(self.guardians.values()), record, self)

    async def remove(self, record: StudentRecord) -> None:
        await self.bridge.call(self.bridge.services.school.delete_student, record.id)
