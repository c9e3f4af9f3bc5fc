"""db/prepared.py: a prebuilt statement sent through the driver answers what
`session.execute` answers, inside the session's own transaction, with SQLAlchemy's
autoflush, statement events and errors kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, event, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, MultipleResultsFound

from chatledger import Ledger
from chatledger.db.base import table_of
from chatledger.db.prepared import Prepared
from chatledger.errors import Busy
from chatledger.runs import service as runs
from chatledger.runs.models import Run

_runs = table_of(Run)
_THIS_RUN = (_runs.c.project_id == bindparam("in_project"), _runs.c.id == bindparam("run"))
# Timestamps, JSON, integers and text come back, as each type reads them.
_RENAME = (
    update(_runs)
    .where(*_THIS_RUN)
    .values(name=bindparam("new_name"), updated_at=bindparam("at"))
    .returning(_runs.c.name, _runs.c.updated_at, _runs.c.settings, _runs.c.message_count)
)
_READ = select(_runs.c.id, _runs.c.name, _runs.c.created_at).where(*_THIS_RUN)


async def _a_run(ledger: Ledger, run_id: str) -> None:
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, run_id, settings={"model": "echo", "n": 1})


async def test_rows_are_what_the_session_would_answer(ledger: Ledger) -> None:
    await _a_run(ledger, "r1")
    at = datetime(2026, 12, 4, 11, 30, 15, 123456, tzinfo=UTC)
    params = {"in_project": ledger.caller.project_id, "run": "r1", "new_name": "n", "at": at}
    async with ledger.database.transaction() as session:
        through_session = (await session.execute(_RENAME, params)).one()
        prepared = (await Prepared(_RENAME).execute(session, params)).one_or_none()
    assert prepared._asdict() == dict(through_session._mapping)
    assert prepared.updated_at == at and prepared.updated_at.tzinfo is not None
    assert prepared.settings == {"model": "echo", "n": 1}
    await _a_run(ledger, "r2")
    async with ledger.database.reading() as session:
        read = (await Prepared(_READ).execute(session, params)).rows
        assert [row._asdict() for row in read] == [
            dict(row._mapping) for row in await session.execute(_READ, params)
        ]
        assert (await Prepared(_READ).execute(session, {**params, "run": "none"})).rows == []
        every_run = await Prepared(select(_runs.c.id)).execute(session, {})
        with pytest.raises(MultipleResultsFound):
            every_run.one_or_none()


async def test_an_update_without_values_sets_the_columns_its_parameters_name(
    ledger: Ledger,
) -> None:
    """As with `session.execute`: the SET clause is the parameters named after columns,
    compiled once for each set of names."""
    await _a_run(ledger, "r1")
    stmt = Prepared(update(_runs).where(*_THIS_RUN).returning(_runs.c.name, _runs.c.last_model))
    where = {"in_project": ledger.caller.project_id, "run": "r1"}
    async with ledger.database.transaction() as session:
        first = (await stmt.execute(session, {**where, "name": "a"})).one_or_none()
        both = (await stmt.execute(session, {**where, "name": "b", "last_model": "m"})).rows
    assert tuple(first) == ("a", None)
    assert [tuple(row) for row in both] == [("b", "m")]


async def test_it_runs_in_the_sessions_transaction(ledger: Ledger) -> None:
    """Pending ORM objects are flushed first (the UPDATE finds the run added just
    before), and a rollback takes the prepared statement's write back with the rest."""
    count = Prepared(update(_runs).where(*_THIS_RUN).values(message_count=7))
    where = {"in_project": ledger.caller.project_id, "run": "added"}

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        async with ledger.database.transaction() as session:
            session.add(_new_run(ledger, "added"))
            assert (await count.execute(session, where)).rowcount == 1
            raise Undo
    async with ledger.database.transaction() as session:
        assert (await count.execute(session, where)).rowcount == 0
        session.add(_new_run(ledger, "added"))
        assert (await count.execute(session, where)).rowcount == 1
    async with ledger.database.reading() as session:
        assert await session.scalar(select(Run.message_count).where(Run.id == "added")) == 7


async def test_a_session_used_again_takes_its_new_connection(ledger: Ledger) -> None:
    """The connection is kept per transaction: the session's next one uses its own."""
    await _a_run(ledger, "r1")
    params = {"in_project": ledger.caller.project_id, "run": "r1"}
    read = Prepared(_READ)
    async with ledger.database._writer() as session:
        for _ in range(3):
            async with session.begin():
                assert len((await read.execute(session, params)).rows) == 1


async def test_statement_events_see_it(ledger: Ledger) -> None:
    seen: list[tuple[str, str]] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(("before", statement))

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(("after", statement))

    engine = ledger.database.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        async with ledger.database.transaction() as session:
            await Prepared(_READ).execute(session, {"in_project": "p", "run": "r"})
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert [when for when, _ in seen] == ["before", "after"]
    assert all("FROM runs" in statement for _, statement in seen)


async def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(ledger: Ledger) -> None:
    await _a_run(ledger, "taken")
    async with ledger.database.reading() as session:
        stored = (await session.execute(select(_runs).where(_runs.c.id == "taken"))).one()
    values = dict(stored._mapping)  # the same row again: its key is taken
    plain_insert = Prepared(insert(_runs).values({name: bindparam(name) for name in values}))
    with pytest.raises(IntegrityError) as raised:
        async with ledger.database.transaction() as session:
            await plain_insert.execute(session, values)
    assert isinstance(raised.value.orig, ledger.database.write_engine.dialect.loaded_dbapi.Error)
    async with ledger.database.transaction() as session:  # the connection serves again
        assert (await Prepared(_READ).execute(session, {"in_project": "p", "run": "r"})).rows == []


async def test_a_lost_connection_is_busy_and_replaced(ledger: Ledger) -> None:
    """PostgreSQL restarted under a transaction: `Busy` (503, retry), the connection
    invalidated, the next transaction on a live one."""
    if ledger.database.is_sqlite:
        pytest.skip("SQLite has no server to lose")
    read = Prepared(_READ)
    params = {"in_project": "p", "run": "r"}
    with pytest.raises(Busy):
        async with ledger.database.transaction() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            async with ledger.database.looking_up() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await read.execute(session, params)
    async with ledger.database.transaction() as session:
        assert (await read.execute(session, params)).rows == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_statement_cut_off_invalidates_its_connection(ledger: Ledger) -> None:
    """Cancelled mid-statement, as SQLAlchemy's own statements are: the cancellation
    goes on, the connection is out of the pool, the next transaction on a fresh one."""
    sleep = Prepared(select(func.pg_sleep(bindparam("s")).label("slept")))
    backends: list[int] = []

    async def cut_off() -> None:
        async with ledger.database.transaction() as session:
            backends.append(await session.scalar(text("SELECT pg_backend_pid()")))
            await sleep.execute(session, {"s": 5})

    request = asyncio.create_task(cut_off())
    await asyncio.sleep(0.2)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    pool = ledger.database.write_engine.sync_engine.pool
    assert pool.checkedout() == 0
    async with ledger.database.transaction() as session:
        assert await session.scalar(text("SELECT pg_backend_pid()")) not in backends


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_parameters_are_what_sqlalchemy_would_send(dialect_name: str) -> None:
    """The plan made once per statement gives the values SQLAlchemy's own
    `construct_params` and bind processors give: the caller's by key, the statement's
    own (a literal, a default, a callable) when the caller names none."""
    from sqlalchemy import literal
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.exc import InvalidRequestError

    dialect = sqlite.dialect() if dialect_name == "sqlite" else postgresql.psycopg.dialect()
    statement = (
        update(_runs)
        .where(*_THIS_RUN, _runs.c.message_count >= bindparam("at_least", 2))
        .values(
            name=bindparam("new_name"),
            updated_at=bindparam("at", callable_=lambda: datetime(2026, 1, 2, tzinfo=UTC)),
            settings=bindparam("settings", {"model": "echo"}, type_=_runs.c.settings.type),
            message_count=_runs.c.message_count + literal(1),
        )
        .returning(_runs.c.name)
    )
    at = datetime(2026, 12, 4, 11, 30, 15, 123456, tzinfo=UTC)
    given: list[dict[str, Any]] = [
        {"in_project": "p", "run": "r", "new_name": "n"},
        {"in_project": "p", "run": "r", "new_name": "n", "at": at, "at_least": 5},
        {"in_project": "p", "run": "r", "new_name": None, "settings": {"a": [1, "b"]}},
    ]
    prepared = Prepared(statement)
    for params in given:
        compiled = prepared._compiled_for(dialect, params)
        sqlalchemy_compiled = statement.compile(dialect=dialect, column_keys=sorted(params))
        assert compiled.sql == sqlalchemy_compiled.string
        expected = sqlalchemy_compiled.construct_params(dict(params))
        for name, bind in sqlalchemy_compiled.binds.items():
            process = bind.type._cached_bind_processor(dialect)
            if process is not None:
                expected[name] = process(expected[name])
        ours = compiled.parameters(params)
        if sqlalchemy_compiled.positional:
            order = sqlalchemy_compiled.positiontup or []
            assert _sent(ours) == _sent(tuple(expected[name] for name in order))
        else:
            assert _sent(ours) == _sent(expected)
    missing = prepared._compiled_for(dialect, {"in_project": "p", "run": "r"})
    with pytest.raises(InvalidRequestError, match="'new_name'"):
        missing.parameters({"in_project": "p", "run": "r"})


def _sent(values: Any) -> Any:
    """Values as the driver gets them; psycopg's JSON wrappers compare by identity."""
    items = values.items() if isinstance(values, dict) else enumerate(values)
    return {key: getattr(value, "obj", value) for key, value in items}


def test_only_plain_binds_and_named_columns_are_taken() -> None:
    from sqlalchemy.dialects import sqlite

    in_list = Prepared(select(_runs.c.id).where(_runs.c.id.in_(["a", "b"])))
    with pytest.raises(ValueError, match="plain binds"):
        in_list._compiled_for(sqlite.dialect(), {})
    unnamed = Prepared(select(select(_runs.c.id).scalar_subquery()))
    with pytest.raises(ValueError, match="needs a name"):
        unnamed._compiled_for(sqlite.dialect(), {})


def _new_run(ledger: Ledger, run_id: str) -> Run:
    caller = ledger.caller
    return Run(project_id=caller.project_id, id=run_id, user_id=caller.user_id, name=run_id)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_selects_parameters_set_no_column_of_the_writes_in_its_ctes(
    ledger: Ledger,
) -> None:
    """Parameters name the columns an INSERT or UPDATE without values of its own sets,
    not those of a write inside a SELECT's CTE (PostgreSQL): a chat turn's record
    (engine/answered.py) binds `model` for its run, beside a task that has a `model`."""
    await _a_run(ledger, "r1")
    renamed = (
        update(_runs)
        .where(*_THIS_RUN)
        .values(name=bindparam("new_name"))
        .returning(_runs.c.name)
        .cte("renamed")
    )
    params = {"in_project": ledger.caller.project_id, "run": "r1", "new_name": "n"}
    async with ledger.database.transaction() as session:
        named = (await Prepared(select(renamed.c.name)).execute(session, params)).one_or_none()
        with_a_column_named = {**params, "settings": {"model": "other"}, "user_id": "else"}
        await Prepared(select(renamed.c.name)).execute(session, with_a_column_named)
    assert named.name == "n"
    async with ledger.database.reading() as session:
        run = await session.get_one(Run, (ledger.caller.project_id, "r1"))
    assert (run.name, run.settings, run.user_id) == (
        "n",
        {"model": "echo", "n": 1},
        ledger.caller.user_id,
    )
