"""No secret leaves the credential store: not into the database, the logs, the exports, the
backups, the command line's output, the pages or the crash dialog (issue 9).

One scenario. Unique, recognisable values are planted in every secret field of a connection of
every provider kind (and in secrets named by env:/file: reference), in a person's password, TOTP
secret and backup codes, in an API key and in outbound webhook signing secrets. Everything that
can touch them is then exercised: health checks and tests of every connection against a server
that echoes each request back in its error answer (a provider quoting the credentials it was
sent) or against a closed port, every page of the main window, the command line in-process,
every export, a backup, and an uncaught exception carrying a secret. Then everything written or
shown is scanned for the plain values (and for a structured secret, its markers).

What is scanned, for each planted value as UTF-8 bytes (not base64 or hex forms of it): every
file under the test's folder (the database and its -wal/-shm, the log files, the backups, every
export) except PNG screenshots (pixels cannot be searched) and the operator's own secret file
that a file: reference names; the command line's output; the error messages and health check
details returned; the text of every widget of every page, of each connection's "Change
connection" dialog and of the crash dialog.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from PySide6.QtCore import QModelIndex
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QComboBox,
    QGroupBox,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QTextEdit,
    QWidget,
)
from starlette.types import Receive, Scope, Send

from app import cli
from app.config import Config
from app.logs import setup_logging
from app.providers import KINDS
from app.services.csv_transfer import CsvKind
from app.ui import crash, tasks
from app.ui.connect_dialog import ConnectDialog
from app.ui.main_window import MainWindow
from app.views.dashboard import DashboardPage
from tests.fakes.server import served
from tests.ui.conftest import Gui

ADMIN = "Leak Test Admin"
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
        "sandbox-payments": {},
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
                            "teacher": "Ann Ncube", "api_url": provider,
                            "auth_url": f"{provider}/auth", "token_url": f"{provider}/token",
                            "revoke_url": f"{provider}/revoke"},
        "caldav": {"calendar_url": f"{provider}/dav/calendars/ann/lessons/", "username": "ann",
                   "teacher": "Ann Ncube"},
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


def run_cli(gui: Gui, config: Config, said: dict[str, str], *args: str) -> int:
    """`switchboard --data-dir … ARGS` in this process (the in-memory credential store is the
    process's), its output kept in `said` to be scanned."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["--data-dir", str(config.paths.data_dir), *args])
    asyncio.set_event_loop(gui.loop)  # asyncio.run left none behind
    said[" ".join(args)] = f"exit {status}\n{out.getvalue()}\n{err.getvalue()}"
    return status


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


# --- the scenario --------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_planted_secret_reaches_the_database_logs_exports_backups_pages_or_crash_dialog(
    debug_logs: Path,
    gui: Gui,
    window: MainWindow,
    config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = gui.bridge.services
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

        # Every page, shown, settled and grabbed, its text kept.
        for page in window.pages:
            window.show_page(page.key)
            gui.run(page.settle())
            gui.save(window, page.key)
            said[f"page {page.key}"] = widget_text(window)
        # Each connection's "Change connection" dialog: its secret fields are not filled in.
        dashboard: DashboardPage = window.show_page("dashboard")  # type: ignore[assignment]
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

        # Every export from the services.
        gui.call(services.audit.export, exports / "audit.csv")
        for kind in CsvKind:
            (exports / f"{kind.value}.csv").write_bytes(gui.call(services.csv.export, kind))
        gui.call(services.reconciliation.export_csv, exports / "reconciliation.csv")
        gui.call(services.backups.export_settings, exports / "settings.json")
        gui.call(services.backups.create)

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
