"""Conflicts: what the teachers' calendars and the school disagree on, for a person to settle —
a lesson a teacher moved or deleted in their calendar (a proposal), and a lesson changed on both
sides. Each shows the school's version beside the calendar's, with one click for either; a move
that would double-book a teacher, a room or a student says so, and taking it is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.calendar_sync import TOPIC, SyncIssue
from app.services.school import TOPIC_LESSONS
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import tell
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, PAUSED
from app.ui.who import office_user

KINDS = {
    "move": ("Moved in the calendar", DEGRADED),
    "cancel": ("Deleted in the calendar", DEGRADED),
    "conflict": ("Changed on both sides", DOWN),
    "double_booking": ("Teacher busy in their calendar", DOWN),
}
RESOLUTIONS = {
    "calendar": "calendar's version taken",
    "school": "school's version kept",
    "gone": "no longer clashing",
}


def span(version: dict[str, Any], zone: ZoneInfo) -> str:
    """When a version has the lesson, or that it has none."""
    if not version:
        return "not there (deleted or cancelled)"
    start = datetime.fromisoformat(version["start"]).astimezone(zone)
    end = datetime.fromisoformat(version["end"]).astimezone(zone)
    return f"{start:%a %d %b %Y, %H:%M}–{end:%H:%M}"


def described(version: dict[str, Any], zone: ZoneInfo) -> str:
    if not version:
        return "Not there: deleted or cancelled."
    lines = [span(version, zone), version.get("summary", "")]
    if version.get("location"):
        lines.append(f"Where: {version['location']}")
    if version.get("description"):
        lines.append(version["description"])
    return "\n".join(line for line in lines if line)


class ConflictsPage(Page):
    key = "conflicts"
    title = "Conflicts"
    icon_name = "conflicts"
    topics = (TOPIC, TOPIC_LESSONS)
    refresh_every = 1.0
    shortcut_hint = "Ctrl+Enter takes the calendar's version; Ctrl+Backspace keeps the school's"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.calendars: dict[int, str] = {}  # connection names
        self.show_settled = QCheckBox("Show settled ones too")
        self.show_settled.toggled.connect(lambda _on: self.schedule_refresh())
        self.actions.addWidget(self.show_settled)

        self.model: RecordModel[SyncIssue] = RecordModel(self._columns())
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(True)
        self.table.selection_changed.connect(lambda _issue: self._show_selected())
        self.school = self._card()
        self.calendar = self._card()
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.take_button = QPushButton("Take the calendar's version")
        self.take_button.setToolTip(
            "Move (or cancel) the lesson as the teacher did in the calendar (Ctrl+Enter)"
        )
        self.take_button.clicked.connect(lambda: tasks.start(self.resolve(True), owner=self))
        self.keep_button = QPushButton("Keep the school's version")
        self.keep_button.setToolTip(
            "Leave the lesson as it is; the calendar is set back at the next sync (Ctrl+Backspace)"
        )
        self.keep_button.clicked.connect(lambda: tasks.start(self.resolve(False), owner=self))
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.take_button.click)
        QShortcut(QKeySequence("Ctrl+Backspace"), self, activated=self.keep_button.click)

        sides = QHBoxLayout()
        for title, card in (
            ("The school's version", self.school),
            ("The calendar's", self.calendar),
        ):
            column = QVBoxLayout()
            heading = QLabel(title)
            heading.setObjectName("CardLabel")
            column.addWidget(heading)
            column.addWidget(card, 1)
            sides.addLayout(column, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.detail, 1)
        buttons.addWidget(self.keep_button)
        buttons.addWidget(self.take_button)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 3)
        layout.addLayout(sides, 2)
        layout.addLayout(buttons)
        layout.addWidget(self.notice)
        self._show_selected()

    @staticmethod
    def _card() -> QLabel:
        card = QLabel()
        card.setObjectName("Card")
        card.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        card.setWordWrap(True)
        card.setTextFormat(Qt.TextFormat.PlainText)
        card.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        card.setMargin(8)
        return card

    def _columns(self) -> list[Column[SyncIssue]]:
        def what(issue: SyncIssue) -> str:
            if issue.resolved_at is not None:
                return f"Settled: {RESOLUTIONS.get(issue.resolution, issue.resolution)}"
            return KINDS.get(issue.kind, (issue.kind, None))[0]

        def colour(issue: SyncIssue) -> str | None:
            if issue.resolved_at is not None:
                return PAUSED
            return KINDS.get(issue.kind, ("", None))[1]

        return [
            Column("What", what, color=colour, width=170),
            Column(
                "Lesson",
                lambda issue: issue.lesson_title or f"lesson {issue.lesson_id}",
                stretch=True,
            ),
            Column(
                "Calendar",
                lambda issue: self.calendars.get(issue.connection_id or 0, ""),
                width=160,
            ),
            Column("School has it", lambda issue: span(issue.school, self.zone), width=200),
            Column("Calendar has it", lambda issue: span(issue.calendar, self.zone), width=200),
            Column(
                "Found",
                lambda issue: f"{issue.found_at.astimezone(self.zone):%d %b %H:%M}",
                sort=lambda issue: issue.found_at,
            ),
        ]

    async def load(self) -> None:
        services = self.bridge.services
        self.zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        issues: list[SyncIssue] = await self.bridge.call(
            services.calendar_sync.issues, not self.show_settled.isChecked()
        )
        records = await self.bridge.call(services.connections.connections)
        self.calendars = {record.id: record.name for record in records}
        self.model.set_records(issues)
        if not issues:
            self.states.show_empty(
                "Nothing to settle",
                "When a teacher moves or deletes a lesson in their calendar, or a lesson is "
                "changed both here and there, it waits here with both versions side by side.",
                [("Open calendar sync", lambda: self.navigate.emit("calendar-sync"))],
            )
            return
        self.states.show_content()
        if self.table.current_record() is None:
            self.table.selectRow(0)
        self._show_selected()

    def _show_selected(self) -> None:
        issue = self.table.current_record()
        if issue is None:
            self.school.setText("Choose a lesson to compare its two versions.")
            self.calendar.setText("")
            self.detail.setText("")
        else:
            self.school.setText(described(issue.school, self.zone))
            self.calendar.setText(described(issue.calendar, self.zone))
            self.detail.setText(issue.detail)
        open_issue = issue is not None and issue.resolved_at is None
        self.take_button.setEnabled(open_issue)
        self.keep_button.setEnabled(open_issue)
        busy = issue is not None and issue.kind == "double_booking"
        self.take_button.setText("Cancel the lesson" if busy else "Take the calendar's version")
        self.keep_button.setText("Keep both" if busy else "Keep the school's version")

    async def resolve(self, take_calendar: bool) -> SyncIssue | None:
        issue = self.table.current_record()
        if issue is None or issue.resolved_at is not None:
            return None
        service = self.bridge.services.calendar_sync
        action = service.accept if take_calendar else service.reject
        self.take_button.setEnabled(False)
        self.keep_button.setEnabled(False)
        try:
            settled: SyncIssue = await self.bridge.call(action, issue.id, office_user())
        except SwitchboardError as exc:
            tell(self, "Not settled", str(exc))
            self._show_selected()
            return None
        title = issue.lesson_title or "The lesson"
        if take_calendar:
            self.notice.setText(f"{title}: the calendar's version was taken.")
        else:
            self.notice.setText(
                f"{title}: the school's version stays; the calendar is set back at the next sync."
            )
        self.schedule_refresh()
        return settled
