"""Settings: every user setting declared in `app.config.SETTINGS`, grouped by section, each with
its label and explanation, in the widget its type calls for. Save writes the changed ones
through the settings service, which checks each value (a bad one is shown beside its field and
nothing else is lost) and refuses them to a role that may not change settings, except a
person's own appearance and log detail. Starting at sign-in belongs to this computer and user,
not to the school's database: its checkbox reads and changes the operating system's own
registration (app.services.autostart) the moment it is clicked."""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.config import SETTINGS, ConfigError, Setting
from app.domain.errors import SwitchboardError
from app.services.autostart import Autostart, AutostartError
from app.services.settings import TOPIC_PREFIX
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.database_move import DatabaseMoveDialog
from app.ui.labels import muted
from app.ui.page import Page


class _Field:
    """One setting's widget, its error label, and reading/writing its value."""

    def __init__(self, spec: Setting[Any]) -> None:
        self.spec = spec
        self.widget: QWidget
        if spec.choices:
            combo = QComboBox()
            for choice in spec.choices:
                combo.addItem(str(choice), choice)
            self.widget = combo
        elif spec.kind is bool:
            self.widget = QCheckBox()
        elif spec.kind is int:
            spin = QSpinBox()
            spin.setRange(
                spec.minimum if spec.minimum is not None else -(2**31),
                spec.maximum if spec.maximum is not None else 2**31 - 1,
            )
            spin.setGroupSeparatorShown(True)
            self.widget = spin
        else:
            self.widget = QLineEdit()
        if not isinstance(self.widget, QLineEdit):
            self.widget.setMaximumWidth(320)  # a number or a choice needs no whole row
        self.widget.setToolTip(spec.help)
        self.widget.setAccessibleName(spec.label)
        self.error = QLabel()
        self.error.setObjectName("FieldError")
        self.error.setWordWrap(True)
        self.error.hide()

    def value(self) -> Any:
        widget = self.widget
        if isinstance(widget, QComboBox):
            return widget.currentData()
        if isinstance(widget, QCheckBox):
            return widget.isChecked()
        if isinstance(widget, QSpinBox):
            return widget.value()
        assert isinstance(widget, QLineEdit)
        return widget.text()

    def show(self, value: Any) -> None:
        widget = self.widget
        if isinstance(widget, QComboBox):
            widget.setCurrentIndex(max(0, widget.findData(value)))
        elif isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif isinstance(widget, QSpinBox):
            widget.setValue(int(value))
        elif isinstance(widget, QLineEdit):
            widget.setText(str(value))

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))


class SettingsPage(Page):
    key = "settings"
    title = "Settings"
    icon_name = "settings"
    topics = (TOPIC_PREFIX,)

    def __init__(
        self,
        bridge: EngineBridge,
        parent: QWidget | None = None,
        *,
        autostart: Autostart | None = None,
    ) -> None:
        super().__init__(bridge, parent)
        self.autostart = autostart if autostart is not None else Autostart()
        self.save_button = QPushButton("Save changes")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(lambda: tasks.start(self.save(), owner=self))
        self.actions.addWidget(self.save_button)
        self.fields: dict[str, _Field] = {}
        inner = QWidget()
        column = QVBoxLayout(inner)
        column.setContentsMargins(0, 0, 8, 0)
        self.notice = muted()
        column.addWidget(self.notice)
        sections: dict[str, QFormLayout] = {}
        for spec in SETTINGS:
            form = sections.get(spec.section)
            if form is None:
                box = QGroupBox(spec.section)
                form = sections[spec.section] = QFormLayout(box)
                form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                column.addWidget(box)
            field = self.fields[spec.key] = _Field(spec)
            holder = QWidget()
            stack = QVBoxLayout(holder)
            stack.setContentsMargins(0, 0, 0, 4)
            stack.setSpacing(2)
            stack.addWidget(field.widget)
            stack.addWidget(field.error)
            stack.addWidget(muted(spec.help))
            form.addRow(spec.label, holder)
        column.addWidget(self._database_box())
        column.addWidget(self._this_computer())
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

    def _on_event(self, topic: str, payload: dict[str, Any]) -> None:
        if topic.startswith(TOPIC_PREFIX):
            super()._on_event(TOPIC_PREFIX, payload)

    def _database_box(self) -> QGroupBox:
        box = QGroupBox("Database")
        stack = QVBoxLayout(box)
        stack.addWidget(muted(f"This computer works on {self.bridge.services.db.display_name}."))
        self.move_button = QPushButton("Move to a shared database…")
        self.move_button.setToolTip(
            "Copy this computer's database into an empty PostgreSQL database on a server, so "
            "several office computers share one school"
        )
        self.move_button.clicked.connect(self.open_move_dialog)
        stack.addWidget(self.move_button, alignment=Qt.AlignmentFlag.AlignLeft)
        return box

    def open_move_dialog(self) -> DatabaseMoveDialog:
        dialog = DatabaseMoveDialog(self.bridge, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def _this_computer(self) -> QGroupBox:
        box = QGroupBox("This computer")
        stack = QVBoxLayout(box)
        self.autostart_box = QCheckBox("Start Switchboard when I sign in to this computer")
        self.autostart_box.clicked.connect(
            lambda checked: tasks.start(self.set_autostart(checked), owner=self)
        )
        self.autostart_error = QLabel()
        self.autostart_error.setObjectName("FieldError")
        self.autostart_error.setWordWrap(True)
        self.autostart_error.hide()
        stack.addWidget(self.autostart_box)
        stack.addWidget(self.autostart_error)
        stack.addWidget(
            muted(
                "For you on this computer only, kept by the operating system rather than in the "
                f"school's database ({self.autostart.where})."
            )
        )
        return box

    async def load(self) -> None:
        values = self.bridge.services.settings.values()
        for key, field in self.fields.items():
            field.show(values[key])
        try:
            self.autostart_box.setChecked(await asyncio.to_thread(self.autostart.is_enabled))
        except AutostartError as exc:
            self._autostart_problem(str(exc))
        self.states.show_content()

    async def set_autostart(self, on: bool) -> bool:
        """Register (or unregister) Switchboard to start at sign-in; False, with the reason
        shown under the checkbox and the checkbox back as it was, when that failed."""
        self._autostart_problem("")
        change = self.autostart.enable if on else self.autostart.disable
        try:
            await asyncio.to_thread(change)
        except AutostartError as exc:
            self.autostart_box.setChecked(not on)
            self._autostart_problem(str(exc))
            return False
        return True

    def _autostart_problem(self, text: str) -> None:
        self.autostart_error.setText(text)
        self.autostart_error.setVisible(bool(text))

    def changed(self) -> dict[str, Any]:
        values = self.bridge.services.settings.values()
        return {
            key: field.value() for key, field in self.fields.items() if field.value() != values[key]
        }

    async def save(self) -> bool:
        """Save every changed setting; False when one was refused (shown beside it)."""
        for field in self.fields.values():
            field.show_error("")
        changes = self.changed()
        if not changes:
            self.notice.setText("Nothing changed.")
            return True
        self.save_button.setEnabled(False)
        saved, problems = 0, 0
        try:
            for key, value in changes.items():
                try:
                    await self.bridge.call(self.bridge.services.settings.set, key, value)
                    saved += 1
                except (ConfigError, SwitchboardError) as exc:
                    self.fields[key].show_error(str(exc))
                    problems += 1
        finally:
            self.save_button.setEnabled(True)
        self.notice.setText(
            f"{saved} saved."
            + (f" {problems} not saved: see the reasons below." if problems else "")
        )
        return not problems
