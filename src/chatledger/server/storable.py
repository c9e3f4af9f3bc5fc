"""Input the two databases cannot store alike is refused before any route runs, as a 422
naming where it was:

- NUL characters: PostgreSQL's text and JSONB cannot hold them, SQLite can; stored on
  one database and a 500 on the other is no contract;
- lone UTF-16 surrogates (a JSON `\\ud800` with no pair): not Unicode, so no database
  driver can encode them;
- NaN and Infinity, which Python's JSON parser accepts: not JSON, so PostgreSQL refuses
  them and no JSON answer could carry them back.

One check for every route (path, query and JSON body), rather than a validator on each
field of each schema, so that a new field cannot forget it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import Request

from chatledger.errors import InvalidInput

# A JSON body can carry these values only through these spellings (a raw NUL or a raw
# surrogate is not valid JSON or not UTF-8): most bodies are not walked at all.
_SUSPECT_TOKENS = (b"\\u0000", b"\\ud", b"\\uD", b"NaN", b"Infinity")
_SURROGATE = re.compile("[\ud800-\udfff]")


async def refuse_unstorable(request: Request) -> None:
    """An app-wide dependency: raises InvalidInput for a value no database can store."""
    for name, value in request.path_params.items():
        _check_text(str(value), name)
    for name, value in request.query_params.multi_items():
        _check_text(value, name)
    body = await request.body()  # cached by the request: the route reads it again free
    if not any(token in body for token in _SUSPECT_TOKENS):
        return
    try:
        parsed = await request.json()
    except ValueError:
        return  # not JSON: the route's own validation answers for it
    _check_json(parsed)


def _check_json(document: Any) -> None:
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:  # iterative: deep nesting must not exhaust the stack
        path, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                _check_text(key, child)
                pending.append((child, item))
        elif isinstance(value, list):
            pending.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(path, "numbers must be finite (JSON has no NaN or Infinity)")


def _check_text(value: str, field: str) -> None:
    if "\x00" in value:
        raise InvalidInput(_printable(field), "must not contain NUL (\\u0000)")
    if _SURROGATE.search(value):
        raise InvalidInput(_printable(field), "must be valid Unicode (a lone surrogate is not)")


def _printable(field: str) -> str:
    # The field's own name may be what is wrong with it: name it without the bad characters.
    return field.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")
