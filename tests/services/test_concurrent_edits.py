"""Two people, or a person and an import, never silently overwrite each other's changes."""

from __future__ import annotations

import pytest

from app.domain.errors import StaleEdit
from app.domain.school import StudentDraft
from app.services import Services
from app.services.csv_transfer import CsvKind, ImportRejected

pytestmark = pytest.mark.both_databases  # SQLite, then PostgreSQL


async def test_linking_a_guardian_by_import_makes_an_open_edit_of_the_student_stale(
    services: Services,
) -> None:
    student = await services.school.save_student(StudentDraft("Tendai", "Moyo", ref="S-0001"))
    # Someone imports a guardians file that links Mary to Tendai while Tendai's form is open.
    await services.csv.import_(
        CsvKind.GUARDIANS,
        b"first_name,last_name,email,students,relationship\nMary,Moyo,mary@example.org,S-0001,mother\n",
    )
    with pytest.raises(StaleEdit):
        await services.school.save_student(
            student.draft(), student_id=student.id, version=student.version
        )
    assert [
        link.guardian_name for link in (await services.school.student(student.id)).guardians
    ] == ["Mary Moyo"]


async def test_a_record_changed_after_the_preview_is_not_overwritten_by_the_import(
    services: Services,
) -> None:
    student = await services.school.save_student(
        StudentDraft("Tendai", "Moyo", ref="S-0001", grade="Grade 4")
    )
    data = b"ref,first_name,last_name,grade\nS-0001,Tendai,Moyo,Grade 5\n"
    preview = await services.csv.preview(CsvKind.STUDENTS, data)
    assert preview.ok
    assert preview.updated == 1
    # Between the preview and the click on Import, someone corrects the student's grade.
    await services.school.save_student(
        StudentDraft("Tendai", "Moyo", ref="S-0001", grade="Grade 6"),
        student_id=student.id,
        version=student.version,
    )
    with pytest.raises(ImportRejected) as rejected:
        await services.csv.import_(CsvKind.STUDENTS, data, preview=preview)
    assert "changed by someone after this file was checked" in rejected.value.errors[0].reason
    assert (await services.school.student(student.id)).grade == "Grade 6"


async def test_an_unchanged_record_imports_as_previewed(services: Services) -> None:
    await services.school.save_student(
        StudentDraft("Tendai", "Moyo", ref="S-0001", grade="Grade 4")
    )
    data = b"ref,first_name,last_name,grade\nS-0001,Tendai,Moyo,Grade 5\n"
    preview = await services.csv.preview(CsvKind.STUDENTS, data)
    result = await services.csv.import_(CsvKind.STUDENTS, data, preview=preview)
    assert result.updated == 1
