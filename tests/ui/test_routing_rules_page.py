"""The Routing rules page: the administrator's rules in the order they are checked, added and
changed in a dialog that says what is wrong beside each field, moved, and removed."""

from __future__ import annotations

import asyncio

from pytestqt.qtbot import QtBot

from app.domain.routing_rules import RuleDraft
from app.ui.main_window import MainWindow
from app.views.routing_rules import RoutingRulesPage, RuleDialog
from tests.ui.conftest import Gui


def gateway(gui: Gui, name: str) -> int:
    record = gui.call(
        gui.bridge.services.connections.add,
        "sandbox-payments",
        name,
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2},
        {"api_key": "k"},
    )
    return int(record.id)


def open_rules(gui: Gui, window: MainWindow) -> RoutingRulesPage:
    page: RoutingRulesPage = window.show_page("routing-rules")  # type: ignore[assignment]
    gui.run(page.settle())
    return page


def test_without_gateways_the_page_says_to_connect_one(gui: Gui, window: MainWindow) -> None:
    page = open_rules(gui, window)
    assert page.states.state == "empty"
    assert not page.add_button.isEnabled()


def test_a_rule_is_added_in_the_dialog_and_listed_in_words(
    gui: Gui, window: MainWindow, qtbot: QtBot
) -> None:
    local = gateway(gui, "Local cards")
    gateway(gui, "Abroad cards")
    page = open_rules(gui, window)
    assert page.states.state == "empty"
    task = asyncio.ensure_future(page.edit(None))
    dialog = gui.find(RuleDialog, page)
    dialog.currency.setCurrentText("USD")
    qtbot.keyClicks(dialog.min_amount, "10.555")
    assert gui.run(dialog.submit()) is False  # no gateway ticked, too many decimals
    assert "Choose at least one gateway" in dialog.error_text("gateways")
    assert "too many decimals" in dialog.error_text("min_amount")
    dialog.min_amount.setText("1,000")
    item = next(
        dialog.gateways.item(row)
        for row in range(dialog.gateways.count())
        if dialog.gateways.item(row).text() == "Local cards"
    )
    item.setCheckState(item.checkState().Checked)
    qtbot.keyClicks(dialog.note, "large fees stay local")
    gui.save(dialog, "routing-rule-dialog")
    assert gui.run(dialog.submit()) is True
    saved = gui.run(task)
    assert saved is not None
    assert saved.gateways == (local,)
    assert page.states.state == "content"
    assert page.model.rowCount() == 1
    texts = [page.model.index(0, column).data() for column in range(4)]
    assert texts == ["1", "USD payments from $1,000.00", "Local cards", "large fees stay local"]


def test_rules_move_and_are_removed_after_asking(gui: Gui, window: MainWindow) -> None:
    local = gateway(gui, "Local cards")
    routing = gui.bridge.services.routing
    gui.call(routing.save_rule, RuleDraft((local,), currency="USD"))
    second = gui.call(routing.save_rule, RuleDraft((local,), currency="ZAR"))
    page = open_rules(gui, window)
    assert page.table.select_key(second.id)
    assert page.up_button.isEnabled()
    assert not page.down_button.isEnabled()
    gui.run(page.move(-1))
    assert [rule.currency for rule in gui.call(routing.rules)] == ["ZAR", "USD"]
    assert page.table.current_record().id == second.id
    assert [page.model.index(row, 1).data() for row in range(2)] == ["ZAR payments", "USD payments"]
    shown = [page.table.proxy.index(row, 1).data() for row in range(2)]
    assert shown == ["ZAR payments", "USD payments"]
    gui.save(page, "routing-rules")
    task = asyncio.ensure_future(page.remove(page.table.current_record()))
    gui.answer(page, "Remove")
    gui.run(task)
    assert [rule.currency for rule in gui.call(routing.rules)] == ["USD"]
    assert page.model.rowCount() == 1
