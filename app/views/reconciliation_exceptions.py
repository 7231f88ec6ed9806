"""Exceptions: every record of the latest reconciliation that needs a person, one at a time
beside what it is linked to and what could be its match, and the decisions people made about
them: match by hand, unmatch, write off, split into parts (each with a reason), and undo.

The queue can hold tens of thousands of records and the window must never wait for them: they
are read by the engine, filtered and sorted on a worker thread (`arrange_lines`), and shown by a
model that formats only the rows on screen (see app/ui/reconciliation_table.py). A decision
runs reconciliation again, so the queue always shows what the rules make of it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.reconciliation.books import connection_source
from app.services.reconciliation.service import TOPIC, Decision, Line, RunSummary
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.busy import BusyRow
from app.ui.dialogs import confirm, run_dialog, tell
from app.ui.page import Page
from app.ui.reason_dialog import ReasonDialog
from app.ui.reconciliation_table import (
    EXCEPTIONS,
    QUEUE_COLUMNS,
    STATUS_COLOURS,
    STATUS_EXPLAINED,
    Arrangement,
    LineColumn,
    LineModel,
    LineTable,
    LineWords,
    arrange_lines,
    haystacks,
    source_name,
    status_label,
)
from app.ui.split_dialog import SplitDialog
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import PAUSED

OPEN = "open"
EVERYTHING = "all"
SCOPES = (  # what the status filter offers: (label, value)
    ("Every exception", OPEN),
    *((status_label(status), status) for status in EXCEPTIONS),
    ("Matched", "matched"),
    ("Not due yet", "expected"),
    ("Written off", "resolved"),
    ("Every record", EVERYTHING),
)
ACTION_WORDS = {
    "match": "Matched by hand",
    "unmatch": "Unmatched",
    "write_off": "Written off",
    "split": "Split into parts",
}
# Beside the record there is room for little: the date, the amount and where (the rest is in
# each row's tooltip, and in the record's own card).
DETAIL_COLUMNS: tuple[LineColumn, ...] = (
    QUEUE_COLUMNS[0],
    QUEUE_COLUMNS[5],
    replace(QUEUE_COLUMNS[1], stretch=True),
)
SEARCH_PAUSE_MS = 250  # typing pauses this long before the queue is searched
DETAIL_PAUSE_MS = 120  # moving through the queue with the keyboard does not ask at every row
LISTED = 6  # records named in a decision's dialog; more are counted


class ReconciliationExceptionsPage(Page):
    key = "reconciliation-exceptions"
    title = "Exceptions"
    icon_name = "reconciliation-exceptions"
    topics = (TOPIC, TOPIC_CONNECTIONS)
    refresh_every = 1.0

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.summary: RunSummary | None = None
        self._all: list[Line] = []
        self._hay: list[str] = []
        self._loaded: tuple[int, str] | None = None  # (run, scope) of the records held
        self._arranged: tuple[Any, ...] | None = None
        self._generation = 0
        self._sort: tuple[int, bool] = (0, True)  # newest first, as the service reads them
        self._shown: Line | None = None  # the record beside its counterparts
        self._wanted: dict[str, str] = {}  # filters asked for before the page was loaded
        self._running_here = False
        self.reason_dialog: ReasonDialog | None = None
        self.split_dialog: SplitDialog | None = None
        self.arranged_in = 0.0  # seconds the last arranging took (filter and sort)

        # --- filters, in the title row
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search reference, description, amount…  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(260)
        self.status = QComboBox()
        self.status.setToolTip("Which records to list")
        for label, value in SCOPES:
            self.status.addItem(label, value)
        self.source = QComboBox()
        self.source.setMinimumWidth(170)
        self.source.setToolTip("Only the records of one gateway (ours and its own), or the bank's")
        self.source.addItem("Every gateway and bank", None)
        for widget in (self.search, self.status, self.source):
            self.actions.addWidget(widget)
        self._search_pause = QTimer(self)
        self._search_pause.setSingleShot(True)
        self._search_pause.setInterval(SEARCH_PAUSE_MS)
        self._search_pause.timeout.connect(self.rearrange)
        self.search.textChanged.connect(lambda _text: self._search_pause.start())
        self.search.returnPressed.connect(self._search_now)
        self.status.currentIndexChanged.connect(lambda _i: self._status_changed())
        self.source.currentIndexChanged.connect(lambda _i: self.rearrange())
        QShortcut(QKeySequence.StandardKey.Find, self, self._focus_search)

        # --- the queue
        self.words = LineWords(ZoneInfo("UTC"), "en_US", {})
        self.model = LineModel(self.words, sorts_itself=False)
        self.model.sort_requested.connect(self._sort_requested)
        self.table = LineTable(self.model)
        self.table.set_widths([96, 230, 80, 170, 0, 120, 130, 96])
        header = self.table.horizontalHeader()
        header.setSortIndicator(0, Qt.SortOrder.DescendingOrder)
        self.table.setSortingEnabled(True)
        self.table.current_changed.connect(self._current_changed)
        self.table.opened.connect(self._open)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self.queue_message = QLabel()
        self.queue_message.setObjectName("Muted")
        self.queue_message.setWordWrap(True)
        self.queue_message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.queue = QStackedWidget()
        self.queue.addWidget(self.table)
        self.queue.addWidget(self.queue_message)

        # --- the selected record, side by side with its counterparts and possible matches
        self.record_text = QLabel("Choose a record to see it beside its counterparts.")
        self.record_text.setWordWrap(True)
        self.record_text.setTextFormat(Qt.TextFormat.RichText)
        self.record_text.setObjectName("Card")
        self.record_text.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.record_text.setMargin(8)
        self.counterparts = LineModel(self.words, DETAIL_COLUMNS, checkable=True)
        self.counterparts_table = LineTable(self.counterparts)
        self.suggestions = LineModel(self.words, DETAIL_COLUMNS, checkable=True)
        self.suggestions_table = LineTable(self.suggestions)
        for table in (self.counterparts_table, self.suggestions_table):
            table.setSortingEnabled(True)
            table.set_widths([112, 104])
            table.setSelectionMode(LineTable.SelectionMode.SingleSelection)
            table.opened.connect(self._toggle)
        for model in (self.counterparts, self.suggestions):
            model.checks_changed.connect(self._enable)
        self.suggestions_table.current_changed.connect(lambda _line: self._enable())
        self.counterparts_label = self._heading("Linked to it now")
        self.suggestions_label = self._heading("Could be its match")
        self.hint = QLabel(
            "Tick what belongs with it (Space), then Match. Select several records in the "
            "list (Ctrl+click) to match or write them off together."
        )
        self.hint.setObjectName("Muted")
        self.hint.setWordWrap(True)

        self.match_button = QPushButton("&Match…")
        self.match_button.setToolTip(
            "Match the selected record with the ticked ones, by hand (Ctrl+M)"
        )
        self.match_button.clicked.connect(lambda: tasks.start(self.decide("match"), owner=self))
        self.unmatch_button = QPushButton("&Unmatch…")
        self.unmatch_button.setToolTip(
            "Take the record and what it is linked to out of their match, and keep them out "
            "of automatic matching"
        )
        self.unmatch_button.clicked.connect(lambda: tasks.start(self.decide("unmatch"), owner=self))
        self.write_off_button = QPushButton("&Write off…")
        self.write_off_button.setToolTip(
            "Accept the selected records as they are (a bank charge, a rounding), with a reason"
        )
        self.write_off_button.clicked.connect(
            lambda: tasks.start(self.decide("write_off"), owner=self)
        )
        self.split_button = QPushButton("&Split…")
        self.split_button.setToolTip(
            "Split the selected record of a gateway or the bank into parts that are matched "
            "each on its own (a deposit that is a payout and a transfer together)"
        )
        self.split_button.clicked.connect(lambda: tasks.start(self.split(), owner=self))
        QShortcut(QKeySequence("Ctrl+M"), self, activated=self.match_button.click)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (
            self.match_button,
            self.unmatch_button,
            self.write_off_button,
            self.split_button,
        ):
            buttons.addWidget(button)

        record = QWidget()
        record.setFixedWidth(300)
        record_column = QVBoxLayout(record)
        record_column.setContentsMargins(0, 0, 0, 0)
        record_column.addWidget(self._heading("The record"))
        record_column.addWidget(self.record_text)
        record_column.addWidget(self.hint)
        record_column.addLayout(buttons)
        record_column.addStretch(1)
        linked = QVBoxLayout()
        linked.addWidget(self.counterparts_label)
        linked.addWidget(self.counterparts_table, 1)
        possible = QVBoxLayout()
        possible.addWidget(self.suggestions_label)
        possible.addWidget(self.suggestions_table, 1)
        side_by_side = QWidget()
        across = QHBoxLayout(side_by_side)
        across.setContentsMargins(8, 8, 8, 8)
        across.setSpacing(12)
        across.addWidget(record)
        across.addLayout(linked, 1)
        across.addLayout(possible, 1)

        # --- decisions made, with undo
        self.decisions_model: RecordModel[Decision] = RecordModel(self._decision_columns())
        self.decisions_table = RecordTable(self.decisions_model)
        self.decisions_table.setSortingEnabled(False)
        self.decisions_table.proxy.sort(-1)  # newest first, as they come
        self.decisions_table.selection_changed.connect(lambda _d: self._enable())
        self.undo_button = QPushButton("Undo…")
        self.undo_button.setToolTip("Undo the chosen decision; the records are matched again")
        self.undo_button.clicked.connect(
            lambda: tasks.start(self.undo(self.decisions_table.current_record()), owner=self)
        )
        decided = QWidget()
        below = QVBoxLayout(decided)
        below.setContentsMargins(8, 8, 8, 8)
        heading = QHBoxLayout()
        heading.addWidget(
            self._muted("Every decision is kept with its reason; undoing one keeps it listed.")
        )
        heading.addStretch(1)
        heading.addWidget(self.undo_button)
        below.addLayout(heading)
        below.addWidget(self.decisions_table, 1)

        self.lower = QTabWidget()
        self.lower.addTab(side_by_side, "Side by side")
        self.lower.addTab(decided, "Decisions made by hand")
        self.lower.setDocumentMode(True)

        down = QSplitter(Qt.Orientation.Vertical)
        down.addWidget(self.queue)
        down.addWidget(self.lower)
        down.setStretchFactor(0, 3)
        down.setStretchFactor(1, 2)
        down.setChildrenCollapsible(False)
        down.setSizes([380, 300])

        self.busy_row = BusyRow(160)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.footer = QLabel()
        self.footer.setObjectName("Muted")
        bottom = QHBoxLayout()
        bottom.addWidget(self.footer)
        bottom.addSpacing(12)
        bottom.addWidget(self.busy_row)
        bottom.addWidget(self.notice, 1)

        self._detail_pause = QTimer(self)
        self._detail_pause.setSingleShot(True)
        self._detail_pause.setInterval(DETAIL_PAUSE_MS)
        self._detail_pause.timeout.connect(
            lambda: tasks.start(self.show_detail(self.table.current_line()), owner=self)
        )

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(down, 1)
        layout.addLayout(bottom)
        self._enable()

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _heading(text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("CardLabel")
        return label

    @staticmethod
    def _muted(text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("Muted")
        label.setWordWrap(True)
        return label

    def _decision_columns(self) -> list[Column[Decision]]:
        def when(decision: Decision) -> str:
            return f"{decision.made_at.astimezone(self.words.zone):%d %b %Y %H:%M}"

        def now(decision: Decision) -> str:
            if decision.undone_at is None:
                return "standing"
            return f"undone {decision.undone_at.astimezone(self.words.zone):%d %b %H:%M}"

        return [
            Column("When", when, sort=lambda d: d.made_at),
            Column("Decision", lambda d: ACTION_WORDS.get(d.action, d.action)),
            Column("Records", lambda d: f"{len(d.records):,}", right=True),
            Column("Reason", lambda d: d.reason, stretch=True, tooltip=lambda d: d.reason),
            Column("By", lambda d: d.made_by or "—"),
            Column(
                "Now",
                now,
                color=lambda d: PAUSED if d.undone_at is not None else None,
            ),
        ]

    def _focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def _search_now(self) -> None:
        self._search_pause.stop()
        self.rearrange()
        self.table.setFocus()

    def _scope(self) -> str:
        chosen = str(self.status.currentData())
        return OPEN if chosen in (OPEN, *EXCEPTIONS) else chosen

    def _arrangement(self) -> Arrangement:
        chosen = str(self.status.currentData())
        column, descending = self._sort
        source = self.source.currentData()
        return Arrangement(
            status=chosen if chosen in EXCEPTIONS else None,
            source=None if source is None else str(source),
            words=tuple(self.search.text().casefold().split()),
            column=column,
            descending=descending,
        )

    # --- loading --------------------------------------------------------------------------------

    async def load(self) -> None:
        services = self.bridge.services
        service = services.reconciliation
        self.words.zone = ZoneInfo(services.settings.get("school.timezone"))
        self.words.locale = str(services.settings.get("school.locale"))
        summary: RunSummary | None = await self.bridge.call(service.latest)
        if summary is None:
            self.summary = None
            self._set_lines([], [], None)
            self.states.show_empty(
                "Nothing to look at yet",
                "After reconciling, every record that differs between Switchboard, the "
                "gateways and the bank is listed here, to match by hand or write off with a "
                "reason. Reconcile first.",
                [("Open reconciliation", lambda: self.navigate.emit("reconciliation"))],
            )
            return
        self.summary = summary
        await self._read_names()
        self._fill_sources(summary)
        self._apply_wanted()
        scope = self._scope()
        if self._loaded != (summary.id, scope):
            self._loading(True)
            try:
                statuses = [] if scope in (OPEN, EVERYTHING) else [scope]
                lines: list[Line] = await self.bridge.call(
                    service.queue_lines, statuses, exceptions_only=scope == OPEN
                )
                hay = await asyncio.to_thread(haystacks, lines, dict(self.words.names))
            finally:
                self._loading(False)
            self._set_lines(lines, hay, (summary.id, scope))
        decisions: list[Decision] = await self.bridge.call(service.decisions)
        self.decisions_model.set_records(decisions)
        standing = sum(1 for decision in decisions if decision.undone_at is None)
        self.lower.setTabText(
            1, f"Decisions made by hand ({standing})" if standing else "Decisions made by hand"
        )
        self.states.show_content()
        await self.arrange()
        self._enable()

    async def _read_names(self) -> None:
        services = self.bridge.services
        sources = await self.bridge.call(services.reconciliation.sources)
        records = await self.bridge.call(services.connections.connections)
        names = {source.key: source.label for source in sources}
        names.update({connection_source(record.id): record.name for record in records})
        if names != self.words.names:
            self.words.names.clear()
            self.words.names.update(names)
            for model in (self.model, self.counterparts, self.suggestions):
                model.forget_texts()

    def _set_lines(self, lines: list[Line], hay: list[str], loaded: tuple[int, str] | None) -> None:
        self._all, self._hay, self._loaded = lines, hay, loaded
        self._arranged = None

    def _fill_sources(self, summary: RunSummary) -> None:
        keys = list(summary.counts.get("sources", {}))
        chosen = self.source.currentData()
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItem("Every gateway and bank", None)
        for key in sorted(keys, key=lambda k: source_name(k, self.words.names).casefold()):
            self.source.addItem(source_name(key, self.words.names), key)
        self.source.setCurrentIndex(max(self.source.findData(chosen), 0))
        self.source.blockSignals(False)

    def _apply_wanted(self) -> None:
        """Filters asked for by another page ("status=missing") once their choices exist."""
        for name, combo in (("status", self.status), ("source", self.source)):
            wanted = self._wanted.pop(name, None)
            if wanted is not None:
                found = combo.findData(wanted)
                if found >= 0:
                    combo.blockSignals(True)
                    combo.setCurrentIndex(found)
                    combo.blockSignals(False)

    def open_with(self, argument: str) -> None:
        """ "status=missing" or "source=connection:3": the queue with that filter."""
        name, _, value = argument.partition("=")
        if name not in ("status", "source") or not value:
            return
        self._wanted[name] = value
        if self.summary is not None:
            self._apply_wanted()
            self.schedule_refresh()

    # --- arranging the queue --------------------------------------------------------------------

    def rearrange(self) -> None:
        if self.summary is not None:
            tasks.start(self.arrange(), owner=self)

    def _status_changed(self) -> None:
        if self._loaded is not None and self._loaded[1] != self._scope():
            self.schedule_refresh()  # other records than those held: ask the engine
        else:
            self.rearrange()

    def _sort_requested(self, column: int, order: Qt.SortOrder) -> None:
        self._sort = (column, order == Qt.SortOrder.DescendingOrder)
        self.rearrange()

    async def arrange(self) -> None:
        """Filter and sort the records held on a worker thread, then show them; the current
        record stays current when it is still listed."""
        how = self._arrangement()
        key = (id(self._all), how)
        if key == self._arranged:
            return
        self._generation += 1
        generation = self._generation
        current = self.table.current_line()
        keep = current.number if current is not None else None
        started = time.perf_counter()
        shown, row = await asyncio.to_thread(
            arrange_lines, self._all, self._hay, how, dict(self.words.names), QUEUE_COLUMNS, keep
        )
        if generation != self._generation:
            return  # a newer choice is being arranged
        self._arranged = key
        self.arranged_in = time.perf_counter() - started
        self.model.set_lines(shown)
        if shown:
            self.table.select_row(row if row is not None else 0)
            self.queue.setCurrentWidget(self.table)
        else:
            self.queue_message.setText(self._nothing_listed())
            self.queue.setCurrentWidget(self.queue_message)
            await self.show_detail(None)
        self._update_footer()
        self._enable()

    def _nothing_listed(self) -> str:
        how = self._arrangement()
        if self._all and (how.status or how.source or how.words):
            return "No records match these filters. Clear the search or choose another filter."
        if self._scope() == OPEN:
            return (
                "Nothing to look at: every record of the latest run is matched, not due yet, "
                "or written off."
            )
        return "No records of this kind in the latest run."

    def _update_footer(self) -> None:
        shown, held = self.model.rowCount(), len(self._all)
        noun = {
            OPEN: "exceptions",
            EVERYTHING: "records",
        }.get(self._scope(), f"records {str(self.status.currentText()).lower()}")
        if shown == held:
            self.footer.setText(f"{held:,} {noun}")
        else:
            self.footer.setText(f"{shown:,} of {held:,} {noun}")

    # --- the record beside its counterparts -----------------------------------------------------

    def _current_changed(self, _line: Line | None) -> None:
        self._enable()
        self._detail_pause.start()

    async def show_detail(self, line: Line | None) -> None:
        """Show `line` beside what it is linked to and what could be its match."""
        self._shown = line
        if line is None:
            self.record_text.setText("Choose a record to see it beside its counterparts.")
            self.counterparts.set_lines([])
            self.suggestions.set_lines([])
            self._enable()
            return
        self.record_text.setText(self._describe(line))
        service = self.bridge.services.reconciliation
        try:
            linked: list[Line] = await self.bridge.call(service.counterparts, line.number)
            possible: list[Line] = await self.bridge.call(service.suggestions, line.number, 8)
        except SwitchboardError as exc:
            if self._shown is line:
                self.record_text.setText(f"{self._describe(line)}<br><i>{exc}</i>")
                self.counterparts.set_lines([])
                self.suggestions.set_lines([])
            return
        if self._shown is not line:
            return  # another record was chosen meanwhile
        numbers = {other.number for other in linked}
        self.counterparts.set_lines(linked)
        self.suggestions.set_lines([other for other in possible if other.number not in numbers])
        self.counterparts_label.setText(
            f"Linked to it now ({len(linked)})" if linked else "Linked to it now: nothing"
        )
        self.suggestions_label.setText(
            "Could be its match" if self.suggestions.rowCount() else "Could be its match: nothing"
        )
        self._enable()

    def _describe(self, line: Line) -> str:
        colour = STATUS_COLOURS.get(line.status, "")
        parts = [
            f"<b>{escape(self.words.sentence(line))}</b>",
            f"<span style='color:{colour}'>{escape(status_label(line.status))}</span>: "
            + escape(STATUS_EXPLAINED.get(line.status, "")),
        ]
        if line.diff_minor:
            parts.append(f"Difference: {escape(self.words.difference(line))}")
        if line.description:
            parts.append(f"Description: {escape(line.description)}")
        if line.how == "manual":
            parts.append("Decided by hand.")
        return "<br>".join(parts)

    def _open(self, _line: Line) -> None:
        """Enter on the queue: go to the possible matches (or the linked records) to tick."""
        for table, model in (
            (self.suggestions_table, self.suggestions),
            (self.counterparts_table, self.counterparts),
        ):
            if model.rowCount():
                table.setFocus()
                if table.current_line() is None:
                    table.select_row(0)
                return

    def _toggle(self, line: Line) -> None:
        model = self.suggestions if line in self.suggestions.lines() else self.counterparts
        model.set_checked(line.number, line not in model.checked())

    # --- deciding -------------------------------------------------------------------------------

    def match_records(self) -> list[Line]:
        """The selected records with the ticked ones (or, with nothing ticked, the possible
        match the cursor is on)."""
        chosen = {line.number: line for line in self.table.selected_lines()}
        ticked = self.counterparts.checked() + self.suggestions.checked()
        for line in ticked:
            chosen.setdefault(line.number, line)
        if len(chosen) == 1 and not ticked:
            suggested = self.suggestions_table.current_line()
            if suggested is not None:
                chosen.setdefault(suggested.number, suggested)
        return list(chosen.values())

    def unmatch_records(self) -> list[Line]:
        shown = self._shown
        if shown is None or not self.counterparts.rowCount():
            return []
        return [shown, *self.counterparts.lines()]

    def write_off_records(self) -> list[Line]:
        return [line for line in self.table.selected_lines() if line.status in EXCEPTIONS]

    def split_record(self) -> Line | None:
        """The one selected record, when it is a gateway's or the bank's (ours are refunded,
        not split)."""
        selected = self.table.selected_lines()
        if len(selected) != 1 or selected[0].side == "ledger" or selected[0].number <= 0:
            return None
        return selected[0]

    def _enable(self) -> None:
        idle = not self.busy_row.busy
        self.split_button.setEnabled(idle and self.split_record() is not None)
        self.match_button.setEnabled(
            idle and len({line.side for line in self.match_records()}) >= 2
        )
        self.unmatch_button.setEnabled(idle and bool(self.unmatch_records()))
        self.write_off_button.setEnabled(idle and bool(self.write_off_records()))
        decision = self.decisions_table.current_record()
        self.undo_button.setEnabled(idle and decision is not None and decision.undone_at is None)

    def _listed(self, lines: list[Line]) -> str:
        named = [f"• {self.words.sentence(line)}" for line in lines[:LISTED]]
        if len(lines) > LISTED:
            named.append(f"• …and {len(lines) - LISTED:,} more")
        return "\n".join(named)

    async def decide(self, action: str) -> Decision | None:
        """Match, unmatch or write off (asking why first), then reconcile again."""
        service = self.bridge.services.reconciliation
        if action == "match":
            lines = self.match_records()
            title = f"Match {len(lines)} records by hand"
            text = (
                f"These records will count as matched with each other from now on:\n\n"
                f"{self._listed(lines)}"
            )
            verb, call = "Match", service.match
        elif action == "unmatch":
            lines = self.unmatch_records()
            title = "Take records out of their match"
            text = (
                f"These records will no longer be matched with each other, and automatic "
                f"matching will leave them alone until this is undone:\n\n{self._listed(lines)}"
            )
            verb, call = "Unmatch", service.unmatch
        elif action == "write_off":
            lines = self.write_off_records()
            count = f"{len(lines):,} record" + ("s" if len(lines) != 1 else "")
            title = f"Write off {count}"
            text = (
                f"These will count as written off (accepted as they are) and leave the list "
                f"of exceptions; the reason is kept with them:\n\n{self._listed(lines)}"
            )
            verb, call = "Write off", service.write_off
        else:
            raise ValueError(action)
        if not lines:
            return None
        numbers = [line.number for line in lines]

        async def save(reason: str) -> Decision:
            decision: Decision = await self.bridge.call(call, numbers, reason)
            return decision

        dialog = ReasonDialog(title, text, verb, save, self)
        self.reason_dialog = dialog
        accepted = await run_dialog(dialog) == QDialog.DialogCode.Accepted
        self.reason_dialog = None
        if not accepted:
            return None
        decision: Decision = dialog.saved
        done = ACTION_WORDS[action]
        await self.reconcile_again(f"{done}: {len(lines):,} records.")
        return decision

    async def split(self) -> Decision | None:
        """Split the selected record into parts (asking for them and why), then reconcile."""
        line = self.split_record()
        if line is None:
            return None
        service = self.bridge.services.reconciliation

        async def save(parts: list[int], reason: str) -> Decision:
            decision: Decision = await self.bridge.call(service.split, line.number, parts, reason)
            return decision

        dialog = SplitDialog(
            self.words.sentence(line), line.amount_minor, line.currency, self.words.locale, save,
            self,
        )  # fmt: skip
        self.split_dialog = dialog
        accepted = await run_dialog(dialog) == QDialog.DialogCode.Accepted
        self.split_dialog = None
        if not accepted:
            return None
        decision: Decision = dialog.saved
        await self.reconcile_again(f"Split into {len(dialog.amounts())} parts.")
        return decision

    async def undo(self, decision: Decision | None) -> bool:
        if decision is None or decision.undone_at is not None:
            return False
        words = ACTION_WORDS.get(decision.action, decision.action).lower()
        asked = await confirm(
            self,
            "Undo the decision",
            f"Undo “{decision.reason}” ({words}, {len(decision.records)} records)? The "
            "records go back to what the rules make of them.",
            "Undo",
        )
        if not asked:
            return False
        try:
            await self.bridge.call(self.bridge.services.reconciliation.undo, decision.id)
        except SwitchboardError as exc:
            tell(self, "Not undone", str(exc))
            return False
        await self.reconcile_again("Undone.")
        return True

    async def reconcile_again(self, done: str) -> None:
        """Reconcile so the queue shows what the rules now make of every record."""
        self._running_here = True
        self.set_busy("Reconciling again…")
        try:
            summary: RunSummary = await self.bridge.call(
                self.bridge.services.reconciliation.run, "manual"
            )
        except SwitchboardError as exc:
            tell(self, "Reconciliation did not finish", f"{done} {exc}")
            return
        finally:
            self._running_here = False
            self.set_busy(None)
        self.notice.setText(f"{done} Reconciled again: {summary.exceptions:,} to look at.")
        await self.refresh()

    # --- busy -----------------------------------------------------------------------------------

    def _on_event(self, topic: str, payload: dict[str, Any]) -> None:
        if topic == TOPIC and payload.get("state") == "running":
            if not self._running_here:
                self.set_busy("Reconciling…")
            return  # the results change when it is done
        if topic == TOPIC and payload.get("state") in ("done", "failed") and not self._running_here:
            self.set_busy(None)
        super()._on_event(topic, payload)

    def _loading(self, loading: bool) -> None:
        if loading:
            self.set_busy("Reading the records…")
        elif not self._running_here:
            self.set_busy(None)

    def set_busy(self, text: str | None) -> None:
        if text is None:
            self.busy_row.stop()
        else:
            self.busy_row.start(text)
        self._enable()
