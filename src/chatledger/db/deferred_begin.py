"""A PostgreSQL transaction's BEGIN, sent with its first statement.

A transaction on PostgreSQL opened with a round trip of its own (BEGIN, and for a
caller the wall's settings: walls.py), then its statements, then COMMIT. A chat turn's
start and its end are one statement each, so each cost three round trips, and under a
busy event loop each round trip is a wait for the loop's next turns: before the first
token and before `done` (docs/benchmarks.md, a sixteenth session).

Now the engine's BEGIN (the dialect's `do_begin`, db/engine.py) only notes what the
transaction must open with, on the pooled connection, and its first statement sends it:

- a statement of SQLAlchemy's sends it just before itself (`before_cursor_execute`), one
  simple query as before: a round trip, no more than before;
- a prepared statement (db/prepared.py) queues it in one pipeline with itself: BEGIN, the
  wall and the statement in one round trip;
- a statement sent past SQLAlchemy (batch ingest's COPY) sends it first
  (`send_if_deferred`).

A transaction that sends nothing sends no BEGIN, and then its COMMIT or ROLLBACK nothing
either: psycopg sends them only for a transaction that is open. What is noted is dropped
when the transaction ends (`drop`, from the dialect's commit and rollback) and when the
connection goes back to the pool, so that a statement outside any transaction (a lookup,
db/engine.py) never opens one.

The other end: a prepared statement its caller says is the transaction's last
(`Prepared.execute(last=True)`) queues COMMIT after itself, in the same pipeline: a
chat turn's end, BEGIN to COMMIT, is then one round trip. SQLAlchemy still holds the
transaction open until its own commit, which finds nothing open and sends nothing; what
would run in between (a statement, a flush) is refused (`refuse_if_committed`): on a
connection with no transaction open it would commit on its own, outside the wall.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from chatledger.db import walls

# Where a pooled connection keeps what its transaction opens with.
_KEY = "chatledger.deferred_begin"
# Where it notes that its transaction was committed with its last statement.
_COMMITTED = "chatledger.committed_with_last"


@dataclass(frozen=True, slots=True)
class Begin:
    """What a transaction opens with: BEGIN, behind the wall of `scope` if one was bound
    when it began (None: chatledger's own work)."""

    scope: walls.Scope | None


def defer(connection: PoolProxiedConnection, scope: walls.Scope | None) -> None:
    connection.info[_KEY] = Begin(scope)


@contextlib.contextmanager
def taken(connection: PoolProxiedConnection) -> Iterator[Begin | None]:
    """What the connection's transaction still has to open with (None once sent, or
    outside a transaction), now the block's to send: noted again if the block fails
    before it reached the server, so that no later statement of the transaction (a
    caller that goes on after an error) runs outside it, and outside the caller's wall."""
    begin: Begin | None = connection.info.pop(_KEY, None)
    try:
        yield begin
    except BaseException:
        if begin is not None and _never_opened(connection):
            connection.info[_KEY] = begin
        raise


def _never_opened(connection: PoolProxiedConnection) -> bool:
    from psycopg.pq import TransactionStatus

    driver: Any = connection.driver_connection
    if driver is None:  # invalidated: the pool replaces it
        return False
    return bool(driver.info.transaction_status == TransactionStatus.IDLE)


def drop(connection: PoolProxiedConnection | ConnectionPoolEntry) -> None:
    try:
        info = connection.info
    except NotImplementedError:  # the pool's stand-in on a first connect: no transaction
        return
    info.pop(_KEY, None)
    info.pop(_COMMITTED, None)


def committed(connection: PoolProxiedConnection) -> None:
    """Note that the connection's transaction was committed with its last statement."""
    connection.info[_COMMITTED] = True


def committed_with_last(connection: PoolProxiedConnection) -> bool:
    """Whether the connection's transaction was committed with its last statement (until
    the transaction's end in SQLAlchemy)."""
    return _COMMITTED in connection.info


def refuse_if_committed(connection: PoolProxiedConnection) -> None:
    """Raise rather than send a statement into a transaction committed already."""
    if committed_with_last(connection):
        raise InvalidRequestError(
            "the transaction was committed with its last statement: nothing more may run "
            "in it (Prepared.execute(last=True))"
        )


async def send(connection: PoolProxiedConnection, begin: Begin) -> None:
    """Open the connection's transaction now (`begin`, taken from it): one simple query
    (no parameters, so the wall's values are spelled as literals)."""
    # Imported here: a server on SQLite need not load the driver.
    from psycopg import sql

    driver: Any = connection.driver_connection

    def quote(value: str) -> str:
        return sql.Literal(value).as_string(driver)

    await driver.execute(walls.begin_statement(quote, begin.scope), prepare=False)


async def send_if_deferred(connection: PoolProxiedConnection) -> None:
    """`send`, if the connection's transaction is still to open."""
    refuse_if_committed(connection)
    with taken(connection) as begin:
        if begin is not None:
            await send(connection, begin)


async def queue(driver: Any, begin: Begin) -> None:
    """Queue the BEGIN and the wall on `driver`, in pipeline mode: they go to the server
    with the statement queued after them, in its round trip. The wall as a statement
    with parameters, the same for every caller, so that psycopg can prepare it."""
    await driver.execute("BEGIN", prepare=False)
    if begin.scope is not None:
        statement, values = walls.entering(begin.scope)
        await driver.execute(statement, values)
