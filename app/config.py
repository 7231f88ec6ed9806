"""Where Switchboard keeps its files, which database it opens, and every user setting it has.

Paths and the database URL are resolved once at start-up from flags, the environment and the
platform's conventions (platformdirs). User settings are declared here, once, with their type,
default and help text; the settings service stores them and the settings page is generated from
these declarations.
"""

from __future__ import annotations

import json
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import platformdirs

APP_NAME = "Switchboard"
APP_AUTHOR = "Switchboard"
DATABASE_FILE = "switchboard.db"

ENV_DATA_DIR = "SWITCHBOARD_DATA_DIR"
ENV_DB_URL = "SWITCHBOARD_DB_URL"
# This computer's choice of database, written by the move to a shared database: the address
# without its password (which is kept in the credential store).
DATABASE_CHOICE_FILE = "database.json"


class ConfigError(ValueError):
    """A flag, environment variable or setting value that Switchboard cannot use."""


@dataclass(frozen=True)
class Paths:
    """The folders Switchboard writes to."""

    data_dir: Path
    log_dir: Path
    config_dir: Path

    @classmethod
    def platform_default(cls) -> Paths:
        return cls(
            data_dir=Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR)),
            log_dir=Path(platformdirs.user_log_dir(APP_NAME, APP_AUTHOR)),
            config_dir=Path(platformdirs.user_config_dir(APP_NAME, APP_AUTHOR)),
        )

    @classmethod
    def under(cls, data_dir: Path) -> Paths:
        """Everything inside one folder: what `--data-dir` asks for, so a test or a second school
        never touches the user's own files."""
        return cls(data_dir=data_dir, log_dir=data_dir / "logs", config_dir=data_dir / "config")

    def create(self) -> None:
        for folder in (self.data_dir, self.log_dir, self.config_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"Switchboard cannot create its folder {folder} ({exc.strerror or exc}); "
                    "choose another folder with --data-dir or SWITCHBOARD_DATA_DIR."
                ) from exc


@dataclass(frozen=True)
class Config:
    """What one run of Switchboard works on: its folders and its database."""

    paths: Paths
    db_url: str
    demo: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        path = self.db_url.split(":///", 1)[1]
        return Path(path) if path and path != ":memory:" else None


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


_SUPPORTED_DB_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


def resolve_config(
    data_dir: str | None = None,
    db_url: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> Config:
    """Flags win over the environment, which wins over this computer's choice of database
    (`database.json` in the config folder, when present), which wins over the platform's
    default folders."""
    chosen_dir = data_dir or environ.get(ENV_DATA_DIR) or None
    paths = Paths.under(Path(chosen_dir).expanduser()) if chosen_dir else Paths.platform_default()
    url = (
        db_url
        or environ.get(ENV_DB_URL)
        or read_database_choice(paths.config_dir)
        or sqlite_url(paths.data_dir / DATABASE_FILE)
    )
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _SUPPORTED_DB_SCHEMES:
        raise ConfigError(
            f"The database address {redact_url(url)!r} is not one Switchboard can open; "
            "write a SQLite file as sqlite:///path/to/file.db or a shared PostgreSQL database "
            "as postgresql://user@server/database."
        )
    return Config(paths=paths, db_url=url)


def demo_config(home: Config) -> Config:
    """The demo school's own folder and database inside the home data folder, so exploring
    never mixes invented families into the school's real records."""
    paths = Paths.under(home.paths.data_dir / "demo")
    return Config(paths=paths, db_url=sqlite_url(paths.data_dir / DATABASE_FILE), demo=True)


def redact_url(url: str) -> str:
    """A database or provider URL with any password replaced, for logs and messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def without_password(url: str) -> tuple[str, str | None]:
    """The URL with its password taken out, and the password (None when it had none)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}")), unquote(parts.password)


def read_database_choice(config_dir: Path) -> str | None:
    """The database this computer was moved to (`database.json`), or None when it has made no
    such choice."""
    path = config_dir / DATABASE_CHOICE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(
            f"Switchboard cannot read {path} ({exc.strerror or exc}), which names this "
            "computer's database; check that you may read it."
        ) from exc
    try:
        url = json.loads(text)["url"]
    except (ValueError, KeyError, TypeError):
        url = None
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"The file {path}, which names this computer's database, is damaged; delete it to "
            "use the database in the data folder, or move to the shared database again."
        )
    return url


def write_database_choice(config_dir: Path, url: str) -> Path:
    """Make `url` this computer's database from the next start on. The password never enters
    the file; the file is replaced whole, so a crash leaves the old choice or the new one."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / DATABASE_CHOICE_FILE
    partial = path.with_suffix(".json.partial")
    document = {"url": without_password(url)[0]}
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


# --- user settings -------------------------------------------------------------------------------

T = TypeVar("T", str, int, bool)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One user setting: its key, type, default and the words the settings page shows."""

    key: str
    kind: type[T]
    default: T | Callable[[], T]
    label: str
    help: str
    section: str
    choices: tuple[T, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    check: Callable[[T], str | None] | None = field(default=None, compare=False)

    def default_value(self) -> T:
        default = self.default
        return default() if callable(default) else default

    def coerce(self, raw: Any) -> T:
        """The value as this setting's type, or ConfigError with a sentence saying what is wrong."""
        value: Any = raw
        if self.kind is bool:
            if isinstance(raw, str):
                lowered = raw.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    value = True
                elif lowered in ("0", "false", "no", "off"):
                    value = False
            if not isinstance(value, bool):
                raise ConfigError(f"{self.label} must be yes or no, not {raw!r}.")
        elif self.kind is int:
            if isinstance(raw, bool):
                raise ConfigError(f"{self.label} must be a whole number, not {raw!r}.")
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ConfigError(f"{self.label} must be a whole number, not {raw!r}.") from None
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(f"{self.label} must be at least {self.minimum}.")
            if self.maximum is not None and value > self.maximum:
                raise ConfigError(f"{self.label} must be at most {self.maximum}.")
        else:
            if not isinstance(raw, str):
                raise ConfigError(f"{self.label} must be text, not {raw!r}.")
            value = raw.strip()
        if self.choices and value not in self.choices:
            allowed = ", ".join(str(choice) for choice in self.choices)
            raise ConfigError(f"{self.label} must be one of {allowed}; {raw!r} is not.")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{self.label}: {problem}")
        return value  # type: ignore[no-any-return]


def _check_timezone(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a time zone name such as Africa/Harare or Europe/London."
    return None


def _check_locale(name: str) -> str | None:
    from babel import Locale, UnknownLocaleError

    try:
        Locale.parse(name)
    except (UnknownLocaleError, ValueError):
        return f"{name!r} is not a locale such as en_GB, en_ZW or fr_FR."
    return None


def _check_currency(code: str) -> str | None:
    from app.domain.money import is_known_currency

    if not is_known_currency(code):
        return f"{code!r} is not an ISO 4217 currency code such as USD, EUR or ZWG."
    return None


def _check_not_blank(text: str) -> str | None:
    return "it cannot be empty." if not text else None


def _check_public_url(text: str) -> str | None:
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        return "it must be a web address like https://school-hooks.example.org."
    return None


def _check_folder(text: str) -> str | None:
    if text and not Path(text).expanduser().is_absolute():
        return f"{text!r} is not a full path such as D:\\Backups or /srv/switchboard/backups."
    return None


def _system_timezone() -> str:
    try:
        import tzlocal

        name = str(tzlocal.get_localzone_name() or "")
    except Exception:  # tzlocal raises several kinds on odd systems; UTC is a safe start
        return "UTC"
    return name if name and _check_timezone(name) is None else "UTC"


def _system_locale() -> str:
    from babel import default_locale

    # The C/POSIX locale of servers and CI reads as en_US_POSIX; people mean plain en_US.
    name = (default_locale() or "en_US").removesuffix("_POSIX")
    return name if _check_locale(name) is None else "en_US"


SETTINGS: tuple[Setting[Any], ...] = (
    Setting(
        "school.name",
        str,
        "My School",
        "School name",
        "Shown in the window title, on invoices and in messages to families.",
        "School",
        check=_check_not_blank,
    ),
    Setting(
        "school.timezone",
        str,
        _system_timezone,
        "School time zone",
        "Lessons are scheduled and shown in this time zone; teachers may have their own.",
        "School",
        check=_check_timezone,
    ),
    Setting(
        "school.locale",
        str,
        _system_locale,
        "Language and number format",
        "How dates, numbers and amounts of money are written, for example en_GB or en_ZW.",
        "School",
        check=_check_locale,
    ),
    Setting(
        "school.currency",
        str,
        "USD",
        "Main currency",
        "The currency new invoices use unless you choose another.",
        "School",
        check=_check_currency,
    ),
    Setting(
        "appearance.theme",
        str,
        "system",
        "Theme",
        "Light or dark; 'system' follows your computer's setting.",
        "Appearance",
        choices=("system", "light", "dark"),
    ),
    Setting(
        "window.close_to_tray",
        bool,
        True,
        "Keep running when the window is closed",
        "Closing the window leaves Switchboard in the system tray so background work goes on. "
        "Has no effect where the desktop has no tray.",
        "Appearance",
    ),
    Setting(
        "reconciliation.daily",
        bool,
        True,
        "Reconcile every day",
        "Each morning Switchboard reads the gateways' records and payouts and matches them "
        "against the payments and the bank statements imported so far.",
        "Reconciliation",
    ),
    Setting(
        "reconciliation.hour",
        int,
        6,
        "Hour of the daily reconciliation",
        "In the school's time zone (0-23).",
        "Reconciliation",
        minimum=0,
        maximum=23,
    ),
    Setting(
        "reconciliation.amount_drift_minor",
        int,
        0,
        "Allowed difference (cents)",
        "Amounts that differ by no more than this many cents (or the currency's smallest "
        "unit) still match. 0: they must agree exactly.",
        "Reconciliation",
        minimum=0,
        maximum=10_000,
    ),
    Setting(
        "reconciliation.date_window_days",
        int,
        3,
        "Days apart for a match without a reference",
        "A payment and a gateway's or bank's record with no reference in common are paired "
        "only when they are for exactly the same amount, no more than this many days apart, "
        "and nothing else could be their match.",
        "Reconciliation",
        minimum=0,
        maximum=30,
    ),
    Setting(
        "reconciliation.settlement_days",
        int,
        7,
        "Days before a payment is missing",
        "A payment the gateway or bank does not show yet is expected for this many days, "
        "then missing.",
        "Reconciliation",
        minimum=1,
        maximum=90,
    ),
    Setting(
        "calendar.sync_minutes",
        int,
        5,
        "Sync calendars every (minutes)",
        "How often each teacher's calendar is brought in step with the lessons. A calendar "
        "that tells Switchboard of its changes (Google, with a public receiver address) is "
        "also synced as soon as it does.",
        "Calendars",
        minimum=1,
        maximum=1440,
    ),
    *(
        Setting(
            f"messaging.order.{channel}",
            str,
            "",
            f"{label} connections, in order",
            f"The names of the connections that send {label}, first choice first, separated by "
            "commas (for example “Twilio, School SMS gateway”). The next one takes over when "
            "one cannot be reached. Empty: the order they were added.",
            "Messages",
        )
        for channel, label in (("sms", "SMS"), ("email", "E-mail"), ("whatsapp", "WhatsApp"))
    ),
    Setting(
        "receiver.host",
        str,
        "127.0.0.1",
        "Webhook receiver address",
        "The network address providers call back on. 127.0.0.1 accepts calls from this computer "
        "only (use a tunnel to reach it from the internet); other addresses expose it to the "
        "network.",
        "Receiver",
        check=_check_not_blank,
    ),
    Setting(
        "receiver.port",
        int,
        8750,
        "Webhook receiver port",
        "The port the webhook receiver listens on.",
        "Receiver",
        minimum=1,
        maximum=65535,
    ),
    Setting(
        "receiver.public_url",
        str,
        "",
        "Public address of the receiver",
        "Where providers reach the receiver from the internet, for example the https address "
        "of a tunnel (cloudflared, ngrok) that forwards to this computer. Empty: this "
        "computer's own address, which only works for providers on the same network.",
        "Receiver",
        check=_check_public_url,
    ),
    Setting(
        "receiver.tls_certificate",
        str,
        "",
        "TLS certificate (PEM file)",
        "With a certificate and its key the receiver answers on https. Not needed behind a "
        "tunnel, which provides https itself.",
        "Receiver",
    ),
    Setting(
        "receiver.tls_key",
        str,
        "",
        "TLS private key (PEM file)",
        "The certificate's private key, unencrypted.",
        "Receiver",
    ),
    Setting(
        "receiver.max_body_kib",
        int,
        1024,
        "Largest webhook accepted (KiB)",
        "Callbacks larger than this are refused before they are read.",
        "Receiver",
        minimum=1,
        maximum=65536,
    ),
    Setting(
        "receiver.sender_rate",
        int,
        50,
        "Callbacks a second from one sender",
        "More than this from one address (after a burst of twice as many) is refused with "
        "'too many requests', which providers retry later. 0: no limit.",
        "Receiver",
        minimum=0,
        maximum=100_000,
    ),
    Setting(
        "security.rotation_overlap_hours",
        int,
        24,
        "Old secret stays valid after a rotation (hours)",
        "When an API key, a webhook signing secret or an outbound webhook's secret is rotated, "
        "the old one keeps working this long beside the new one, so the other side can switch "
        "over without a failed call. 0: the old one stops at once.",
        "Security",
        minimum=0,
        maximum=720,
    ),
    Setting(
        "security.idle_lock_minutes",
        int,
        10,
        "Lock after idle (minutes)",
        "The window locks itself after this many minutes without a key press or mouse move, "
        "and whoever comes back signs in again. 0: never by itself.",
        "Security",
        minimum=0,
        maximum=480,
    ),
    Setting(
        "approvals.refund_above",
        int,
        0,
        "Refunds above this need a second person",
        "A refund larger than this many whole units of its currency waits until a second "
        "person with the Finance or Administrator role approves it. 0: no approval needed.",
        "Security",
        minimum=0,
        maximum=100_000_000,
    ),
    Setting(
        "approvals.gateway_off",
        bool,
        False,
        "Switching a payment gateway off needs a second person",
        "Pausing or removing a payment gateway's connection waits until a second "
        "administrator approves it.",
        "Security",
    ),
    Setting(
        "diagnostics.log_level",
        str,
        "INFO",
        "Log detail",
        "How much goes into the log file. DEBUG helps when support asks for it.",
        "Diagnostics",
        choices=("DEBUG", "INFO", "WARNING"),
    ),
    Setting(
        "backup.folder",
        str,
        "",
        "Backups folder",
        "Where backups of the database are kept, as a full path (a second disk or a shared "
        "folder is safest). Empty: the backups folder inside Switchboard's data folder.",
        "Backups",
        check=_check_folder,
    ),
    Setting(
        "backup.every_hours",
        int,
        24,
        "Back up every (hours)",
        "How often Switchboard backs up the database by itself while it runs. 0: never by "
        "itself (Back up now still works).",
        "Backups",
        minimum=0,
        maximum=720,
    ),
    Setting(
        "backup.keep",
        int,
        14,
        "Automatic backups kept",
        "The newest this many automatic backups are kept and older ones deleted. Backups made "
        "with Back up now are never deleted by Switchboard.",
        "Backups",
        minimum=1,
        maximum=1000,
    ),
)

SETTINGS_BY_KEY: dict[str, Setting[Any]] = {setting.key: setting for setting in SETTINGS}
