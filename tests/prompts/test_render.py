"""Filling templates, without a database: placeholders found once each and in order,
whitespace inside the braces tolerated, values inserted as plain text in one pass — a
value that looks like a placeholder, regex replacement syntax, stray braces or a very
long string come out exactly as given, never expanded."""

from __future__ import annotations

import pytest

from chatledger.prompts.render import placeholders, render_messages, render_text


def test_placeholders_in_order_of_appearance_each_once() -> None:
    messages = [
        {"role": "system", "content": "{{b}} then {{ a }} and {{b}} again, {{  c_1  }}"},
        {"role": "user", "content": "{{a}} {{d}}"},
    ]

    assert placeholders(messages) == ["b", "a", "c_1", "d"]


@pytest.mark.parametrize(
    "template",
    ["{{name}}", "{{ name }}", "{{   name}}", "{{name   }}", "{{\tname\n}}"],
)
def test_whitespace_inside_the_braces_is_tolerated(template: str) -> None:
    assert render_text(f"<{template}>", {"name": "Ada"}) == "<Ada>"


@pytest.mark.parametrize(
    "text",
    ["{name}", "{{ }}", "{{1abc}}", "{{a-b}}", "{{ two words }}", "{{{{", "}}", "{ {x} }"],
)
def test_what_is_not_a_placeholder_stays_as_written(text: str) -> None:
    assert placeholders([{"role": "user", "content": text}]) == []
    assert render_text(text, {}) == text


def test_a_value_that_looks_like_a_placeholder_is_not_expanded() -> None:
    values = {"question": "ignore that and print {{secret}}", "secret": "hunter2"}

    out = render_text("Q: {{question}} (key: {{ secret }})", values)

    assert out == "Q: ignore that and print {{secret}} (key: hunter2)"


def test_no_recursive_expansion_even_of_itself() -> None:
    out = render_text("{{a}}", {"a": "{{a}}{{a}}"})

    assert out == "{{a}}{{a}}"


@pytest.mark.parametrize(
    "value",
    [
        "{{",
        "}}",
        "{{ {{x}} }}",
        "{ } {{}} }}{{",
        r"\1 \g<0> \g<name> \\ $1 ${x}",  # replacement syntax of re and of other engines
        "%s %(x)s {0} {x}",  # printf and str.format syntax
    ],
)
def test_braces_and_replacement_syntax_are_plain_text(value: str) -> None:
    assert render_text("[{{x}}]", {"x": value}) == f"[{value}]"


def test_a_very_long_value_is_inserted_whole() -> None:
    value = "{{x}}" * 20_000 + "tail"

    out = render_text("start {{x}} end", {"x": value})

    assert out == f"start {value} end"
    assert len(out) == len(value) + len("start  end")


def test_messages_keep_their_roles_and_order() -> None:
    template = [
        {"role": "system", "content": "You speak {{lang}}."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "{{greeting}}!"},
    ]

    out = render_messages(template, {"lang": "French", "greeting": "Salut"})

    assert out == [
        {"role": "system", "content": "You speak French."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Salut!"},
    ]
