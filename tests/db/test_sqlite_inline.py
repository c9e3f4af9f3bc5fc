"""SQLite runs on the event loop's thread (db/sqlite_inline.py): another process holding
the write lock must be waited for without freezing the loop, and SQLite itself must
never be the one waiting."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from chatledger import Ledger
from chatledger.runs import service as runs

HELD_S = 0.4


def _file_of(ledger: Ledger) -> Path:
    database = ledger.database.url.database
    assert database is not None
    return Path(database)


async def test_a_write_waits_for_another_process_without_freezing_the_loop(
    ledger: Ledger,
) -> None:
    if not ledger.database.is_sqlite:
        pytest.skip("SQLite's single write lock")
    other = sqlite3.connect(_file_of(ledger), isolation_level=None)  # as another process
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def release_later() -> None:
        await asyncio.sleep(HELD_S)
        other.execute("COMMIT")

    ticker = asyncio.create_task(tick())
    releaser = asyncio.create_task(release_later())
    started = time.monotonic()
    try:
        async with ledger.database.transaction() as session:
            await runs.ensure(session, ledger.caller, "waited")
    finally:
        ticker.cancel()
        await releaser
        other.close()
    waited = time.monotonic() - started

    assert waited >= HELD_S * 0.9  # it did wait for the lock
    assert waited < HELD_S + 5  # and took it soon after it was released
    # The loop ran other work all along: a ticker every 10 ms saw most of its ticks.
    assert ticks >= HELD_S / 0.01 / 2
    async with ledger.database.reading() as session:
        assert (await runs.get(session, ledger.caller, "waited")).id == "waited"


async def test_sqlite_itself_never_waits_for_a_lock(ledger: Ledger) -> None:
    if not ledger.database.is_sqlite:
        pytest.skip("SQLite's busy handler")
    for engine in (ledger.database.write_engine, ledger.database.read_engine):
        async with engine.connect() as connection:
            busy_timeout = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        # A wait inside SQLite would block the event loop's thread: the connection
        # waits between attempts instead (the test above).
        assert busy_timeout == 0


async def test_reads_and_writes_round_trip_through_the_inline_connection(
    ledger: Ledger,
) -> None:
    if not ledger.database.is_sqlite:
        pytest.skip("the inline SQLite connection")
    async with ledger.database.transaction() as session:
        for n in range(3):
            await runs.ensure(session, ledger.caller, f"r{n}", name=f"Run {n}")
    async with ledger.database.reading() as session:
        names = (await session.execute(text("SELECT name FROM runs ORDER BY id"))).scalars()
        assert list(names) == ["Run 0", "Run 1", "Run 2"]
        streamed = await session.stream(text("SELECT id FROM runs ORDER BY id"))
        assert [row.id async for row in streamed] == ["r0", "r1", "r2"]


async def test_a_transaction_never_hands_the_loop_to_other_work(ledger: Ledger) -> None:
    """Nothing in a SQLite transaction waits, so nothing in it yields the event loop: not
    its statements, nor its commit, nor closing its session (db/engine.py `_session`).
    Each turn of the loop given up would wait for every other ready request's work."""
    if not ledger.database.is_sqlite:
        pytest.skip("PostgreSQL's statements wait for the server")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        before = ticks
        async with ledger.database.transaction() as session:
            await runs.ensure(session, ledger.caller, "unyielding")
        async with ledger.database.reading() as session:
            found = await runs.get(session, ledger.caller, "unyielding")
        assert ticks == before
    finally:
        ticker.cancel()
    assert found.id == "unyielding"
