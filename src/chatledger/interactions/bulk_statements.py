"""The statements that bulk recording (`interactions.bulk`) sends, written per database
where the database has a much faster way:

- which of many ids are stored: on PostgreSQL a join against `unnest(ids)`, because a
  long `IN (...)` list is a filter checked value by value on every row whenever the
  planner has no statistics for the table yet (a fresh database's first sync), and
  psycopg keeps that plan once it prepares the statement; on SQLite `IN` a subquery over
  `json_each(ids)`, one parameter where SQLAlchemy would expand the list;
- inserting many rows: `COPY` on PostgreSQL, several times faster than any INSERT;
  on SQLite, whose inserts are cheap and which has no COPY, multi-row INSERTs of a
  few fixed sizes (`db.sqlite_inserts`), with the rows made ready for the driver
  (`interactions.bulk_rows`, `db.driver_rows`: SQLAlchemy's per-row work cost more
  than SQLite's).

Both run on the session's own connection, inside its transaction and savepoint.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, literal_column, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import Integer, String

from chatledger.db import deferred_begin, driver_rows, interrupted, sqlite_inserts, upsert, walls
from chatledger.db.base import table_of
from chatledger.db.engine import on_postgresql
from chatledger.db.prepared import Prepared
from chatledger.db.sqlite_inline import InlineConnection

# Ids per statement: far below every database's limit on bound parameters.
CHUNK = 500


class IdTaken(Exception):
    """A row could not be inserted: its id was stored meanwhile."""


@dataclass(frozen=True)
class _Stage:
    """A temporary table a caller's rows are copied into, then moved to their table."""

    name: str
    ensure: str  # creates it, unless this connection has it already
    move: str  # its rows into the table, leaving it empty


@functools.cache
def _stage(table: Table, names: tuple[str, ...]) -> _Stage:
    """The staging table of `table`'s rows of these columns: one per connection, kept.

    Created and dropped per batch it cost ~1 ms of PostgreSQL's CPU each time, a round
    trip, and two catalog rows written and deleted (tables and columns bloat). Kept, it
    is made once per pooled connection, by whichever caller role stages first, which
    grants it to the other (a pooled connection serves both). Its rows go at commit (ON
    COMMIT DELETE ROWS) and, within a transaction, as they are moved: a batch may stage
    several groups. A transaction that made it and is rolled back takes it back too;
    the next makes it again."""
    columns = ", ".join(f'"{name}"' for name in names)
    digest = zlib.crc32(",".join(names).encode())
    name = f'"staged_{table.name}_{digest:08x}"'
    ensure = (
        "DO $$ BEGIN"
        f" IF to_regclass('pg_temp.{name}') IS NULL THEN"
        f" CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS"
        f' AS SELECT {columns} FROM "{table.name}" WITH NO DATA;'
        f" GRANT SELECT, INSERT, DELETE ON {name} TO {', '.join(walls.CALLER_ROLES)};"
        " END IF; END $$"
    )
    move = (
        f"WITH staged AS (DELETE FROM {name} RETURNING {columns})"
        f' INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM staged'
    )
    return _Stage(name, ensure, move)


class Lookup:
    """Which of many ids are stored in a column of a project's rows, and what else those
    rows hold (`columns`): one statement per database, built once (a statement built per
    call left some 100 objects in reference cycles each time, which the collector, run
    rarely in a server (server/heap.py), kept for minutes: ~6 MB more memory a worker
    over a 20,000-interaction ingest)."""

    def __init__(self, by: Any, *columns: Any, locking: bool = False) -> None:
        postgresql = postgresql_lookup(by, *columns, locking=locking)
        sqlite = sqlite_lookup(by, *columns)
        if locking:
            # (SQLite's one write lock is the whole database's: nothing to lock in order.)
            sqlite = sqlite.order_by(by)
        self._postgresql = Prepared(postgresql)
        self._sqlite = Prepared(sqlite)
        self._locking = locking

    async def rows(
        self, session: AsyncSession, project_id: str, values: Sequence[str]
    ) -> list[Any]:
        """The stored rows among `values` (the id first, then `columns`): in no order, or
        when locking, in the order of `values` sorted."""
        if self._locking:
            values = sorted(values)
        postgresql = on_postgresql(session)
        statement = self._postgresql if postgresql else self._sqlite
        found: list[Any] = []
        for start in range(0, len(values), CHUNK):
            chunk = list(values[start : start + CHUNK])
            ids = chunk if postgresql else json.dumps(chunk)
            written = await statement.execute(session, {"project_id": project_id, "ids": ids})
            found += written.rows
        return found

    async def present(
        self, session: AsyncSession, project_id: str, values: Sequence[str]
    ) -> frozenset[str]:
        """Which of `values` are stored."""
        return frozenset(row[0] for row in await self.rows(session, project_id, values))


def postgresql_lookup(by: Any, *columns: Any, locking: bool = False) -> Select[Any]:
    """`by` and `columns` of a project's rows whose `by` is in the array `ids`: the rows
    of each id looked up on their own, through the index (a `LATERAL` subquery).

    Left a join against `unnest(ids)`, the planner hashed every row of the project to
    probe the ids whenever it took 1,000 index probes for dearer (its cost model's
    random reads, where the pages are in memory): 13-23 ms a lookup at 40,000 messages
    and growing with the project, against 2.5-4 ms one id at a time. It needs the
    tables' statistics (interactions/statistics.py), else it may probe through an index that
    does not hold the id. `locking`: each row found is locked as it is found, in the
    order of `ids` (which the caller sorts: the one order in which writers of several
    lock them, so that none waits for another that waits for it). The lock is FOR NO KEY
    UPDATE, what the writers change needs (no key of the row changes): FOR UPDATE also
    waits for every transaction that has stored a row naming this one (a foreign key's
    check holds FOR KEY SHARE on it), and one of those that next writes the row waits
    for this transaction in turn: a deadlock (tests/runs/test_run_locks.py)."""
    ids = func.unnest(bindparam("ids", type_=ARRAY(String())))
    wanted = ids.table_valued("value").render_derived()
    # OFFSET 0 keeps the subquery from being merged back into a join of the two.
    fence = literal_column("0", Integer)
    probe = select(by, *columns).where(_project(by), by == wanted.c.value).offset(fence)
    if locking:
        probe = probe.with_for_update(of=by.table, key_share=True)
    found = probe.lateral("found")
    lookup = select(*found.c).select_from(wanted).join(found, true())
    return lookup.order_by(found.c[by.name]) if locking else lookup


def sqlite_lookup(by: Any, *columns: Any) -> Select[Any]:
    """The same on SQLite, `ids` one JSON array: `IN` a subquery over `json_each(ids)`
    (an `IN` list of 500 values costs SQLAlchemy more than the query, rendering and
    processing its parameters one by one on every execution)."""
    listed = func.json_each(bindparam("ids", type_=String())).table_valued("value")
    return select(by, *columns).where(_project(by), by.in_(select(listed.c.value)))


def _project(column: Any) -> Any:
    return column.table.c.project_id == bindparam("project_id")


async def insert_rows(
    session: AsyncSession, columns_by_table: dict[Table, driver_rows.Columns]
) -> None:
    """Insert each table's rows (`bulk_rows.GroupRows`), table by table; IdTaken if a
    key is stored already."""
    if on_postgresql(session):
        for table, columns in columns_by_table.items():
            await _copy(session, table, columns)
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    inline = cast(InlineConnection, raw.driver_connection)
    for table, columns in columns_by_table.items():
        try:
            await sqlite_inserts.insert(inline, table.name, columns.names, columns.values)
        except IntegrityError as exc:
            raise IdTaken(str(exc.orig)) from exc


async def insert_new(
    session: AsyncSession, model: type[DeclarativeBase], rows: list[dict[str, Any]]
) -> int:
    """INSERT … ON CONFLICT DO NOTHING of `rows` (dicts keyed by column name, the same
    columns each): how many it inserted. On SQLite through the driver, its rows made
    ready by `db.driver_rows` (SQLAlchemy's per-row work cost more than SQLite's insert),
    counted by the driver's rowcount, the sum of an executemany's; elsewhere as many
    ids as the INSERT returns."""
    table = table_of(model)
    if on_postgresql(session):
        returning = upsert.insert_or_nothing(session, model, returning=("id",))
        return len(list(await session.scalars(returning, rows)))
    connection = await session.connection()
    names = list(rows[0])
    sql = driver_rows.insert_sql(table, names) + " ON CONFLICT DO NOTHING"
    values = driver_rows.values(table, names, rows, connection.dialect)
    inserted = await connection.exec_driver_sql(sql, values)
    return inserted.rowcount


async def _copy(session: AsyncSession, table: Table, columns: driver_rows.Columns) -> None:
    # Imported here, for PostgreSQL only: a server on SQLite need not load the driver
    # (~9 MB in every process).
    import psycopg

    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = cast(psycopg.AsyncConnection[Any], raw.driver_connection)
    names = ", ".join(f'"{name}"' for name in columns.names)
    # PostgreSQL refuses COPY into a table under row-level security (a caller's
    # transaction, db/walls.py): there the rows go through a temporary table and one
    # INSERT, which the policies check.
    stage = _stage(table, columns.names) if walls.bound() is not None else None
    try:
        # The batch's lookups opened its transaction; were they ever to go, the COPY
        # must not run outside it.
        await deferred_begin.send_if_deferred(raw)
        async with driver.cursor() as cursor:
            if stage is not None:
                await cursor.execute(stage.ensure)
            target = f'"{table.name}"' if stage is None else stage.name
            async with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
                for values in columns.rows():
                    await copy.write_row(values)
            if stage is not None:
                await cursor.execute(stage.move)
    except psycopg.errors.UniqueViolation as exc:
        raise IdTaken(str(exc)) from exc
    except BaseException as exc:  # cut off: the connection may be mid-COPY
        assert connection.sync_connection is not None
        await interrupted.invalidate_if_cut_off(connection.sync_connection, exc)
        raise
