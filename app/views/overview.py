"""Overview: the school at a glance — people, this week's lessons, money owed, the next two
weeks of teaching."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QVBoxLayout, QWidget

from app.domain.school import SchoolOverview
from app.services.school import (
    TOPIC_GUARDIANS,
    TOPIC_INVOICES,
    TOPIC_LESSONS,
    TOPIC_ROOMS,
    TOPIC_STUDENTS,
    TOPIC_TEACHERS,
)
from app.ui.bridge import EngineBridge
from app.ui.formatting import day, totals, weekday
from app.ui.page import Page
from app.ui.theme import DOWN, HEALTHY


class Card(QFrame):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.setObjectName("Card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 12)
        self.value = QLabel("—")
        self.value.setObjectName("CardValue")
        self.label = QLabel(label)
        self.label.setObjectName("CardLabel")
        self.detail = QLabel("")
        self.detail.setObjectName("Muted")
        self.detail.setWordWrap(True)
        layout.addWidget(self.value)
        layout.addWidget(self.label)
        layout.addWidget(self.detail)

    def set(self, value: str, detail: str = "", color: str | None = None) -> None:
        self.value.setText(value)
        self.detail.setText(detail)
        self.value.setStyleSheet(f"color: {color};" if color else "")


class OverviewPage(Page):
    key = "overview"
    title = "Overview"
    icon_name = "overview"
    topics = (
        TOPIC_STUDENTS,
        TOPIC_GUARDIANS,
        TOPIC_TEACHERS,
        TOPIC_ROOMS,
        TOPIC_LESSONS,
        TOPIC_INVOICES,
    )

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.overview: SchoolOverview | None = None
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        self.subtitle = QLabel()
        self.subtitle.setObjectName("Muted")
        layout.addWidget(self.subtitle)
        grid = QGridLayout()
        grid.setSpacing(12)
        self.students = Card("active students")
        self.teachers = Card("teachers")
        self.week = Card("lessons this week")
        self.open = Card("open invoices")
        self.overdue = Card("overdue invoices")
        for column, card in enumerate(
            (self.students, self.teachers, self.week, self.open, self.overdue)
        ):
            grid.addWidget(card, 0, column)
        layout.addLayout(grid)

        heading = QLabel("Lessons in the next 14 days")
        heading.setObjectName("EmptyTitle")
        layout.addSpacing(8)
        layout.addWidget(heading)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=False, y=True, alpha=0.2)
        self.plot.setMinimumHeight(240)
        self.bars = pg.BarGraphItem(
            x=np.arange(14), height=np.zeros(14), width=0.7, brush="#1f6feb"
        )
        self.plot.addItem(self.bars)
        layout.addWidget(self.plot, 1)
        self._apply_theme()

    def _apply_theme(self) -> None:
        palette = self.palette()
        self.plot.setBackground(palette.base().color())
        text = palette.text().color()
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).setTextPen(text)
            self.plot.getAxis(axis).setPen(palette.mid().color())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_theme()

    async def load(self) -> None:
        services = self.bridge.services
        overview = await self.bridge.call(services.school.overview, datetime.now(UTC))
        self.overview = overview
        if overview.is_empty:
            self.states.show_empty(
                "Welcome! Your school is empty",
                "Start by adding your students and teachers, one by one or from a spreadsheet "
                "(CSV). Lessons and invoices come next. Not ready yet? Look around a demo school "
                "first; it is kept apart from your own data.",
                [
                    ("Add students", lambda: self.navigate.emit("students")),
                    ("Add teachers", lambda: self.navigate.emit("teachers")),
                    ("Explore a demo school", self.demo_requested.emit),
                ]
                if not services.config.demo
                else [],
            )
            return
        self.show_overview(overview)
        self.states.show_content()

    def show_overview(self, overview: SchoolOverview) -> None:
        settings = self.bridge.services.settings
        locale = settings.get("school.locale")
        first_day = overview.lessons_per_day[0][0]
        self.subtitle.setText(f"{settings.get('school.name')} · {day(first_day, locale)}")
        self.students.set(str(overview.active_students), f"{overview.guardians} guardians")
        self.teachers.set(str(overview.active_teachers), f"{overview.rooms} rooms")
        self.week.set(
            str(overview.lessons_this_week),
            f"{overview.lesson_hours_this_week:.1f} hours of teaching",
        )
        open_count = sum(count for _, count, _ in overview.open_invoices)
        self.open.set(
            str(open_count),
            totals([(currency, total) for currency, _, total in overview.open_invoices], locale),
        )
        overdue_count = sum(count for _, count, _ in overview.overdue_invoices)
        self.overdue.set(
            str(overdue_count),
            totals([(currency, total) for currency, _, total in overview.overdue_invoices], locale)
            if overdue_count
            else "nothing overdue",
            DOWN if overdue_count else HEALTHY,
        )
        counts = np.array([count for _, count in overview.lessons_per_day], dtype=float)
        self.bars.setOpts(height=counts)
        labels = [(i, weekday(d, locale)) for i, (d, _) in enumerate(overview.lessons_per_day)]
        self.plot.getAxis("bottom").setTicks([labels[::2], labels])
        self.plot.setXRange(-0.6, len(counts) - 0.4, padding=0)
        self.plot.setYRange(0, max(float(counts.max()) * 1.15, 5), padding=0)
        self.plot.getAxis("bottom").setStyle(tickTextOffset=6)
