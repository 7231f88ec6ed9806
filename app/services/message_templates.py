"""Message templates: kept in the database, a variant per language and channel, checked when
saved (the sandbox's syntax, and what each channel needs), previewed with sample data or a
real person's, with the SMS length and what it would cost.

The built-in templates (payment receipt, failed payment, lesson reminder, overdue invoice)
are added once, in English; the school edits them and adds languages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.domain.errors import FieldError, NotFound, ValidationFailed
from app.domain.messages import Channel, SmsLength, sms_length
from app.domain.templating import (
    SAMPLE_DATA,
    Rendered,
    TemplateProblem,
    Variant,
    check_syntax,
    missing_parts,
    pick_variant,
    render,
)
from app.services import access, audit
from app.services.events import EventHub
from app.store.database import Database
from app.store.messaging import TemplateRow, TemplateVariantRow

TOPIC = "templates"


@dataclass(frozen=True)
class TemplateDraft:
    name: str
    description: str = ""
    purpose: str = "general"
    variants: tuple[Variant, ...] = ()
    id: int | None = None


@dataclass(frozen=True)
class Template:
    id: int
    name: str
    description: str
    purpose: str
    variants: tuple[Variant, ...]

    @property
    def languages(self) -> list[str]:
        return sorted({variant.language for variant in self.variants})

    @property
    def channels(self) -> list[Channel]:
        return sorted({variant.channel for variant in self.variants}, key=list(Channel).index)


@dataclass(frozen=True)
class Preview:
    rendered: Rendered
    sms: SmsLength | None = None
    problems: tuple[str, ...] = field(default=())


def variant_of(row: TemplateVariantRow) -> Variant:
    return Variant(
        language=row.language,
        channel=Channel(row.channel),
        subject=row.subject,
        text=row.text,
        html=row.html,
        whatsapp_template=row.whatsapp_template,
        parameters=tuple(row.parameters or ()),
    )


def load_template(session: Session, key: int | str) -> Template:
    query = select(TemplateRow)
    query = query.where(TemplateRow.id == key if isinstance(key, int) else TemplateRow.name == key)
    row = session.scalars(query).first()
    if row is None:
        raise NotFound(f"There is no message template {key!r}.")
    variants = session.scalars(
        select(TemplateVariantRow)
        .where(TemplateVariantRow.template_id == row.id)
        .order_by(TemplateVariantRow.language, TemplateVariantRow.channel)
    )
    return Template(
        row.id, row.name, row.description, row.purpose, tuple(variant_of(v) for v in variants)
    )


def problems_of(draft: TemplateDraft) -> list[FieldError]:
    errors: list[FieldError] = []
    if not draft.name.strip():
        errors.append(FieldError("name", "A template needs a name."))
    if not draft.variants:
        errors.append(FieldError("variants", "A template needs a text for at least one channel."))
    seen: set[tuple[str, Channel]] = set()
    for variant in draft.variants:
        where = f"{variant.channel.label} ({variant.language})"
        if (variant.language, variant.channel) in seen:
            errors.append(FieldError("variants", f"{where} is written twice."))
        seen.add((variant.language, variant.channel))
        if not variant.language.strip():
            errors.append(
                FieldError("language", f"The {variant.channel.label} text needs a language.")
            )
        for need in missing_parts(variant):
            errors.append(FieldError("variants", f"{where} needs {need}."))
        parts = [("subject", variant.subject), ("text", variant.text), ("HTML", variant.html)]
        parts += [(f"parameter {n}", p) for n, p in enumerate(variant.parameters, start=1)]
        for part, source in parts:
            try:
                check_syntax(source, part)
            except TemplateProblem as exc:
                errors.append(FieldError("variants", f"{where}: {exc}"))
    return errors


def _trail(template: Template) -> dict[str, Any]:
    """A template as the audit trail keeps it: its name and, for each variant, a fingerprint
    of its wording, which shows which texts changed without copying them."""
    return {
        "name": template.name,
        "description": template.description,
        "purpose": template.purpose,
        "variants": {
            f"{variant.language}/{variant.channel.value}": _fingerprint(variant)
            for variant in template.variants
        },
    }


def _fingerprint(variant: Variant) -> str:
    parts = [variant.subject, variant.text, variant.html, variant.whatsapp_template]
    parts += variant.parameters
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:12]


class TemplateService:
    """Saving and removing a template needs SEND_MESSAGES and is an entry in the audit trail;
    the built-in ones are added at start, as the service user, unrecorded."""

    def __init__(self, db: Database, events: EventHub) -> None:
        self._db = db
        self._events = events

    async def templates(self) -> list[Template]:
        def query(session: Session) -> list[Template]:
            ids = session.scalars(select(TemplateRow.id).order_by(TemplateRow.name))
            return [load_template(session, template_id) for template_id in list(ids)]

        return await self._db.read(query)

    async def template(self, key: int | str) -> Template:
        return await self._db.read(load_template, key)

    async def save(self, draft: TemplateDraft) -> Template:
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        errors = problems_of(draft)
        if errors:
            raise ValidationFailed(errors)

        def write(session: Session) -> Template:
            was: dict[str, Any] | None = None
            if draft.id is None:
                row = TemplateRow(name=draft.name.strip())
                session.add(row)
            else:
                found = session.get(TemplateRow, draft.id)
                if found is None:
                    raise NotFound("The template was deleted while it was being edited.")
                was = _trail(load_template(session, draft.id))
                row = found
                row.name = draft.name.strip()
                row.version += 1
            row.description = draft.description
            row.purpose = draft.purpose
            try:
                session.flush()
            except IntegrityError:
                raise ValidationFailed(
                    [FieldError("name", f"There is already a template called {draft.name!r}.")]
                ) from None
            session.execute(
                delete(TemplateVariantRow).where(TemplateVariantRow.template_id == row.id)
            )
            for variant in draft.variants:
                session.add(
                    TemplateVariantRow(
                        template_id=row.id,
                        language=variant.language.strip(),
                        channel=variant.channel.value,
                        subject=variant.subject,
                        text=variant.text,
                        html=variant.html,
                        whatsapp_template=variant.whatsapp_template.strip(),
                        parameters=list(variant.parameters),
                    )
                )
            session.flush()
            saved = load_template(session, row.id)
            now = _trail(saved)
            if was is None:
                before, after = None, now
            else:
                old, new = audit.changes(was, now)
                before, after = {"name": was["name"], **old}, {"name": now["name"], **new}
            audit.record(session, who, "template.saved", "template", row.id, before, after)
            return saved

        saved = await self._db.write(write)
        self._events.publish(TOPIC, {"id": saved.id})
        return saved

    async def remove(self, template_id: int) -> None:
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()

        def write(session: Session) -> None:
            row = session.get(TemplateRow, template_id)
            if row is not None:
                was = _trail(load_template(session, template_id))
                audit.record(session, who, "template.removed", "template", template_id, was, None)
                session.delete(row)

        await self._db.write(write)
        self._events.publish(TOPIC, {"id": template_id})

    async def ensure_builtin(self) -> int:
        """Adds the built-in templates the school does not have yet; how many were added."""

        def write(session: Session) -> int:
            have = set(session.scalars(select(TemplateRow.name)))
            added = 0
            for draft in BUILTIN:
                if draft.name in have:
                    continue
                session.add(
                    row := TemplateRow(
                        name=draft.name, description=draft.description, purpose=draft.purpose
                    )
                )
                session.flush()
                for variant in draft.variants:
                    session.add(
                        TemplateVariantRow(
                            template_id=row.id,
                            language=variant.language,
                            channel=variant.channel.value,
                            subject=variant.subject,
                            text=variant.text,
                            html=variant.html,
                        )
                    )
                added += 1
            return added

        return await self._db.write(write)


def preview(
    variants: Sequence[Variant],
    channel: Channel,
    language: str = "en",
    data: Mapping[str, Any] | None = None,
) -> Preview:
    """The variant for `channel` and `language` filled in with `data` (sample data without),
    and for SMS its length in parts. Problems are reported, not raised."""
    variant = pick_variant(variants, channel, language)
    if variant is None:
        empty = Rendered(channel, language)
        return Preview(empty, problems=(f"The template has no {channel.label} text.",))
    try:
        rendered = render(variant, data if data is not None else SAMPLE_DATA)
    except TemplateProblem as exc:
        return Preview(Rendered(channel, variant.language), problems=(str(exc),))
    length = sms_length(rendered.text) if channel is Channel.SMS else None
    return Preview(rendered, length)


def _builtin(
    name: str, description: str, purpose: str, subject: str, text: str, sms: str
) -> TemplateDraft:
    return TemplateDraft(
        name=name,
        description=description,
        purpose=purpose,
        variants=(
            Variant("en", Channel.EMAIL, subject=subject, text=text),
            Variant("en", Channel.SMS, text=sms),
        ),
    )


BUILTIN = (
    _builtin(
        "Payment receipt",
        "Sent when a payment succeeds.",
        "payment",
        "Receipt for {{ payment.amount }} — {{ school.name }}",
        "Dear {{ guardian.first_name }},\n\nThank you: we received {{ payment.amount }} "
        "(reference {{ payment.reference }}).\n\n{{ school.name }}",
        "{{ school.name }}: we received {{ payment.amount }}, ref {{ payment.reference }}. "
        "Thank you!",
    ),
    _builtin(
        "Payment failed",
        "Sent when a payment is declined, with a link to pay another way.",
        "payment",
        "Your payment of {{ payment.amount }} did not go through",
        "Dear {{ guardian.first_name }},\n\nYour payment of {{ payment.amount }} did not go "
        "through. You can pay here: {{ invoice.pay_link }}\n\n{{ school.name }}",
        "{{ school.name }}: your payment of {{ payment.amount }} did not go through. Pay here: "
        "{{ invoice.pay_link }}",
    ),
    _builtin(
        "Lesson reminder",
        "Sent the day before a lesson.",
        "lesson",
        "Reminder: {{ lesson.title }} {{ lesson.starts }}",
        "Dear {{ guardian.first_name }},\n\nA reminder that {{ student.first_name }} has "
        "{{ lesson.title }} {{ lesson.starts }}{% if lesson.room %} in {{ lesson.room }}"
        "{% endif %}.\n\n{{ school.name }}",
        "Reminder: {{ student.first_name }} has {{ lesson.title }} {{ lesson.starts }}"
        "{% if lesson.room %}, {{ lesson.room }}{% endif %}. {{ school.name }}",
    ),
    _builtin(
        "Invoice overdue",
        "Sent when an invoice is past its due date.",
        "invoice",
        "Invoice {{ invoice.number }} is overdue",
        "Dear {{ guardian.first_name }},\n\nInvoice {{ invoice.number }} for "
        "{{ invoice.amount }} was due on {{ invoice.due_on }}. You can pay here: "
        "{{ invoice.pay_link }}\n\n{{ school.name }}",
        "{{ school.name }}: invoice {{ invoice.number }} ({{ invoice.amount }}) was due "
        "{{ invoice.due_on }}. Pay: {{ invoice.pay_link }}",
    ),
)
