"""Events: the callbacks providers sent, a page at a time however many there are, with what
became of each, the full body and headers of the one selected, and replay."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.domain.inbox import DEAD, FAILED, PROCESSED, RECEIVED, SKIPPED
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.inbox import TOPIC as TOPIC_INBOX
from app.services.inbox import EventFilter, EventPage, EventRow, InboxEvent
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.page import Page
from app.ui.plots import show_time_in, theme_plot, time_plot
from app.ui.table import RECORD_ROLE, Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED

PAGE_SIZE = 500
SHOWN_CHARACTERS = 50_000  # more is slow to lay out, and no one reads it here
GRAPH_MINUTES = 60

STATUS_LABELS = {
    RECEIVED: "waiting",
    PROCESSED: "processed",
    SKIPPED: "nothing to do",
    FAILED: "failed, will retry",
    DEAD: "dead letter",
}
STATUS_COLOURS = {PROCESSED: HEALTHY, SKIPPED: PAUSED, FAILED: DEGRADED, DEAD: DOWN}
PERIODS = (
    ("Any time", None),
    ("Last hour", timedelta(hours=1)),
    ("Last 24 hours", timedelta(days=1)),
    ("Last 7 days", timedelta(days=7)),
    ("Last 30 days", timedelta(days=30)),
)


def describe(event: InboxEvent, zone: ZoneInfo, connection: str) -> str:
    """The selected event in full: what it is, what became of it, headers and body."""
    local = event.received_at.astimezone(zone)
    lines = [
        f"Event {event.id} from {connection}",
        f"Type:        {event.event_type or '(none given)'}",
        f"Provider id: {event.provider_event_id}",
        f"Received:    {local:%d %b %Y %H:%M:%S}",
        f"Status:      {STATUS_LABELS.get(event.status, event.status)}"
        + (f" after {event.attempts} attempt(s)" if event.attempts else ""),
    ]
    if event.last_error:
        lines.append(f"Last error:  {event.last_error}")
    lines += ["", "Headers"]
    lines += [f"  {name}: {value}" for name, value in sorted(event.headers.items())]
    lines += ["", "Body"]
    try:
        body = json.dumps(json.loads(event.body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to print
        body = event.body.decode("utf-8", errors="replace")
    shown = SHOWN_CHARACTERS
    if len(body) > shown:
        body = (
            f"{body[:shown]}\n… (the first {shown:,} of {len(body):,} characters; "
            f"`switchboard events show {event.id}` prints it all)"
        )
    lines.append(body)
    return "\n".join(lines)


class EventsPage(Page):
    key = "events"
    title = "Events"
    icon_name = "events"
    topics = (TOPIC_INBOX, TOPIC_CONNECTIONS)
    refresh_every = 2.0  # providers may send hundreds a second
    shortcut_hint = "Ctrl+R replays the selected events"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.names: dict[int, str] = {}
        self.offset = 0
        self.total = 0
        self._shown: int | None = None  # the event in the detail pane

        self.connection = QComboBox()
        self.connection.setMinimumWidth(180)
        self.status = QComboBox()
        self.status.addItem("Every status", None)
        for status, label in STATUS_LABELS.items():
            self.status.addItem(label.capitalize(), status)
        self.kind = QLineEdit()
        self.kind.setPlaceholderText("Type contains…")
        self.kind.setClearButtonEnabled(True)
        self.kind.setMaximumWidth(200)
        self.period = QComboBox()
        for label, span in PERIODS:
            self.period.addItem(label, span)
        for combo in (self.connection, self.status, self.period):
            combo.currentIndexChanged.connect(lambda _i: self.first_page())
        self.kind.textChanged.connect(lambda _t: self.first_page())
        for widget in (self.connection, self.status, self.kind, self.period):
            self.actions.addWidget(widget)

        self.graph = time_plot("Events a minute")
        self.graph.setFixedHeight(130)
        self.bars = pg.BarGraphItem(x=[], height=[], width=50, brush="#1f6feb", pen=None)
        self.graph.addItem(self.bars)

        self.model: RecordModel[EventRow] = RecordModel(self.columns())
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)  # newest first, as the pages are read
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.selection_changed.connect(self._selected)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setFont(QFont("monospace"))
        self.detail.setPlaceholderText("Choose an event to see its headers and body.")
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        self.replay_button = QPushButton("Replay selected")
        self.replay_button.setToolTip("Process the selected events again (Ctrl+R)")
        self.replay_button.clicked.connect(lambda: tasks.start(self.replay_selected(), owner=self))
        QShortcut(QKeySequence("Ctrl+R"), self, activated=self.replay_button.click)
        self.newer = QPushButton("Newer")
        self.newer.clicked.connect(lambda: self.turn(-1))
        self.older = QPushButton("Older")
        self.older.clicked.connect(lambda: self.turn(1))
        self.footer = QLabel()
        self.footer.setObjectName("Muted")
        self.notice = QLabel()  # what the last action did; the footer is rewritten on refresh
        bottom = QHBoxLayout()
        bottom.addWidget(self.footer)
        bottom.addWidget(self.notice, 1)
        for button in (self.replay_button, self.newer, self.older):
            bottom.addWidget(button)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graph)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)
        self._fitted = False
        theme_plot(self.graph, self.palette())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            theme_plot(self.graph, self.palette())

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.services.settings.get("school.timezone"))

    def columns(self) -> list[Column[EventRow]]:
        def when(event: EventRow) -> str:
            return f"{event.received_at.astimezone(self.zone):%d %b %H:%M:%S}"

        return [
            Column("Received", when),
            Column("Connection", lambda e: self.names.get(e.connection_id, "?")),
            Column("Type", lambda e: e.event_type or "(none)", stretch=True),
            Column(
                "Status",
                lambda e: STATUS_LABELS.get(e.status, e.status),
                color=lambda e: STATUS_COLOURS.get(e.status),
                tooltip=lambda e: e.last_error or "",
            ),
            Column("Attempts", lambda e: str(e.attempts), right=True),
        ]

    # --- what is shown --------------------------------------------------------------------------

    def where(self) -> EventFilter:
        span = self.period.currentData()
        return EventFilter(
            connection_id=self.connection.currentData(),
            status=self.status.currentData(),
            type_contains=self.kind.text(),
            since=datetime.now(UTC) - span if span is not None else None,
        )

    def first_page(self) -> None:
        self.offset = 0
        self.schedule_refresh()

    def turn(self, pages: int) -> None:
        self.offset = max(0, self.offset + pages * PAGE_SIZE)
        self.schedule_refresh()

    def open_with(self, argument: str) -> None:
        """ "events:dead" shows the dead letters; "events:<connection id>" one connection's."""
        if argument == "dead":
            self.status.setCurrentIndex(self.status.findData(DEAD))
        elif argument.isdigit():
            index = self.connection.findData(int(argument))
            if index >= 0:
                self.connection.setCurrentIndex(index)

    async def load(self) -> None:
        services = self.bridge.services
        records = await self.bridge.call(services.connections.connections)
        self.names = {record.id: record.name for record in records}
        current = self.connection.currentData()
        self.connection.blockSignals(True)
        self.connection.clear()
        self.connection.addItem("All connections", None)
        for record in records:
            self.connection.addItem(record.name, record.id)
        self.connection.setCurrentIndex(max(self.connection.findData(current), 0))
        self.connection.blockSignals(False)
        where = self.where()
        page: EventPage = await self.bridge.call(services.inbox.page, where, self.offset, PAGE_SIZE)
        if not page.rows and self.offset:  # the last page emptied meanwhile: step back
            self.offset = max(0, (page.total - 1) // PAGE_SIZE * PAGE_SIZE)
            page = await self.bridge.call(services.inbox.page, where, self.offset, PAGE_SIZE)
        since = datetime.now(UTC) - timedelta(minutes=GRAPH_MINUTES)
        counts = await self.bridge.call(services.inbox.per_minute, since, where.connection_id)
        self.total = page.total
        if not page.total and where == EventFilter():
            self.states.show_empty(
                "No events yet",
                "Providers tell Switchboard what happened (a payment went through, a message "
                "was delivered) by calling it back. Each connection has its own address for "
                "that, which whoever sets up the provider pastes into its webhook settings; "
                "Switchboard's guide explains how to reach this computer from the internet.",
                [("Open the dashboard", lambda: self.navigate.emit("dashboard"))],
            )
            return
        self.model.set_records(page.rows)
        if page.rows and not self._fitted:
            self.table.fit_columns()
            self._fitted = True
        show_time_in(self.graph, self.zone)
        self._show_graph(counts)
        first, last = page.offset + 1, page.offset + len(page.rows)
        self.footer.setText(
            f"Events {first:,}–{last:,} of {page.total:,}, newest first"
            if page.rows
            else "No events match these filters."
        )
        self.newer.setEnabled(page.offset > 0)
        self.older.setEnabled(last < page.total)
        self.states.show_content()
        if self.table.current_record() is None and page.rows:
            self.table.selectRow(0)

    def _show_graph(self, counts: list[tuple[datetime, int]]) -> None:
        if counts:
            x = np.array([minute.timestamp() + 30 for minute, _ in counts])
            height = np.array([count for _, count in counts], dtype=np.float64)
        else:
            x = height = np.zeros(0)
        self.bars.setOpts(x=x, height=height, width=50)
        now = datetime.now(UTC).timestamp()
        self.graph.setXRange(now - GRAPH_MINUTES * 60, now, padding=0)
        self.graph.setYRange(0, max(float(height.max()) if len(height) else 0.0, 1.0) * 1.1)

    def _selected(self, row: EventRow | None) -> None:
        if row is None or row.id == self._shown:
            return
        self._shown = row.id
        tasks.start(self.show_event(row.id), owner=self)

    async def show_event(self, event_id: int) -> None:
        event = await self.bridge.call(self.bridge.services.inbox.event, event_id)
        if event is None or event_id != self._shown:
            return  # gone, or another was chosen meanwhile
        name = self.names.get(event.connection_id, f"connection {event.connection_id}")
        # Pretty-printing a large body takes a while: off the GUI thread.
        loop = asyncio.get_event_loop()  # qasync's; it may be between runs while tests end
        text = await loop.run_in_executor(None, describe, event, self.zone, name)
        if event_id == self._shown:
            self.detail.setPlainText(text)

    def selected_ids(self) -> list[int]:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        return [self.table.proxy.index(row, 0).data(RECORD_ROLE).id for row in sorted(rows)]

    async def replay_selected(self) -> int:
        ids = self.selected_ids()
        if not ids:
            self.notice.setText("Choose the events to replay first.")
            return 0
        count = int(await self.bridge.call(self.bridge.services.inbox_worker.replay, ids))
        self.notice.setText(f"{count} event(s) will be processed again.")
        self.schedule_refresh()
        return count
