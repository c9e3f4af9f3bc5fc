"""The database handle: engines, sessions and the transaction boundary.

Callers (a CLI command, an HTTP request, a batch item group) open one transaction with
`Database.transaction()`; services inside it only `flush()`. Nobody else commits.

SQLite has a single writer. Two engines keep that from ever surfacing as "database is
locked": reads use deferred transactions on their own pool, and write transactions are
serialised in-process by a lock and open with `BEGIN IMMEDIATE`, which takes the write
lock up front (waiting up to 30 s for another process) instead of failing when a
read transaction later tries to upgrade itself to a write. SQLite's statements run on
the event loop's own thread, a large transaction's commit on a worker thread
(sqlite_inline.py).

On PostgreSQL a transaction opened while a caller is bound (`walls.acting_as`) starts
behind that caller's row-level security wall (see walls.py), with its BEGIN, which goes
with the transaction's first statement (deferred_begin.py). chatledger's own lookups
(`looking_up()`: the API key of every request) run outside a transaction, each statement
its own: on PostgreSQL one round trip instead of three, on SQLite no BEGIN and COMMIT
around the read. A pooled connection is pinged before use only once it has idled
(PING_AFTER_IDLE_S); one lost under a transaction makes that transaction `Busy`, and the
pool replaces the rest. The pool keeps what a busy moment needs open (`PoolLimits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.util.concurrency import await_, greenlet_spawn, in_greenlet

from chatledger.db import deferred_begin, sqlite_inline, sqlite_procedures, walls
from chatledger.errors import Busy

if TYPE_CHECKING:
    from chatledger.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000

SQLITE_PRAGMAS = (
    # Readers never block the writer and the writer never blocks readers.
    "PRAGMA journal_mode=WAL",
    # In WAL mode NORMAL is crash-safe for the database; the last commits may be lost on a
    # power cut (not a process crash), a fair trade for not fsyncing every commit.
    "PRAGMA synchronous=NORMAL",
    # SQLite ignores foreign keys unless asked, per connection.
    "PRAGMA foreign_keys=ON",
)


# Set while `Database.looking_up()` runs: its statements run alone, with no BEGIN,
# unless a write transaction is opened inside it, or on PostgreSQL a caller is bound
# (the wall lives in a transaction).
_looking_up: ContextVar[bool] = ContextVar("chatledger_looking_up", default=False)


def _sqlite_engine(url: URL, begin: str) -> AsyncEngine:
    # Statements run on the event loop's thread, not aiosqlite's (see sqlite_inline.py),
    # which also owns waiting for another process that holds the write lock: up to
    # SQLITE_BUSY_TIMEOUT_MS, without blocking the loop.
    engine = create_async_engine(
        url, async_creator=sqlite_inline.connector(url, SQLITE_BUSY_TIMEOUT_MS / 1000)
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so that we choose its kind (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if _looking_up.get():  # each statement alone (`Database.looking_up()`)
            return
        # Straight to the inline connection: SQLAlchemy's statement machinery costs more
        # than the BEGIN itself, and every transaction pays it.
        inline: sqlite_inline.InlineConnection = connection.connection.driver_connection
        # Procedures made in a transaction that may have been rolled back: made again
        # before this one begins, outside any transaction (db/sqlite_procedures.py).
        sqlite_procedures.settle(inline)
        await_(inline.begin(begin))

    @event.listens_for(engine.sync_engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        # A caller cancelled mid-statement (a timeout around an in-process request) gets
        # its connection invalidated and closed. Closed with that statement still open,
        # SQLite keeps the connection alive, and its write transaction with it, until
        # the garbage collector finalises the statement: every writer waits meanwhile,
        # then fails "database is locked". So end the transaction before it is closed.
        if not in_greenlet():  # garbage collection: nothing can be awaited here
            return
        with contextlib.suppress(Exception):
            dbapi_connection.rollback()

    return engine


# A pooled PostgreSQL connection idle for longer than this is pinged before it is used.
PING_AFTER_IDLE_S = 1.0


@dataclass(frozen=True)
class PoolLimits:
    """How many PostgreSQL connections a process keeps open (`size`), and how many more
    it may open at a busy moment (`overflow`), each closed again when it is returned.

    With SQLAlchemy's default (5 kept, 10 more) a process at 200 live replies used all 15
    at its busiest moments and, between them, closed and opened again 34-62 connections
    every 600 replies: each a new server process for PostgreSQL to start, its caches cold
    and psycopg's prepared statements gone with the old one (the machine's CPU a reply
    ~11% more, and on a slow hour the first token's wait doubled; docs/benchmarks.md, a
    twenty-first session). The most recently returned connection is handed out first
    (LIFO), so a quiet process keeps using a few warm ones while the rest idle.
    `chatledger serve --workers N` opens up to N x (size + overflow): keep that under
    the server's `max_connections` (100 by default) with room for everything else."""

    size: int = 20
    overflow: int = 10


def _postgres_engine(url: URL, pool: PoolLimits) -> AsyncEngine:
    # The driver never opens a transaction by itself (autocommit); `_begin` below does,
    # where SQLAlchemy asks the driver to begin one: psycopg's own BEGIN would be a round
    # trip of its own, then the wall's settings another, where ours goes with the
    # transaction's first statement. psycopg still sends COMMIT or ROLLBACK for a
    # transaction that is open.
    engine = create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=pool.size,
        max_overflow=pool.overflow,
        pool_use_lifo=True,
    )
    dialect = engine.sync_engine.dialect

    def _begin(connection: Any) -> None:
        if _looking_up.get() and walls.bound() is None:
            return
        # Sent with the transaction's first statement, in its round trip where that is a
        # prepared one (db/deferred_begin.py); the wall is the caller bound now.
        deferred_begin.defer(connection, walls.bound())

    def _ending(end: Callable[[Any], None]) -> Callable[[Any], None]:
        def ended(connection: Any) -> None:
            deferred_begin.drop(connection)  # a transaction that sent nothing
            end(connection)

        return ended

    # The dialect's own methods, on this engine's dialect only.
    dialect.do_begin = _begin  # type: ignore[method-assign,assignment]
    dialect.do_commit = _ending(dialect.do_commit)  # type: ignore[method-assign,assignment]
    dialect.do_rollback = _ending(dialect.do_rollback)  # type: ignore[method-assign,assignment]

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _on_statement(connection: Any, *_: Any) -> None:
        # A statement of SQLAlchemy's opens its transaction first, if still to open. Its
        # errors are handled as the statement's (a lost connection invalidated, then
        # `Busy`). Looked at before any `await_`: `send_if_deferred` through it would
        # switch greenlets on every statement.
        deferred_begin.refuse_if_committed(connection.connection)
        with deferred_begin.taken(connection.connection) as begin:
            if begin is not None:
                await_(deferred_begin.send(connection.connection, begin))

    pool_events = engine.sync_engine.pool

    @event.listens_for(pool_events, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()
        deferred_begin.drop(record)

    @event.listens_for(pool_events, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A connection can die while it sits in the pool (the server restarted, a proxy
        # or firewall dropped it for idling): ask it before handing it out, as SQLAlchemy's
        # pool_pre_ping does, but only after it has idled, not on every checkout of a busy
        # pool, where the ping was one more round trip for every transaction.
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards it and checks out another (up to its own limit of tries).
            raise DisconnectionError("the pooled connection is gone") from exc

    return engine


class Database:
    """Engines and sessions for one database URL; on PostgreSQL, `pool` bounds the
    connections its pool holds (SQLite's connections are files opened in-process)."""

    def __init__(self, url: str, pool: PoolLimits | None = None) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(self.url, "BEGIN IMMEDIATE")
            self.read_engine = _sqlite_engine(self.url, "BEGIN")
        else:
            self.write_engine = _postgres_engine(self.url, pool or PoolLimits())
            self.read_engine = self.write_engine
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._writer = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @classmethod
    def configured(cls, settings: Settings) -> Database:
        """The database `settings` name, its pool as large as they say."""
        return cls(
            settings.database_url, PoolLimits(settings.db_pool_size, settings.db_max_overflow)
        )

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def transaction(self) -> _SessionBlock:
        """One write transaction: committed when the block ends, rolled back on error."""
        return _SessionBlock(self._writer, self._write_lock, looking_up=False)

    def reading(self) -> _SessionBlock:
        """A read-only session; never holds the SQLite write lock."""
        return _SessionBlock(self._reader, None, looking_up=None)

    def looking_up(self) -> _SessionBlock:
        """A session for chatledger's own reads that need no snapshot of their own (the
        API-key lookup before every request): each statement runs alone, without BEGIN
        and COMMIT (on PostgreSQL two round trips of three). With a caller bound it is
        `reading()` on PostgreSQL: the wall needs a transaction to live in. A
        `transaction()` opened inside it is one all the same."""
        return _SessionBlock(self._reader, None, looking_up=True)

    @contextlib.asynccontextmanager
    async def _serialised(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()


class _SessionBlock:
    """`async with` a session in one transaction: begun by its first statement,
    committed and closed when the block ends, or rolled back and closed if it fails; a
    failure a retry would get past raised as `Busy`. A write block holds SQLite's
    in-process write lock throughout, and `looking_up` is set for its duration when
    given.

    One object rather than four nested `asynccontextmanager`s, each a generator and
    two coroutines to enter and leave: an empty block ~50 → ~40 µs of CPU on either
    database, and a live reply opens three (docs/benchmarks.md, a tenth session).

    The commit and the close are one hand-off to SQLAlchemy's synchronous side: each of
    its async methods is a greenlet switch there and back, and a transaction made four
    (begin, its connection, commit, close), ~100 µs of ~300 on SQLite for an empty one
    (docs/benchmarks.md, a ninth session).

    SQLAlchemy's own `async with session` closes it in a task of its own, so that a
    cancellation cannot cut the close short and leave the connection out of the pool.
    That task costs two turns of the event loop per transaction, each as long as the
    work of every other ready request: at 200 live replies on SQLite, a tenth or more
    of the server's CPU per reply and half their time to first token. After a
    transaction has ended, closing waits on nothing: SQLite runs every call at once
    (db/sqlite_inline.py), psycopg hands back an idle connection without a round trip.
    So only a block that failed, whose connection may still be inside a transaction, is
    closed SQLAlchemy's way.
    """

    __slots__ = ("_lock", "_looking_up", "_maker", "_session", "_token")

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        lock: asyncio.Lock | None,
        *,
        looking_up: bool | None,
    ) -> None:
        self._maker = maker
        self._lock = lock
        self._looking_up = looking_up
        self._token: Token[bool] | None = None
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        if self._looking_up is not None:
            self._token = _looking_up.set(self._looking_up)
        if self._lock is not None:
            try:
                await self._lock.acquire()
            except BaseException:
                self._leave()
                raise
        try:
            self._session = self._maker()
        except BaseException:
            self._leave(holding_lock=True)
            raise
        return self._session

    async def __aexit__(
        self, _kind: type[BaseException] | None, error: BaseException | None, _trace: Any
    ) -> None:
        session = self._session
        assert session is not None
        try:
            if error is None:
                try:
                    await greenlet_spawn(_commit_and_close, session.sync_session)
                except BaseException as failed:
                    async with session:  # rolls back and closes, shielded from a cancel
                        pass
                    _raise_busy_if_retryable(failed)
                    raise
                return
            async with session:
                pass
            _raise_busy_if_retryable(error)  # else the block's own error goes on
        finally:
            self._leave(holding_lock=True)

    def _leave(self, *, holding_lock: bool = False) -> None:
        if holding_lock and self._lock is not None:
            self._lock.release()
        if self._token is not None:
            _looking_up.reset(self._token)
            self._token = None


def on_postgresql(session: AsyncSession) -> bool:
    """Whether `session` runs on PostgreSQL (else SQLite), for the statements written
    once per database."""
    return session.get_bind().dialect.name == "postgresql"


def _commit_and_close(session: Session) -> None:
    session.commit()
    session.close()


# The states in which PostgreSQL has rolled the transaction back for one that conflicted
# with it, which can run again as it is: a serialization failure, a deadlock's victim.
ROLLED_BACK_SQLSTATES = ("40001", "40P01")
# PostgreSQL's "try again" states: those, and lock not available.
RETRYABLE_SQLSTATES = (*ROLLED_BACK_SQLSTATES, "55P03")


def _raise_busy_if_retryable(error: BaseException) -> None:
    """What a retry would get past is `Busy` (503 with Retry-After): a lock or a
    serialization conflict, or a connection lost under the transaction (the database
    restarted; the pool then replaces every connection older than the loss)."""
    if not isinstance(error, OperationalError):
        return
    if _is_busy(error):
        raise Busy("the database is busy; retry shortly") from error
    if error.connection_invalidated:
        raise Busy("the connection to the database was lost; retry shortly") from error


def rolled_back_for_another(busy: Busy) -> bool:
    """Whether `busy` (from a transaction block) says that PostgreSQL rolled the
    transaction back to let another go on: done again, it would most likely succeed."""
    cause = busy.__cause__
    return isinstance(cause, OperationalError) and (
        getattr(cause.orig, "sqlstate", None) in ROLLED_BACK_SQLSTATES
    )


def _is_busy(exc: OperationalError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text
