"""Many rows inserted through the driver directly (batch ingest): on SQLite each value as
its column's SQLAlchemy type would bind it. A group's new runs go through `values`; its
tasks and messages are made column by column by `interactions.bulk_rows`, with the
conversions here.

For an `executemany` of thousands of rows SQLAlchemy spends more time than SQLite: per
row it builds a parameter dictionary (`construct_params`), then runs every column's bind
processor, and a timestamp costs two calls (UTC, then SQLite's text). Here a row is one
tuple, and a timestamp or a JSON document is converted once per object (rows inserted
together share them: a group's new runs, their empty documents).
`tests/db/test_driver_rows.py` checks every conversion against the type's own processor,
so what is stored is what SQLAlchemy would have stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
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
    table: Table,
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    dialect: Dialect,
    conversions: Conversions | None = None,
) -> list[tuple[Any, ...]]:
    """`rows` (dicts keyed by column name) as the SQLite driver's parameter tuples, in
    `columns` order. `conversions` shared by calls for rows inserted together convert a
    value they share once."""
    return converted(table, columns, rows, dialect, conversions or Conversions()).rows()


def converted(
    table: Table,
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    dialect: Dialect,
    conversions: Conversions,
) -> Columns:
    """As `values`, kept column by column until `Columns.rows`."""
    return _converted(columns, rows, lambda name: conversions.of(table, name, dialect))


ColumnConversion = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class Columns:
    """Rows converted for the driver, column by column: a column the driver takes as it
    is (an integer, a text) can still be replaced before the rows are made (batch ingest
    builds its rows before it locks the runs whose counts number its messages)."""

    names: tuple[str, ...]
    values: tuple[list[Any], ...]
    as_they_are: frozenset[str]  # the columns converted by nothing

    def replaced(self, name: str, column: list[Any]) -> Columns:
        if name not in self.as_they_are:
            raise ValueError(f"column {name!r} is converted: it cannot be replaced as it is")
        at = self.names.index(name)
        values = (*self.values[:at], column, *self.values[at + 1 :])
        return Columns(self.names, values, self.as_they_are)

    def rows(self) -> list[tuple[Any, ...]]:
        return list(zip(*self.values, strict=True))


def _converted(
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    conversion: Callable[[str], ColumnConversion | None],
) -> Columns:
    # Built column by column: picking a column out of every row, converting it and
    # zipping the columns into tuples are loops in C, where a loop over rows and then
    # columns ran each step in Python (~20 µs an interaction of a batch).
    bound = []
    as_they_are = set()
    for name in columns:
        column = list(map(itemgetter(name), rows))
        convert = conversion(name)
        if convert is None:
            as_they_are.add(name)
        bound.append(column if convert is None else convert(column))
    return Columns(tuple(columns), tuple(bound), frozenset(as_they_are))


def bind_processor(column_type: TypeEngine[Any], dialect: Dialect) -> Bind | None:
    """How the driver takes one value of `column_type`: as the type's own processor
    would give it, a UTC timestamp on SQLite made text in one call where SQLAlchemy's
    processors take two (~8 → ~2 µs)."""
    if dialect.name == "sqlite" and isinstance(column_type, UtcTimeStamp):
        return timestamp_text
    return column_type.dialect_impl(dialect).bind_processor(dialect)


class Conversions:
    """Each column's conversion for rows inserted together, into one table or several:
    a timestamp or JSON document met again, in any column of any of them, is converted
    once. Keep it no longer than the rows (see `_ByIdentity`)."""

    def __init__(self) -> None:
        self.timestamp = _ByIdentity(timestamp_text)  # SQLite's text of a timestamp
        self.document = _ByIdentity(json_text)  # a JSON document's text

    def of(self, table: Table, name: str, dialect: Dialect) -> ColumnConversion | None:
        column_type: TypeEngine[Any] = table.c[name].type
        if isinstance(column_type, UtcTimeStamp):
            return self.timestamp.column
        if isinstance(column_type, JSON):
            return self.document.column
        bind = column_type.dialect_impl(dialect).bind_processor(dialect)
        return None if bind is None else lambda column: list(map(bind, column))


class _ByIdentity:
    """A conversion remembered per object while rows are inserted: they share many (a
    task's end is also its update and its reply's time; a group's tasks share one
    request document). By identity, which is cheap, where hashing an aware
    datetime asks its zone for the offset and a dict cannot be hashed at all. The rows
    keep every value alive while they are inserted, so no identity is reused meanwhile."""

    def __init__(self, convert: Bind) -> None:
        self._convert = convert
        self._seen: dict[int, Any] = {}

    def column(self, values: list[Any]) -> list[Any]:
        """`values` converted. Python runs once per distinct object only: the column's
        identities, their first objects and the lookups are loops in C."""
        ids = list(map(id, values))
        seen, convert = self._seen, self._convert
        for key, value in dict(zip(ids, values, strict=True)).items():
            if key not in seen:
                seen[key] = convert(value)
        return list(map(seen.__getitem__, ids))


def timestamp_text(value: datetime | None) -> str | None:
    """SQLite's text of an aware datetime in UTC (`YYYY-MM-DD HH:MM:SS.ffffff`)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given; chatledger stores UTC-aware times only")
    # The UTC time's ISO text (its year zero-padded, so always 26 characters) less its
    # "+00:00": replace(tzinfo=None) would cost more than the rest together.
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def json_text(value: Any) -> str:
    # SQLAlchemy's JSON type stores None as the JSON null, not SQL NULL.
    if value is None:
        return "null"
    return json.dumps(value)
