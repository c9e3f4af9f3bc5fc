"""The sessions of db/engine.py are closed when their block ends: directly after a
transaction that ended, SQLAlchemy's way (in a task of its own) after one that failed.
Either way every connection is back in the pool. Lookups run outside a transaction
(on PostgreSQL unless a caller is bound)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger import Ledger
from chatledger.db import engine, walls
from chatledger.db.engine import Database
from chatledger.errors import NotFound
from chatledger.runs import service as runs
from chatledger.tenants.caller import Caller


class Refused(Exception):
    """What a route raises halfway through its transaction."""


def checked_out(database: Database) -> int:
    engines = {database.write_engine, database.read_engine}
    return sum(engine.sync_engine.pool.checkedout() for engine in engines)  # type: ignore[attr-defined]


async def test_an_ended_transaction_gives_its_connection_back(ledger: Ledger) -> None:
    database = ledger.database
    async with database.transaction() as session:
        await runs.ensure(session, ledger.caller, "kept")
    async with database.reading() as session:
        assert (await runs.get(session, ledger.caller, "kept")).id == "kept"
    assert checked_out(database) == 0


async def test_a_failed_transaction_gives_its_connection_back(ledger: Ledger) -> None:
    """A block that raises is rolled back and its session closed SQLAlchemy's way (in a
    task a cancellation cannot cut short): nothing of it is stored, and its connection
    is back in the pool."""
    database = ledger.database
    with pytest.raises(Refused):
        async with database.transaction() as session:
            await runs.ensure(session, ledger.caller, "undone")
            raise Refused
    with pytest.raises(Refused):
        async with database.reading() as session:
            await session.execute(text("SELECT 1"))
            raise Refused
    assert checked_out(database) == 0
    async with database.reading() as session:
        with pytest.raises(NotFound):
            await runs.get(session, ledger.caller, "undone")


async def test_a_block_cancelled_waiting_for_the_write_lock_leaves_nothing_held(
    ledger: Ledger,
) -> None:
    """SQLite's write transactions take turns on an in-process lock: one cancelled while
    it waits for its turn neither takes the lock nor leaves its lookup flag set."""
    database = ledger.database
    if not database.is_sqlite:
        pytest.skip("PostgreSQL's writers take no in-process lock")
    inside, done = asyncio.Event(), asyncio.Event()
    looking_up_after: list[bool] = []

    async def hold() -> None:
        async with database.transaction():
            inside.set()
            await done.wait()

    async def wait_in_a_lookup() -> None:
        async with database.looking_up():
            try:
                async with database.transaction():
                    raise AssertionError("entered while another transaction held the lock")
            except asyncio.CancelledError:
                looking_up_after.append(engine._looking_up.get())
                raise

    holder = asyncio.create_task(hold())
    await inside.wait()
    waiter = asyncio.create_task(wait_in_a_lookup())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    done.set()
    await holder
    async with asyncio.timeout(5), database.transaction() as session:
        await runs.ensure(session, ledger.caller, "after")
    assert looking_up_after == [True]  # the lookup's flag, as the transaction found it
    assert checked_out(database) == 0


async def _driver_connection(session: AsyncSession) -> Any:
    connection = await session.connection()
    return (await connection.get_raw_connection()).driver_connection


def _in_transaction(driver: Any) -> bool:
    if isinstance(driver, psycopg.AsyncConnection):
        return bool(driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS)
    return bool(driver.driver.in_transaction)  # the inline SQLite connection


async def test_a_lookup_runs_outside_a_transaction(ledger: Ledger) -> None:
    """chatledger's own lookups (the API key of every request) need no BEGIN and COMMIT:
    each statement runs alone (on PostgreSQL one round trip). The connection goes back
    to the pool as it came, so the next transaction is one again."""
    database = ledger.database
    async with database.looking_up() as session:
        assert await session.scalar(text("SELECT 41 + 1")) == 42
        assert not _in_transaction(await _driver_connection(session))
    for _ in range(3):  # whichever pooled connection the lookup had
        async with database.transaction() as session:
            await session.execute(text("SELECT 1"))
            assert _in_transaction(await _driver_connection(session))
        async with database.reading() as session:
            await session.execute(text("SELECT 1"))
            assert _in_transaction(await _driver_connection(session))
    with pytest.raises(Refused):
        async with database.looking_up() as session:
            await session.execute(text("SELECT 1"))
            raise Refused
    assert checked_out(database) == 0


async def test_a_lookup_with_a_caller_bound_is_behind_their_wall(ledger: Ledger) -> None:
    """Bound before the lookup or inside it: the wall needs a transaction, so there is
    one. A write transaction opened inside a lookup is a transaction too, on either
    database."""
    database = ledger.database
    caller = Caller("a-project", "a-user")
    wall = text("SELECT current_setting('chatledger.project_id', true)")
    with walls.acting_as(caller):
        async with database.looking_up() as session:
            if not database.is_sqlite:
                assert await session.scalar(wall) == "a-project"
    async with database.looking_up():
        if not database.is_sqlite:
            with walls.acting_as(caller):
                async with database.reading() as session:
                    assert await session.scalar(wall) == "a-project"
        async with database.transaction() as session:
            await session.execute(text("SELECT 1"))
            assert _in_transaction(await _driver_connection(session))


async def test_a_callers_values_reach_the_wall_verbatim(ledger: Ledger) -> None:
    """The wall's settings travel inside the BEGIN as literals (a simple query takes no
    parameters): a quote in a value is a character of it, not the end of the string."""
    caller = Caller("it's-a-project", "o'brien; DROP TABLE runs")
    with walls.acting_as(caller):
        async with ledger.database.transaction() as session:
            if ledger.database.is_sqlite:
                return
            settings = await session.execute(
                text(
                    "SELECT current_setting('chatledger.project_id'),"
                    " current_setting('chatledger.user_id'), current_user"
                )
            )
            assert settings.one() == (caller.project_id, caller.user_id, walls.CALLER_ROLE)
    async with ledger.database.reading() as session:
        assert await session.scalar(text("SELECT count(*) FROM runs")) == 0
