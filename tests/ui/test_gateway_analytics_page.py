"""The Gateway analytics page: each gateway's figures in a table, three graphs over time with a
line per gateway, the empty state, choosing the period, and refreshing when payments change.

The page is not in the main window yet (the lead adds it), so these tests show it on its own."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.services.gateway_stats import Period
from app.services.payments import TOPIC
from app.ui.theme import ThemeController
from app.views.gateway_analytics import GATEWAY_COLOURS, GatewayAnalyticsPage
from tests.services.test_gateway_stats import Tried, insert
from tests.ui.conftest import Gui

PAGE_SIZE = (1080, 760)  # the main window's page area at its usual 1280 × 800


def add_gateway(gui: Gui, name: str) -> int:
    services = gui.bridge.services
    record = gui.call(services.connections.add, "sandbox-payments", name, {}, {"api_key": "k"})
    return int(record.id)


def set_school(gui: Gui, zone: str = "UTC", locale: str = "en_US") -> None:
    settings = gui.bridge.services.settings
    gui.call(settings.set, "school.timezone", zone)
    gui.call(settings.set, "school.locale", locale)


def open_page(gui: Gui, qtbot: QtBot, period: Period | None = None) -> GatewayAnalyticsPage:
    page = GatewayAnalyticsPage(gui.bridge)
    qtbot.addWidget(page)
    if period is not None:
        page.period.setCurrentIndex(page.period.findData(period.value))
    page.resize(*PAGE_SIZE)
    page.show()
    gui.run(page.settle())
    return page


def row_texts(page: GatewayAnalyticsPage, row: int) -> list[str]:
    model = page.table.model()
    return [model.index(row, column).data() for column in range(model.columnCount())]


def finite_points(curve: object) -> tuple[int, int]:
    """How many points a curve has, and how many of them are drawn (not gaps)."""
    _x, y = curve.getData()  # type: ignore[attr-defined]
    return (0, 0) if y is None else (len(y), int(np.isfinite(y).sum()))


def test_without_payments_the_page_says_where_they_come_from(gui: Gui, qtbot: QtBot) -> None:
    add_gateway(gui, "Cards")
    page = open_page(gui, qtbot)
    assert page.states.state == "empty"
    assert page.states._empty_title.text() == "No payments yet"
    assert "Payments or a billing run" in page.states._empty_text.text()


def test_the_table_and_graphs_show_each_gateway_s_figures(gui: Gui, qtbot: QtBot) -> None:
    set_school(gui)
    cards = add_gateway(gui, "Cards")
    add_gateway(gui, "Mobile money")  # no attempts: listed, with nothing to draw
    now = datetime.now(UTC)
    gui.call(
        insert,
        gui.bridge.services,
        Tried(cards, now - timedelta(hours=1), latency_ms=100.0, fee_minor=300),
        Tried(cards, now - timedelta(hours=1), latency_ms=200.0, fee_minor=300),
        Tried(cards, now - timedelta(hours=5), latency_ms=300.0, fee_minor=300),
        Tried(cards, now - timedelta(hours=5), "failed", "technical", latency_ms=400.0),
    )

    page = open_page(gui, qtbot, Period.DAY)

    assert page.states.state == "content"
    headers = [
        page.model.headerData(n, Qt.Orientation.Horizontal) for n in range(page.model.columnCount())
    ]
    assert headers == [
        "Gateway",
        "Attempts",
        "Success rate",
        "Technical failures",
        "Answer time (p95)",
        "Fees",
        "Amount taken",
    ]
    assert row_texts(page, 0) == ["Cards", "4", "75.0 %", "1", "385 ms", "3.00 %", "$300.00"]
    assert row_texts(page, 1) == ["Mobile money", "0", "—", "0", "—", "—", "—"]
    success, latency, fees = page.curves[cards]
    assert [finite_points(curve) for curve in (success, latency, fees)] == [(24, 2)] * 3
    assert success.getData()[1][np.isfinite(success.getData()[1])].tolist() == [50.0, 100.0]
    idle = page.curves[page.report.gateways[1].connection_id]  # type: ignore[union-attr]
    assert [finite_points(curve) for curve in idle] == [(0, 0)] * 3  # nothing to draw
    # The same colour for a gateway in the table, the legend and its curves.
    assert page.colours[cards] == GATEWAY_COLOURS[0]
    assert success.opts["pen"].color().name() == GATEWAY_COLOURS[0]
    assert GATEWAY_COLOURS[0] in page.legend.text()
    assert page.model.index(0, 0).data(Qt.ItemDataRole.ForegroundRole).name() == GATEWAY_COLOURS[0]


def test_choosing_another_period_reads_the_figures_again(gui: Gui, qtbot: QtBot) -> None:
    set_school(gui)
    cards = add_gateway(gui, "Cards")
    gui.call(insert, gui.bridge.services, Tried(cards, datetime.now(UTC) - timedelta(days=3)))
    page = open_page(gui, qtbot, Period.DAY)
    assert row_texts(page, 0)[:2] == ["Cards", "0"]
    assert "No gateway was asked to take a payment in this period" in page.note.text()

    page.period.setFocus()
    qtbot.keyClick(page.period, Qt.Key.Key_Down)  # the keyboard reaches it: Last 7 days
    gui.run(page.settle())

    assert page.report is not None
    assert page.report.period is Period.WEEK
    assert row_texts(page, 0)[:2] == ["Cards", "1"]
    assert finite_points(page.curves[cards][0]) == (7 * 24, 1)

    page.period.setCurrentIndex(page.period.findData(Period.QUARTER.value))
    gui.run(page.settle())
    assert finite_points(page.curves[cards][0]) == (90, 1)


def test_a_new_payment_refreshes_the_page(gui: Gui, qtbot: QtBot) -> None:
    set_school(gui)
    cards = add_gateway(gui, "Cards")
    services = gui.bridge.services
    gui.call(insert, services, Tried(cards, datetime.now(UTC) - timedelta(hours=1)))
    page = open_page(gui, qtbot, Period.DAY)
    page.refresh_every = 0.0  # type: ignore[misc]  # at once, rather than within 5 s
    gui.call(insert, services, Tried(cards, datetime.now(UTC) - timedelta(hours=2)))
    services.events.publish(TOPIC, {"id": 0, "status": "succeeded"})
    gui.wait_until(lambda: row_texts(page, 0)[1] == "2")


# name, attempts per office hour, median and p95 answer time (ms), share taken, share declined,
# fee percent and fixed fee (cents): the demo's three sandboxes and their temperaments.
DEMO_GATEWAYS = (
    ("Sandbox Cards", 3.0, 90, 250, 0.95, 0.04, 2.9, 30),
    ("Sandbox EcoCash", 1.5, 450, 1800, 0.88, 0.06, 1.5, 0),
    ("Sandbox Bank Transfers", 1.0, 200, 600, 0.90, 0.02, 0.8, 50),
)


def demo_week(connections: list[int], now: datetime) -> list[Tried]:
    """A week of a music school's payments in Harare's office hours, Monday to Saturday."""
    rng = random.Random(2026)
    attempts: list[Tried] = []
    for hours_ago in range(7 * 24, 0, -1):
        hour = now - timedelta(hours=hours_ago)
        local = hour + timedelta(hours=2)  # Harare
        if local.weekday() == 6 or not 7 <= local.hour < 19:
            continue  # the office is closed
        for connection, plan in zip(connections, DEMO_GATEWAYS, strict=True):
            _name, rate, median, p95, taken, declined, percent, fixed = plan
            for _ in range(rng.randint(0, round(rate * 2))):
                at = hour + timedelta(minutes=rng.uniform(0, 59))
                latency = rng.lognormvariate(math.log(median), math.log(p95 / median) / 1.645)
                amount = rng.choice((1_500, 2_000, 2_500, 6_000, 7_500))
                draw = rng.random()
                if draw < taken:
                    fee = round(amount * percent / 100) + fixed
                    attempts.append(
                        Tried(connection, at, "succeeded", None, latency, amount, fee_minor=fee)
                    )
                elif draw < taken + declined:
                    attempts.append(Tried(connection, at, "failed", "soft_decline", latency))
                else:
                    attempts.append(Tried(connection, at, "failed", "technical", latency))
    return attempts


def test_screenshot_with_the_demo_school_s_gateways(
    gui: Gui, qtbot: QtBot, qapp: QApplication
) -> None:
    """The page as the demo school would see it after a week of payments, in the light theme
    (docs/screenshots/gateway-analytics.png is this picture)."""
    set_school(gui, "Africa/Harare", "en_ZW")
    connections = [add_gateway(gui, plan[0]) for plan in DEMO_GATEWAYS]
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    gui.call(insert, gui.bridge.services, *demo_week(connections, now))
    style, palette = qapp.styleSheet(), qapp.palette()
    ThemeController(qapp, "light")
    try:
        page = open_page(gui, qtbot, Period.WEEK)
        assert page.states.state == "content"
        assert [row_texts(page, n)[0] for n in range(3)] == [plan[0] for plan in DEMO_GATEWAYS]
        assert all(len(page.curves[c][0].getData()[0]) == 7 * 24 for c in connections)
        gui.save(page, "gateway-analytics")
    finally:  # later tests see the application as they would have
        qapp.setStyleSheet(style)
        qapp.setPalette(palette)
