"""Guardians: the parents and carers the school bills and messages, with how to reach them."""

from __future__ import annotations

from typing import Any

from app.domain.school import GuardianDraft, GuardianRecord
from app.services.csv_transfer import CsvKind
from app.services.school import TOPIC_GUARDIANS, TOPIC_STUDENTS
from app.ui.records_page import RecordsPage
from app.ui.table import Column
from app.views.students import CHANNEL_LABELS, GuardianDialog


def children(guardian: GuardianRecord) -> str:
    return ", ".join(link.student_name for link in guardian.students) or "—"


class GuardiansPage(RecordsPage):
    key = "guardians"
    title = "Guardians"
    icon_name = "guardians"
    noun = "guardian"
    plural = "guardians"
    topics = (TOPIC_GUARDIANS, TOPIC_STUDENTS)
    csv_kinds = (CsvKind.GUARDIANS,)
    empty_text = (
        "Guardians are added with their children on the Students page, or imported from a "
        "spreadsheet that lists each guardian's students by reference."
    )

    def columns(self) -> list[Column[Any]]:
        return [
            Column("Ref", lambda g: g.ref),
            Column(
                "Name",
                lambda g: g.name,
                sort=lambda g: (g.last_name.casefold(), g.first_name.casefold()),
            ),
            Column("Children", children, stretch=True),
            Column("Phone", lambda g: g.phone),
            Column("E-mail", lambda g: g.email),
            Column("Reach by", lambda g: CHANNEL_LABELS[g.preferred_channel]),
            Column("Language", lambda g: g.language),
        ]

    async def fetch(self) -> list[GuardianRecord]:
        return await self.bridge.call(self.bridge.services.school.guardians)

    def make_dialog(self, record: GuardianRecord | None) -> GuardianDialog:
        school = self.bridge.services.school

        async def save(draft: GuardianDraft) -> GuardianRecord:
            if record is None:
                return await self.bridge.call(school.save_guardian, draft)
            return await self.bridge.call(
                school.save_guardian, draft, guardian_id=record.id, version=record.version
            )

        return GuardianDialog(save, record, self)

    async def remove(self, record: GuardianRecord) -> None:
        await self.bridge.call(self.bridge.services.school.delete_guardian, record.id)
