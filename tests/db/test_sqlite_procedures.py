"""db/sqlite_procedures.py: steps sent to SQLite as one statement run in order, each
seeing the writes before it, and the call answers what they wrote; a stop ends it with
nothing more written and no row; a procedure made in a transaction that was rolled back
is there for the next one; one made on a connection does not keep a migration there
from renaming a table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chatledger import Ledger
from chatledger.db import sqlite_procedures
from chatledger.db.sqlite_procedures import Procedure, stop_unless

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

_scratch = MetaData()
_tally = Table("tally", _scratch, Column("id", Text, primary_key=True), Column("n", Integer))
_seen = Table("seen", _scratch, Column("note", Text), Column("n", Integer))
_this = _tally.c.id == bindparam("id")
_COUNT = Procedure(
    "counted",
    [
        stop_unless(exists().where(_this)),
        update(_tally).where(_this).values(n=_tally.c.n + 1),  # a literal of its own: the 1
        insert(_seen).from_select(
            ["note", "n"], select(bindparam("note"), _tally.c.n).where(_this)
        ),
    ],
).call(
    select(_tally.c.n).where(_this).scalar_subquery().label("n"),
    select(func.count()).select_from(_seen).scalar_subquery().label("seen"),
)


@pytest.fixture
async def connection(ledger: Ledger) -> AsyncIterator[AsyncConnection]:
    """One connection of the ledger's database, with the scratch tables: procedures are
    made on a connection, so every step here uses the same one."""
    async with ledger.database.write_engine.connect() as connection:
        await connection.run_sync(_scratch.create_all)
        await connection.execute(insert(_tally).values(id="a", n=0))
        await connection.commit()
        yield connection


async def _count(connection: AsyncConnection, **params: Any) -> list[Any]:
    async with AsyncSession(bind=connection) as session:
        rows = list((await _COUNT.execute(session, params)).rows)
        await session.commit()
    return rows


async def _seen_rows(connection: AsyncConnection) -> list[Any]:
    rows = list(await connection.execute(select(_seen.c.note, _seen.c.n).order_by(_seen.c.n)))
    await connection.rollback()
    return rows


async def test_the_steps_run_in_order_and_the_call_answers_what_they_wrote(
    connection: AsyncConnection,
) -> None:
    first = await _count(connection, id="a", note="first")
    second = await _count(connection, id="a", note="second")

    assert [(row.n, row.seen) for row in [*first, *second]] == [(1, 1), (2, 2)]
    # Each insert read the count the update before it had just made.
    assert [tuple(row) for row in await _seen_rows(connection)] == [("first", 1), ("second", 2)]
    # The view and its trigger are the connection's own: nothing in the database file.
    kept = "SELECT type FROM {} WHERE name LIKE 'counted%' ORDER BY type"
    assert list(await connection.exec_driver_sql(kept.format("sqlite_temp_master"))) == [
        ("trigger",),
        ("view",),
    ]
    assert list(await connection.exec_driver_sql(kept.format("sqlite_master"))) == []


async def test_a_stop_writes_nothing_more_and_answers_no_row(
    connection: AsyncConnection,
) -> None:
    assert await _count(connection, id="missing", note="never") == []
    assert await _seen_rows(connection) == []


async def test_made_in_a_transaction_rolled_back_it_is_there_for_the_next(
    connection: AsyncConnection,
) -> None:
    # The first call on this connection makes the procedure, in its transaction.
    async with AsyncSession(bind=connection) as session:
        assert (await _COUNT.execute(session, {"id": "a", "note": "undone"})).rows
        await session.rollback()

    assert [row.n for row in await _count(connection, id="a", note="kept")] == [1]
    assert [tuple(row) for row in await _seen_rows(connection)] == [("kept", 1)]


def _rebuild_tally(connection: Connection) -> None:
    """What alembic's batch migrations do to change a table on SQLite."""
    connection.exec_driver_sql("CREATE TABLE tally_new (id TEXT PRIMARY KEY, n INTEGER)")
    connection.exec_driver_sql("INSERT INTO tally_new SELECT id, n FROM tally")
    connection.exec_driver_sql("DROP TABLE tally")
    connection.exec_driver_sql("ALTER TABLE tally_new RENAME TO tally")


async def test_forgotten_before_a_migration_and_made_again_after(
    connection: AsyncConnection,
) -> None:
    await _count(connection, id="a", note="before")
    # The trigger names the table while it is dropped: SQLite refuses the rename.
    with pytest.raises(OperationalError, match="error in trigger"):
        await connection.run_sync(_rebuild_tally)
    await connection.rollback()

    await connection.run_sync(sqlite_procedures.forget)
    await connection.run_sync(_rebuild_tally)
    await connection.commit()

    assert [row.n for row in await _count(connection, id="a", note="after")] == [2]
