"""Importing from a spreadsheet always shows a preview; a file with problems imports nothing."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.services.csv_transfer import CsvKind
from app.ui import tasks
from app.ui.csv_import import ImportDialog
from app.ui.progress import ProgressWindow
from app.views.students import StudentsPage
from tests.ui.conftest import Gui


def page(gui: Gui, qtbot: QtBot) -> StudentsPage:
    students = StudentsPage(gui.bridge)
    qtbot.addWidget(students)
    students.resize(1100, 700)
    students.show()
    gui.run(students.settle())
    return students


def test_a_file_with_problems_is_previewed_with_rows_and_columns_and_imports_nothing(
    gui: Gui, qtbot: QtBot, tmp_path: Path
) -> None:
    students = page(gui, qtbot)
    bad = tmp_path / "students.csv"
    bad.write_text(
        "first_name,last_name,email,date_of_birth\n"
        "Tendai,Moyo,tendai@example.org,2014-03-07\n"
        "\n"
        "Chipo,,chipo@,07/03/2014\n",
        encoding="utf-8",
    )
    importing = tasks.start(students.csv.import_file(CsvKind.STUDENTS, bad))  # type: ignore[union-attr]
    dialog = gui.find(ImportDialog, students)
    gui.save(dialog, "import-with-problems")
    assert not dialog.import_button.isEnabled()
    problems = {(error.row, error.column) for error in dialog.preview.errors}
    assert problems == {(4, "last_name"), (4, "email"), (4, "date_of_birth")}
    assert "Nothing has been imported" in dialog.summary.text()
    assert dialog.rows_model.rowCount() == 2
    assert [record[0] for record in dialog.rows_model.records()] == [2, 4]  # blank line 3 skipped
    dialog.reject()
    assert gui.run(importing) is False
    assert gui.call(gui.bridge.services.school.students) == []


def test_a_good_file_is_previewed_then_imported(gui: Gui, qtbot: QtBot, tmp_path: Path) -> None:
    students = page(gui, qtbot)
    good = tmp_path / "students.csv"
    good.write_text(
        "ref;first_name;last_name;grade\nS-0100;Tendai;Moyo;Grade 5\nS-0101;Chipo;Dube;Form 1\n",
        encoding="utf-8-sig",
    )
    importing = tasks.start(students.csv.import_file(CsvKind.STUDENTS, good))  # type: ignore[union-attr]
    dialog = gui.find(ImportDialog, students)
    assert dialog.summary.text() == "2 students will be added."
    qtbot.mouseClick(dialog.import_button, Qt.MouseButton.LeftButton)
    done = gui.find(QMessageBox, students)
    assert "2 students added" in done.text()
    done.close()
    assert gui.run(importing) is True
    gui.wait_until(lambda: students.model.rowCount() == 2)


def test_export_writes_a_file_that_imports_back_unchanged(
    gui: Gui, qtbot: QtBot, tmp_path: Path
) -> None:
    students = page(gui, qtbot)
    source = tmp_path / "in.csv"
    source.write_text(
        "first_name,last_name,phone\nTendai,Moyo,+263 77 123 4567\n", encoding="utf-8"
    )
    gui.call(gui.bridge.services.csv.import_, CsvKind.STUDENTS, source.read_bytes())
    target = tmp_path / "out.csv"
    gui.run(students.csv.export_file(CsvKind.STUDENTS, target))  # type: ignore[union-attr]
    gui.find(QMessageBox, students).close()
    preview = gui.call(gui.bridge.services.csv.preview, CsvKind.STUDENTS, target.read_bytes())
    assert (preview.created, preview.updated, preview.errors) == (0, 1, ())


def test_cancel_stops_a_large_import_being_checked_in_the_engine(
    gui: Gui, qtbot: QtBot, tmp_path: Path
) -> None:
    students = page(gui, qtbot)
    big = tmp_path / "students.csv"
    big.write_text(
        "first_name,last_name\n" + "".join(f"Student{n},Family{n}\n" for n in range(20000)),
        encoding="utf-8",
    )
    importing = tasks.start(students.csv.import_file(CsvKind.STUDENTS, big))  # type: ignore[union-attr]
    window = gui.find(ProgressWindow, students)
    gui.wait_until(lambda: "of 20,000" in window.label.text())
    qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    assert gui.run(importing) is False
    assert not any(
        isinstance(w, ImportDialog) and w.isVisible() for w in students.findChildren(ImportDialog)
    )
    assert gui.call(gui.bridge.services.school.students) == []
