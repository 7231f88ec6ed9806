"""Audit trail: every change made (who, from which computer, when, to which record, what it was
before and after), a page at a time however long the trail, with filters, a check that no
entry was changed or removed, and an export to CSV."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import QDate, Qt, QTimer
from PySide6.QtGui import QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.audit import (
    PAGE_SIZE,
    TOPIC,
    ExportResult,
    TrailChoices,
    TrailEntry,
    TrailFilter,
    TrailPage,
    VerifyResult,
)
from app.services.progress import Cancelled
from app.ui import formatting, tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import tell
from app.ui.page import Page
from app.ui.progress import with_progress
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN, HEALTHY

SEARCH_PAUSE_MS = 300  # a search runs once typing pauses, not at every letter
SHOWN_VALUE = 80  # characters of one value in the one-line summary

ACTION_WORDS = {
    "connection.added": "Connection added",
    "connection.changed": "Connection changed",
    "connection.removed": "Connection removed",
    "connection.paused": "Connection paused",
    "connection.resumed": "Connection resumed",
    "refund.requested": "Refund asked for",
    "audit.exported": "Audit trail exported",
}
KIND_WORDS = {"connection": "Connection", "refund": "Refund", "export": "Export"}
FAMILY_WORDS = {"audit": "the audit trail"}
PERIODS = (
    ("Any time", "any"),
    ("Today", "today"),
    ("Last 7 days", "7"),
    ("Last 30 days", "30"),
    ("Between dates", "between"),
)


# --- words --------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def action_words(action: str) -> str:
    """ "connection.added" → "Connection added"; an action not known here reads from its name."""
    if action in ACTION_WORDS:
        return ACTION_WORDS[action]
    return _sentence(action.replace(".", " ").replace("_", " ").strip())


def family_words(family: str) -> str:
    """What the family choice of the action filter says: "Every change to connections"."""
    noun = FAMILY_WORDS.get(family, family.replace("_", " ") + "s")
    return f"Everything about {noun}"


def record_words(entry: TrailEntry) -> str:
    kind = KIND_WORDS.get(entry.record_kind, _sentence(entry.record_kind.replace("_", " ")))
    return f"{kind} {entry.record_id}".strip()


def _money(value: Any, locale: str) -> Any:
    """A summary with each amount in minor units beside its currency as money: {"amount_minor":
    4500, "currency": "USD"} reads "amount: US$45.00"."""
    if not isinstance(value, Mapping):
        return value
    readable = {key: _money(item, locale) for key, item in value.items()}
    minor, currency = readable.get("amount_minor"), readable.get("currency")
    if isinstance(minor, int) and isinstance(currency, str):
        try:
            amount = formatting.money(minor, currency, locale)
        except (SwitchboardError, ValueError):  # an unknown currency: as recorded
            return readable
        readable = {
            ("amount" if key == "amount_minor" else key): item for key, item in readable.items()
        }
        readable["amount"] = amount
        del readable["currency"]
    return readable


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested summaries as one level: {"settings": {"latency_ms": 5}} becomes
    {"settings.latency_ms": 5}."""
    if not isinstance(value, Mapping):
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, Mapping) and item:
            flat.update(_flat(item, name))
        else:
            flat[name] = item
    return flat


def _field(name: str) -> str:
    return name.replace("_", " ")


def _value(value: Any, limit: int = SHOWN_VALUE) -> str:
    if value is None:
        text = "—"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list | tuple):
        text = ", ".join(_value(item, limit) for item in value) or "none"
    elif isinstance(value, Mapping):
        text = "none" if not value else ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def change_words(entry: TrailEntry, locale: str = "en") -> str:
    """The change on one line: "name: Sandbox Pay → Sandbox Cards; settings.latency ms: 1 → 5"."""
    before, after = _flat(_money(entry.before, locale)), _flat(_money(entry.after, locale))
    if entry.before is not None and entry.after is not None:
        keys = list(dict.fromkeys([*before, *after]))
        # What stayed (kept for context, like a connection's kind) is left to the detail pane.
        changed = [key for key in keys if before.get(key) != after.get(key)] or keys
        parts = [
            f"{_field(key)}: {_value(before.get(key))} → {_value(after.get(key))}"
            for key in changed
        ]
    elif entry.after is not None:
        parts = [f"{_field(key)}: {_value(value)}" for key, value in after.items()]
    else:
        parts = [f"was {_field(key)}: {_value(value)}" for key, value in before.items()]
    return "; ".join(parts) or "—"


def describe(entry: TrailEntry, zone: ZoneInfo, locale: str = "en") -> str:
    """The selected entry in full: what, when, who, and every field before and after."""
    local = entry.at.astimezone(zone)
    lines = [
        action_words(entry.action),
        "",
        f"Entry:    {entry.seq:,}",
        f"When:     {local:%d %b %Y %H:%M:%S} ({zone.key})",
        f"Who:      {entry.actor}",
        f"Computer: {entry.machine}",
        f"Record:   {record_words(entry)}",
        f"Action:   {entry.action}",
        "",
    ]
    before, after = _flat(_money(entry.before, locale)), _flat(_money(entry.after, locale))
    names = list(dict.fromkeys([*before, *after]))
    if not names:
        lines.append("No details were recorded.")
    else:
        wide = max(len("Field"), *(len(_field(name)) for name in names))
        side = max(len("Before"), *(len(_value(before.get(name), 40)) for name in names))
        lines.append(f"{'Field':<{wide}}  {'Before':<{side}}  After")
        lines.append(f"{'-' * wide}  {'-' * side}  {'-' * 5}")
        for name in names:
            was = _value(before.get(name), 40) if entry.before is not None else ""
            now = _value(after.get(name), 40) if entry.after is not None else "(removed)"
            lines.append(f"{_field(name):<{wide}}  {was:<{side}}  {now}")
    lines += ["", f"Hash:     {entry.hash}"]
    return "\n".join(lines)


def verdict(result: VerifyResult) -> str:
    """The check's result in plain words."""
    bad = result.first_bad
    if bad is None:
        if not result.entries:
            return "The trail is intact: there are no entries yet."
        return (
            f"The trail is intact: all {result.entries:,} entries are as they were written, "
            "none removed or added."
        )
    return (
        f"Entry {bad.seq:,} is not as Switchboard wrote it: {bad.reason}. The database was "
        "changed outside Switchboard; keep a copy of it and tell your administrator."
    )


# --- the page -----------------------------------------------------------------------------------


class AuditPage(Page):
    key = "audit"
    title = "Audit trail"
    icon_name = "audit"  # no icon of its own yet
    topics = (TOPIC,)
    refresh_every = 1.0
    shortcut_hint = "Ctrl+F searches the trail"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.cursors: list[int | None] = []  # the `before` of each newer page, to go back
        self.before: int | None = None  # the page shown: entries older than this (None: newest)
        self.offset: int | None = 0  # entries before this page; None: not known (show_entry)
        self.page_older: int | None = None  # the shown page's cursor to the next, older one
        self.page_total = 0
        self.last_result: ExportResult | None = None
        self.verified: VerifyResult | None = None
        self._wanted_seq: int | None = None  # an entry to select once its page is shown

        self.verify_button = QPushButton("Verify the trail")
        self.verify_button.setToolTip("Check that no entry was changed, removed or added")
        self.verify_button.clicked.connect(lambda: tasks.start(self.verify_trail(), owner=self))
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Save the entries these filters show to a CSV file")
        self.export_button.clicked.connect(self.choose_export)
        self.actions.addWidget(self.verify_button)
        self.actions.addWidget(self.export_button)

        # --- filters
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search the trail…  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(240)
        self.actor = QComboBox()
        self.actor.setToolTip("Only what one person (or program) did")
        self.actor.addItem("Everyone", None)
        self.actor.setMinimumWidth(140)
        self.action = QComboBox()
        self.action.setToolTip("Only one kind of change")
        self.action.addItem("Every change", None)
        self.action.setMinimumWidth(200)
        self.period = QComboBox()
        self.period.setToolTip("Only changes made in this time")
        for label, value in PERIODS:
            self.period.addItem(label, value)
        today = QDate.currentDate()
        self.from_day = QDateEdit(today.addDays(-7))
        self.to_day = QDateEdit(today)
        for day_edit, tip in ((self.from_day, "From this day"), (self.to_day, "To this day")):
            day_edit.setCalendarPopup(True)
            day_edit.setDisplayFormat("dd MMM yyyy")
            day_edit.setToolTip(tip)
            day_edit.setVisible(False)
            day_edit.dateChanged.connect(lambda _d: self.first_page())
        self.record_id = QLineEdit()
        self.record_id.setPlaceholderText("Record number")
        self.record_id.setToolTip("Only the changes to the record with this number")
        self.record_id.setClearButtonEnabled(True)
        self.record_id.setMaximumWidth(130)
        self._search_pause = QTimer(self)
        self._search_pause.setSingleShot(True)
        self._search_pause.setInterval(SEARCH_PAUSE_MS)
        self._search_pause.timeout.connect(self.first_page)
        for edit in (self.search, self.record_id):
            edit.textChanged.connect(lambda _t: self._search_pause.start())
            edit.returnPressed.connect(self.first_page)
        for combo in (self.actor, self.action):
            combo.currentIndexChanged.connect(lambda _i: self.first_page())
        self.period.currentIndexChanged.connect(lambda _i: self._period_changed())
        QShortcut(QKeySequence.StandardKey.Find, self, self.focus_search)
        filters = QHBoxLayout()
        for widget in (
            self.search,
            self.actor,
            self.action,
            self.period,
            self.from_day,
            self.to_day,
            self.record_id,
        ):
            filters.addWidget(widget)
        filters.addStretch(1)

        # --- the verdict of the last check
        self.banner = QWidget()
        self.banner.setObjectName("Banner")
        self.banner.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.show_bad = QPushButton()
        self.show_bad.clicked.connect(self._show_bad_entry)
        row = QHBoxLayout(self.banner)
        row.setContentsMargins(10, 6, 10, 6)
        row.addWidget(self.verdict, 1)
        row.addWidget(self.show_bad)
        self.banner.setVisible(False)

        # --- entries and the one chosen
        self.model: RecordModel[TrailEntry] = RecordModel(self.columns())
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)  # newest first, as the pages are read
        self.table.selection_changed.connect(self._selected)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)  # keeps columns aligned
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.detail.setFont(mono)
        self.detail.setPlaceholderText("Choose an entry to see what it changed, before and after.")
        # The detail under the list: both get the page's width, which the before and after
        # columns of a change need.
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([400, 260])
        split.setChildrenCollapsible(False)

        self.footer = QLabel()
        self.footer.setObjectName("Muted")
        self.notice = QLabel()  # what the last export did
        self.notice.setObjectName("Muted")
        self.newer = QPushButton("Newer")
        self.newer.clicked.connect(self.newer_page)
        self.older = QPushButton("Older")
        self.older.clicked.connect(self.older_page)
        bottom = QHBoxLayout()
        bottom.addWidget(self.footer)
        bottom.addWidget(self.notice, 1)
        bottom.addWidget(self.newer)
        bottom.addWidget(self.older)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale") or "en")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(str(self.bridge.services.settings.get("school.timezone")) or "UTC")

    def columns(self) -> list[Column[TrailEntry]]:
        return [
            Column(
                "When",
                lambda e: formatting.when(e.at, self.zone),
                tooltip=lambda e: f"{e.at.astimezone(self.zone):%d %b %Y %H:%M:%S %Z}",
                width=110,
            ),
            Column("Who", lambda e: e.actor, width=130),
            Column("Computer", lambda e: e.machine, width=130),
            Column(
                "What",
                lambda e: action_words(e.action),
                tooltip=lambda e: e.action,
                width=170,
            ),
            Column("Record", record_words, width=170, tooltip=record_words),
            Column(
                "Change",
                lambda e: change_words(e, self.locale),
                stretch=True,
                tooltip=lambda e: change_words(e, self.locale),
            ),
        ]

    # --- filters and pages ----------------------------------------------------------------------

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def where(self) -> TrailFilter:
        zone = self.zone
        since = until = None
        period = self.period.currentData()
        now = datetime.now(UTC)
        if period == "today":
            since = datetime.combine(now.astimezone(zone).date(), time(), zone)
        elif period in ("7", "30"):
            since = now - timedelta(days=int(period))
        elif period == "between":
            first: date = self.from_day.date().toPython()  # type: ignore[assignment]
            last: date = self.to_day.date().toPython()  # type: ignore[assignment]
            since = datetime.combine(min(first, last), time(), zone)
            until = datetime.combine(max(first, last) + timedelta(days=1), time(), zone)
        action = self.action.currentData()
        return TrailFilter(
            since=since.astimezone(UTC) if since else None,
            until=until.astimezone(UTC) if until else None,
            actor=self.actor.currentData(),
            action=action,
            record_id=self.record_id.text().strip() or None,
            text=self.search.text().strip(),
        )

    def _period_changed(self) -> None:
        between = self.period.currentData() == "between"
        self.from_day.setVisible(between)
        self.to_day.setVisible(between)
        self.first_page()

    def first_page(self) -> None:
        self._search_pause.stop()
        self.cursors.clear()
        self.before = None
        self.offset = 0
        self.schedule_refresh()

    def older_page(self) -> None:
        if self.page_older is None:
            return
        self.cursors.append(self.before)
        self.before = self.page_older
        self.offset = None if self.offset is None else self.offset + PAGE_SIZE
        self.schedule_refresh()

    def newer_page(self) -> None:
        if not self.cursors:
            return
        self.before = self.cursors.pop()
        if self.before is None:
            self.offset = 0
        elif self.offset is not None:
            self.offset = max(0, self.offset - PAGE_SIZE)
        self.schedule_refresh()

    # --- loading --------------------------------------------------------------------------------

    async def load(self) -> None:
        trail = self.bridge.services.audit
        choices: TrailChoices = await self.bridge.call(trail.choices)
        self._offer(choices)
        where = self.where()
        page: TrailPage = await self.bridge.call(trail.page, where, before=self.before)
        if not page.entries and self.before is not None:  # the page emptied: start again
            self.cursors.clear()
            self.before, self.offset = None, 0
            page = await self.bridge.call(trail.page, where)
        self.page_older = page.older
        self.page_total = page.total
        if not page.total and not choices.actions:
            self.states.show_empty(
                "No changes recorded yet",
                "Every change anyone makes here (a connection added or changed, a refund asked "
                "for) is written to the audit trail: who made it, from which computer, when, "
                "and what it was before and after. Entries cannot be quietly edited; "
                "“Verify the trail” checks that none was.",
                [("Open the dashboard", lambda: self.navigate.emit("dashboard"))],
            )
            return
        self.model.set_records(page.entries)
        if not page.entries:
            self.footer.setText("No entries match these filters.")
        elif self.offset is None:  # opened on one entry: where this page falls is not counted
            newest, oldest = page.entries[0].seq, page.entries[-1].seq
            self.footer.setText(
                f"Entries numbered {newest:,} to {oldest:,}, of {page.total:,}, newest first"
            )
        else:
            first, last = self.offset + 1, self.offset + len(page.entries)
            self.footer.setText(f"Entries {first:,}–{last:,} of {page.total:,}, newest first")
        self.newer.setEnabled(bool(self.cursors))
        self.older.setEnabled(page.older is not None)
        self.export_button.setEnabled(page.total > 0)
        self.states.show_content()
        if self._wanted_seq is not None:
            wanted, self._wanted_seq = self._wanted_seq, None
            if self.select_seq(wanted):
                return
        if self.table.current_record() is None and page.entries:
            self.table.selectRow(0)

    def _offer(self, choices: TrailChoices) -> None:
        """Fill the filters' lists, keeping what is chosen."""
        actor, action = self.actor.currentData(), self.action.currentData()
        for combo in (self.actor, self.action):
            combo.blockSignals(True)
            while combo.count() > 1:
                combo.removeItem(1)
        for name in choices.actors:
            self.actor.addItem(name, name)
        families = sorted({name.partition(".")[0] for name in choices.actions})
        for family in families:
            self.action.addItem(family_words(family), family)
            for name in choices.actions:
                if name.partition(".")[0] == family:
                    self.action.addItem(f"    {action_words(name)}", name)
        for combo, chosen in ((self.actor, actor), (self.action, action)):
            if chosen is not None and combo.findData(chosen) < 0:
                combo.addItem(str(chosen), chosen)  # gone from the trail: still what is chosen
            combo.setCurrentIndex(max(combo.findData(chosen), 0))
            combo.blockSignals(False)

    def select_seq(self, seq: int) -> bool:
        row = next((e for e in self.model.records() if e.seq == seq), None)
        return row is not None and self.table.select_key(row.id)

    def _selected(self, entry: TrailEntry | None) -> None:
        if entry is None:
            return
        self.detail.setPlainText(describe(entry, self.zone, self.locale))

    # --- verifying ------------------------------------------------------------------------------

    async def verify_trail(self) -> VerifyResult:
        self.verify_button.setEnabled(False)
        self.verdict.setText("Checking every entry…")
        self.verdict.setStyleSheet("")
        self.show_bad.setVisible(False)
        self.banner.setVisible(True)
        try:
            result: VerifyResult = await self.bridge.call(self.bridge.services.audit.verify)
        except SwitchboardError as exc:
            self.verdict.setText(str(exc))
            self.verdict.setStyleSheet(f"color: {DOWN}")
            raise
        finally:
            self.verify_button.setEnabled(True)
        self.verified = result
        self.verdict.setText(("✓ " if result.ok else "✗ ") + verdict(result))
        self.verdict.setStyleSheet(f"color: {HEALTHY if result.ok else DOWN}")
        bad = result.first_bad
        self.show_bad.setVisible(bad is not None and bad.id is not None)
        if bad is not None:
            self.show_bad.setText(f"Show entry {bad.seq:,}")
        return result

    def _show_bad_entry(self) -> None:
        bad = self.verified.first_bad if self.verified else None
        if bad is not None:
            self.show_entry(bad.seq)

    def show_entry(self, seq: int) -> None:
        """The page holding entry `seq`, every filter cleared, with it chosen."""
        for widget in (self.search, self.record_id):
            widget.blockSignals(True)
            widget.clear()
            widget.blockSignals(False)
        for combo in (self.actor, self.action, self.period):
            combo.blockSignals(True)
            combo.setCurrentIndex(0)
            combo.blockSignals(False)
        self.from_day.setVisible(False)
        self.to_day.setVisible(False)
        self.cursors = [None]  # "Newer" leads back to the newest entries
        self.before = seq + 1
        self.offset = None
        self._wanted_seq = seq
        self.schedule_refresh()

    # --- exporting ------------------------------------------------------------------------------

    def choose_export(self) -> None:
        name = f"audit-trail-{datetime.now(self.zone):%Y-%m-%d}.csv"
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the audit trail", name, "CSV files (*.csv)"
        )
        if path:
            tasks.start(self.export_csv(Path(path)), owner=self)

    async def export_csv(self, path: Path) -> ExportResult | None:
        """The entries the filters show (every page), oldest first, to a CSV file; a progress
        window with Cancel appears when it takes more than a moment."""
        trail = self.bridge.services.audit
        where = self.where()
        try:
            result: ExportResult = await with_progress(
                self,
                "Exporting the audit trail",
                lambda progress: self.bridge.call(trail.export, path, where, progress),
            )
        except Cancelled:
            self.notice.setText("Export stopped; no file was written.")
            return None
        except (SwitchboardError, OSError) as exc:
            tell(self, "Nothing was exported", f"{path} could not be written: {exc}")
            return None
        self.last_result = result
        self.notice.setText(f"Saved {result.entries:,} entries to {path.name}.")
        return result
