"""CSV import and export: what a school office can feed in, what it gets back, and how a bad
file is refused as a whole with every problem named by row and column."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.errors import SwitchboardError
from app.domain.school import (
    Channel,
    GuardianDraft,
    GuardianLink,
    LessonDraft,
    StudentDraft,
    TeacherDraft,
)
from app.services import Services, audit
from app.services.csv_transfer import (
    MAX_BYTES,
    MAX_ROWS,
    CsvKind,
    CsvTransfer,
    ImportRejected,
    RowError,
)
from app.services.events import EngineEvent
from app.store.base import Base

DATA = Path(__file__).parent.parent / "data" / "csv"
TABLES = ("students", "guardians", "student_guardians", "teachers", "rooms", "lessons")
TABLES += ("lesson_students",)
LESSON_HEADER = (
    "ref,title,teacher,date,start,duration_minutes,end,room,students,status,online,notes"
)


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


@pytest.fixture
async def transfer(services: Services) -> CsvTransfer:
    await services.settings.set("school.timezone", "Africa/Harare")
    return CsvTransfer(services.db, services.events, services.settings)


@pytest.fixture
async def school(services: Services, transfer: CsvTransfer) -> Services:
    """Two teachers, two students, one guardian, and a lesson in Studio A on 4 March 2030
    10:00–11:00 (Harare) taught by T-0001 to S-0001."""
    school = services.school
    ann = await school.save_teacher(TeacherDraft("Ann", "Lee", ref="T-0001"))
    await school.save_teacher(TeacherDraft("Ben", "Moyo", ref="T-0002"))
    chipo = await school.save_student(StudentDraft("Chipo", "Dube", ref="S-0001"))
    await school.save_student(StudentDraft("Tendai", "Ncube", ref="S-0002"))
    await school.save_guardian(
        GuardianDraft("Rudo", "Dube", ref="G-0001", email="rudo@example.org")
    )
    room = await school.add_room("Studio A")
    start = datetime(2030, 3, 4, 8, 0, tzinfo=UTC)
    await school.save_lesson(
        LessonDraft(
            "Violin",
            ann.id,
            start,
            start + timedelta(hours=1),
            ref="L-000001",
            room_id=room.id,
            student_ids=(chipo.id,),
        )
    )
    return services


async def snapshot(services: Services) -> dict[str, list[Any]]:
    """Every row of the school tables, so a test can say "nothing changed" and mean it."""

    def read(session: Session) -> dict[str, list[Any]]:
        result = {}
        for name in TABLES:
            table = Base.metadata.tables[name]
            query = select(table).order_by(*table.primary_key.columns)
            result[name] = [tuple(row) for row in session.execute(query)]
        return result

    return await services.db.read(read)


async def rejected(
    services: Services, transfer: CsvTransfer, kind: CsvKind, data: bytes
) -> ImportRejected:
    """Import a bad file; check it is refused, the preview agrees, and nothing changed."""
    before = await snapshot(services)
    preview = await transfer.preview(kind, data)
    with pytest.raises(ImportRejected) as caught:
        await transfer.import_(kind, data)
    assert await snapshot(services) == before
    assert preview.errors == caught.value.errors
    assert not preview.ok
    return caught.value


def listen(services: Services) -> list[EngineEvent]:
    """Events published from now on (what the fixture published is delivered and dropped)."""
    services.events.flush_all()
    heard: list[EngineEvent] = []
    services.events.subscribe(heard.append)
    return heard


def places(errors: tuple[RowError, ...]) -> list[tuple[int, str]]:
    return [(error.row, error.column) for error in errors]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- the happy paths -----------------------------------------------------------------------------


async def test_students_are_created_with_every_column(services: Services, transfer: CsvTransfer):
    data = csv(
        "ref,first_name,last_name,date_of_birth,grade,email,phone,active,notes",
        "S-0007,Chipo,Dube,2014-03-07,Grade 5,chipo@example.org,+263 77 123 4567,yes,Loves Bach",
        ",Tendai,Ncube,,,,,no,",
    )
    result = await transfer.import_(CsvKind.STUDENTS, data)

    assert (result.created, result.updated, result.new_rooms) == (2, 0, ())
    chipo, tendai = await services.school.students()
    assert (chipo.ref, chipo.name, chipo.date_of_birth) == (
        "S-0007",
        "Chipo Dube",
        date(2014, 3, 7),
    )
    assert (chipo.grade, chipo.email, chipo.phone) == (
        "Grade 5",
        "chipo@example.org",
        "+263 77 123 4567",
    )
    assert (chipo.active, chipo.notes) == (True, "Loves Bach")
    assert (tendai.ref, tendai.active, tendai.date_of_birth) == ("S-0008", False, None)


async def test_a_row_whose_ref_exists_updates_that_record(school: Services, transfer: CsvTransfer):
    result = await transfer.import_(
        "students", csv("ref,first_name,last_name,grade", "S-0001,Chipo,Dube-Moyo,Grade 6")
    )

    assert (result.created, result.updated) == (0, 1)
    chipo = next(s for s in await school.school.students() if s.ref == "S-0001")
    assert (chipo.last_name, chipo.grade, chipo.version) == ("Dube-Moyo", "Grade 6", 2)


async def test_a_column_left_out_of_the_file_keeps_what_the_record_has(
    school: Services, transfer: CsvTransfer
):
    await transfer.import_(
        CsvKind.STUDENTS,
        csv(
            "ref,first_name,last_name,email,phone,date_of_birth,active",
            "S-0001,Chipo,Dube,chipo@example.org,+263 77 123 4567,2014-03-07,no",
        ),
    )
    await transfer.import_(
        CsvKind.STUDENTS, csv("ref,first_name,last_name,grade", "S-0001,Chipo,Dube,Grade 6")
    )

    chipo = next(s for s in await school.school.students() if s.ref == "S-0001")
    assert (chipo.grade, chipo.email, chipo.phone) == (
        "Grade 6",
        "chipo@example.org",
        "+263 77 123 4567",
    )
    assert (chipo.date_of_birth, chipo.active) == (date(2014, 3, 7), False)


async def test_a_lesson_update_without_room_or_students_columns_keeps_them(
    school: Services, transfer: CsvTransfer
):
    data = csv("ref,title,teacher,date,start,end", "L-000001,Violin,T-0001,2030-03-04,10:30,11:30")
    result = await transfer.import_(CsvKind.LESSONS, data)

    (violin,) = await school.school.lessons(utc(2030, 3, 4), utc(2030, 3, 5))
    assert (result.created, result.updated) == (0, 1)
    assert (violin.starts_at, violin.room_name) == (utc(2030, 3, 4, 8, 30), "Studio A")
    assert [name for _, name in violin.students] == ["Chipo Dube"]


async def test_guardians_are_linked_to_their_students_with_defaults(
    school: Services, transfer: CsvTransfer
):
    data = csv(
        "first_name,last_name,email,phone,students,relationship,primary",
        "Nyasha,Ncube,nyasha@example.org,,S-0002,mother,yes",
        "Farai,Ncube,,+263 77 765 4321,S-0001;S-0002,,",
    )
    result = await transfer.import_(CsvKind.GUARDIANS, data)

    assert (result.created, result.updated) == (2, 0)
    guardians = {g.name: g for g in await school.school.guardians()}
    nyasha, farai = guardians["Nyasha Ncube"], guardians["Farai Ncube"]
    assert (nyasha.preferred_channel, nyasha.language) == (Channel.EMAIL, "en")
    assert farai.preferred_channel is Channel.SMS
    students = {s.ref: s for s in await school.school.students()}
    tendai_links = {link.guardian_name: link for link in students["S-0002"].guardians}
    assert tendai_links["Nyasha Ncube"].relationship == "mother"
    assert tendai_links["Nyasha Ncube"].is_primary
    assert tendai_links["Farai Ncube"].relationship == "guardian"
    assert not tendai_links["Farai Ncube"].is_primary
    # Chipo had no guardian yet, so her first one receives the invoices.
    assert [(link.guardian_name, link.is_primary) for link in students["S-0001"].guardians] == [
        ("Farai Ncube", True)
    ]


async def test_importing_a_guardian_never_removes_existing_links(
    school: Services, transfer: CsvTransfer
):
    rudo = (await school.school.guardians())[0]
    chipo = next(s for s in await school.school.students() if s.ref == "S-0001")
    await school.school.save_student(
        replace(chipo.draft(), guardians=(GuardianLink(rudo.id, chipo.id, "aunt", True),)),
        student_id=chipo.id,
    )

    data = csv(
        "ref,first_name,last_name,email,students", "G-0001,Rudo,Dube,rudo@example.org,S-0002"
    )
    result = await transfer.import_(CsvKind.GUARDIANS, data)

    assert (result.created, result.updated) == (0, 1)
    rudo = (await school.school.guardians())[0]
    assert sorted((link.student_name, link.relationship) for link in rudo.students) == [
        ("Chipo Dube", "aunt"),
        ("Tendai Ncube", "guardian"),
    ]


async def test_teachers_are_created_with_their_own_time_zone(
    services: Services, transfer: CsvTransfer
):
    data = csv(
        "First name,Last name,E-mail,Subjects,Timezone,Active",
        "Ann,Lee,ann@example.org,Piano; theory,Europe/London,",
        "Ben,Moyo,,Violin,,no",
    )
    result = await transfer.import_("teachers", data)

    assert (result.created, result.updated) == (2, 0)
    teachers = {t.name: t for t in await services.school.teachers()}
    assert teachers["Ann Lee"].timezone == "Europe/London"
    assert teachers["Ann Lee"].active
    assert (teachers["Ben Moyo"].timezone, teachers["Ben Moyo"].active) == ("", False)
    assert {t.ref for t in teachers.values()} == {"T-0001", "T-0002"}


async def test_lessons_land_at_the_right_utc_instant_in_the_school_time_zone(
    school: Services, transfer: CsvTransfer
):
    data = csv(
        LESSON_HEADER,
        "L-000010,Piano,T-0002,2030-03-04,14:00,45,,studio a,S-0002,,no,",
        "L-000011,Theory,T-0002,2030-03-05,09:30,,10:15,Room 7,S-0001;S-0002,completed,yes,"
        "Bring pencils",
    )
    result = await transfer.import_(CsvKind.LESSONS, data)

    # "studio a" is the existing Studio A; Room 7 is new.
    assert (result.created, result.updated, result.new_rooms) == (2, 0, ("Room 7",))
    lessons = {
        lesson.ref: lesson
        for lesson in await school.school.lessons(utc(2030, 3, 1), utc(2030, 3, 10))
    }
    piano, theory = lessons["L-000010"], lessons["L-000011"]
    assert (piano.starts_at, piano.ends_at) == (utc(2030, 3, 4, 12, 0), utc(2030, 3, 4, 12, 45))
    assert (piano.room_name, [name for _, name in piano.students]) == ("Studio A", ["Tendai Ncube"])
    assert (theory.starts_at, theory.ends_at) == (utc(2030, 3, 5, 7, 30), utc(2030, 3, 5, 8, 15))
    assert (theory.status.value, theory.online, theory.notes) == (
        "completed",
        True,
        "Bring pencils",
    )
    assert sorted(room.name for room in await school.school.rooms()) == ["Room 7", "Studio A"]


async def test_a_duration_counts_real_minutes_across_a_clock_change(
    school: Services, transfer: CsvTransfer
):
    await school.settings.set("school.timezone", "Europe/London")
    # The clocks go forward at 01:00 on 31 March 2030: a 2-hour lesson from 00:30 ends at 03:30.
    data = csv(
        "title,teacher,date,start,duration_minutes", "Night piano,T-0002,2030-03-31,00:30,120"
    )
    await transfer.import_(CsvKind.LESSONS, data)

    (lesson,) = await school.school.lessons(utc(2030, 3, 30), utc(2030, 4, 1))
    assert (lesson.starts_at, lesson.ends_at) == (utc(2030, 3, 31, 0, 30), utc(2030, 3, 31, 2, 30))


async def test_semicolon_file_with_bom_and_spreadsheet_headings_imports(
    services: Services, transfer: CsvTransfer
):
    result = await transfer.import_(
        CsvKind.STUDENTS, (DATA / "students_excel_semicolon.csv").read_bytes()
    )

    assert (result.created, result.updated) == (2, 0)
    chipo, tendai = await services.school.students()
    assert (chipo.ref, chipo.email, chipo.notes) == (
        "S-0100",
        "chipo.dube@example.org",
        "Allergic to nuts; carries an EpiPen",
    )
    assert (tendai.ref, tendai.active) == ("S-0101", False)


async def test_tab_separated_lessons_file_imports(school: Services, transfer: CsvTransfer):
    result = await transfer.import_(CsvKind.LESSONS, (DATA / "lessons_tab.csv").read_bytes())

    assert (result.created, result.updated, result.new_rooms) == (2, 0, ("Studio B",))


async def test_blank_lines_are_skipped_and_rows_keep_their_spreadsheet_numbers(
    services: Services, transfer: CsvTransfer
):
    data = csv("first_name,last_name", "", "Ann,Lee", ",,", "Ben,")
    preview = await transfer.preview(CsvKind.STUDENTS, data)

    assert preview.rows == (("Ann", "Lee"), ("Ben", ""))
    assert preview.row_numbers == (3, 5)
    assert places(preview.errors) == [(5, "last_name")]


async def test_generated_refs_never_take_a_ref_a_later_row_names(
    services: Services, transfer: CsvTransfer
):
    data = csv("ref,first_name,last_name", ",Ann,Lee", "S-0001,Ben,Moyo")
    result = await transfer.import_(CsvKind.STUDENTS, data)

    assert (result.created, result.updated) == (2, 0)
    assert {(s.ref, s.name) for s in await services.school.students()} == {
        ("S-0002", "Ann Lee"),
        ("S-0001", "Ben Moyo"),
    }


async def test_many_new_records_without_refs_get_consecutive_refs(
    school: Services, transfer: CsvTransfer
):
    rows = [f"Student,Number {n}" for n in range(1, 6)]
    await transfer.import_(CsvKind.STUDENTS, csv("first_name,last_name", *rows, "Ann,Lee"))

    refs = sorted(s.ref for s in await school.school.students())
    assert refs == [f"S-{n:04d}" for n in range(1, 9)]  # S-0001 and S-0002 were there already


async def test_an_unknown_kind_is_refused_in_a_sentence(transfer: CsvTransfer):
    with pytest.raises(SwitchboardError, match="choose one of students, guardians"):
        await transfer.export("invoices")


async def test_a_leading_apostrophe_before_a_formula_character_is_dropped(
    services: Services, transfer: CsvTransfer
):
    await transfer.import_(CsvKind.STUDENTS, csv("first_name,last_name,notes", "Ann,Lee,'=1+1"))

    (ann,) = await services.school.students()
    assert ann.notes == "=1+1"


# --- preview, round trips, events ----------------------------------------------------------------


async def test_preview_promises_exactly_what_the_import_does_and_changes_nothing(
    school: Services, transfer: CsvTransfer
):
    data = csv(
        LESSON_HEADER,
        "L-000001,Violin,T-0001,2030-03-04,10:00,60,,Studio A,S-0001,,,moved notes",
        ",Cello,T-0002,2030-03-04,10:00,30,,Hall,S-0002,,,",
        ",Flute,T-0002,2030-03-04,11:00,30,,hall,,,,",
    )
    before = await snapshot(school)
    preview = await transfer.preview(CsvKind.LESSONS, data)
    assert await snapshot(school) == before

    result = await transfer.import_(CsvKind.LESSONS, data)
    assert preview.ok
    assert (preview.created, preview.updated, preview.new_rooms) == (2, 1, ("Hall",))
    assert (result.created, result.updated, result.new_rooms) == (
        preview.created,
        preview.updated,
        preview.new_rooms,
    )
    assert preview.columns == tuple(LESSON_HEADER.split(","))
    assert len(preview.rows) == 3


@pytest.mark.parametrize("kind", list(CsvKind))
async def test_export_then_import_changes_nothing(
    school: Services, transfer: CsvTransfer, kind: CsvKind
):
    # Farai is the invoice recipient for Tendai (her only guardian) but not for Chipo (Rudo is):
    # one row cannot say both, so export leaves "primary" blank and import leaves the ties be.
    await transfer.import_(
        CsvKind.GUARDIANS,
        csv(
            "ref,first_name,last_name,phone,preferred_channel,students,relationship,primary",
            "G-0001,Rudo,Dube,+263 77 000 0000,sms,S-0001,mother,yes",
            "G-0002,Farai,Ncube,+263 77 765 4321,whatsapp,S-0001;S-0002,uncle,no",
        ),
    )
    await transfer.import_(
        CsvKind.STUDENTS,
        csv(
            "first_name,last_name,grade,notes",
            'Ann,Lee,-1,"=HYPERLINK(""http://x"")\n  second line "',
        ),
    )
    exported = await transfer.export(kind)
    before = await snapshot(school)

    result = await transfer.import_(kind, exported)

    records = {"students": 3, "guardians": 2, "teachers": 2, "lessons": 1}[kind.value]
    assert (result.created, result.updated) == (0, records)
    assert await snapshot(school) == before


async def test_importing_the_same_file_twice_changes_nothing_the_second_time(
    school: Services, transfer: CsvTransfer
):
    data = csv(
        "ref,first_name,last_name,email,students,relationship,primary",
        "G-0005,Nyasha,Ncube,nyasha@example.org,S-0002,mother,yes",
    )
    first = await transfer.import_(CsvKind.GUARDIANS, data)
    before = await snapshot(school)
    second = await transfer.import_(CsvKind.GUARDIANS, data)

    assert (first.created, second.created, second.updated) == (1, 0, 1)
    assert await snapshot(school) == before


async def test_export_writes_excel_friendly_utf8_and_guards_formulas(
    services: Services, transfer: CsvTransfer
):
    await services.school.save_student(
        StudentDraft(
            "Zoë",
            "@Home",
            ref="S-0001",
            phone="+263 77 123 4567",
            grade="-1",
            notes="+SUM(A1:A9)",
        )
    )
    exported = await transfer.export(CsvKind.STUDENTS)

    assert exported.startswith(b"\xef\xbb\xbf")
    lines = exported.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "ref,first_name,last_name,date_of_birth,grade,email,phone,active,notes"
    assert lines[1] == "S-0001,Zoë,'@Home,,-1,,+263 77 123 4567,yes,'+SUM(A1:A9)"


async def test_export_of_lessons_gives_school_wall_times_and_duration(
    school: Services, transfer: CsvTransfer
):
    exported = (await transfer.export(CsvKind.LESSONS)).decode("utf-8-sig")

    assert exported.split("\r\n")[:2] == [
        LESSON_HEADER,
        "L-000001,Violin,T-0001,2030-03-04,10:00,60,,Studio A,S-0001,scheduled,no,",
    ]


async def test_a_successful_import_publishes_what_changed_and_a_preview_publishes_nothing(
    school: Services, transfer: CsvTransfer
):
    heard = listen(school)
    data = csv(
        "title,teacher,date,start,duration_minutes,room", "Harp,T-0002,2030-03-06,09:00,30,Loft"
    )

    await transfer.preview(CsvKind.LESSONS, data)
    school.events.flush_all()
    assert heard == []
    await transfer.import_(CsvKind.LESSONS, data)
    school.events.flush_all()
    # ... and the audit trail's entry for the import, to the Audit page.
    assert {event.topic for event in heard} == {"school.lessons", "school.rooms", audit.TOPIC}


async def test_a_guardians_import_tells_the_students_page_too(
    school: Services, transfer: CsvTransfer
):
    heard = listen(school)
    await transfer.import_(
        CsvKind.GUARDIANS,
        csv("first_name,last_name,email,students", "Ada,Moyo,ada@example.org,S-0002"),
    )
    school.events.flush_all()

    assert {event.topic for event in heard} == {"school.guardians", "school.students", audit.TOPIC}


# --- bad files: refused whole, every problem named by row and column -----------------------------


BAD_FILES = [
    pytest.param(CsvKind.STUDENTS, b"", [(1, "")], "empty", id="empty file"),
    pytest.param(
        CsvKind.STUDENTS, b"\xef\xbb\xbf\r\n\r\n", [(1, "")], "empty", id="only blank lines"
    ),
    pytest.param(
        CsvKind.STUDENTS, b',,,\r\n;;\r\n""\r\n', [(1, "")], "empty", id="only separators"
    ),
    pytest.param(
        CsvKind.STUDENTS,
        "first_name,last_name\nAnn,Lee\n".encode("utf-16-le"),
        [(1, "")],
        "CSV UTF-8",
        id="utf-16 without byte order mark",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name,", "Ann,Lee,"),
        [(1, "column 3")],
        "Column 3 has no heading",
        id="column without heading",
    ),
    pytest.param(
        CsvKind.STUDENTS, csv("first_name,last_name"), [(2, "")], "no data rows", id="header only"
    ),
    pytest.param(
        CsvKind.STUDENTS,
        "first_name,last_name\nAnn,Lee\nJosé,Dube\n".encode("latin-1"),
        [(3, "")],
        "CSV UTF-8",
        id="not utf-8",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name", "Ann"),
        [(1, "last_name")],
        "add a column",
        id="missing required column",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name,colour", "Ann,Lee,red"),
        [(1, "colour")],
        "ref, first_name, last_name, date_of_birth",
        id="unknown column",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name,First Name", "Ann,Lee,Ann"),
        [(1, "first_name")],
        "more than once",
        id="duplicated column",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name", "Ann,Lee,x", "Ben,Moyo"),
        [(2, "")],
        "3 values",
        id="too many fields",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name", "Ben,Moyo", "Ann"),
        [(3, "")],
        "has 1 value but",
        id="too few fields",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name", "  ,Lee"),
        [(2, "first_name")],
        "required",
        id="required value empty",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name,email", "Ann,Lee,ann(at)example"),
        [(2, "email")],
        "e-mail address",
        id="bad email",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name,phone", "Ann,Lee,12"),
        [(2, "phone")],
        "phone number",
        id="bad phone",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name,date_of_birth", "Ann,Lee,07/03/2014"),
        [(2, "date_of_birth")],
        "YYYY-MM-DD",
        id="bad date",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name,active", "Ann,Lee,maybe"),
        [(2, "active")],
        "yes or no",
        id="bad yes-no",
    ),
    pytest.param(
        CsvKind.STUDENTS,
        csv("first_name,last_name", "Ann," + "L" * 101),
        [(2, "last_name")],
        "the most is 100",
        id="value too long",
    ),
    pytest.param(
        CsvKind.TEACHERS,
        csv("first_name,last_name,timezone", "Ann,Lee,Mars/Olympus"),
        [(2, "timezone")],
        "time zone",
        id="bad timezone",
    ),
    pytest.param(
        CsvKind.GUARDIANS,
        csv("first_name,last_name,email,preferred_channel", "Rudo,Dube,r@example.org,pigeon"),
        [(2, "preferred_channel")],
        "email, sms, whatsapp",
        id="bad channel",
    ),
    pytest.param(
        CsvKind.GUARDIANS,
        csv("first_name,last_name,email,preferred_channel", "Rudo,Dube,r@example.org,sms"),
        [(2, "preferred_channel")],
        "phone number",
        id="channel without its contact",
    ),
    pytest.param(
        CsvKind.GUARDIANS,
        csv("first_name,last_name", "Rudo,Dube"),
        [(2, "email")],
        "e-mail address or a phone",
        id="guardian without contact",
    ),
    pytest.param(
        CsvKind.GUARDIANS,
        csv("first_name,last_name,email,students", "Rudo,Dube,r@example.org,S-0001;S-0404"),
        [(2, "students")],
        "S-0404",
        id="guardian of unknown student",
    ),
    pytest.param(
        CsvKind.GUARDIANS,
        csv("first_name,last_name,email,students,primary", "Rudo,Dube,r@example.org,S-0001,sure"),
        [(2, "primary")],
        "yes or no",
        id="bad primary",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,status",
            "Piano,T-0002,2030-03-04,14:00,30,postponed",
        ),
        [(2, "status")],
        "scheduled, cancelled, completed",
        id="bad status",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes", "Piano,T-0002,2030-03-04,2pm,30"),
        [(2, "start")],
        "HH:MM",
        id="bad time",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes", "Piano,T-0002,2030-03-04,14:00,1.5"),
        [(2, "duration_minutes")],
        "whole number",
        id="fractional duration",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes", "Piano,T-0002,2030-03-04,14:00,0"),
        [(2, "duration_minutes")],
        "above zero",
        id="zero duration",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes", "Piano,T-0002,2030-03-04,14:00,600"),
        [(2, "duration_minutes")],
        "8 hours",
        id="duration too long",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,end",
            "Piano,T-0002,2030-03-04,14:00,30,14:30",
        ),
        [(2, "end")],
        "not both",
        id="duration and end",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes,end", "Piano,T-0002,2030-03-04,14:00,,"),
        [(2, "duration_minutes")],
        "duration_minutes or",
        id="neither duration nor end",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start", "Piano,T-0002,2030-03-04,14:00"),
        [(1, "duration_minutes")],
        "neither",
        id="no length column",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,end", "Piano,T-0002,2030-03-04,14:00,13:30"),
        [(2, "end")],
        "end after it starts",
        id="end before start",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes", "Piano,T-0404,2030-03-04,14:00,30"),
        [(2, "teacher")],
        "T-0404",
        id="unknown teacher",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes", "Piano,,2030-03-04,14:00,30"),
        [(2, "teacher")],
        "required",
        id="teacher empty",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,students",
            "Piano,T-0002,2030-03-04,14:00,30,S-0002;S-0404",
        ),
        [(2, "students")],
        "There is no student with the reference S-0404;",
        id="unknown student",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,students",
            "Piano,T-0002,2030-03-04,14:00,30,S-0002;S-0002",
        ),
        [(2, "students")],
        "listed twice",
        id="student listed twice",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv("title,teacher,date,start,duration_minutes", "Piano,T-0001,2030-03-04,10:30,30"),
        [(2, "teacher")],
        "Violin” on Mon 04 Mar 10:00–11:00; change this row's time or teacher",
        id="teacher double-booked",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,room",
            "Piano,T-0002,2030-03-04,10:30,30,STUDIO A",
        ),
        [(2, "room")],
        "is taken",
        id="room double-booked",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,students",
            "Piano,T-0002,2030-03-04,10:30,30,S-0001",
        ),
        [(2, "students")],
        "already has",
        id="student double-booked",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,room",
            "Piano,T-0002,2030-03-04,12:00,30,Studio A",
            "Cello,T-0001,2030-03-04,12:15,30,studio a",
        ),
        [(3, "room")],
        "Piano",
        id="two rows book one room",
    ),
    pytest.param(
        CsvKind.LESSONS,
        csv(
            "title,teacher,date,start,duration_minutes,room",
            "Piano,T-0002,2030-03-04,12:00,30," + "R" * 101,
        ),
        [(2, "room")],
        "the most is 100",
        id="room name too long",
    ),
    pytest.param(
        CsvKind.TEACHERS,
        csv("ref,first_name,last_name", "T-0009,Ann,Lee", "T-0010,Ben,Moyo", "T-0009,Ann,Lee"),
        [(4, "ref")],
        "row 2",
        id="duplicate ref in file",
    ),
    pytest.param(
        CsvKind.TEACHERS,
        csv("ref,first_name,last_name", "T 1,Ann,Lee"),
        [(2, "ref")],
        "usable reference",
        id="unusable ref",
    ),
    pytest.param(
        CsvKind.TEACHERS,
        csv("first_name,last_name,notes", "Ann,Lee,x"),
        [(1, "notes")],
        "teachers file",
        id="column of another kind",
    ),
]


@pytest.mark.parametrize(("kind", "data", "expected", "says"), BAD_FILES)
async def test_a_bad_file_is_rejected_whole_naming_row_and_column(
    school: Services,
    transfer: CsvTransfer,
    kind: CsvKind,
    data: bytes,
    expected: list[tuple[int, str]],
    says: str,
):
    error = await rejected(school, transfer, kind, data)

    assert places(error.errors) == expected
    assert says in error.errors[0].reason
    assert error.errors[0].reason.endswith(".")


async def test_a_wall_time_the_clocks_skip_is_refused(school: Services, transfer: CsvTransfer):
    await school.settings.set("school.timezone", "Europe/London")
    data = csv("title,teacher,date,start,end", "Piano,T-0002,2030-03-31,01:30,02:30")

    error = await rejected(school, transfer, CsvKind.LESSONS, data)

    assert places(error.errors) == [(2, "start")]
    assert "does not exist in Europe/London" in error.errors[0].reason


async def test_unknown_teacher_rejects_the_whole_file_and_names_row_and_column(
    school: Services, transfer: CsvTransfer
):
    data = csv(
        "title,teacher,date,start,duration_minutes,room",
        "Piano,T-0002,2030-03-06,09:00,30,New room",
        "Cello,T-0099,2030-03-06,10:00,30,",
    )
    error = await rejected(school, transfer, CsvKind.LESSONS, data)

    assert places(error.errors) == [(3, "teacher")]
    assert str(error) == (
        "The file has 1 problem; nothing was imported. The first: Row 3, teacher: There is no "
        "teacher with the reference T-0099; correct it or import the teachers first."
    )
    assert "New room" not in [room.name for room in await school.school.rooms()]


async def test_errors_in_several_rows_are_all_reported_in_row_order(
    school: Services, transfer: CsvTransfer
):
    data = csv(
        "ref,first_name,last_name,email,date_of_birth,active",
        "S-0001,Chipo,Dube,chipo@example.org,2014-03-07,yes",
        ",,Ncube,not-an-address,2014-13-01,yes",
        ",Ann,Lee,,,perhaps",
        ",Ben,Moyo,,,",
        "S-0001,Chipo,Dube,,,",
    )
    error = await rejected(school, transfer, CsvKind.STUDENTS, data)

    assert places(error.errors) == [
        (3, "date_of_birth"),
        (3, "first_name"),
        (3, "email"),
        (4, "active"),
        (6, "ref"),
    ]
    assert str(error).startswith("The file has 5 problems; nothing was imported.")


async def test_a_row_missing_several_lesson_values_reports_each_of_them(
    school: Services, transfer: CsvTransfer
):
    data = csv("title,teacher,date,start,duration_minutes", ",T-0099,,,")

    error = await rejected(school, transfer, CsvKind.LESSONS, data)

    assert places(error.errors) == [
        (2, "teacher"),
        (2, "date"),
        (2, "start"),
        (2, "duration_minutes"),
        (2, "title"),
    ]


async def test_a_file_over_ten_megabytes_is_refused_before_parsing(
    services: Services, transfer: CsvTransfer
):
    data = b"first_name,last_name\n" + b"x" * MAX_BYTES

    error = await rejected(services, transfer, CsvKind.STUDENTS, data)

    assert places(error.errors) == [(0, "")]
    assert "split it into smaller files" in error.errors[0].reason


async def test_a_file_over_fifty_thousand_rows_is_refused_before_parsing(
    services: Services, transfer: CsvTransfer
):
    data = b"first_name,last_name\n" + b"Ann,Lee\n" * (MAX_ROWS + 1)

    error = await rejected(services, transfer, CsvKind.STUDENTS, data)

    assert places(error.errors) == [(0, "")]
    assert "more than 50,000 rows" in error.errors[0].reason


async def test_rows_of_only_delimiters_count_as_blank_lines(
    services: Services, transfer: CsvTransfer
):
    data = b"first_name,last_name\n" + b",\n" * 3 + b"Ann,Lee\n"

    preview = await transfer.preview(CsvKind.STUDENTS, data)

    assert (preview.ok, preview.created, preview.row_numbers) == (True, 1, (5,))
