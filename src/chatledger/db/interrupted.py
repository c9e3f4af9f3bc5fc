"""A statement chatledger sends through the driver itself, cut off mid-flight.

SQLAlchemy invalidates a connection whose statement an exit exception interrupted (a
request cancelled, a timeout around it): nobody knows what the driver had sent or read,
so the pool closes the connection rather than hand it out again. The statements sent
past SQLAlchemy (db/prepared.py, and batch ingest's COPY in
interactions/bulk_statements.py) do the same here.

The driver alone does not always settle it. psycopg, cancelled while a COPY … FROM STDIN
starts, asks the server to cancel and then waits for the statement's first answer; when
that answer is "send the rows" (the cancel came too late), it returns with the
connection in the middle of the COPY. The session's ROLLBACK then failed "another command
is already in progress": an error in place of the cancellation, and a connection that
never went back to the pool (the garbage collector found it later).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.concurrency import is_exit_exception


async def invalidate_if_cut_off(connection: Connection, error: BaseException) -> None:
    """Invalidate the connection when `error` cut its statement off, as SQLAlchemy does
    for its own statements; the session's rollback then skips it and the pool drops it."""
    if is_exit_exception(error) and not (connection.closed or connection.invalidated):
        await greenlet_spawn(connection.invalidate, error)
