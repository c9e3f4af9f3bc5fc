"""Prebuilt statements sent through the driver of a session's own connection.

The save flow's hot statements are Core statements built once (db/loaded.py says how
the ORM's copies are kept true to them). Even prebuilt, SQLAlchemy's execution costs
more than the database's work: for each one it makes a cache key, an execution context,
a cursor result and its row metadata, and on the asyncio side a greenlet switch per
driver call. Measured in process, one UPDATE … RETURNING of a run took 180-280 µs
through `session.execute` and ~80 µs as `Prepared` on SQLite (~40 µs of it the
driver's own); 460-530 µs and 290-330 µs on PostgreSQL, where the round trip is most of
it (docs/benchmarks.md, a ninth session).

`Prepared` compiles its statement once per database (dialect), with that dialect's own
type processors for its parameters and returned columns, and then runs it on the
session's connection, inside the session's transaction: the BEGIN (and on PostgreSQL
the wall) is SQLAlchemy's as for every statement, and on PostgreSQL, when this is the
transaction's first statement, sent in one pipeline with it (db/deferred_begin.py); so is
the COMMIT, when the caller says this is the transaction's last (`last=True`).
What SQLAlchemy does around a statement that matters here is kept:

- the session's pending changes are flushed first (autoflush), as `session.execute`
  would;
- `before_cursor_execute` and `after_cursor_execute` listeners are told of it (statement
  counts, tracing), with no execution context;
- a driver error is raised as SQLAlchemy raises it (`sqlalchemy.exc.DBAPIError` and its
  subclasses, the driver's error as `orig`), and a lost connection is invalidated, so
  that `Database` answers both as it answers every statement's;
- a statement cut off (its request cancelled) invalidates its connection
  (db/interrupted.py).

Only plain binds are taken: no expanding `IN` lists, no per-row defaults.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Dialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InvalidRequestError, MultipleResultsFound
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ValuesBase

from chatledger.db import deferred_begin, driver_rows, interrupted

Process = Callable[[Any], Any]
Ready = Callable[[Connection], None]


@dataclass(frozen=True)
class Written:
    """What a prepared statement answered: its rows (named tuples, processed as
    SQLAlchemy would) and how many rows it wrote."""

    rows: Sequence[Any]
    rowcount: int
    # The transaction was committed with the statement (`Prepared.execute(last=True)`).
    committed: bool = False

    def one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise MultipleResultsFound(f"expected at most one row, got {len(self.rows)}")
        return self.rows[0] if self.rows else None


class Prepared:
    """A Core statement, compiled once per dialect (and, as SQLAlchemy does, per set of
    parameter names: an UPDATE or INSERT without its own values sets the columns named
    by them), run through the driver. `ready`, if given, is called with the connection
    before each run: to make what the statement needs there (db/sqlite_procedures.py)."""

    def __init__(self, statement: ClauseElement, ready: Ready | None = None) -> None:
        self.statement = statement
        self._ready = ready
        self._compiled: dict[tuple[str, frozenset[str]], _Compiled] = {}

    async def execute(
        self, session: AsyncSession, params: Mapping[str, Any], *, last: bool = False
    ) -> Written:
        """Run the statement in the session's transaction. `last`: nothing else runs in
        that transaction: on PostgreSQL its COMMIT goes in the statement's round trip,
        and SQLAlchemy's own commit then sends nothing (a statement sent after it is
        refused); elsewhere the transaction commits when its session does."""
        if session.autoflush and (session.new or session.dirty or session.deleted):
            await session.flush()
        sync = await _connection(session)
        commits = last and sync.dialect.name == "postgresql"
        if self._ready is not None:
            self._ready(sync)
        compiled = self._compiled_for(sync.dialect, params)
        parameters = compiled.parameters(params)
        driver = sync.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        statement = compiled.sql
        # Taken before the listeners are told, who would send it on its own; then sent
        # with the statement (db/deferred_begin.py). The engine's listener also refuses
        # a statement sent after its transaction's last.
        with deferred_begin.taken(sync.connection) as begin:
            for before in sync.dispatch.before_cursor_execute:
                statement, parameters = before(sync, cursor, statement, parameters, None, False)
            try:
                await _send(driver, cursor, statement, parameters, begin, commits)
                rows = await cursor.fetchall() if compiled.returns_rows else ()
                rowcount = cursor.rowcount
            except Exception as exc:
                await _raise_as_sqlalchemy(session, sync, exc, statement, parameters)
                raise  # not a driver error: as it is
            except BaseException as exc:  # cancelled mid-statement
                await interrupted.invalidate_if_cut_off(sync, exc)
                raise
            finally:
                await cursor.close()
        if commits:
            deferred_begin.committed(sync.connection)
        for after in sync.dispatch.after_cursor_execute:
            after(sync, cursor, statement, parameters, None, False)
        return Written([compiled.row(row) for row in rows], rowcount, commits)

    def _compiled_for(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled:
        key = (dialect.name, frozenset(params))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = _Compiled.of(self.statement, dialect, sorted(params))
            self._compiled[key] = compiled
        return compiled


@dataclass(frozen=True)
class _Bind:
    """One bind of a compiled statement: where its value comes from, how it is sent."""

    name: str  # as the SQL names it
    key: str  # as the caller names it (usually the same)
    parameter: BindParameter[Any]  # its own value, when the caller gives none
    process: Process | None  # the dialect's bind processor for its type


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[_Bind, ...]
    positions: tuple[str, ...] | None  # positional paramstyle: the binds' order
    returns_rows: bool
    row: Callable[[Sequence[Any]], Any]

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect, names: list[str]) -> _Compiled:
        # Parameter names set columns of an INSERT or UPDATE given no values of its own,
        # as in `session.execute`. Not of a SELECT: SQLAlchemy would hand them on to the
        # writes of its CTEs, which would then set any column a parameter is named after.
        keys = names if isinstance(statement, ValuesBase) else None
        compiler = statement.compile(dialect=dialect, column_keys=keys)
        assert isinstance(compiler, SQLCompiler)
        if (
            compiler.escaped_bind_names
            or getattr(compiler, "_collected_params", None)  # values gathered at compile time
            or any(b.expanding for b in compiler.binds.values())
        ):
            raise ValueError(
                "a prepared statement takes plain binds: no IN lists, escaped names or "
                "parameters collected at compile time"
            )
        binds = tuple(
            _Bind(
                name, parameter.key, parameter, driver_rows.bind_processor(parameter.type, dialect)
            )
            for parameter, name in compiler.bind_names.items()
        )
        columns = list(getattr(statement, "exported_columns", ()))
        return cls(
            sql=compiler.string,
            binds=binds,
            positions=tuple(compiler.positiontup or ()) if compiler.positional else None,
            returns_rows=bool(columns),
            row=_row_maker(columns, dialect),
        )

    def parameters(self, params: Mapping[str, Any]) -> Any:
        """`params` with the statement's own bound values, each as its type binds it,
        named or in order as the driver takes them.

        What `SQLCompiler.construct_params` does for plain binds, from a plan made once:
        it walks the compiler's binds and their attributes on every call (a task's end,
        17 binds: 7.1-7.7 -> 5.7 µs on SQLite, 3.2-3.5 -> 1.8 µs on PostgreSQL)."""
        values = {}
        for bind in self.binds:
            if bind.key in params:
                value = params[bind.key]
            elif bind.name in params:
                value = params[bind.name]
            elif bind.parameter.required:
                raise InvalidRequestError(
                    f"A value is required for bind parameter {bind.key!r}", code="cd3x"
                )
            elif bind.parameter.callable:
                value = bind.parameter.effective_value
            else:
                value = bind.parameter.value
            values[bind.name] = value if bind.process is None else bind.process(value)
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)


def _row_maker(columns: list[Any], dialect: Dialect) -> Callable[[Sequence[Any]], Any]:
    names = [column.key for column in columns]
    if not all(isinstance(name, str) and name.isidentifier() for name in names):
        raise ValueError(f"every returned column needs a name (a label): {names}")
    Row = namedtuple("Row", names)  # type: ignore[misc]
    processes = [
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    ]
    if not any(processes):
        return lambda values: Row._make(values)
    steps = [(i, process) for i, process in enumerate(processes) if process is not None]

    def row(values: Sequence[Any]) -> Any:
        processed = list(values)
        for i, process in steps:
            processed[i] = process(processed[i])
        return Row._make(processed)

    return row


async def _send(
    driver: Any,
    cursor: Any,
    statement: str,
    parameters: Any,
    begin: deferred_begin.Begin | None,
    commits: bool,
) -> None:
    if begin is None and not commits:
        await cursor.execute(statement, parameters)
        return
    # The statement opens its transaction, or ends it, or both: BEGIN and the wall,
    # COMMIT, go in its round trip. Should the statement fail, the server skips the
    # COMMIT queued after it (the pipeline is aborted) and the transaction stays open
    # for the caller's rollback.
    async with driver.pipeline():
        if begin is not None:
            await deferred_begin.queue(driver, begin)
        await cursor.execute(statement, parameters)
        if commits:
            await driver.execute("COMMIT", prepare=False)


# Where a session keeps the connection of its transaction (`Session.info`).
_CONNECTION = "chatledger.prepared.connection"


async def _connection(session: AsyncSession) -> Connection:
    """The connection of the session's transaction, begun if need be. Asking the session
    each time costs a greenlet switch, a third of a statement's time on SQLite: it is
    kept in the session's info for as long as it is open and in its transaction."""
    sync: Connection | None = session.info.get(_CONNECTION)
    if sync is None or sync.closed or not sync.in_transaction():
        sync = (await session.connection()).sync_connection
        assert sync is not None
        session.info[_CONNECTION] = sync
    return sync


async def _raise_as_sqlalchemy(
    session: AsyncSession, sync: Connection, exc: Exception, statement: str, parameters: Any
) -> None:
    """A driver error as SQLAlchemy raises it, its connection invalidated when lost."""
    dialect = sync.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    if not isinstance(exc, dbapi_error):
        return
    lost = dialect.is_disconnect(exc, sync.connection.dbapi_connection, None)
    if lost:
        await (await session.connection()).invalidate(exc)
    raise DBAPIError.instance(
        statement,
        parameters,
        exc,
        dbapi_error,
        connection_invalidated=lost,
        dialect=dialect,
    ) from exc
