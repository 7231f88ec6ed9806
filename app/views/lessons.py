"""Lessons, a week at a time, in the school's time zone: who teaches what, where, and to whom."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import QDate, Qt, QTime
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTimeEdit,
    QVBoxLayout,
    QWidget,
)

from app.domain.clock import after, skipped_time, today_in, wall_time
from app.domain.errors import FieldError
from app.domain.school import (
    MAX_WEEKS,
    LessonDraft,
    LessonRecord,
    LessonStatus,
    RoomDraft,
    RoomRecord,
    StudentRecord,
    TeacherRecord,
)
from app.services.csv_transfer import CsvKind
from app.services.school import (
    TOPIC_LESSONS,
    TOPIC_ROOMS,
    TOPIC_STUDENTS,
    TOPIC_TEACHERS,
    week_bounds,
)
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import FieldProblems, RecordDialog, line_edit, run_dialog
from app.ui.formatting import day, time_range, weekday
from app.ui.records_page import RecordsPage
from app.ui.table import RECORD_ROLE, Column
from app.ui.theme import HEALTHY, PAUSED

STATUS_COLORS = {
    LessonStatus.SCHEDULED: None,
    LessonStatus.COMPLETED: HEALTHY,
    LessonStatus.CANCELLED: PAUSED,
}


def student_names(lesson: LessonRecord) -> str:
    """The students' names, or how many there are when a group is too big to list."""
    if len(lesson.students) <= 3:
        return ", ".join(name for _, name in lesson.students)
    return f"{len(lesson.students)} students"


class RoomDialog(RecordDialog):
    def __init__(
        self, save: Callable[[RoomDraft], Awaitable[RoomRecord]], parent: QWidget | None = None
    ) -> None:
        super().__init__("New room", save, parent)
        self.setMinimumWidth(360)
        self.name = self.add_field("name", "Name", line_edit(placeholder="e.g. Studio 5"))
        self.capacity = QSpinBox()
        self.capacity.setRange(0, 1000)
        self.capacity.setSpecialValueText("not set")
        self.add_field("capacity", "Seats", self.capacity, "How many people fit, if it matters.")

    def draft(self) -> RoomDraft:
        return RoomDraft(self.name.text(), self.capacity.value() or None)


class LessonDialog(RecordDialog):
    def __init__(
        self,
        save: Callable[[LessonDraft], Awaitable[LessonRecord]],
        zone: ZoneInfo,
        teachers: Sequence[TeacherRecord],
        rooms: Sequence[RoomRecord],
        students: Sequence[StudentRecord],
        add_room: Callable[[RoomDraft], Awaitable[RoomRecord]],
        record: LessonRecord | None = None,
        start: datetime | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Edit lesson" if record else "New lesson", save, parent)
        self.zone = zone
        begins = (record.starts_at if record else start or datetime.now(zone)).astimezone(zone)
        minutes = int(record.duration.total_seconds() // 60) if record else 45

        self.title = self.add_field("title", "Title", QLineEdit(record.title if record else ""))
        self.title.setPlaceholderText("e.g. Piano — Tariro")
        self.teacher = QComboBox()
        for teacher in teachers:
            if teacher.active or (record and record.teacher_id == teacher.id):
                self.teacher.addItem(
                    f"{teacher.name} ({teacher.subjects})" if teacher.subjects else teacher.name,
                    teacher.id,
                )
        if record:
            self.teacher.setCurrentIndex(max(self.teacher.findData(record.teacher_id), 0))
        self.add_field("teacher_id", "Teacher", self.teacher)
        self.day = QDateEdit(QDate(begins.year, begins.month, begins.day))
        self.day.setCalendarPopup(True)
        self.day.setDisplayFormat("ddd d MMM yyyy")
        self.add_field("starts_at", "Day", self.day)
        self.start = QTimeEdit(QTime(begins.hour, begins.minute))
        self.start.setDisplayFormat("HH:mm")
        self.add_field("start", "Starts at", self.start, f"In the school's time zone ({zone.key}).")
        self.duration = QSpinBox()
        self.duration.setRange(5, 480)
        self.duration.setSingleStep(15)
        self.duration.setSuffix(" minutes")
        self.duration.setValue(minutes)
        self.add_field("ends_at", "Length", self.duration)
        self.room = QComboBox()
        self.room.addItem("No room", None)
        for room in rooms:
            self.room.addItem(room.name, room.id)
        if record and record.room_id is not None:
            self.room.setCurrentIndex(max(self.room.findData(record.room_id), 0))
        self._add_room = add_room
        self.new_room = QPushButton("New room…")
        self.new_room.clicked.connect(lambda: tasks.start(self.create_room(), owner=self))
        room_row = QWidget()
        room_layout = QHBoxLayout(room_row)
        room_layout.setContentsMargins(0, 0, 0, 0)
        room_layout.addWidget(self.room, 1)
        room_layout.addWidget(self.new_room)
        self.add_field("room_id", "Room", room_row)

        holder = QWidget()
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        self.student_search = QLineEdit()
        self.student_search.setPlaceholderText("Find a student…")
        self.student_list = QListWidget()
        self.student_list.setFixedHeight(150)
        chosen = {student_id for student_id, _ in record.students} if record else set()
        for student in students:
            if not student.active and student.id not in chosen:
                continue
            item = QListWidgetItem(f"{student.name}  ·  {student.ref}")
            item.setData(Qt.ItemDataRole.UserRole, student.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if student.id in chosen else Qt.CheckState.Unchecked
            )
            self.student_list.addItem(item)
        self.student_search.textChanged.connect(self._filter_students)
        self.student_count = QLabel()
        self.student_count.setObjectName("Muted")
        self.student_list.itemChanged.connect(lambda _item: self._count_students())
        column.addWidget(self.student_search)
        column.addWidget(self.student_list)
        column.addWidget(self.student_count)
        self.add_field("student_ids", "Students", holder)
        self._count_students()

        self.status = QComboBox()
        for status in LessonStatus:
            self.status.addItem(status.value.capitalize(), status)
        if record:
            self.status.setCurrentIndex(list(LessonStatus).index(record.status))
        self.add_field("status", "Status", self.status)
        self.online = QCheckBox("Online lesson")
        self.online.setChecked(record.online if record else False)
        self.add_field("online", "", self.online)
        self.notes = QPlainTextEdit(record.notes if record else "")
        self.notes.setFixedHeight(50)
        self.add_field("notes", "Notes", self.notes)
        self.ref = self.add_field("ref", "Reference", QLineEdit(record.ref if record else ""))
        self.ref.setPlaceholderText("given automatically")
        self.repeat = QComboBox()
        self.repeat.addItem("Does not repeat", False)
        self.repeat.addItem("Every week", True)
        self.weeks = QSpinBox()
        self.weeks.setRange(2, MAX_WEEKS)
        self.weeks.setValue(12)
        self.weeks.setSuffix(" weeks")
        self.weeks.setEnabled(False)
        self.repeat.currentIndexChanged.connect(
            lambda _i: self.weeks.setEnabled(bool(self.repeat.currentData()))
        )
        repeat_row = QWidget()
        repeat_layout = QHBoxLayout(repeat_row)
        repeat_layout.setContentsMargins(0, 0, 0, 0)
        repeat_layout.addWidget(self.repeat, 1)
        repeat_layout.addWidget(QLabel("for"))
        repeat_layout.addWidget(self.weeks)
        self.add_field(
            "repeat",
            "Repeats",
            repeat_row,
            "On the same day and time every week, in the school's time zone, whatever the "
            "clocks do. Each lesson can still be moved or cancelled on its own.",
        )
        if record is not None:  # a lesson already saved is changed alone
            self.form.setRowVisible(self.form.rowCount() - 1, False)

    def repeat_weeks(self) -> int:
        """For how many weeks the new lesson repeats (0: it does not)."""
        return self.weeks.value() if self.repeat.currentData() else 0

    async def create_room(self) -> None:
        dialog = RoomDialog(self._add_room, self)
        if await run_dialog(dialog) == QDialog.DialogCode.Accepted and dialog.saved:
            self.room.addItem(dialog.saved.name, dialog.saved.id)
            self.room.setCurrentIndex(self.room.count() - 1)

    def _filter_students(self, text: str) -> None:
        words = text.casefold().split()
        for row in range(self.student_list.count()):
            item = self.student_list.item(row)
            item.setHidden(not all(word in item.text().casefold() for word in words))

    def _checked_students(self) -> list[int]:
        return [
            int(item.data(Qt.ItemDataRole.UserRole))
            for row in range(self.student_list.count())
            if (item := self.student_list.item(row)).checkState() == Qt.CheckState.Checked
        ]

    def _count_students(self) -> None:
        count = len(self._checked_students())
        self.student_count.setText(f"{count} student{'s' if count != 1 else ''} chosen")

    def check_student(self, student_id: int, checked: bool = True) -> None:
        for row in range(self.student_list.count()):
            item = self.student_list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == student_id:
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def draft(self) -> LessonDraft:
        if self.teacher.currentIndex() < 0:
            raise FieldProblems(
                [FieldError("teacher_id", "Add a teacher first, on the Teachers page.")]
            )
        chosen = self.day.date()
        day_ = date(chosen.year(), chosen.month(), chosen.day())
        at = self.start.time().toPython()
        starts = wall_time(day_, at, self.zone)
        if starts is None:
            raise FieldProblems([FieldError("start", skipped_time(day_, at, self.zone))])
        return LessonDraft(
            title=self.title.text(),
            teacher_id=int(self.teacher.currentData()),
            starts_at=starts,
            ends_at=after(starts, self.duration.value()),
            ref=self.ref.text().strip(),
            room_id=self.room.currentData(),
            student_ids=tuple(self._checked_students()),
            status=LessonStatus(self.status.currentData()),
            online=self.online.isChecked(),
            notes=self.notes.toPlainText(),
        )


class LessonsPage(RecordsPage):
    key = "lessons"
    title = "Lessons"
    icon_name = "lessons"
    noun = "lesson"
    plural = "lessons"
    topics = (TOPIC_LESSONS, TOPIC_TEACHERS, TOPIC_ROOMS, TOPIC_STUDENTS)
    csv_kinds = (CsvKind.LESSONS,)
    default_sort = (0, Qt.SortOrder.AscendingOrder)
    empty_text = (
        "Schedule lessons with a teacher, a room and their students, or import a timetable "
        "from a spreadsheet. Add teachers first."
    )

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        self.teachers: list[TeacherRecord] = []
        self.rooms: list[RoomRecord] = []
        self.students: list[StudentRecord] = []
        self.week_of: date | None = None  # the school's this week, once settings are known
        super().__init__(bridge, parent)
        self.previous_week = QPushButton("◀")
        self.previous_week.setToolTip("Previous week (Alt+Left)")
        self.previous_week.setShortcut("Alt+Left")
        self.previous_week.clicked.connect(lambda: self.go_to_week(self.week - timedelta(days=7)))
        self.this_week = QPushButton("This week")
        self.this_week.setShortcut("Alt+Home")
        self.this_week.clicked.connect(lambda: self.go_to_week(today_in(self.zone)))
        self.next_week = QPushButton("▶")
        self.next_week.setToolTip("Next week (Alt+Right)")
        self.next_week.setShortcut("Alt+Right")
        self.next_week.clicked.connect(lambda: self.go_to_week(self.week + timedelta(days=7)))
        self.week_label = QLabel()
        self.week_label.setObjectName("EmptyTitle")
        self.teacher_filter = QComboBox()
        self.teacher_filter.setMinimumWidth(200)
        self.teacher_filter.currentIndexChanged.connect(self._apply_teacher_filter)
        for widget in (self.previous_week, self.this_week, self.next_week, self.week_label):
            self.filters.addWidget(widget)
        self.filters.addStretch(1)
        self.filters.addWidget(QLabel("Teacher"))
        self.filters.addWidget(self.teacher_filter)

    @property
    def week(self) -> date:
        """A day in the week shown: the school's current week until the user moves."""
        return self.week_of or today_in(self.zone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.services.settings.get("school.timezone"))

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    def columns(self) -> list[Column[Any]]:
        def local(lesson: LessonRecord) -> datetime:
            return lesson.starts_at.astimezone(self.zone)

        return [
            Column(
                "Day",
                lambda lesson: weekday(local(lesson).date(), self.locale),
                sort=lambda lesson: lesson.starts_at,
            ),
            Column(
                "Time",
                lambda lesson: time_range(lesson.starts_at, lesson.ends_at, self.zone, self.locale),
                sort=lambda lesson: local(lesson).time(),
            ),
            Column(
                "Lesson",
                lambda lesson: lesson.title + ("  (online)" if lesson.online else ""),
                stretch=True,
            ),
            Column("Teacher", lambda lesson: lesson.teacher_name),
            Column("Room", lambda lesson: lesson.room_name or "—"),
            Column(
                "Students",
                student_names,
                tooltip=lambda lesson: "\n".join(name for _, name in lesson.students),
            ),
            Column(
                "Status",
                lambda lesson: lesson.status.value,
                color=lambda lesson: STATUS_COLORS[lesson.status],
            ),
        ]

    def search_text(self, record: LessonRecord) -> str:
        return " ".join((record.ref, record.notes, *(name for _, name in record.students)))

    def go_to_week(self, day_: date) -> None:
        self.week_of = day_
        self.schedule_refresh()

    async def fetch(self) -> list[LessonRecord]:
        school = self.bridge.services.school
        start, end = week_bounds(self.week, self.zone)
        self.week_label.setText(f"Week of {day(start.date(), self.locale)}")
        self.teachers = await self.bridge.call(school.teachers)
        self.rooms = await self.bridge.call(school.rooms)
        self.students = await self.bridge.call(school.students)
        self._fill_teacher_filter()
        return await self.bridge.call(school.lessons, start, end)

    async def load(self) -> None:
        lessons = await self.fetch()
        self.model.set_records(lessons)
        if not self.teachers:
            self.states.show_empty(
                "No lessons yet",
                "Every lesson has a teacher: add your teachers first, then schedule lessons "
                "here or import a timetable from a spreadsheet.",
                [("Add teachers", lambda: self.navigate.emit("teachers"))],
            )
            return
        # A week without lessons is still a week: show its (empty) table and the way around.
        self.states.show_content()
        if not self._fitted and lessons:
            self.table.fit_columns()
            self._fitted = True

    def update_footer(self) -> None:
        super().update_footer()
        shown = [
            self.table.proxy.index(row, 0).data(RECORD_ROLE)
            for row in range(self.table.proxy.rowCount())
        ]
        taught = [lesson for lesson in shown if lesson.status is not LessonStatus.CANCELLED]
        hours = sum(lesson.duration.total_seconds() for lesson in taught) / 3600
        extra = f" this week · {hours:.1f} hours of teaching"
        if len(taught) < len(shown):
            extra += f" · {len(shown) - len(taught)} cancelled"
        self.footer.setText(self.footer.text() + extra)

    def _fill_teacher_filter(self) -> None:
        current = self.teacher_filter.currentData()
        self.teacher_filter.blockSignals(True)
        self.teacher_filter.clear()
        self.teacher_filter.addItem("All teachers", None)
        for teacher in self.teachers:
            self.teacher_filter.addItem(teacher.name, teacher.id)
        self.teacher_filter.setCurrentIndex(max(self.teacher_filter.findData(current), 0))
        self.teacher_filter.blockSignals(False)
        self._apply_teacher_filter()

    def _apply_teacher_filter(self, _index: int = 0) -> None:
        teacher_id = self.teacher_filter.currentData()
        self.table.proxy.set_predicate(
            None if teacher_id is None else (lambda lesson: lesson.teacher_id == teacher_id)
        )
        self.update_footer()

    def describe(self, record: LessonRecord) -> str:
        day_ = record.starts_at.astimezone(self.zone).date()
        return f"“{record.title}” on {weekday(day_, self.locale)}"

    def make_dialog(self, record: LessonRecord | None) -> LessonDialog:
        school = self.bridge.services.school

        made: list[LessonDialog] = []

        async def save(draft: LessonDraft) -> LessonRecord:
            if record is None:
                weeks = made[0].repeat_weeks() if made else 0
                if weeks:
                    series: list[LessonRecord] = await self.bridge.call(
                        school.save_series, draft, weeks
                    )
                    return series[0]
                return await self.bridge.call(school.save_lesson, draft)
            return await self.bridge.call(
                school.save_lesson, draft, lesson_id=record.id, version=record.version
            )

        start, _ = week_bounds(self.week, self.zone)
        suggested = max(start, datetime.now(self.zone)).replace(
            minute=0, second=0, microsecond=0
        ) + timedelta(hours=1)

        async def add_room(draft: RoomDraft) -> RoomRecord:
            return await self.bridge.call(school.add_room, draft.name, draft.capacity)

        dialog = LessonDialog(
            save,
            self.zone,
            self.teachers,
            self.rooms,
            self.students,
            add_room,
            record,
            suggested,
            self,
        )
        made.append(dialog)
        return dialog

    async def remove(self, record: LessonRecord) -> None:
        await self.bridge.call(self.bridge.services.school.delete_lesson, record.id)
