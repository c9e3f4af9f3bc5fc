"""db/deferred_begin.py: on PostgreSQL a transaction's BEGIN (and a caller's wall) goes
to the server with its first statement, in the round trip of a prepared one. Round
trips are counted from the driver's own protocol trace (libpq's): each is one
ReadyForQuery the server sends when it has answered everything sent so far."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import bindparam, event, func, select, text
from sqlalchemy.exc import InvalidRequestError

from chatledger import Ledger
from chatledger.db import walls
from chatledger.db.prepared import Prepared
from chatledger.engine.chat import ChatEngine
from chatledger.tenants.caller import Caller

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

_WALL = Prepared(
    select(
        func.current_setting("chatledger.project_id").label("project_id"),
        func.current_setting("chatledger.user_id").label("user_id"),
        func.current_user().label("role"),
        bindparam("echo").label("echo"),
    )
)
_SLEEP = Prepared(select(func.pg_sleep(bindparam("s")).label("slept")))


def _driver(session_connection: Any) -> psycopg.AsyncConnection[Any]:
    driver: psycopg.AsyncConnection[Any] = session_connection.driver_connection
    return driver


@contextlib.contextmanager
def _round_trips(ledger: Ledger) -> Iterator[list[int]]:
    """The round trips of the connections the pool hands out in the block, each traced
    from its checkout, before its transaction begins (libpq's trace of the protocol, in
    which each ReadyForQuery ends one): the count in the list once the block is over."""
    pool = ledger.database.write_engine.sync_engine.pool
    traced: list[Any] = []
    counted: list[int] = []
    with tempfile.TemporaryFile() as trace:

        def checked_out(dbapi_connection: Any, *_: Any) -> None:
            pgconn = dbapi_connection.driver_connection.pgconn
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            traced.append(pgconn)

        event.listen(pool, "checkout", checked_out)
        try:
            yield counted
        finally:
            event.remove(pool, "checkout", checked_out)
            for pgconn in traced:
                pgconn.untrace()
        trace.seek(0)
        lines = [line.split("\t") for line in trace.read().decode().splitlines()]
    counted.append(sum(1 for line in lines if line[2:3] == ["ReadyForQuery"]))


def _in_transaction(session_connection: Any) -> bool:
    status = _driver(session_connection).info.transaction_status
    return bool(status != psycopg.pq.TransactionStatus.IDLE)


async def test_a_prepared_first_statement_opens_its_transaction_in_its_round_trip(
    ledger: Ledger,
) -> None:
    """BEGIN, the wall (its values as parameters: quotes are characters) and the
    statement in one round trip, then COMMIT: two where there were three."""
    caller = Caller("it's-a-project", "o'brien; DROP TABLE runs")
    with _round_trips(ledger) as round_trips, walls.acting_as(caller):
        async with ledger.database.transaction() as session:
            row = (await _WALL.execute(session, {"echo": "x"})).one_or_none()
            assert _in_transaction(await (await session.connection()).get_raw_connection())
    assert round_trips == [2]  # the pipeline, then COMMIT
    assert (row.project_id, row.user_id, row.role, row.echo) == (
        caller.project_id,
        caller.user_id,
        walls.CALLER_ROLE,
        "x",
    )


async def test_a_statement_of_sqlalchemys_opens_it_on_its_own(ledger: Ledger) -> None:
    """First a simple query (BEGIN and the wall), then the statement: as before."""
    with _round_trips(ledger) as round_trips, walls.acting_as(Caller("a-project", "a-user")):
        async with ledger.database.transaction() as session:
            wall = text("SELECT current_setting('chatledger.user_id')")
            assert await session.scalar(wall) == "a-user"
            assert (await _WALL.execute(session, {"echo": 1})).rows  # the same transaction
    assert round_trips == [4]  # BEGIN, the two statements, COMMIT


async def test_a_transaction_that_sends_nothing_opens_none(ledger: Ledger) -> None:
    """No BEGIN and no COMMIT; and nothing noted lingers on the pooled connection: a
    lookup after it still runs outside any transaction, as chatledger."""
    database = ledger.database
    for _ in range(3):  # whichever pooled connection
        with _round_trips(ledger) as round_trips, walls.acting_as(Caller("p", "u")):
            async with database.transaction() as session:
                await session.connection()
        assert round_trips == [0]
        async with database.looking_up() as session:
            assert await session.scalar(text("SELECT current_setting('role')")) == "none"
            assert not _in_transaction(await (await session.connection()).get_raw_connection())


async def test_a_refused_pipeline_rolls_back_and_the_connection_serves_again(
    ledger: Ledger,
) -> None:
    """The statement's error is raised as SQLAlchemy raises it (BEGIN ran, the statement
    failed): the block rolls back, and the pool's connection opens the next one."""
    refused = Prepared(select((bindparam("n") / 0).label("never")))
    for _ in range(3):
        with pytest.raises(Exception, match="division by zero"):
            async with ledger.database.transaction() as session:
                await refused.execute(session, {"n": 1})
        async with ledger.database.transaction() as session:
            assert (await _WALL_FREE.execute(session, {})).one_or_none().one == 1


_WALL_FREE = Prepared(select(func.abs(-1).label("one")))


async def test_a_pipeline_cut_off_invalidates_its_connection(ledger: Ledger) -> None:
    """Cancelled in the pipeline that opens its transaction: the connection is out of
    the pool, the next transaction on a fresh one."""
    backends: list[int] = []
    sleeping = asyncio.Event()

    async def cut_off() -> None:
        async with ledger.database.transaction() as session:
            raw = await (await session.connection()).get_raw_connection()
            backends.append(_driver(raw).info.backend_pid)
            sleeping.set()
            await _SLEEP.execute(session, {"s": 5})

    request = asyncio.create_task(cut_off())
    await sleeping.wait()
    await asyncio.sleep(0.2)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert ledger.database.write_engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with ledger.database.transaction() as session:
        assert await session.scalar(text("SELECT pg_backend_pid()")) not in backends


async def test_a_begin_that_never_left_is_sent_by_the_next_statement(ledger: Ledger) -> None:
    """A prepared statement refused before it reached the server (here by a statement
    listener) leaves its transaction still to open: a caller that goes on after the error
    runs its next statement inside it, behind its wall, not outside both."""

    class Refused(Exception):
        pass

    def refuse(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "pg_sleep" in statement:
            raise Refused

    engine = ledger.database.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", refuse)
    try:
        with walls.acting_as(Caller("a-project", "a-user")):
            async with ledger.database.transaction() as session:
                with pytest.raises(Refused):
                    await _SLEEP.execute(session, {"s": 0})
                wall = text("SELECT current_setting('chatledger.user_id', true)")
                assert await session.scalar(wall) == "a-user"
                assert _in_transaction(await (await session.connection()).get_raw_connection())
    finally:
        event.remove(engine, "before_cursor_execute", refuse)


_TXID = Prepared(select(func.txid_current().label("txid")))


async def _status(ledger: Ledger, txid: int) -> str:
    async with ledger.database.transaction() as session:
        status: str = await session.scalar(text("SELECT txid_status(:t)"), {"t": txid})
    return status


async def test_a_last_statement_commits_in_its_round_trip(ledger: Ledger) -> None:
    """BEGIN, the wall, the statement and COMMIT in one round trip; SQLAlchemy's own
    commit at the block's end then sends nothing."""
    with _round_trips(ledger) as round_trips, walls.acting_as(Caller("a-project", "a-user")):
        async with ledger.database.transaction() as session:
            written = await _TXID.execute(session, {}, last=True)
            assert written.committed
            assert not _in_transaction(await (await session.connection()).get_raw_connection())
    assert round_trips == [1]
    assert await _status(ledger, written.rows[0].txid) == "committed"


async def test_a_last_statement_after_others_commits_with_itself(ledger: Ledger) -> None:
    """An open transaction's last statement: itself and COMMIT in one round trip."""
    with _round_trips(ledger) as round_trips, walls.acting_as(Caller("a-project", "a-user")):
        async with ledger.database.transaction() as session:
            txid = await session.scalar(text("SELECT txid_current()"))
            assert (await _WALL.execute(session, {"echo": 1}, last=True)).rows[0].user_id == (
                "a-user"
            )
    assert round_trips == [3]  # BEGIN, the first statement, the last with COMMIT
    assert await _status(ledger, txid) == "committed"


async def test_nothing_runs_after_the_last_statement(ledger: Ledger) -> None:
    """A statement after the last (SQLAlchemy's or prepared) is refused, before it is
    sent: on a connection with no transaction open it would commit on its own, outside
    the caller's wall. What the last statement committed stays; the pooled connection
    opens its next transaction as ever."""
    for late in (
        lambda session: session.execute(text("SELECT 1")),
        lambda session: _WALL.execute(session, {"echo": 1}),
    ):
        with walls.acting_as(Caller("a-project", "a-user")):
            with pytest.raises(InvalidRequestError, match="committed with its last statement"):
                async with ledger.database.transaction() as session:
                    written = await _TXID.execute(session, {}, last=True)
                    await late(session)
            assert await _status(ledger, written.rows[0].txid) == "committed"
            async with ledger.database.transaction() as session:
                await session.execute(text("SELECT 1"))
                assert _in_transaction(await (await session.connection()).get_raw_connection())


async def test_a_refused_last_statement_commits_nothing(ledger: Ledger) -> None:
    """The server skips the COMMIT queued after a statement that fails: the block rolls
    the transaction back, with what ran before it, and the connection serves again."""
    refused = Prepared(select((bindparam("n") / 0).label("never")))
    for _ in range(3):
        with pytest.raises(Exception, match="division by zero"):
            async with ledger.database.transaction() as session:
                txid = await session.scalar(text("SELECT txid_current()"))
                await refused.execute(session, {"n": 1}, last=True)
        assert await _status(ledger, txid) == "aborted"


async def test_a_turns_end_is_one_round_trip(ledger: Ledger) -> None:
    """A chat turn's end with its reply, on a new message: BEGIN to COMMIT in one round
    trip (two before: the statement's pipeline, then COMMIT)."""
    first = await (await ledger.chat("warm up", model="echo")).result()  # statements prepared
    ends: list[int] = []
    finish = ChatEngine._record_success

    async def counted(self: ChatEngine, *args: Any) -> Any:
        with _round_trips(ledger) as round_trips:
            result = await finish(self, *args)
        ends.extend(round_trips)
        return result

    ChatEngine._record_success = counted  # type: ignore[method-assign]
    try:
        turn = await ledger.chat("and again", model="echo", run_id=first.run_id)
        result = await turn.result()
    finally:
        ChatEngine._record_success = finish  # type: ignore[method-assign]
    assert result.status == "completed"
    assert ends == [1]
    stored = await ledger.get_run(first.run_id)
    assert [m.content for m in stored.messages][-2:] == ["and again", result.text]
    assert stored.run.message_count == 4
    assert [t.status for t in stored.tasks] == ["completed", "completed"]
