"""No secret leaves the credential store: not into the database, the logs, the exports, the
backups, the command line's output, the pages or the crash dialog (issue 9).

One scenario. Unique, recognisable values are planted in every secret field of a connection of
every provider kind (and in secrets named by env:/file: reference), in a person's password, TOTP
secret and backup codes, in an API key and in outbound webhook signing secrets. Everything that
can touch them is then exercised: health checks and tests of every connection against a server
that echoes each request back in its error answer (a provider quoting the credentials it was
sent) or against a closed port; every command of the command line, in this process, doing
its work on them (secrets given to it from the environment and files; payments, refunds, a
billing run, reconciliation, calendar sync, messages, keys, a user, a restore, a database move
to a server that is not there; `serve` called with the API key, `gui` signed into with the
password and a backup code, `screenshots` rendering every page); every export (the
reconciliation report as a PDF too), a backup, and an uncaught exception carrying a secret.
Then everything written or shown is scanned for the plain values (and for a structured
secret, its markers).

What is scanned, for each planted value as UTF-8 bytes (not base64 or hex forms of it): every
file under the test's folder (the database and its -wal/-shm, the log files, the backups, every
export) except PNG screenshots (pixels cannot be searched) and the operator's own secret file
that a file: reference names; the command line's output; the error messages and health check
details returned; the text of every widget of every page (as `screenshots` grabs each), of the
`gui` command's window, of each connection's "Change connection" dialog and of the crash
dialog; the document the PDF report was laid out from (a PDF's own text is compressed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import shiboken6
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from PySide6.QtCore import QCoreApplication, QEvent, QModelIndex, QTimer
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QApplication,
    QComboBox,
    QGroupBox,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QTextEdit,
    QWidget,
)
from sqlalchemy.orm import Session
from starlette.types import Receive, Scope, Send

from app import cli
from app.config import Config
from app.logs import setup_logging
from app.providers import KINDS
from app.services.csv_transfer import CsvKind
from app.store.school import Guardian, Invoice, Teacher
from app.ui import crash, reconciliation_report, screenshots, tasks
from app.ui.connect_dialog import ConnectDialog
from app.ui.main_window import MainWindow
from app.ui.theme import ThemeController
from app.views import build_pages
from app.views.dashboard import DashboardPage
from app.views.reconciliation import ReconciliationPage
from tests.fakes.server import served
from tests.support.polling import until
from tests.ui.conftest import Gui

ADMIN = "Leak Test Admin"
TEACHER = "ann.ncube@school.example"  # whose lessons both calendar connections sync
OPERATOR_FILES = "operator-secrets"  # where the operator keeps a file: secret; not scanned
# Headers the echo leaves out, so that what carries credentials comes early in its answer.
TRANSPORT_HEADERS = frozenset(
    {"host", "user-agent", "accept", "accept-encoding", "connection", "content-length"}
)


class Planted:
    """The secrets planted, by label; each is unique in the whole run."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, label: str, value: str | None = None) -> str:
        chosen = value if value is not None else f"leak-{label}-{uuid.uuid4().hex}"
        assert chosen not in self.values.values()
        self.values[label] = chosen
        return chosen


# --- the scanner ---------------------------------------------------------------------------------


def find_in_text(where: str, text: str | bytes, planted: Mapping[str, str]) -> list[str]:
    """`label in where` for every planted value that appears in `text`."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return [f"{label} in {where}" for label, value in planted.items() if value.encode() in data]


def find_in_folder(root: Path, planted: Mapping[str, str]) -> list[str]:
    """Every planted value in every file under `root`, read as bytes (SQLite keeps text as
    UTF-8, free pages included), PNGs and the operator's secret files aside."""
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() == ".png" or OPERATOR_FILES in path.parts:
            continue
        found += find_in_text(str(path.relative_to(root)), path.read_bytes(), planted)
    return found


def widget_text(root: QWidget) -> str:
    """Everything a person can read in a widget and its children: labels, buttons, fields
    (password fields too), combo box items, tool tips, and every cell of every list."""
    parts: list[str] = []
    for widget in [root, *root.findChildren(QWidget)]:
        parts.append(widget.toolTip())
        if isinstance(widget, QLabel | QAbstractButton | QLineEdit):
            parts.append(widget.text())
        elif isinstance(widget, QTextEdit | QPlainTextEdit):
            parts.append(widget.toPlainText())
        elif isinstance(widget, QComboBox):
            parts += [widget.itemText(index) for index in range(widget.count())]
        elif isinstance(widget, QGroupBox):
            parts.append(widget.title())
        elif isinstance(widget, QMessageBox):
            parts += [widget.text(), widget.informativeText(), widget.detailedText()]
        if isinstance(widget, QAbstractItemView) and widget.model() is not None:
            model = widget.model()
            try:
                columns = model.columnCount(QModelIndex())
            except TypeError:  # a list model keeps its one column to itself
                columns = 1
            for row in range(model.rowCount(QModelIndex())):
                for column in range(columns):
                    index = model.index(row, column)
                    parts += [str(index.data()), str(index.data(3))]  # display, tool tip
    return "\n".join(parts)


# --- the provider that quotes what it was sent ---------------------------------------------------


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse every request with an error that quotes all of it back (method, path, query,
    headers, body) in the places providers put their error messages."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    # What carries credentials first: providers shorten long error messages.
    headers = [
        f"{name.decode()}: {value.decode()}"
        for name, value in scope["headers"]
        if name.decode().lower() not in TRANSPORT_HEADERS
    ]
    told = " ".join(
        [*headers, scope["query_string"].decode(), body.decode(), scope["method"], scope["path"]]
    )
    answer = {
        "error": {"code": 401, "message": told, "status": "UNAUTHENTICATED"},
        "error_description": told,
        "message": told,
        "errors": [{"message": told, "code": "unauthorized"}],
    }
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- planting ------------------------------------------------------------------------------------


def service_account(planted: Planted, label: str, token_uri: str) -> str:
    """A valid service account key file: the whole file and a line from the middle of its
    private key are each looked for."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    planted.add(f"{label}.private_key", pem.splitlines()[10])
    document = json.dumps(
        {
            "type": "service_account",
            "project_id": "leak-test-school",
            "private_key_id": uuid.uuid4().hex,  # sent with every token request: not secret
            "private_key": pem,
            "client_email": "push@leak-test-school.iam.gserviceaccount.com",
            "client_id": "104857600000000000001",
            "token_uri": token_uri,
        }
    )
    return planted.add(label, document)


def verification_key(planted: Planted, label: str) -> str:
    """SendGrid's Event Webhook verification key: base64 of a P-256 public key."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return planted.add(label, base64.b64encode(der).decode())


def settings_of(kind: str, provider: str, port: int) -> dict[str, Any]:
    """Plausible settings (none of them secret) that reach `provider` (the echo) or a port
    where nothing listens."""
    return {
        # Approves every charge at once: the command line's charge has a payment to refund.
        "sandbox-payments": {"latency_ms": 1, "latency_p95_ms": 2, "error_rate": 0,
                             "approval_rate": 1},
        "stripe": {"api_url": provider},
        "paypal": {"client_id": "AYSq3RDGsmBLJE-otTkBtM-jBRd1TCQwFf9RGfwddNXWz0uFU9ztymylOhRS",
                   "api_url": provider},
        "dwolla": {"key": "dwolla-key-id", "funding_source": f"{provider}/funding-sources/5f1f",
                   "api_url": provider},
        "paynow": {"integration_id": "12345", "auth_email": "bursar@school.example",
                   "api_url": provider},
        "paysafe": {"api_username": "school-api", "currency": "USD", "fee_percent": 2.5,
                    "api_url": provider},
        "ecb-rates": {"api_url": provider},
        "openexchangerates": {"api_url": provider},
        "google-calendar": {"client_id": "1234-leak.apps.googleusercontent.com",
                            "teacher": TEACHER, "api_url": provider,
                            "auth_url": f"{provider}/auth", "token_url": f"{provider}/token",
                            "revoke_url": f"{provider}/revoke"},
        "caldav": {"calendar_url": f"{provider}/dav/calendars/ann/lessons/", "username": "ann",
                   "teacher": TEACHER},
        "sandbox-sms": {},
        "twilio": {"account_sid": "AC" + "0123456789abcdef" * 2, "from_number": "+15005550006",
                   "api_url": provider},
        "http-sms": {"url": f"{provider}/sms/send", "auth": "api-key-field",
                     "health_url": f"{provider}/balance"},
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "username": "office",
                 "from_address": "office@school.example"},
        "sendgrid": {"from_email": "office@school.example", "api_url": provider},
        "whatsapp": {"phone_number_id": "106540352242922", "api_url": provider},
        "fcm": {"api_url": provider},
    }[kind]  # fmt: skip


def secrets_of(kind: str, planted: Planted, provider: str, prefix: str = "") -> dict[str, str]:
    """A unique value for every secret field of the kind, in the shape the field requires,
    planted as `<prefix><kind>.<field>`."""
    shaped: dict[str, Callable[[str], str]] = {
        "stripe.secret_key": lambda label: planted.add(label, f"sk_test_{uuid.uuid4().hex}"),
        "sendgrid.api_key": lambda label: planted.add(label, f"SG.{uuid.uuid4().hex}"),
        "sendgrid.verification_key": lambda label: verification_key(planted, label),
        "fcm.service_account": lambda label: service_account(planted, label, f"{provider}/token"),
    }
    values: dict[str, str] = {}
    for field in KINDS[kind].fields:
        if field.secret:
            shape = shaped.get(f"{kind}.{field.name}", planted.add)
            values[field.name] = shape(f"{prefix}{kind}.{field.name}")
    return values


# --- running the command line in this process ----------------------------------------------------


def run_cli(
    gui: Gui,
    config: Config,
    said: dict[str, str],
    *args: str,
    data_dir: Path | None = None,
    watch: Callable[[io.StringIO], None] | None = None,
) -> tuple[int, str]:
    """`switchboard --data-dir … ARGS` in this process (the in-memory credential store is the
    process's), its output kept in `said` to be scanned; its exit status and standard output.
    `watch` is handed the standard output as the command starts (to stop a long-lived one)."""
    out, err = io.StringIO(), io.StringIO()
    folder = data_dir or config.paths.data_dir
    if watch is not None:
        watch(out)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["--data-dir", str(folder), *args])
    asyncio.set_event_loop(gui.loop)  # asyncio.run left none behind
    where = " ".join(args)
    while where in said:
        where += " (again)"
    said[where] = f"exit {status}\n{out.getvalue()}\n{err.getvalue()}"
    return status, out.getvalue()


@contextlib.contextmanager
def process_kept(log_dir: Path) -> Iterator[None]:
    """`serve`, `gui` and `screenshots` take this process over as if it were theirs (signal
    handlers, exception hooks, the GIL's switch interval, logging): put back afterwards, the
    logging at DEBUG into the test's log folder again."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    hooks = (sys.excepthook, threading.excepthook)
    interval = sys.getswitchinterval()
    try:
        yield
    finally:
        setup_logging(log_dir, "DEBUG")
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        sys.excepthook, threading.excepthook = hooks
        sys.setswitchinterval(interval)


def stop_as_sigterm_does(before: Any) -> None:
    """SIGTERM to this process, as `kill` stops a running `serve` or `gui`: only once the
    command has put its own handler in place (never the default one, which would end the
    test run)."""
    if signal.getsignal(signal.SIGTERM) not in (before, signal.SIG_DFL, None):
        os.kill(os.getpid(), signal.SIGTERM)


def serve_briefly(
    gui: Gui, config: Config, said: dict[str, str], key: str, wrong_key: str
) -> tuple[int, list[str]]:
    """`switchboard serve --port 0` until it says where it listens; the school's API on its
    receiver called with the API key, then with a wrong one; then stopped by SIGTERM. The exit
    status and the API's answers (kept in `said` too)."""
    finished = threading.Event()
    answers: list[str] = []
    before = signal.getsignal(signal.SIGTERM)

    def call_then_stop(out: io.StringIO) -> None:
        deadline = time.monotonic() + 60
        while not finished.is_set() and time.monotonic() < deadline:
            listening = re.search(r"listening on (\S+)", out.getvalue())
            if listening is None:
                time.sleep(0.02)
                continue
            try:
                with httpx.Client(base_url=listening[1], timeout=10) as client:
                    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {wrong_key}"}):
                        answer = client.get("/zapier/me", headers=headers)
                        answers.append(f"{answer.status_code} {answer.text}")
            finally:
                stop_as_sigterm_does(before)
            return

    def watch(out: io.StringIO) -> None:
        threading.Thread(target=call_then_stop, args=(out,), daemon=True).start()

    with process_kept(config.paths.log_dir):
        try:
            status, _ = run_cli(gui, config, said, "serve", "--port", "0", watch=watch)
        finally:
            finished.set()
    said["serve: the API's answers"] = "\n".join(answers)
    return status, answers


def gui_briefly(
    gui: Gui, config: Config, said: dict[str, str], password: str, code: str
) -> tuple[int, bool]:
    """`switchboard gui`: the app's own window opens on the planted data, the administrator
    signs in on it with the planted password and a backup code, its first page settles; then
    it is stopped by SIGTERM. The exit status and whether the sign-in got through; what the
    window showed, locked and signed in, is kept in `said`."""
    before = signal.getsignal(signal.SIGTERM)
    state = {"signed_in": False, "returned": False}

    def opened() -> MainWindow | None:
        return next(
            (
                widget
                for widget in QApplication.topLevelWidgets()
                if isinstance(widget, MainWindow) and widget.isVisible()
            ),
            None,
        )

    async def finished(name: str) -> None:
        """The app's own start-up task of this name, if it is under way, done."""
        under_way = [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == name
        ]
        if under_way:
            await asyncio.wait(under_way, timeout=15)

    async def sign_in_then_stop() -> None:
        try:
            window: MainWindow = await until(opened, 30)
            await finished("Shell.ask_to_sign_in")  # it puts the sign-in form up
            form = window.sign_in_panel.form
            assert window.locked
            assert form is not None
            said["gui: locked"] = widget_text(window)
            form.name.setText(ADMIN)
            form.password.setText(password)
            form.code.setText(code)
            said["gui: sign-in answer"] = str(await form.submit())
            await until(lambda: not window.locked, 15)
            await finished("Shell.after_start")
            await asyncio.wait_for(window.current_page.settle(), 15)
            said["gui: signed in"] = widget_text(window)
            state["signed_in"] = True
        finally:
            stop_as_sigterm_does(before)
            # Should the app not end (it always has), its loop is ended under it.
            QTimer.singleShot(10_000, lambda: state["returned"] or QApplication.exit())

    QTimer.singleShot(0, lambda: asyncio.ensure_future(sign_in_then_stop()))
    with process_kept(config.paths.log_dir):
        try:
            status, _ = run_cli(gui, config, said, "gui")
        finally:
            state["returned"] = True
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # its window
    return status, state["signed_in"]


def close_for_good(gui: Gui, window: MainWindow) -> None:
    """The test's window closed and deleted, its pages' tasks ended on the test's loop."""
    window.hide()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gui.wait_until(lambda: tasks.running() == 0)


def school_for_commands(session: Session) -> tuple[int, int, int]:
    """A teacher the calendars sync, two payers and an invoice due today: the guardian ids
    (one pays at the sandbox, one at the gateways that echo) and the invoice's."""
    session.add(
        Teacher(ref="T-ANN", first_name="Ann", last_name="Ncube", email=TEACHER, subjects="Violin")
    )
    sandbox_payer = Guardian(ref="G-LEAK-1", first_name="Rudo", last_name="Moyo")
    echo_payer = Guardian(ref="G-LEAK-2", first_name="Tariro", last_name="Dube")
    session.add_all([sandbox_payer, echo_payer])
    session.flush()
    invoice = Invoice(
        number="LEAK-INV-1",
        guardian_id=echo_payer.id,
        currency="USD",
        total_minor=4_500,
        issued_on=date.today(),
        due_on=date.today(),
    )
    session.add(invoice)
    session.flush()
    return sandbox_payer.id, echo_payer.id, invoice.id


def shown_once(said: dict[str, str], where: str, value: str) -> None:
    """A new API key is printed once, by the command that made it, by design: its own output
    may hold it (once); everything else is scanned for it."""
    assert said[where].count(value) == 1, said[where]
    said[where] = said[where].replace(value, "<the new key, shown once>")


@pytest.fixture
def debug_logs(config: Config) -> Iterator[Path]:
    """Switchboard's logging, at DEBUG, into the test's log folder (before the engine starts:
    ask for this fixture before `gui`); put back as it was afterwards."""
    root = logging.getLogger()
    app_logger = logging.getLogger("switchboard")
    before = (list(root.handlers), root.level, app_logger.level, threading.excepthook)
    path = setup_logging(config.paths.log_dir, "DEBUG")
    yield path
    for handler in list(root.handlers):
        if getattr(handler, "_switchboard", False):
            root.removeHandler(handler)
            handler.close()
    for handler in before[0]:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(before[1])
    app_logger.setLevel(before[2])
    threading.excepthook = before[3]


@pytest.fixture
def main_window(gui: Gui, qapp: QApplication) -> Iterator[MainWindow]:
    """The main window with every page, shown. Unlike tests/ui's `window`, the test closes it
    for good part way (`close_for_good`); if the test ends before, it is closed here."""
    window = MainWindow(gui.bridge, ThemeController(qapp), build_pages(gui.bridge))
    window.resize(1280, 860)
    window.show()
    yield window
    if shiboken6.isValid(window):
        close_for_good(gui, window)


# --- the scenario --------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_planted_secret_reaches_the_database_logs_exports_backups_pages_or_crash_dialog(
    debug_logs: Path,
    gui: Gui,
    main_window: MainWindow,
    config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = gui.bridge.services
    window = main_window
    planted = Planted()
    said: dict[str, str] = {}  # what was printed or shown, by where: scanned at the end
    exports = tmp_path / "exports"
    exports.mkdir()

    # The scanner finds a planted value where it is, in a file and in text, or this test
    # could pass by finding nothing anywhere.
    proof = Planted()
    needle = proof.add("proof")
    scratch = tmp_path / "scanner-proof"
    scratch.mkdir()
    (scratch / "blob.db").write_bytes(b"\x00SQLite\x01" + needle.encode() + b"\xff\x00")
    (scratch / "shot.png").write_bytes(needle.encode())
    assert find_in_folder(scratch, proof.values) == ["proof in blob.db"]
    assert find_in_text("a dialog", f"It said {needle}.", proof.values) == ["proof in a dialog"]
    for path in scratch.iterdir():
        path.unlink()
    scratch.rmdir()

    with served(echo) as provider:
        port = closed_port()

        # 1. Plant: a connection of every kind, every secret field filled in.
        connections: dict[str, int] = {}
        for kind in KINDS:
            secrets = secrets_of(kind, planted, provider)
            record = gui.call(
                services.connections.add,
                kind,
                f"Leak test {kind}",
                settings_of(kind, provider, port),
                secrets,
            )
            assert set(record.secret_fields) == {f.name for f in KINDS[kind].fields if f.secret}
            connections[kind] = record.id
        # A rotated webhook signing secret (the old one still verifies for a while).
        gui.call(
            services.connections.rotate_webhook_secret,
            connections["sandbox-payments"],
            planted.add("sandbox-payments.webhook_secret.rotated"),
        )
        # Secrets named by reference, read where the engine needs them: env: and file:.
        monkeypatch.setenv("LEAK_RATES_APP_ID", planted.add("reference.env"))
        operator = tmp_path / OPERATOR_FILES
        operator.mkdir()
        (operator / "smtp-password").write_text(planted.add("reference.file") + "\n")
        by_env = gui.call(
            services.connections.add,
            "openexchangerates",
            "Leak test rates by env",
            {"api_url": provider},
            {},
            references={"app_id": "env:LEAK_RATES_APP_ID"},
        )
        by_file = gui.call(
            services.connections.add,
            "smtp",
            "Leak test mail by file",
            settings_of("smtp", provider, port),
            {},
            references={"password": f"file:{operator / 'smtp-password'}"},
        )

        # A person: password, TOTP secret and backup codes; a sign-in with the password typed
        # into the name field.
        password = planted.add("user.password")
        gui.call(services.users.create_administrator, ADMIN, password)
        enrolment = services.users.new_enrolment(ADMIN)
        planted.add("user.totp_secret", enrolment.secret)
        codes = gui.call(
            services.users.enrol, ADMIN, password, enrolment, pyotp.TOTP(enrolment.secret).now()
        )
        for number, code in enumerate(codes):
            planted.add(f"user.backup_code.{number}", code)
        with contextlib.suppress(Exception):
            gui.call(services.users.sign_in, password, password)
        with contextlib.suppress(Exception):
            gui.call(services.users.sign_in, ADMIN, planted.add("user.wrong_password"))

        # An API key, created and rotated; an outbound webhook endpoint, its secret rotated.
        key, value = gui.call(services.api_keys.create, "Leak test key")
        planted.add("api_key", value)
        _, rotated = gui.call(services.api_keys.rotate, key.id)
        planted.add("api_key.rotated", rotated)
        endpoint = gui.call(
            services.outbound.add_endpoint,
            f"{provider}/hooks/switchboard",
            secret=planted.add(
                "outbound.secret", "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode()
            ),
        )
        planted.add(
            "outbound.secret.rotated", gui.call(services.outbound.rotate_secret, endpoint.id)
        )

        # What the payment, billing and calendar commands work on: a card saved at the sandbox
        # for one payer and at every gateway that echoes for the other, who owes an invoice.
        sandbox_payer, echo_payer, _invoice = gui.call(services.db.write, school_for_commands)
        gui.call(
            services.routing.save_method,
            sandbox_payer,
            connections["sandbox-payments"],
            "card",
            "pm_sandbox_visa_1",
        )
        for kind in ("stripe", "paypal", "dwolla", "paynow", "paysafe"):
            gui.call(
                services.routing.save_method, echo_payer, connections[kind], "card", f"pm_{kind}_1"
            )

        # 2. Exercise: every connection checked and tested (they fail: errors must not carry
        # secrets either), outbound deliveries tried, reconciliation reading the gateways.
        for check in gui.run(gui.bridge.call(services.health.check_all), 60):
            said[f"health check {check.connection_id}"] = check.detail
        for connection_id in [*connections.values(), by_env.id, by_file.id]:
            try:
                result = gui.run(gui.bridge.call(services.connections.test, connection_id), 60)
                said[f"test {connection_id}"] = result.detail
            except Exception as exc:  # what the page shows when a test cannot even start
                said[f"test {connection_id}"] = str(exc)
        # The connect dialog's Test button: settings tried before they are saved.
        for kind in ("sendgrid", "whatsapp"):
            draft = secrets_of(kind, planted, provider, prefix="draft.")
            result = gui.call(
                services.connections.test_draft, kind, settings_of(kind, provider, port), draft
            )
            said[f"draft test {kind}"] = result.detail
        gui.call(services.outbound.emit, "payment.succeeded", {"payment": 1})
        gui.run(gui.bridge.call(services.outbound.deliver_due), 30)
        try:
            gui.run(gui.bridge.call(services.reconciliation.daily), 60)
        except Exception as exc:
            said["reconciliation"] = str(exc)
        gui.call(services.requests.flush)

        # Each connection's "Change connection" dialog: its secret fields are not filled in.
        # (Every page is shown by `switchboard screenshots`, below, after every command.)
        dashboard: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
        gui.run(dashboard.settle())
        gui.save(window, "dashboard")
        for connection_id in [*connections.values(), by_env.id, by_file.id]:
            opening = tasks.start(dashboard.open_connect(connection_id), owner=dashboard)
            dialog = gui.find(ConnectDialog, dashboard)
            said[f"connection dialog {connection_id}"] = widget_text(dialog)
            dialog.reject()
            gui.run(opening)

        # The command line, in this process, on the same data folder.
        for command in (
            ["connection", "list", "--json"],
            ["connection", "test", str(by_env.id), "--json"],
            ["connection", "test", str(connections["stripe"]), "--json"],
            ["health", "--json"],
            ["events", "list", "--json"],
            ["audit", "verify", "--json"],
            ["audit", "export", "--out", str(exports / "audit-cli.csv"), "--json"],
            ["settings", "export", "--out", str(exports / "settings-cli.json"), "--json"],
            ["backup", "create", "--json"],
            ["backup", "create", "--out", str(exports / "backup-cli.db"), "--json"],
            ["doctor", "--json"],
            ["user", "list", "--json"],
            ["api-key", "list", "--json"],
            ["provider", "kinds", "--json"],
        ):
            run_cli(gui, config, said, *command)
        succeeded = [command for command, output in said.items() if output.startswith("exit 0")]
        assert {
            "connection list --json",
            "events list --json",
            "audit verify --json",
            f"audit export --out {exports / 'audit-cli.csv'} --json",
            f"settings export --out {exports / 'settings-cli.json'} --json",
            "backup create --json",
            "user list --json",
            "api-key list --json",
        } <= set(succeeded), said
        assert (exports / "backup-cli.db").exists()

        # Every other command, doing its work on the planted connections where it has any, or
        # refusing cleanly (exit 1, one sentence) when the provider behind it refuses.
        def cli_json(*args: str, data_dir: Path | None = None) -> tuple[int, Any]:
            status, out = run_cli(gui, config, said, *args, "--json", data_dir=data_dir)
            return status, json.loads(out) if out.strip() else None

        statuses: dict[str, int] = {}  # what each command ended with, by a short name

        def step(name: str, *args: str, data_dir: Path | None = None) -> Any:
            statuses[name], document = cli_json(*args, data_dir=data_dir)
            return document

        step("settings import", "settings", "import", str(exports / "settings-cli.json"))
        step("settings set", "settings", "set", "approvals.refund_above", "100")
        step("sms order", "settings", "set", "messaging.order.sms", "Leak test twilio")
        step("email order", "settings", "set", "messaging.order.email", "Leak test sendgrid")
        # A connection added, and its webhook secret rotated, from the command line: the
        # secrets read from the environment and from the operator's file.
        monkeypatch.setenv("LEAK_CLI_API_KEY", planted.add("cli.sandbox-payments.api_key"))
        monkeypatch.setenv("LEAK_CLI_ROTATED", planted.add("cli.sandbox-payments.rotated"))
        (operator / "webhook-secret").write_text(planted.add("cli.sandbox-payments.webhook"))
        added = step(
            "connection add", "connection", "add", "sandbox-payments",
            "--name", "Leak test CLI cards",
            "--secret", "api_key=env:LEAK_CLI_API_KEY",
            "--secret", f"webhook_secret=file:{operator / 'webhook-secret'}",
        )  # fmt: skip
        step(
            "rotate-secret", "connection", "rotate-secret", str(added["id"]),
            "--secret", "env:LEAK_CLI_ROTATED",
        )  # fmt: skip
        step("webhook-url", "webhook-url", str(connections["sandbox-payments"]))
        # Payments: one taken at the sandbox and refunded in part, the rest waiting for a
        # second person; one refused by every gateway that echoes; a billing run, refused too.
        money = ["--amount", "1,250.50", "--currency", "USD"]
        paid = step("charge", "charge", *money, "--payer", str(sandbox_payer))
        refused = step("charge refused", "charge", *money, "--payer", str(echo_payer))
        step("payments", "payments", "list")
        step("refund", "refund", str(paid["id"]), "--amount", "50.00")
        waits = step("refund waits", "refund", str(paid["id"]))
        approvals = step("approvals", "approvals", "list", "--all")
        billed = step("billing-run", "billing-run")
        step("reconcile", "reconcile", "--connection", str(connections["sandbox-payments"]))
        unreconciled = step(
            "reconcile refused", "reconcile", "--connection", str(connections["stripe"])
        )
        synced = step("sync", "sync")
        # A reminder by SMS and by e-mail: Twilio and SendGrid refuse; the sandbox SMS sends
        # its part, and the e-mail waits, paused (both mail servers are closed).
        sent = step(
            "send", "send", "--template", "Lesson reminder",
            "--to", "+15005550001", "--to", "parent@families.example",
            "--set", "student.first_name=Rudo", "--set", "guardian.first_name=Tariro",
            "--set", "lesson.title=Violin", "--set", "lesson.starts=tomorrow",
            "--set", "lesson.room=", "--yes",
        )  # fmt: skip
        # Keys and people: a new key is printed once, by design; the password is read from
        # the environment.
        made = step("api-key create", "api-key", "create", "Leak test CLI key")
        shown_once(
            said, "api-key create Leak test CLI key --json", planted.add("cli.api_key", made["key"])
        )
        remade = step("api-key rotate", "api-key", "rotate", str(made["id"]))
        shown_once(
            said,
            f"api-key rotate {made['id']} --json",
            planted.add("cli.api_key.rotated", remade["key"]),
        )
        monkeypatch.setenv("LEAK_CLERK_PASSWORD", planted.add("cli.user.password"))
        step(
            "user add", "user", "add", "Leak Test Clerk", "--role", "staff",
            "--password", "env:LEAK_CLERK_PASSWORD",
        )  # fmt: skip
        # The backup checked, then restored into a data folder of its own (this one is in use).
        backup = str(exports / "backup-cli.db")
        step("restore checked", "backup", "restore", backup, "--dry-run")
        step("restore", "backup", "restore", backup, "--yes", data_dir=tmp_path / "restored")
        # A move to a database server that is not there, its password planted.
        monkeypatch.setenv("SWITCHBOARD_DB_PASSWORD", planted.add("cli.database.password"))
        moved = step(
            "database move",
            "database",
            "move",
            "--to",
            f"postgresql://leak@127.0.0.1:{port}/school",
        )
        monkeypatch.delenv("SWITCHBOARD_DB_PASSWORD")
        seeded = step("demo seed", "demo", "seed")

        # Every export from the services, and the reconciliation report as the page exports
        # it to PDF: a PDF's text is compressed and kept as glyph numbers, so the document it
        # was laid out from is scanned too.
        gui.call(services.audit.export, exports / "audit.csv")
        for kind in CsvKind:
            (exports / f"{kind.value}.csv").write_bytes(gui.call(services.csv.export, kind))
        gui.call(services.reconciliation.export_csv, exports / "reconciliation.csv")
        gui.call(services.backups.export_settings, exports / "settings.json")
        gui.call(services.backups.create)
        laid_out: list[str] = []
        write_pdf = reconciliation_report.write_pdf

        def keeping_the_document(path: Path, html: str, title: str) -> None:
            laid_out.append(f"{title}\n{html}")
            write_pdf(path, html, title)

        monkeypatch.setattr(reconciliation_report, "write_pdf", keeping_the_document)
        report: ReconciliationPage = window.show_page("reconciliation")  # type: ignore[assignment]
        gui.run(report.settle())
        assert gui.run(report.export_pdf(exports / "reconciliation.pdf"), 30) is True
        [said["reconciliation report"]] = laid_out

        # The commands that run the app in this process: `serve`, `gui` and `screenshots`.
        # Our window goes first: each restyles every widget there is, and quits by closing
        # every window shown.
        page_keys = [page.key for page in window.pages]
        close_for_good(gui, window)
        statuses["serve"], answers = serve_briefly(
            gui, config, said, planted.values["api_key.rotated"], planted.add("api_key.wrong")
        )
        statuses["gui"], signed_in = gui_briefly(
            gui, config, said, password, planted.values["user.backup_code.0"]
        )
        # Every page of the app's window, rendered by `screenshots` with all the above done,
        # its text kept as each is grabbed (the pictures cannot be searched). Without the
        # moment's pause after each page, which only lets a plot's second line be drawn.
        grab = QWidget.grab

        def keeping_the_text(widget: QWidget, *args: Any) -> Any:
            if not isinstance(widget, MainWindow):  # the connect dialog
                said["screenshots: connect dialog"] = widget_text(widget)
                return grab(widget, *args)
            if "screenshots: window" not in said:  # once: the window around the pages
                said["screenshots: window"] = widget_text(widget)
            said[f"page {widget.current_page.key}"] = widget_text(widget.current_page)
            return grab(widget, *args)

        with monkeypatch.context() as patched, process_kept(config.paths.log_dir):
            patched.setattr(QWidget, "grab", keeping_the_text)
            patched.setattr(screenshots, "SETTLE_SECONDS", 0)
            statuses["screenshots"], _ = run_cli(
                gui, config, said, "screenshots", "--out", str(tmp_path / "screenshots")
            )

    # Each command did its work, or refused as it should, in one sentence.
    refusals = {"charge refused", "refund waits", "reconcile refused", "sync", "send",
                "database move", "demo seed"}  # fmt: skip
    assert statuses == {name: int(name in refusals) for name in statuses}, said
    assert (paid["status"], refused["status"]) == ("succeeded", "failed")
    tried = {attempt["connection_id"]: attempt["failure"] for attempt in refused["attempts"]}
    assert connections["stripe"] in tried, refused
    assert all(tried.values()), refused
    assert "approval" in waits["error"]
    assert [a["status"] for a in approvals["approvals"]] == ["waiting"]
    assert billed["counts"] == {"failed": 1}
    assert unreconciled["error"].startswith("Stripe did not give its records")
    assert [c["outcome"] for c in synced["calendars"]] == ["failed", "failed"]
    assert (sent["status"], sent["channels"]) == ("paused", {"email": 1, "sms": 1})
    assert sent["message"].startswith("No connection could send E-mail")
    assert moved["error"].startswith("Switchboard cannot reach")
    assert "already holds a school's records" in seeded["error"]
    assert [answer[:3] for answer in answers] == ["200", "401"]
    assert signed_in, said
    assert {f"page {key}" for key in page_keys} <= set(said), said.keys()
    assert "Leak test sandbox-payments" in said["reconciliation report"]

    # An uncaught exception that quotes secrets: logged with its traceback, shown in the crash
    # dialog; and one in a thread.
    quoted = planted.values["stripe.secret_key"]
    error = RuntimeError(
        f"Invalid API Key provided: {quoted} (twilio {planted.values['twilio.auth_token']})"
    )
    said["crash message"] = crash.crash_message(error, debug_logs)
    previous_hook = sys.excepthook
    crash.install_crash_handler(debug_logs)
    try:
        try:
            raise error
        except RuntimeError:
            sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
            logging.getLogger("switchboard.crash").exception("while testing %s", quoted)
    finally:
        sys.excepthook = previous_hook
    dialog = gui.find(QMessageBox)
    said["crash dialog"] = widget_text(dialog)
    assert "Invalid API Key provided: *** (twilio ***)" in said["crash dialog"]
    dialog.close()

    thread = threading.Thread(target=_fail_with, args=(planted.values["paypal.client_secret"],))
    thread.start()
    thread.join()

    for handler in logging.getLogger().handlers:
        handler.flush()

    # 3. Scan. The scenario reached what it meant to: the logs and the exports are there.
    logs = list(config.paths.log_dir.glob("*.log*"))
    assert logs
    logged = debug_logs.read_text()
    assert "Invalid API Key provided: *** (twilio ***)" in logged
    assert "uncaught exception in thread" in logged
    assert {
        "audit.csv",
        "audit-cli.csv",
        "students.csv",
        "reconciliation.csv",
        "reconciliation.pdf",
        "settings.json",
        "settings-cli.json",
        "backup-cli.db",
    } <= {path.name for path in exports.iterdir()}
    assert list((config.paths.data_dir / "backups").glob("*"))
    found = find_in_folder(tmp_path, planted.values)
    found += [
        hit for where, text in said.items() for hit in find_in_text(where, text, planted.values)
    ]
    assert not found, "secrets found:\n" + "\n".join(found)


def _fail_with(secret: str) -> None:
    raise RuntimeError(f"PayPal refused client secret {secret}")
