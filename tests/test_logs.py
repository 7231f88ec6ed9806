"""Logs are structured and never carry a secret, even one passed by mistake."""

from __future__ import annotations

import logging
from pathlib import Path

from app.logs import REDACTOR, Redactor, setup_logging


def test_known_secret_values_are_masked_wherever_they_appear() -> None:
    redactor = Redactor()
    redactor.add("hunter2-very-secret")
    assert redactor.redact("connecting with hunter2-very-secret now") == "connecting with *** now"


def test_credential_shaped_text_is_masked_even_if_never_registered() -> None:
    redactor = Redactor()
    line = (
        "Authorization: Bearer abcdefghijklmnop key=sk_test_123456789abc "
        "https://user:pa55word@example.org/x?api_key=zzz123&page=2 whsec_abcdefghijkl "
        "body=grant_type=jwt-bearer&assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJmY20ifQ.c2lnbmF0dXJl "
        "sent eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJmY20ifQ.c2lnbmF0dXJl"
    )
    redacted = redactor.redact(line)
    for secret in (
        "abcdefghijklmnop",
        "sk_test_123456789abc",
        "pa55word",
        "zzz123",
        "whsec_abcdefghijkl",
        "eyJpc3MiOiJmY20ifQ",  # a signed token's claims, with or without a name before it
        "c2lnbmF0dXJl",
    ):
        assert secret not in redacted
    assert "page=2" in redacted


def test_the_log_file_is_structured_and_redacted_including_tracebacks(tmp_path: Path) -> None:
    path = setup_logging(tmp_path / "logs")
    REDACTOR.add("planted-secret-123456")
    log = logging.getLogger("switchboard.test")
    log.info("calling provider", extra={"connection": 7, "token": "planted-secret-123456"})
    try:
        raise RuntimeError("provider said planted-secret-123456 is wrong")
    except RuntimeError:
        log.exception("call failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = path.read_text()
    assert "connection=7" in text
    assert "Traceback" in text
    assert "planted-secret-123456" not in text
