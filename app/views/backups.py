"""Backups: the copies of the database in the backups folder (when, how big, taken by
Switchboard by itself or by a person), backing up now, restoring one after a dry run and a
confirmation, and exporting or importing the settings (never secrets). The work is the
`BackupService`'s, asked through the bridge; a restore needs the engine stopped, so the page
asks the shell for it (`restore_requested`)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from app.domain.errors import SwitchboardError
from app.services.backup import TOPIC, BackupInfo, BackupSummary, ImportReport
from app.ui import labels, tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import confirm, tell
from app.ui.formatting import when
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable

BACKUP_FILES = "Switchboard backups (*.db);;All files (*)"
SETTINGS_FILES = "Settings exports (*.json);;All files (*)"


def size_text(size: int) -> str:
    if size < 1024 * 1024:
        return f"{max(size, 1024) / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def schedule_text(every_hours: int, keep: int, folder: Path) -> str:
    if every_hours <= 0:
        return (
            f"Switchboard does not back up the database by itself (Settings → Backups). "
            f"Backups are kept in {folder}."
        )
    every = "every hour" if every_hours == 1 else f"every {every_hours} hours"
    return (
        f"While it runs, Switchboard backs up the database {every} into {folder} and keeps "
        f"the newest {keep} of those; backups made here with Back up now are kept until you "
        "delete them. Secrets are not in a backup: they stay in this computer's credential "
        "store."
    )


class BackupsPage(Page):
    """Signals:
    restore_requested(str): the user confirmed restoring this backup file; the shell stops
        the engine, restores it and starts again (`Shell.restore_from`).
    """

    key = "backups"
    title = "Backups"
    icon_name = "backups"
    topics = (TOPIC,)

    restore_requested = Signal(str)

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.back_up_button = QPushButton("Back up now")
        self.back_up_button.setToolTip("Copy the database into the backups folder now")
        self.back_up_button.clicked.connect(lambda: tasks.start(self.back_up_now(), owner=self))
        self.restore_button = QPushButton("Restore…")
        self.restore_button.setToolTip(
            "Replace the database with the selected backup (or one you choose), after "
            "checking it and asking"
        )
        self.restore_button.clicked.connect(self.choose_restore)
        self.export_button = QPushButton("Export settings…")
        self.export_button.setToolTip(
            "Write the settings and the connections' settings to a file, without secrets"
        )
        self.export_button.clicked.connect(self.choose_export)
        self.import_button = QPushButton("Import settings…")
        self.import_button.setToolTip("Apply an export; nothing changes if a value in it is wrong")
        self.import_button.clicked.connect(self.choose_import)
        for button in (
            self.back_up_button,
            self.restore_button,
            self.export_button,
            self.import_button,
        ):
            self.actions.addWidget(button)

        self.schedule = labels.muted()
        self.model: RecordModel[BackupInfo] = RecordModel(
            [
                Column("Taken", lambda info: when(info.taken_at, self.zone)),
                Column("Size", lambda info: size_text(info.size), right=True),
                Column("How", lambda info: "automatic" if info.automatic else "by hand"),
                Column("File", lambda info: info.name, stretch=True),
            ],
            key=lambda info: str(info.path),
        )
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)
        self.table.proxy.sort(-1)  # as the service lists them: newest first
        self.table.opened.connect(lambda info: tasks.start(self.restore(info.path), owner=self))
        self.status = labels.muted()

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.schedule)
        layout.addWidget(labels.heading("Backups in the folder, newest first"))
        layout.addWidget(self.table, 1)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        layout.addLayout(row)

    # --- loading --------------------------------------------------------------------------------

    async def load(self) -> None:
        services = self.bridge.services
        settings = services.settings
        self.zone = ZoneInfo(str(settings.get("school.timezone")) or "UTC")
        backups: list[BackupInfo] = await self.bridge.call(services.backups.backups)
        folder = services.backups.folder
        every, keep = int(settings.get("backup.every_hours")), int(settings.get("backup.keep"))
        self.schedule.setText(schedule_text(every, keep, folder))
        self.model.set_records(backups)
        self.table.fit_columns()
        if not backups:
            self.states.show_empty(
                "No backups yet",
                schedule_text(every, keep, folder) + " Back up now makes one at once.",
                [("Back up now", lambda: tasks.start(self.back_up_now(), owner=self))],
            )
            return
        self.states.show_content()

    # --- backing up -----------------------------------------------------------------------------

    async def back_up_now(self) -> BackupInfo | None:
        """Take a backup, then show it in the list."""
        self.back_up_button.setEnabled(False)
        self.status.setText("Backing up the database…")
        try:
            info: BackupInfo = await self.bridge.call(self.bridge.services.backups.create)
        except SwitchboardError as exc:
            self.status.setText("")
            tell(self, "The database was not backed up", str(exc))
            return None
        finally:
            self.back_up_button.setEnabled(True)
        self.status.setText(f"Backed up to {info.path} ({size_text(info.size)}).")
        await self.refresh()
        self.table.select_key(str(info.path))
        return info

    # --- restoring ------------------------------------------------------------------------------

    def choose_restore(self) -> None:
        """The selected backup, or one chosen from the disk (a modal file dialog, so from this
        slot and not from inside a coroutine)."""
        selected = self.table.current_record()
        if isinstance(selected, BackupInfo):
            path: Path | None = selected.path
        else:
            folder = str(self.bridge.services.backups.folder)
            chosen, _ = QFileDialog.getOpenFileName(self, "Restore a backup", folder, BACKUP_FILES)
            path = Path(chosen) if chosen else None
        if path is not None:
            tasks.start(self.restore(path), owner=self)

    async def restore(self, path: Path) -> bool:
        """Check the backup (the dry run), say what it holds and ask; if confirmed, hand it to
        the shell, which stops the engine, restores and starts again. True if handed on."""
        try:
            summary: BackupSummary = await self.bridge.call(
                self.bridge.services.backups.inspect, path
            )
        except SwitchboardError as exc:
            tell(self, "This backup cannot be restored", str(exc))
            return False
        if not await confirm(
            self, "Restore this backup?", self.restore_question(summary), "Restore"
        ):
            return False
        self.restore_requested.emit(str(path))
        return True

    def restore_question(self, summary: BackupSummary) -> str:
        taken = f"taken {when(summary.taken_at, self.zone)}" if summary.taken_at else "undated"
        older = (
            ""
            if summary.current
            else " It is from an older version of Switchboard and is brought up to date."
        )
        return (
            f"{summary.path.name} ({taken}) is sound and holds {summary.contents_text()}.{older}"
            "\n\nRestoring replaces everything in the database with what the backup holds: "
            "what changed since it was taken is undone. Switchboard stops its background work, "
            "restores and starts again. The database as it is now is kept beside it, so this "
            "can be undone."
        )

    # --- settings -------------------------------------------------------------------------------

    def choose_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the settings", "switchboard-settings.json", SETTINGS_FILES
        )
        if path:
            tasks.start(self.export_settings_to(Path(path)), owner=self)

    async def export_settings_to(self, path: Path) -> Path | None:
        try:
            out: Path = await self.bridge.call(self.bridge.services.backups.export_settings, path)
        except SwitchboardError as exc:
            tell(self, "The settings were not exported", str(exc))
            return None
        tell(
            self,
            "Settings exported",
            f"The settings were written to {out}. Secrets are not in it: after importing it "
            "elsewhere, enter each connection's secrets there.",
            problem=False,
        )
        return out

    def choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import settings", "", SETTINGS_FILES)
        if path:
            tasks.start(self.import_settings_from(Path(path)), owner=self)

    async def import_settings_from(self, path: Path) -> ImportReport | None:
        asked = await confirm(
            self,
            "Import these settings?",
            f"The settings in {path.name} replace the ones here, and the connections in it with "
            "the same names as here get their settings from it (their secrets stay as they "
            "are). If any value in it is wrong, nothing changes.",
            "Import",
        )
        if not asked:
            return None
        try:
            report: ImportReport = await self.bridge.call(
                self.bridge.services.backups.import_settings, path
            )
        except SwitchboardError as exc:
            tell(self, "The settings were not imported", str(exc))
            return None
        changed = len(report.settings_changed) + len(report.connections_changed)
        text = (
            f"{changed} changed in all: {len(report.settings_changed)} settings and "
            f"{len(report.connections_changed)} connections."
            if changed
            else "Everything was already as in the file: nothing changed."
        )
        if report.connections_missing:
            text += (
                " Not here, so not imported: " + ", ".join(report.connections_missing) + "; add "
                "them (with their secrets) and import again."
            )
        tell(self, "Settings imported", text, problem=False)
        return report
