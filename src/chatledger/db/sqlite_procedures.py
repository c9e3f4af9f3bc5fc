"""Several writes sent to SQLite as one statement: an INSERT into a view whose INSTEAD OF
trigger runs them.

PostgreSQL writes several tables in one statement with data-modifying CTEs
(engine/asked.py, engine/answered.py). SQLite cannot: a CTE there only reads. What it
has are triggers. An INSERT into a view runs the view's INSTEAD OF trigger, whose steps
may write any table, in order, each seeing what the ones before it wrote; and the
INSERT's RETURNING clause is computed after the trigger has run, so its subqueries read
what the steps wrote. A `Procedure` is such a view and trigger, made from Core
statements: the bind parameters of its steps become the view's columns (`NEW.name` in
the trigger), and a call binds them by name, as for any statement (db/prepared.py). One
statement for SQLAlchemy's events and for the library, where the steps one by one were
one each.

A step may end the call early: `stop_unless(condition)` ends the trigger before the
steps after it when `condition` does not hold (`RAISE(IGNORE)`), and the INSERT then
answers no row. Nothing the call wrote before it is taken back, so it goes first.

The view and its trigger are TEMP objects, made on a connection the first time a call
runs there, from the statements of the code that calls them: no migration when those
change, and nothing in the database file for another version or another tool to find.
They are made through the driver, past SQLAlchemy's statement events: once per
connection, not per call. Made inside the caller's transaction, they go if it is rolled
back, so the connection's next BEGIN makes them again first (`settle`, from the engine's
begin hook). And SQLite refuses to rename a table while a trigger names one that is
missing, which alembic's batch migrations do (a table dropped, its copy renamed), so
`forget` drops them from a connection before migrations run on it (db/migrate.py).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, MetaData, Table, insert, literal_column, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement, bindparam
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import NullType, TypeEngine

from chatledger.db.prepared import Prepared
from chatledger.db.sqlite_inline import InlineConnection

_DIALECT = sqlite.dialect()
_numbers = itertools.count(1)
# The procedures made on each connection so far, by name (its driver connection: a new
# one after a reconnect has none).
_made: weakref.WeakKeyDictionary[InlineConnection, set[str]] = weakref.WeakKeyDictionary()
# Of those, the ones made inside a transaction, which a rollback takes back with the rest.
_unsure: weakref.WeakKeyDictionary[InlineConnection, list[Procedure]] = weakref.WeakKeyDictionary()


def stop_unless(condition: ColumnElement[bool]) -> ClauseElement:
    """A step that ends the call, with no row answered, unless `condition` holds."""
    return select(literal_column("RAISE(IGNORE)")).where(~condition)


class Procedure:
    """Steps run as one statement on SQLite. `call(*returning)` is the statement: an
    INSERT of the steps' parameters into the view, answering `returning` (expressions
    computed once the steps have run: subqueries, with binds of the call's own)."""

    def __init__(self, purpose: str, steps: Sequence[ClauseElement]) -> None:
        self.name = f"{purpose}_{next(_numbers)}"
        bodies, types = [], dict[str, TypeEngine[Any]]()
        for step in steps:
            sql, step_types = _with_new_row(step)
            bodies.append(sql)
            for name, type_ in step_types.items():  # typed where any step types it
                if isinstance(types.setdefault(name, type_), NullType):
                    types[name] = type_
        self.parameters = tuple(types)
        self._view = Table(
            self.name, MetaData(), *(Column(name, types[name]) for name in self.parameters)
        )
        columns = ", ".join(f'"{name}"' for name in self.parameters)
        nulls = ", ".join("NULL" for _ in self.parameters)
        body = "".join(f"\n  {sql};" for sql in bodies)
        self.ddl = (
            f"CREATE TEMP VIEW IF NOT EXISTS {self.name} ({columns}) AS SELECT {nulls} WHERE 0",
            f"CREATE TEMP TRIGGER IF NOT EXISTS {self.name}_steps"
            f" INSTEAD OF INSERT ON {self.name}\n"
            f"BEGIN{body}\nEND",
        )

    def call(self, *returning: ColumnElement[Any]) -> Prepared:
        values = {name: bindparam(name, type_=self._view.c[name].type) for name in self.parameters}
        return Prepared(insert(self._view).values(values).returning(*returning), self.ready)

    def ready(self, connection: Connection) -> None:
        """Make the view and its trigger on `connection` unless it has them. Made inside
        the caller's transaction: made again, if need be, before the next one begins
        (`settle`)."""
        inline = connection.connection.driver_connection
        assert isinstance(inline, InlineConnection)
        made = _made.setdefault(inline, set())
        if self.name in made:
            return
        self._make(inline)
        made.add(self.name)
        _unsure.setdefault(inline, []).append(self)

    def _make(self, inline: InlineConnection) -> None:
        for ddl in self.ddl:
            inline.driver.execute(ddl).close()


def settle(inline: InlineConnection) -> None:
    """Before a transaction begins on `inline`: the procedures made inside an earlier one
    made again unless they are there (that one may have been rolled back)."""
    for procedure in _unsure.pop(inline, ()):
        procedure._make(inline)


def forget(connection: Connection) -> None:
    """Drop every procedure made on `connection` (with its trigger), so that a migration
    may rename tables there; a call after it makes its own again."""
    inline = connection.connection.driver_connection
    assert isinstance(inline, InlineConnection)
    _unsure.pop(inline, None)
    for name in _made.pop(inline, set()):
        connection.exec_driver_sql(f"DROP VIEW IF EXISTS temp.{name}")


def _with_new_row(step: ClauseElement) -> tuple[str, dict[str, TypeEngine[Any]]]:
    """A step's SQL for SQLite, each bind parameter read from the view's new row, and
    the parameters' types by name."""
    compiled = step.compile(dialect=_DIALECT)
    assert isinstance(compiled, SQLCompiler)
    names = list(compiled.positiontup or ())
    pieces = compiled.string.split("?")
    if len(pieces) != len(names) + 1 or compiled.escaped_bind_names:
        raise ValueError(f"a procedure's step binds plain parameters only: {compiled.string}")
    # A literal of the statement's own (the 1 of `count + 1`) is an anonymous bind with
    # its value: written into the SQL, as the trigger has nothing to bind it to.
    literals = {
        name: compiled.render_literal_value(parameter.value, parameter.type)
        for name, parameter in compiled.binds.items()
        if parameter.unique and not parameter.required
    }
    values = [literals.get(name, f'NEW."{name}"') for name in names]
    sql = pieces[0] + "".join(
        value + piece for value, piece in zip(values, pieces[1:], strict=True)
    )
    return sql, {name: compiled.binds[name].type for name in names if name not in literals}
