"""Signing in: the first run's "create the administrator" form, the sign-in form with its
second step (a code from the authenticator app, or a backup code), the locked window, and the
dialog a second person uses to approve something at this PC.

Every check happens in the users service; these widgets only collect what was typed and show
the service's sentence. Passwords are cleared from the fields as soon as they were sent.

Signals (SignInPanel):
    signed_in(object): the Principal who signed in.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.domain.access import Principal
from app.domain.errors import SwitchboardError
from app.services.users import AdministratorExists, CodeNeeded
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.labels import muted


def _password_edit() -> QLineEdit:
    edit = QLineEdit()
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    return edit


class SignInForm(QWidget):
    """Name, password and, when the account asks for it, the code. `first_run` turns it into
    the form that creates the administrator (a name and the password twice)."""

    signed_in = Signal(object)
    administrator_exists = Signal(str)

    def __init__(
        self,
        bridge: EngineBridge,
        *,
        first_run: bool = False,
        action: str = "Sign in",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.first_run = first_run
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        self.name = QLineEdit()
        self.name.setAccessibleName("Name")
        self.password = _password_edit()
        self.password.setAccessibleName("Password")
        self.repeat = _password_edit()
        self.repeat.setAccessibleName("Password again")
        self.code = QLineEdit()
        self.code.setAccessibleName("Code")
        self.code.setPlaceholderText("6-digit code, or a backup code")
        self.code_label = QLabel("Code")
        form.addRow("Name", self.name)
        form.addRow("Password", self.password)
        if first_run:
            form.addRow("Password again", self.repeat)
        form.addRow(self.code_label, self.code)
        self.code_label.hide()
        self.code.hide()
        layout.addLayout(form)
        self.problem = QLabel()
        self.problem.setObjectName("FieldError")
        self.problem.setWordWrap(True)
        self.problem.hide()
        layout.addWidget(self.problem)
        self.button = QPushButton("Create the administrator" if first_run else action)
        self.button.setDefault(True)
        self.button.setAutoDefault(True)
        self.button.clicked.connect(self.submit_soon)
        for edit in (self.name, self.password, self.repeat, self.code):
            edit.returnPressed.connect(self.submit_soon)
        layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignRight)

    def prefill(self, name: str) -> None:
        self.name.setText(name)
        self.password.setFocus()

    def show_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    def submit_soon(self) -> None:
        tasks.start(self.submit(), owner=self)

    async def submit(self) -> Principal | None:
        """Send what was typed; the Principal on success (also emitted), else None with the
        reason shown."""
        if not self.button.isEnabled():
            return None
        name, password, code = self.name.text(), self.password.text(), self.code.text()
        if self.first_run and password != self.repeat.text():
            self.show_problem("The two passwords differ; type the same one twice.")
            return None
        self.button.setEnabled(False)
        users = self.bridge.services.users
        try:
            if self.first_run:
                await self.bridge.call(users.create_administrator, name, password)
            principal = await self.bridge.call(users.sign_in, name, password, code or None)
        except AdministratorExists as exc:
            self.administrator_exists.emit(str(exc))
            return None
        except CodeNeeded as exc:
            self.code_label.show()
            self.code.show()
            self.code.setFocus()
            self.show_problem(str(exc))
            return None
        except SwitchboardError as exc:
            self.show_problem(str(exc))
            self.password.setFocus()
            self.password.selectAll()
            return None
        finally:
            self.button.setEnabled(True)
        self.password.clear()
        self.repeat.clear()
        self.code.clear()
        self.show_problem("")
        self.signed_in.emit(principal)
        return principal


class SignInPanel(QFrame):
    """What the window shows instead of its pages until someone signs in (first run, start,
    after an idle lock or a sign-out)."""

    signed_in = Signal(object)

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("SignInPanel")
        self.bridge = bridge
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        card = QFrame()
        card.setObjectName("Card")
        card.setFixedWidth(460)
        self.column = QVBoxLayout(card)
        self.column.setContentsMargins(24, 20, 24, 20)
        self.column.setSpacing(12)
        card.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Minimum)
        self.title = QLabel()
        self.title.setObjectName("PageTitle")
        self.column.addWidget(self.title)
        self.explanation = muted()
        self.explanation.setFixedWidth(460 - 48)  # a known width: its height follows its text
        self.column.addWidget(self.explanation)
        # Centred by stretches, not an alignment flag: an aligned item is asked its height for
        # the whole panel's width, and the card's wrapped text would get too little.
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        self.form: SignInForm | None = None

    def ask(self, *, first_run: bool, reason: str = "", name: str = "") -> SignInForm:
        """Show the first-run form or the sign-in form (with `reason`, e.g. why it locked)."""
        if self.form is not None:
            self.form.deleteLater()
        form = self.form = SignInForm(self.bridge, first_run=first_run)
        form.signed_in.connect(self.signed_in.emit)
        form.administrator_exists.connect(lambda text: self.ask(first_run=False, reason=text))
        if first_run:
            self.title.setText("Create the administrator")
            self.explanation.setText(
                "Switchboard keeps money and families' details, so everyone who uses it signs "
                "in. You are the first: you become its administrator and can add colleagues, "
                "each with a role (Finance, Staff or Viewer), under Users."
            )
        else:
            self.title.setText("Sign in to Switchboard")
            self.explanation.setText(reason or "Sign in with your name and password.")
        form.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.column.addWidget(form)
        if name:
            form.prefill(name)
        else:
            form.name.setFocus()
        return form


class SecondPersonDialog(QDialog):
    """A second person signs in at this PC to approve something; the window's own signed-in
    person is not changed."""

    def __init__(self, bridge: EngineBridge, what: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Approve as a second person")
        self.setMinimumWidth(440)
        self.principal: Principal | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(muted(f"{what}\n\nThe person approving signs in here."))
        self.form = SignInForm(bridge, action="Approve")
        self.form.signed_in.connect(self._signed_in)
        layout.addWidget(self.form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.form.name.setFocus()

    def _signed_in(self, principal: Principal) -> None:
        self.principal = principal
        self.accept()
