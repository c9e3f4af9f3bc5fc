"""Rows handed to the SQLite driver directly (db/driver_rows.py) hold exactly what
SQLAlchemy's column types would have bound: the same text for every timestamp and JSON
document, the same value for everything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Integer, Table
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite

from chatledger.db import driver_rows
from chatledger.db.base import table_of
from chatledger.db.types import UtcTimeStamp
from chatledger.messages.models import Message
from chatledger.tasks.models import Task

DIALECT = SQLiteDialect_aiosqlite()
TIMES = [
    datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # no microseconds: still six digits
    datetime(2026, 11, 22, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
    datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(999, 1, 1, tzinfo=UTC),  # a four-digit year, zero-padded
    None,
]
DOCUMENTS = [None, {}, {"model": "gpt-4o"}, {"metadata": {}}, [], [1, "two", None], "text", 3]
SCALARS = ["text", "", "\u00e9\U0001f680", 0, 2**40, None]


def samples(column_type: Any) -> list[Any]:
    if isinstance(column_type, UtcTimeStamp):
        return TIMES
    if isinstance(column_type, JSON):
        return DOCUMENTS
    if isinstance(column_type, Boolean):
        return [True, False, None]
    if isinstance(column_type, Integer):
        return [0, 7, 2**40, None]
    return SCALARS


def sqlalchemy_binds(table: Table, name: str, value: Any) -> Any:
    processor = table.c[name].type._cached_bind_processor(DIALECT)
    return value if processor is None else processor(value)


@pytest.mark.parametrize("model", [Task, Message], ids=["tasks", "messages"])
def test_every_column_binds_as_sqlalchemy_would(model: Any) -> None:
    table = table_of(model)
    for column in table.c:
        values = samples(column.type)
        rows = [{column.name: value} for value in values]
        ours = driver_rows.values(table, [column.name], rows, DIALECT)
        theirs = [(sqlalchemy_binds(table, column.name, value),) for value in values]
        assert ours == theirs, column.name


@pytest.mark.parametrize("model", [Task, Message], ids=["tasks", "messages"])
def test_one_values_binding_is_sqlalchemys_on_either_database(model: Any) -> None:
    """`bind_processor`, as prepared statements bind their parameters (db/prepared.py)."""
    table = table_of(model)
    for dialect in (DIALECT, PGDialectAsync_psycopg()):
        for column in table.c:
            ours = driver_rows.bind_processor(column.type, dialect)
            theirs = column.type._cached_bind_processor(dialect)
            for value in samples(column.type):
                mine = value if ours is None else ours(value)
                expected = value if theirs is None else theirs(value)
                assert type(mine) is type(expected), (dialect.name, column.name)
                # psycopg's JSON wrapper compares by identity: compare what it wraps.
                unwrapped = getattr(mine, "obj", mine), getattr(expected, "obj", expected)
                assert unwrapped[0] == unwrapped[1], (dialect.name, column.name, value)


def test_rows_keep_column_order_and_share_a_timestamp_converted_once() -> None:
    table = table_of(Message)
    at = TIMES[1]
    columns = ["id", "created_at", "metadata", "updated_at"]
    rows = [
        {"id": "m1", "created_at": at, "metadata": {}, "updated_at": at},
        {"id": "m2", "created_at": at, "metadata": {"k": 1}, "updated_at": None},
    ]
    text = sqlalchemy_binds(table, "created_at", at)
    assert driver_rows.values(table, columns, rows, DIALECT) == [
        ("m1", text, "{}", text),
        ("m2", text, '{"k": 1}', None),
    ]


def test_tables_inserted_together_convert_a_value_they_share_once() -> None:
    conversions = driver_rows.Conversions()
    at, request = TIMES[1], {"metadata": {}}
    task = driver_rows.values(
        table_of(Task),
        ["created_at", "request"],
        [{"created_at": at, "request": request}],
        DIALECT,
        conversions,
    )
    message = driver_rows.values(
        table_of(Message),
        ["updated_at", "metadata"],
        [{"updated_at": at, "metadata": request}],
        DIALECT,
        conversions,
    )
    assert task == [(sqlalchemy_binds(table_of(Task), "created_at", at), '{"metadata": {}}')]
    # The same text object: converted once, for both tables.
    assert task[0][0] is message[0][0]
    assert task[0][1] is message[0][1]


def test_a_naive_timestamp_is_refused_as_sqlalchemy_refuses_it() -> None:
    table = table_of(Message)
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="naive"):
        sqlalchemy_binds(table, "created_at", naive)
    with pytest.raises(ValueError, match="naive"):
        driver_rows.values(table, ["created_at"], [{"created_at": naive}], DIALECT)


def test_the_insert_names_every_column_once() -> None:
    sql = driver_rows.insert_sql(table_of(Message), ["id", "metadata"])
    assert sql == 'INSERT INTO "messages" ("id", "metadata") VALUES (?, ?)'


def test_a_column_taken_as_it_is_can_be_replaced_before_the_rows_are_made() -> None:
    # Batch ingest numbers its messages once their runs are locked, after the rest of
    # each row was made ready for the driver (interactions/bulk.py).
    table = table_of(Message)
    at = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    rows = [{"id": f"m{n}", "seq": 0, "created_at": at} for n in range(3)]
    columns = driver_rows.converted(
        table, ["id", "seq", "created_at"], rows, DIALECT, driver_rows.Conversions()
    )
    numbered = columns.replaced("seq", [4, 5, 6])
    made = [row[:2] for row in numbered.rows()]
    assert made == [("m0", 4), ("m1", 5), ("m2", 6)]
    assert [row[1] for row in columns.rows()] == [0, 0, 0]  # the rows built stay as they were
    with pytest.raises(ValueError, match="created_at"):  # SQLite's text of a timestamp
        columns.replaced("created_at", [at] * 3)
