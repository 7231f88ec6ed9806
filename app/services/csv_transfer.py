"""CSV import and export of students, guardians, teachers and lessons.

An import is all or nothing. Every row is saved with the same `apply_*` functions the edit
dialogs use, each inside its own SAVEPOINT, so a bad row is undone and the rows after it are
still checked: the office sees every problem in the file at once. If any row failed, or the run
is only a preview, the whole transaction is rolled back. Preview and import are one code path,
so what the preview promises is exactly what the import does.

Files are UTF-8 (with or without the BOM Excel writes), with a header row; the delimiter (`,`,
`;` or tab) is read from the header line. A row whose `ref` names an existing record updates
it; a column the file leaves out keeps that field as it is (a blank cell in a column that is
there clears it). Export writes the same columns, so an exported file imports back unchanged.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.domain.access import Permission
from app.domain.clock import skipped_time, wall_time
from app.domain.errors import FieldError, SwitchboardError, ValidationFailed
from app.domain.school import (
    Channel,
    GuardianDraft,
    LessonDraft,
    LessonStatus,
    StudentDraft,
    TeacherDraft,
)
from app.domain.validation import (
    check_length,
    check_phone,
    parse_bool,
    parse_date,
    parse_positive_int,
    parse_time,
)
from app.services import access, audit
from app.services.events import EventHub
from app.services.progress import Progress
from app.services.school import (
    TOPIC_GUARDIANS,
    TOPIC_LESSONS,
    TOPIC_ROOMS,
    TOPIC_STUDENTS,
    TOPIC_TEACHERS,
    apply_guardian,
    apply_lesson,
    apply_student,
    apply_teacher,
    find_by_ref,
    lesson_clashes,
    link_guardian,
    next_ref,
    room_named,
)
from app.services.settings import SettingsService
from app.store.database import Database
from app.store.school import Guardian, Lesson, LessonStudent, Student, StudentGuardian, Teacher

T = TypeVar("T")
R = TypeVar("R", Student, Guardian, Teacher, Lesson)

MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 50_000
FILE_NAME_MAX = 255  # of a file's name, as the audit trail keeps it
# Longest lesson the file may state in minutes before the domain's own limit speaks; only here
# so an absurd number is refused as a number rather than overflowing a timedelta.
_DURATION_CEILING = 24 * 60
_RELATIONSHIP_MAX = 40  # the width of student_guardians.relationship
# A cell starting with one of these may be run as a formula by a spreadsheet.
_FORMULA_START = "=+-@\t\r"
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
_WORD = re.compile(r"\w")


class CsvKind(StrEnum):
    STUDENTS = "students"
    GUARDIANS = "guardians"
    TEACHERS = "teachers"
    LESSONS = "lessons"


COLUMNS: Mapping[CsvKind, tuple[str, ...]] = {
    CsvKind.STUDENTS: (
        "ref",
        "first_name",
        "last_name",
        "date_of_birth",
        "grade",
        "email",
        "phone",
        "active",
        "notes",
    ),
    CsvKind.GUARDIANS: (
        "ref",
        "first_name",
        "last_name",
        "email",
        "phone",
        "preferred_channel",
        "language",
        "students",
        "relationship",
        "primary",
    ),
    CsvKind.TEACHERS: (
        "ref",
        "first_name",
        "last_name",
        "email",
        "phone",
        "subjects",
        "timezone",
        "active",
    ),
    CsvKind.LESSONS: (
        "ref",
        "title",
        "teacher",
        "date",
        "start",
        "duration_minutes",
        "end",
        "room",
        "students",
        "status",
        "online",
        "notes",
    ),
}
"""The columns of each kind of file, in the order export writes them."""

REQUIRED: Mapping[CsvKind, tuple[str, ...]] = {
    CsvKind.STUDENTS: ("first_name", "last_name"),
    CsvKind.GUARDIANS: ("first_name", "last_name"),
    CsvKind.TEACHERS: ("first_name", "last_name"),
    CsvKind.LESSONS: ("title", "teacher", "date", "start"),
}
"""Columns that must be in the header and have a value on every row."""

# Domain field names (FieldError.field) as the CSV columns the user sees.
_FIELD_COLUMNS: Mapping[CsvKind, Mapping[str, str]] = {
    CsvKind.STUDENTS: {"guardians": ""},
    CsvKind.GUARDIANS: {},
    CsvKind.TEACHERS: {},
    CsvKind.LESSONS: {
        "teacher_id": "teacher",
        "starts_at": "start",
        "room_id": "room",
        "student_ids": "students",
    },
}

_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}

# How to fix a double booking, by the domain field the clash is reported under.
_CLASH_HINTS = {
    "teacher_id": "change this row's time or teacher",
    "room_id": "change this row's time or room",
    "student_ids": "change this row's time or take that student off it",
}


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """One problem in a file. `row` is numbered as a spreadsheet shows it (the header is row 1;
    0 means the file as a whole); `column` is the column's name, or "" for the whole row."""

    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"Row {self.row}" if self.row else "The file"
        return (
            f"{where}, {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"
        )


@dataclass(frozen=True)
class ImportPreview:
    """What importing the file would do, found by a full dry run that changed nothing.

    `rows` holds every data row as text (blank lines left out), `row_numbers` the spreadsheet
    row number of each, so a table can mark the rows that `errors` name. `versions` holds the
    version of every existing record the file updates, so the import can tell if one changed
    after this preview."""

    kind: CsvKind
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    row_numbers: tuple[int, ...]
    created: int
    updated: int
    new_rooms: tuple[str, ...]
    errors: tuple[RowError, ...]
    versions: tuple[tuple[str, int], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class ImportResult:
    kind: CsvKind
    created: int
    updated: int
    new_rooms: tuple[str, ...]


class ImportRejected(SwitchboardError):
    """The file has problems, so nothing was imported; `errors` lists every one."""

    def __init__(self, errors: Iterable[RowError]) -> None:
        self.errors = tuple(errors)
        count = len(self.errors)
        noun = "problem" if count == 1 else "problems"
        first = f" The first: {self.errors[0]}" if self.errors else ""
        super().__init__(f"The file has {count} {noun}; nothing was imported.{first}")


# --- reading the file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    columns: tuple[str, ...]  # as written in the header
    keys: tuple[str, ...]  # normalized: "First name" -> "first_name"
    rows: tuple[tuple[int, tuple[str, ...]], ...]  # (spreadsheet row, cells) of well-formed rows
    shown: tuple[tuple[int, tuple[str, ...]], ...]  # every non-blank data row, for the preview
    errors: tuple[RowError, ...]
    usable: bool  # False when the header (or the file itself) is beyond repair


# Headings people write that mean a column under another name.
_ALIASES = {"e_mail": "email"}


def _normalize(name: str) -> str:
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return _ALIASES.get(key, key)


def _unguard(value: str) -> str:
    """Undo the apostrophe that export (or a careful person) puts before a formula character."""
    if len(value) > 1 and value[0] == "'" and value[1] in _FORMULA_START:
        return value[1:]
    return value


def _guard(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula: prefix an apostrophe when the cell
    starts like one (a plain number or phone number such as +263 77 123 4567 is left alone)."""
    if not value:
        return value
    if value[0] in "=@\t\r":
        return "'" + value
    if value[0] in "+-" and not (_PLAIN_NUMBER.fullmatch(value) or check_phone(value) is None):
        return "'" + value
    if value[0] == "'" and len(value) > 1 and value[1] in _FORMULA_START:
        return "'" + value  # so the importer's unguarding gives back exactly this value
    return value


def _failed(error: RowError) -> _Table:
    return _Table((), (), (), (), (error,), usable=False)


def _read_table(kind: CsvKind, data: bytes) -> _Table:
    """Decode and split the file; check the header and the shape of every row."""
    if len(data) > MAX_BYTES:
        return _failed(
            RowError(
                0,
                "",
                f"The file is {len(data) / 1024 / 1024:.1f} MB; the most is "
                f"{MAX_BYTES // 1024 // 1024} MB, so split it into smaller files.",
            )
        )
    lines = sum(1 for line in data.splitlines() if line.strip())
    if lines > MAX_ROWS + 1:
        return _failed(
            RowError(
                0,
                "",
                f"The file has more than {MAX_ROWS:,} rows; split it into files of at most "
                f"{MAX_ROWS:,} rows and import them one after another.",
            )
        )
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _failed(
            RowError(
                body[: exc.start].count(b"\n") + 1,
                "",
                "The file is not saved as UTF-8 text; in Excel use Save As with the type "
                "“CSV UTF-8 (Comma delimited)” and import that file.",
            )
        )
    if "\x00" in text:  # UTF-16 without its byte order mark decodes to text full of NULs
        return _failed(
            RowError(
                text[: text.index("\x00")].count("\n") + 1,
                "",
                "The file is not saved as UTF-8 text; in Excel use Save As with the type "
                "“CSV UTF-8 (Comma delimited)” and import that file.",
            )
        )
    allowed = COLUMNS[kind]
    empty = RowError(
        1,
        "",
        f"The file is empty; it needs a header row such as {','.join(allowed)} "
        "and a row for each record.",
    )
    # The header is the first line with a word on it; its commonest separator is the file's.
    header_line = next((line for line in text.splitlines() if _WORD.search(line)), None)
    if header_line is None:
        return _failed(empty)
    delimiter = max(_DELIMITER_NAMES, key=header_line.count)

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: tuple[int, tuple[str, ...]] | None = None
    rows: list[tuple[int, tuple[str, ...]]] = []
    shown: list[tuple[int, tuple[str, ...]]] = []
    errors: list[RowError] = []
    number = 0
    try:
        for number, record in enumerate(reader, start=1):
            cells = tuple(_unguard(cell) for cell in record)
            if not any(cell.strip() for cell in cells):
                continue  # a blank line, or one with only delimiters
            if header is None:
                header = (number, cells)
                continue
            width = len(header[1])
            shown.append((number, (cells + ("",) * width)[:width]))
            if len(cells) != width:
                errors.append(
                    RowError(
                        number,
                        "",
                        f"This row has {len(cells)} value{'' if len(cells) == 1 else 's'} but "
                        f"the header has {width} columns; "
                        f"look for a stray or missing {_DELIMITER_NAMES[delimiter]} or quote.",
                    )
                )
                continue
            rows.append((number, cells))
    except csv.Error as exc:
        return _failed(
            RowError(
                number + 1,
                "",
                f"This row cannot be read as CSV ({exc}); check its quotes, or save the file "
                "again from your spreadsheet.",
            )
        )
    if header is None:
        return _failed(empty)
    header_row, names = header
    keys = tuple(_normalize(name) for name in names)
    header_errors: list[RowError] = []
    for position, (name, key) in enumerate(zip(names, keys, strict=True), start=1):
        if key not in allowed:
            problem = (
                f"{name.strip()!r} is not a column of a {kind.value} file; rename or delete it"
                if key
                else f"Column {position} has no heading; give it one or delete the column"
            )
            header_errors.append(
                RowError(
                    header_row,
                    name.strip() or f"column {position}",
                    f"{problem} (the columns are {', '.join(allowed)}).",
                )
            )
        elif key in keys[: position - 1]:
            header_errors.append(
                RowError(
                    header_row,
                    key,
                    f"The column {key} appears more than once; keep one and delete the others.",
                )
            )
    for key in REQUIRED[kind]:
        if key not in keys:
            header_errors.append(
                RowError(
                    header_row, key, f"The file has no {key} column; add a column headed {key}."
                )
            )
    if kind is CsvKind.LESSONS and "duration_minutes" not in keys and "end" not in keys:
        header_errors.append(
            RowError(
                header_row,
                "duration_minutes",
                "The file has neither a duration_minutes nor an end column; "
                "add one of them to say how long each lesson is.",
            )
        )
    if not shown and not errors:
        errors.append(
            RowError(
                header_row + 1,
                "",
                "The file has a header row but no data rows; add a row for each record below it.",
            )
        )
    return _Table(
        columns=tuple(name.strip() for name in names),
        keys=keys,
        rows=tuple(rows),
        shown=tuple(shown),
        errors=tuple(header_errors + errors),
        usable=not header_errors,
    )


# --- applying rows -------------------------------------------------------------------------------


class _Cells:
    """One row's values by column key. A column the file lacks reads as blank through [],
    and as the given fallback through `get` (updates keep what the file does not mention)."""

    def __init__(self, keys: Sequence[str], values: Sequence[str]) -> None:
        self._values = dict(zip(keys, values, strict=True))

    def __getitem__(self, key: str) -> str:
        value = self._values.get(key, "")
        # Notes keep their spacing so an exported file imports back unchanged.
        return value if key == "notes" else value.strip()

    def has(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str, absent: str) -> str:
        return self[key] if key in self._values else absent


class _RowCheck:
    """The problems found in one row, each under the column the user sees."""

    def __init__(self, row: int, kind: CsvKind) -> None:
        self.row = row
        self.kind = kind
        self.errors: list[RowError] = []

    def fail(self, column: str, reason: str) -> None:
        self.errors.append(RowError(self.row, column, reason))

    def parse(self, column: str, text: str, parse: Callable[[str], T], blank: T) -> T:
        """`parse(text)`, or `blank` for an empty cell; a ValueError becomes this row's error."""
        if not text:
            return blank
        try:
            return parse(text)
        except ValueError as exc:
            self.fail(column, str(exc))
            return blank

    def required(self, column: str, text: str, reason: str) -> bool:
        if not text:
            self.fail(column, reason)
        return bool(text)

    def rejected(
        self,
        errors: Iterable[FieldError],
        hints: Mapping[FieldError, str] | None = None,
        **columns: str,
    ) -> None:
        """Record the domain's errors, keeping only the first problem reported per column;
        `hints` adds how to fix an error whose message only says what is wrong."""
        mapping = {**_FIELD_COLUMNS[self.kind], **columns}
        for error in errors:
            if error.field in mapping:
                column = mapping[error.field]
            else:
                column = error.field if error.field in COLUMNS[self.kind] else ""
            if column and any(seen.column == column for seen in self.errors):
                continue
            hint = (hints or {}).get(error)
            self.fail(column, f"{error.message.rstrip('.')}; {hint}." if hint else error.message)


@dataclass
class _Saved:
    created: bool
    changed: dict[str, list[int]] = field(default_factory=dict)
    new_room: str | None = None


@dataclass
class _Outcome:
    created: int = 0
    updated: int = 0
    new_rooms: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    changed: dict[str, set[int]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # ref -> version of the row it updates


class _RolledBack(Exception):
    """Carries a dry run's (or a rejected import's) outcome out of the rolled-back transaction."""

    def __init__(self, outcome: _Outcome) -> None:
        super().__init__("rolled back")
        self.outcome = outcome


def _bump(ref: str) -> str:
    match = re.fullmatch(r"(.*?)(\d+)", ref)
    if match is None:
        return ref + "-1"
    digits = match.group(2)
    return f"{match.group(1)}{int(digits) + 1:0{len(digits)}d}"


def _refs(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def _parse_status(text: str) -> LessonStatus:
    try:
        return LessonStatus(text.lower())
    except ValueError:
        choices = ", ".join(status.value for status in LessonStatus)
        raise ValueError(f"Status must be one of {choices}, not {text!r}.") from None


def _parse_channel(text: str) -> Channel:
    try:
        return Channel(text.lower())
    except ValueError:
        choices = ", ".join(channel.value for channel in Channel)
        raise ValueError(f"Preferred channel must be one of {choices}, not {text!r}.") from None


class _Batch:
    """Applies a file's rows in one session; collects every row's problems."""

    def __init__(
        self,
        session: Session,
        kind: CsvKind,
        zone: ZoneInfo,
        table: _Table,
        progress: Progress,
        expected: Mapping[str, int] | None,
    ) -> None:
        self.session = session
        self.progress = progress
        self.expected = expected
        self.kind = kind
        self.zone = zone
        self.table = table
        self.outcome = _Outcome()
        self._seen: dict[str, int] = {}  # ref -> the first row that names it
        self._last_ref: dict[type, str] = {}  # per model, the ref most recently handed out
        ref_at = table.keys.index("ref") if "ref" in table.keys else None
        # Refs the file names: a generated ref must not take one a later row is about to claim.
        self._file_refs = (
            {cells[ref_at].strip() for _, cells in table.rows} if ref_at is not None else set()
        )

    def run(self) -> _Outcome:
        handler = {
            CsvKind.STUDENTS: self._student,
            CsvKind.GUARDIANS: self._guardian,
            CsvKind.TEACHERS: self._teacher,
            CsvKind.LESSONS: self._lesson,
        }[self.kind]
        self.progress.start(len(self.table.rows))
        for number, values in self.table.rows:
            self.progress.check()
            self.progress.advance()
            check = _RowCheck(number, self.kind)
            savepoint = self.session.begin_nested()
            saved: _Saved | None = None
            try:
                saved = handler(_Cells(self.table.keys, values), check)
            except ValidationFailed as exc:
                check.rejected(exc.errors)
            if check.errors or saved is None:
                savepoint.rollback()
                self.outcome.errors.extend(check.errors)
                continue
            savepoint.commit()
            if saved.created:
                self.outcome.created += 1
            else:
                self.outcome.updated += 1
            if saved.new_room is not None:
                self.outcome.new_rooms.append(saved.new_room)
            for topic, ids in saved.changed.items():
                self.outcome.changed.setdefault(topic, set()).update(ids)
        self.outcome.errors.extend(self.table.errors)
        self.outcome.errors.sort(key=lambda error: error.row)
        return self.outcome

    # --- shared steps ---

    def _existing(self, model: type[R], ref: str, check: _RowCheck) -> tuple[bool, R | None]:
        """(usable, row): the record this row updates, or None for a new one; not usable when
        an earlier row of the file already named this ref."""
        if not ref:
            return True, None
        first = self._seen.setdefault(ref, check.row)
        if first != check.row:
            check.fail(
                "ref",
                f"The reference {ref} is already used on row {first}; "
                "a record may appear only once in a file, so merge or delete one of the rows.",
            )
            return False, None
        row = find_by_ref(self.session, model, ref)
        version: int | None = getattr(row, "version", None)
        if version is not None:
            self.outcome.versions[ref] = version
        if self.expected is not None and self.expected.get(ref) != version:
            happened = (
                "deleted" if row is None else "added" if ref not in self.expected else "changed"
            )
            check.fail(
                "ref",
                f"{ref} was {happened} by someone after this file was checked; "
                "import the file again to see the latest.",
            )
            return False, None
        return True, row

    def _new_ref(self, model: type[Student | Guardian | Teacher | Lesson]) -> str:
        # next_ref reads every ref of the table, so ask once and count on from there: nothing
        # above its answer exists except what this import creates, which this counter or the
        # file's own refs (skipped) account for.
        last = self._last_ref.get(model)
        ref = next_ref(self.session, model) if last is None else _bump(last)
        while ref in self._file_refs:
            ref = _bump(ref)
        self._last_ref[model] = ref
        return ref

    def _students(self, text: str, check: _RowCheck) -> list[Student]:
        refs = _refs(text)
        found = {ref: find_by_ref(self.session, Student, ref) for ref in refs}
        missing = [ref for ref, student in found.items() if student is None]
        if missing:
            what = (
                f"There is no student with the reference {missing[0]}"
                if len(missing) == 1
                else f"There are no students with the references {', '.join(missing)}"
            )
            check.fail(
                "students",
                f"{what}; correct the reference or import the students first "
                "(separate several references with ;).",
            )
        return [found[ref] for ref in refs if found[ref] is not None]  # type: ignore[misc]

    # --- one handler per kind ---

    def _student(self, cells: _Cells, check: _RowCheck) -> _Saved | None:
        usable, row = self._existing(Student, cells["ref"], check)
        if not usable:
            return None
        base = _student_draft(row) if row is not None else StudentDraft("", "")
        draft = StudentDraft(
            first_name=cells["first_name"],
            last_name=cells["last_name"],
            ref=cells["ref"],
            date_of_birth=(
                check.parse("date_of_birth", cells["date_of_birth"], parse_date, None)
                if cells.has("date_of_birth")
                else base.date_of_birth
            ),
            grade=cells.get("grade", base.grade),
            email=cells.get("email", base.email),
            phone=cells.get("phone", base.phone),
            notes=cells.get("notes", base.notes),
            active=_active(cells, check, base.active),
        )
        if row is not None and draft == base and not check.errors:
            return _Saved(created=False)
        if row is None and not draft.ref:
            draft = replace(draft, ref=self._new_ref(Student))
        try:
            saved = apply_student(self.session, draft, row, link_guardians=False)
        except ValidationFailed as exc:
            check.rejected(exc.errors)
            return None
        return _Saved(row is None, {TOPIC_STUDENTS: [saved.id]})

    def _guardian(self, cells: _Cells, check: _RowCheck) -> _Saved | None:
        usable, row = self._existing(Guardian, cells["ref"], check)
        if not usable:
            return None
        base = _guardian_draft(row) if row is not None else None
        email = cells.get("email", base.email if base else "")
        channel: Channel | None = base.preferred_channel if base else None
        if cells.has("preferred_channel"):
            channel = check.parse(
                "preferred_channel", cells["preferred_channel"], _parse_channel, None
            )
        draft = GuardianDraft(
            first_name=cells["first_name"],
            last_name=cells["last_name"],
            ref=cells["ref"],
            email=email,
            phone=cells.get("phone", base.phone if base else ""),
            # Not given: e-mail when there is an address, else a text message.
            preferred_channel=channel or (Channel.EMAIL if email else Channel.SMS),
            language=cells.get("language", base.language if base else "") or "en",
        )
        students = self._students(cells["students"], check)
        relationship = cells["relationship"]
        if problem := check_length(relationship, "Relationship", _RELATIONSHIP_MAX):
            check.fail("relationship", problem)
        primary = check.parse(
            "primary", cells["primary"], lambda t: parse_bool(t, "Primary"), False
        )
        guardian = row
        if draft != base or check.errors:
            if row is None and not draft.ref:
                draft = replace(draft, ref=self._new_ref(Guardian))
            try:
                guardian = apply_guardian(self.session, draft, row)
            except ValidationFailed as exc:
                # A channel the importer chose from the contacts given only repeats the
                # problem of the missing contact, so it is not reported on its own.
                check.rejected(
                    e for e in exc.errors if channel is not None or e.field != "preferred_channel"
                )
                return None
        if check.errors or guardian is None:
            return None
        for student in students:
            linked = any(link.guardian_id == guardian.id for link in student.guardian_links)
            # A blank relationship keeps an existing tie's label; a new tie is a "guardian".
            label = relationship or ("" if linked else "guardian")
            link_guardian(self.session, student, guardian, label, primary)
        changed = {TOPIC_GUARDIANS: [guardian.id]}
        if students:
            changed[TOPIC_STUDENTS] = [student.id for student in students]
        return _Saved(row is None, changed)

    def _teacher(self, cells: _Cells, check: _RowCheck) -> _Saved | None:
        usable, row = self._existing(Teacher, cells["ref"], check)
        if not usable:
            return None
        base = _teacher_draft(row) if row is not None else TeacherDraft("", "")
        draft = TeacherDraft(
            first_name=cells["first_name"],
            last_name=cells["last_name"],
            ref=cells["ref"],
            email=cells.get("email", base.email),
            phone=cells.get("phone", base.phone),
            subjects=cells.get("subjects", base.subjects),
            timezone=cells.get("timezone", base.timezone),
            active=_active(cells, check, base.active),
        )
        if row is not None and draft == base and not check.errors:
            return _Saved(created=False)
        if row is None and not draft.ref:
            draft = replace(draft, ref=self._new_ref(Teacher))
        try:
            saved = apply_teacher(self.session, draft, row)
        except ValidationFailed as exc:
            check.rejected(exc.errors)
            return None
        # Lessons show their teacher's name, so they change with the teacher.
        return _Saved(row is None, {TOPIC_TEACHERS: [saved.id], TOPIC_LESSONS: []})

    def _lesson(self, cells: _Cells, check: _RowCheck) -> _Saved | None:
        usable, row = self._existing(Lesson, cells["ref"], check)
        if not usable:
            return None
        teacher = self._teacher_named(cells["teacher"], check)
        day: date | None = None
        start: time | None = None
        if check.required("date", cells["date"], "Date is required; write it as YYYY-MM-DD."):
            day = check.parse("date", cells["date"], parse_date, None)
        if check.required(
            "start", cells["start"], "Start is required; write it as HH:MM (24-hour), like 14:30."
        ):
            start = check.parse("start", cells["start"], parse_time, None)
        duration_text, end_text = cells["duration_minutes"], cells["end"]
        ends_column = "end" if end_text else "duration_minutes"
        if duration_text and end_text:
            check.fail("end", "Give either duration_minutes or end, not both; clear one of them.")
        elif not duration_text and not end_text:
            check.fail(
                "duration_minutes",
                "Give the lesson's length in duration_minutes or its end time in end.",
            )
        duration = check.parse(
            "duration_minutes",
            duration_text,
            lambda t: parse_positive_int(t, "Duration in minutes", _DURATION_CEILING),
            None,
        )
        end = check.parse("end", end_text, parse_time, None)

        base = _lesson_draft(row) if row is not None else None
        student_ids = base.student_ids if base else ()
        if cells.has("students"):
            student_ids = tuple(student.id for student in self._students(cells["students"], check))
        status = base.status if base else LessonStatus.SCHEDULED
        if cells.has("status"):
            status = check.parse("status", cells["status"], _parse_status, LessonStatus.SCHEDULED)
        online = base.online if base else False
        if cells.has("online"):
            online = check.parse(
                "online", cells["online"], lambda t: parse_bool(t, "Online"), False
            )
        room_id = base.room_id if base else None
        new_room: str | None = None
        if cells.has("room"):
            room_id, new_room = self._room(cells["room"], check)

        starts_at = ends_at = None
        if day is not None and start is not None:
            starts_at = self._school_time(day, start, "start", check)
            if starts_at is not None and duration is not None and not end_text:
                ends_at = (starts_at.astimezone(UTC) + timedelta(minutes=duration)).astimezone(
                    self.zone
                )
            elif end is not None and not duration_text:
                ends_at = self._school_time(day, end, "end", check)
        if starts_at is None or ends_at is None:
            # Without both times there is nothing to book; still report the row's other problems.
            placeholder = datetime(2000, 1, 1, tzinfo=UTC)
            unbooked = LessonDraft(
                title=cells["title"],
                teacher_id=0,
                starts_at=placeholder,
                ends_at=placeholder + timedelta(hours=1),
                ref=cells["ref"],
                student_ids=student_ids,
                notes=cells.get("notes", base.notes if base else ""),
            )
            check.rejected(error for error in unbooked.problems() if error.field != "ends_at")
            return None
        draft = LessonDraft(
            title=cells["title"],
            teacher_id=teacher.id if teacher is not None else 0,
            starts_at=starts_at,
            ends_at=ends_at,
            ref=cells["ref"],
            room_id=room_id,
            student_ids=student_ids,
            status=status,
            online=online,
            notes=cells.get("notes", base.notes if base else ""),
        )
        if base is not None and _sorted(draft) == base and not check.errors:
            return _Saved(created=False)
        if row is None and not draft.ref:
            draft = replace(draft, ref=self._new_ref(Lesson))
        try:
            saved = apply_lesson(self.session, draft, self.zone, row)
        except ValidationFailed as exc:
            own_id = row.id if row is not None else None
            hints = {
                clash: _CLASH_HINTS.get(clash.field, "change this row's time")
                for clash in lesson_clashes(self.session, draft, own_id, self.zone)
            }
            check.rejected(exc.errors, hints, ends_at=ends_column)
            return None
        changed = {TOPIC_LESSONS: [saved.id]}
        if new_room is not None and room_id is not None:
            changed[TOPIC_ROOMS] = [room_id]
        return _Saved(row is None, changed, new_room)

    def _teacher_named(self, ref: str, check: _RowCheck) -> Teacher | None:
        if not check.required(
            "teacher", ref, "Teacher is required; give the teacher's reference, like T-0001."
        ):
            return None
        teacher = find_by_ref(self.session, Teacher, ref)
        if teacher is None:
            check.fail(
                "teacher",
                f"There is no teacher with the reference {ref}; correct it or "
                "import the teachers first.",
            )
        return teacher

    def _room(self, name: str, check: _RowCheck) -> tuple[int | None, str | None]:
        """(room id, its name if this row creates it); a blank name means no room."""
        if not name:
            return None, None
        try:
            room = room_named(self.session, name, create=False)
            if room is not None:
                return room.id, None
            room = room_named(self.session, name, create=True)
        except ValidationFailed as exc:
            check.rejected(exc.errors)
            return None, None
        assert room is not None
        return room.id, room.name

    def _school_time(self, day: date, at: time, column: str, check: _RowCheck) -> datetime | None:
        moment = wall_time(day, at, self.zone)
        if moment is None:
            check.fail(column, skipped_time(day, at, self.zone))
        return moment


# Drafts are built straight from the rows (not through the service's records) so that checking
# an import does not load every row's relationships.


def _student_draft(row: Student) -> StudentDraft:
    return StudentDraft(
        first_name=row.first_name,
        last_name=row.last_name,
        ref=row.ref,
        date_of_birth=row.date_of_birth,
        grade=row.grade,
        email=row.email,
        phone=row.phone,
        notes=row.notes,
        active=row.active,
    )


def _guardian_draft(row: Guardian) -> GuardianDraft:
    return GuardianDraft(
        first_name=row.first_name,
        last_name=row.last_name,
        ref=row.ref,
        email=row.email,
        phone=row.phone,
        preferred_channel=Channel(row.preferred_channel),
        language=row.language,
    )


def _teacher_draft(row: Teacher) -> TeacherDraft:
    return TeacherDraft(
        first_name=row.first_name,
        last_name=row.last_name,
        ref=row.ref,
        email=row.email,
        phone=row.phone,
        subjects=row.subjects,
        timezone=row.timezone,
        active=row.active,
    )


def _lesson_draft(row: Lesson) -> LessonDraft:
    return LessonDraft(
        title=row.title,
        teacher_id=row.teacher_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        ref=row.ref,
        room_id=row.room_id,
        student_ids=tuple(sorted(link.student_id for link in row.student_links)),
        status=LessonStatus(row.status),
        online=row.online,
        notes=row.notes,
    )


def _sorted(draft: LessonDraft) -> LessonDraft:
    """The draft with its students in id order, to compare with a stored lesson."""
    return replace(draft, student_ids=tuple(sorted(draft.student_ids)))


def _active(cells: _Cells, check: _RowCheck, current: bool) -> bool:
    if not cells.has("active"):
        return current
    return check.parse("active", cells["active"], lambda t: parse_bool(t, "Active"), True)


# --- export --------------------------------------------------------------------------------------


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _export_rows(session: Session, kind: CsvKind, zone: ZoneInfo) -> Iterable[Sequence[str]]:
    if kind is CsvKind.STUDENTS:
        for student in session.scalars(select(Student).order_by(Student.ref)):
            yield (
                student.ref,
                student.first_name,
                student.last_name,
                student.date_of_birth.isoformat() if student.date_of_birth else "",
                student.grade,
                student.email,
                student.phone,
                _yes_no(student.active),
                student.notes,
            )
    elif kind is CsvKind.GUARDIANS:
        guardians = session.scalars(
            select(Guardian)
            .options(selectinload(Guardian.student_links).selectinload(StudentGuardian.student))
            .order_by(Guardian.ref)
        )
        for guardian in guardians:
            links = sorted(guardian.student_links, key=lambda link: link.student.ref)
            labels = {link.relationship_label for link in links}
            primaries = {link.is_primary for link in links}
            yield (
                guardian.ref,
                guardian.first_name,
                guardian.last_name,
                guardian.email,
                guardian.phone,
                guardian.preferred_channel,
                guardian.language,
                ";".join(link.student.ref for link in links),
                # One row holds one relationship and one primary flag; when the ties differ the
                # cell stays blank, which the importer reads as "leave the ties as they are".
                labels.pop() if len(labels) == 1 else "",
                _yes_no(primaries.pop()) if len(primaries) == 1 else "",
            )
    elif kind is CsvKind.TEACHERS:
        for teacher in session.scalars(select(Teacher).order_by(Teacher.ref)):
            yield (
                teacher.ref,
                teacher.first_name,
                teacher.last_name,
                teacher.email,
                teacher.phone,
                teacher.subjects,
                teacher.timezone,
                _yes_no(teacher.active),
            )
    else:
        lessons = session.scalars(
            select(Lesson)
            .options(
                selectinload(Lesson.teacher),
                selectinload(Lesson.room),
                selectinload(Lesson.student_links).selectinload(LessonStudent.student),
            )
            .order_by(Lesson.starts_at, Lesson.ref)
        )
        for lesson in lessons:
            start = lesson.starts_at.astimezone(zone)
            minutes = (lesson.ends_at - lesson.starts_at) // timedelta(minutes=1)
            yield (
                lesson.ref,
                lesson.title,
                lesson.teacher.ref,
                start.date().isoformat(),
                f"{start:%H:%M}",
                str(minutes),
                "",
                lesson.room.name if lesson.room else "",
                ";".join(sorted(link.student.ref for link in lesson.student_links)),
                lesson.status,
                _yes_no(lesson.online),
                lesson.notes,
            )


def _export(session: Session, kind: CsvKind, zone: ZoneInfo) -> tuple[bytes, int]:
    """The file, and how many records it holds."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS[kind])
    count = 0
    for values in _export_rows(session, kind, zone):
        writer.writerow([_guard(value) for value in values])
        count += 1
    return codecs.BOM_UTF8 + out.getvalue().encode("utf-8"), count


def _file_named(name: str) -> str:
    """A file's name as the trail keeps it: the name alone, not the folders it was in."""
    return name.replace("\\", "/").rsplit("/", 1)[-1][:FILE_NAME_MAX]


# --- the service ---------------------------------------------------------------------------------


def _kind(kind: CsvKind | str) -> CsvKind:
    try:
        return CsvKind(kind)
    except ValueError:
        choices = ", ".join(kind.value for kind in CsvKind)
        raise SwitchboardError(
            f"{kind!r} is not something Switchboard can import or export; choose one of {choices}."
        ) from None


class CsvTransfer:
    """Imports and exports the school's records as CSV files. A successful import publishes
    `school.<kind>` (and `school.rooms` for new rooms, `school.students` for new guardian ties).
    Each import and export is one entry in the audit trail (what, how many, which file), not
    one per row."""

    def __init__(self, db: Database, events: EventHub, settings: SettingsService) -> None:
        self._db = db
        self._events = events
        self._settings = settings

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self._settings.get("school.timezone"))

    async def preview(
        self, kind: CsvKind | str, data: bytes, progress: Progress | None = None
    ) -> ImportPreview:
        """Everything the import would do, by doing it and rolling it back. With `progress`,
        rows are counted as they are checked, and cancelling raises Cancelled."""
        kind = _kind(kind)
        table, outcome = await self._run(kind, data, progress or Progress(), dry_run=True)
        return ImportPreview(
            kind=kind,
            columns=table.columns,
            rows=tuple(cells for _, cells in table.shown),
            row_numbers=tuple(number for number, _ in table.shown),
            created=outcome.created,
            updated=outcome.updated,
            new_rooms=tuple(outcome.new_rooms),
            errors=tuple(outcome.errors),
            versions=tuple(sorted(outcome.versions.items())),
        )

    async def import_(
        self,
        kind: CsvKind | str,
        data: bytes,
        progress: Progress | None = None,
        preview: ImportPreview | None = None,
        *,
        file_name: str = "",
    ) -> ImportResult:
        """Import every row or none: any problem raises ImportRejected, and cancelling through
        `progress` raises Cancelled; either way nothing changes. Given the `preview` the user
        confirmed, a record changed by someone since then is a problem too, not overwritten.
        `file_name`: where the rows came from, for the audit trail."""
        access.require(Permission.EDIT_SCHOOL)
        who = access.actor()
        kind = _kind(kind)
        expected = dict(preview.versions) if preview is not None else None

        def trail(session: Session, outcome: _Outcome) -> None:
            audit.record(
                session,
                who,
                "records.imported",
                "records",
                kind.value,
                None,
                {
                    "file": _file_named(file_name),
                    "added": outcome.created,
                    "updated": outcome.updated,
                    "new_rooms": outcome.new_rooms,
                },
            )

        _, outcome = await self._run(
            kind, data, progress or Progress(), dry_run=False, expected=expected, done=trail
        )
        if outcome.errors:
            raise ImportRejected(outcome.errors)
        for topic, ids in outcome.changed.items():
            self._events.publish(topic, {"ids": sorted(ids)})
        return ImportResult(kind, outcome.created, outcome.updated, tuple(outcome.new_rooms))

    async def export(self, kind: CsvKind | str, *, file_name: str = "") -> bytes:
        """Every record of this kind as UTF-8 CSV with a BOM (so Excel reads it as UTF-8).
        Anyone may export; the audit trail notes who did, what and how many (`file_name`:
        where it is saved, if the caller knows)."""
        who = access.actor()
        kind = _kind(kind)
        data, count = await self._db.read(_export, kind, self.zone)
        after = {"count": count, **({"file": _file_named(file_name)} if file_name else {})}
        await self._db.write(
            audit.record, who, "records.exported", "records", kind.value, None, after
        )
        return data

    async def _run(
        self,
        kind: CsvKind,
        data: bytes,
        progress: Progress,
        *,
        dry_run: bool,
        expected: Mapping[str, int] | None = None,
        done: Callable[[Session, _Outcome], None] | None = None,
    ) -> tuple[_Table, _Outcome]:
        """Apply the file's rows in one transaction; `done` runs in it when they all went in
        and it is kept (not a dry run)."""
        # Parsing a large file takes a while; keep it off the caller's event loop.
        table = await asyncio.to_thread(_read_table, kind, data)
        if not table.usable or not table.rows:
            return table, _Outcome(errors=sorted(table.errors, key=lambda error: error.row))
        zone = self.zone

        def work(session: Session) -> _Outcome:
            progress.check()  # cancelled while waiting for the database: stop before starting
            outcome = _Batch(session, kind, zone, table, progress, expected).run()
            if dry_run or outcome.errors:
                raise _RolledBack(outcome)
            if done is not None:
                done(session, outcome)
            return outcome

        try:
            outcome = await self._db.write(work)
        except _RolledBack as rolled_back:
            outcome = rolled_back.outcome
        return table, outcome


__all__ = [
    "COLUMNS",
    "MAX_BYTES",
    "MAX_ROWS",
    "REQUIRED",
    "CsvKind",
    "CsvTransfer",
    "ImportPreview",
    "ImportRejected",
    "ImportResult",
    "RowError",
]
