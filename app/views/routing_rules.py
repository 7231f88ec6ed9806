"""Routing rules: the administrator's say over where payments go. Rules are checked from the
top; the first that matches a payment decides which gateways may take it, preferred first.
Payments no rule matches go wherever the router expects the best outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.currencies import EXPONENTS
from app.domain.money import Money
from app.domain.routing_rules import RoutingRule, RuleDraft
from app.services.connections import TOPIC as TOPIC_CONNECTIONS
from app.services.connections import ConnectionRecord
from app.services.routing import TOPIC_RULES
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import RecordDialog, confirm, run_dialog
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable

ANY = "Any"
METHODS = ("card", "ach", "paypal", "ecocash", "onemoney")
COMMON = ("USD", "ZWG", "ZAR", "BWP", "EUR", "GBP")


class RuleDialog(RecordDialog):
    """Add or change a rule: which payments (all conditions optional) and which gateways, in
    order of preference."""

    def __init__(
        self,
        save: Callable[[RuleDraft], Awaitable[RoutingRule]],
        gateways: Sequence[ConnectionRecord],
        locale: str,
        rule: RoutingRule | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Change routing rule" if rule else "New routing rule", save, parent)
        self.setMinimumWidth(520)
        self.locale = locale

        self.currency = QComboBox()
        self.currency.addItem(ANY)
        self.currency.addItems([*COMMON, *sorted(set(EXPONENTS) - set(COMMON))])
        self.currency.setCurrentText(rule.currency if rule and rule.currency else ANY)
        self.add_field("currency", "Currency", self.currency)
        self.method = QComboBox()
        self.method.setEditable(True)
        self.method.addItems([ANY, *METHODS])
        self.method.setCurrentText(rule.method if rule and rule.method else ANY)
        self.add_field("method", "Method", self.method)
        self.country = QLineEdit(rule.country if rule else "")
        self.country.setPlaceholderText("any country")
        self.country.setMaxLength(2)
        self.add_field(
            "country", "Payer's country", self.country, "Two letters, like ZW or ZA; or empty."
        )
        band = QHBoxLayout()
        self.min_amount = QLineEdit(self._amount(rule, rule.min_minor) if rule else "")
        self.min_amount.setPlaceholderText("no lowest")
        self.max_amount = QLineEdit(self._amount(rule, rule.max_minor) if rule else "")
        self.max_amount.setPlaceholderText("no highest")
        band.addWidget(self.min_amount)
        band.addWidget(QLabel("to"))
        band.addWidget(self.max_amount)
        holder = QWidget()
        holder.setLayout(band)
        band.setContentsMargins(0, 0, 0, 0)
        self.add_field("min_amount", "Amounts", holder, "In the rule's currency; both optional.")
        self._errors["max_amount"] = self._errors["min_amount"]

        self.gateways = QListWidget()
        self.gateways.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.gateways.setFixedHeight(120)
        chosen = list(rule.gateways) if rule else []
        names = {record.id: record.name for record in gateways}
        for gateway_id in [*chosen, *(r.id for r in gateways if r.id not in chosen)]:
            item = QListWidgetItem(names.get(gateway_id, f"connection {gateway_id} (removed)"))
            item.setData(Qt.ItemDataRole.UserRole, gateway_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if gateway_id in chosen else Qt.CheckState.Unchecked
            )
            self.gateways.addItem(item)
        order = QVBoxLayout()
        order.setContentsMargins(0, 0, 0, 0)
        order.addWidget(self.gateways)
        buttons = QHBoxLayout()
        for text, step in (("Prefer ↑", -1), ("Less ↓", 1)):
            button = QPushButton(text)
            button.clicked.connect(lambda _checked=False, step=step: self.move_gateway(step))
            buttons.addWidget(button)
        buttons.addStretch(1)
        order.addLayout(buttons)
        box = QWidget()
        box.setLayout(order)
        self.add_field(
            "gateways",
            "Gateways",
            box,
            "Tick the gateways these payments may go to; the top one is preferred when they "
            "are about as likely to succeed.",
        )
        self.note = QLineEdit(rule.note if rule else "")
        self.note.setPlaceholderText("why this rule exists (optional)")
        self.add_field("note", "Note", self.note)

    def _amount(self, rule: RoutingRule, minor: int | None) -> str:
        return Money(minor, rule.currency).for_input(self.locale) if minor is not None else ""

    def move_gateway(self, step: int) -> None:
        row = self.gateways.currentRow()
        target = row + step
        if row < 0 or not 0 <= target < self.gateways.count():
            return
        item = self.gateways.takeItem(row)
        self.gateways.insertItem(target, item)
        self.gateways.setCurrentRow(target)

    def chosen(self) -> tuple[int, ...]:
        items = (self.gateways.item(row) for row in range(self.gateways.count()))
        return tuple(
            int(item.data(Qt.ItemDataRole.UserRole))
            for item in items
            if item is not None and item.checkState() is Qt.CheckState.Checked
        )

    def draft(self) -> RuleDraft:
        currency = self.currency.currentText()
        method = self.method.currentText().strip()
        return RuleDraft(
            gateways=self.chosen(),
            currency="" if currency == ANY else currency,
            method="" if method in (ANY, "") else method,
            country=self.country.text().strip().upper(),
            min_amount=self.min_amount.text(),
            max_amount=self.max_amount.text(),
            note=self.note.text(),
            locale=self.locale,
        )


class RoutingRulesPage(Page):
    key = "routing-rules"
    title = "Routing rules"
    icon_name = "routing"
    topics = (TOPIC_RULES, TOPIC_CONNECTIONS)

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.names: dict[int, str] = {}
        self.gateway_records: list[ConnectionRecord] = []
        self.add_button = QPushButton("New rule…")
        self.add_button.setToolTip("Add a rule (Ctrl+N)")
        self.add_button.clicked.connect(lambda: tasks.start(self.edit(None), owner=self))
        self.actions.addWidget(self.add_button)
        QShortcut(QKeySequence.StandardKey.New, self, activated=self.add_button.click)

        intro = QLabel(
            "Rules are checked from the top. The first rule that matches a payment decides "
            "which gateways may take it, the first of them preferred. Payments that no rule "
            "matches go to the gateway most likely to succeed at the lowest cost."
        )
        intro.setWordWrap(True)
        intro.setObjectName("Muted")
        self.model: RecordModel[RoutingRule] = RecordModel(self.columns())
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)  # the order is the meaning
        self.table.proxy.sort(-1)  # as the rules come, not as a column sorts them
        self.table.opened.connect(lambda rule: tasks.start(self.edit(rule), owner=self))
        self.table.delete_requested.connect(lambda rule: tasks.start(self.remove(rule), owner=self))
        self.table.selection_changed.connect(self._selected)

        row = QHBoxLayout()
        self.edit_button = QPushButton("Change…")
        self.edit_button.clicked.connect(
            lambda: tasks.start(self.edit(self.table.current_record()), owner=self)
        )
        self.up_button = QPushButton("Move up")
        self.up_button.setToolTip("Check this rule earlier (Ctrl+Up)")
        self.up_button.clicked.connect(lambda: tasks.start(self.move(-1), owner=self))
        self.down_button = QPushButton("Move down")
        self.down_button.setToolTip("Check this rule later (Ctrl+Down)")
        self.down_button.clicked.connect(lambda: tasks.start(self.move(1), owner=self))
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(
            lambda: tasks.start(self.remove(self.table.current_record()), owner=self)
        )
        QShortcut(QKeySequence("Ctrl+Up"), self, activated=self.up_button.click)
        QShortcut(QKeySequence("Ctrl+Down"), self, activated=self.down_button.click)
        self.notice = QLabel()
        self.notice.setObjectName("Muted")
        row.addWidget(self.notice, 1)
        for button in (self.edit_button, self.up_button, self.down_button, self.remove_button):
            row.addWidget(button)
        self._selected(None)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    def columns(self) -> list[Column[RoutingRule]]:
        return [
            Column("Order", lambda rule: str(rule.position + 1), right=True),
            Column("Payments", lambda rule: rule.conditions(self.locale), stretch=True),
            Column("May go to, preferred first", self._gateway_names, stretch=True),
            Column("Note", lambda rule: rule.note, stretch=True),
        ]

    def _gateway_names(self, rule: RoutingRule) -> str:
        return " → ".join(
            self.names.get(gateway, f"connection {gateway} (removed)") for gateway in rule.gateways
        )

    async def load(self) -> None:
        services = self.bridge.services
        records = await self.bridge.call(services.connections.connections)
        self.gateway_records = [r for r in records if "payments" in r.spec.capabilities]
        self.names = {record.id: record.name for record in records}
        rules: list[RoutingRule] = await self.bridge.call(services.routing.rules)
        self.add_button.setEnabled(bool(self.gateway_records))
        if not rules:
            if self.gateway_records:
                self.states.show_empty(
                    "No routing rules",
                    "Every payment goes to the gateway most likely to succeed at the lowest "
                    "cost, judged from recent payments. Add a rule to keep some payments at "
                    "particular gateways, say large ones, or one currency.",
                    [("New rule…", self.add_button.click)],
                )
            else:
                self.states.show_empty(
                    "No payment gateways connected",
                    "Rules choose between payment gateways; connect one first.",
                    [("Open the overview", lambda: self.navigate.emit("overview"))],
                )
            return
        self.model.set_records(rules)
        self.states.show_content()
        if self.table.current_record() is None:
            self.table.selectRow(0)
        self._selected(self.table.current_record())

    def _selected(self, rule: RoutingRule | None) -> None:
        count = self.model.rowCount()
        for button in (self.edit_button, self.remove_button):
            button.setEnabled(rule is not None)
        self.up_button.setEnabled(rule is not None and rule.position > 0)
        self.down_button.setEnabled(rule is not None and rule.position < count - 1)

    async def edit(self, rule: RoutingRule | None) -> RoutingRule | None:
        routing = self.bridge.services.routing

        async def save(draft: RuleDraft) -> RoutingRule:
            saved: RoutingRule = await self.bridge.call(
                routing.save_rule, draft, rule.id if rule else None
            )
            return saved

        dialog = RuleDialog(save, self.gateway_records, self.locale, rule, self)
        if not await run_dialog(dialog):
            return None
        saved: RoutingRule = dialog.saved
        self.notice.setText("Saved; the next payment follows it.")
        await self.refresh()
        self.table.select_key(saved.id)
        return saved

    async def move(self, step: int) -> None:
        rule = self.table.current_record()
        if rule is None:
            return
        routing = self.bridge.services.routing
        await self.bridge.call(routing.move_rule, rule.id, rule.position + step)
        await self.refresh()
        self.table.select_key(rule.id)

    async def remove(self, rule: RoutingRule | None) -> None:
        if rule is None:
            return
        asked = await confirm(
            self,
            "Remove rule",
            f"Remove the rule for {rule.conditions(self.locale)}? Those payments will go "
            "wherever the next rule, or the router, sends them.",
            "Remove",
        )
        if not asked:
            return
        await self.bridge.call(self.bridge.services.routing.remove_rule, rule.id)
        self.notice.setText("Removed.")
        await self.refresh()
