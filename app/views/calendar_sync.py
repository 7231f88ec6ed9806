"""Calendar sync: each teacher's calendar connection with how its sync stands (last and next
run, what it did, what failed), "Sync now", and deletions held back until someone confirms them.

A sync runs in the engine; the page only asks for it and shows the answer, so the window never
waits on a calendar. What a teacher changed in a calendar goes to the Conflicts page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.calendar_schedule import job_id
from app.services.calendar_sync import TOPIC, CalendarLink, SyncReport
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.jobs import TOPIC as TOPIC_JOBS
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.busy import BusyRow
from app.ui.dialogs import confirm, tell
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED

KINDS = {"google-calendar": "Google Calendar", "caldav": "CalDAV"}
OUTCOMES = {
    "ok": ("In step", HEALTHY),
    "partial": ("Some lessons failed", DEGRADED),
    "held": ("Waiting for you", DEGRADED),
    "failed": ("Failed", DOWN),
    "": ("Not synced yet", PAUSED),
}


def when(moment: datetime | None, zone: ZoneInfo, now: datetime | None = None) -> str:
    """A time as the office reads it: "14:05" today, "Mon 3 Mar 14:05" otherwise."""
    if moment is None:
        return "—"
    local = moment.astimezone(zone)
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    return f"{local:%H:%M}" if local.date() == today else f"{local:%a %d %b %H:%M}"


def did(link: CalendarLink) -> str:
    """What the last sync did, in a few words."""
    counts = link.counts
    parts = [
        f"{counts[key]} {word}"
        for key, word in (
            ("created", "new"),
            ("updated", "changed"),
            ("deleted", "removed"),
            ("proposals", "proposed"),
            ("conflicts", "conflicts"),
            ("failed", "failed"),
        )
        if counts.get(key)
    ]
    return ", ".join(parts) if parts else ("nothing to do" if link.outcome else "")


class SignInDialog(QDialog):
    """Waits while the person signs in with Google in their browser; Cancel gives up."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in with Google")
        self.setMinimumWidth(480)
        layout = QVBoxLayout(self)
        text = QLabel(
            f"Your browser opens Google's sign-in page for {name}. Sign in with the teacher's "
            "account and allow Switchboard to manage the calendar's events, then come back here."
        )
        text.setWordWrap(True)
        self.address = QLabel()
        self.address.setWordWrap(True)
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.address.hide()
        waiting = QProgressBar()
        waiting.setRange(0, 0)
        waiting.setTextVisible(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.rejected.connect(self.reject)
        for widget in (text, waiting, self.address, buttons):
            layout.addWidget(widget)

    def show_address(self, url: str) -> None:
        self.address.setText(f"If your browser did not open, open this address:\n{url}")
        self.address.show()


class CalendarSyncPage(Page):
    key = "calendar-sync"
    title = "Calendar sync"
    icon_name = "calendar-sync"
    topics = (TOPIC, TOPIC_CONNECTIONS, TOPIC_JOBS)
    refresh_every = 1.0
    shortcut_hint = "F5 syncs the selected calendar now"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.next_runs: dict[str, datetime | None] = {}
        self.syncing: set[int] = set()

        self.sync_button = QPushButton("Sync now")
        self.sync_button.setToolTip("Bring the selected teacher's calendar in step now (F5)")
        self.sync_button.clicked.connect(lambda: self._start(self.sync_selected()))
        self.sync_all_button = QPushButton("Sync all")
        self.sync_all_button.clicked.connect(lambda: self._start(self.sync_all()))
        self.confirm_button = QPushButton("Confirm deletions…")
        self.confirm_button.setToolTip(
            "Let the deletions this sync held back go ahead, after reading why they were held"
        )
        self.confirm_button.clicked.connect(lambda: self._start(self.confirm_held()))
        self.sign_in_button = QPushButton("Sign in with Google…")
        self.sign_in_button.setToolTip(
            "Let Switchboard write the lessons into this teacher's Google calendar: you sign in "
            "in your browser, and Switchboard keeps the permission in the credential store"
        )
        self.sign_in_button.clicked.connect(lambda: self._start(self.sign_in_or_out()))
        for button in (
            self.sign_in_button,
            self.confirm_button,
            self.sync_button,
            self.sync_all_button,
        ):
            self.actions.addWidget(button)
        self.sign_in_dialog: SignInDialog | None = None
        QShortcut(QKeySequence(Qt.Key.Key_F5), self, activated=self.sync_button.click)

        self.model: RecordModel[CalendarLink] = RecordModel(
            self._columns(), key=lambda link: link.connection_id
        )
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(True)
        self.table.selection_changed.connect(lambda _link: self._show_selected())
        self.table.opened.connect(lambda _link: self.sync_button.click())
        self.detail = QLabel()
        self.detail.setObjectName("Card")
        self.detail.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.detail.setWordWrap(True)
        self.detail.setTextFormat(Qt.TextFormat.PlainText)
        self.detail.setMargin(8)
        self.busy_row = BusyRow()
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        hint = QLabel(
            "Lessons appear in each teacher's calendar within minutes. A lesson a teacher "
            "moves or deletes there comes back as a proposal on the Conflicts page."
        )
        hint.setObjectName("Muted")
        hint.setWordWrap(True)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(hint)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.detail)
        layout.addWidget(self.busy_row)
        layout.addWidget(self.notice)
        self._enable()

    def _columns(self) -> list[Column[CalendarLink]]:
        def status(link: CalendarLink) -> str:
            if link.connection_id in self.syncing:
                return "Syncing…"
            if link.paused:
                return "Paused"
            if not link.signed_in:
                return "Sign in with Google first"
            return OUTCOMES.get(link.outcome, (link.outcome, None))[0]

        def colour(link: CalendarLink) -> str | None:
            if link.paused:
                return PAUSED
            if not link.signed_in:
                return DEGRADED
            return OUTCOMES.get(link.outcome, ("", None))[1]

        def teacher(link: CalendarLink) -> str:
            return link.teacher_name or f"{link.teacher} (no such teacher)"

        def next_run(link: CalendarLink) -> str:
            if link.paused:
                return "paused"
            return when(self.next_runs.get(job_id(link.connection_id)), self.zone)

        return [
            Column("Teacher", teacher, stretch=True),
            Column("Calendar", lambda link: link.name, stretch=True),
            Column("Kind", lambda link: KINDS.get(link.kind, link.kind)),
            Column("Status", status, color=colour, tooltip=lambda link: link.message),
            Column("Last sync", lambda link: when(link.finished_at, self.zone)),
            Column("Next sync", next_run),
            Column("Last time", did),
            Column(
                "To decide",
                lambda link: f"{link.issues}" if link.issues else "",
                right=True,
                color=lambda link: DEGRADED if link.issues else None,
            ),
        ]

    # --- loading --------------------------------------------------------------------------------

    async def load(self) -> None:
        services = self.bridge.services
        self.zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        links: list[CalendarLink] = await self.bridge.call(services.calendar_sync.calendars)
        runs = await self.bridge.call(services.jobs.next_runs)
        self.next_runs = {run.job_id: run.at for run in runs}
        if not links:
            self.model.set_records([])
            self.states.show_empty(
                "No teacher's calendar is connected",
                "Connect each teacher's Google Calendar or CalDAV calendar (Nextcloud, iCloud, "
                "Fastmail) on the Dashboard with “Connect provider…”, naming the teacher by "
                "e-mail address. Their lessons then appear there within minutes.",
                [("Open the dashboard", lambda: self.navigate.emit("dashboard"))],
            )
            return
        self.model.set_records(links)
        if self.table.current_record() is None:
            self.table.selectRow(0)
        self.states.show_content()
        self._show_selected()

    def _show_selected(self) -> None:
        link = self.table.current_record()
        if link is None:
            self.detail.setText("Choose a calendar to see how its sync stands.")
        else:
            lines = [f"{link.name} — {link.teacher_name or link.teacher}"]
            if link.message:
                lines.append(f"Last sync: {link.message}")
            if link.held:
                lines.append(f"Held back: {link.held}")
            if link.issues:
                lines.append(
                    "1 change from the calendar waits on the Conflicts page."
                    if link.issues == 1
                    else f"{link.issues} changes from the calendar wait on the Conflicts page."
                )
            self.detail.setText("\n".join(lines))
        self._enable()

    def _enable(self) -> None:
        link = self.table.current_record()
        idle = not self.busy_row.busy
        google = link is not None and link.kind == "google-calendar"
        self.sign_in_button.setVisible(google)
        self.sign_in_button.setEnabled(idle and google)
        signed_in = link is not None and link.signed_in
        self.sign_in_button.setText("Sign out of Google…" if signed_in else "Sign in with Google…")
        self.sync_button.setEnabled(idle and link is not None and not link.paused)
        self.sync_all_button.setEnabled(idle and self.model.rowCount() > 0)
        self.confirm_button.setEnabled(idle and link is not None and bool(link.held))

    # --- syncing --------------------------------------------------------------------------------

    def _start(self, work: Coroutine[Any, Any, object]) -> None:
        tasks.start(work, owner=self)

    async def sync_selected(self) -> SyncReport | None:
        link = self.table.current_record()
        if link is None:
            return None
        return await self._sync(link)

    async def sync_all(self) -> list[SyncReport]:
        reports = []
        for link in self.model.records():
            if not link.paused:
                report = await self._sync(link)
                if report is not None:
                    reports.append(report)
        return reports

    async def sign_in_or_out(self) -> bool:
        link = self.table.current_record()
        if link is not None and link.kind == "google-calendar" and link.signed_in:
            return await self.sign_out()
        return await self.sign_in()

    async def sign_out(self) -> bool:
        """End Switchboard's access to the selected Google calendar, after asking."""
        link = self.table.current_record()
        if link is None or link.kind != "google-calendar":
            return False
        asked = await confirm(
            self,
            "Sign out of Google?",
            f"Switchboard's permission to manage {link.name} is given back to Google, and the "
            "lessons stop being synced there until someone signs in again. The events already "
            "in the calendar stay.",
            "Sign out",
        )
        if not asked:
            return False
        try:
            await self.bridge.call(self.bridge.services.calendar_sync.sign_out, link.connection_id)
        except SwitchboardError as exc:
            tell(self, "Not signed out", str(exc))
            return False
        self.notice.setText(f"{link.name} is signed out of Google.")
        self.schedule_refresh()
        return True

    async def sign_in(self) -> bool:
        """Sign the selected Google calendar in, in the browser; whether it worked."""
        link = self.table.current_record()
        if link is None or link.kind != "google-calendar":
            return False
        dialog = SignInDialog(link.name, self)
        self.sign_in_dialog = dialog
        work = tasks.start(
            self.bridge.call(self.bridge.services.calendar_sync.sign_in, link.connection_id),
            owner=self,
        )
        dialog.rejected.connect(work.cancel)
        dialog.open()
        try:
            await work
        except asyncio.CancelledError:
            self.notice.setText("Signing in was cancelled; nothing changed.")
            return False
        except SwitchboardError as exc:
            dialog.reject()
            tell(self, "Not signed in", str(exc))
            return False
        finally:
            self.sign_in_dialog = None
        dialog.accept()
        self.notice.setText(f"{link.name} is signed in with Google; syncing it now.")
        await self._sync(link)
        return True

    def _on_event(self, topic: str, payload: dict[str, Any]) -> None:
        url = payload.get("sign_in") if topic == TOPIC else None
        if url and self.sign_in_dialog is not None:
            self.sign_in_dialog.show_address(str(url))
            return
        super()._on_event(topic, payload)

    async def confirm_held(self) -> SyncReport | None:
        link = self.table.current_record()
        if link is None or not link.held:
            return None
        asked = await confirm(
            self,
            "Let the deletions go ahead?",
            f"{link.held}\n\nSwitchboard held these deletions back because they look like a "
            "mistake (a calendar that suddenly shows nothing is more often a wrong address or "
            "an expired sign-in). Go ahead only if they are meant.",
            "Delete them",
        )
        if not asked:
            return None
        services = self.bridge.services
        state = await self.bridge.call(services.calendar_sync.held_token, link.connection_id)
        return await self._sync(link, confirm=state)

    async def _sync(self, link: CalendarLink, confirm: str = "") -> SyncReport | None:
        self.syncing.add(link.connection_id)
        self.busy_row.start(f"Syncing {link.teacher_name or link.name}…")
        self.model.texts_changed()
        self._enable()
        try:
            report: SyncReport = await self.bridge.call(
                self.bridge.services.calendar_sync.sync, link.connection_id, confirm=confirm
            )
        except SwitchboardError as exc:
            tell(self, "The calendar was not synced", str(exc))
            return None
        finally:
            self.syncing.discard(link.connection_id)
            self.busy_row.stop()
            self.model.texts_changed()
            self._enable()
        self.notice.setText(f"{report.name}: {report.message}")
        self.schedule_refresh()
        return report
