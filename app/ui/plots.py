"""Time plots as the app draws them: a date axis, no mouse panning or menus, ranges set by the
page (never auto-found while painting), and colours that follow the theme."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pyqtgraph as pg
from PySide6.QtGui import QPalette

LEFT_AXIS_WIDTH = 64


def time_plot(label: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
    plot.setMenuEnabled(False)
    plot.setMouseEnabled(x=False, y=False)
    plot.hideButtons()
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.setLabel("left", label)
    plot.setMinimumHeight(120)
    # A fixed width: tick labels growing from "900" to "1200" must not re-lay out the plot.
    plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
    plot.getPlotItem().enableAutoRange(enable=False)
    return plot


def theme_plot(plot: pg.PlotWidget, palette: QPalette) -> None:
    """Background, axes and the axis label in the palette's colours (call again when the
    palette changes)."""
    plot.setBackground(palette.base().color())
    for axis in ("left", "bottom"):
        plot.getAxis(axis).setPen(palette.mid().color())
        plot.getAxis(axis).setTextPen(palette.text().color())  # after setPen: it colours labels
    label = plot.getAxis("left").labelText
    plot.setLabel("left", label, color=palette.text().color().name())


def show_time_in(plot: pg.PlotWidget, zone: ZoneInfo) -> None:
    """Times on the plot's axis in `zone` (the school's, like everywhere else in the app)."""
    offset = datetime.now(zone).utcoffset() or timedelta(0)
    axis = plot.getAxis("bottom")
    if isinstance(axis, pg.DateAxisItem):
        # pyqtgraph counts the offset in seconds west of UTC, like time.timezone.
        axis.utcOffset = -offset.total_seconds()
