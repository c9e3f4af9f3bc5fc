"""The statements that bulk recording (`interactions.bulk`) sends, written per database
where the database has a much faster way:

- which of many ids are stored: on PostgreSQL a join against `unnest(ids)`, because a
  long `IN (...)` list is a filter checked value by value on every row whenever the
  planner has no statistics for the table yet (a fresh database's first sync), and
  psycopg keeps that plan once it prepares the statement; on SQLite `IN` a subquery over
  `json_each(ids)`, one parameter where SQLAlchemy would expand the list;
- inserting many rows: `COPY` on PostgreSQL, several times faster than any INSERT;
  executemany on SQLite, whose inserts are cheap and which has no COPY, with the rows
  made ready for the driver by `db.driver_rows` (SQLAlchemy's per-row work cost more
  than SQLite's).

Both run on the session's own connection, inside its transaction and savepoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from chatledger.db import driver_rows, walls

# Ids per statement: far below every database's limit on bound parameters.
CHUNK = 500


class IdTaken(Exception):
    """A row could not be inserted: its id was stored meanwhile."""


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def present(
    session: AsyncSession, column: Any, scope: Any, values: Sequence[str]
) -> frozenset[str]:
    """Which of `values` are stored in `column` (rows matching `scope`)."""
    found: set[str] = set()
    postgresql = _is_postgresql(session)
    for start in range(0, len(values), CHUNK):
        chunk = list(values[start : start + CHUNK])
        if postgresql:
            ids = func.unnest(bindparam("ids", chunk, ARRAY(String())))
            wanted = ids.table_valued("value").render_derived()
            stmt = select(column).join(wanted, column == wanted.c.value).where(scope)
        else:
            stmt = select(column).where(scope, column.in_(sqlite_ids(chunk)))
        found.update(await session.scalars(stmt))
    return frozenset(found)


def sqlite_ids(ids: Sequence[str]) -> Select[tuple[str]]:
    """`ids` as a subquery over one JSON array parameter (SQLite's `json_each`): an `IN`
    list of 500 values costs SQLAlchemy more than the query, rendering and processing
    its parameters one by one on every execution."""
    values = func.json_each(bindparam("ids", json.dumps(list(ids)))).table_valued("value")
    return select(values.c.value)


async def insert_rows(
    session: AsyncSession, rows_by_table: dict[Table, list[dict[str, Any]]]
) -> None:
    """Insert each table's rows (dicts keyed by column name), table by table; IdTaken if
    a key is stored already."""
    # The tables' rows share timestamps and documents: each is converted once.
    conversions = driver_rows.Conversions()
    if _is_postgresql(session):
        for table, rows in rows_by_table.items():
            if rows:
                await _copy(session, table, rows, list(rows[0]), conversions)
        return
    connection = await session.connection()
    for table, rows in rows_by_table.items():
        if not rows:
            continue
        columns = list(rows[0])
        params = driver_rows.values(table, columns, rows, connection.dialect, conversions)
        try:
            await connection.exec_driver_sql(driver_rows.insert_sql(table, columns), params)
        except IntegrityError as exc:
            raise IdTaken(str(exc.orig)) from exc


async def _copy(
    session: AsyncSession,
    table: Table,
    rows: list[dict[str, Any]],
    columns: list[str],
    conversions: driver_rows.Conversions,
) -> None:
    # Imported here, for PostgreSQL only: a server on SQLite need not load the driver
    # (~9 MB in every process).
    import psycopg

    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = cast(psycopg.AsyncConnection[Any], raw.driver_connection)
    names = ", ".join(f'"{name}"' for name in columns)
    # PostgreSQL refuses COPY into a table under row-level security (a caller's
    # transaction, db/walls.py): there the rows go through a temporary table and one
    # INSERT, which the policies check.
    staged = walls.bound() is not None
    target = f'"staged_{table.name}"' if staged else f'"{table.name}"'
    try:
        async with driver.cursor() as cursor:
            if staged:
                await cursor.execute(
                    f"CREATE TEMP TABLE {target} ON COMMIT DROP"
                    f' AS SELECT {names} FROM "{table.name}" WITH NO DATA'
                )
            async with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
                for values in driver_rows.copy_values(table, columns, rows, conversions):
                    await copy.write_row(values)
            if staged:
                await cursor.execute(
                    f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM {target}'
                )
                await cursor.execute(f"DROP TABLE {target}")
    except psycopg.errors.UniqueViolation as exc:
        raise IdTaken(str(exc)) from exc
