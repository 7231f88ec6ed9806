"""Jobs: the background work Switchboard does by itself — what runs next and when, and how each
run went (started, how long, what it did, why it failed) — with pause and resume."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from app.engine import EngineState
from app.services.jobs import TOPIC, JobRunRecord, NextRun
from app.ui.bridge import EngineBridge
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN, HEALTHY, PAUSED

NAMES = {
    "database-upkeep": "Database upkeep",
    "demo-traffic": "Demo traffic",
    "metrics-rollup": "Metrics roll-up",
    "metrics-retention": "Old metrics cleared",
    "health-checks": "Health checks",
    "payments-settle": "Payments without an answer asked again",
    "reconciliation-daily": "Daily reconciliation",
    "exchange-rates": "Exchange rates",
    "wake-check": "Catch up after sleep",
}
OUTCOMES = {"ok": ("done", HEALTHY), "failed": ("failed", DOWN), "running": ("running", None)}


def job_name(job_id: str, name: str = "") -> str:
    if job_id in NAMES:
        return NAMES[job_id]
    if job_id.startswith("calendar-sync:") and name:
        return name
    return name or job_id


def counts_text(counts: dict[str, object]) -> str:
    shown = {key: value for key, value in counts.items() if value and key != "outcome"}
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(shown.items()))


class JobsPage(Page):
    key = "jobs"
    title = "Jobs"
    icon_name = "jobs"
    topics = (TOPIC,)
    refresh_every = 1.0

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.names: dict[str, str] = {}
        self.pause_button = QPushButton("Pause background work")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip(
            "Hold every scheduled job (syncs, checks, reconciliation); what runs now finishes"
        )
        self.pause_button.toggled.connect(self.set_paused)
        self.actions.addWidget(self.pause_button)
        # A method, not a lambda: Qt drops the connection when the page goes, while the bridge
        # (and its engine-state signal) lives on.
        bridge.engine_state.connect(self._on_engine_state)

        self.next_model: RecordModel[NextRun] = RecordModel(
            [
                Column("Job", lambda run: job_name(run.job_id, run.name), stretch=True),
                Column(
                    "Next run",
                    self._next_text,
                    sort=lambda run: run.at or datetime.max.replace(tzinfo=UTC),
                ),
            ],
            key=lambda run: run.job_id,
        )
        self.next_table = RecordTable(self.next_model)
        self.next_table.setSortingEnabled(True)
        self.history_model: RecordModel[JobRunRecord] = RecordModel(self._history_columns())
        self.history_table = RecordTable(self.history_model)
        self.history_table.setSortingEnabled(True)

        upper, lower = QWidget(), QWidget()
        for box, heading, table in (
            (upper, "What runs next", self.next_table),
            (lower, "How the last runs went", self.history_table),
        ):
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            label = QLabel(heading)
            label.setObjectName("CardLabel")
            column.addWidget(label)
            column.addWidget(table, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(upper)
        split.addWidget(lower)
        split.setSizes([260, 420])
        split.setChildrenCollapsible(False)
        self.state_label = QLabel()
        self.state_label.setObjectName("Muted")
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.state_label)
        layout.addWidget(split, 1)

    def _next_text(self, run: NextRun) -> str:
        if run.at is None:
            return "paused"
        local = run.at.astimezone(self.zone)
        today = datetime.now(UTC).astimezone(self.zone).date()
        return f"{local:%H:%M:%S}" if local.date() == today else f"{local:%a %d %b %H:%M}"

    def _history_columns(self) -> list[Column[JobRunRecord]]:
        def took(run: JobRunRecord) -> str:
            if run.finished_at is None:
                return "…"
            seconds = (run.finished_at - run.started_at).total_seconds()
            return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.0f} min"

        return [
            Column("Job", lambda run: job_name(run.job_id, self.names.get(run.job_id, ""))),
            Column(
                "Started",
                lambda run: f"{run.started_at.astimezone(self.zone):%d %b %H:%M:%S}",
                sort=lambda run: run.started_at,
            ),
            Column("Took", took, right=True),
            Column(
                "Outcome",
                lambda run: OUTCOMES.get(run.outcome, (run.outcome, None))[0],
                color=lambda run: OUTCOMES.get(run.outcome, ("", None))[1],
            ),
            Column(
                "What it did",
                lambda run: run.error or counts_text(run.counts),
                stretch=True,
                tooltip=lambda run: run.error or counts_text(run.counts),
            ),
        ]

    async def load(self) -> None:
        services = self.bridge.services
        self.zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        runs: list[NextRun] = await self.bridge.call(services.jobs.next_runs)
        history: list[JobRunRecord] = await self.bridge.call(services.jobs.history)
        self.names = {run.job_id: run.name for run in runs}
        self.next_model.set_records(runs)
        self.history_model.set_records(history)
        self._show_state()
        if not runs and not history:
            self.states.show_empty(
                "No background work here",
                "Background jobs run in the app and in `switchboard serve`: they appear here "
                "with their next run and how each run went.",
            )
            return
        self.states.show_content()

    def _on_engine_state(self, _state: str) -> None:
        self._show_state()

    def _show_state(self) -> None:
        paused = self.bridge.engine.state is EngineState.PAUSED
        blocked = self.pause_button.blockSignals(True)
        self.pause_button.setChecked(paused)
        self.pause_button.setText("Resume background work" if paused else "Pause background work")
        self.pause_button.blockSignals(blocked)
        self.state_label.setText(
            "Background work is paused: nothing runs until you resume it."
            if paused
            else "Background work runs by itself; pausing holds it until you resume."
        )
        self.state_label.setStyleSheet(f"color: {PAUSED}" if paused else "")

    def set_paused(self, paused: bool) -> None:
        engine = self.bridge.engine
        if paused:
            engine.pause()
        else:
            engine.resume()
        self.schedule_refresh()
