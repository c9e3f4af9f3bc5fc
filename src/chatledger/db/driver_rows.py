"""Many rows inserted through the SQLite driver directly (batch ingest), each value as
its column's SQLAlchemy type would bind it.

For an `executemany` of thousands of rows SQLAlchemy spends more time than SQLite: per
row it builds a parameter dictionary (`construct_params`), then runs every column's bind
processor, and a timestamp costs two calls (UTC, then SQLite's text). Here a row is one
tuple, a timestamp is converted once per datetime object (the rows of a group share
them: when it was asked, when it ended, now) and an empty JSON document is a
constant. `tests/db/test_driver_rows.py` checks every conversion against the type's own
processor, so what is stored is what SQLAlchemy would have stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Dialect, Table
from sqlalchemy.types import TypeEngine

from chatledger.db.types import UtcTimeStamp

Bind = Callable[[Any], Any]


def insert_sql(table: Table, columns: Sequence[str]) -> str:
    names = ", ".join(f'"{name}"' for name in columns)
    marks = ", ".join("?" * len(columns))
    return f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'


def values(
    table: Table, columns: Sequence[str], rows: Sequence[dict[str, Any]], dialect: Dialect
) -> list[tuple[Any, ...]]:
    """`rows` (dicts keyed by column name) as the driver's parameter tuples, in
    `columns` order."""
    binds = [(i, bind) for i, name in enumerate(columns) if (bind := _bind(table, name, dialect))]
    out = []
    for row in rows:
        params = [row[name] for name in columns]
        for i, bind in binds:
            params[i] = bind(params[i])
        out.append(tuple(params))
    return out


def _bind(table: Table, name: str, dialect: Dialect) -> Bind | None:
    column_type: TypeEngine[Any] = table.c[name].type
    if isinstance(column_type, UtcTimeStamp):
        return _TimestampText()
    if isinstance(column_type, JSON):
        return _json_text
    return column_type.dialect_impl(dialect).bind_processor(dialect)


class _TimestampText:
    """SQLite's text of an aware datetime in UTC (`YYYY-MM-DD HH:MM:SS.ffffff`),
    remembered per datetime object: the rows of one call share a few (a task's end is
    also its update and its reply's time). By identity, which is cheap, where hashing an
    aware datetime asks its zone for the offset; the rows keep every value alive while
    the call lasts, so no identity can be reused within it."""

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        text = self._seen.get(id(value))
        if text is None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given; chatledger stores UTC-aware times only")
            text = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
            self._seen[id(value)] = text
        return text


def _json_text(value: Any) -> str:
    # SQLAlchemy's JSON type stores None as the JSON null, not SQL NULL.
    if value is None:
        return "null"
    if type(value) is dict and not value:
        return "{}"
    return json.dumps(value)
