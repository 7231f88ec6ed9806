"""Logging: a rotating file in the log folder, structured fields, and secrets redacted.

Redaction happens in the formatter every handler uses, on the whole formatted line (message,
structured fields and traceback), so no code path can write a secret by forgetting to redact it.
Two nets: every secret value the credential store hands out or takes in is remembered and
replaced wherever it appears, and values that look like credentials (bearer tokens, API keys,
passwords in URLs or query strings) are masked even if Switchboard never saw them as secrets.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TextIO

MASK = "***"
LOG_FILE = "switchboard.log"
# Shorter values are too likely to be ordinary words or numbers to be worth masking everywhere.
MIN_SECRET_LENGTH = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{8,}"), rf"\1_\2_{MASK}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), f"whsec_{MASK}"),
    # A signed JSON Web Token (an OAuth assertion, an ID or access token): header.claims.sig.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), f"eyJ{MASK}"),
    (re.compile(r"(://[^:/@\s]+):[^@/\s]+@"), rf"\1:{MASK}@"),
    (
        re.compile(
            r"(?i)\b(password|passwd|secret|token|api[_-]?key|access[_-]?token|refresh[_-]?token|"
            r"client[_-]?secret|signature|authorization|assertion)(\"?\s*[=:]\s*\"?)([^\s&\"',;]+)"
        ),
        rf"\1\2{MASK}",
    ),
)


class Redactor:
    """Knows the secret values this process has handled and masks them, and credential-shaped
    text, in any string."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                # Longest first, so a secret that contains another is masked whole.
                alternatives = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))

    def redact(self, text: str) -> str:
        text = self.mask_known(text)
        for shape, replacement in _PATTERNS:
            text = shape.sub(replacement, text)
        return text

    def mask_known(self, text: str) -> str:
        """Only the secret values this process has handled masked: for sentences people read,
        which the credential-shaped patterns would garble ("access token: Session has…")."""
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text


REDACTOR = Redactor()


class StructuredFormatter(logging.Formatter):
    """`2026-11-23T09:14:02.120Z INFO switchboard.store message key=value ...`, redacted."""

    _STANDARD: ClassVar[frozenset[str]] = frozenset(
        logging.LogRecord("", 0, "", 0, "", (), None).__dict__
    ) | {"message", "asctime", "taskName"}

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        stamp = f"{when}.{int(record.msecs):03d}Z"
        line = f"{stamp} {record.levelname} {record.name} {record.getMessage()}"
        fields = {k: v for k, v in record.__dict__.items() if k not in self._STANDARD}
        if fields:
            line += " " + " ".join(f"{k}={_field(v)}" for k, v in sorted(fields.items()))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self._redactor.redact(line)


def _field(value: Any) -> str:
    text = str(value)
    return repr(text) if (not text or any(ch.isspace() for ch in text)) else text


def setup_logging(log_dir: Path, level: str = "INFO", *, stream: TextIO | None = None) -> Path:
    """Send Switchboard's logs to a rotating file (and optionally a stream); returns the file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_FILE
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_switchboard", False):
            root.removeHandler(handler)
            handler.close()
    formatter = StructuredFormatter()
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(
            path, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8"
        )
    ]
    if stream is not None:
        handlers.append(logging.StreamHandler(stream))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._switchboard = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    set_level(level)
    _install_thread_hook()
    return path


def set_level(level: str) -> None:
    """How much of Switchboard's own logging is kept (the `diagnostics.log_level` setting)."""
    logging.getLogger("switchboard").setLevel(level)


def _install_thread_hook() -> None:
    def log_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        logging.getLogger("switchboard.crash").error(
            "uncaught exception in thread %s",
            args.thread.name if args.thread else "?",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        )

    threading.excepthook = log_thread_exception
