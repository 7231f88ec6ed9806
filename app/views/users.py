"""Users: who may sign in and with which role, the service user's role (what the engine and the
command line may do), and for the person signed in: their password and two-step sign-in.

Every change goes through the users service, which refuses what the signed-in role may not
do; the page shows that sentence rather than hiding buttons it cannot explain."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.access import Role
from app.domain.errors import SwitchboardError
from app.services.users import TOPIC, Enrolment, User
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import run_dialog, tell
from app.ui.labels import muted
from app.ui.page import Page
from app.ui.qr import qr_pixmap
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DOWN, PAUSED

NEVER = datetime.min.replace(tzinfo=UTC)
ROLE_HELP = {
    Role.ADMINISTRATOR: "everything, including users and connections",
    Role.FINANCE: "payments, refunds, billing runs and reconciliation",
    Role.STAFF: "the school's records, messages and calendars",
    Role.VIEWER: "reads everything, changes nothing",
}


def _password() -> QLineEdit:
    edit = QLineEdit()
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    return edit


class _FormDialog(QDialog):
    """A small form whose OK runs `submit` and shows its error instead of closing."""

    def __init__(self, title: str, intro: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(460)
        layout = QVBoxLayout(self)
        if intro:
            layout.addWidget(muted(intro))
        self.form = QFormLayout()
        layout.addLayout(self.form)
        self.extra = QVBoxLayout()
        layout.addLayout(self.extra)
        self.problem = QLabel()
        self.problem.setObjectName("FieldError")
        self.problem.setWordWrap(True)
        self.problem.hide()
        layout.addWidget(self.problem)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(lambda: tasks.start(self._run(), owner=self))
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    def show_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    async def _run(self) -> bool:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(False)
        try:
            await self.submit()
        except SwitchboardError as exc:
            self.show_problem(str(exc))
            return False
        finally:
            ok.setEnabled(True)
        self.accept()
        return True

    async def submit(self) -> None:
        raise NotImplementedError


class AddUserDialog(_FormDialog):
    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(
            "Add a user",
            "They sign in with this name and password, and can change the password and set up "
            "two-step sign-in themselves.",
            parent,
        )
        self.bridge = bridge
        self.name = QLineEdit()
        self.role = QComboBox()
        for role in (Role.STAFF, Role.FINANCE, Role.VIEWER, Role.ADMINISTRATOR):
            self.role.addItem(f"{role.label}: {ROLE_HELP[role]}", role)
        self.password = _password()
        self.repeat = _password()
        self.form.addRow("Name", self.name)
        self.form.addRow("Role", self.role)
        self.form.addRow("First password", self.password)
        self.form.addRow("Password again", self.repeat)

    async def submit(self) -> None:
        if self.password.text() != self.repeat.text():
            raise SwitchboardError("The two passwords differ; type the same one twice.")
        users = self.bridge.services.users
        await self.bridge.call(
            users.add, self.name.text(), Role(self.role.currentData()), self.password.text()
        )


class RoleDialog(_FormDialog):
    def __init__(self, bridge: EngineBridge, user: User, parent: QWidget | None = None) -> None:
        who = (
            "the service user (what the engine and the command line may do)"
            if user.service
            else user.name
        )
        super().__init__(f"Role of {user.name}", f"Choose the role of {who}.", parent)
        self.bridge = bridge
        self.user = user
        self.role = QComboBox()
        for role in Role:
            self.role.addItem(f"{role.label}: {ROLE_HELP[role]}", role)
        self.role.setCurrentIndex(list(Role).index(user.role))
        self.form.addRow("Role", self.role)

    async def submit(self) -> None:
        users = self.bridge.services.users
        await self.bridge.call(users.set_role, self.user.id, Role(self.role.currentData()))


class ResetPasswordDialog(_FormDialog):
    def __init__(self, bridge: EngineBridge, user: User, parent: QWidget | None = None) -> None:
        super().__init__(
            f"New password for {user.name}",
            "Give them this password in person. Their two-step sign-in is removed with the old "
            "password: they set it up again after signing in.",
            parent,
        )
        self.bridge = bridge
        self.user = user
        self.password = _password()
        self.repeat = _password()
        self.form.addRow("New password", self.password)
        self.form.addRow("Password again", self.repeat)

    async def submit(self) -> None:
        if self.password.text() != self.repeat.text():
            raise SwitchboardError("The two passwords differ; type the same one twice.")
        users = self.bridge.services.users
        await self.bridge.call(users.reset_password, self.user.id, self.password.text())


class ChangePasswordDialog(_FormDialog):
    def __init__(self, bridge: EngineBridge, name: str, parent: QWidget | None = None) -> None:
        super().__init__("Change my password", "", parent)
        self.bridge = bridge
        self.name = name
        self.old = _password()
        self.new = _password()
        self.repeat = _password()
        self.form.addRow("Current password", self.old)
        self.form.addRow("New password", self.new)
        self.form.addRow("New password again", self.repeat)

    async def submit(self) -> None:
        if self.new.text() != self.repeat.text():
            raise SwitchboardError("The two new passwords differ; type the same one twice.")
        users = self.bridge.services.users
        await self.bridge.call(users.change_password, self.name, self.old.text(), self.new.text())


class BackupCodesDialog(QDialog):
    """The backup codes, shown once."""

    def __init__(self, codes: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Your backup codes")
        layout = QVBoxLayout(self)
        layout.addWidget(
            muted(
                "Keep these somewhere safe, away from this computer (printed, or in a password "
                "manager). Each one signs you in once if your phone is not at hand. They are "
                "shown only now."
            )
        )
        self.text = QPlainTextEdit("\n".join(codes))
        self.text.setReadOnly(True)
        self.text.setMinimumHeight(200)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text.toPlainText()))
        buttons.rejected.connect(self.accept)
        layout.addWidget(buttons)


class TwoStepDialog(_FormDialog):
    """Set up two-step sign-in: scan the QR code, type the app's code."""

    def __init__(
        self, bridge: EngineBridge, name: str, moving: bool, parent: QWidget | None = None
    ) -> None:
        super().__init__(
            "Two-step sign-in",
            "Scan this code with an authenticator app (Google Authenticator, Microsoft "
            "Authenticator, 1Password…), then type the 6-digit code it shows. From then on "
            "you sign in with your password and a code from the app.",
            parent,
        )
        self.bridge = bridge
        self.name = name
        self.enrolment: Enrolment = bridge.services.users.new_enrolment(name)
        self.codes: list[str] = []
        picture = QLabel()
        picture.setPixmap(qr_pixmap(self.enrolment.uri))
        picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.extra.addWidget(picture)
        key = muted(f"Or type this key into the app: {self.enrolment.secret}")
        key.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.extra.addWidget(key)
        self.password = _password()
        self.code = QLineEdit()
        self.code.setPlaceholderText("123456")
        self.current = QLineEdit()
        self.current.setPlaceholderText("from the old phone, or a backup code")
        self.form.addRow("Your password", self.password)
        self.form.addRow("Code from the app", self.code)
        if moving:
            self.form.addRow("Code from the old app", self.current)

    async def submit(self) -> None:
        users = self.bridge.services.users
        self.codes = await self.bridge.call(
            users.enrol,
            self.name,
            self.password.text(),
            self.enrolment,
            self.code.text(),
            self.current.text() or None,
        )


class UsersPage(Page):
    key = "users"
    title = "Users"
    icon_name = "users"
    topics = (TOPIC,)

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.add_button = QPushButton("Add a user…")
        self.add_button.clicked.connect(lambda: tasks.start(self.add_user(), owner=self))
        self.actions.addWidget(self.add_button)

        self.model: RecordModel[User] = RecordModel(
            [
                Column("Name", self._name_text, width=300),
                Column("Role", lambda u: u.role.label),
                Column(
                    "Two-step sign-in",
                    lambda u: "" if u.service else self._two_step(u),
                    width=220,
                ),
                Column(
                    "Last signed in",
                    self._last_text,
                    sort=lambda u: u.last_sign_in_at or NEVER,
                ),
                Column("State", self._state_text, color=self._state_color, stretch=True),
            ]
        )
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)  # people by name, the service user last
        self.table.proxy.sort(-1)
        self.table.selection_changed.connect(lambda _u: self._update_buttons())
        self.role_button = QPushButton("Change role…")
        self.role_button.clicked.connect(lambda: self._with_selected(self.change_role))
        self.switch_button = QPushButton("Switch off")
        self.switch_button.clicked.connect(lambda: self._with_selected(self.toggle))
        self.reset_button = QPushButton("New password…")
        self.reset_button.clicked.connect(lambda: self._with_selected(self.reset_password))
        self.two_step_off_button = QPushButton("Remove two-step sign-in")
        self.two_step_off_button.clicked.connect(lambda: self._with_selected(self.two_step_off))
        row = QHBoxLayout()
        for button in (
            self.role_button,
            self.switch_button,
            self.reset_button,
            self.two_step_off_button,
        ):
            row.addWidget(button)
        row.addStretch(1)

        self.me_label = QLabel()
        self.me_label.setObjectName("CardLabel")
        self.password_button = QPushButton("Change my password…")
        self.password_button.clicked.connect(lambda: tasks.start(self.change_mine(), owner=self))
        self.enrol_button = QPushButton("Set up two-step sign-in…")
        self.enrol_button.clicked.connect(lambda: tasks.start(self.enrol(), owner=self))
        self.codes_button = QPushButton("New backup codes…")
        self.codes_button.clicked.connect(lambda: tasks.start(self.new_codes(), owner=self))
        mine = QHBoxLayout()
        mine.addWidget(self.me_label)
        mine.addStretch(1)
        for button in (self.password_button, self.enrol_button, self.codes_button):
            mine.addWidget(button)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(
            muted(
                "Each person signs in with their own name. Roles: "
                + "; ".join(f"{role.label}: {text}" for role, text in ROLE_HELP.items())
                + ". The service user is who the background engine and the command line act as."
            )
        )
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addLayout(mine)
        self._users: list[User] = []
        self._update_buttons()

    # --- showing --------------------------------------------------------------------------------

    def _name_text(self, user: User) -> str:
        me = self.bridge.principal
        if user.service:
            return "service (the engine and the command line)"
        return f"{user.name} (you)" if me is not None and me.user_id == user.id else user.name

    @staticmethod
    def _two_step(user: User) -> str:
        if not user.two_step:
            return "off"
        return f"on, {user.backup_codes_left} backup codes left"

    def _last_text(self, user: User) -> str:
        if user.last_sign_in_at is None:
            return "" if user.service else "never"
        return f"{user.last_sign_in_at.astimezone(self.zone):%d %b %Y %H:%M}"

    def _state_text(self, user: User) -> str:
        if user.disabled:
            return "switched off"
        if user.locked_until is not None and user.locked_until > datetime.now(self.zone):
            return "locked for now (wrong attempts)"
        return "active"

    def _state_color(self, user: User) -> str | None:
        return DOWN if user.disabled else (PAUSED if self._state_text(user) != "active" else None)

    async def load(self) -> None:
        services = self.bridge.services
        self.zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        self._users = await self.bridge.call(services.users.users)
        self.model.set_records(self._users)
        self._update_buttons()
        self.states.show_content()

    def _me(self) -> User | None:
        me = self.bridge.principal
        if me is None or me.user_id is None:
            return None
        return next((u for u in self._users if u.id == me.user_id and not u.service), None)

    def _update_buttons(self) -> None:
        selected = self.table.current_record()
        person = selected is not None and not selected.service
        self.role_button.setEnabled(selected is not None)
        self.switch_button.setEnabled(person)
        self.switch_button.setText(
            "Switch on" if selected is not None and selected.disabled else "Switch off"
        )
        self.reset_button.setEnabled(person)
        self.two_step_off_button.setEnabled(person and bool(selected and selected.two_step))
        me = self._me()
        for button in (self.password_button, self.enrol_button):
            button.setEnabled(me is not None)
        self.codes_button.setEnabled(me is not None and me.two_step)
        if me is None:
            self.me_label.setText("Sign in to change your own password or two-step sign-in.")
        else:
            self.me_label.setText(f"You are {me.name} ({me.role.label}).")
            self.enrol_button.setText(
                "Move two-step sign-in to a new phone…"
                if me.two_step
                else "Set up two-step sign-in…"
            )

    # --- acting ---------------------------------------------------------------------------------

    def _with_selected(self, action) -> None:  # type: ignore[no-untyped-def]
        user = self.table.current_record()
        if user is not None:
            tasks.start(action(user), owner=self)

    async def _after(self, dialog: QDialog) -> bool:
        accepted = await run_dialog(dialog) == QDialog.DialogCode.Accepted
        if accepted:
            self.schedule_refresh()
        return accepted

    async def add_user(self) -> None:
        await self._after(AddUserDialog(self.bridge, self))

    async def change_role(self, user: User) -> None:
        await self._after(RoleDialog(self.bridge, user, self))

    async def reset_password(self, user: User) -> None:
        await self._after(ResetPasswordDialog(self.bridge, user, self))

    async def toggle(self, user: User) -> None:
        try:
            await self.bridge.call(
                self.bridge.services.users.set_disabled, user.id, not user.disabled
            )
        except SwitchboardError as exc:
            tell(self, "Not changed", str(exc))
        self.schedule_refresh()

    async def two_step_off(self, user: User) -> None:
        try:
            await self.bridge.call(self.bridge.services.users.turn_off_two_step, user.id)
        except SwitchboardError as exc:
            tell(self, "Not changed", str(exc))
        self.schedule_refresh()

    async def change_mine(self) -> None:
        me = self._me()
        if me is not None:
            await self._after(ChangePasswordDialog(self.bridge, me.name, self))

    async def enrol(self) -> None:
        me = self._me()
        if me is None:
            return
        dialog = TwoStepDialog(self.bridge, me.name, me.two_step, self)
        if await self._after(dialog):
            await run_dialog(BackupCodesDialog(dialog.codes, self))

    async def new_codes(self) -> None:
        me = self._me()
        if me is None:
            return
        dialog = _CodesPasswordDialog(self.bridge, me.name, self)
        if await self._after(dialog):
            await run_dialog(BackupCodesDialog(dialog.codes, self))


class _CodesPasswordDialog(_FormDialog):
    def __init__(self, bridge: EngineBridge, name: str, parent: QWidget | None = None) -> None:
        super().__init__(
            "New backup codes", "Your old backup codes stop working once you confirm.", parent
        )
        self.bridge = bridge
        self.name = name
        self.codes: list[str] = []
        self.password = _password()
        self.form.addRow("Your password", self.password)

    async def submit(self) -> None:
        users = self.bridge.services.users
        self.codes = await self.bridge.call(users.new_backup_codes, self.name, self.password.text())
