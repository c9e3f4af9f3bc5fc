"""SQLite on the event loop's own thread.

aiosqlite runs each call of a connection on a thread of its own and hands the result
back through the event loop. SQLAlchemy's adapter makes up to five such calls per
statement (open a cursor, enter it, execute, fetch, close) and one per COMMIT: ~1 ms of
thread hand-offs per statement, where SQLite itself takes 5-50 µs to run one of
chatledger's (an indexed read, a write of a few rows, from the page cache). The save
flow spent most of its time crossing threads, and under load every hop also waits for
the loop.

`connector` gives SQLAlchemy's aiosqlite dialect (as its `async_creator`) connections
with aiosqlite's interface whose calls run at once, on the loop's thread. Only one thing
could make a call wait long: the write lock held by another process (the CLI beside a
server). That wait must not freeze the loop, so the connection never waits inside
SQLite (its busy timeout is 0): a statement SQLite reports busy is retried after an
`asyncio.sleep`, until the busy timeout chatledger was configured with has passed. SQLite
allows that retry for a BEGIN, a COMMIT, or a statement outside a transaction; a busy
statement inside a transaction (rare in WAL mode: the write transaction took its lock
with `BEGIN IMMEDIATE`) fails at once, as "database is locked", which the service
answers with 503 and Retry-After.

One call is worth a thread: the commit of a transaction that wrote thousands of rows (a
batch). SQLite then writes every changed page to the WAL and, each thousand pages, copies
them into the database file (its checkpoint): milliseconds of work in one call that
releases the GIL. On a worker thread that work runs on another core while the loop serves
other requests. A small commit (a chat turn's) stays on the loop: the hand-off would cost
more than it saves and add to the reply's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

T = TypeVar("T")

# How long a write waits before it asks for the lock again: short, because with several
# server processes (`serve --workers`) the lock changes hands every few milliseconds and
# a waiter asleep past its release leaves it idle, while a retry costs SQLite
# microseconds. (The loop's timers wake in whole milliseconds when nothing else is
# ready, so an idle waiter asks about once a millisecond.) With two workers ingesting,
# pauses growing to 5 ms left the lock free ~2.5 ms after each ~13 ms batch: 0.5 ms gave
# ~5% more interactions per second (seven of eight alternating runs); 50 ms had given
# ~15% fewer than 5.
_FIRST_PAUSE_S = 0.0002
_LONGEST_PAUSE_S = 0.0005
# Rows a transaction must have written for its commit to run on a worker thread: a batch
# of 500 interactions writes ~1,600, a chat turn a handful.
THREADED_COMMIT_ROWS = 1_000


def connector(url: URL, busy_timeout_s: float) -> Callable[[], Any]:
    """The `async_creator` for an engine on `url`: each call opens one connection."""
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(url)
    (database,) = args
    # The dialect's own arguments (a file name, a URI flag), but SQLite must never wait
    # for a lock itself (see above); the connection is used by one task at a time. Twice
    # the driver's usual statement cache: batch ingest's multi-row INSERTs are ~16 more
    # statements (db/sqlite_inserts.py), each costing milliseconds to compile again.
    kwargs = {**kwargs, "timeout": 0, "check_same_thread": False, "cached_statements": 256}

    async def connect() -> InlineConnection:
        raw = sqlite3.connect(database, **kwargs)
        return InlineConnection(raw, busy_timeout_s)

    return connect


class InlineConnection:
    """An aiosqlite-shaped connection that runs everything on the calling thread."""

    def __init__(self, raw: sqlite3.Connection, busy_timeout_s: float) -> None:
        self._conn = raw
        self._connection: sqlite3.Connection | None = raw  # None once closed
        self._busy_timeout_s = busy_timeout_s
        # SQLAlchemy's adapter sets `isolation_level` through aiosqlite's job queue.
        self._tx = _RunNow()
        self._changes_at_begin = 0

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @property
    def driver(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, for its hooks (a trace callback)."""
        return self._conn

    def cursor(self) -> InlineCursor:
        return InlineCursor(self, self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        cursor = self.cursor()
        await cursor.execute(sql, parameters)
        return cursor

    async def begin(self, sql: str) -> None:
        """Open a transaction with `sql` (BEGIN or BEGIN IMMEDIATE), waiting for a lock
        another process holds."""
        await self.run(lambda: self._conn.execute(sql))
        self._changes_at_begin = self._conn.total_changes

    async def commit(self) -> None:
        written = self._conn.total_changes - self._changes_at_begin
        on_a_thread = written >= THREADED_COMMIT_ROWS
        await self.run(self._conn.commit, retryable=True, on_a_thread=on_a_thread)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def run(
        self, call: Callable[[], T], *, retryable: bool = False, on_a_thread: bool = False
    ) -> T:
        """`call()`, retried while SQLite says another connection holds the lock, when
        SQLite allows a retry: `retryable`, or no transaction open before the call.
        `on_a_thread`: on a worker thread (see the module docstring)."""
        retryable = retryable or not self._conn.in_transaction
        pause, deadline = _FIRST_PAUSE_S, None
        while True:
            try:
                return await _to_the_end_on_a_thread(call) if on_a_thread else call()
            except sqlite3.OperationalError as exc:
                if not (retryable and _is_busy(exc)):
                    raise
                # By the clock: a pause sleeps longer than asked (see _FIRST_PAUSE_S).
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout_s
                if now >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE_S)


class InlineCursor:
    """An aiosqlite-shaped cursor over a sqlite3 one."""

    def __init__(self, connection: InlineConnection, raw: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = raw

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        await self._connection.run(lambda: self._cursor.execute(sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        rows = list(parameters)  # a retry must send them all again
        await self._connection.run(lambda: self._cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


async def _to_the_end_on_a_thread(call: Callable[[], T]) -> T:
    """`call()` on a worker thread. A caller cancelled meanwhile still waits for it to end
    before the cancellation goes on: nothing may use the connection while the thread
    does (the session's rollback and close come next)."""
    future = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # its outcome is the cancelled caller's no longer
        raise


class _RunNow:
    """aiosqlite's job queue, as SQLAlchemy's adapter feeds it: (future, function)."""

    def put_nowait(self, job: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = job
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(exc)
