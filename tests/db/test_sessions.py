"""The sessions of db/engine.py are closed when their block ends: directly after a
transaction that ended, SQLAlchemy's way (in a task of its own) after one that failed.
Either way every connection is back in the pool."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from chatledger import Ledger
from chatledger.db.engine import Database
from chatledger.errors import NotFound
from chatledger.runs import service as runs


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
