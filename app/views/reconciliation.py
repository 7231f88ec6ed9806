"""Reconciliation: does every payment in Switchboard agree with what the gateways say they took
and paid out, and with what reached the bank? The latest run's figures per status and per
gateway, how the number to look at has moved over the last runs, and the ways to bring records
in: reading the gateways' APIs, or importing a settlement report or bank statement (with a
column-mapping step for CSVs whose layout each bank chooses). The report exports to CSV and PDF.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.domain.reconciliation import FileRejected, Side, Status
from app.providers.gateway import Unsupported
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.progress import Cancelled, Progress
from app.services.reconciliation.books import connection_source
from app.services.reconciliation.service import TOPIC, Imported, RunSummary
from app.services.statement_files import ColumnMapping, detect_format, guess_mapping
from app.services.statement_files.text import decode, read_file, read_table
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.busy import BusyRow
from app.ui.dialogs import run_dialog, tell
from app.ui.page import Page
from app.ui.plots import LEFT_AXIS_WIDTH, theme_plot
from app.ui.progress import with_progress
from app.ui.reconciliation_report import TRIGGERS, export_pdf
from app.ui.reconciliation_table import (
    EXCEPTIONS,
    STATUS_COLOURS,
    STATUS_EXPLAINED,
    LineWords,
    amounts_text,
    source_name,
    status_label,
)
from app.ui.statement_import import (
    ColumnMappingDialog,
    FileChoice,
    ImportFileDialog,
    RejectedFileDialog,
)
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN, HEALTHY, PAUSED
from app.views.dashboard import nice_ceiling
from app.views.overview import Card

TREND_RUNS = 30
EXCEPTIONS_PAGE = "reconciliation-exceptions"
STATEMENT_FILES = (
    "Statements and reports (*.csv *.txt *.ofx *.qfx *.xml);;CSV files (*.csv *.txt);;"
    "OFX files (*.ofx *.qfx);;CAMT.053 files (*.xml);;All files (*)"
)


@dataclass(frozen=True)
class StatusFigures:
    status: str
    n: int
    amounts: dict[str, int]


@dataclass(frozen=True)
class SourceFigures:
    source: str
    name: str
    counts: dict[str, int]

    def count(self, *statuses: str) -> int:
        return sum(self.counts.get(status, 0) for status in statuses)


def status_figures(summary: RunSummary) -> list[StatusFigures]:
    found: dict[str, Any] = summary.counts.get("statuses", {})
    return [
        StatusFigures(status.value, int(found[status.value]["n"]), found[status.value]["amounts"])
        for status in Status
        if found.get(status.value, {}).get("n")
    ]


def source_figures(summary: RunSummary, names: dict[str, str]) -> list[SourceFigures]:
    found: dict[str, dict[str, int]] = summary.counts.get("sources", {})
    rows = [SourceFigures(key, source_name(key, names), counts) for key, counts in found.items()]
    return sorted(rows, key=lambda row: row.name.casefold())


def total_of(summary: RunSummary, statuses: Sequence[str]) -> tuple[int, dict[str, int]]:
    """How many records in these statuses, and their amounts per currency."""
    found: dict[str, Any] = summary.counts.get("statuses", {})
    count, amounts = 0, {}
    for status in statuses:
        figures = found.get(status)
        if not figures:
            continue
        count += int(figures.get("n", 0))
        for currency, minor in figures.get("amounts", {}).items():
            amounts[currency] = amounts.get(currency, 0) + int(minor)
    return count, dict(sorted(amounts.items()))


def fit_height(table: RecordTable, rows: int, most: int = 9) -> None:
    """As tall as `rows` rows (up to `most`; more scroll), so the page has no empty table."""
    height = (
        table.horizontalHeader().sizeHint().height()
        + min(rows, most) * table.verticalHeader().defaultSectionSize()
    )
    table.setFixedHeight(height + 2 * table.frameWidth())


def last_run_text(summary: RunSummary, zone: ZoneInfo) -> str:
    """When the latest run was, and what it read, in two sentences."""
    finished = (summary.finished_at or summary.started_at).astimezone(zone)
    how = TRIGGERS.get(summary.trigger, summary.trigger)
    took = ""
    if summary.seconds is not None:
        took = ", in under a second" if summary.seconds < 1 else f", in {summary.seconds:.0f} s"
    inputs = summary.inputs
    return (
        f"Last reconciled {finished:%d %b %Y at %H:%M} (run {summary.id}, {how}{took}). It "
        f"read {inputs.get('ledger', 0):,} of our records, {inputs.get('gateway', 0):,} gateway "
        f"records, {inputs.get('payouts', 0):,} payouts and {inputs.get('bank', 0):,} bank lines."
    )


def pulled_sentence(name: str, imported: Imported) -> str:
    """What reading one gateway brought, in words."""
    if imported.added:
        return f"{name}: {imported.added:,} new records read ({imported.rows:,} in all)."
    if imported.rows:
        return f"{name}: nothing new; the {imported.rows:,} records read were known already."
    return f"{name}: no records in this period."


def read_headers(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV's header row and its first rows (FileRejected when it cannot be read). Runs on
    a worker thread: it reads the file."""
    table = read_table(path.name, decode(path.name, read_file(path)))
    return table.headers, table.rows[:20]


class ReconciliationPage(Page):
    key = "reconciliation"
    title = "Reconciliation"
    icon_name = "reconciliation"
    topics = (TOPIC, TOPIC_CONNECTIONS)
    refresh_every = 1.0

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.summary: RunSummary | None = None
        self.names: dict[str, str] = {}
        self._running_here = False
        # The dialogs open now, for tests and screenshots to reach.
        self.import_dialog: ImportFileDialog | None = None
        self.mapping_dialog: ColumnMappingDialog | None = None
        self.rejected_dialog: RejectedFileDialog | None = None

        self.reconcile_button = QPushButton("Reconcile now")
        self.reconcile_button.setToolTip(
            "Match our records, the gateways' and the bank's again, now (Ctrl+R)"
        )
        self.reconcile_button.clicked.connect(lambda: tasks.start(self.reconcile(), owner=self))
        self.pull_button = QPushButton("Read from gateways")
        self.pull_button.setToolTip(
            "Read the latest records and payouts from every connected payment gateway that "
            "shares them, then reconcile"
        )
        self.pull_button.clicked.connect(lambda: tasks.start(self.read_gateways(), owner=self))
        self.import_button = QPushButton("Import a file…")
        self.import_button.setToolTip(
            "A gateway's settlement report or a bank statement: CSV, OFX or CAMT.053 (Ctrl+O)"
        )
        self.import_button.clicked.connect(self.choose_file)
        self.export_button = QPushButton("Export report…")
        menu = QMenu(self)
        menu.addAction("As a spreadsheet (CSV)…", self.choose_csv)
        menu.addAction("As a PDF…", self.choose_pdf)
        self.export_button.setMenu(menu)
        for button in (
            self.reconcile_button,
            self.pull_button,
            self.import_button,
            self.export_button,
        ):
            self.actions.addWidget(button)
        QShortcut(QKeySequence("Ctrl+R"), self, activated=self.reconcile_button.click)
        QShortcut(QKeySequence.StandardKey.Open, self, activated=self.import_button.click)

        self.when = QLabel()
        self.when.setObjectName("Muted")
        self.when.setWordWrap(True)
        self.queue_button = QPushButton("Open the exceptions")
        self.queue_button.setToolTip("Look at each record that differs and decide what it is")
        self.queue_button.clicked.connect(lambda: self.navigate.emit(EXCEPTIONS_PAGE))
        top = QHBoxLayout()
        top.addWidget(self.when, 1)
        top.addWidget(self.queue_button)

        self.busy_row = BusyRow(220)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.hide()

        cards = QGridLayout()
        cards.setSpacing(12)
        self.matched_card = Card("matched")
        self.expected_card = Card("not due yet")
        self.exceptions_card = Card("to look at")
        self.resolved_card = Card("written off")
        self.matched_card.setToolTip(STATUS_EXPLAINED[Status.MATCHED.value])
        self.expected_card.setToolTip(STATUS_EXPLAINED[Status.EXPECTED.value])
        self.exceptions_card.setToolTip(
            "Missing, not in our records, a different amount or currency, or twice: each "
            "needs someone to look at it"
        )
        self.resolved_card.setToolTip(STATUS_EXPLAINED[Status.RESOLVED.value])
        for column, card in enumerate(
            (self.matched_card, self.expected_card, self.exceptions_card, self.resolved_card)
        ):
            cards.addWidget(card, 0, column)

        self.status_model: RecordModel[StatusFigures] = RecordModel(
            [
                Column(
                    "Status",
                    lambda f: status_label(f.status),
                    color=lambda f: STATUS_COLOURS.get(f.status),
                    tooltip=lambda f: STATUS_EXPLAINED.get(f.status, ""),
                ),
                Column("Records", lambda f: f"{f.n:,}", sort=lambda f: f.n, right=True),
                Column(
                    "Amounts",
                    lambda f: amounts_text(f.amounts, self.locale),
                    sort=lambda f: tuple(sorted(f.amounts.items())),
                    right=True,
                    stretch=True,
                ),
            ],
            key=lambda f: f.status,
        )
        self.status_table = RecordTable(self.status_model)
        self.status_table.setSortingEnabled(False)
        self.status_table.proxy.sort(-1)
        self.status_table.setToolTip("Enter or double-click: see these records")
        self.status_table.opened.connect(self._open_status)
        self.source_model: RecordModel[SourceFigures] = RecordModel(
            [
                Column("Gateway or bank", lambda s: s.name, stretch=True),
                Column(
                    "Matched",
                    lambda s: f"{s.count(Status.MATCHED.value):,}",
                    sort=lambda s: s.count(Status.MATCHED.value),
                    right=True,
                ),
                Column(
                    "Not due yet",
                    lambda s: f"{s.count(Status.EXPECTED.value):,}",
                    sort=lambda s: s.count(Status.EXPECTED.value),
                    right=True,
                ),
                Column(
                    "To look at",
                    lambda s: f"{s.count(*EXCEPTIONS):,}",
                    sort=lambda s: s.count(*EXCEPTIONS),
                    right=True,
                    color=lambda s: DOWN if s.count(*EXCEPTIONS) else None,
                ),
                Column(
                    "Written off",
                    lambda s: f"{s.count(Status.RESOLVED.value):,}",
                    sort=lambda s: s.count(Status.RESOLVED.value),
                    right=True,
                ),
            ],
            key=lambda s: s.source,
        )
        self.source_table = RecordTable(self.source_model)
        self.source_table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.source_table.setToolTip("Enter or double-click: see what differs here")
        self.source_table.opened.connect(self._open_source)
        for table in (self.status_table, self.source_table):
            header = table.horizontalHeader()
            header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
            for number, column in enumerate(table.source.columns):
                if column.stretch:
                    header.setSectionResizeMode(number, QHeaderView.ResizeMode.Stretch)
        tables = QHBoxLayout()
        tables.setSpacing(12)
        tables.addLayout(self._titled("By status", self.status_table), 5)
        tables.addLayout(self._titled("By gateway and bank", self.source_table), 6)

        self.legend = QLabel(
            f"<span style='color:{DOWN}'>&#9632;</span>&nbsp;to look at&nbsp;&nbsp;&nbsp;"
            f"<span style='color:{HEALTHY}'>&#9632;</span>&nbsp;matched"
        )
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=False, y=True, alpha=0.15)
        self.plot.setLabel("left", "Records")
        self.plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        self.plot.getPlotItem().enableAutoRange(enable=False)
        self.plot.setMinimumHeight(140)
        self.plot.setMaximumHeight(340)
        self.plot.setToolTip("How many records were matched, and how many were left to look at")
        self.exceptions_curve = self.plot.plot(
            pen=pg.mkPen(DOWN, width=1), symbol="o", symbolSize=5, symbolBrush=DOWN
        )
        self.matched_curve = self.plot.plot(
            pen=pg.mkPen(HEALTHY, width=1), symbol="o", symbolSize=5, symbolBrush=HEALTHY
        )
        trend_heading = QHBoxLayout()
        trend_heading.addWidget(self._heading("The last runs"))
        trend_heading.addStretch(1)
        trend_heading.addWidget(self.legend)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.busy_row)
        layout.addWidget(self.notice)
        layout.addLayout(cards)
        layout.addSpacing(4)
        layout.addLayout(tables)
        layout.addSpacing(4)
        layout.addLayout(trend_heading)
        layout.addWidget(self.plot, 1)
        layout.addStretch(0)
        self._apply_theme()

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _heading(text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("CardLabel")
        return label

    def _titled(self, title: str, widget: QWidget) -> QVBoxLayout:
        column = QVBoxLayout()
        column.setSpacing(4)
        column.addWidget(self._heading(title))
        column.addWidget(widget, 1)
        return column

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.services.settings.get("school.timezone"))

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    def words(self) -> LineWords:
        return LineWords(self.zone, self.locale, dict(self.names))

    @property
    def busy(self) -> bool:
        return self.busy_row.busy

    def _apply_theme(self) -> None:
        theme_plot(self.plot, self.palette())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()

    # --- loading --------------------------------------------------------------------------------

    async def _read_names(self) -> None:
        services = self.bridge.services
        sources = await self.bridge.call(services.reconciliation.sources)
        records = await self.bridge.call(services.connections.connections)
        names = {source.key: source.label for source in sources}
        names.update({connection_source(record.id): record.name for record in records})
        self.names = names

    async def load(self) -> None:
        service = self.bridge.services.reconciliation
        await self._read_names()
        runs: list[RunSummary] = await self.bridge.call(service.runs, TREND_RUNS)
        if not runs:
            self.summary = None
            self.states.show_empty(
                "Not reconciled yet",
                "Reconciliation checks that every payment taken in Switchboard was received "
                "by its gateway, paid out, and arrived in the school's bank account. Read the "
                "gateways' records, or import a settlement report or bank statement, then "
                "reconcile.",
                [
                    ("Read from gateways", self.pull_button.click),
                    ("Import a file…", self.import_button.click),
                    ("Reconcile now", self.reconcile_button.click),
                ],
            )
            self._enable()
            return
        self.show_run(runs[0])
        self._plot(list(reversed(runs)))
        self.states.show_content()
        self._enable()

    def show_run(self, summary: RunSummary) -> None:
        self.summary = summary
        self.when.setText(last_run_text(summary, self.zone))
        matched = total_of(summary, [Status.MATCHED.value])
        expected = total_of(summary, [Status.EXPECTED.value])
        looked = total_of(summary, EXCEPTIONS)
        resolved = total_of(summary, [Status.RESOLVED.value])
        self.matched_card.set(
            f"{matched[0]:,}", amounts_text(matched[1], self.locale) or "nothing", HEALTHY
        )
        self.expected_card.set(
            f"{expected[0]:,}", amounts_text(expected[1], self.locale) or "nothing", PAUSED
        )
        self.exceptions_card.set(
            f"{looked[0]:,}",
            amounts_text(looked[1], self.locale) or "everything agrees",
            DOWN if looked[0] else HEALTHY,
        )
        self.resolved_card.set(
            f"{resolved[0]:,}", amounts_text(resolved[1], self.locale) or "nothing"
        )
        self.queue_button.setText(
            f"Open the {looked[0]:,} to look at" if looked[0] else "Open the exceptions"
        )
        self.status_model.set_records(status_figures(summary))
        self.source_model.set_records(source_figures(summary, self.names))
        rows = max(self.status_model.rowCount(), self.source_model.rowCount(), 3)
        for table in (self.status_table, self.source_table):
            fit_height(table, rows)

    def _plot(self, runs: list[RunSummary]) -> None:
        x = np.arange(len(runs), dtype=np.float64)
        looked = np.array([run.exceptions for run in runs], dtype=np.float64)
        matched = np.array([run.count(Status.MATCHED.value) for run in runs], dtype=np.float64)
        self.exceptions_curve.setData(x, looked)
        self.matched_curve.setData(x, matched)
        top = float(max(looked.max(initial=0), matched.max(initial=0)))
        self.plot.setYRange(0, nice_ceiling(top), padding=0.05)
        self.plot.setXRange(-0.5, max(len(runs) - 0.5, 0.5), padding=0)
        zone = self.zone
        stamps = [run.as_of.astimezone(zone) for run in runs]  # the moment each run is of
        step = max(1, len(runs) // 8)
        ticks, previous = [], None
        for n in range(0, len(runs), step):
            # The day under a run, or its time when the run before it was the same day.
            day = stamps[n].date()
            ticks.append(
                (float(n), f"{stamps[n]:%H:%M}" if day == previous else f"{stamps[n]:%d %b}")
            )
            previous = day
        self.plot.getAxis("bottom").setTicks([ticks, []])

    # --- state ----------------------------------------------------------------------------------

    def _on_event(self, topic: str, payload: dict[str, Any]) -> None:
        if topic == TOPIC and payload.get("state") == "running":
            if not self._running_here:
                self.set_busy("Reconciling (started elsewhere)…")
            return  # nothing to show until it is done
        if topic == TOPIC and payload.get("state") in ("done", "failed") and not self._running_here:
            self.set_busy(None)
        super()._on_event(topic, payload)

    def set_busy(self, text: str | None) -> None:
        """Show long work under way (and keep the buttons that would start more disabled)."""
        if text is None:
            self.busy_row.stop()
        else:
            self.busy_row.start(text)
        self._enable()

    def _enable(self) -> None:
        idle = not self.busy
        for button in (self.reconcile_button, self.pull_button, self.import_button):
            button.setEnabled(idle)
        self.export_button.setEnabled(idle and self.summary is not None)
        # The empty state's buttons start the same work.
        for button in self.states.findChildren(QPushButton):
            if button.text() in ("Read from gateways", "Import a file…", "Reconcile now"):
                button.setEnabled(idle)

    def say(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    # --- reconciling ----------------------------------------------------------------------------

    async def reconcile(self, after: str = "") -> RunSummary | None:
        """Run reconciliation now (off the window's thread); None if it could not run."""
        if self._running_here:
            return None
        self._running_here = True
        self.set_busy("Reconciling: matching our records with the gateways' and the bank's…")
        try:
            summary: RunSummary = await self.bridge.call(
                self.bridge.services.reconciliation.run, "manual"
            )
        except SwitchboardError as exc:
            tell(self, "Reconciliation did not finish", str(exc))
            return None
        finally:
            self._running_here = False
            self.set_busy(None)
        records = int(summary.counts.get("records", 0))
        found = (
            f"{summary.exceptions:,} of {records:,} records to look at."
            if summary.exceptions
            else f"All {records:,} records agree or are not due yet."
        )
        self.say(f"{after} Reconciled: {found}".strip())
        await self.refresh()
        return summary

    async def read_gateways(self) -> list[str]:
        """Read every connected payment gateway's records through its API, then reconcile.
        One line per gateway says what came of it (those without such an API say so)."""
        services = self.bridge.services
        records = await self.bridge.call(services.connections.connections)
        gateways = [record for record in records if "payments" in record.spec.capabilities]
        if not gateways:
            tell(
                self,
                "No payment gateway connected",
                "Connect a payment gateway on the Dashboard first, or import a settlement "
                "report or bank statement with Import a file…",
            )
            return []
        said: list[str] = []
        problems = False

        async def work(progress: Progress) -> None:
            nonlocal problems
            progress.start(len(gateways))
            for record in gateways:
                progress.check()
                if not record.enabled:
                    said.append(f"{record.name}: paused; resume it on the Dashboard to read it.")
                    problems = True
                else:
                    try:
                        imported: Imported = await self.bridge.call(
                            services.reconciliation.pull, record.id
                        )
                        said.append(pulled_sentence(record.name, imported))
                    except Unsupported as exc:
                        said.append(f"{record.name} cannot be read by Switchboard. {exc}")
                        problems = True
                    except SwitchboardError as exc:
                        said.append(f"{record.name}: {exc}")
                        problems = True
                progress.advance()

        self.set_busy("Reading from the gateways…")
        try:
            await with_progress(self, "Reading from the gateways", work)
        except Cancelled:
            said.append("Stopped as you asked; the gateways not read yet were left for later.")
        finally:
            self.set_busy(None)
        summary = await self.reconcile()
        if summary is not None:
            said.append(
                f"Reconciled: {summary.exceptions:,} of "
                f"{int(summary.counts.get('records', 0)):,} records to look at."
            )
        tell(self, "Read from the gateways", "\n\n".join(said), problem=problems)
        return said

    # --- importing ------------------------------------------------------------------------------

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import a settlement report or bank statement", "", STATEMENT_FILES
        )
        if path:
            tasks.start(self.import_file(Path(path)), owner=self)

    async def import_file(self, path: Path) -> Imported | None:
        """Ask what the file is and whose, the columns of a CSV without a known layout, then
        import it and reconcile. A refused file lists its rows' problems; nothing is kept."""
        services = self.bridge.services
        service = services.reconciliation
        detected = await asyncio.to_thread(detect_format, path)
        records = await self.bridge.call(services.connections.connections)
        sources = await self.bridge.call(service.sources)
        gateways = [(r.id, r.name) for r in records if "payments" in r.spec.capabilities]
        accounts = [source.label for source in sources if source.side == Side.BANK.value]
        currency = str(services.settings.get("school.currency"))
        dialog = ImportFileDialog(path.name, detected, gateways, accounts, currency, self)
        self.import_dialog = dialog
        if await run_dialog(dialog) != QDialog.DialogCode.Accepted:
            return None
        choice = dialog.choice()
        mapping: ColumnMapping | None = None
        if choice.needs_mapping:
            found = await self._choose_columns(path, choice, sources)
            if found is None:
                return None
            mapping = found
        try:
            if choice.side is Side.GATEWAY:
                assert choice.connection_id is not None
                source = await self.bridge.call(service.source_for_connection, choice.connection_id)
            else:
                source = await self.bridge.call(service.source_for_bank, choice.account)
        except SwitchboardError as exc:
            tell(self, f"{path.name} was not imported", str(exc))
            return None
        self.set_busy(f"Importing {path.name}…")
        try:
            imported: Imported = await self.bridge.call(
                service.import_file,
                path,
                choice.fmt,
                source=source,
                mapping=mapping,
                currency=choice.currency,
            )
        except FileRejected as exc:
            self.set_busy(None)
            await self.show_rejection(path.name, exc)
            return None
        except SwitchboardError as exc:
            self.set_busy(None)
            tell(self, f"{path.name} was not imported", str(exc))
            return None
        self.set_busy(None)
        await self.reconcile(imported.sentence)
        return imported

    async def _choose_columns(
        self, path: Path, choice: FileChoice, sources: Sequence[Any]
    ) -> ColumnMapping | None:
        try:
            headers, sample = await asyncio.to_thread(read_headers, path)
        except FileRejected as exc:
            await self.show_rejection(path.name, exc)
            return None
        service = self.bridge.services.reconciliation
        if choice.side is Side.GATEWAY:
            key = connection_source(choice.connection_id)
        else:
            wanted = choice.account.casefold()
            key = next(
                (
                    s.key
                    for s in sources
                    if s.side == Side.BANK.value and s.label.casefold() == wanted
                ),
                "",
            )
        remembered = await self.bridge.call(service.mapping_for, key) if key else None
        if remembered is not None and not set(remembered.columns.values()) <= set(headers):
            remembered = None  # another layout than last time: guess afresh
        mapping = remembered or guess_mapping(headers)
        dialog = ColumnMappingDialog(
            path.name,
            headers,
            sample,
            choice.side,
            mapping,
            remembered=remembered is not None,
            parent=self,
        )
        self.mapping_dialog = dialog
        if await run_dialog(dialog) != QDialog.DialogCode.Accepted:
            return None
        return dialog.mapping

    async def show_rejection(self, name: str, error: FileRejected) -> None:
        self.say(f"{name} was not imported: nothing from it was kept.")
        dialog = RejectedFileDialog(name, error, self)
        self.rejected_dialog = dialog
        await run_dialog(dialog)

    # --- the report -----------------------------------------------------------------------------

    def choose_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the reconciliation", "reconciliation.csv", "CSV files (*.csv)"
        )
        if path:
            tasks.start(self.export_csv(Path(path)), owner=self)

    def choose_pdf(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the reconciliation report", "reconciliation.pdf", "PDF files (*.pdf)"
        )
        if path:
            tasks.start(self.export_pdf(Path(path)), owner=self)

    async def export_csv(self, path: Path) -> int:
        """Every record of the latest run, with its status, to a CSV file."""
        try:
            rows: int = await self.bridge.call(self.bridge.services.reconciliation.export_csv, path)
        except (SwitchboardError, OSError) as exc:
            tell(self, "Nothing was exported", f"{path} could not be written: {exc}")
            return 0
        self.say(f"Saved {rows:,} records to {path}.")
        return rows

    async def export_pdf(self, path: Path) -> bool:
        """The report (counts and amounts per status and source, then what to look at) as a
        PDF file."""
        service = self.bridge.services.reconciliation
        summary = await self.bridge.call(service.latest)
        if summary is None:
            tell(self, "Nothing to report", "Reconcile first: the report is about a run.")
            return False
        self.set_busy(f"Writing {path.name}…")
        try:
            await self._read_names()
            lines = await self.bridge.call(service.lines, exceptions_only=True)
            school = str(self.bridge.services.settings.get("school.name"))
            await export_pdf(path, summary, lines, self.words(), school)
        except (SwitchboardError, OSError) as exc:
            tell(self, "The report was not saved", f"{path} could not be written: {exc}")
            return False
        finally:
            self.set_busy(None)
        self.say(f"Saved the report to {path}.")
        return True

    # --- going to the exceptions ----------------------------------------------------------------

    def _open_status(self, figures: StatusFigures | None) -> None:
        if figures is not None:
            self.navigate.emit(f"{EXCEPTIONS_PAGE}:status={figures.status}")

    def _open_source(self, figures: SourceFigures | None) -> None:
        if figures is not None:
            self.navigate.emit(f"{EXCEPTIONS_PAGE}:source={figures.source}")
