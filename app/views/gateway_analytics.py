"""Gateway analytics: how each payment gateway has done over the last day, week, month or
quarter: how many attempts it took, how often it took the money, how quickly it answered and
what it kept in fees, in a table and in graphs per hour or per day (one line per gateway, in the
same colour everywhere on the page)."""

from __future__ import annotations

import math
from html import escape
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QComboBox, QHeaderView, QLabel, QVBoxLayout, QWidget

from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.gateway_stats import (
    Figures,
    GatewayFigures,
    GatewayReport,
    GatewayStats,
    Period,
    Unit,
)
from app.services.payments import TOPIC as TOPIC_PAYMENTS
from app.ui.bridge import EngineBridge
from app.ui.formatting import money, totals
from app.ui.page import Page
from app.ui.plots import show_time_in, theme_plot, time_plot
from app.ui.table import Column, RecordModel, RecordTable
from app.views.dashboard import nice_ceiling

Floats = npt.NDArray[np.float64]

# One colour per gateway, by its place among the gateways (oldest first), so it keeps its colour
# when another is added. None of green, amber, red or grey: those say healthy, degraded, down and
# paused everywhere else in the app.
GATEWAY_COLOURS = ("#0969da", "#8250df", "#bf3989", "#1b9aaa", "#a4743f")
EMPTY = np.empty(0, dtype=np.float64)
MOST_ROWS_SHOWN = 6  # more gateways than this scroll inside the table


def colour_of(position: int) -> str:
    return GATEWAY_COLOURS[position % len(GATEWAY_COLOURS)]


def _percent(value: float | None, places: int = 1) -> str:
    return "—" if value is None else f"{value:.{places}f} %"


def _or_lowest(value: float | None) -> float:
    """A figure to sort by: none at all sorts below every figure."""
    return -math.inf if value is None else value


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def outcomes_text(figures: Figures) -> str:
    """What became of the attempts, in words (the success rate's tooltip)."""
    if not figures.attempts:
        return "No attempts in this period."
    return (
        f"Of {figures.attempts:,} attempts: {figures.successes:,} taken (paid or on the way), "
        f"{figures.hard_declines:,} refused by the payer's bank, {figures.soft_declines:,} "
        f"declined for now (such as not enough funds), {figures.technical_failures:,} failed "
        f"at the gateway, {figures.unknown_outcomes:,} with no answer yet."
    )


def fees_text(figures: Figures, locale: str) -> str:
    """Where the fee percentage comes from (its tooltip)."""
    if not figures.money:
        return "No payments taken in this period."
    parts = [
        f"{money(m.fees_minor, m.currency, locale)} in fees on "
        f"{money(m.fee_base_minor, m.currency, locale)} ({_percent(m.fee_percent)})"
        for m in figures.money
        if m.fee_percent is not None
    ]
    if not parts:
        return "The gateway has not reported its fees for these payments yet."
    text = "; ".join(parts) + "."
    if len(parts) > 1:
        text += " Across currencies, each one's share counts by its number of payments."
    if any(m.fee_base_minor < m.taken_minor for m in figures.money):
        text += " Payments whose fee the gateway has not reported yet are left out."
    return text


class GatewayAnalyticsPage(Page):
    key = "gateway-analytics"
    title = "Gateway analytics"
    icon_name = "analytics"
    topics = (TOPIC_PAYMENTS, TOPIC_CONNECTIONS)
    # Each refresh reads up to 90 days of attempts: a billing run's burst of payments refreshes
    # the page every few seconds, not at each one.
    refresh_every = 5.0

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.stats = GatewayStats(bridge.services.db)
        self.report: GatewayReport | None = None
        self.colours: dict[int, str] = {}
        # connection id: its curves on the success, answer time and fee graphs
        self.curves: dict[int, tuple[pg.PlotDataItem, pg.PlotDataItem, pg.PlotDataItem]] = {}

        period_label = QLabel("&Period")
        self.period = QComboBox()
        self.period.setToolTip("Which stretch of time the table and graphs cover")
        for period in Period:
            self.period.addItem(period.label, period.value)
        self.period.setCurrentIndex(self.period.findData(Period.WEEK.value))
        self.period.currentIndexChanged.connect(lambda _i: self.schedule_refresh())
        period_label.setBuddy(self.period)
        self.actions.addWidget(period_label)
        self.actions.addWidget(self.period)

        self.model: RecordModel[GatewayFigures] = RecordModel(
            self.columns(), key=lambda g: g.connection_id
        )
        self.table = RecordTable(self.model)
        self.table.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        # In the gateways' order (as in the legend) until a heading is clicked.
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        # Every column as wide as its figures; the last takes what is left over.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        # Tall enough for every row (up to a few), and for the scroll bar when the window is
        # too narrow for every column, which would otherwise cover the last row.
        self.table.horizontalScrollBar().rangeChanged.connect(lambda *_: self._fit_height())
        self.note = QLabel()
        self.note.setObjectName("Muted")
        self.note.setWordWrap(True)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)

        self.success_plot = time_plot("Success rate (%)")
        self.latency_plot = time_plot("Answer time (ms)")
        self.fees_plot = time_plot("Fees (%)")
        self.plots = (self.success_plot, self.latency_plot, self.fees_plot)
        for plot in self.plots[:-1]:
            # One time axis under the three (the lowest): the dates read once.
            plot.getAxis("bottom").setStyle(showValues=False)
        name_days(self.fees_plot.getAxis("bottom"))
        self.success_plot.setToolTip("Of each hour's (or day's) attempts, the share taken")
        self.latency_plot.setToolTip("95 in 100 attempts were answered within this time")
        self.fees_plot.setToolTip("Fees as a share of the amount taken, where they are known")

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.note)
        layout.addWidget(self.legend)
        for plot in self.plots:
            layout.addWidget(plot, 1)
        self._apply_theme()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.services.settings.get("school.timezone"))

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    @property
    def chosen_period(self) -> Period:
        return Period(self.period.currentData())

    def columns(self) -> list[Column[GatewayFigures]]:
        return [
            Column(
                "Gateway",
                lambda g: g.name,
                color=lambda g: self.colours.get(g.connection_id),
            ),
            Column(
                "Attempts",
                lambda g: f"{g.total.attempts:,}",
                sort=lambda g: g.total.attempts,
                right=True,
            ),
            Column(
                "Success rate",
                lambda g: _percent(g.total.success_percent),
                sort=lambda g: _or_lowest(g.total.success_percent),
                right=True,
                tooltip=lambda g: outcomes_text(g.total),
            ),
            Column(
                "Technical failures",
                lambda g: f"{g.total.technical_failures:,}",
                sort=lambda g: g.total.technical_failures,
                right=True,
                tooltip=lambda _g: (
                    "Attempts the gateway could not handle (it was down or answered with an "
                    "error). They say nothing about the payer: another gateway may be tried."
                ),
            ),
            Column(
                "Answer time (p95)",
                lambda g: _ms(g.total.p95_ms),
                sort=lambda g: _or_lowest(g.total.p95_ms),
                right=True,
                tooltip=lambda g: (
                    f"95 in 100 attempts were answered within {_ms(g.total.p95_ms)}, half "
                    f"within {_ms(g.total.p50_ms)}."
                    if g.total.p95_ms is not None
                    else "No answers in this period."
                ),
            ),
            Column(
                "Fees",
                lambda g: _percent(g.total.fee_percent, 2),
                sort=lambda g: _or_lowest(g.total.fee_percent),
                right=True,
                tooltip=lambda g: fees_text(g.total, self.locale),
            ),
            Column(
                "Amount taken",
                lambda g: totals([(m.currency, m.taken_minor) for m in g.total.money], self.locale),
                sort=lambda g: tuple((m.currency, m.taken_minor) for m in g.total.money),
                right=True,
            ),
        ]

    # --- loading --------------------------------------------------------------------------------

    async def load(self) -> None:
        report: GatewayReport = await self.bridge.call(
            self.stats.report, self.chosen_period, self.zone
        )
        if not report.has_payments:
            self.states.show_empty(
                "No payments yet",
                "Charges made from Payments or a billing run show up here: how often each "
                "gateway took the money, how quickly it answered and what it kept in fees.",
                [("Open the payments", lambda: self.navigate.emit("payments"))],
            )
            return
        self.report = report
        self.colours = {g.connection_id: colour_of(n) for n, g in enumerate(report.gateways)}
        self.model.set_records(report.gateways)
        self._fit_height()
        self.note.setText(self._note(report))
        self.legend.setText(self._legend(report))
        self.states.show_content()
        self._plot(report)

    def _fit_height(self) -> None:
        table = self.table
        rows = max(1, min(self.model.rowCount(), MOST_ROWS_SHOWN))
        height = (
            table.horizontalHeader().sizeHint().height()
            + rows * table.verticalHeader().defaultSectionSize()
        )
        if table.horizontalScrollBar().maximum() > 0:
            height += table.horizontalScrollBar().sizeHint().height()
        table.setFixedHeight(height + 2 * table.frameWidth())

    def _note(self, report: GatewayReport) -> str:
        unit = "hour" if report.period.unit is Unit.HOUR else "day"
        attempts = sum(g.total.attempts for g in report.gateways)
        first = (
            "No gateway was asked to take a payment in this period."
            if not attempts
            else f"{attempts:,} attempts to take a payment in this period."
        )
        return (
            f"{first} Graphs by {unit} in the school's time ({self.zone.key}); gaps are "
            f"{unit}s without attempts. Answer time: 95 in 100 attempts were answered within "
            "it. Point at a figure in the table for more."
        )

    def _legend(self, report: GatewayReport) -> str:
        swatch = "<span style='color:{}'>&#9632;</span>&nbsp;{}"
        return "&nbsp;&nbsp;&nbsp;".join(
            swatch.format(self.colours[g.connection_id], escape(g.name)) for g in report.gateways
        )

    # --- graphs ---------------------------------------------------------------------------------

    def _plot(self, report: GatewayReport) -> None:
        starts = np.array([edge.timestamp() for edge in report.edges], dtype=np.float64)
        t = (starts[:-1] + starts[1:]) / 2
        kept = {g.connection_id for g in report.gateways}
        for connection_id in list(self.curves):
            if connection_id not in kept:
                for plot, curve in zip(self.plots, self.curves.pop(connection_id), strict=True):
                    plot.removeItem(curve)
        tops = [0.0, 0.0, 0.0]
        for gateway in report.gateways:
            curves = self._curves_of(gateway.connection_id)
            for n, values in enumerate(series(gateway)):
                finite = values[np.isfinite(values)]
                if finite.size:
                    curves[n].setData(t, values, connect="finite")
                    tops[n] = max(tops[n], float(finite.max()))
                else:  # nothing to draw (and pyqtgraph warns about an all-gaps curve)
                    curves[n].setData(EMPTY, EMPTY)
        for plot in self.plots:
            plot.setXRange(float(starts[0]), float(starts[-1]), padding=0)
            show_time_in(plot, self.zone)
        self.success_plot.setYRange(0, 100, padding=0.05)
        self.latency_plot.setYRange(0, nice_ceiling(tops[1]), padding=0.05)
        self.fees_plot.setYRange(0, nice_ceiling(tops[2]), padding=0.05)

    def _curves_of(
        self, connection_id: int
    ) -> tuple[pg.PlotDataItem, pg.PlotDataItem, pg.PlotDataItem]:
        colour = self.colours[connection_id]
        existing = self.curves.get(connection_id)
        if existing is None:
            made = []
            for plot in self.plots:
                # Dots as well as lines: an hour with attempts between two without is a point.
                curve = plot.plot(symbol="o", symbolSize=4)
                curve.setClipToView(True)
                made.append(curve)
            existing = self.curves[connection_id] = (made[0], made[1], made[2])
        for curve in existing:
            curve.setPen(pg.mkPen(colour, width=1))
            curve.setSymbolPen(pg.mkPen(colour, width=1))
            curve.setSymbolBrush(pg.mkBrush(colour))
        return existing

    # --- theme ----------------------------------------------------------------------------------

    def _apply_theme(self) -> None:
        for plot in self.plots:
            theme_plot(plot, self.palette())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()


def name_days(axis: pg.DateAxisItem) -> None:
    """Days on the time axis as "17 Mar" rather than pyqtgraph's bare "17" (a week or more)."""
    from pyqtgraph.graphicsItems import DateAxisItem as dates

    axis.zoomLevels[5 * dates.DAY_SPACING] = dates.ZoomLevel(
        [
            dates.TickSpec(dates.MONTH_SPACING, dates.makeMStepper(1), "%b"),
            dates.TickSpec(
                dates.DAY_SPACING, dates.makeSStepper(dates.DAY_SPACING), "%d %b", autoSkip=[1, 7]
            ),
        ],
        "00 Mmm",
    )


def series(gateway: GatewayFigures) -> tuple[Floats, Floats, Floats]:
    """A gateway's success rate (%), p95 answer time (ms) and fees (%) per bucket; NaN where a
    bucket has no such figure, so the graph shows a gap rather than a made-up zero."""

    def values(figure: list[float | None]) -> Floats:
        return np.array([math.nan if v is None else v for v in figure], dtype=np.float64)

    buckets = gateway.buckets
    return (
        values([b.success_percent for b in buckets]),
        values([b.p95_ms for b in buckets]),
        values([b.fee_percent for b in buckets]),
    )
