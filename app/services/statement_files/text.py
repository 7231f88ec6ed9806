"""From a statement file's bytes to text and, for the CSV formats, to rows.

Files come from banks' and gateways' download buttons and from spreadsheets that re-saved them,
so the encoding is whatever the program wrote: UTF-8 (with or without the BOM Excel writes),
UTF-16 with its BOM (Excel's "Unicode text"), or Windows-1252 / Latin-1 from older bank portals.
UTF-8 is tried first because a Latin-1 reading of UTF-8 never fails but gives mojibake; the
reverse is not true. The delimiter (`,`, `;` or tab) is read from the first line.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from app.domain.reconciliation import FileRejected, RowError

MAX_BYTES = 25 * 1024 * 1024  # a year of a busy school's statements is a few MB
MAX_ROWS = 200_000
MAX_ERRORS = 50  # listed in full; the rest are counted

_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


def reject(name: str, reason: str, *, row: int = 1, column: str = "") -> FileRejected:
    """A problem with the file as a whole; it is reported on its first row."""
    return FileRejected(name, [RowError(row, column, reason)])


def rejected(name: str, errors: list[RowError]) -> FileRejected:
    """Every problem found, the first MAX_ERRORS listed and the rest counted."""
    ordered = sorted(errors, key=lambda error: error.row)
    return FileRejected(name, ordered[:MAX_ERRORS], more=max(0, len(ordered) - MAX_ERRORS))


def read_file(path: Path) -> bytes:
    """The file's bytes, refusing what cannot be a statement before reading it whole."""
    name = path.name
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise reject(
                name,
                f"the file is {size // (1024 * 1024)} MB, more than the "
                f"{MAX_BYTES // (1024 * 1024)} MB a statement can be; download a shorter period",
            )
        data = path.read_bytes()
    except FileRejected:
        raise
    except IsADirectoryError:
        raise reject(name, "this is a folder, not a file") from None
    except FileNotFoundError:
        raise reject(name, "the file is not there any more; choose it again") from None
    except OSError as error:
        reason = error.strerror or "the computer refused"
        raise reject(name, f"the file cannot be read ({reason})") from None
    if not data.strip(b" \t\r\n\x00" + codecs.BOM_UTF8):
        raise reject(name, "the file is empty; download the statement again")
    return data


def decode(name: str, data: bytes) -> str:
    """The file as text, whichever of the usual encodings it was written in."""
    if data.startswith(b"PK\x03\x04"):
        raise reject(
            name,
            "this is an Excel workbook or another zipped file, not a CSV; open it in the "
            "spreadsheet and save it as CSV, or download the CSV version",
        )
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # Windows-1252 is what Excel and most bank portals mean by "ANSI"; it agrees with
            # Latin-1 on every letter and leaves five bytes undefined, which Latin-1 then takes.
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
    if "\x00" in text:
        raise reject(
            name,
            "the file is not text (it may be a PDF or a spreadsheet); download the statement as "
            "CSV, OFX or CAMT.053 instead",
        )
    return text


@dataclass(frozen=True)
class Table:
    """A CSV file's header row and its data rows, each with its 1-based row number (the
    header is row 1, as a spreadsheet shows it)."""

    headers: list[str]
    rows: list[tuple[int, list[str]]] = field(default_factory=list)

    def column(self, *names: str) -> int | None:
        """The index of the first of `names` the header has (case and spacing ignored)."""
        wanted = [_header_key(name) for name in names]
        keys = [_header_key(header) for header in self.headers]
        for key in wanted:
            if key in keys:
                return keys.index(key)
        return None


def _header_key(header: str) -> str:
    return " ".join(header.strip().strip('"').lower().split())


def sniff_delimiter(first_line: str) -> str:
    return max(_DELIMITERS, key=first_line.count)


def read_rows(name: str, text: str) -> list[tuple[int, list[str]]]:
    """Every non-blank row of a CSV text with its 1-based row number, cells stripped."""
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = sniff_delimiter(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    number = 0
    try:
        for cells in reader:
            number += 1
            if number > MAX_ROWS + 1:
                raise reject(
                    name,
                    f"the file has more than {MAX_ROWS:,} rows; download a shorter period",
                )
            stripped = [cell.strip() for cell in cells]
            if any(stripped):
                rows.append((number, stripped))
    except csv.Error as error:
        raise reject(
            name,
            f"the file cannot be read as CSV ({error}); look for a stray quote or a "
            f"missing {_DELIMITERS[delimiter]}",
            row=number + 1,
        ) from None
    return rows


def read_table(name: str, text: str) -> Table:
    """A CSV text with a header row, as a Table."""
    rows = read_rows(name, text)
    if not rows:
        raise reject(name, "the file is empty; download the statement again")
    (_, headers), *data = rows
    return Table([header.strip() for header in headers], data)


def cell(cells: list[str], index: int | None) -> str:
    """The cell at `index`, or "" when the column is absent or the row is short."""
    if index is None or index >= len(cells):
        return ""
    return cells[index]
