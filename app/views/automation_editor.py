"""The automation editor: a name, the trigger that starts it, the conditions the event must
meet (rows of field, comparison and value, the fields offered being those the trigger's event
carries) and the actions to take (send a template, post a webhook, create a follow-up task).
Save checks the draft as the service does and shows each problem beside its part; a change
someone else saved meanwhile is refused in a sentence at the top."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.domain.messages import Channel
from app.services.automation_actions import (
    ACTION_KINDS,
    CREATE_TASK,
    GUARDIANS,
    MAX_TASK_DAYS,
    POST_WEBHOOK,
    RECIPIENTS,
    SEND_TEMPLATE,
    Action,
)
from app.services.automations import (
    MAX_ACTIONS,
    MAX_CONDITIONS,
    OPERATORS,
    Automation,
    AutomationDraft,
    Condition,
)
from app.services.domain_events import PayloadField, Trigger
from app.ui.dialogs import RecordDialog, line_edit

# The channels an automation's message may be sent on; "" lets each person's preferred one.
CHANNELS: tuple[tuple[str, str], ...] = (
    ("", "Each person's preferred channel"),
    (Channel.SMS.value, Channel.SMS.label),
    (Channel.EMAIL.value, Channel.EMAIL.label),
    (Channel.WHATSAPP.value, Channel.WHATSAPP.label),
)
_YES = frozenset({"yes", "y", "true", "on", "1"})
_NO = frozenset({"no", "n", "false", "off", "0"})


# --- condition values: typed as text, kept as the field's kind ------------------------------------


def parse_value(text: str, kind: str, op: str) -> Any:
    """What was typed as the value a condition compares with: a list for "is one of" (the
    parts between commas), a number for a number field, yes/no for a yes-or-no field; text
    that is none of these stays text, for the service to say what is wrong with it."""
    if op == "in":
        return [_one(part, kind) for part in text.split(",") if part.strip()]
    return _one(text, kind)


def _one(text: str, kind: str) -> Any:
    text = text.strip()
    if kind in ("number", "money"):
        if not text:
            return None
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                continue
        return text
    if kind == "bool":
        folded = text.casefold()
        if folded in _YES:
            return True
        if folded in _NO:
            return False
    return text


def value_text(value: Any) -> str:
    """A condition's value as it is typed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(value_text(item) for item in value)
    return str(value)


def value_hint(kind: str, op: str) -> str:
    if op == "in":
        return "values separated by commas"
    return {
        "number": "a number",
        "money": "in cents: 10000 is 100.00",
        "date": "a date like 2026-12-31",
        "datetime": "like 2026-12-31T17:00",
        "bool": "yes or no",
        "list": "one value",
    }.get(kind, "some text")


# --- rows ---------------------------------------------------------------------------------------


class ConditionRow(QWidget):
    """One condition: a field of the trigger's event, a comparison, a value.

    Signals:
        remove_requested(object): the row's Remove button was pressed (the row).
    """

    remove_requested = Signal(object)

    def __init__(
        self,
        fields: Sequence[PayloadField],
        condition: Condition | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._kinds: dict[str, str] = {}
        self.field = QComboBox()
        self.field.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.field.setMinimumContentsLength(18)
        self.field.setToolTip("What in the event to look at")
        self.op = QComboBox()
        for op, words in OPERATORS.items():
            self.op.addItem(words, op)
        self.value = QLineEdit()
        self.value.setMinimumWidth(150)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Drop this condition")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.field, 3)
        row.addWidget(self.op, 0)
        row.addWidget(self.value, 2)
        row.addWidget(self.remove_button, 0)
        self.set_fields(fields, condition.field if condition else None)
        if condition is not None:
            found = self.op.findData(condition.op)
            self.op.setCurrentIndex(max(found, 0))
            self.value.setText(value_text(condition.value))
        self.field.currentIndexChanged.connect(lambda _index: self._hint())
        self.op.currentIndexChanged.connect(lambda _index: self._hint())
        self._hint()

    def set_fields(self, fields: Sequence[PayloadField], keep: str | None = None) -> None:
        """Offer these fields (a new trigger's), keeping the one chosen if it is among them."""
        chosen = keep if keep is not None else self.field.currentData()
        self.field.blockSignals(True)
        self.field.clear()
        self._kinds = {}
        for payload_field in fields:
            self.field.addItem(payload_field.label, payload_field.path)
            self.field.setItemData(
                self.field.count() - 1, payload_field.path, Qt.ItemDataRole.ToolTipRole
            )
            self._kinds[payload_field.path] = payload_field.kind
        if chosen and self.field.findData(chosen) < 0:
            # Kept as it was, for the service to say it is not part of this trigger.
            self.field.addItem(f"{chosen} (not part of this trigger)", chosen)
        index = self.field.findData(chosen) if chosen else 0
        self.field.setCurrentIndex(max(index, 0))
        self.field.blockSignals(False)
        self._hint()

    def _hint(self) -> None:
        self.value.setPlaceholderText(value_hint(self.kind, str(self.op.currentData() or "")))

    @property
    def kind(self) -> str:
        return self._kinds.get(str(self.field.currentData() or ""), "text")

    def choose(self, path: str, op: str, value: str) -> None:
        """Set the row as a person would: a field, a comparison, a value typed."""
        self.field.setCurrentIndex(self.field.findData(path))
        self.op.setCurrentIndex(self.op.findData(op))
        self.value.setText(value)

    def condition(self) -> Condition:
        op = str(self.op.currentData() or "")
        return Condition(
            str(self.field.currentData() or ""), op, parse_value(self.value.text(), self.kind, op)
        )


class ActionRow(QWidget):
    """One action: what kind, and the fields that kind needs.

    Signals:
        remove_requested(object): the row's Remove button was pressed (the row).
    """

    remove_requested = Signal(object)

    def __init__(
        self, templates: Sequence[str], action: Action | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.kind = QComboBox()
        for kind, words in ACTION_KINDS.items():
            self.kind.addItem(words, kind)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Drop this action")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))

        # send_template
        self.template = QComboBox()
        self.template.addItem("Choose a template…", "")
        for name in templates:
            self.template.addItem(name, name)
        self.template.setToolTip("The message template to send; write them on the Templates page")
        self.channel = QComboBox()
        for value, label in CHANNELS:
            self.channel.addItem(label, value)
        self.channel.setToolTip("Send on this channel, or on the one each person prefers")
        self.to = QComboBox()
        for value, words in RECIPIENTS.items():
            self.to.addItem(words, value)
        self.to.setToolTip("Who gets the message")
        send = QWidget()
        send_layout = QHBoxLayout(send)
        send_layout.setContentsMargins(0, 0, 0, 0)
        send_layout.addWidget(self.template, 2)
        send_layout.addWidget(QLabel("by"))
        send_layout.addWidget(self.channel, 1)
        send_layout.addWidget(QLabel("to"))
        send_layout.addWidget(self.to, 2)

        # post_webhook
        self.event_type = line_edit("", "the webhook's event type, e.g. school.receipt_sent")
        self.event_type.setToolTip(
            "Sent to the school's outbound webhook endpoints and Zapier subscribers under this "
            "event type, with the event's details"
        )
        webhook = QWidget()
        webhook_layout = QHBoxLayout(webhook)
        webhook_layout.setContentsMargins(0, 0, 0, 0)
        webhook_layout.addWidget(QLabel("Event type"))
        webhook_layout.addWidget(self.event_type, 1)

        # create_task
        self.title = line_edit("", "e.g. Welcome call to the family of {student.first_name}")
        self.title.setToolTip(
            "The task's title; a field of the event in braces, like {invoice.number}, is filled in"
        )
        self.due_in_days = QSpinBox()
        self.due_in_days.setRange(0, MAX_TASK_DAYS)
        self.due_in_days.setSuffix(" days")
        self.due_in_days.setToolTip("When the task is due, counted from the day of the event")
        self.notes = line_edit("", "notes (optional)")
        task = QWidget()
        task_layout = QHBoxLayout(task)
        task_layout.setContentsMargins(0, 0, 0, 0)
        task_layout.addWidget(self.title, 3)
        task_layout.addWidget(QLabel("due in"))
        task_layout.addWidget(self.due_in_days)
        task_layout.addWidget(self.notes, 2)

        self.details = QStackedWidget()
        self._pages = {SEND_TEMPLATE: send, POST_WEBHOOK: webhook, CREATE_TASK: task}
        for page in self._pages.values():
            self.details.addWidget(page)
        self.details.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

        top = QHBoxLayout()
        top.addWidget(self.kind, 1)
        top.addWidget(self.remove_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 4)
        column.setSpacing(3)
        column.addLayout(top)
        column.addWidget(self.details)
        self.kind.currentIndexChanged.connect(lambda _index: self._show_kind())
        if action is not None:
            self._fill(action)
        self._show_kind()

    def _fill(self, action: Action) -> None:
        found = self.kind.findData(action.kind)
        self.kind.setCurrentIndex(max(found, 0))
        if action.template and self.template.findData(action.template) < 0:
            self.template.addItem(f"{action.template} (no such template)", action.template)
        self.template.setCurrentIndex(max(self.template.findData(action.template), 0))
        self.channel.setCurrentIndex(max(self.channel.findData(action.channel), 0))
        self.to.setCurrentIndex(max(self.to.findData(action.to), 0))
        self.event_type.setText(action.event_type)
        self.title.setText(action.title)
        self.due_in_days.setValue(max(action.due_in_days, 0))
        self.notes.setText(action.notes)

    def _show_kind(self) -> None:
        page = self._pages.get(str(self.kind.currentData()))
        if page is not None:
            self.details.setCurrentWidget(page)

    def action(self) -> Action:
        kind = str(self.kind.currentData() or "")
        if kind == SEND_TEMPLATE:
            return Action(
                kind,
                template=str(self.template.currentData() or ""),
                channel=str(self.channel.currentData() or ""),
                to=str(self.to.currentData() or GUARDIANS),
            )
        if kind == POST_WEBHOOK:
            return Action(kind, event_type=self.event_type.text().strip())
        return Action(
            kind,
            title=self.title.text().strip(),
            due_in_days=self.due_in_days.value(),
            notes=self.notes.text().strip(),
        )


class RowList(QWidget):
    """Rows one under another, an Add button, and a line said when there are none."""

    def __init__(
        self, add_text: str, empty_text: str, most: int, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.most = most
        self.rows: list[QWidget] = []
        self.empty = QLabel(empty_text)
        self.empty.setObjectName("Muted")
        self.empty.setWordWrap(True)
        self.add_button = QPushButton(add_text)
        self._rows = QVBoxLayout()
        self._rows.setContentsMargins(0, 0, 0, 0)
        self._rows.setSpacing(4)
        bottom = QHBoxLayout()
        bottom.addWidget(self.add_button)
        bottom.addStretch(1)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.empty)
        column.addLayout(self._rows)
        column.addLayout(bottom)
        self._changed()

    def append(self, row: QWidget) -> None:
        self.rows.append(row)
        self._rows.addWidget(row)
        row.show()  # now, not at the next turn of the event loop: what is shown is what is there
        row.remove_requested.connect(self.remove)  # type: ignore[attr-defined]
        self._changed()

    def remove(self, row: QWidget) -> None:
        if row in self.rows:
            self.rows.remove(row)
            self._rows.removeWidget(row)
            row.hide()
            row.deleteLater()
            self._changed()

    def _changed(self) -> None:
        self.empty.setVisible(not self.rows)
        self.add_button.setEnabled(len(self.rows) < self.most)


# --- the dialog ---------------------------------------------------------------------------------


class AutomationDialog(RecordDialog):
    """A new automation, or a change to one (a built-in recipe keeps its trigger)."""

    def __init__(
        self,
        save: Callable[[AutomationDraft], Awaitable[Automation]],
        triggers: Sequence[Trigger],
        templates: Sequence[str],
        automation: Automation | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(
            f"Change “{automation.name}”" if automation else "New automation", save, parent
        )
        self.setMinimumWidth(820)
        self._triggers = {trigger.type: trigger for trigger in triggers}
        self._templates = list(templates)

        self.name = line_edit(automation.name if automation else "", "e.g. Welcome new students")
        self.name.setMaxLength(200)
        self.add_field("name", "Name", self.name)
        self.description = line_edit(
            automation.description if automation else "", "What it is for, in a sentence"
        )
        self.add_field("description", "Description", self.description)

        self.trigger = QComboBox()
        self.trigger.addItem("Choose what starts it…", "")
        for trigger in triggers:
            self.trigger.addItem(trigger.label, trigger.type)
        if automation is not None:
            found = self.trigger.findData(automation.trigger)
            if found < 0:
                self.trigger.addItem(automation.trigger, automation.trigger)
                found = self.trigger.count() - 1
            self.trigger.setCurrentIndex(found)
        builtin = automation is not None and automation.builtin
        self.trigger.setEnabled(not builtin)
        self.add_field(
            "trigger",
            "When",
            self.trigger,
            "A built-in recipe keeps its trigger; make a new automation for another one."
            if builtin
            else "What happens at the school that starts it.",
        )

        self.conditions = RowList(
            "Add condition",
            "No conditions: it acts on every such event.",
            MAX_CONDITIONS,
        )
        self.conditions.add_button.clicked.connect(lambda: self.add_condition())
        self.add_field(
            "conditions",
            "Only if",
            self.conditions,
            "Every condition must hold. Amounts are in cents (10000 is 100.00).",
        )
        self.actions = RowList("Add action", "No actions yet: add at least one.", MAX_ACTIONS)
        self.actions.add_button.clicked.connect(lambda: self.add_action())
        self.add_field("actions", "Then", self.actions, "Done in this order.")

        self.enabled = QCheckBox("Switched on: it acts on events from when it is saved")
        self.enabled.setChecked(automation.enabled if automation else False)
        self.add_field("enabled", "", self.enabled)

        for condition in automation.conditions if automation else ():
            self.add_condition(condition)
        for action in automation.actions if automation else ():
            self.add_action(action)
        if automation is None:
            self.add_action()
        self.trigger.currentIndexChanged.connect(lambda _index: self._trigger_changed())

    # --- rows -------------------------------------------------------------------------------

    def _fields(self) -> tuple[PayloadField, ...]:
        trigger = self._triggers.get(str(self.trigger.currentData() or ""))
        return trigger.fields if trigger else ()

    def add_condition(self, condition: Condition | None = None) -> ConditionRow:
        row = ConditionRow(self._fields(), condition)
        self.conditions.append(row)
        return row

    def add_action(self, action: Action | None = None) -> ActionRow:
        row = ActionRow(self._templates, action)
        self.actions.append(row)
        return row

    def condition_rows(self) -> list[ConditionRow]:
        return [row for row in self.conditions.rows if isinstance(row, ConditionRow)]

    def action_rows(self) -> list[ActionRow]:
        return [row for row in self.actions.rows if isinstance(row, ActionRow)]

    def choose_trigger(self, trigger_type: str) -> None:
        self.trigger.setCurrentIndex(self.trigger.findData(trigger_type))

    def _trigger_changed(self) -> None:
        fields = self._fields()
        for row in self.condition_rows():
            row.set_fields(fields)

    # --- the draft --------------------------------------------------------------------------

    def draft(self) -> AutomationDraft:
        return AutomationDraft(
            name=self.name.text().strip(),
            trigger=str(self.trigger.currentData() or ""),
            actions=tuple(row.action() for row in self.action_rows()),
            conditions=tuple(row.condition() for row in self.condition_rows()),
            description=self.description.text().strip(),
            enabled=self.enabled.isChecked(),
        )
