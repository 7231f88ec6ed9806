"""The request log: every call to every provider, newest first, with what came back."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QVBoxLayout, QWidget

from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.request_log import TOPIC as TOPIC_REQUESTS
from app.services.request_log import LoggedRequest
from app.ui.bridge import EngineBridge
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN, PAUSED

SHOWN = 1000


def status_text(entry: LoggedRequest) -> str:
    if entry.status_code is not None:
        return str(entry.status_code)
    return {
        "breaker_open": "not sent (breaker open)",
        "timeout": "no answer",
        "timeout_unknown": "no answer",
        "connect": "unreachable",
    }.get(entry.error_class or "", entry.error_class or "")


class RequestLogPage(Page):
    key = "requests"
    title = "Request log"
    icon_name = "requests"
    topics = (TOPIC_REQUESTS, TOPIC_CONNECTIONS)
    refresh_every = 2.0  # a busy provider logs many calls a second

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.names: dict[int, str] = {}
        self.connection = QComboBox()
        self.connection.setMinimumWidth(220)
        self.connection.currentIndexChanged.connect(lambda _i: self.schedule_refresh())
        self.problems = QCheckBox("Problems only")
        self.problems.toggled.connect(lambda _on: self.schedule_refresh())
        for widget in (QLabel("Connection"), self.connection, self.problems):
            self.actions.addWidget(widget)
        self.model: RecordModel[LoggedRequest] = RecordModel(self.columns())
        self.table = RecordTable(self.model)
        self.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)  # newest first
        self._fitted = False
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        self.footer = QLabel()
        self.footer.setObjectName("Muted")
        layout.addWidget(self.footer)
        self._wanted: int | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.services.settings.get("school.timezone"))

    def columns(self) -> list[Column[Any]]:
        def when(entry: LoggedRequest) -> str:
            local: datetime = entry.at.astimezone(self.zone)
            return f"{local:%d %b %H:%M:%S}"

        return [
            Column("Time", when, sort=lambda e: e.id),
            Column("Connection", lambda e: self.names.get(e.connection_id or 0, "(removed)")),
            Column("Call", lambda e: e.operation),
            Column("Method", lambda e: e.method),
            Column("Address", lambda e: e.url, stretch=True, tooltip=lambda e: e.url),
            Column(
                "Answer",
                status_text,
                color=lambda e: (
                    DOWN
                    if e.error_class and e.error_class != "breaker_open"
                    else (PAUSED if e.error_class else None)
                ),
            ),
            Column(
                "Time taken",
                lambda e: f"{e.latency_ms:,.0f} ms",
                sort=lambda e: e.latency_ms,
                right=True,
            ),
            Column("Attempt", lambda e: str(e.attempt), sort=lambda e: e.attempt, right=True),
        ]

    def open_with(self, argument: str) -> None:
        """ "requests:<connection id>": the log of one connection (the dashboard's Logs)."""
        if argument.isdigit():
            self.show_connection(int(argument))

    def show_connection(self, connection_id: int | None) -> None:
        index = self.connection.findData(connection_id)
        self._wanted = connection_id
        if index >= 0:
            self.connection.setCurrentIndex(index)
        else:
            self.schedule_refresh()

    async def load(self) -> None:
        services = self.bridge.services
        records = await self.bridge.call(services.connections.connections)
        self.names = {record.id: record.name for record in records}
        current = self._wanted if self._wanted is not None else self.connection.currentData()
        self._wanted = None
        self.connection.blockSignals(True)
        self.connection.clear()
        self.connection.addItem("All connections", None)
        for record in records:
            self.connection.addItem(record.name, record.id)
        self.connection.setCurrentIndex(max(self.connection.findData(current), 0))
        self.connection.blockSignals(False)
        entries = await self.bridge.call(
            services.requests.recent,
            self.connection.currentData(),
            SHOWN,
            self.problems.isChecked(),
        )
        self.model.set_records(entries)
        if entries and not self._fitted:
            self.table.fit_columns()
            self._fitted = True
        if not entries and not records:
            self.states.show_empty(
                "No calls yet",
                "Every call Switchboard makes to a provider is listed here, with its answer and "
                "how long it took. Connect a provider on the Dashboard to begin.",
                [("Open the dashboard", lambda: self.navigate.emit("dashboard"))],
            )
            return
        shown = len(entries)
        self.footer.setText(f"The latest {shown:,} calls" if shown == SHOWN else f"{shown:,} calls")
        self.states.show_content()
