"""What the two databases cannot store alike, found in a value before it is stored:

- NUL characters: PostgreSQL's text and JSONB cannot hold them, SQLite can; stored on
  one database and a 500 on the other is no contract;
- lone UTF-16 surrogates (a JSON `\\ud800` with no pair): not Unicode, so no database
  driver can encode them;
- NaN and Infinity, which Python's JSON parser accepts: not JSON, so PostgreSQL refuses
  them and no JSON answer could carry them back; nor a number too large for a float
  (`1e999`), which every JSON parser here reads as Infinity.

`check_json` raises `InvalidInput` naming where (`metadata.k`, `entries.0.data.x`).
The server runs it on every request (server/storable.py); batch ingest on each item, so
one bad item is rejected alone. Both first ask `may_hold_unstorable` of the raw body:
most bodies cannot hold any such value, and are not walked at all. A batch whose items
all validate is checked once validated instead (batch/body.py): a NUL's one spelling,
and `numbers_are_finite` of each item, which walks only what can hold a float.
"""

from __future__ import annotations

import functools
import math
import re
import types
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import AwareDatetime, BaseModel

from chatledger.errors import InvalidInput

_SURROGATE = re.compile("[\ud800-\udfff]")

# A JSON body can carry those values only through these spellings: NUL and surrogates
# as escapes, NaN and Infinity bare, and a surrogate's own UTF-8 bytes (not valid UTF-8,
# yet Python's JSON parser decodes bytes with "surrogatepass" and takes them; ED 80-9F
# is Hangul, which only costs a walk). A zero byte: the body is UTF-16 or UTF-32, which
# the parser also takes, and where the escapes above are spelled differently.
_SUSPECT_TOKENS = (b"NaN", b"Infinity", b"\xed", b"\x00")
_SUSPECT_ESCAPES = (b"\\u0000", b"\\ud", b"\\uD")
# What every escape above begins with: most bodies hold none (ASCII text, or text sent
# as UTF-8), and one search for it costs a third of the three (each a pass over the body).
_ESCAPE = b"\\u"

# A number too large for a float, which the parsers read as Infinity, needs more than 308
# digits before its point once its exponent is applied: an exponent of three digits or
# more, or at least 210 digits before an exponent of two (below both, a number is under
# 10^209 x 10^99). Searched in the body with its digits made zeros and its exponent's
# letter and plus sign made alike: two searches, where a regular expression took 20 times
# as long (every position a candidate).
_NUMBER_SHAPES = bytes.maketrans(b"123456789E", b"000000000e")
_BIG_EXPONENT = b"e000"
_MANY_DIGITS = b"0" * 210


def may_hold_unstorable(body: bytes) -> bool:
    """False when no value of the JSON document `body` can fail `check_json`."""
    if _ESCAPE in body and any(escape in body for escape in _SUSPECT_ESCAPES):
        return True
    if any(token in body for token in _SUSPECT_TOKENS):
        return True
    return _may_hold_a_huge_number(body)


def _may_hold_a_huge_number(body: bytes) -> bool:
    # (Text that looks alike, "E100" or a long run of digits, only costs a walk.)
    shapes = body.translate(_NUMBER_SHAPES, b"+")
    return _BIG_EXPONENT in shapes or _MANY_DIGITS in shapes


def check_json(document: Any, path: str = "") -> None:
    """Raise InvalidInput at the first value under `path` that cannot be stored."""
    pending: list[tuple[str, Any]] = [(path, document)]
    while pending:  # iterative: deep nesting must not exhaust the stack
        path, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                check_text(key, child)
                pending.append((child, item))
        elif isinstance(value, list):
            pending.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value))
        elif isinstance(value, str):
            check_text(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(path, "numbers must be finite (JSON has no NaN or Infinity)")


def check_text(value: str, field: str) -> None:
    if "\x00" in value:
        raise InvalidInput(_printable(field), "must not contain NUL (\\u0000)")
    if _SURROGATE.search(value):
        raise InvalidInput(_printable(field), "must be valid Unicode (a lone surrogate is not)")


def _printable(field: str) -> str:
    # The field's own name may be what is wrong with it: name it without the bad characters.
    return field.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def numbers_are_finite(model: BaseModel) -> bool:
    """Whether every number a validated model holds is finite, walking only the fields
    that can hold a float (free-form JSON, most often empty). For a model validated from
    JSON text by pydantic, whose parser refuses lone surrogates, control characters and
    text that is not UTF-8: what can still be unstorable there is a non-finite number,
    or a NUL, which JSON can only spell `\\u0000`."""
    return all(_finite(getattr(model, name)) for name in _float_fields(type(model)))


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    if isinstance(value, list | tuple):
        return all(map(_finite, value))
    if isinstance(value, BaseModel):
        return numbers_are_finite(value)
    return True


@functools.cache
def _float_fields(model: type[BaseModel]) -> tuple[str, ...]:
    _INSPECTING.add(model)
    try:
        return tuple(
            name for name, field in model.model_fields.items() if _may_hold_float(field.annotation)
        )
    finally:
        _INSPECTING.discard(model)


# The models whose fields `_float_fields` is going through: met again inside themselves
# (a model that holds itself, a tree), one is walked rather than asked again without end.
_INSPECTING: set[type[BaseModel]] = set()


# Types that hold no float, whatever they are given; any other may (Any, float, dict…).
_FLOATLESS: tuple[type, ...] = (str, int, bool, type(None), datetime, date, Decimal, AwareDatetime)


def _may_hold_float(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation in _INSPECTING or bool(_float_fields(annotation))
    if isinstance(annotation, type) and issubclass(annotation, _FLOATLESS):
        return False
    origin = get_origin(annotation)
    if origin is Literal:
        return False
    if origin in (Union, types.UnionType) or _is_annotated(annotation):
        return any(map(_may_hold_float, _types_of(annotation)))
    return True


def _is_annotated(annotation: Any) -> bool:
    return hasattr(annotation, "__metadata__")


def _types_of(annotation: Any) -> tuple[Any, ...]:
    # Annotated[T, ...]: only T is a type; a union: each of its members.
    return (annotation.__origin__,) if _is_annotated(annotation) else get_args(annotation)
