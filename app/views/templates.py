"""Templates: the messages Switchboard sends, each with a text per language and channel
(e-mail, SMS, WhatsApp, push), edited beside a live preview filled in with sample data.

The preview and the SMS counter follow the typing (200 ms after the last key) and run on a
worker thread: rendering is pure, but a template is free text and a loop written in it must
not freeze the window. Problems (a mistake in the template, a name the data has not,
something the sandbox refuses) are shown under the editor, never raised.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from html import escape
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import FieldError, SwitchboardError, ValidationFailed
from app.domain.messages import Channel, SmsLength, segments_label
from app.domain.templating import Rendered, Variant
from app.services.message_templates import (
    TOPIC,
    Preview,
    Template,
    TemplateDraft,
    preview,
    problems_of,
)
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import confirm, tell
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED
from app.views.students import LANGUAGES

DEBOUNCE_MS = 200
LANGUAGE_NAMES = dict(LANGUAGES)


def language_name(code: str) -> str:
    name = LANGUAGE_NAMES.get(code)
    return f"{name} ({code})" if name else code


def variant_label(variant: Variant) -> str:
    return f"{language_name(variant.language)} · {variant.channel.label}"


def rendered_text(rendered: Rendered) -> str:
    """A rendered message as plain text, the way its channel shows it."""
    channel = rendered.channel
    if channel is Channel.EMAIL:
        body = rendered.text or ("(HTML only)" if rendered.html else "")
        return f"Subject: {rendered.subject}\n\n{body}"
    if channel is Channel.PUSH:
        return f"{rendered.subject}\n{rendered.text}".strip()
    if channel is Channel.WHATSAPP:
        lines: list[str] = []
        if rendered.template_name:
            lines.append(f"WhatsApp template “{rendered.template_name}” ({rendered.language})")
            lines += [f"  {{{{{n}}}}} = {p}" for n, p in enumerate(rendered.parameters, 1)]
        if rendered.text:
            lines += ["", "Inside 24 hours of their last message:", rendered.text]
        return "\n".join(lines).strip()
    return rendered.text


def counter_text(length: SmsLength) -> str:
    """The SMS counter: parts, encoding, room left, and what forces UCS-2."""
    if length.units == 0:
        return "Empty: write the text to see how many SMS parts it takes."
    text = segments_label(length)
    if length.unicode_characters:
        shown = " ".join(
            ch if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
            for ch in length.unicode_characters[:12]
        )
        more = " …" if len(length.unicode_characters) > 12 else ""
        text += (
            f"\nThese characters make it UCS-2 (70 characters a message, 67 a part, instead of "
            f"160 and 153): {shown}{more}. Replace them to send fewer parts."
        )
    return text


def _written_for(template: Template) -> str:
    channels = ", ".join(channel.label for channel in template.channels)
    languages = ", ".join(template.languages)
    return f"{channels} · {languages}" if channels else "no text yet"


class TemplatesPage(Page):
    key = "templates"
    title = "Templates"
    icon_name = "invoices"
    topics = (TOPIC,)
    shortcut_hint = "Ctrl+S saves the template"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.editing: Template | None = None  # as saved; None for a new one
        self.variants: list[Variant] = []
        self.current = -1  # which variant the fields show
        self.dirty = False
        self.new = False
        self.shown: Preview | None = None
        self._reselecting = False
        self._previewing = 0
        self.previewed: asyncio.Task[Any] | None = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._start_preview)

        self.new_button = QPushButton("New template")
        self.new_button.clicked.connect(self.new_template)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(lambda: tasks.start(self.delete(), owner=self))
        self.actions.addWidget(self.delete_button)
        self.actions.addWidget(self.new_button)

        self.model: RecordModel[Template] = RecordModel(
            [
                Column("Template", lambda t: t.name, stretch=True, tooltip=lambda t: t.description),
                Column("Written for", _written_for, tooltip=_written_for, width=150),
            ]
        )
        self.table = RecordTable(self.model)
        self.table.setMinimumWidth(280)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.selection_changed.connect(self._selected)

        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(self._editor())
        split.addWidget(self._preview_pane())
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 4)
        split.setStretchFactor(2, 3)
        split.setSizes([280, 460, 340])
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split, 1)
        QShortcut(QKeySequence.StandardKey.Save, self, activated=self.save_button.click)
        self._show_variant()
        self._enable()

    # --- widgets -------------------------------------------------------------------------------

    def _editor(self) -> QWidget:
        editor = QWidget()
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. Concert reminder")
        self.name.textEdited.connect(lambda _t: self._changed())
        self.name_error = _error_label()
        self.description = QLineEdit()
        self.description.setPlaceholderText("when it is sent, for the next person who edits it")
        self.description.textEdited.connect(lambda _t: self._changed())
        name_box = QVBoxLayout()
        name_box.setSpacing(2)
        name_box.addWidget(self.name)
        name_box.addWidget(self.name_error)
        form = QFormLayout()
        form.addRow("Name", name_box)
        form.addRow("Description", self.description)

        self.variant_list = QListWidget()
        self.variant_list.setMaximumHeight(84)
        self.variant_list.currentRowChanged.connect(self._variant_chosen)
        self.language = QComboBox()
        self.language.setEditable(True)
        self.language.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for code, name in LANGUAGES:
            self.language.addItem(f"{name} ({code})", code)
        self.language.setToolTip("A language code such as en, sn (Shona) or nd (Ndebele)")
        self.channel = QComboBox()
        for channel in Channel:
            self.channel.addItem(channel.label, channel.value)
        self.add_button = QPushButton("Add text")
        self.add_button.setToolTip("Add a text for this language and channel")
        self.add_button.clicked.connect(lambda: self.add_variant(self._typed_language()))
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the chosen text from the template")
        self.remove_button.clicked.connect(self.remove_variant)
        adding = QHBoxLayout()
        adding.addWidget(self.language, 2)
        adding.addWidget(self.channel, 1)
        adding.addWidget(self.add_button)
        adding.addWidget(self.remove_button)

        self.subject_label = QLabel("Subject")
        self.subject = QLineEdit()
        self.whatsapp_label = QLabel("Approved WhatsApp template name")
        self.whatsapp = QLineEdit()
        self.whatsapp.setPlaceholderText("as approved in WhatsApp Manager, e.g. lesson_reminder")
        self.parameters_label = QLabel("Its parameters, one a line ({{1}}, {{2}}, …)")
        self.parameters = QPlainTextEdit()
        self.parameters.setMaximumHeight(70)
        self.text_label = QLabel("Text")
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText(
            "Dear {{ guardian.first_name }}, … — names in {{ }} are filled in for each person"
        )
        self.html_label = QLabel("HTML (optional)")
        self.html = QPlainTextEdit()
        self.html.setMaximumHeight(90)
        for edit in (self.subject, self.whatsapp):
            edit.textEdited.connect(lambda _t: self._changed())
        for plain in (self.parameters, self.text, self.html):
            plain.textChanged.connect(self._changed)
        self.counter = QLabel()
        self.counter.setWordWrap(True)
        self.counter.setObjectName("Muted")
        self.problems = _error_label()
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.revert_button = QPushButton("Undo changes")
        self.revert_button.clicked.connect(self.revert)
        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        self.save_button.setToolTip("Save the template (Ctrl+S)")
        self.save_button.clicked.connect(lambda: tasks.start(self.save(), owner=self))
        buttons = QHBoxLayout()
        buttons.addWidget(self.notice, 1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)

        texts = QLabel("Texts, one per language and channel")
        texts.setObjectName("CardLabel")
        layout = QVBoxLayout(editor)
        layout.setContentsMargins(8, 0, 8, 0)
        layout.addLayout(form)
        layout.addWidget(texts)
        layout.addWidget(self.variant_list)
        layout.addLayout(adding)
        for widget in (
            self.subject_label,
            self.subject,
            self.whatsapp_label,
            self.whatsapp,
            self.parameters_label,
            self.parameters,
            self.text_label,
        ):
            layout.addWidget(widget)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.counter)
        layout.addWidget(self.html_label)
        layout.addWidget(self.html)
        layout.addWidget(self.problems)
        layout.addLayout(buttons)
        return editor

    def _preview_pane(self) -> QWidget:
        pane = QWidget()
        heading = QLabel("Preview with sample data")
        heading.setObjectName("CardLabel")
        self.preview_view = QTextBrowser()
        self.preview_view.setOpenLinks(False)
        self.preview_view.setOpenExternalLinks(False)
        self.preview_note = QLabel(
            "Filled in for Tendai Moyo, guardian of Rudo (Grade 5), with a sample lesson, "
            "payment and invoice. Real names and amounts change the length."
        )
        self.preview_note.setObjectName("Muted")
        self.preview_note.setWordWrap(True)
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(heading)
        layout.addWidget(self.preview_view, 1)
        layout.addWidget(self.preview_note)
        return pane

    # --- loading -------------------------------------------------------------------------------

    async def load(self) -> None:
        templates: list[Template] = await self.bridge.call(self.bridge.services.templates.templates)
        self.model.set_records(templates)
        if not templates and not self.new:
            self.states.show_empty(
                "No templates yet",
                "A template is a message written once and filled in for each person: a lesson "
                "reminder, a receipt, a notice to every violin family. Write one, in English "
                "and in the families' languages, for e-mail, SMS, WhatsApp or push.",
                [("New template", self.new_template)],
            )
            return
        self.states.show_content()
        if self.editing is None and not self.new and templates:
            self.table.selectRow(0)
        elif self.editing is not None and not self.dirty:
            fresh = next((t for t in templates if t.id == self.editing.id), None)
            if fresh is None:  # deleted elsewhere
                self.editing = None
                if templates:
                    self.table.selectRow(0)
            elif fresh != self.editing:
                self._edit(fresh)

    def _selected(self, template: Template | None) -> None:
        if self._reselecting or template is None:
            return
        if self.editing is not None and self.editing.id == template.id and not self.new:
            return
        if self.dirty:
            tasks.start(self._switch_after_asking(template), owner=self)
            return
        self._edit(template)

    async def _switch_after_asking(self, template: Template) -> None:
        leave = await confirm(
            self,
            "Leave your changes?",
            f"The changes to {self.name.text() or 'this template'} are not saved.",
            "Discard them",
        )
        if leave:
            self._edit(template)
            return
        self._reselecting = True
        try:
            if self.editing is not None and not self.new:
                self.table.select_key(self.editing.id)
            else:
                self.table.setCurrentIndex(QModelIndex())
                self.table.clearSelection()
        finally:
            self._reselecting = False

    def _edit(self, template: Template | None) -> None:
        """Show `template` in the editor (None: a new, empty one), keeping the chosen text."""
        keep = self.variants[self.current] if 0 <= self.current < len(self.variants) else None
        self.editing = template
        self.new = template is None
        self.name.setText(template.name if template else "")
        self.description.setText(template.description if template else "")
        self.variants = list(template.variants) if template else [Variant("en", Channel.EMAIL)]
        self.name_error.hide()
        self.problems.hide()
        self.notice.clear()
        self._list_variants()
        index = next(
            (
                n
                for n, v in enumerate(self.variants)
                if keep and (v.language, v.channel) == (keep.language, keep.channel)
            ),
            0,
        )
        self.variant_list.setCurrentRow(index if self.variants else -1)
        self._show_variant()
        self.dirty = False
        self._enable()

    def _list_variants(self) -> None:
        self.variant_list.blockSignals(True)
        self.variant_list.clear()
        for variant in self.variants:
            self.variant_list.addItem(QListWidgetItem(variant_label(variant)))
        self.variant_list.blockSignals(False)

    # --- editing -------------------------------------------------------------------------------

    def new_template(self) -> None:
        if self.dirty:
            tasks.start(self._new_after_asking(), owner=self)
            return
        self._start_new()

    async def _new_after_asking(self) -> None:
        if await confirm(self, "Leave your changes?", "The changes are not saved.", "Discard them"):
            self._start_new()

    def _start_new(self) -> None:
        self._reselecting = True
        self.table.setCurrentIndex(QModelIndex())
        self.table.clearSelection()
        self._reselecting = False
        self.states.show_content()
        self._edit(None)
        self.name.setFocus()

    def _typed_language(self) -> str:
        index = self.language.findText(self.language.currentText())
        if index >= 0:
            return str(self.language.itemData(index))
        return self.language.currentText().strip()

    def add_variant(self, language: str, channel: Channel | None = None) -> None:
        """Add a text for `language` and `channel` (the chosen one without), starting from the
        English text of that channel so a translator sees what to translate."""
        chosen = channel or Channel(self.channel.currentData())
        language = language.strip()
        if not language:
            self._problem_list(["Choose or type a language code (en, sn, nd…) first."])
            return
        for n, variant in enumerate(self.variants):
            if (variant.language, variant.channel) == (language, chosen):
                self.variant_list.setCurrentRow(n)
                return
        model = next(
            (v for v in self.variants if v.channel is chosen and v.language == "en"),
            next((v for v in self.variants if v.channel is chosen), None),
        )
        added = replace(model, language=language) if model else Variant(language, chosen)
        self.variants.append(added)
        self._list_variants()
        self.variant_list.setCurrentRow(len(self.variants) - 1)
        self._changed()

    def remove_variant(self) -> None:
        if not 0 <= self.current < len(self.variants):
            return
        del self.variants[self.current]
        self.current = -1
        self._list_variants()  # leaves no row chosen
        self.variant_list.setCurrentRow(0)
        self._changed()

    def _variant_chosen(self, row: int) -> None:
        self.current = row
        self._show_variant()
        self._enable()
        self._start_preview()

    def _show_variant(self) -> None:
        """Fill the fields from the chosen text, showing those its channel uses."""
        variant = self.variants[self.current] if 0 <= self.current < len(self.variants) else None
        channel = variant.channel if variant else None
        email, whatsapp, push = (
            channel is Channel.EMAIL,
            channel is Channel.WHATSAPP,
            channel is Channel.PUSH,
        )
        self.subject_label.setText("Title" if push else "Subject")
        self.subject_label.setVisible(email or push)
        self.subject.setVisible(email or push)
        self.whatsapp_label.setVisible(whatsapp)
        self.whatsapp.setVisible(whatsapp)
        self.parameters_label.setVisible(whatsapp)
        self.parameters.setVisible(whatsapp)
        self.html_label.setVisible(email)
        self.html.setVisible(email)
        self.text_label.setText(
            "Body"
            if push
            else "Text inside 24 hours of their last message (optional)"
            if whatsapp
            else "Text"
        )
        self.counter.setVisible(channel is Channel.SMS)
        fields: list[Any] = [self.subject, self.whatsapp, self.parameters, self.text, self.html]
        for field in fields:
            field.blockSignals(True)
        self.subject.setText(variant.subject if variant else "")
        self.whatsapp.setText(variant.whatsapp_template if variant else "")
        self.parameters.setPlainText("\n".join(variant.parameters) if variant else "")
        self.text.setPlainText(variant.text if variant else "")
        self.html.setPlainText(variant.html if variant else "")
        for field in fields:
            field.blockSignals(False)
        self.text.setEnabled(variant is not None)

    def _changed(self) -> None:
        """Something was typed: keep it in the chosen text, and preview it shortly."""
        if 0 <= self.current < len(self.variants):
            parameters = tuple(
                line.strip() for line in self.parameters.toPlainText().splitlines() if line.strip()
            )
            self.variants[self.current] = replace(
                self.variants[self.current],
                subject=self.subject.text(),
                text=self.text.toPlainText(),
                html=self.html.toPlainText(),
                whatsapp_template=self.whatsapp.text(),
                parameters=parameters,
            )
        self.dirty = True
        self.notice.clear()
        self._enable()
        self._debounce.start()

    def draft(self) -> TemplateDraft:
        return TemplateDraft(
            name=self.name.text().strip(),
            description=self.description.text().strip(),
            purpose=self.editing.purpose if self.editing else "general",
            variants=tuple(self.variants),
            id=self.editing.id if self.editing else None,
        )

    def _enable(self) -> None:
        editing = self.editing is not None or self.new
        self.save_button.setEnabled(editing and (self.dirty or self.new))
        self.revert_button.setEnabled(self.dirty)
        self.delete_button.setEnabled(self.editing is not None and not self.new)
        self.remove_button.setEnabled(len(self.variants) > 1 and self.current >= 0)

    def revert(self) -> None:
        self._edit(self.editing)

    # --- preview -------------------------------------------------------------------------------

    def _start_preview(self) -> None:
        self._debounce.stop()
        self._previewing += 1
        self.previewed = tasks.start(self.update_preview(self._previewing), owner=self)

    async def update_preview(self, number: int | None = None) -> None:
        """Render the chosen text with sample data on a worker thread, and show it, the SMS
        counter and every problem of the template (only if nothing newer was typed)."""
        number = self._previewing if number is None else number
        variant = self.variants[self.current] if 0 <= self.current < len(self.variants) else None
        draft = self.draft()
        if variant is None:
            shown, problems = None, [error.message for error in problems_of(draft)]
        else:
            shown, errors = await asyncio.to_thread(_check, self.variants, variant, draft)
            problems = [*errors, *shown.problems]
        if number != self._previewing:
            return
        self.shown = shown
        self._problem_list(problems)
        if shown is None:
            self.preview_view.setPlainText("Add a text to see it here.")
            self.counter.clear()
            return
        rendered = shown.rendered
        if shown.problems:
            self.preview_view.setHtml(
                f"<p style='color:{DEGRADED}'>{escape(' '.join(shown.problems))}</p>"
            )
        elif rendered.channel is Channel.EMAIL and rendered.html:
            self.preview_view.setHtml(
                f"<p><b>Subject:</b> {escape(rendered.subject)}</p><hr>{rendered.html}"
            )
        else:
            self.preview_view.setPlainText(rendered_text(rendered))
        if shown.sms is not None:
            self.counter.setText(counter_text(shown.sms))
        elif variant is not None and variant.channel is Channel.SMS:
            self.counter.setText("The counter shows once the text can be filled in.")

    def _problem_list(self, problems: list[str]) -> None:
        unique = list(dict.fromkeys(problems))
        self.problems.setText("\n".join(f"• {problem}" for problem in unique))
        self.problems.setVisible(bool(unique))

    # --- saving and deleting -------------------------------------------------------------------

    async def save(self) -> Template | None:
        if self.editing is None and not self.new:
            return None
        self._debounce.stop()
        draft = self.draft()
        self.name_error.hide()
        self.save_button.setEnabled(False)
        try:
            saved: Template = await self.bridge.call(self.bridge.services.templates.save, draft)
        except ValidationFailed as exc:
            self._show_errors(exc.errors)
            self._enable()
            return None
        except SwitchboardError as exc:
            self._problem_list([str(exc)])
            self._enable()
            return None
        self.new = False
        self.dirty = False
        self._edit(saved)
        self.notice.setText(f"Saved {saved.name}.")
        self._reselecting = True
        try:
            await self.refresh()
            self.table.select_key(saved.id)
        finally:
            self._reselecting = False
        return saved

    def _show_errors(self, errors: tuple[FieldError, ...] | list[FieldError]) -> None:
        others: list[str] = []
        for error in errors:
            if error.field == "name":
                self.name_error.setText(error.message)
                self.name_error.show()
            else:
                others.append(error.message)
        self._problem_list(others)

    async def delete(self) -> bool:
        template = self.editing
        if template is None or self.new:
            return False
        asked = await confirm(
            self,
            "Delete this template?",
            f"“{template.name}” and its {len(template.variants)} texts are deleted. Sends "
            "already made with it keep their messages.",
            "Delete",
        )
        if not asked:
            return False
        try:
            await self.bridge.call(self.bridge.services.templates.remove, template.id)
        except SwitchboardError as exc:
            tell(self, "Not deleted", str(exc))
            return False
        self.editing, self.dirty = None, False
        self.variants, self.current = [], -1
        await self.refresh()
        return True


def _check(
    variants: list[Variant], variant: Variant, draft: TemplateDraft
) -> tuple[Preview, list[str]]:
    """On a worker thread: the chosen text previewed, and the template's problems as saving
    would find them."""
    shown = preview(variants, variant.channel, variant.language)
    return shown, [error.message for error in problems_of(draft)]


def _error_label() -> QLabel:
    label = QLabel()
    label.setObjectName("FieldError")
    label.setWordWrap(True)
    label.hide()
    return label
