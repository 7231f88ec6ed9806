"""Dashboard: every provider connection at a glance, and live graphs of the selected one.

Cards show each connection's status (green healthy, amber degraded, red down, grey paused),
today's traffic and latency, its last error and its circuit breaker, with the actions a person
needs: Test, Logs, Configure, Pause, and maintenance. The graphs plot latency and error rate over
15 minutes to 30 days: ranges up to a day come from per-second ring buffers fed live by the
engine (backfilled from the database when the page opens), longer ones from hourly rollups.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.domain.clock import today_in
from app.domain.errors import SwitchboardError
from app.providers.breaker import BreakerState
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.health import TOPIC_ALERTS, TOPIC_HEALTH, ConnectionHealth, Status
from app.services.live import TOPIC as TOPIC_LIVE
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.connect_dialog import ConnectDialog, ConnectionDraft
from app.ui.dialogs import confirm, run_dialog, tell
from app.ui.page import Page
from app.ui.plots import show_time_in, theme_plot, time_plot
from app.ui.series import POINTS, SeriesBuffer
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED

RANGES = (
    ("15 min", 900),
    ("1 h", 3600),
    ("24 h", 86_400),
    ("7 d", 7 * 86_400),
    ("30 d", 30 * 86_400),
)
LIVE_RANGE = 86_400  # ranges up to a day are plotted from the ring buffers
SECONDS_BACKFILL = 900  # per-second history read back for the last 15 minutes
REDRAW_MS = 100  # 10 frames a second at most, and only when something changed
STAGGER_MS = 40
AXIS_STEPS = 30  # the time axis moves on in steps of a thirtieth of the range
COUNT_MS = 5000
FIGURES_REFRESH_MS = 30_000
CARD_WIDTH = 330
CARD_HEIGHT = 290
VALUE_WIDTH = 190
STATUS_WIDTH = 118
NAME_WIDTH = CARD_WIDTH - STATUS_WIDTH - 40
CARD_ROW_HEIGHT = CARD_HEIGHT + 30

STATUS_COLORS = {
    Status.HEALTHY: HEALTHY,
    Status.DEGRADED: DEGRADED,
    Status.DOWN: DOWN,
    Status.PAUSED: PAUSED,
    Status.UNKNOWN: PAUSED,
}
STATUS_WORDS = {
    Status.HEALTHY: "Healthy",
    Status.DEGRADED: "Degraded",
    Status.DOWN: "Down",
    Status.PAUSED: "Paused",
    Status.UNKNOWN: "Not checked yet",
}


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 and 5 times a power of ten that leaves a little room above
    `value` (1 for nothing at all)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if multiple * power >= value * 1.05:
            return multiple * power
    return 20.0 * power


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _uptime(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


class ConnectionCard(QFrame):
    """One connection.

    Signals:
        chosen(int): the card was clicked (its connection's graphs are wanted).
        action(int, str): an action on the connection: test, logs, configure, pause, resume,
            hold, reset, remove.
    """

    chosen = Signal(int)
    action = Signal(int, str)

    def __init__(self, connection_id: int) -> None:
        super().__init__()
        self.connection_id = connection_id
        self.setObjectName("Card")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        # Fixed sizes everywhere a figure changes: Qt then repaints the label alone instead of
        # laying out every card again (with 50 cards updated each second, that was the stall).
        self.setFixedSize(CARD_WIDTH, CARD_HEIGHT)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        top = QHBoxLayout()
        self.name = QLabel()
        self.name.setObjectName("EmptyTitle")
        self.status = QLabel()
        self.status.setFixedSize(STATUS_WIDTH, 22)
        self.status.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top.addWidget(self.name, 1)
        top.addWidget(self.status)
        layout.addLayout(top)
        self.kind = QLabel()
        self.kind.setObjectName("Muted")
        layout.addWidget(self.kind)
        grid = QGridLayout()
        grid.setHorizontalSpacing(16)
        self.figures: dict[str, QLabel] = {}
        for row, (key, label) in enumerate(
            (
                ("requests", "Calls today"),
                ("success", "Success rate"),
                ("latency", "Median · p95"),
                ("uptime", "Up 24 h · 7 d · 30 d"),
                ("breaker", "Breaker"),
            )
        ):
            name = QLabel(label)
            name.setObjectName("Muted")
            value = QLabel("—")
            value.setFixedSize(VALUE_WIDTH, 20)
            grid.addWidget(name, row, 0)
            grid.addWidget(value, row, 1)
            self.figures[key] = value
        layout.addLayout(grid)
        self.last_error = QLabel()
        self.last_error.setWordWrap(True)
        self.last_error.setObjectName("Muted")
        self.last_error.setFixedSize(CARD_WIDTH - 28, 34)
        layout.addWidget(self.last_error)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setFixedSize(CARD_WIDTH - 28, 34)
        layout.addWidget(self.note)
        buttons = QHBoxLayout()
        buttons.setSpacing(4)  # five buttons fit a card's width with their words whole
        self.buttons: dict[str, QPushButton] = {}
        for key, label in (
            ("test", "Test"),
            ("logs", "Logs"),
            ("configure", "Configure"),
            ("pause", "Pause"),
        ):
            button = QPushButton(label)
            button.clicked.connect(lambda _c=False, key=key: self._act(key))
            buttons.addWidget(button)
            self.buttons[key] = button
        more = QPushButton("More")
        menu = QMenu(more)
        menu.addAction("Hold open for maintenance", lambda: self._act("hold"))
        menu.addAction("Reset the breaker", lambda: self._act("reset"))
        menu.addSeparator()
        menu.addAction("Remove connection…", lambda: self._act("remove"))
        more.setMenu(menu)
        buttons.addWidget(more)
        layout.addLayout(buttons)
        self.paused = False
        self.calls_today = 0

    def _act(self, key: str) -> None:
        if key == "pause" and self.paused:
            key = "resume"
        self.action.emit(self.connection_id, key)

    def show_health(self, health: ConnectionHealth, zone: ZoneInfo) -> None:
        record, summary = health.record, health.summary
        self.name.ensurePolished()  # the title font comes from the stylesheet
        metrics = self.name.fontMetrics()
        self.name.setText(metrics.elidedText(record.name, Qt.TextElideMode.ElideRight, NAME_WIDTH))
        self.name.setToolTip(record.name)
        self.kind.setText(record.spec.name)
        color = STATUS_COLORS[health.status]
        self.status.setText(f"<span style='color:{color}'>●</span> {STATUS_WORDS[health.status]}")
        self.paused = record.paused
        self.buttons["pause"].setText("Resume" if record.paused else "Pause")
        breaker = record.breakers.get("")
        state = breaker.state if breaker else BreakerState.CLOSED
        words = {
            BreakerState.CLOSED: "closed (calls go through)",
            BreakerState.OPEN: "open (calls stopped)",
            BreakerState.HALF_OPEN: "half-open (trying again)",
            BreakerState.FORCED_OPEN: "held open (maintenance)",
        }[state]
        self.figures["breaker"].setText(words)
        self.figures["breaker"].setToolTip(breaker.reason if breaker else "")
        if summary is None:
            return
        self.calls_today = summary.requests
        self.figures["requests"].setText(f"{summary.requests:,}")
        self.figures["success"].setText(_percent(summary.success_rate))
        self.figures["latency"].setText(f"{_ms(summary.p50_ms)} · {_ms(summary.p95_ms)}")
        self.figures["latency"].setToolTip(f"Average {_ms(summary.avg_ms)}")
        self.figures["uptime"].setText(
            " · ".join(_uptime(summary.uptime.get(window)) for window in ("24h", "7d", "30d"))
        )
        if summary.last_error is not None:
            when, _error_class, detail = summary.last_error
            self.last_error.setText(f"Last error {when.astimezone(zone):%d %b %H:%M}: {detail}")
        else:
            self.last_error.setText("No errors in the last 7 days.")

    def add_calls(self, calls: int) -> None:
        self.calls_today += calls
        self.figures["requests"].setText(f"{self.calls_today:,}")

    def set_chosen(self, chosen: bool) -> None:
        """Mark the card whose graphs are shown. A property styled by the app's stylesheet, and
        only when it changes: restyling a widget re-polishes all its children."""
        if bool(self.property("chosen")) == chosen:
            return
        self.setProperty("chosen", chosen)
        self.style().unpolish(self)
        self.style().polish(self)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.chosen.emit(self.connection_id)
        super().mousePressEvent(event)


class DashboardPage(Page):
    key = "dashboard"
    title = "Dashboard"
    icon_name = "dashboard"
    topics = (TOPIC_CONNECTIONS, TOPIC_HEALTH, TOPIC_ALERTS)

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.buffers: dict[int, SeriesBuffer] = {}
        self.cards: dict[int, ConnectionCard] = {}
        self.health: dict[int, ConnectionHealth] = {}
        self.selected: int | None = None
        self.range_seconds = RANGES[0][1]
        self._backfilled: set[int] = set()
        self._first_live: dict[int, float] = {}
        self._history: dict[tuple[int, int], tuple[float, Any]] = {}
        self._dirty = True
        self._arranged: list[int] = []
        self._columns = 0
        self._last_redraw = 0.0
        self._forced = True  # a person changed something: draw at once
        self._ranges: dict[int, tuple[tuple[float, float], float]] = {}

        self.connect_button = QPushButton("Connect a provider…")
        self.connect_button.clicked.connect(
            lambda: tasks.start(self.open_connect(None), owner=self)
        )
        self.actions.addWidget(self.connect_button)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        self.banner = QFrame()
        self.banner.setObjectName("Banner")
        banner_row = QHBoxLayout(self.banner)
        self.banner_text = QLabel()
        self.banner_text.setWordWrap(True)
        dismiss = QPushButton("Dismiss")
        dismiss.clicked.connect(lambda: tasks.start(self.dismiss_alerts(), owner=self))
        banner_row.addWidget(self.banner_text, 1)
        banner_row.addWidget(dismiss)
        self.banner.hide()
        layout.addWidget(self.banner)

        split = QSplitter(Qt.Orientation.Vertical)
        self.card_area = QScrollArea()
        self.card_area.setWidgetResizable(True)
        self.card_area.setMinimumHeight(CARD_ROW_HEIGHT)
        self.card_holder = QWidget()
        self.card_grid = QGridLayout(self.card_holder)
        self.card_grid.setSpacing(12)
        self.card_area.setWidget(self.card_holder)
        split.addWidget(self.card_area)

        graphs = QWidget()
        graph_layout = QVBoxLayout(graphs)
        graph_layout.setContentsMargins(0, 6, 0, 0)
        header = QHBoxLayout()
        self.graph_title = QLabel()
        self.graph_title.setObjectName("EmptyTitle")
        header.addWidget(self.graph_title, 1)
        self.range_buttons = QButtonGroup(self)
        for index, (label, seconds) in enumerate(RANGES):
            button = QPushButton(label)
            button.setCheckable(True)
            button.setChecked(index == 0)
            self.range_buttons.addButton(button, seconds)
            header.addWidget(button)
        self.range_buttons.idClicked.connect(self.set_range)
        graph_layout.addLayout(header)
        self.latency_plot = time_plot("Latency (ms)")
        self.error_plot = time_plot("Errors (%)")
        self.legend = self.latency_plot.addLegend(offset=(-10, 10))
        # One time axis for both (the lower plot's): painting dates is much of a frame's cost.
        self.latency_plot.getAxis("bottom").setStyle(showValues=False)
        self.avg_curve = self.latency_plot.plot(name="average", pen=pg.mkPen("#1f6feb", width=1))
        self.p95_curve = self.latency_plot.plot(
            name="95th percentile", pen=pg.mkPen(DEGRADED, width=1)
        )
        self.error_curve = self.error_plot.plot(name="errors", pen=pg.mkPen(DOWN, width=1))
        for curve in (self.avg_curve, self.p95_curve, self.error_curve):
            curve.setDownsampling(auto=True)
            curve.setClipToView(True)
        graph_layout.addWidget(self.latency_plot, 1)
        graph_layout.addWidget(self.error_plot, 1)
        split.addWidget(graphs)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        layout.addWidget(split, 1)

        self.bridge.event.connect(self._on_live)
        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(REDRAW_MS)
        self.redraw_timer.timeout.connect(self.redraw)
        self.redraw_timer.start()
        self._new_calls: dict[int, int] = {}
        self.count_timer = QTimer(self)
        self.count_timer.setInterval(COUNT_MS)
        self.count_timer.timeout.connect(self._count_calls)
        self.count_timer.start()
        self.figures_timer = QTimer(self)
        self.figures_timer.setInterval(FIGURES_REFRESH_MS)
        self.figures_timer.timeout.connect(lambda: self.isVisible() and self.schedule_refresh())
        self.figures_timer.start()
        self._apply_theme()
        self._set_time_zone()

    # --- plots ----------------------------------------------------------------------------------

    def _apply_theme(self) -> None:
        palette = self.palette()
        for plot in (self.latency_plot, self.error_plot):
            theme_plot(plot, palette)
        self.legend.setLabelTextColor(palette.text().color())
        for _sample, label in self.legend.items:
            label.setText(label.text)  # pyqtgraph applies a new colour only on the next text

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.services.settings.get("school.timezone"))

    def _set_time_zone(self) -> None:
        for plot in (self.latency_plot, self.error_plot):
            show_time_in(plot, self.zone)

    def set_range(self, seconds: int) -> None:
        self.range_seconds = seconds
        self._dirty = self._forced = True
        if seconds > LIVE_RANGE and self.selected is not None:
            tasks.start(self.load_history(self.selected, seconds), owner=self)

    def _on_live(self, topic: str, payload: dict[str, Any]) -> None:
        if topic != TOPIC_LIVE:
            return
        for second in payload.get("seconds", ()):
            t = float(second["t"])
            for key, (requests, failures, avg_ms, p95_ms) in second["samples"].items():
                connection_id = int(key)
                self._first_live.setdefault(connection_id, t)
                buffer = self.buffer(connection_id)
                buffer.append(t, requests, failures, avg_ms, p95_ms)
                self._new_calls[connection_id] = self._new_calls.get(connection_id, 0) + requests
        self._dirty = True

    def _count_calls(self) -> None:
        """Add the calls since the last count to the cards (every few seconds: repainting 50
        cards every second costs the window more than anyone gains from it)."""
        for connection_id, calls in self._new_calls.items():
            card = self.cards.get(connection_id)
            if card is not None:
                card.add_calls(calls)
        self._new_calls.clear()

    def buffer(self, connection_id: int) -> SeriesBuffer:
        """The connection's ring buffer, made on first use (a day of samples: never build one
        just to throw it away)."""
        buffer = self.buffers.get(connection_id)
        if buffer is None:
            buffer = self.buffers[connection_id] = SeriesBuffer()
        return buffer

    def redraw(self, *, now: float | None = None) -> None:
        """Plot the selected connection's range: at most 10 times a second, only when something
        changed, and for long ranges only once a bin's worth of time has passed."""
        if not self._dirty or not self.isVisible() or self.selected is None:
            return
        now = time.time() if now is None else now
        bin_seconds = self.range_seconds / POINTS
        if not self._forced and now - self._last_redraw < bin_seconds:
            return  # nothing would visibly move yet
        self._dirty = self._forced = False
        self._last_redraw = now
        # The window ends a little ahead of now and moves on in steps, so the axes (most of a
        # frame's cost) are drawn again only when it moves; meanwhile only the curves change.
        step = self.range_seconds / AXIS_STEPS
        end = math.ceil(now / step) * step
        start = end - self.range_seconds
        if self.range_seconds <= LIVE_RANGE:
            buffer = self.buffers.get(self.selected)
            if buffer is None:
                return
            binned = buffer.binned(start, end, POINTS)
            t, avg, p95, errors = binned.t, binned.avg_ms, binned.p95_ms, binned.error_pct
        else:
            cached = self._history.get((self.selected, self.range_seconds))
            if cached is None:
                return
            t, avg, p95, errors = cached[1]
        self._show(self.latency_plot, (start, end), t, (self.avg_curve, avg), (self.p95_curve, p95))
        # The second plot a moment later: two short paints instead of one long one.
        QTimer.singleShot(
            STAGGER_MS,
            self,
            lambda: self._show(
                self.error_plot, (start, end), t, (self.error_curve, errors), most=100.0
            ),
        )

    def _show(
        self,
        plot: pg.PlotWidget,
        span: tuple[float, float],
        t: Any,
        *curves: Any,
        most: float = math.inf,
    ) -> None:
        """Put data and both ranges on a plot at once. The ranges are set here rather than by
        pyqtgraph's auto-range, which finds them while painting and then paints again; and
        only when they change, to a round top that a new sample seldom moves (at most `most`:
        errors never exceed 100 %)."""
        top = 0.0
        for curve, values in curves:
            curve.setData(t, values, connect="finite")
            finite = values[np.isfinite(values)]
            top = max(top, float(finite.max()) if finite.size else 0.0)
        ranges = (span, min(nice_ceiling(top), most))
        if self._ranges.get(id(plot)) != ranges:
            self._ranges[id(plot)] = ranges
            plot.setXRange(*span, padding=0)
            plot.setYRange(0, ranges[1], padding=0.08)  # room for the 0 label

    # --- loading --------------------------------------------------------------------------------

    async def load(self) -> None:
        services = self.bridge.services
        zone = self.zone
        since = datetime.combine(today_in(zone), datetime.min.time(), zone)
        overview: list[ConnectionHealth] = await self.bridge.call(services.health.overview, since)
        self._show_alerts(await self.bridge.call(services.health.alerts, 3, True))
        if not overview:
            self.states.show_empty(
                "No providers connected yet",
                "Connect the school's payment gateways, calendars and messaging services, and "
                "watch here that they answer quickly and reliably. Not ready for real ones? A "
                "sandbox gateway simulates one, with the delays and failures you choose.",
                [("Connect a provider…", lambda: tasks.start(self.open_connect(None), owner=self))]
                + (
                    []
                    if services.config.demo
                    else [("Explore a demo school", self.demo_requested.emit)]
                ),
            )
            return
        self.states.show_content()
        self._set_time_zone()
        self._show_cards(overview, zone)
        if self.selected not in self.cards:
            self.choose(overview[0].record.id, later=False)
        selected = self.selected
        assert selected is not None
        if selected not in self._backfilled:
            await self.backfill(selected)
        if self.range_seconds > LIVE_RANGE:
            await self.load_history(selected, self.range_seconds)
        self._dirty = self._forced = True
        self.redraw()

    def _show_cards(self, overview: list[ConnectionHealth], zone: ZoneInfo) -> None:
        self.health = {item.record.id: item for item in overview}
        for connection_id in list(self.cards):
            if connection_id not in self.health:
                self.cards.pop(connection_id).deleteLater()
        columns = max(1, self.card_area.viewport().width() // (CARD_WIDTH + 12))
        arranged = [item.record.id for item in overview]
        if arranged != self._arranged or columns != self._columns:
            # Only when cards come, go or the width changes: placing them is a full layout.
            for position, item in enumerate(overview):
                card = self.cards.get(item.record.id)
                if card is None:
                    card = ConnectionCard(item.record.id)
                    card.chosen.connect(self.choose)
                    card.action.connect(
                        lambda cid, key: tasks.start(self.act(cid, key), owner=self)
                    )
                    self.cards[item.record.id] = card
                self.card_grid.addWidget(card, position // columns, position % columns)
            self._arranged, self._columns = arranged, columns
        for item in overview:
            card = self.cards[item.record.id]
            card.show_health(item, zone)
            card.set_chosen(item.record.id == self.selected)

    def choose(self, connection_id: int, later: bool = True) -> None:
        """Plot this connection; its history is read back now, or by `load` (later=False)."""
        self.selected = connection_id
        for card_id, card in self.cards.items():
            card.set_chosen(card_id == connection_id)
        item = self.health.get(connection_id)
        self.graph_title.setText(f"{item.record.name}: latency and errors" if item else "")
        self._dirty = self._forced = True
        if not later:
            return
        if connection_id not in self._backfilled:
            tasks.start(self.backfill(connection_id), owner=self)
        if self.range_seconds > LIVE_RANGE:
            tasks.start(self.load_history(connection_id, self.range_seconds), owner=self)

    async def backfill(self, connection_id: int) -> None:
        """Read the last day back from the database into the ring buffer: minutes for the
        day, seconds for the last 15 minutes, stopping where live samples began."""
        from app.services.metrics import series

        self._backfilled.add(connection_id)
        db = self.bridge.services.db
        end = datetime.fromtimestamp(self._first_live.get(connection_id, time.time()), UTC)
        seconds_from = end - timedelta(seconds=SECONDS_BACKFILL)
        minutes = await self.bridge.call(
            series, db, connection_id, end - timedelta(days=1), seconds_from, 60
        )
        seconds = await self.bridge.call(series, db, connection_id, seconds_from, end, 1)
        buffer = self.buffer(connection_id)
        for history, span in ((minutes, 60.0), (seconds, 1.0)):
            start = history.start.timestamp()
            steps = np.arange(len(history.requests), dtype=np.float64)
            buffer.extend(
                start + steps * history.step_seconds,
                np.asarray(history.requests, dtype=np.float64),
                np.asarray(history.failures, dtype=np.float64),
                np.array([np.nan if v is None else v for v in history.avg_ms], dtype=np.float64),
                np.array([np.nan if v is None else v for v in history.p95_ms], dtype=np.float64),
                span,
            )
        self._dirty = self._forced = True  # history arrived: draw it now

    async def load_history(self, connection_id: int, seconds: int) -> None:
        """7 or 30 days: hourly figures from the database (kept a few minutes)."""
        from app.services.metrics import series

        cached = self._history.get((connection_id, seconds))
        if cached is not None and time.time() - cached[0] < 300:
            self._dirty = True
            return
        end = datetime.now(UTC)
        history = await self.bridge.call(
            series,
            self.bridge.services.db,
            connection_id,
            end - timedelta(seconds=seconds),
            end,
            3600,
        )
        steps = np.arange(len(history.requests), dtype=np.float64)
        t = history.start.timestamp() + (steps + 0.5) * 3600
        requests = np.asarray(history.requests, dtype=np.float64)
        failures = np.asarray(history.failures, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            errors = np.where(requests > 0, failures / requests * 100, np.nan)
        avg = np.array([np.nan if v is None else v for v in history.avg_ms], dtype=np.float64)
        p95 = np.array([np.nan if v is None else v for v in history.p95_ms], dtype=np.float64)
        self._history[(connection_id, seconds)] = (time.time(), (t, avg, p95, errors))
        self._dirty = self._forced = True

    # --- alerts ---------------------------------------------------------------------------------

    def _show_alerts(self, alerts: list[Any]) -> None:
        if not alerts:
            self.banner.hide()
            return
        text = alerts[0].message
        if len(alerts) > 1:
            text += f"  (and {len(alerts) - 1} more)"
        self.banner_text.setText(text)
        self.banner.show()

    async def dismiss_alerts(self) -> None:
        await self.bridge.call(self.bridge.services.health.mark_seen)
        self.banner.hide()

    # --- actions --------------------------------------------------------------------------------

    async def act(self, connection_id: int, key: str) -> None:
        services = self.bridge.services
        card = self.cards.get(connection_id)
        try:
            if key == "test":
                if card is not None:
                    card.note.setText("Calling the provider…")
                check = await self.bridge.call(services.health.check, connection_id)
                if card is not None:
                    color = HEALTHY if check.ok else DOWN
                    text = f"answered in {check.latency_ms:,.0f} ms" if check.ok else check.detail
                    card.note.setText(f"<span style='color:{color}'>Test: {text}</span>")
            elif key == "logs":
                self.navigate.emit(f"requests:{connection_id}")
            elif key == "configure":
                await self.open_connect(connection_id)
            elif key in ("pause", "resume"):
                await self.bridge.call(
                    services.connections.set_paused, connection_id, key == "pause"
                )
            elif key == "hold":
                await self.bridge.call(services.connections.hold_open, connection_id)
            elif key == "reset":
                await self.bridge.call(services.connections.reset_breakers, connection_id)
            elif key == "remove":
                name = (
                    self.health[connection_id].record.name if connection_id in self.health else "it"
                )
                if await confirm(
                    self,
                    "Remove connection",
                    f"Remove {name}? Its settings and secrets are deleted; its call history stays.",
                    "Remove",
                ):
                    await self.bridge.call(services.connections.remove, connection_id)
        except SwitchboardError as exc:
            tell(self, "That did not work", str(exc))

    async def open_connect(self, connection_id: int | None) -> Any:
        """The connect dialog for a new connection, or to change one."""
        services = self.bridge.services
        connections = services.connections
        record = self.health[connection_id].record if connection_id in self.health else None

        async def save(draft: ConnectionDraft) -> Any:
            if record is None:
                return await self.bridge.call(
                    connections.add,
                    draft.spec.key,
                    draft.name,
                    draft.values,
                    draft.secrets,
                    draft.health_interval,
                )
            return await self.bridge.call(
                connections.update,
                record.id,
                draft.name,
                draft.values,
                draft.secrets,
                draft.health_interval,
            )

        async def test(draft: ConnectionDraft) -> Any:
            keep = record.id if record is not None else None
            return await self.bridge.call(
                connections.test_draft, draft.spec.key, draft.values, draft.secrets, keep
            )

        dialog = ConnectDialog(connections.kinds(), save, test, record, self)
        if await run_dialog(dialog) == QDialog.DialogCode.Accepted and dialog.saved is not None:
            await self.settle()
            self.choose(dialog.saved.id)
            return dialog.saved
        return None
