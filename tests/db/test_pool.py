"""PostgreSQL connections that die in the pool (the server restarted, a proxy dropped
them for idling): one that idled is pinged and replaced before use, unseen; one that
was busy a moment ago is not pinged (that ping would cost every transaction a round
trip), so the one transaction that meets it is `Busy` (503, retry) and the next runs on a
new connection."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from chatledger import Busy, Ledger
from chatledger.db import engine
from chatledger.db.engine import Database


def kill_connections(database: Database) -> int:
    """Terminate every server process of the database's connections: a restart, seen
    from the pool. Returns how many there were."""
    target = database.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(target, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None
    return int(killed[0])


async def answer(database: Database) -> int:
    async with database.reading() as session:
        return int(await session.scalar(text("SELECT 41 + 1")) or 0)


@pytest.fixture
def database(ledger: Ledger) -> Database:
    if ledger.database.is_sqlite:
        pytest.skip("PostgreSQL's connection pool")
    return ledger.database


async def test_a_connection_killed_while_idle_is_replaced_unseen(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await answer(database) == 42
    monkeypatch.setattr(engine, "PING_AFTER_IDLE_S", 0.0)  # every pooled one has idled
    assert kill_connections(database) >= 1

    assert await answer(database) == 42
    async with database.transaction() as session:
        assert await session.scalar(text("SELECT 1")) == 1


async def test_a_connection_killed_while_busy_fails_one_transaction_as_busy(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await answer(database) == 42
    monkeypatch.setattr(engine, "PING_AFTER_IDLE_S", 3600.0)  # none has idled: no ping
    assert kill_connections(database) >= 1

    with pytest.raises(Busy, match="connection to the database was lost") as lost:
        await answer(database)
    assert lost.value.retry_after > 0
    assert await answer(database) == 42  # the pool let go of the dead connections
