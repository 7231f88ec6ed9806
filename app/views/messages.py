"""Messages: every send (newest first) with what became of its messages, what it cost and
its SMS parts; a send's messages one by one, filtered and searched; resuming a send that
paused or was interrupted, cancelling one that is prepared or going; the bulk send wizard;
and the people who asked not to get messages (opt-outs).

Sends run in the engine. While one is going the page reads its counts again every second,
and a send resumed here shows its progress (see app/views/bulk_send.py for how progress
reaches the GUI thread).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.domain.messages import AddressError, Channel, MessageStatus
from app.providers.spec import Category
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.messaging import TOPIC, BatchState, BatchSummary, MessageView
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import run_dialog, tell
from app.ui.formatting import money, totals
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED
from app.views.bulk_send import (
    FAILED,
    LEFT_OUT,
    REACHED,
    REFRESH_MS,
    BulkSendDialog,
    LatestProgress,
    in_background,
    plural,
)

LIVE_MS = 1000  # how often the counts of a send that is going are read again
BATCH_STATES = {
    BatchState.PREPARED: ("Prepared, not sent", PAUSED),
    BatchState.SENDING: ("Sending…", HEALTHY),
    BatchState.PAUSED: ("Paused", DEGRADED),
    BatchState.CANCELLED: ("Cancelled", PAUSED),
    BatchState.DONE: ("Done", HEALTHY),
}
MESSAGE_STATES = {
    MessageStatus.PREPARED: ("waiting to send", PAUSED),
    MessageStatus.SENDING: ("being handed over", PAUSED),
    MessageStatus.QUEUED: ("accepted", HEALTHY),
    MessageStatus.SENT: ("sent", HEALTHY),
    MessageStatus.DELIVERED: ("delivered", HEALTHY),
    MessageStatus.FAILED: ("failed", DOWN),
    MessageStatus.BOUNCED: ("bounced", DOWN),
    MessageStatus.OPTED_OUT: ("opted out", PAUSED),
    MessageStatus.SKIPPED: ("left out", DEGRADED),
    MessageStatus.CANCELLED: ("cancelled", PAUSED),
    MessageStatus.UNKNOWN: ("not known: check", DEGRADED),
}
FILTERS: tuple[tuple[str, frozenset[MessageStatus] | None], ...] = (
    ("Every status", None),
    ("Delivered", frozenset({MessageStatus.DELIVERED})),
    ("Sent, not delivered yet", frozenset({MessageStatus.QUEUED, MessageStatus.SENT})),
    ("Waiting to send", frozenset({MessageStatus.PREPARED, MessageStatus.SENDING})),
    ("Failed or not known", frozenset(FAILED)),
    ("Left out (opted out, no address)", frozenset(LEFT_OUT)),
    ("Cancelled", frozenset({MessageStatus.CANCELLED})),
)
SOURCES = {"office": "the office", "provider": "the provider (STOP)", "reply": "their reply"}
OPT_OUT_CHANNELS = (Channel.SMS, Channel.WHATSAPP, Channel.EMAIL, Channel.PUSH)


def breakdown(batch: BatchSummary) -> str:
    """Every status of a send's messages in words: "3 delivered, 1 failed, 1 opted out"."""
    parts = [
        f"{batch.counts[status.value]:,} {label}"
        for status, (label, _colour) in MESSAGE_STATES.items()
        if batch.counts.get(status.value)
    ]
    return ", ".join(parts) or "no messages"


def batch_state(batch: BatchSummary) -> tuple[str, str]:
    label, colour = BATCH_STATES.get(batch.status, (batch.status, PAUSED))
    if batch.status == BatchState.DONE and batch.count(*FAILED):
        colour = DEGRADED
    return label, colour


def resumable(batch: BatchSummary | None) -> bool:
    return batch is not None and batch.status in (BatchState.PREPARED, BatchState.PAUSED)


def cancellable(batch: BatchSummary | None) -> bool:
    return batch is not None and batch.status in (
        BatchState.PREPARED,
        BatchState.SENDING,
        BatchState.PAUSED,
    )


async def ask(parent: QWidget, title: str, text: str, yes: str, no: str) -> bool:
    """A question whose two answers say what they do (neither is a bare "Cancel")."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=parent)
    chosen = box.addButton(yes, QMessageBox.ButtonRole.AcceptRole)
    box.addButton(no, QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(chosen)
    await run_dialog(box)
    return box.clickedButton() is chosen


class MessagesPage(Page):
    key = "messages"
    title = "Messages"
    icon_name = "events"
    topics = (TOPIC, TOPIC_CONNECTIONS)
    refresh_every = 1.0
    shortcut_hint = "Ctrl+N starts a new send"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.wizard: BulkSendDialog | None = None
        self.resuming: asyncio.Task[Any] | None = None
        self._messages_of: int | None = None  # the send whose messages are listed
        self._select_after: int | None = None
        self._progress = LatestProgress()
        self._ticker = QTimer(self)
        self._ticker.setInterval(REFRESH_MS)
        self._ticker.timeout.connect(self._show_progress)
        self._live = QTimer(self)
        self._live.setInterval(LIVE_MS)
        self._live.timeout.connect(self._read_again)

        self.opt_outs_button = QPushButton("Opt-outs…")
        self.opt_outs_button.setToolTip("People who asked not to get messages on a channel")
        self.opt_outs_button.clicked.connect(lambda: tasks.start(self.open_opt_outs(), owner=self))
        self.templates_button = QPushButton("Templates")
        self.templates_button.setToolTip("Write and translate the messages")
        self.templates_button.clicked.connect(lambda: self.navigate.emit("templates"))
        self.new_button = QPushButton("New send…")
        self.new_button.setToolTip("Send a message to guardians or teachers (Ctrl+N)")
        self.new_button.clicked.connect(lambda: tasks.start(self.new_send(), owner=self))
        for button in (self.opt_outs_button, self.templates_button, self.new_button):
            self.actions.addWidget(button)
        QShortcut(QKeySequence.StandardKey.New, self, activated=self.new_button.click)

        self.batch_model: RecordModel[BatchSummary] = RecordModel(self._batch_columns())
        self.batches = RecordTable(self.batch_model)
        self.batches.setSortingEnabled(False)  # newest first, as they are read
        self.batches.proxy.sort(-1)
        self.batches.selection_changed.connect(self._batch_selected)

        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextFormat(Qt.TextFormat.PlainText)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: tasks.start(self.resume(), owner=self))
        self.cancel_button = QPushButton("Cancel send…")
        self.cancel_button.setToolTip(
            "Stop the send: messages not handed to the provider yet are not sent"
        )
        self.cancel_button.clicked.connect(lambda: tasks.start(self.cancel(), owner=self))
        about = QHBoxLayout()
        about.addWidget(self.detail, 1)
        about.addWidget(self.cancel_button, 0, Qt.AlignmentFlag.AlignTop)
        about.addWidget(self.resume_button, 0, Qt.AlignmentFlag.AlignTop)
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m messages handed over")
        self.progress.hide()

        self.status_filter = QComboBox()
        for label, _statuses in FILTERS:
            self.status_filter.addItem(label)
        self.status_filter.currentIndexChanged.connect(self._filter)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search by name, address or error")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.shown = QLabel()
        self.shown.setObjectName("Muted")
        filters = QHBoxLayout()
        filters.addWidget(self.status_filter)
        filters.addWidget(self.search, 1)
        filters.addWidget(self.shown)
        self.message_model: RecordModel[MessageView] = RecordModel(
            self._message_columns(), search=lambda m: f"{m.text} {m.subject}"
        )
        self.messages = RecordTable(self.message_model)
        self.messages.setSortingEnabled(False)  # in the audience's order
        self.messages.proxy.sort(-1)
        self.messages.selection_changed.connect(self._message_selected)
        self.message_text = QLabel()
        self.message_text.setObjectName("Muted")
        self.message_text.setWordWrap(True)
        self.message_text.setTextFormat(Qt.TextFormat.PlainText)
        self.message_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        lower = QWidget()
        below = QVBoxLayout(lower)
        below.setContentsMargins(0, 6, 0, 0)
        below.addLayout(about)
        below.addWidget(self.progress)
        below.addLayout(filters)
        below.addWidget(self.messages, 1)
        below.addWidget(self.message_text)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.batches)
        split.addWidget(lower)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([260, 480])
        split.setChildrenCollapsible(False)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split, 1)
        layout.addWidget(self.notice)
        self._batch_selected(None)

    @property
    def school_locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    def _when(self, moment: datetime | None) -> str:
        return f"{moment.astimezone(self.zone):%d %b %H:%M}" if moment else "—"

    def _batch_columns(self) -> list[Column[BatchSummary]]:
        def number(count: int) -> str:
            return f"{count:,}" if count else ""

        def cost(batch: BatchSummary) -> str:
            priced = sorted((currency, minor) for currency, minor in batch.cost.items() if currency)
            return totals(priced, self.school_locale) if priced else "—"

        return [
            Column(
                "Started",
                lambda b: self._when(b.created_at),
                sort=lambda b: b.created_at,
                width=105,
            ),
            Column("Send", lambda b: b.title, stretch=True, tooltip=lambda b: b.title),
            Column("To", lambda b: b.audience, stretch=True, tooltip=lambda b: b.audience),
            Column(
                "Status",
                lambda b: batch_state(b)[0],
                color=lambda b: batch_state(b)[1],
                tooltip=lambda b: b.message,
                width=130,
            ),
            Column("Messages", lambda b: number(b.total), right=True, tooltip=breakdown, width=78),
            Column(
                "Sent",
                lambda b: number(b.count(*REACHED)),
                right=True,
                tooltip=lambda b: "Handed to the provider (delivered or on the way)",
                width=60,
            ),
            Column(
                "Delivered",
                lambda b: number(b.count(MessageStatus.DELIVERED)),
                right=True,
                tooltip=breakdown,
                width=78,
            ),
            Column(
                "Failed",
                lambda b: number(b.count(*FAILED)),
                right=True,
                color=lambda b: DOWN if b.count(*FAILED) else None,
                tooltip=breakdown,
                width=62,
            ),
            Column(
                "Left out",
                lambda b: number(b.count(*LEFT_OUT)),
                right=True,
                width=70,
                tooltip=lambda b: (
                    f"{b.count(MessageStatus.OPTED_OUT):,} opted out, "
                    f"{b.count(MessageStatus.SKIPPED):,} without an address or text"
                ),
            ),
            Column("SMS parts", lambda b: number(b.segments), right=True, width=78),
            Column("Cost", cost, right=True, width=110),
        ]

    def _message_columns(self) -> list[Column[MessageView]]:
        def state(message: MessageView) -> tuple[str, str]:
            return MESSAGE_STATES.get(message.status, (message.status.value, PAUSED))

        def cost(message: MessageView) -> str:
            if message.cost_minor is None or not message.currency:
                return ""
            return money(message.cost_minor, message.currency, self.school_locale)

        return [
            Column("Recipient", lambda m: m.recipient or "—", width=190),
            Column("Channel", lambda m: m.channel.label, width=80),
            Column("Address", lambda m: m.address, width=190),
            Column(
                "Status",
                lambda m: state(m)[0],
                color=lambda m: state(m)[1],
                tooltip=lambda m: m.error,
                width=130,
            ),
            Column("Why", lambda m: m.error, stretch=True, tooltip=lambda m: m.error),
            Column("Parts", lambda m: str(m.segments) if m.segments else "", right=True, width=55),
            Column("Cost", cost, right=True, width=90),
            Column(
                "Updated",
                lambda m: self._when(m.status_at or m.created_at),
                sort=lambda m: m.status_at or m.created_at,
                width=105,
            ),
        ]

    # --- loading -------------------------------------------------------------------------------

    async def load(self) -> None:
        services = self.bridge.services
        self.zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        batches: list[BatchSummary] = await self.bridge.call(services.messaging.batches)
        if not batches:
            self.batch_model.set_records([])
            self._live.stop()
            records = await self.bridge.call(services.connections.connections)
            if any(record.spec.category is Category.MESSAGING for record in records):
                self.states.show_empty(
                    "No messages yet",
                    "Send a notice to guardians or teachers with “New send…”: choose a template "
                    "and who gets it, and see who is left out and what it costs before "
                    "anything goes.",
                    [("New send…", self.new_button.click), ("Edit templates", self._templates)],
                )
            else:
                self.states.show_empty(
                    "No messages yet",
                    "Connect an SMS or e-mail provider on the Dashboard with “Connect "
                    "provider…” (or try the Sandbox SMS), then send one with “New send…”.",
                    [
                        ("Open the dashboard", lambda: self.navigate.emit("dashboard")),
                        ("New send…", self.new_button.click),
                    ],
                )
            return
        self.batch_model.set_records(batches)
        self.states.show_content()
        wanted = self._select_after
        if wanted is not None and self.batches.select_key(wanted):
            self._select_after = None
        elif self.batches.current_record() is None:
            self.batches.selectRow(0)
        going = any(batch.status == BatchState.SENDING for batch in batches)
        if going and not self._live.isActive():
            self._live.start()
        elif not going:
            self._live.stop()
        batch = self.batches.current_record()
        self._show_batch(batch)
        if batch is not None:
            await self._load_messages(batch.id)

    def open_with(self, argument: str) -> None:
        """ "messages:<send id>" shows that send."""
        if argument.isdigit():
            self._select_after = int(argument)
            if not self.batches.select_key(self._select_after):
                self.schedule_refresh()

    def _templates(self) -> None:
        self.navigate.emit("templates")

    def _read_again(self) -> None:
        if self.isVisible():
            self.schedule_refresh()

    def _batch_selected(self, batch: BatchSummary | None) -> None:
        self._show_batch(batch)
        if batch is None:
            self._messages_of = None
            self.message_model.set_records([])
            self._count_shown()
        elif batch.id != self._messages_of:
            tasks.start(self._load_messages(batch.id), owner=self)

    async def _load_messages(self, batch_id: int) -> None:
        messages: list[MessageView] = await self.bridge.call(
            self.bridge.services.messaging.messages, batch_id
        )
        current = self.batches.current_record()
        if current is None or current.id != batch_id:
            return  # another send was chosen meanwhile
        self._messages_of = batch_id
        self.message_model.set_records(sorted(messages, key=lambda m: m.id))  # audience order
        self._count_shown()
        self._message_selected(self.messages.current_record())

    def _show_batch(self, batch: BatchSummary | None) -> None:
        here = self.resuming is not None and not self.resuming.done()
        if batch is None:
            self.detail.setText("Choose a send to see its messages.")
        else:
            lines = [
                f"{batch.title} — {batch.audience}",
                f"{batch_state(batch)[0]}: {breakdown(batch)}.",
            ]
            if batch.confirmed_at:
                lines[-1] += f" Confirmed {self._when(batch.confirmed_at)}."
            if batch.message:
                lines.append(batch.message)
            self.detail.setText("\n".join(lines))
        self.resume_button.setText(
            "Send…" if batch is not None and batch.status == BatchState.PREPARED else "Resume"
        )
        self.resume_button.setToolTip(
            "Send the messages that wait; messages that may have gone are looked up with the "
            "provider first, so nobody gets one twice"
        )
        self.resume_button.setEnabled(resumable(batch) and not here)
        self.cancel_button.setEnabled(cancellable(batch))

    # --- the messages of a send ----------------------------------------------------------------

    def _filter(self) -> None:
        statuses = FILTERS[self.status_filter.currentIndex()][1]
        self.messages.proxy.set_predicate(
            None if statuses is None else (lambda message: message.status in statuses)
        )
        self.messages.proxy.set_query(self.search.text())
        self._count_shown()

    def _count_shown(self) -> None:
        shown, total = self.messages.proxy.rowCount(), self.message_model.rowCount()
        everything = plural(total, "message")
        self.shown.setText(f"{shown:,} of {everything}" if shown != total else everything)

    def _message_selected(self, message: MessageView | None) -> None:
        if message is None:
            self.message_text.setText("")
            return
        text = f"Subject: {message.subject}\n{message.text}" if message.subject else message.text
        lines = [text.strip() or f"No message was made for them. {message.error}".strip()]
        if message.provider_id:
            lines.append(f"Provider's reference: {message.provider_id}")
        self.message_text.setText("\n".join(lines))

    # --- actions -------------------------------------------------------------------------------

    async def new_send(self) -> BatchSummary | None:
        """Open the bulk send wizard; the send it confirmed, if any, is chosen afterwards."""
        services = self.bridge.services
        templates = await self.bridge.call(services.templates.templates)
        connections = await self.bridge.call(services.connections.connections)
        students = await self.bridge.call(services.school.students)
        grades = sorted({s.grade for s in students if s.grade and s.active}, key=_grade_order)
        dialog = BulkSendDialog(
            self.bridge, templates, connections, grades, self.school_locale, self
        )
        self.wizard = dialog
        try:
            await run_dialog(dialog)
        finally:
            self.wizard = None
        batch = dialog.sent
        dialog.deleteLater()
        if batch is not None:
            self._select_after = batch.id
            self.states.show_content()
            await self.refresh()
        return batch

    async def resume(self) -> BatchSummary | None:
        """Send what waits in the chosen send (a prepared one after asking)."""
        batch = self.batches.current_record()
        if not resumable(batch) or batch is None:
            return None
        if batch.status == BatchState.PREPARED:
            waiting = batch.count(MessageStatus.PREPARED)
            if not await ask(
                self,
                "Send these messages?",
                f"{plural(waiting, 'message')} of “{batch.title}” go to {batch.audience} now.",
                "Send",
                "Not now",
            ):
                return None
        messaging = self.bridge.services.messaging
        self._progress.value = None
        self.progress.setRange(0, max(batch.count(MessageStatus.PREPARED), 1))
        self.progress.setValue(0)
        self.progress.show()
        self._ticker.start()
        self._live.start()
        self.resuming = asyncio.ensure_future(
            self.bridge.call(in_background, messaging.send, batch.id, progress=self._progress)
        )
        self._show_batch(batch)
        try:
            finished: BatchSummary = await self.resuming
        except SwitchboardError as exc:
            tell(self, "The send did not go on", str(exc))
            return None
        finally:
            self._ticker.stop()
            self.progress.hide()
            self.resuming = None
            self.schedule_refresh()
        state = batch_state(finished)[0]
        self.notice.setText(f"{finished.title}: {state} — {breakdown(finished)}.")
        return finished

    def _show_progress(self) -> None:
        progress = self._progress.value
        if progress is not None and progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(min(progress.done, progress.total))

    async def cancel(self) -> BatchSummary | None:
        """Cancel the chosen send: what was not handed over yet is not sent."""
        batch = self.batches.current_record()
        if not cancellable(batch) or batch is None:
            return None
        going = batch.status == BatchState.SENDING
        if not await ask(
            self,
            "Cancel this send?",
            (
                "Messages already handed to the provider still go; the others are not sent."
                if going
                else f"The {plural(batch.count(MessageStatus.PREPARED), 'message')} waiting "
                "in it are not sent. To send them later, prepare the send again."
            ),
            "Cancel the send",
            "Keep it",
        ):
            return None
        messaging = self.bridge.services.messaging
        self.cancel_button.setEnabled(False)
        try:
            summary: BatchSummary = await self.bridge.call(
                in_background, messaging.cancel_prepared, batch.id
            )
        except SwitchboardError as exc:
            tell(self, "Not cancelled", str(exc))
            return None
        finally:
            self.schedule_refresh()
        self.notice.setText(
            f"{batch.title}: stopping; messages already handed over still go."
            if going
            else f"{batch.title} is cancelled; nothing more of it is sent."
        )
        return summary

    async def open_opt_outs(self) -> None:
        dialog = OptOutsDialog(self.bridge, self.zone, self)
        loading = tasks.start(dialog.load(), owner=dialog)
        await run_dialog(dialog)
        loading.cancel()
        dialog.deleteLater()


def _grade_order(grade: str) -> tuple[int, int, str]:
    """Grade 2 before Grade 10: by the number in it, then the words."""
    digits = "".join(ch for ch in grade if ch.isdigit())
    return (0, int(digits), grade) if digits else (1, 0, grade)


@dataclass(frozen=True)
class OptOut:
    channel: str
    address: str
    source: str
    since: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.channel, self.address)

    @property
    def channel_label(self) -> str:
        try:
            return Channel(self.channel).label
        except ValueError:
            return self.channel


class OptOutsDialog(QDialog):
    """The people who asked not to get messages on a channel: listed, added, removed. A
    provider's STOP or unsubscribe adds them here by itself."""

    def __init__(self, bridge: EngineBridge, zone: ZoneInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Opt-outs")
        self.resize(640, 460)
        self.bridge = bridge
        self.zone = zone
        intro = QLabel(
            "Nobody here gets messages on that channel: sends leave them out and say so. "
            "People who reply STOP to an SMS or unsubscribe from an e-mail are added by "
            "themselves."
        )
        intro.setWordWrap(True)
        intro.setObjectName("Muted")
        self.model: RecordModel[OptOut] = RecordModel(
            [
                Column("Channel", lambda o: o.channel_label, width=90),
                Column("Address", lambda o: o.address, stretch=True),
                Column("Asked through", lambda o: SOURCES.get(o.source, o.source), width=150),
                Column(
                    "Since",
                    lambda o: f"{o.since.astimezone(zone):%d %b %Y}",
                    sort=lambda o: o.since,
                    width=110,
                ),
            ],
            key=lambda o: o.key,
        )
        self.table = RecordTable(self.model)
        self.table.delete_requested.connect(lambda o: tasks.start(self.remove(o), owner=self))
        self.channel = QComboBox()
        for channel in OPT_OUT_CHANNELS:
            self.channel.addItem(channel.label, channel.value)
        self.address = QLineEdit()
        self.address.setPlaceholderText("phone number or e-mail address")
        self.address.returnPressed.connect(lambda: tasks.start(self.add(), owner=self))
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(lambda: tasks.start(self.add(), owner=self))
        self.remove_button = QPushButton("Remove…")
        self.remove_button.setToolTip("They get messages on this channel again")
        self.remove_button.setEnabled(False)
        self.remove_button.clicked.connect(
            lambda: tasks.start(self.remove(self.table.current_record()), owner=self)
        )
        self.table.selection_changed.connect(lambda o: self.remove_button.setEnabled(o is not None))
        adding = QHBoxLayout()
        adding.addWidget(self.channel)
        adding.addWidget(self.address, 1)
        adding.addWidget(self.add_button)
        adding.addWidget(self.remove_button)
        self.problem = QLabel()
        self.problem.setObjectName("FieldError")
        self.problem.setWordWrap(True)
        self.problem.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(adding)
        layout.addWidget(self.problem)
        layout.addWidget(buttons)

    async def load(self) -> list[OptOut]:
        rows = await self.bridge.call(self.bridge.services.messaging.opt_outs)
        records = [OptOut(*row) for row in rows]
        self.model.set_records(records)
        return records

    async def add(self) -> bool:
        channel = Channel(self.channel.currentData())
        address = self.address.text().strip()
        self.problem.hide()
        if not address:
            self._say("Write the phone number or e-mail address that should get no messages.")
            return False
        try:
            await self.bridge.call(self.bridge.services.messaging.opt_out, channel, address)
        except (AddressError, SwitchboardError) as exc:
            self._say(str(exc))
            return False
        self.address.clear()
        await self.load()
        return True

    async def remove(self, opt_out: OptOut | None) -> bool:
        if opt_out is None:
            return False
        if not await ask(
            self,
            "Send to them again?",
            f"{opt_out.address} gets {opt_out.channel_label} messages again. Do this only when "
            "they asked for it.",
            "Remove the opt-out",
            "Keep it",
        ):
            return False
        try:
            await self.bridge.call(
                self.bridge.services.messaging.opt_in, Channel(opt_out.channel), opt_out.address
            )
        except (AddressError, SwitchboardError) as exc:
            self._say(str(exc))
            return False
        await self.load()
        return True

    def _say(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.show()
