"""Message templates rendered with Jinja2 in its sandbox.

Templates are written by office staff and may be pasted from anywhere, so they run in Jinja2's
`ImmutableSandboxedEnvironment`: no attribute starting with an underscore, no calling methods
that change data, no reaching Python's internals (`{{ ''.__class__.__mro__ }}` is refused),
and a name the data does not have is an error (`StrictUndefined`) rather than a silent gap in
a message to a parent. HTML variants are autoescaped, so a guardian named `<b>` stays text.

A template has a variant per language and channel; `pick_variant` chooses the person's
language, else the school's default language, else English, else any.

Relied on: Jinja2's "Sandbox" documentation (jinja.palletsprojects.com/en/stable/sandbox/).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.domain.errors import SwitchboardError
from app.domain.messages import Channel

# Rendered text longer than this is refused: a loop in a template must not fill the disk.
MAX_RENDERED = 100_000


class TemplateProblem(SwitchboardError):
    """A template that cannot be rendered: a mistake in it, a name the data lacks, or
    something the sandbox refuses. `part` says which part (subject, text, html...)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"The {part} of the template {message}")
        self.part = part


@dataclass(frozen=True)
class Variant:
    language: str
    channel: Channel
    subject: str = ""
    text: str = ""
    html: str = ""
    whatsapp_template: str = ""
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    channel: Channel
    language: str
    subject: str = ""
    text: str = ""
    html: str = ""
    template_name: str = ""
    parameters: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


# Loop steps one rendering may take in all (`range` shares one budget per render), so a loop
# inside a loop cannot keep the database's writer busy for hours.
MAX_STEPS = 100_000
_steps: ContextVar[list[int]] = ContextVar("template_steps")


def _budgeted_range(*bounds: int) -> range:
    numbers = range(*bounds)
    left = _steps.get([MAX_STEPS])
    left[0] -= len(numbers)
    if left[0] < 0:
        raise SecurityError(f"loops of more than {MAX_STEPS:,} steps in all are not allowed")
    return numbers


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with loops counted and `*` and `**` kept to sizes a
    message can use (`"x" * 10**9` would take a gigabyte before anything could refuse it)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("powers above 100 are not allowed")
        if operator == "*":
            for text, times in ((left, right), (right, left)):
                sized = isinstance(text, str | list | tuple) and isinstance(times, int)
                if sized and len(text) * times > MAX_RENDERED:
                    raise SecurityError("that would make a text too long for a message")
        return super().call_binop(context, operator, left, right)


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=False)
    env.globals["range"] = _budgeted_range
    return env


_PLAIN = _environment(False)
_HTML = _environment(True)


def check_syntax(source: str, part: str) -> None:
    """TemplateProblem when `source` is not a template Jinja2 can read."""
    try:
        _PLAIN.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(part, f"has a mistake on line {exc.lineno}: {exc.message}.") from None


def render_text(source: str, data: Mapping[str, Any], part: str, *, html: bool = False) -> str:
    if not source:
        return ""
    env = _HTML if html else _PLAIN
    budget = _steps.set([MAX_STEPS])
    try:
        result = env.from_string(source).render(data)
    except SecurityError as exc:
        raise TemplateProblem(
            part, f"uses something templates may not use ({_said(exc)})."
        ) from None
    except UndefinedError as exc:
        raise TemplateProblem(
            part, f"names something the message has no value for: {exc}."
        ) from None
    except TemplateSyntaxError as exc:
        raise TemplateProblem(part, f"has a mistake on line {exc.lineno}: {exc.message}.") from None
    except TemplateError as exc:
        raise TemplateProblem(part, f"cannot be filled in: {_said(exc)}.") from None
    except (TypeError, ValueError, ArithmeticError, AttributeError, LookupError) as exc:
        raise TemplateProblem(part, f"cannot be filled in: {_said(exc)}.") from None
    finally:
        _steps.reset(budget)
    if len(result) > MAX_RENDERED:
        raise TemplateProblem(part, f"makes a message longer than {MAX_RENDERED:,} characters.")
    return result.strip() if not html else result


def _said(exc: Exception) -> str:
    return str(exc).strip().rstrip(".")


def render(variant: Variant, data: Mapping[str, Any]) -> Rendered:
    """The variant filled in with `data`; TemplateProblem naming the part that failed."""
    return Rendered(
        channel=variant.channel,
        language=variant.language,
        subject=" ".join(render_text(variant.subject, data, "subject").split()),
        text=render_text(variant.text, data, "text"),
        html=render_text(variant.html, data, "HTML", html=True),
        template_name=variant.whatsapp_template,
        parameters=tuple(
            render_text(source, data, f"parameter {number}")
            for number, source in enumerate(variant.parameters, start=1)
        ),
    )


def pick_variant(
    variants: Sequence[Variant], channel: Channel, language: str, fallback: str = "en"
) -> Variant | None:
    """The variant for `channel` in `language`, else in `fallback`, else English, else any
    language; None when the template has nothing for the channel."""
    on_channel = [variant for variant in variants if variant.channel is channel]
    for wanted in (language, language.split("_")[0], fallback, "en"):
        for variant in on_channel:
            if variant.language == wanted:
                return variant
    return on_channel[0] if on_channel else None


def missing_parts(variant: Variant) -> list[str]:
    """What a variant still needs before it can be sent on its channel."""
    needs: list[str] = []
    if variant.channel is Channel.EMAIL:
        if not variant.subject.strip():
            needs.append("a subject")
        if not variant.text.strip() and not variant.html.strip():
            needs.append("a text or an HTML body")
    elif variant.channel is Channel.WHATSAPP:
        if not variant.whatsapp_template.strip() and not variant.text.strip():
            needs.append("an approved WhatsApp template name (or a text)")
    elif not variant.text.strip():
        needs.append("a text")
    return needs


SAMPLE_DATA: dict[str, Any] = {
    "school": {"name": "Msasa Park Music School", "phone": "+263 24 270 0000"},
    "guardian": {"first_name": "Tendai", "last_name": "Moyo", "name": "Tendai Moyo"},
    "teacher": {"first_name": "Chipo", "last_name": "Dube", "name": "Chipo Dube"},
    "student": {"first_name": "Rudo", "last_name": "Moyo", "name": "Rudo Moyo", "grade": "5"},
    "students": [{"first_name": "Rudo", "last_name": "Moyo", "name": "Rudo Moyo", "grade": "5"}],
    "payment": {"amount": "US$45.00", "reference": "PAY-1042", "method": "card"},
    "invoice": {
        "number": "INV-2026-0117",
        "amount": "US$120.00",
        "due_on": "15 December 2026",
        "pay_link": "https://pay.example.org/i/INV-2026-0117",
    },
    "lesson": {
        "title": "Violin, Grade 5",
        "starts": "Tuesday 8 December at 15:00",
        "room": "Studio 2",
        "teacher": "Chipo Dube",
        "meet_link": "",
    },
    "unsubscribe_url": "https://school.example.org/unsubscribe/sample",
}
