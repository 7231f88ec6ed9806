"""Approvals: risky actions (a large refund, switching a payment gateway off) that wait for a
second person. The approver signs in here, at this PC, without taking over the window from
whoever is signed in; the action then runs as the approver."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QInputDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.approvals import TOPIC, Approval, Status
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import run_dialog, tell
from app.ui.labels import muted
from app.ui.page import Page
from app.ui.sign_in import SecondPersonDialog
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN, HEALTHY, PAUSED

STATUS_TEXT = {
    Status.WAITING: ("waiting", PAUSED),
    Status.APPROVED: ("approved, being done", None),
    Status.DONE: ("approved and done", HEALTHY),
    Status.FAILED: ("approved, but it failed", DOWN),
    Status.REJECTED: ("rejected", None),
    Status.EXPIRED: ("lapsed", None),
}


class ApprovalsPage(Page):
    key = "approvals"
    title = "Approvals"
    icon_name = "approvals"
    topics = (TOPIC,)

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.show_all = QCheckBox("Show decided ones too")
        self.show_all.toggled.connect(lambda _on: self.schedule_refresh())
        self.actions.addWidget(self.show_all)
        self.model: RecordModel[Approval] = RecordModel(
            [
                Column("No.", lambda a: str(a.id), sort=lambda a: a.id, right=True),
                Column("What", lambda a: a.summary, stretch=True, tooltip=lambda a: a.summary),
                Column("Asked by", lambda a: a.requested_by),
                Column(
                    "When",
                    lambda a: f"{a.requested_at.astimezone(self.zone):%d %b %H:%M}",
                    sort=lambda a: a.requested_at,
                ),
                Column(
                    "State",
                    lambda a: STATUS_TEXT[a.status][0],
                    color=lambda a: STATUS_TEXT[a.status][1],
                ),
                Column("Decided by", lambda a: a.decided_by or ""),
                Column("Outcome", lambda a: a.outcome or "", tooltip=lambda a: a.outcome or ""),
            ]
        )
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(True)
        self.table.selection_changed.connect(lambda _a: self._update_buttons())
        self.table.opened.connect(lambda a: tasks.start(self.approve(a), owner=self))
        self.approve_button = QPushButton("Approve…")
        self.approve_button.setToolTip("A second person signs in to approve; it is then done")
        self.approve_button.clicked.connect(self._approve_selected)
        self.reject_button = QPushButton("Reject…")
        self.reject_button.clicked.connect(self._reject_selected)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.reject_button)
        row.addWidget(self.approve_button)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(
            muted(
                "Refunds above the amount set under Security, and switching a payment gateway "
                "off when that is set, wait here until a second person approves them. The "
                "person who asked cannot approve their own request."
            )
        )
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        self._update_buttons()

    async def load(self) -> None:
        services = self.bridge.services
        self.zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        status = None if self.show_all.isChecked() else Status.WAITING
        found = await self.bridge.call(services.approvals.approvals, status)
        self.model.set_records(found)
        self._update_buttons()
        if not found:
            self.states.show_empty(
                "Nothing waits for approval",
                "When a refund or a gateway change needs a second person, it waits here.",
            )
            return
        self.states.show_content()

    def _update_buttons(self) -> None:
        selected = self.table.current_record()
        waiting = selected is not None and selected.status is Status.WAITING
        self.approve_button.setEnabled(waiting)
        self.reject_button.setEnabled(waiting)

    def _approve_selected(self) -> None:
        approval = self.table.current_record()
        if approval is not None:
            tasks.start(self.approve(approval), owner=self)

    def _reject_selected(self) -> None:
        approval = self.table.current_record()
        if approval is not None:
            tasks.start(self.reject(approval), owner=self)

    async def _second_person(self, approval: Approval, verb: str) -> SecondPersonDialog | None:
        dialog = SecondPersonDialog(
            self.bridge,
            f"{verb} approval {approval.id}: {approval.summary} (asked by "
            f"{approval.requested_by}). Someone with the {approval.approvers} role, other than "
            f"{approval.requested_by}, signs in.",
            self,
        )
        if await run_dialog(dialog) != QDialog.DialogCode.Accepted or dialog.principal is None:
            return None
        return dialog

    async def approve(self, approval: Approval) -> Approval | None:
        if approval.status is not Status.WAITING:
            return None
        dialog = await self._second_person(approval, "Approve")
        if dialog is None:
            return None
        try:
            done = await self.bridge.call_as(
                dialog.principal, self.bridge.services.approvals.approve, approval.id
            )
        except SwitchboardError as exc:
            tell(self, "Not approved", str(exc))
            return None
        finally:
            self.schedule_refresh()
        if done.status is Status.FAILED:
            tell(self, "Approved, but it failed", done.outcome or "")
        return done

    async def reject(self, approval: Approval) -> Approval | None:
        if approval.status is not Status.WAITING:
            return None
        reason = QInputDialog(self)
        reason.setWindowTitle("Reject")
        reason.setLabelText("Why (the person who asked sees this):")
        if await run_dialog(reason) != QDialog.DialogCode.Accepted:
            return None
        dialog = await self._second_person(approval, "Reject")
        if dialog is None:
            return None
        try:
            return await self.bridge.call_as(
                dialog.principal,
                self.bridge.services.approvals.reject,
                approval.id,
                reason.textValue(),
            )
        except SwitchboardError as exc:
            tell(self, "Not rejected", str(exc))
            return None
        finally:
            self.schedule_refresh()
