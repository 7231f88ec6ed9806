"""The "Move to a shared database" assistant: where the PostgreSQL server is, a connection test,
the copy with its progress and Cancel, the verification table, and making the shared database
this computer's from the next start.

The work is the `database_move` service's, asked through the bridge: it runs on a worker thread
of the engine, never on the GUI thread, and the progress bar reads its counts from a timer.
The SQLite file is only read; it stays as the way back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services import database_move
from app.services.database_move import MoveFailed, MoveReport, Probe
from app.services.progress import Cancelled, Progress
from app.ui import labels, tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import tell
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN

REFRESH_MS = 100
DEFAULT_PORT = 5432


@dataclass(frozen=True)
class Line:
    """One line of the verification table: a table's rows, or one of its money totals."""

    what: str
    here: int
    shared: int
    ok: bool


def report_lines(report: MoveReport) -> list[Line]:
    lines = []
    for check in report.tables:
        if not (check.source_rows or check.target_rows):
            continue
        lines.append(Line(check.table, check.source_rows, check.target_rows, check.ok))
        for total in check.totals:
            label = f"    {total.column.removesuffix('_minor')} {total.currency}".rstrip()
            lines.append(Line(label, total.source, total.target, total.ok))
    audit = report.audit
    lines.append(Line("audit trail (chain)", audit.source_entries, audit.target_entries, audit.ok))
    return lines


class DatabaseMoveDialog(QDialog):
    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.setWindowTitle("Move to a shared database")
        self.setMinimumWidth(560)
        self.progress: Progress | None = None
        self.report: MoveReport | None = None
        config = bridge.services.config

        intro = labels.muted(
            "Copies this computer's database into an empty PostgreSQL database on a server, "
            "so that several office computers share one school. Every row is checked after "
            "the copy. The file on this computer is only read and stays as it is: it is the "
            "way back."
        )
        self.server = QLineEdit()
        self.server.setPlaceholderText("e.g. office-server or 192.168.1.20")
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(DEFAULT_PORT)
        self.port.setMaximumWidth(120)
        self.database = QLineEdit()
        self.database.setPlaceholderText("an empty database, e.g. switchboard")
        self.user = QLineEdit()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        form = QFormLayout()
        for label, widget in (
            ("Server", self.server),
            ("Port", self.port),
            ("Database", self.database),
            ("User", self.user),
            ("Password", self.password),
        ):
            widget.setAccessibleName(label)
            form.addRow(label, widget)

        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(lambda: tasks.start(self.test_connection(), owner=self))
        self.copy_button = QPushButton("Copy and verify")
        self.copy_button.clicked.connect(lambda: tasks.start(self.copy_and_verify(), owner=self))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.bar = QProgressBar()
        self.bar.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.error = QLabel()
        self.error.setObjectName("FieldError")
        self.error.setWordWrap(True)
        self.error.hide()

        self.model: RecordModel[Line] = RecordModel(
            [
                Column("Table", lambda line: line.what, stretch=True),
                Column("This computer", lambda line: f"{line.here:,}", right=True),
                Column("Shared", lambda line: f"{line.shared:,}", right=True),
                Column(
                    "Check",
                    lambda line: "same" if line.ok else "different",
                    color=lambda line: None if line.ok else DOWN,
                ),
            ],
            key=lambda line: line.what,
        )
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)
        self.table.proxy.sort(-1)  # as the report lists them: parents before children
        self.table.setMinimumHeight(220)
        self.table.hide()

        self.use_button = QPushButton("Use the shared database")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(lambda: tasks.start(self.use_shared(), owner=self))
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)

        actions = QHBoxLayout()
        actions.addWidget(self.test_button)
        actions.addWidget(self.copy_button)
        actions.addStretch(1)
        working = QHBoxLayout()
        working.addWidget(self.bar, 1)
        working.addWidget(self.cancel_button)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(self.use_button)
        bottom.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addLayout(actions)
        layout.addLayout(working)
        layout.addWidget(self.status)
        layout.addWidget(self.error)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)

        self._refresh = QTimer(self)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self.update_counts)

        if config.demo:
            self._unavailable("This is the demo school; leave the demo to move the school's own.")
        elif not config.is_sqlite:
            self._unavailable(
                "This computer already works on a shared database "
                f"({database_move.shown_url(config.db_url)})."
            )

    # --- the address ----------------------------------------------------------------------------

    def url(self, *, with_password: bool = True) -> str:
        user = quote(self.user.text().strip(), safe="")
        password = self.password.text()
        login = f"{user}:{quote(password, safe='')}" if with_password and password else user
        server = self.server.text().strip()
        name = quote(self.database.text().strip(), safe="")
        return f"postgresql://{login}@{server}:{self.port.value()}/{name}"

    def _missing(self) -> str:
        empty = [
            label
            for label, widget in (
                ("the server", self.server),
                ("the database", self.database),
                ("the user", self.user),
            )
            if not widget.text().strip()
        ]
        return f"Fill in {' and '.join(empty)}." if empty else ""

    # --- the steps ------------------------------------------------------------------------------

    async def test_connection(self) -> Probe | None:
        if self._problem(self._missing()):
            return None
        self._say("Connecting…")
        self.test_button.setEnabled(False)
        try:
            found: Probe = await self.bridge.call(database_move.check_target, self.url())
        except SwitchboardError as exc:
            self._say("")
            self._problem(str(exc))
            return None
        finally:
            self.test_button.setEnabled(True)
        if found.empty:
            self._say(found.sentence)
        else:
            self._say("")
            self._problem(found.sentence)
        return found

    async def copy_and_verify(self) -> MoveReport | None:
        if self._problem(self._missing()):
            return None
        self.report = None
        self.use_button.setEnabled(False)
        self.table.hide()
        progress = self.progress = Progress()
        self._working(True)
        self._say("Copying…")
        source = self.bridge.services.config.db_url
        try:
            report: MoveReport = await self.bridge.call(
                database_move.move_database, source, self.url(), progress
            )
        except Cancelled:
            self._say("Stopped as you asked; nothing was copied into the shared database.")
            return None
        except MoveFailed as exc:
            self._say("")
            self._problem(str(exc))
            if exc.report is not None:
                self._show(exc.report)
            return None
        except SwitchboardError as exc:
            self._say("")
            self._problem(str(exc))
            return None
        finally:
            self._working(False)
        self.report = report
        self._show(report)
        self.use_button.setEnabled(True)
        self._say(
            f"Verified: {report.rows:,} rows copied into {report.target}, with the same money "
            "totals and an intact audit trail. Use the shared database to work on it from now on."
        )
        return report

    def cancel(self) -> None:
        if self.progress is not None:
            self.progress.cancel()
        self.cancel_button.setEnabled(False)
        self._say("Stopping…")

    async def use_shared(self) -> Path | None:
        """Make the verified copy this computer's database from the next start."""
        if self.report is None:
            return None
        config = self.bridge.services.config
        try:
            choice: Path = await self.bridge.call(
                database_move.use_shared_database,
                config.paths,
                self.url(with_password=False),
                self.password.text() or None,
            )
        except SwitchboardError as exc:
            self._problem(str(exc))
            return None
        self.use_button.setEnabled(False)
        self.copy_button.setEnabled(False)
        text = (
            f"This computer will use {self.report.target} from its next start: close "
            "Switchboard (Quit in the tray menu) and start it again. The old database file "
            f"{config.sqlite_path} is kept as it was; deleting {choice} goes back to it."
        )
        self._say(text)
        tell(self, "Restart Switchboard", text, problem=False)
        return choice

    # --- showing --------------------------------------------------------------------------------

    def update_counts(self) -> None:
        progress = self.progress
        if progress is not None and progress.total:
            self.bar.setRange(0, progress.total)
            self.bar.setValue(min(progress.done, progress.total))
            if not progress.cancelled:
                self._say(f"Copying: {progress.done:,} of {progress.total:,} rows")

    def _show(self, report: MoveReport) -> None:
        self.model.set_records(report_lines(report))
        self.table.show()

    def _working(self, on: bool) -> None:
        for widget in (self.server, self.port, self.database, self.user, self.password):
            widget.setEnabled(not on)
        self.test_button.setEnabled(not on)
        self.copy_button.setEnabled(not on)
        self.close_button.setEnabled(not on)
        self.bar.setVisible(on)
        self.bar.setRange(0, 0)
        self.cancel_button.setVisible(on)
        self.cancel_button.setEnabled(on)
        if on:
            self._refresh.start()
        else:
            self._refresh.stop()

    def _say(self, text: str) -> None:
        self.status.setText(text)
        if text:
            self._problem("")

    def _problem(self, text: str) -> bool:
        self.error.setText(text)
        self.error.setVisible(bool(text))
        return bool(text)

    def _unavailable(self, reason: str) -> None:
        self._problem(reason)
        for widget in (self.test_button, self.copy_button):
            widget.setEnabled(False)

    def reject(self) -> None:  # Escape or closing the window while copying cancels the copy
        if self.progress is not None and self._refresh.isActive():
            self.cancel()
            return
        super().reject()
