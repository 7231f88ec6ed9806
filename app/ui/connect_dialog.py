"""The "Connect provider" dialog, generated from the provider kind's spec: a field for each
setting (secrets masked), every problem shown beside its field, and "Test connection" to try
the settings before anything is saved."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.domain.errors import FieldError, SwitchboardError, ValidationFailed
from app.providers.base import HealthResult
from app.providers.spec import ConfigField, FieldKind, ProviderSpec
from app.services.connections import CHECK_EVERY_MAX, CHECK_EVERY_MIN
from app.ui import tasks
from app.ui.dialogs import RecordDialog
from app.ui.theme import DOWN, HEALTHY

KEPT = "••••••••"


@dataclass(frozen=True)
class ConnectionDraft:
    """What the dialog would save: checked by the kind's spec exactly as the service will."""

    spec: ProviderSpec
    name: str
    values: Mapping[str, Any]
    secrets: Mapping[str, str]
    kept_secrets: tuple[str, ...] = field(default=())  # stored already; left empty to keep
    health_interval: int | None = None

    def problems(self) -> list[FieldError]:
        given = {name: value for name, value in self.secrets.items() if value}
        stored = [name for name in self.kept_secrets if name not in given]
        _config, _secrets, errors = self.spec.check(self.values, given, stored=stored)
        if not self.name.strip():
            errors.insert(0, FieldError("name", "Give the connection a name."))
        return errors


def _editor(spec_field: ConfigField, value: Any) -> QWidget:
    if spec_field.kind is FieldKind.BOOL:
        box = QCheckBox(spec_field.label)
        box.setChecked(bool(value if value is not None else spec_field.default))
        return box
    if spec_field.kind is FieldKind.SELECT:
        combo = QComboBox()
        combo.addItems(spec_field.choices)
        chosen = value if value is not None else spec_field.default
        if chosen is not None:
            combo.setCurrentText(str(chosen))
        return combo
    edit = QLineEdit()
    if spec_field.secret:
        edit.setEchoMode(QLineEdit.EchoMode.Password)
    elif value is not None:
        edit.setText(f"{value:g}" if isinstance(value, float) else str(value))
    if spec_field.default not in (None, "") and not spec_field.secret:
        default = spec_field.default
        edit.setPlaceholderText(f"{default:g}" if isinstance(default, float) else str(default))
    return edit


def _read(editor: QWidget) -> Any:
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    if isinstance(editor, QComboBox):
        return editor.currentText()
    assert isinstance(editor, QLineEdit)
    return editor.text()


class ConnectDialog(RecordDialog):
    """Add a connection (`record` None) or change one. `save(draft)` stores it;
    `test(draft)` makes the health check call with the settings as they stand."""

    def __init__(
        self,
        specs: Sequence[ProviderSpec],
        save: Callable[[ConnectionDraft], Awaitable[Any]],
        test: Callable[[ConnectionDraft], Awaitable[HealthResult]],
        record: Any = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Change connection" if record else "Connect a provider", save, parent)
        self.setMinimumWidth(680)
        self.specs = list(specs)
        self.record = record
        self._test = test
        self._editors: dict[str, QWidget] = {}
        self._rows: list[QWidget] = []

        self.kind = QComboBox()
        for spec in self.specs:
            label = f"{spec.name} ({spec.category.value})"
            self.kind.addItem(label, spec.key)
        if record is not None:
            self.kind.setCurrentIndex(max(self.kind.findData(record.kind), 0))
            self.kind.setEnabled(False)  # a connection keeps its kind; add another for a new one
        self.add_field("kind", "Provider", self.kind)
        self.description = QLabel()
        self.description.setObjectName("Muted")
        self.description.setWordWrap(True)
        self.form.addRow("", self.description)
        self.name = QLineEdit(record.name if record else "")
        self.name.setPlaceholderText("e.g. Card payments")
        self.add_field("name", "Name", self.name)
        self.check_every = QSpinBox()
        self.check_every.setRange(CHECK_EVERY_MIN, CHECK_EVERY_MAX)
        self.check_every.setSingleStep(30)
        self.check_every.setSuffix(" s")
        self.add_field(
            "health_interval",
            "Check every",
            self.check_every,
            "How often Switchboard makes a small test call to see that the provider answers.",
        )
        self._fields_start = self.form.rowCount()

        test_row = QWidget()
        row = QHBoxLayout(test_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(lambda: tasks.start(self.run_test(), owner=self))
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        row.addWidget(self.test_button)
        row.addWidget(self.test_result, 1)
        self.extra.addWidget(test_row)

        self.kind.currentIndexChanged.connect(self._show_fields)
        self._show_fields()

    @property
    def spec(self) -> ProviderSpec:
        key = self.kind.currentData()
        return next(spec for spec in self.specs if spec.key == key)

    def _show_fields(self, _index: int = 0) -> None:
        while self.form.rowCount() > self._fields_start:
            self.form.removeRow(self._fields_start)
        for name in self._editors:  # their rows, error labels included, are gone
            self._errors.pop(name, None)
        self._editors.clear()
        spec = self.spec
        chosen = self.record.health_interval if self.record is not None else None
        self.check_every.setValue(int(chosen or spec.health_interval))
        self.description.setText(spec.description)
        config = self.record.config if self.record is not None else {}
        kept = self.record.secret_fields if self.record is not None else ()
        for spec_field in spec.fields:
            editor = _editor(spec_field, config.get(spec_field.name))
            if spec_field.secret and spec_field.name in kept and isinstance(editor, QLineEdit):
                editor.setPlaceholderText(f"{KEPT}  (stored; type to replace)")
            label = "" if spec_field.kind is FieldKind.BOOL else spec_field.label
            optional = not spec_field.required or spec_field.default is not None
            if optional and label:
                label += " (optional)"
            self._editors[spec_field.name] = self.add_field(
                spec_field.name, label, editor, spec_field.help
            )
        self.test_result.clear()

    def draft(self) -> ConnectionDraft:
        spec = self.spec
        values: dict[str, Any] = {}
        secrets: dict[str, str] = {}
        for spec_field in spec.fields:
            value = _read(self._editors[spec_field.name])
            if spec_field.secret:
                if value:
                    secrets[spec_field.name] = str(value)
            elif value not in ("", None):
                values[spec_field.name] = value
        kept = tuple(self.record.secret_fields) if self.record is not None else ()
        interval = self.check_every.value()
        return ConnectionDraft(
            spec,
            self.name.text(),
            values,
            secrets,
            kept,
            None if interval == spec.health_interval else interval,
        )

    async def run_test(self) -> HealthResult | None:
        draft = self.draft()
        problems = [error for error in draft.problems() if error.field != "name"]
        self.clear_errors()
        if problems:
            self.show_errors(problems)
            return None
        self.test_button.setEnabled(False)
        self.test_result.setText("Calling the provider…")
        self.test_result.setStyleSheet("")
        try:
            result = await self._test(draft)
        except ValidationFailed as exc:
            self.show_errors(exc.errors)
            self.test_result.clear()
            return None
        except SwitchboardError as exc:
            self.test_result.setText(str(exc))
            self.test_result.setStyleSheet(f"color: {DOWN};")
            return None
        finally:
            self.test_button.setEnabled(True)
        mark = "✓" if result.ok else "✗"
        self.test_result.setText(f"{mark} {result.detail}")
        self.test_result.setStyleSheet(f"color: {HEALTHY if result.ok else DOWN};")
        self.test_result.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        return result
