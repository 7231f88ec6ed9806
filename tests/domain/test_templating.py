"""Templates office staff write, rendered in Jinja2's sandbox: what they may do, what they may
not, and which language a person gets."""

from __future__ import annotations

import pytest

from app.domain.messages import Channel
from app.domain.templating import (
    SAMPLE_DATA,
    TemplateProblem,
    Variant,
    check_syntax,
    missing_parts,
    pick_variant,
    render,
    render_text,
)


def test_a_template_is_filled_in_with_the_persons_data() -> None:
    variant = Variant(
        "en",
        Channel.EMAIL,
        subject="Receipt   for {{ payment.amount }}",
        text="Dear {{ guardian.first_name }},\n{% for s in students %}{{ s.name }}\n{% endfor %}",
    )
    rendered = render(variant, SAMPLE_DATA)
    assert rendered.subject == "Receipt for US$45.00"
    assert rendered.text == "Dear Tendai,\nRudo Moyo"


def test_a_name_the_data_does_not_have_is_an_error_not_a_gap_in_the_message() -> None:
    with pytest.raises(TemplateProblem, match="no value for"):
        render_text("Dear {{ guardian.nickname }}", SAMPLE_DATA, "text")


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ guardian.__class__ }}",
        "{{ students.append(1) }}",  # the data cannot be changed
        "{{ guardian.update({'first_name': 'x'}) }}",
        "{% set x = namespace() %}{{ x.__init__ }}",
    ],
)
def test_escapes_from_the_sandbox_are_refused(escape: str) -> None:
    with pytest.raises(TemplateProblem):
        render_text(escape, SAMPLE_DATA, "text")


@pytest.mark.parametrize(
    "runaway",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 1000000000 }}",
        "{{ 10 ** 100000000 }}",
    ],
)
def test_a_template_that_would_run_for_hours_or_fill_memory_is_stopped(runaway: str) -> None:
    with pytest.raises(TemplateProblem):
        render_text(runaway, {}, "text")


def test_loops_a_message_needs_still_run() -> None:
    text = render_text(
        "{% for i in range(3) %}{% for j in range(3) %}.{% endfor %}{% endfor %}", {}, "t"
    )
    assert text == "." * 9
    assert render_text("{{ '-' * 20 }}", {}, "t") == "-" * 20


def test_a_template_that_would_fill_the_disk_is_refused() -> None:
    with pytest.raises(TemplateProblem, match="longer than"):
        render_text(
            "{% for i in range(100) %}{{ 'x' * 2000 }}{% endfor %}",
            {},
            "text",
        )


def test_html_is_escaped_so_a_name_stays_text() -> None:
    data = {**SAMPLE_DATA, "guardian": {"first_name": "<script>alert(1)</script>"}}
    variant = Variant(
        "en", Channel.EMAIL, subject="Hi", text="{{ guardian.first_name }}",
        html="<p>{{ guardian.first_name }}</p>",
    )  # fmt: skip
    rendered = render(variant, data)
    assert rendered.html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert rendered.text == "<script>alert(1)</script>"  # plain text is not HTML


def test_mistakes_are_reported_with_their_line() -> None:
    with pytest.raises(TemplateProblem, match="line 2"):
        check_syntax("Hello\n{{ guardian.first_name ", "text")


def test_the_persons_language_is_chosen_then_the_schools_then_english() -> None:
    variants = [
        Variant("en", Channel.SMS, text="Hello"),
        Variant("sn", Channel.SMS, text="Mhoro"),
        Variant("nd", Channel.EMAIL, subject="s", text="Sawubona"),
    ]
    assert pick_variant(variants, Channel.SMS, "sn").text == "Mhoro"  # type: ignore[union-attr]
    assert pick_variant(variants, Channel.SMS, "nd").text == "Hello"  # type: ignore[union-attr]
    assert pick_variant(variants, Channel.SMS, "sn_ZW").text == "Mhoro"  # type: ignore[union-attr]
    assert pick_variant(variants, Channel.EMAIL, "en").text == "Sawubona"  # type: ignore[union-attr]
    assert pick_variant(variants, Channel.PUSH, "en") is None


def test_each_channel_says_what_it_still_needs() -> None:
    assert missing_parts(Variant("en", Channel.EMAIL)) == ["a subject", "a text or an HTML body"]
    assert missing_parts(Variant("en", Channel.SMS)) == ["a text"]
    assert missing_parts(Variant("en", Channel.WHATSAPP, whatsapp_template="reminder")) == []
