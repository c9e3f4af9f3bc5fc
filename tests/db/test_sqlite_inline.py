"""SQLite runs on the event loop's thread (db/sqlite_inline.py): another process holding
the write lock must be waited for without freezing the loop, and SQLite itself must
never be the one waiting."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger import Ledger
from chatledger.db import sqlite_inline
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


async def test_a_write_gives_up_once_its_busy_timeout_has_passed_by_the_clock(
    ledger: Ledger,
) -> None:
    """The pauses between tries are shorter than the loop's timers can sleep (about a
    millisecond when nothing else is ready): the timeout counts the time that passed,
    not the pauses asked for."""
    if not ledger.database.is_sqlite:
        pytest.skip("SQLite's single write lock")
    url = ledger.database.write_engine.url
    timeout_s = 0.3
    connection = await sqlite_inline.connector(url, busy_timeout_s=timeout_s)()
    other = sqlite3.connect(_file_of(ledger), isolation_level=None)  # as another process
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await connection.begin("BEGIN IMMEDIATE")
        waited = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()
        await connection.close()
    assert timeout_s <= waited < timeout_s * 1.5


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
    its statements, nor its commit (but a commit of 1,000 rows or more, below), nor
    closing its session (db/engine.py `_session`). Each turn of the loop given up would
    wait for every other ready request's work."""
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


BULK_ROWS = sqlite_inline.THREADED_COMMIT_ROWS + 500


async def _inline_connection(session: AsyncSession) -> sqlite_inline.InlineConnection:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    inline: sqlite_inline.InlineConnection = raw.driver_connection
    return inline


async def _write_rows(session: AsyncSession, count: int) -> None:
    await session.execute(
        text(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)"
            " INSERT INTO probe (i) SELECT i FROM n"
        ),
        {"count": count},
    )


async def _probe_rows(ledger: Ledger) -> int:
    async with ledger.database.reading() as session:
        return int((await session.execute(text("SELECT count(*) FROM probe"))).scalar_one())


async def test_a_large_commit_runs_on_a_worker_thread_a_small_one_inline(ledger: Ledger) -> None:
    """A commit writing thousands of rows (a batch's) is SQLite's work of milliseconds,
    done on a worker thread while the loop serves others; a chat turn's stays inline."""
    if not ledger.database.is_sqlite:
        pytest.skip("the inline SQLite connection")
    async with ledger.database.transaction() as session:
        await session.execute(text("CREATE TABLE probe (i INTEGER)"))
    committed_on: list[int] = []

    def trace(statement: str) -> None:
        if statement == "COMMIT":
            committed_on.append(threading.get_ident())

    for rows in (10, BULK_ROWS):
        async with ledger.database.transaction() as session:
            (await _inline_connection(session)).driver.set_trace_callback(trace)
            await _write_rows(session, rows)
    loop_thread = threading.get_ident()
    assert committed_on[0] == loop_thread
    assert committed_on[1] != loop_thread
    assert await _probe_rows(ledger) == 10 + BULK_ROWS


async def test_a_caller_cancelled_during_a_threaded_commit_waits_for_its_end(
    ledger: Ledger,
) -> None:
    """Nothing may use the connection while the thread commits: a cancelled caller goes
    on (to its session's rollback and close) only once the commit has ended."""
    if not ledger.database.is_sqlite:
        pytest.skip("the inline SQLite connection")
    async with ledger.database.transaction() as session:
        await session.execute(text("CREATE TABLE probe (i INTEGER)"))
    loop, committing = asyncio.get_running_loop(), asyncio.Event()
    commit_took_s = 0.3

    def slow_commit(statement: str) -> None:
        if statement == "COMMIT":
            loop.call_soon_threadsafe(committing.set)
            time.sleep(commit_took_s)  # on the worker thread: the loop runs on meanwhile

    async def write() -> None:
        async with ledger.database.transaction() as session:
            inline = await _inline_connection(session)
            inline.driver.set_trace_callback(slow_commit)
            await _write_rows(session, BULK_ROWS)

    writer = asyncio.create_task(write())
    await committing.wait()
    cancelled_at = time.monotonic()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert time.monotonic() - cancelled_at >= commit_took_s * 0.8
    # The commit went through, and the connection serves the next transaction.
    assert await _probe_rows(ledger) == BULK_ROWS
    async with ledger.database.transaction() as session:
        (await _inline_connection(session)).driver.set_trace_callback(None)
        await _write_rows(session, 1)
    assert await _probe_rows(ledger) == BULK_ROWS + 1
