"""PostgreSQL's connection pool.

Connections that die in the pool (the server restarted, a proxy dropped them for
idling): one that idled is pinged and replaced before use, unseen; one that was busy a
moment ago is not pinged (that ping would cost every transaction a round trip), so the
one transaction that meets it is `Busy` (503, retry) and the next runs on a new
connection.

Its size: what a busy moment opened stays open for the next one (each new connection
is a server process for PostgreSQL to start), the most recently used is reused first,
and the settings bound it."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text

from chatledger import Busy, Ledger, Settings
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


async def busy_moment(database: Database, transactions: int) -> list[int]:
    """`transactions` write transactions open at once, each for a little while; the
    most connections checked out at the same time, seen from inside each."""
    seen: list[int] = []

    async def one() -> None:
        async with database.transaction() as session:
            await session.execute(text("SELECT pg_sleep(0.05)"))
            seen.append(database.write_engine.pool.checkedout())  # type: ignore[attr-defined]
            await session.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(one() for _ in range(transactions)))
    return seen


def counting_connections(database: Database) -> list[Any]:
    """The connections the pool opens from now on, one entry each."""
    opened: list[Any] = []
    event.listen(database.write_engine.sync_engine.pool, "connect", lambda *a: opened.append(a))
    return opened


async def test_what_a_busy_moment_opened_stays_open_for_the_next(database: Database) -> None:
    opened = counting_connections(database)
    assert max(await busy_moment(database, 15)) == 15
    assert 14 <= len(opened) <= 15  # (the ledger's own may have been pooled already)

    # SQLAlchemy's default pool keeps 5 and closes the rest when they are returned: this
    # second moment would open 10 again, each a new server process for PostgreSQL.
    await busy_moment(database, 15)
    assert 14 <= len(opened) <= 15


async def test_the_most_recently_used_connection_is_used_first(database: Database) -> None:
    await busy_moment(database, 10)
    backends = []
    for _ in range(5):
        async with database.transaction() as session:
            backends.append(await session.scalar(text("SELECT pg_backend_pid()")))
    # Handed out in turn, five transactions would have gone to five of the ten: each a
    # connection whose statements psycopg has not prepared yet, pinged once it idled.
    assert len(set(backends)) == 1


async def test_the_settings_bound_the_connections_a_process_opens(settings: Settings) -> None:
    bounded = settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 1})
    async with Ledger(bounded) as ledger:
        if ledger.database.is_sqlite:
            pytest.skip("PostgreSQL's connection pool")
        opened = counting_connections(ledger.database)
        seen = await busy_moment(ledger.database, 6)  # three wait for a connection
        assert max(seen) == 3
        assert len(seen) == 6
        assert len(opened) <= 3
