"""A long import reports how far it has got and can be stopped, keeping nothing."""

from __future__ import annotations

import pytest

from app.services import Services
from app.services.csv_transfer import CsvKind
from app.services.progress import Cancelled, Progress

ROWS = 50


def students_file(rows: int = ROWS) -> bytes:
    lines = ["first_name,last_name"] + [f"Student{n},Family{n}" for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()


class CancelAfter(Progress):
    """Someone presses Cancel once `limit` rows have been handled."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def advance(self, count: int = 1) -> None:
        super().advance(count)
        if self.done >= self.limit:
            self.cancel()


async def test_the_preview_counts_every_row(services: Services) -> None:
    progress = Progress()
    preview = await services.csv.preview(CsvKind.STUDENTS, students_file(), progress)
    assert preview.created == ROWS
    assert (progress.done, progress.total) == (ROWS, ROWS)


async def test_an_import_cancelled_half_way_keeps_nothing(services: Services) -> None:
    with pytest.raises(Cancelled, match="nothing was changed"):
        await services.csv.import_(CsvKind.STUDENTS, students_file(), CancelAfter(ROWS // 2))
    assert await services.school.students() == []


async def test_a_cancelled_preview_stops_too(services: Services) -> None:
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        await services.csv.preview(CsvKind.STUDENTS, students_file(), progress)
