"""The bulk send wizard: a template, an audience, a check of what `prepare` made of them (who
gets it on which channel, who is left out and why, the SMS parts and what they cost, one
message as it will read), then the send itself with its progress and a Cancel.

Nothing goes before the last step is confirmed. A batch prepared and then abandoned (Back, or
the window closed) is cancelled, so no half-made send waits in the list. A send that has
begun goes on in the engine when the window closes; the Messages page shows how it stands.

Progress reports come from the engine thread: they only replace the newest report in a plain
holder, which a timer on the GUI thread reads (as `app.ui.progress` does), so no Qt object
is touched off the GUI thread and a closed window cannot break the send.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.domain.messages import Channel, MessageStatus
from app.domain.money import Money, exponent
from app.domain.templating import SAMPLE_DATA
from app.providers.spec import Category
from app.services.audiences import GUARDIANS, TEACHERS, Audience
from app.services.connections import ConnectionRecord
from app.services.message_templates import Preview, Template, preview
from app.services.messaging import BatchState, BatchSummary, MessageView, MessagingService
from app.services.messaging import Progress as SendProgress
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.busy import BusyRow
from app.ui.formatting import totals
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY
from app.ui.who import office_user
from app.views.templates import rendered_text

T = TypeVar("T")

STEPS = ("1 Template", "2 Audience", "3 Check", "4 Send")
TEMPLATE, AUDIENCE, CHECK, SEND = range(4)
REFRESH_MS = 100
# What a send to a group knows about each person (app.services.audiences): a template that
# needs more (a lesson, a payment) cannot be filled in for them.
GROUP_DATA = {
    key: SAMPLE_DATA[key] for key in ("school", "guardian", "teacher", "student", "students")
}
REACHED = (MessageStatus.QUEUED, MessageStatus.SENT, MessageStatus.DELIVERED)
FAILED = (MessageStatus.FAILED, MessageStatus.BOUNCED, MessageStatus.UNKNOWN)
LEFT_OUT = (MessageStatus.OPTED_OUT, MessageStatus.SKIPPED)
REASONS = ("opted out", "no address", "template problem")  # why people are left out

_kept: set[asyncio.Task[Any]] = set()  # touched on the engine loop only


async def in_background(fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    """Runs on the engine loop: `fn` goes on even when whoever waits for it (a window that
    closed) stops waiting."""
    task = asyncio.ensure_future(fn(*args, **kwargs))
    _kept.add(task)
    task.add_done_callback(_kept.discard)
    return await asyncio.shield(task)


async def stop_send(messaging: MessagingService, batch_id: int) -> bool:
    """Runs on the engine loop (the service's cancel sets an asyncio event there)."""
    return messaging.cancel(batch_id)


class Flag:
    """A yes/no that outlives the window it belongs to."""

    def __init__(self) -> None:
        self.on = False

    def set(self) -> None:
        self.on = True


class LatestProgress:
    """The newest progress report of a send: written on the engine thread, read by a timer
    on the GUI thread. One attribute is replaced, nothing else is shared."""

    def __init__(self) -> None:
        self.value: SendProgress | None = None

    def __call__(self, progress: SendProgress) -> None:
        self.value = progress


def plural(count: int, word: str, words: str = "") -> str:
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def why_left_out(message: MessageView) -> str:
    """Opted out, no address, or a template problem: why a person gets nothing."""
    if message.status is MessageStatus.OPTED_OUT:
        return "opted out"
    # The service leaves no code for a skip, only its sentence; template problems name it.
    if "template" in message.error.lower():
        return "template problem"
    return "no address"


def sms_price(connections: Sequence[ConnectionRecord]) -> tuple[Decimal, str, str] | None:
    """The price of an SMS part at the first connection that names one (the one a send uses
    first): its price, currency and name; None when no connection says."""
    for record in sorted(connections, key=lambda r: r.id):
        if record.paused or record.spec.category is not Category.MESSAGING:
            continue
        field = next((f for f in record.spec.fields if f.name == "price_per_segment"), None)
        if field is None:
            continue
        raw = record.config.get("price_per_segment", field.default)
        try:
            price = Decimal(str(raw))
        except (InvalidOperation, ValueError):
            continue
        if price > 0:
            return price, str(record.config.get("price_currency") or "USD"), record.name
    return None


def estimate(segments: int, price: Decimal, currency: str) -> Money:
    minor = (price * segments * 10 ** exponent(currency)).to_integral_value()
    return Money(int(minor), currency)


class BulkSendDialog(QDialog):
    """Four steps on one window; `batch` is the send it made (None until prepared)."""

    def __init__(
        self,
        bridge: EngineBridge,
        templates: Sequence[Template],
        connections: Sequence[ConnectionRecord],
        grades: Sequence[str],
        locale: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("New send")
        self.resize(760, 620)
        self.bridge = bridge
        self.school_locale = locale
        self.templates = {template.id: template for template in templates}
        self.connections = [
            record
            for record in connections
            if record.spec.category is Category.MESSAGING and not record.paused
        ]
        self.price = sms_price(connections)
        self.batch: BatchSummary | None = None
        self.messages: list[MessageView] = []
        self.step = TEMPLATE
        self.preparing: asyncio.Task[Any] | None = None
        self.sending: asyncio.Task[Any] | None = None
        self.dropping: asyncio.Task[Any] | None = None
        self.going = False  # the send confirmed here has not come back yet
        self._closed = Flag()
        # A window destroyed with its parent is closed too: no task touches it afterwards.
        self.destroyed.connect(lambda *_args, closed=self._closed: closed.set())
        self._latest = LatestProgress()
        self._ticker = QTimer(self)
        self._ticker.setInterval(REFRESH_MS)
        self._ticker.timeout.connect(self._show_progress)

        self.steps = QLabel()
        self.steps.setObjectName("Muted")
        self.stack = QStackedWidget()
        self.stack.addWidget(self._template_step())
        self.stack.addWidget(self._audience_step(grades))
        self.stack.addWidget(self._check_step())
        self.stack.addWidget(self._send_step())
        self.busy = BusyRow()
        self.problem = QLabel()
        self.problem.setObjectName("FieldError")
        self.problem.setWordWrap(True)
        self.problem.hide()

        self.back_button = QPushButton("Back")
        self.back_button.clicked.connect(lambda: tasks.start(self.back(), owner=self))
        self.close_button = QPushButton("Cancel")
        self.close_button.clicked.connect(self.reject)
        self.stop_button = QPushButton("Cancel send")
        self.stop_button.setToolTip("Stop: messages not handed to the provider yet are not sent")
        self.stop_button.clicked.connect(lambda: tasks.start(self.cancel_send(), owner=self))
        self.next_button = QPushButton("Next")
        self.next_button.setDefault(True)
        self.next_button.clicked.connect(self._next)
        buttons = QHBoxLayout()
        buttons.addWidget(self.back_button)
        buttons.addStretch(1)
        for button in (self.close_button, self.stop_button, self.next_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.steps)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.problem)
        layout.addWidget(self.busy)
        layout.addLayout(buttons)
        if self.template_list.count():
            self.template_list.setCurrentRow(0)
        self._go(TEMPLATE)

    # --- the steps' widgets ----------------------------------------------------------------------

    def _template_step(self) -> QWidget:
        step = QWidget()
        intro = QLabel("Which message? Templates are written and translated on the Templates page.")
        intro.setWordWrap(True)
        self.template_list = QListWidget()
        for template in sorted(self.templates.values(), key=lambda t: t.name.casefold()):
            item = QListWidgetItem(template.name)
            item.setData(Qt.ItemDataRole.UserRole, template.id)
            item.setToolTip(template.description)
            self.template_list.addItem(item)
        self.template_list.currentItemChanged.connect(lambda *_: self._template_chosen())
        self.template_about = QLabel()
        self.template_about.setWordWrap(True)
        self.template_about.setObjectName("Muted")
        self.template_preview = Reading()
        self.template_warning = QLabel()
        self.template_warning.setWordWrap(True)
        self.template_warning.setStyleSheet(f"color: {DEGRADED};")
        self.template_warning.hide()
        right = QVBoxLayout()
        right.addWidget(self.template_about)
        right.addWidget(self.template_preview, 1)
        right.addWidget(self.template_warning)
        row = QHBoxLayout()
        row.addWidget(self.template_list, 2)
        row.addLayout(right, 3)
        layout = QVBoxLayout(step)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(intro)
        layout.addLayout(row, 1)
        return step

    def _audience_step(self, grades: Sequence[str]) -> QWidget:
        step = QWidget()
        self.to_guardians = QRadioButton("Guardians")
        self.to_teachers = QRadioButton("Teachers")
        self.to_guardians.setChecked(True)
        who = QButtonGroup(step)
        who.addButton(self.to_guardians)
        who.addButton(self.to_teachers)
        self.to_teachers.toggled.connect(lambda _on: self._audience_changed())
        people = QHBoxLayout()
        people.addWidget(self.to_guardians)
        people.addWidget(self.to_teachers)
        people.addStretch(1)
        self.grade = QComboBox()
        self.grade.addItem("Any grade", "")
        for grade in grades:
            self.grade.addItem(grade, grade)
        self.lesson = QLineEdit()
        self.lesson.setPlaceholderText("any lesson; or a word of its title, like violin")
        self.channel = QComboBox()
        self.channel.currentIndexChanged.connect(lambda _i: self._audience_changed())
        self.title = QLineEdit()
        self.title.setPlaceholderText("the template's name")
        self.channel_hint = QLabel()
        self.channel_hint.setObjectName("Muted")
        self.channel_hint.setWordWrap(True)
        self.audience_hint = QLabel()
        self.audience_hint.setObjectName("Muted")
        self.audience_hint.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Send to", people)
        form.addRow("Students in", self.grade)
        form.addRow("Taking", self.lesson)
        form.addRow("", self.audience_hint)
        form.addRow("Channel", self.channel)
        form.addRow("", self.channel_hint)
        form.addRow("Name of this send", self.title)
        layout = QVBoxLayout(step)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addStretch(1)
        return step

    def _check_step(self) -> QWidget:
        step = QWidget()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet(f"color: {DEGRADED};")
        self.left_out_label = QLabel()
        self.left_out_label.setObjectName("CardLabel")
        self.left_out_model: RecordModel[MessageView] = RecordModel(
            [
                Column("Who", lambda m: m.recipient or "—", width=170),
                Column("Channel", lambda m: m.channel.label, width=80),
                Column("Why", why_left_out, width=120),
                Column("Details", lambda m: m.error, stretch=True, tooltip=lambda m: m.error),
            ]
        )
        self.left_out = RecordTable(self.left_out_model)
        self.left_out.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.left_out.setMinimumHeight(110)
        self.example_label = QLabel("One of the messages, as it will read")
        self.example_label.setObjectName("CardLabel")
        self.example = Reading()
        layout = QVBoxLayout(step)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.warning)
        layout.addWidget(self.example_label)
        layout.addWidget(self.example, 1)
        layout.addWidget(self.left_out_label)
        layout.addWidget(self.left_out, 2)
        return step

    def _send_step(self) -> QWidget:
        step = QWidget()
        self.send_status = QLabel()
        self.send_status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m messages handed over")
        self.progress.setRange(0, 0)
        self.counts = QLabel()
        self.counts.setObjectName("Muted")
        self.recap = QLabel()
        self.recap.setWordWrap(True)
        hint = QLabel(
            "You may close this window: the send goes on, and the Messages page shows how it "
            "stands. Delivery reports keep arriving there after the send has finished."
        )
        hint.setObjectName("Muted")
        hint.setWordWrap(True)
        layout = QVBoxLayout(step)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.send_status, self.progress, self.counts, self.recap, hint):
            layout.addWidget(widget)
        layout.addStretch(1)
        return step

    @property
    def sent(self) -> BatchSummary | None:
        """The send confirmed here (going, finished or stopped); None when nothing was sent."""
        return self.batch if self.step == SEND else None

    # --- moving between steps ------------------------------------------------------------------

    def _go(self, step: int) -> None:
        self.step = step
        self.stack.setCurrentIndex(step)
        self.steps.setText(
            " &nbsp;›&nbsp; ".join(f"<b>{s}</b>" if n == step else s for n, s in enumerate(STEPS))
        )
        self.problem.hide()
        self._enable()

    def _enable(self) -> None:
        step, batch = self.step, self.batch
        working = self.busy.busy
        going = self.going
        self.back_button.setVisible(step in (AUDIENCE, CHECK))
        self.back_button.setEnabled(not working)
        self.stop_button.setVisible(step == SEND and going)
        self.next_button.setVisible(not (step == SEND and going))
        self.next_button.setEnabled(not working)
        if step == TEMPLATE:
            self.next_button.setText("Next")
            self.next_button.setEnabled(not working and self.chosen() is not None)
        elif step == AUDIENCE:
            self.next_button.setText("Prepare")
            self.next_button.setToolTip("See who gets what; nothing is sent yet")
        elif step == CHECK:
            ready = batch.count(MessageStatus.PREPARED) if batch else 0
            self.next_button.setText(f"Send {plural(ready, 'message')}")
            self.next_button.setToolTip("")
            self.next_button.setEnabled(not working and ready > 0)
        else:
            self.next_button.setText("Close")
        self.close_button.setText("Close" if step == SEND else "Cancel")
        self.close_button.setVisible(step != SEND or going)

    def _next(self) -> None:
        if self.step == TEMPLATE:
            if self.chosen() is not None:
                self._go(AUDIENCE)
                self._audience_changed()
        elif self.step == AUDIENCE:
            if self.preparing is None or self.preparing.done():  # one batch per press
                self.preparing = tasks.start(self.prepare())  # not the window's: see prepare()
        elif self.step == CHECK:
            if self.sending is None:
                self.sending = tasks.start(self.send(), owner=self)
        else:
            self.accept()

    async def back(self) -> None:
        if self.step == CHECK and self.batch is not None:
            # Going back means preparing again: this batch will not be sent.
            await self._drop(self.batch.id)
            self.batch = None
            self._go(AUDIENCE)
        elif self.step == AUDIENCE:
            self._go(TEMPLATE)

    # --- step 1: the template ------------------------------------------------------------------

    def chosen(self) -> Template | None:
        item = self.template_list.currentItem()
        return self.templates.get(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def choose(self, name: str) -> None:
        """Choose the template called `name` (keyboard users and tests)."""
        for row in range(self.template_list.count()):
            if self.template_list.item(row).text() == name:
                self.template_list.setCurrentRow(row)
                return
        raise LookupError(name)

    def _template_chosen(self) -> None:
        template = self.chosen()
        self._enable()
        if template is None:
            return
        languages = ", ".join(template.languages) or "none"
        channels = ", ".join(channel.label for channel in template.channels) or "none"
        self.template_about.setText(
            f"{template.description or 'No description.'}\n"
            f"Written for: {channels} · languages: {languages}"
        )
        self.channel.blockSignals(True)
        self.channel.clear()
        self.channel.addItem("Each person's preferred channel", None)
        for channel in template.channels:
            self.channel.addItem(f"{channel.label} for everyone", channel.value)
        self.channel.blockSignals(False)
        self.title.setPlaceholderText(template.name)
        tasks.start(self._check_template(template), owner=self)

    async def _check_template(self, template: Template) -> None:
        """Show the template with sample data, and say when a send to a group cannot fill it
        in (it needs a lesson or a payment, which only automatic messages have)."""
        channels = template.channels
        if not channels:
            self.template_preview.setText("This template has no text yet.")
            return
        samples, group = await asyncio.to_thread(_sample_previews, template, channels)
        if self.chosen() is not template:
            return
        self.template_preview.setText(
            "\n\n".join(
                f"{channel.label}, with sample data:\n"
                + ("\n".join(sample.problems) or rendered_text(sample.rendered))
                for channel, sample in zip(channels, samples, strict=True)
            )
        )
        problems = [problem for result in group for problem in result.problems]
        self.template_warning.setVisible(bool(problems))
        if problems:
            self.template_warning.setText(
                "This template fills in things a send to a group does not know (such as a "
                "lesson or a payment), so its messages would be left out: "
                f"{problems[0]} Choose another template, or change it on the Templates page."
            )

    # --- step 2: the audience ------------------------------------------------------------------

    def audience(self) -> Audience:
        if self.to_teachers.isChecked():
            return Audience(who=TEACHERS)
        return Audience(
            who=GUARDIANS, grade=str(self.grade.currentData() or ""), lesson=self.lesson.text()
        )

    def chosen_channel(self) -> Channel | None:
        value = self.channel.currentData()
        return Channel(value) if value else None

    def _audience_changed(self) -> None:
        teachers = self.to_teachers.isChecked()
        self.grade.setEnabled(not teachers)
        self.lesson.setEnabled(not teachers)
        self.audience_hint.setText(
            "Every active teacher."
            if teachers
            else "The guardians of the active students who match both filters; a guardian "
            "of two such students gets one message."
        )
        names = ", ".join(record.name for record in self.connections)
        channel = self.chosen_channel()
        if not names:
            self.channel_hint.setText(
                "No message provider is connected: the check shows who would get it, but "
                "nothing can be sent until you connect one on the Dashboard."
            )
        elif channel is None:
            self.channel_hint.setText(
                "Each person gets it on the channel they prefer, when the template has a text "
                "for it and a connection carries it; otherwise on one that can. "
                f"Connected: {names}."
            )
        else:
            self.channel_hint.setText(
                f"Everyone gets it by {channel.label}; people without a {channel.label} address "
                f"are left out. Connected: {names}."
            )

    async def prepare(self) -> BatchSummary | None:
        """Prepare the batch (nothing is sent) and show the check. This task is not the
        window's: when the window closes meanwhile, the batch it made is cancelled here."""
        template = self.chosen()
        if template is None:
            return None
        messaging = self.bridge.services.messaging
        self.busy.start("Preparing: finding the people and filling in every message…")
        self._enable()
        try:
            batch: BatchSummary = await self.bridge.call(
                messaging.prepare,
                template.id,
                self.audience(),
                channel=self.chosen_channel(),
                title=self.title.text().strip(),
                created_by=office_user(),
            )
            messages: list[MessageView] = await self.bridge.call(messaging.messages, batch.id)
        except SwitchboardError as exc:
            if not self._closed.on:
                self.busy.stop()
                self._say(str(exc))
                self._enable()
            return None
        if self._closed.on:
            await self._drop(batch.id)
            return None
        self.busy.stop()
        self.batch, self.messages = batch, messages
        self._show_check(batch, messages)
        self._go(CHECK)
        return batch

    # --- step 3: the check ---------------------------------------------------------------------

    def _show_check(self, batch: BatchSummary, messages: Sequence[MessageView]) -> None:
        messages = sorted(messages, key=lambda m: m.id)  # in the audience's (name) order
        ready = [m for m in messages if m.status is MessageStatus.PREPARED]
        left = [m for m in messages if m.status in LEFT_OUT]
        by_channel = Counter(m.channel for m in ready)
        channels = ", ".join(
            f"{count:,} by {channel.label}" for channel, count in by_channel.most_common()
        )
        lines = [
            f"<b>{plural(len(ready), 'person gets', 'people get')} this message</b>"
            + (f": {channels}." if channels else "."),
        ]
        if left:
            reasons = Counter(why_left_out(m) for m in left)
            lines.append(
                f"{plural(len(left), 'person is', 'people are')} left out: "
                + ", ".join(f"{reasons[why]:,} {why}" for why in REASONS if reasons[why])
                + " (listed below)."
            )
        segments = batch.segments
        if segments:
            cost = ""
            if self.price is not None:
                price, currency, name = self.price
                total = estimate(segments, price, currency)
                cost = (
                    f", about {total.format(self.school_locale)} at {name}'s price of "
                    f"{price} {currency} a part"
                )
            lines.append(f"SMS: {plural(segments, 'part')}{cost}.")
        lines.append(f"To: {batch.audience}. Nothing has been sent yet.")
        self.summary.setText("<br>".join(lines))
        stuck = [m for m in ready if m.error]
        self.warning.setVisible(bool(stuck))
        if stuck:
            self.warning.setText(
                f"{plural(len(stuck), 'message')} cannot go yet: {stuck[0].error} They wait in "
                "the send, which you can resume from the Messages page once connected."
            )
        example = ready[0] if ready else None
        self.example.setText(
            f"To {example.recipient} ({example.channel.label}, {example.address}):\n\n"
            + _message_text(example)
            if example is not None
            else "Nobody in this audience can get the message; see why below."
        )
        self.left_out_model.set_records(left)
        self.left_out_label.setText("Left out, and why" if left else "Nobody is left out.")
        self.left_out.setVisible(bool(left))

    # --- step 4: sending -----------------------------------------------------------------------

    async def send(self) -> BatchSummary | None:
        """Send the prepared batch with progress. The send runs in the engine and goes on when
        this window closes (this task is the window's, so it stops waiting then)."""
        batch = self.batch
        if batch is None:
            return None
        messaging = self.bridge.services.messaging
        ready = batch.count(MessageStatus.PREPARED)
        self._go(SEND)
        self.send_status.setText(f"Sending {plural(ready, 'message')}…")
        self.progress.setRange(0, max(ready, 1))
        self.progress.setValue(0)
        self._latest.value = None
        self._ticker.start()
        self.going = True
        self._enable()
        try:
            finished: BatchSummary = await self.bridge.call(
                in_background, messaging.send, batch.id, progress=self._latest
            )
        except SwitchboardError as exc:
            self.going = False
            self._ticker.stop()
            self.batch = await self.bridge.call(messaging.batch, batch.id)
            self.send_status.setText("The send did not go.")
            self.recap.setText(str(exc))
            self._enable()
            return None
        self.going = False
        self._ticker.stop()
        self._show_progress()
        self.batch = finished
        self._show_result(finished)
        self._enable()
        return finished

    def _show_progress(self) -> None:
        progress = self._latest.value
        if progress is None:
            return
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(min(progress.done, progress.total))
        self.counts.setText(_counted(progress.counts))

    def _show_result(self, batch: BatchSummary) -> None:
        reached = batch.count(*REACHED)
        failed = batch.count(*FAILED)
        waiting = batch.count(MessageStatus.PREPARED, MessageStatus.SENDING)
        self.counts.setText(_counted(batch.counts))
        if batch.status == BatchState.DONE:
            if self.progress.maximum() == 0:
                self.progress.setRange(0, 1)
            self.progress.setValue(self.progress.maximum())
            self.send_status.setText(
                f"Done: {plural(reached, 'message')} handed to the provider"
                + (f", {failed:,} failed." if failed else ".")
            )
            self.send_status.setStyleSheet(f"color: {HEALTHY if not failed else DEGRADED};")
        elif batch.status == BatchState.CANCELLED:
            self.send_status.setText(
                f"Cancelled: {plural(reached, 'message')} had gone; the rest were not sent."
            )
            self.send_status.setStyleSheet(f"color: {DEGRADED};")
        else:
            self.send_status.setText(
                f"Paused with {plural(waiting, 'message')} still to send. Resume it from the "
                "Messages page."
            )
            self.send_status.setStyleSheet(f"color: {DOWN};")
        recap = [f"“{batch.title}” to {batch.audience}."]
        if batch.segments:
            priced = sorted((currency, minor) for currency, minor in batch.cost.items() if currency)
            cost = f" · cost so far: {totals(priced, self.school_locale)}" if priced else ""
            recap.append(f"SMS parts: {batch.segments:,}{cost}")
        if batch.message:
            recap.append(batch.message)
        self.recap.setText("\n".join(recap))

    async def cancel_send(self) -> bool:
        """Stop the send: messages not handed over yet stay unsent."""
        batch, running = self.batch, self.sending
        if batch is None or running is None:
            return False
        self.stop_button.setEnabled(False)
        self.send_status.setText("Stopping: messages already handed over still go…")
        messaging = self.bridge.services.messaging
        while self.going and not running.done():
            # The send may not have started in the engine yet; ask until it has or it is over.
            if await self.bridge.call(stop_send, messaging, batch.id):
                return True
            await asyncio.sleep(0.05)
        return False

    # --- closing -------------------------------------------------------------------------------

    async def _drop(self, batch_id: int) -> None:
        """A prepared batch that will not be sent is cancelled (in the engine, to the end,
        whatever becomes of this window)."""
        messaging = self.bridge.services.messaging
        await self.bridge.call(in_background, messaging.cancel_prepared, batch_id)

    def reject(self) -> None:
        self._closed.set()
        self._ticker.stop()
        batch = self.batch
        if batch is not None and self.step == CHECK and batch.status == BatchState.PREPARED:
            # Closed before the send was confirmed: nothing of it will go.
            self.dropping = tasks.start(self._drop(batch.id))
        super().reject()

    def accept(self) -> None:
        self._closed.set()
        self._ticker.stop()
        super().accept()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.reject()
        event.accept()

    def _say(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.show()


def _sample_previews(
    template: Template, channels: Sequence[Channel]
) -> tuple[list[Preview], list[Preview]]:
    """On a worker thread: each channel's text with the sample data, and with only what a
    send to a group knows."""
    samples = [preview(template.variants, channel, "en") for channel in channels]
    group = [preview(template.variants, channel, "en", GROUP_DATA) for channel in channels]
    return samples, group


class Reading(QPlainTextEdit):
    """Text to read (a message as it will look), scrolling when it is long."""

    def __init__(self) -> None:
        super().__init__()
        self.setReadOnly(True)
        self.setMinimumHeight(90)

    def setText(self, text: str) -> None:
        self.setPlainText(text)

    def text(self) -> str:
        return self.toPlainText()


def _message_text(message: MessageView) -> str:
    if message.subject:
        return f"Subject: {message.subject}\n\n{message.text}"
    return message.text


def _counted(counts: dict[str, int] | Any) -> str:
    words = {
        MessageStatus.DELIVERED: "delivered",
        MessageStatus.SENT: "sent",
        MessageStatus.QUEUED: "accepted",
        MessageStatus.SENDING: "being handed over",
        MessageStatus.PREPARED: "waiting",
        MessageStatus.FAILED: "failed",
        MessageStatus.BOUNCED: "bounced",
        MessageStatus.UNKNOWN: "not known",
        MessageStatus.OPTED_OUT: "opted out",
        MessageStatus.SKIPPED: "left out",
        MessageStatus.CANCELLED: "not sent (cancelled)",
    }
    parts = [f"{counts[s.value]:,} {word}" for s, word in words.items() if counts.get(s.value)]
    return " · ".join(parts)
