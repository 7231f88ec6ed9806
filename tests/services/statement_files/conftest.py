"""Fixtures for the statement file tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.statement_files.statements import WriteFile


@pytest.fixture
def write(tmp_path: Path) -> WriteFile:
    """Write text (UTF-8, line endings kept) or bytes to a file and return its path."""

    def write_file(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8", newline="")
        else:
            path.write_bytes(content)
        return path

    return write_file
