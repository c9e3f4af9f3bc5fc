"""Model settings a remote provider accepts, checked before any task exists for them.

Each provider declares its settings as a table of validators; `parse` refuses a key the
table does not name (a typo is a 422 naming `settings.<key>`, not a silently ignored
knob) and returns the values normalised. `extra_body` is the way out for anything a
server understands that chatledger does not check (vLLM's `min_p`, Ollama's `num_ctx`…):
it is sent as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from chatledger.errors import InvalidInput

Validator = Callable[[str, Any], Any]


def parse(
    provider: str, settings: Mapping[str, Any], table: Mapping[str, Validator]
) -> dict[str, Any]:
    """`settings` checked against `table`; a `None` value means "not set" and is dropped."""
    for key in settings:
        if key not in table:
            known = ", ".join(sorted(table))
            raise InvalidInput(
                f"settings.{key}",
                f"not a setting {provider} accepts (known: {known}; pass anything else "
                "the server understands in settings.extra_body)",
            )
    return {
        key: table[key](f"settings.{key}", value)
        for key, value in settings.items()
        if value is not None
    }


def number(low: float, high: float) -> Validator:
    def check(field: str, value: Any) -> float:
        # bool is an int subclass: `true` as a temperature is a caller bug, not 1.0.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(field, f"must be a number, got {value!r}")
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidInput(field, f"must be between {low:g} and {high:g}, got {value!r}")
        return float(value)

    return check


def whole(low: int, high: int | None = None) -> Validator:
    def check(field: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON clients send 100.0 for 100
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(field, f"must be a whole number, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise InvalidInput(field, f"must be {bounds}, got {value!r}")
        return value

    return check


def stop_sequences(most: int | None) -> Validator:
    """A string or a list of non-empty strings (at most `most`), always returned as a list."""

    def check(field: str, value: Any) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
            raise InvalidInput(field, "must be a non-empty string or a list of them")
        if most is not None and len(items) > most:
            raise InvalidInput(field, f"at most {most} stop sequences, got {len(items)}")
        return items

    return check


def choice(*allowed: str) -> Validator:
    def check(field: str, value: Any) -> str:
        if value not in allowed:
            raise InvalidInput(field, f"must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    return check


def text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, f"must be a non-empty string, got {value!r}")
    return value


def json_object(field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(field, "must be a JSON object")
    return dict(value)
