"""Filling a template: `{{ name }}` placeholders (whitespace inside the braces is fine)
are replaced by their values as plain text, in one pass over the template.

One pass is what makes values safe: a value is inserted and never read again, so a value
containing `{{secret}}` stays the literal text `{{secret}}` — no template injection, no
recursive expansion — and regex replacement syntax in a value (`\\1`, `\\g<0>`) means
nothing because values are inserted by a function, not as a replacement pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# A variable name: an identifier of at most 64 characters (the `variables.key` column).
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")


def placeholders(messages: Iterable[Mapping[str, Any]]) -> list[str]:
    """The variable names a template refers to, each once, in order of appearance."""
    found: dict[str, None] = {}
    for message in messages:
        for match in PLACEHOLDER.finditer(str(message["content"])):
            found.setdefault(match.group(1))
    return list(found)


def render_text(template: str, values: Mapping[str, str]) -> str:
    """`template` with every placeholder replaced by its value (all must be given)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def render_messages(
    messages: Iterable[Mapping[str, Any]], values: Mapping[str, str]
) -> list[dict[str, str]]:
    return [
        {"role": str(m["role"]), "content": render_text(str(m["content"]), values)}
        for m in messages
    ]
