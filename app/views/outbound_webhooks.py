"""Outbound webhooks: the addresses other systems (the school's website, a CRM, an automation)
gave for hearing Switchboard's own events, how each is doing, and every delivery to the one
selected with the log of its tries — added, changed, paused, re-keyed, tested and replayed
here. The work is the `OutboundWebhooks` service's, asked through the bridge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from PySide6.QtCore import QDate, QDateTime, Qt, QTime
from PySide6.QtGui import QFont, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import FieldError, SwitchboardError
from app.services.domain_events import TRIGGERS
from app.services.outbound_webhooks import (
    MAX_ATTEMPTS,
    TOPIC,
    WAITING,
    Attempt,
    Delivery,
    Endpoint,
    EndpointHealth,
    Message,
    OutboundWebhooks,
    webhook_body,
)
from app.services.rotation import OVERLAP_SETTING
from app.ui import labels, tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import FieldProblems, RecordDialog, confirm, line_edit, run_dialog, tell
from app.ui.formatting import when
from app.ui.page import Page
from app.ui.reason_dialog import ReasonDialog
from app.ui.table import RECORD_ROLE, Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED

# The events Switchboard emits, with what each means. The service keeps no such list yet, so
# the page does; it belongs with the service (it is what `emit` is called with).
# The events Switchboard emits, as the automations know them (every one is forwarded here).
EVENT_TYPES: dict[str, str] = {trigger.type: trigger.label for trigger in TRIGGERS.values()}
# What "Send a test event" emits. `emit` cannot address one endpoint, so a test reaches every
# endpoint that takes it: those taking all events, and those with it ticked.
TEST_EVENT = "webhook.test"
TEST_EVENT_MEANING = "Test events sent from this page"

PAGE_SIZE = 200
SHOWN_CHARACTERS = 50_000  # of a delivery's body: more is slow to lay out, and no one reads it

STATUS_LABELS = {
    "pending": "not tried yet",
    "failed": "failed, will retry",
    "delivered": "delivered",
    "dead": "dead letter",
    "cancelled": "cancelled",
}
STATUS_COLOURS = {"delivered": HEALTHY, "failed": DEGRADED, "dead": DOWN, "cancelled": PAUSED}
STATE_COLOURS = {"healthy": HEALTHY, "failing": DEGRADED, "disabled": PAUSED}
FILTERS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("Every status", None),
    ("Waiting to be sent", WAITING),
    ("Delivered", ("delivered",)),
    ("Dead letters", ("dead",)),
    ("Cancelled", ("cancelled",)),
)

VERIFY_TEXT = (
    "How the receiving service checks a webhook: Switchboard signs every request as Standard "
    "Webhooks describes (standardwebhooks.com). Each carries the headers webhook-id, "
    "webhook-timestamp and webhook-signature. The receiver takes the part of the secret after "
    "“whsec_”, decodes it from base64, computes an HMAC-SHA256 with it over "
    "“webhook-id.webhook-timestamp.body”, and accepts the request only if the result, in "
    "base64, is one of the “v1,…” signatures in webhook-signature. It should also refuse a "
    "timestamp more than five minutes off, and do nothing twice for a webhook-id it has "
    "already handled, because a webhook can arrive more than once. The Standard Webhooks "
    "libraries (Python, JavaScript, PHP, Go, Ruby, Java, C# and more) do all of this in one "
    "call: Webhook(secret).verify(body, headers)."
)


def hours_words(hours: int) -> str:
    return "1 hour" if hours == 1 else f"{hours} hours"


# --- words for what the service hands out ---------------------------------------------------------


def events_text(endpoint: Endpoint) -> str:
    return ", ".join(endpoint.event_types) if endpoint.event_types else "All events"


def state_text(health: EndpointHealth, zone: ZoneInfo) -> str:
    endpoint = health.endpoint
    if health.state == "disabled":
        return f"Disabled: {endpoint.disabled_reason or 'by a person'}"
    if health.state == "failing":
        return f"Failing since {when(endpoint.failing_since, zone)}"
    return "Healthy"


def last_try_text(health: EndpointHealth, zone: ZoneInfo) -> str:
    if health.last_attempt_at is None:
        return "never tried"
    answer = f"HTTP {health.last_status_code}" if health.last_status_code else "no answer"
    return f"{when(health.last_attempt_at, zone)} · {answer}"


def summary(health: EndpointHealth, zone: ZoneInfo) -> str:
    """The selected endpoint in a sentence or two, under the list."""
    endpoint = health.endpoint
    parts: list[str] = []
    if health.state == "disabled":
        parts.append(
            f"Disabled {when(endpoint.disabled_at, zone)}: "
            f"{endpoint.disabled_reason or 'by a person'}"
        )
    elif health.state == "failing":
        parts.append(f"Failing since {when(endpoint.failing_since, zone)}")
    else:
        parts.append("Healthy")
    if health.attempts_last_day:
        failed = health.failures_last_day
        parts.append(
            f"{health.attempts_last_day} tr{'y' if health.attempts_last_day == 1 else 'ies'} "
            f"in the last 24 hours, {failed or 'none'} failed"
        )
    if endpoint.last_success_at is not None:
        parts.append(f"last delivered {when(endpoint.last_success_at, zone)}")
    if endpoint.secret_rotating_until is not None:
        parts.append(
            "the previous signing secret also signs until "
            f"{when(endpoint.secret_rotating_until, zone)}"
        )
    return " · ".join(parts) + "."


def answer_text(delivery: Delivery) -> str:
    if delivery.last_status_code is not None:
        return f"HTTP {delivery.last_status_code}"
    if delivery.last_error:
        return delivery.last_error
    return "—"


def next_try_text(delivery: Delivery, zone: ZoneInfo) -> str:
    if delivery.status not in WAITING or delivery.next_attempt_at is None:
        return "—"
    return when(delivery.next_attempt_at, zone)


def attempt_line(attempt: Attempt, zone: ZoneInfo) -> str:
    answer = f"HTTP {attempt.status_code}" if attempt.status_code is not None else "no answer"
    if not attempt.error:
        outcome = "accepted"
    elif attempt.error == f"The endpoint answered {answer}.":
        outcome = "refused"  # the answer column says it all
    else:
        outcome = attempt.error
    local = attempt.at.astimezone(zone)
    return f"  {local:%d %b %H:%M:%S}  {answer:<10} {attempt.latency_ms:>6} ms  {outcome}"


def describe(
    delivery: Delivery, attempts: Sequence[Attempt], message: Message | None, zone: ZoneInfo
) -> str:
    """The selected delivery in full: where it stands, every try, and what it sends."""
    status = STATUS_LABELS.get(delivery.status, delivery.status)
    if delivery.attempts:
        status += f" after {delivery.attempts} of at most {MAX_ATTEMPTS} tries"
    lines = [
        f"Event:       {delivery.event_type}",
        f"webhook-id:  {delivery.message_id}",
        f"To:          {delivery.endpoint_url}",
        f"Status:      {status}",
    ]
    if delivery.status in WAITING and delivery.next_attempt_at is not None:
        lines.append(f"Next try:    {when(delivery.next_attempt_at, zone)}")
    if delivery.delivered_at is not None:
        lines.append(f"Delivered:   {when(delivery.delivered_at, zone)}")
    if delivery.last_error:
        lines.append(f"Last error:  {delivery.last_error}")
    lines.append(f"Queued:      {when(delivery.created_at, zone)}")
    if delivery.replay_of is not None:
        lines.append(f"A replay of delivery {delivery.replay_of}, under the same webhook-id.")
    lines += ["", "Tries, oldest first"]
    if attempts:
        lines += [attempt_line(attempt, zone) for attempt in attempts]
    else:
        lines.append("  None yet.")
    if message is not None:
        lines += ["", "What is sent (the same body on every try)"]
        body = json.dumps(
            json.loads(webhook_body(message.event_type, message.created_at, message.payload)),
            indent=2,
            ensure_ascii=False,
        )
        if len(body) > SHOWN_CHARACTERS:
            body = f"{body[:SHOWN_CHARACTERS]}\n… (the first {SHOWN_CHARACTERS:,} characters)"
        lines.append(body)
    return "\n".join(lines)


# --- the endpoint dialog ------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointDraft:
    """What the endpoint dialog holds; `event_types` empty means every event."""

    url: str
    description: str
    event_types: tuple[str, ...]
    only_some: bool

    def problems(self) -> list[FieldError]:
        """The checks the service makes too, said before the round trip."""
        errors: list[FieldError] = []
        try:
            parts = urlsplit(self.url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            parts, host = urlsplit(""), None
        if parts.scheme not in ("http", "https") or not host:
            errors.append(
                FieldError("url", "Enter a web address like https://example.org/webhooks.")
            )
        elif parts.username is not None or parts.password is not None:
            errors.append(FieldError("url", "Leave any user name and password out of the address."))
        if self.only_some and not self.event_types:
            errors.append(FieldError("event_types", "Tick at least one event, or choose all."))
        return errors


class EndpointDialog(RecordDialog):
    """Add an endpoint, or change one: its address, what it is, which events it takes."""

    def __init__(
        self,
        save: Callable[[EndpointDraft], Awaitable[Endpoint]],
        endpoint: Endpoint | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Change endpoint" if endpoint else "Add endpoint", save, parent)
        self.setMinimumWidth(560)
        self.url = line_edit(
            endpoint.url if endpoint else "", "https://crm.example.org/webhooks/switchboard"
        )
        self.add_field(
            "url",
            "Address",
            self.url,
            "The web address the receiving service gave for webhooks. Each event is POSTed "
            "to it as JSON.",
        )
        self.description = line_edit(
            endpoint.description if endpoint else "", "What receives them, e.g. the school CRM"
        )
        self.add_field("description", "Description", self.description)

        chosen = set(endpoint.event_types) if endpoint else set()
        self.all_events = QRadioButton("All events, including kinds added later")
        self.some_events = QRadioButton("Only the events ticked:")
        group = QButtonGroup(self)
        group.addButton(self.all_events)
        group.addButton(self.some_events)
        (self.some_events if chosen else self.all_events).setChecked(True)
        self.boxes: dict[str, QCheckBox] = {}
        known = {**EVENT_TYPES, TEST_EVENT: TEST_EVENT_MEANING}
        extra = {name: "Already taken by this endpoint" for name in chosen if name not in known}
        grid = QGridLayout()
        grid.setContentsMargins(18, 0, 0, 0)
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(2)
        for number, (name, meaning) in enumerate({**known, **extra}.items()):
            box = QCheckBox(name)
            box.setToolTip(meaning)
            box.setChecked(name in chosen or (not chosen and name == TEST_EVENT))
            grid.addWidget(box, number // 2, number % 2)
            self.boxes[name] = box
        events = QWidget()
        column = QVBoxLayout(events)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.all_events)
        column.addWidget(self.some_events)
        column.addLayout(grid)
        self.add_field(
            "event_types",
            "Events",
            events,
            f"Hover over an event to see what it means. Tick {TEST_EVENT} so that “Send a "
            "test event” reaches this endpoint.",
        )
        self.some_events.toggled.connect(self._show_choice)
        self._show_choice(self.some_events.isChecked())

    def _show_choice(self, only_some: bool) -> None:
        for box in self.boxes.values():
            box.setEnabled(only_some)

    def tick(self, names: Iterable[str]) -> None:
        """Take only these events (tests, and a person's clicks, do the same)."""
        wanted = set(names)
        self.some_events.setChecked(True)
        for name, box in self.boxes.items():
            box.setChecked(name in wanted)

    def draft(self) -> EndpointDraft:
        only_some = self.some_events.isChecked()
        types = tuple(name for name, box in self.boxes.items() if box.isChecked())
        url = self.url.text().strip()
        if not url:
            raise FieldProblems([FieldError("url", "Enter the address to send webhooks to.")])
        return EndpointDraft(
            url=url,
            description=self.description.text().strip(),
            event_types=types if only_some else (),
            only_some=only_some,
        )


class SecretDialog(QDialog):
    """An endpoint's signing secret, shown once, with a Copy button and how the receiving
    service checks signatures."""

    def __init__(
        self,
        url: str,
        secret: str,
        zone: ZoneInfo,
        rotating_until: datetime | None = None,
        parent: QWidget | None = None,
        overlap_hours: int = 24,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("New signing secret" if rotating_until else "Signing secret")
        self.setMinimumWidth(600)
        layout = QVBoxLayout(self)
        heading = QLabel(f"The signing secret for {url}")
        heading.setObjectName("CardLabel")
        heading.setWordWrap(True)
        heading.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(heading)
        intro = QLabel(
            "Paste it into the receiving service's webhook settings now. Switchboard keeps it in "
            "this computer's credential store and does not show it again; if it is lost, rotate "
            "the secret to get a new one."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        self.secret = QLineEdit(secret)
        self.secret.setReadOnly(True)
        self.secret.setFont(QFont("monospace"))
        self.secret.setCursorPosition(0)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the secret to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.secret, 1)
        row.addWidget(self.copy_button)
        layout.addLayout(row)
        if rotating_until is not None:
            rotation = QLabel(
                f"The old secret keeps signing too until {when(rotating_until, zone)} "
                f"({hours_words(overlap_hours)}): until then every webhook carries two "
                "signatures, one "
                "from each secret, so the receiving service goes on accepting them with the old "
                "secret and can switch to the new one whenever someone pastes it in. After "
                "that only the new secret signs."
            )
            rotation.setWordWrap(True)
            layout.addWidget(rotation)
        verify = QLabel(VERIFY_TEXT)
        verify.setObjectName("Muted")
        verify.setWordWrap(True)
        layout.addWidget(verify)
        buttons = QDialogButtonBox()
        done = buttons.addButton("Done", QDialogButtonBox.ButtonRole.AcceptRole)
        done.setDefault(True)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)

    def copy(self) -> None:
        clipboard = QGuiApplication.clipboard()
        if clipboard is not None:
            clipboard.setText(self.secret.text())
        self.copy_button.setText("Copied")


class ReplayRangeDialog(QDialog):
    """Send one endpoint again the events of a time range, in the school's time zone."""

    def __init__(
        self,
        url: str,
        zone: ZoneInfo,
        replay: Callable[[datetime, datetime, bool], Awaitable[list[int]]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Replay a time range")
        self.setMinimumWidth(520)
        self.zone = zone
        self._replay = replay
        self.saved: list[int] | None = None
        layout = QVBoxLayout(self)
        text = QLabel(
            f"Send {url} the events emitted in this time that it did not receive: dead letters, "
            "cancelled ones, and those emitted while it was disabled or before it was added. "
            "Each keeps its webhook-id, so a receiver that ignores ids it has seen does each "
            "event once."
        )
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(text)
        now = datetime.now(UTC).astimezone(zone).replace(second=0, microsecond=0, tzinfo=None)
        form = QFormLayout()
        self.since = self._moment(now - timedelta(days=1))
        self.until = self._moment(now + timedelta(minutes=1))
        form.addRow("From", self.since)
        form.addRow("To", self.until)
        layout.addLayout(form)
        layout.addWidget(labels.muted(f"Times are the school's ({zone.key})."))
        self.include_delivered = QCheckBox("Include ones that were delivered (they arrive again)")
        layout.addWidget(self.include_delivered)
        self.banner = QLabel()
        self.banner.setObjectName("FieldError")
        self.banner.setWordWrap(True)
        self.banner.hide()
        layout.addWidget(self.banner)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Replay")
        self.ok_button.setDefault(True)
        buttons.accepted.connect(lambda: tasks.start(self.submit(), owner=self))
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    @staticmethod
    def _moment(local: datetime) -> QDateTimeEdit:
        edit = QDateTimeEdit(
            QDateTime(QDate(local.year, local.month, local.day), QTime(local.hour, local.minute))
        )
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("dd MMM yyyy HH:mm")
        return edit

    def chosen(self) -> tuple[datetime, datetime]:
        """The range as aware moments: what was typed is the school's time."""
        since, until = (
            _naive(edit.dateTime().toPython()).replace(tzinfo=self.zone)
            for edit in (self.since, self.until)
        )
        return since, until

    async def submit(self) -> bool:
        since, until = self.chosen()
        if since >= until:
            self.banner.setText("The start of the time range must be before its end.")
            self.banner.show()
            return False
        self.banner.hide()
        self.ok_button.setEnabled(False)
        try:
            self.saved = await self._replay(since, until, self.include_delivered.isChecked())
        except SwitchboardError as exc:
            self.banner.setText(str(exc))
            self.banner.show()
            return False
        finally:
            self.ok_button.setEnabled(True)
        self.accept()
        return True


def _naive(moment: object) -> datetime:
    if not isinstance(moment, datetime):  # QDateTime.toPython's type is declared loosely
        raise TypeError(f"not a date and time: {moment!r}")
    return moment.replace(tzinfo=None)


# --- the page -----------------------------------------------------------------------------------


class OutboundWebhooksPage(Page):
    key = "outbound-webhooks"
    title = "Outbound webhooks"
    icon_name = "events"  # no icon of its own yet
    topics = (TOPIC,)
    refresh_every = 1.0  # deliveries may change many times a second
    shortcut_hint = "Ctrl+N adds an endpoint; Ctrl+R replays the selected deliveries"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self._endpoint_id: int | None = None  # whose deliveries are listed
        self._cursors: list[int | None] = [None]  # before_id of each page shown, newest first
        self._shown: int | None = None  # the delivery in the detail pane
        self._details_for: tuple[int, int, str] | None = None  # what the pane was drawn from
        self._wanted_endpoint: int | None = None  # open_with's choice, until the list has it

        self.add_button = QPushButton("Add endpoint…")
        self.add_button.setToolTip("Register an address to send Switchboard's events to (Ctrl+N)")
        self.add_button.clicked.connect(lambda: tasks.start(self.add_endpoint(), owner=self))
        self.actions.addWidget(self.add_button)
        QShortcut(QKeySequence.StandardKey.New, self, activated=self.add_button.click)

        intro = labels.muted(
            "Other systems — the school's website, a CRM, an automation — hear what happens in "
            "Switchboard as it happens, at the addresses below. Every webhook is signed, and "
            "one that fails is tried again for about a day before it waits here as a dead "
            "letter to be replayed."
        )

        # Endpoints, with what can be done to the one selected.
        self.endpoint_model: RecordModel[EndpointHealth] = RecordModel(
            self._endpoint_columns(), key=lambda health: health.endpoint.id
        )
        self.endpoints = RecordTable(self.endpoint_model)
        self.endpoints.setSortingEnabled(False)
        self.endpoints.proxy.sort(-1)  # oldest first, as they were added
        self.endpoints.selection_changed.connect(self._endpoint_chosen)
        self.endpoints.opened.connect(
            lambda health: tasks.start(self.edit_endpoint(health), owner=self)
        )
        self.endpoints.delete_requested.connect(
            lambda health: tasks.start(self.remove_endpoint(health), owner=self)
        )
        self.endpoint_summary = labels.muted()
        self.edit_button = QPushButton("Edit…")
        self.edit_button.clicked.connect(
            lambda: tasks.start(self.edit_endpoint(self.endpoints.current_record()), owner=self)
        )
        self.enable_button = QPushButton("Disable…")
        self.enable_button.clicked.connect(lambda: tasks.start(self.toggle_enabled(), owner=self))
        self.rotate_button = QPushButton("Rotate secret…")
        self.rotate_button.setToolTip(
            "Make a new signing secret; the old one keeps signing for the rotation overlap "
            "(Settings, Security)"
        )
        self.rotate_button.clicked.connect(lambda: tasks.start(self.rotate_secret(), owner=self))
        self.test_button = QPushButton("Send a test event")
        self.test_button.setToolTip(f"Emit a {TEST_EVENT} event to see the connection work")
        self.test_button.clicked.connect(lambda: tasks.start(self.send_test(), owner=self))
        self.remove_button = QPushButton("Remove…")
        self.remove_button.clicked.connect(
            lambda: tasks.start(self.remove_endpoint(self.endpoints.current_record()), owner=self)
        )
        endpoint_row = QHBoxLayout()
        endpoint_row.addWidget(self.endpoint_summary, 1)
        for button in (
            self.edit_button,
            self.enable_button,
            self.rotate_button,
            self.test_button,
            self.remove_button,
        ):
            endpoint_row.addWidget(button)
        upper = QWidget()
        upper_layout = QVBoxLayout(upper)
        upper_layout.setContentsMargins(0, 0, 0, 0)
        upper_layout.addWidget(labels.heading("Endpoints"))
        upper_layout.addWidget(self.endpoints, 1)
        upper_layout.addLayout(endpoint_row)

        # Deliveries to the selected endpoint, and the tries of the one selected.
        self.deliveries_heading = labels.heading("Deliveries")
        self.status = QComboBox()
        for label, statuses in FILTERS:
            self.status.addItem(label, statuses)
        self.status.setToolTip("Show only the deliveries with this status")
        self.status.currentIndexChanged.connect(lambda _index: self.first_page())
        heading_row = QHBoxLayout()
        heading_row.addWidget(self.deliveries_heading, 1)
        heading_row.addWidget(QLabel("Show"))
        heading_row.addWidget(self.status)

        self.delivery_model: RecordModel[Delivery] = RecordModel(self._delivery_columns())
        self.deliveries = RecordTable(self.delivery_model)
        self.deliveries.setSortingEnabled(False)
        self.deliveries.proxy.sort(-1)  # newest first, as the pages are read
        self.deliveries.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.deliveries.selection_changed.connect(self._delivery_chosen)
        self.deliveries.selectionModel().selectionChanged.connect(
            lambda _selected, _deselected: self._show_delivery_buttons()
        )
        self.no_deliveries = labels.muted()
        self.no_deliveries.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.delivery_stack = QStackedWidget()
        self.delivery_stack.addWidget(self.deliveries)
        self.delivery_stack.addWidget(self.no_deliveries)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setFont(QFont("monospace"))
        self.detail.setPlaceholderText(
            "Choose a delivery to see each try: when, what the endpoint answered, how long it "
            "took, and the body that was sent."
        )
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.delivery_stack)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)

        self.replay_button = QPushButton("Replay selected")
        self.replay_button.setToolTip(
            "Send the selected deliveries again, under the same webhook-id (Ctrl+R)"
        )
        self.replay_button.clicked.connect(lambda: tasks.start(self.replay_selected(), owner=self))
        QShortcut(QKeySequence("Ctrl+R"), self, activated=self.replay_button.click)
        self.range_button = QPushButton("Replay a time range…")
        self.range_button.setToolTip(
            "Send this endpoint again what it missed in a time range (after an outage, say)"
        )
        self.range_button.clicked.connect(lambda: tasks.start(self.replay_range(), owner=self))
        self.cancel_button = QPushButton("Cancel waiting…")
        self.cancel_button.setToolTip("Stop trying the selected deliveries that still wait")
        self.cancel_button.clicked.connect(lambda: tasks.start(self.cancel_selected(), owner=self))
        self.newer = QPushButton("Newer")
        self.newer.clicked.connect(lambda: self.turn(-1))
        self.older = QPushButton("Older")
        self.older.clicked.connect(lambda: self.turn(1))
        self.footer = labels.muted()
        self.footer.setWordWrap(False)
        self.notice = QLabel()  # what the last action did; the footer is rewritten on refresh
        self.notice.setWordWrap(True)
        bottom = QHBoxLayout()
        bottom.addWidget(self.footer)
        bottom.addWidget(self.notice, 1)
        for button in (
            self.replay_button,
            self.range_button,
            self.cancel_button,
            self.newer,
            self.older,
        ):
            bottom.addWidget(button)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 6, 0, 0)
        lower_layout.addLayout(heading_row)
        lower_layout.addWidget(split, 1)
        lower_layout.addLayout(bottom)

        halves = QSplitter(Qt.Orientation.Vertical)
        halves.addWidget(upper)
        halves.addWidget(lower)
        halves.setSizes([190, 520])
        halves.setChildrenCollapsible(False)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(intro)
        layout.addWidget(halves, 1)
        self._show_endpoint_buttons(None)
        self._show_delivery_buttons()

    # --- columns --------------------------------------------------------------------------------

    def _endpoint_columns(self) -> list[Column[EndpointHealth]]:
        return [
            Column(
                "Address",
                lambda h: h.endpoint.url,
                stretch=True,
                tooltip=lambda h: h.endpoint.url,
            ),
            Column(
                "Description",
                lambda h: h.endpoint.description,
                width=140,
                tooltip=lambda h: h.endpoint.description,
            ),
            Column(
                "Events",
                lambda h: events_text(h.endpoint),
                width=170,
                tooltip=lambda h: events_text(h.endpoint),
            ),
            Column(
                "State",
                lambda h: state_text(h, self.zone),
                color=lambda h: STATE_COLOURS.get(h.state),
                tooltip=lambda h: summary(h, self.zone),
                width=170,
            ),
            Column(
                "Waiting", lambda h: str(h.waiting), right=True, sort=lambda h: h.waiting, width=60
            ),
            Column(
                "Dead",
                lambda h: str(h.dead),
                right=True,
                sort=lambda h: h.dead,
                color=lambda h: DOWN if h.dead else None,
                width=50,
            ),
            Column("Last try", lambda h: last_try_text(h, self.zone), width=130),
        ]

    def _delivery_columns(self) -> list[Column[Delivery]]:
        return [
            Column("Queued", lambda d: when(d.created_at, self.zone), width=97),
            Column("Event", lambda d: d.event_type, width=112),
            Column("webhook-id", lambda d: d.message_id, width=90, tooltip=lambda d: d.message_id),
            Column(
                "Status",
                lambda d: STATUS_LABELS.get(d.status, d.status),
                color=lambda d: STATUS_COLOURS.get(d.status),
                tooltip=lambda d: d.last_error,
                width=115,
            ),
            Column("Tries", lambda d: str(d.attempts), right=True, width=40),
            Column("Next try", lambda d: next_try_text(d, self.zone), width=70),
            Column(
                "Last answer",
                answer_text,
                stretch=True,
                tooltip=lambda d: d.last_error or answer_text(d),
            ),
        ]

    # --- loading --------------------------------------------------------------------------------

    @property
    def outbound(self) -> OutboundWebhooks:
        return self.bridge.services.outbound

    def selected_endpoint(self) -> EndpointHealth | None:
        health: EndpointHealth | None = self.endpoints.current_record()
        return health

    def open_with(self, argument: str) -> None:
        """ "outbound-webhooks:dead" shows dead letters; ":<endpoint id>" that endpoint's."""
        if argument == "dead":
            self.status.setCurrentIndex(self.status.findData(("dead",)))
        elif argument.isdigit():
            self._wanted_endpoint = int(argument)
            if self.endpoints.select_key(int(argument)):
                self._wanted_endpoint = None
            self.schedule_refresh()

    async def load(self) -> None:
        services = self.bridge.services
        self.zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        endpoints: list[EndpointHealth] = await self.bridge.call(self.outbound.endpoints)
        self.endpoint_model.set_records(endpoints)
        if not endpoints:
            self._endpoint_id = None
            self.delivery_model.set_records([])
            self.states.show_empty(
                "No webhook endpoints yet",
                "Other systems — the school's website, a CRM, an automation in Zapier or "
                "Make — can hear what happens in Switchboard as it happens: a payment went "
                "through, a lesson moved, a student joined. Add the web address the other "
                "system gives for webhooks; Switchboard signs each one so it can tell they "
                "came from the school.",
                [("Add endpoint…", self.add_button.click)],
            )
            return
        self.states.show_content()
        if self._wanted_endpoint is not None and self.endpoints.select_key(self._wanted_endpoint):
            self._wanted_endpoint = None
        if self.selected_endpoint() is None:
            self.endpoints.selectRow(0)
        health = self.selected_endpoint()
        self._show_endpoint_buttons(health)
        if health is not None:
            if health.endpoint.id != self._endpoint_id:
                self._endpoint_id = health.endpoint.id
                self._cursors = [None]
            await self.load_deliveries(health)

    async def load_deliveries(self, health: EndpointHealth) -> None:
        endpoint = health.endpoint
        statuses = self.status.currentData()
        before = self._cursors[-1]
        rows: list[Delivery] = await self.bridge.call(
            self.outbound.deliveries,
            endpoint_id=endpoint.id,
            status=list(statuses) if statuses else None,
            limit=PAGE_SIZE + 1,
            before_id=before,
        )
        if not rows and len(self._cursors) > 1:  # the page emptied meanwhile: start over
            self._cursors = [None]
            rows = await self.bridge.call(
                self.outbound.deliveries,
                endpoint_id=endpoint.id,
                status=list(statuses) if statuses else None,
                limit=PAGE_SIZE + 1,
            )
        if endpoint.id != self._endpoint_id:
            return  # another endpoint was chosen meanwhile
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        self.deliveries_heading.setText(f"Deliveries to {endpoint.url}")
        self.delivery_model.set_records(rows)
        if rows:
            self.delivery_stack.setCurrentWidget(self.deliveries)
            shown = "The newest" if len(self._cursors) == 1 else "Older"
            self.footer.setText(f"{shown} {len(rows)} shown, newest first")
            if self.deliveries.current_record() is None:
                self.deliveries.selectRow(0)
        else:
            self.delivery_stack.setCurrentWidget(self.no_deliveries)
            self.no_deliveries.setText(self._no_deliveries_text(health, bool(statuses)))
            self.footer.setText("")
            self._shown = None
            self._details_for = None
            self.detail.clear()
        self.newer.setEnabled(len(self._cursors) > 1)
        self.older.setEnabled(more)
        self._show_delivery_buttons()
        current: Delivery | None = self.deliveries.current_record()
        if current is not None:
            await self.show_delivery(current)

    @staticmethod
    def _no_deliveries_text(health: EndpointHealth, filtered: bool) -> str:
        if filtered:
            return "No deliveries to this endpoint have this status. Choose “Every status” above."
        if health.state == "disabled":
            return (
                "Nothing has been sent to this endpoint, and nothing will be while it is "
                "disabled: enable it to have new events sent, then replay a time range for "
                "what it missed."
            )
        return (
            "Nothing has been sent to this endpoint yet. Switchboard sends each event as it "
            "happens; “Send a test event” tries the connection now."
        )

    def first_page(self) -> None:
        self._cursors = [None]
        self.schedule_refresh()

    def turn(self, pages: int) -> None:
        if pages > 0:
            records = self.delivery_model.records()
            if records:
                self._cursors.append(records[-1].id)
        elif len(self._cursors) > 1:
            self._cursors.pop()
        self.schedule_refresh()

    # --- selection ------------------------------------------------------------------------------

    def _endpoint_chosen(self, health: EndpointHealth | None) -> None:
        self._show_endpoint_buttons(health)
        if health is not None and health.endpoint.id != self._endpoint_id:
            self._endpoint_id = health.endpoint.id
            self._cursors = [None]
            self._shown = None
            self.delivery_model.set_records([])
            self.detail.clear()
            self.schedule_refresh()

    def _show_endpoint_buttons(self, health: EndpointHealth | None) -> None:
        chosen = health is not None
        for button in (self.edit_button, self.enable_button, self.rotate_button):
            button.setEnabled(chosen)
        self.remove_button.setEnabled(chosen)
        enabled = health is not None and health.endpoint.enabled
        self.test_button.setEnabled(enabled)
        self.enable_button.setText("Disable…" if health is None or enabled else "Enable")
        self.enable_button.setToolTip(
            "Stop sending to it; what waits is cancelled"
            if health is None or enabled
            else "Send new events to it again"
        )
        self.range_button.setEnabled(chosen)
        self.endpoint_summary.setText(summary(health, self.zone) if health else "")

    def selected_deliveries(self) -> list[Delivery]:
        rows = {index.row() for index in self.deliveries.selectionModel().selectedRows()}
        return [self.deliveries.proxy.index(row, 0).data(RECORD_ROLE) for row in sorted(rows)]

    def _show_delivery_buttons(self) -> None:
        chosen = self.selected_deliveries()
        self.replay_button.setEnabled(bool(chosen))
        self.cancel_button.setEnabled(any(d.status in WAITING for d in chosen))

    def _delivery_chosen(self, delivery: Delivery | None) -> None:
        self._show_delivery_buttons()
        if delivery is not None and delivery.id != self._shown:
            tasks.start(self.show_delivery(delivery), owner=self)

    async def show_delivery(self, delivery: Delivery) -> None:
        """Draw the delivery's tries and body in the pane, unless nothing changed."""
        drawn = (delivery.id, delivery.attempts, delivery.status)
        if drawn == self._details_for:
            return
        self._shown = delivery.id
        outbound = self.outbound
        attempts: list[Attempt] = await self.bridge.call(outbound.attempts, delivery.id)
        try:
            message: Message | None = await self.bridge.call(outbound.message, delivery.message_id)
        except SwitchboardError:
            message = None  # forgotten by retention meanwhile
        if self._shown != delivery.id:
            return  # another was chosen meanwhile
        # Pretty-printing a body of up to a megabyte takes a while: off the GUI thread.
        loop = asyncio.get_event_loop()  # qasync's
        text = await loop.run_in_executor(None, describe, delivery, attempts, message, self.zone)
        if self._shown == delivery.id:
            self.detail.setPlainText(text)
            self._details_for = drawn

    # --- endpoint actions -----------------------------------------------------------------------

    async def add_endpoint(self) -> Endpoint | None:
        outbound = self.outbound

        async def save(draft: EndpointDraft) -> Endpoint:
            added: Endpoint = await self.bridge.call(
                outbound.add_endpoint,
                draft.url,
                description=draft.description,
                event_types=list(draft.event_types),
            )
            return added

        dialog = EndpointDialog(save, None, self)
        if not await run_dialog(dialog):
            return None
        endpoint: Endpoint = dialog.saved
        self._wanted_endpoint = endpoint.id
        self.schedule_refresh()
        try:
            secret: str = await self.bridge.call(outbound.secret, endpoint.id)
        except SwitchboardError as exc:
            tell(self, "Endpoint added; its secret cannot be shown", str(exc))
            return endpoint
        self.notice.setText(f"Added {endpoint.url}.")
        await run_dialog(SecretDialog(endpoint.url, secret, self.zone, parent=self))
        return endpoint

    async def edit_endpoint(self, health: EndpointHealth | None) -> Endpoint | None:
        if health is None:
            return None
        outbound = self.outbound
        endpoint_id = health.endpoint.id

        async def save(draft: EndpointDraft) -> Endpoint:
            saved: Endpoint = await self.bridge.call(
                outbound.update_endpoint,
                endpoint_id,
                url=draft.url,
                description=draft.description,
                event_types=list(draft.event_types),
            )
            return saved

        dialog = EndpointDialog(save, health.endpoint, self)
        if not await run_dialog(dialog):
            return None
        self.notice.setText("Saved; deliveries still waiting go to the address as it is now.")
        self.schedule_refresh()
        saved: Endpoint = dialog.saved
        return saved

    async def toggle_enabled(self) -> Endpoint | None:
        health = self.selected_endpoint()
        if health is None:
            return None
        outbound = self.outbound
        endpoint = health.endpoint
        if not endpoint.enabled:
            try:
                enabled: Endpoint = await self.bridge.call(outbound.enable_endpoint, endpoint.id)
            except SwitchboardError as exc:
                tell(self, "Not enabled", str(exc))
                return None
            self.notice.setText(
                "Enabled: new events go to it again. What it missed while disabled is sent only "
                "if you replay it (Replay a time range…)."
            )
            self.schedule_refresh()
            return enabled

        async def disable(reason: str) -> Endpoint:
            disabled: Endpoint = await self.bridge.call(
                outbound.disable_endpoint, endpoint.id, reason
            )
            return disabled

        dialog = ReasonDialog(
            "Disable endpoint",
            f"Stop sending webhooks to {endpoint.url}? Deliveries still waiting for it are "
            "cancelled. When you enable it again, Replay a time range… sends what it missed.",
            "Disable",
            disable,
            self,
            example="For example: the CRM is moving to a new server this week",
        )
        if not await run_dialog(dialog):
            return None
        self.notice.setText("Disabled; nothing is sent to it until it is enabled again.")
        self.schedule_refresh()
        saved: Endpoint = dialog.saved
        return saved

    def overlap_hours(self) -> int:
        """How long an old secret keeps signing after a rotation, as the settings say."""
        return int(self.bridge.services.settings.get(OVERLAP_SETTING))

    async def rotate_secret(self) -> str | None:
        health = self.selected_endpoint()
        if health is None:
            return None
        endpoint = health.endpoint
        hours = self.overlap_hours()
        overlap = (
            f"For the next {hours_words(hours)} every webhook is signed with both the old and "
            "the new secret, so the receiving service keeps accepting them while someone "
            "pastes the new one into it. After that only the new secret signs."
            if hours
            else "The old secret stops signing at once (the rotation overlap in Settings, "
            "Security, is 0 hours), so the receiving service refuses webhooks until the new "
            "one is pasted into it."
        )
        asked = await confirm(
            self,
            "Rotate signing secret",
            f"Make a new signing secret for {endpoint.url}?\n\n{overlap}",
            "Rotate secret",
        )
        if not asked:
            return None
        outbound = self.outbound
        try:
            secret: str = await self.bridge.call(outbound.rotate_secret, endpoint.id)
            rotated: Endpoint = await self.bridge.call(outbound.endpoint, endpoint.id)
        except SwitchboardError as exc:
            tell(self, "Secret not rotated", str(exc))
            return None
        self.notice.setText("New signing secret made; paste it into the receiving service.")
        self.schedule_refresh()
        await run_dialog(
            SecretDialog(
                endpoint.url,
                secret,
                self.zone,
                rotating_until=rotated.secret_rotating_until,
                parent=self,
                overlap_hours=hours,
            )
        )
        return secret

    async def remove_endpoint(self, health: EndpointHealth | None) -> bool:
        if health is None:
            return False
        endpoint = health.endpoint
        asked = await confirm(
            self,
            "Remove endpoint",
            f"Remove {endpoint.url}? Switchboard stops sending to it and forgets its "
            "deliveries and its signing secret. This cannot be undone; to pause it instead, "
            "disable it.",
            "Remove",
        )
        if not asked:
            return False
        try:
            await self.bridge.call(self.outbound.remove_endpoint, endpoint.id)
        except SwitchboardError as exc:
            tell(self, "Not removed", str(exc))
            return False
        if self._endpoint_id == endpoint.id:
            self._endpoint_id = None
        self.notice.setText(f"Removed {endpoint.url}.")
        self.schedule_refresh()
        return True

    async def send_test(self) -> str | None:
        """Emit a test event; it reaches this endpoint if it takes test events. The service
        cannot address one endpoint, so every other endpoint that takes them gets it too."""
        health = self.selected_endpoint()
        if health is None:
            return None
        endpoint = health.endpoint
        if not endpoint.enabled:
            self.notice.setText("This endpoint is disabled; enable it first, then test it.")
            return None
        if not endpoint.wants(TEST_EVENT):
            self.notice.setText(
                f"This endpoint takes only the events ticked for it, and {TEST_EVENT} is not "
                "one: tick it under Edit… to send it test events."
            )
            return None
        outbound = self.outbound
        payload = {
            "test": True,
            "endpoint": endpoint.id,
            "message": "A test from Switchboard: nothing happened at the school.",
        }
        self.test_button.setEnabled(False)
        try:
            message_id: str = await self.bridge.call(outbound.emit, TEST_EVENT, payload)
            sent: list[Delivery] = await self.bridge.call(
                outbound.deliveries, message_id=message_id
            )
        except SwitchboardError as exc:
            tell(self, "Test not sent", str(exc))
            return None
        finally:
            self._show_endpoint_buttons(self.selected_endpoint())
        others = sum(1 for delivery in sent if delivery.endpoint_id != endpoint.id)
        text = f"Test event {message_id} sent; its delivery shows below."
        if others:
            text += (
                f" {others} other endpoint(s) that take test events got it too: Switchboard "
                "cannot yet send an event to one endpoint alone."
            )
        self.notice.setText(text)
        self.schedule_refresh()
        return message_id

    # --- delivery actions -----------------------------------------------------------------------

    async def replay_selected(self) -> list[int]:
        chosen = self.selected_deliveries()
        if not chosen:
            self.notice.setText("Choose the deliveries to replay first.")
            return []
        try:
            replayed: list[int] = await self.bridge.call(
                self.outbound.replay, [delivery.id for delivery in chosen]
            )
        except SwitchboardError as exc:
            tell(self, "Not replayed", str(exc))
            return []
        self.notice.setText(
            f"{len(replayed)} deliver{'y' if len(replayed) == 1 else 'ies'} will be sent again "
            "now, under the same webhook-id."
        )
        self.schedule_refresh()
        return replayed

    async def replay_range(self) -> list[int] | None:
        health = self.selected_endpoint()
        if health is None:
            return None
        outbound = self.outbound
        endpoint_id = health.endpoint.id

        async def replay(since: datetime, until: datetime, include: bool) -> list[int]:
            ids: list[int] = await self.bridge.call(
                outbound.replay_range, since, until, endpoint_id, include_delivered=include
            )
            return ids

        dialog = ReplayRangeDialog(health.endpoint.url, self.zone, replay, self)
        if not await run_dialog(dialog):
            return None
        replayed = dialog.saved or []
        if replayed:
            self.notice.setText(
                f"{len(replayed)} event(s) from that time will be sent again now, each under "
                "its own webhook-id."
            )
        else:
            self.notice.setText(
                "Nothing to replay: the endpoint has every event of that time, or one of it "
                "still waits to be sent."
            )
        self.schedule_refresh()
        return replayed

    async def cancel_selected(self) -> int:
        waiting = [d for d in self.selected_deliveries() if d.status in WAITING]
        if not waiting:
            self.notice.setText("Choose deliveries that are still waiting to cancel them.")
            return 0
        asked = await confirm(
            self,
            "Cancel deliveries",
            f"Stop trying {len(waiting)} deliver{'y' if len(waiting) == 1 else 'ies'}? They "
            "are kept as cancelled, and can be replayed later.",
            "Stop trying",
        )
        if not asked:
            return 0
        try:
            cancelled = int(
                await self.bridge.call(self.outbound.cancel, [delivery.id for delivery in waiting])
            )
        except SwitchboardError as exc:
            tell(self, "Not cancelled", str(exc))
            return 0
        self.notice.setText(f"{cancelled} deliver{'y' if cancelled == 1 else 'ies'} cancelled.")
        self.schedule_refresh()
        return cancelled
