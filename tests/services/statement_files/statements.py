"""The sample statements and a short way to read one, or to see why it was refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.domain.reconciliation import FileRejected, ParsedFile
from app.services.statement_files import read_statement

DATA = Path(__file__).parents[2] / "data" / "statements"

WriteFile = Callable[[str, str | bytes], Path]


def read(path: Path, fmt: str, **options: Any) -> ParsedFile:
    return read_statement(path, fmt, source="file:test", **options)


def rejection(path: Path, fmt: str, **options: Any) -> FileRejected:
    with pytest.raises(FileRejected) as caught:
        read(path, fmt, **options)
    return caught.value


def reasons(error: FileRejected) -> list[tuple[int, str, str]]:
    return [(row.row, row.column, row.reason) for row in error.errors]
