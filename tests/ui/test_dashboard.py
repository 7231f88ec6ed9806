"""The dashboard: connecting a provider from the generated dialog, cards, live graphs, actions."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLineEdit, QPushButton
from pytestqt.qtbot import QtBot

from app.ui import tasks
from app.ui.connect_dialog import ConnectDialog
from app.ui.main_window import MainWindow
from app.views.dashboard import DashboardPage, nice_ceiling
from app.views.request_log import RequestLogPage
from tests.ui.conftest import Gui

FAST = {"latency_ms": "1", "latency_p95_ms": "2", "error_rate": "0"}


def connect_sandbox(gui: Gui, name: str = "Sandbox Cards") -> int:
    record = gui.call(
        gui.bridge.services.connections.add,
        "sandbox-payments",
        name,
        FAST,
        {"api_key": "sk_sandbox_ui"},
    )
    return int(record.id)


def test_without_connections_the_dashboard_offers_to_connect_one(
    gui: Gui, window: MainWindow
) -> None:
    page: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
    gui.run(page.settle())
    assert page.states.state == "empty"
    labels = [button.text() for button in page.states.findChildren(QPushButton)]
    assert "Connect a provider…" in labels
    gui.save(window, "dashboard-empty")


def test_a_provider_is_tested_then_connected_from_the_generated_dialog(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    page: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
    gui.run(page.settle())
    opening = tasks.start(page.open_connect(None))
    dialog = gui.find(ConnectDialog, page)
    dialog.kind.setCurrentIndex(dialog.kind.findData("sandbox-payments"))
    key = dialog._editors["api_key"]
    assert isinstance(key, QLineEdit)
    assert key.echoMode() is QLineEdit.EchoMode.Password
    dialog.name.setText("Card payments")
    assert dialog.check_every.value() == 60  # the kind's default
    dialog.check_every.setValue(300)
    key.setText("sk_sandbox_typed")
    for field, value in FAST.items():
        dialog._editors[field].setText(value)  # type: ignore[attr-defined]
    result = gui.run(dialog.run_test())
    assert result is not None
    assert result.ok
    assert dialog.test_result.text().startswith("✓ Sandbox payment gateway answered")
    gui.save(dialog, "connect-dialog-tested")
    assert gui.call(gui.bridge.services.connections.connections) == []  # testing saved nothing
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    saved = gui.run(opening)
    assert saved.name == "Card payments"
    assert saved.health_interval == 300
    gui.wait_until(lambda: saved.id in page.cards)
    assert page.selected == saved.id
    gui.save(window, "dashboard-one-connection")


def test_bad_settings_are_shown_beside_their_fields(gui: Gui, window: MainWindow) -> None:
    page: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
    gui.run(page.settle())
    tasks.start(page.open_connect(None))
    dialog = gui.find(ConnectDialog, page)
    dialog.kind.setCurrentIndex(dialog.kind.findData("sandbox-payments"))
    dialog._editors["error_rate"].setText("2")  # type: ignore[attr-defined]
    dialog._editors["outages"].setText("now and then")  # type: ignore[attr-defined]
    assert gui.run(dialog.submit()) is False
    assert dialog.error_text("name") == "Give the connection a name."
    assert dialog.error_text("api_key") == "API key is required."
    assert "at most 1" in dialog.error_text("error_rate")
    assert "every 30 min for 2 min" in dialog.error_text("outages")
    dialog.reject()


def test_choosing_paypal_asks_for_paypal_s_credentials(gui: Gui, window: MainWindow) -> None:
    page: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
    gui.run(page.settle())
    tasks.start(page.open_connect(None))
    dialog = gui.find(ConnectDialog, page)
    dialog.kind.setCurrentIndex(dialog.kind.findData("paypal"))
    environment = dialog._editors["environment"]
    assert isinstance(environment, QComboBox)
    assert environment.currentText() == "sandbox"
    secret = dialog._editors["client_secret"]
    assert isinstance(secret, QLineEdit)
    assert secret.echoMode() is QLineEdit.EchoMode.Password
    assert "api_key" not in dialog._editors
    dialog.name.setText("PayPal")
    dialog._editors["client_id"].setText("AeClient")  # type: ignore[attr-defined]
    assert gui.run(dialog.submit()) is False
    assert dialog.error_text("client_secret") == "Secret is required."
    assert dialog.error_text("webhook_id") == ""  # pasted later, once PayPal shows it
    gui.save(dialog, "connect-dialog-paypal")
    # Another kind's fields replace PayPal's, and its problems are shown beside them.
    dialog.kind.setCurrentIndex(dialog.kind.findData("sandbox-payments"))
    assert gui.run(dialog.submit()) is False
    assert dialog.error_text("api_key") == "API key is required."
    assert dialog.error_text("client_secret") == ""
    dialog.reject()


def test_live_traffic_reaches_the_selected_connections_graphs(gui: Gui, window: MainWindow) -> None:
    connection = connect_sandbox(gui)
    page: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
    gui.run(page.settle())
    assert page.selected == connection
    provider = gui.call(gui.bridge.services.connections.provider, connection)

    async def traffic() -> None:
        for _ in range(5):
            await provider.client.call(provider.spec.health)

    gui.run(gui.bridge.call(traffic))

    def plotted_points() -> int:
        _x, y = page.avg_curve.getData()
        return 0 if y is None else sum(1 for value in y if value == value)  # NaN is a gap

    # The engine closes each second and sends it; the page draws it within 100 ms.
    gui.wait_until(lambda: plotted_points() >= 1, timeout=5)


def test_a_card_pauses_tests_and_opens_its_log(gui: Gui, window: MainWindow, qtbot: QtBot) -> None:
    connection = connect_sandbox(gui)
    page: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
    gui.run(page.settle())
    card = page.cards[connection]
    gui.run(page.act(connection, "test"))
    assert "Test: answered in" in card.note.text()
    qtbot.mouseClick(card.buttons["pause"], Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: card.buttons["pause"].text() == "Resume")
    assert "Paused" in card.status.text()
    qtbot.mouseClick(card.buttons["logs"], Qt.MouseButton.LeftButton)
    gui.wait_until(lambda: window.current_page.key == "requests")
    log_page: RequestLogPage = window.current_page  # type: ignore[assignment]
    gui.run(log_page.settle())
    gui.wait_until(lambda: log_page.connection.currentData() == connection)
    gui.wait_until(lambda: log_page.model.rowCount() >= 1)
    gui.save(window, "request-log")


def test_the_request_log_can_show_only_problems(gui: Gui, window: MainWindow) -> None:
    connection = connect_sandbox(gui)
    gui.call(gui.bridge.services.connections.test, connection)
    gui.call(gui.bridge.services.connections.hold_open, connection)
    gui.call(gui.bridge.services.connections.test, connection)  # refused: breaker held open
    gui.call(gui.bridge.services.requests.flush)
    page: RequestLogPage = window.show_page("requests")  # type: ignore[assignment]
    gui.run(page.settle())
    assert page.model.rowCount() == 2
    page.problems.setChecked(True)
    gui.wait_until(lambda: page.model.rowCount() == 1)
    assert page.model.record(0).error_class == "breaker_open"


def test_longer_ranges_read_hourly_history(gui: Gui, window: MainWindow) -> None:
    connect_sandbox(gui)
    page: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
    gui.run(page.settle())
    page.range_buttons.button(7 * 86_400).click()
    gui.wait_until(lambda: (page.selected, 7 * 86_400) in page._history)
    t, *_ = page._history[(page.selected, 7 * 86_400)][1]
    assert len(t) >= 7 * 24


@pytest.mark.parametrize(
    ("highest", "top"),
    [
        (0.0, 1.0),
        (float("nan"), 1.0),
        (0.9, 1.0),
        (1.2, 2.0),
        (2.3, 2.5),
        (430.0, 500.0),
        (1900.0, 2000.0),
        (96.0, 200.0),
    ],
)
def test_a_graph_tops_out_at_a_round_number_a_little_above_its_highest_point(
    highest: float, top: float
) -> None:
    assert nice_ceiling(highest) == top
