"""INSERT … ON CONFLICT for whichever database the session is on. Both dialects speak it;
SQLAlchemy just spells it from two modules.

Each statement is built once per table (and set of columns) and run with the row as its
parameters: these run several times per chat turn and per batch group, and building an
INSERT and its cache key afresh cost more than SQLite takes to run it. A row that gives
every column with a Python-side default is sent through the driver (db/prepared.py);
one that leaves such a column to SQLAlchemy's defaults goes through the session.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from chatledger.db.base import table_of
from chatledger.db.prepared import Prepared


def _insert(dialect: str, table: Table) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


@functools.cache
def _insert_or_nothing(dialect: str, table: Table, returning: tuple[str, ...] = ()) -> Any:
    # SQLAlchemy keeps an INSERT's rowcount only when asked; psycopg's is -1 (truthy)
    # once the cursor is closed, which would report every conflict as a creation.
    stmt = (
        _insert(dialect, table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)
    )
    return stmt.returning(*(table.c[name] for name in returning)) if returning else stmt


@functools.cache
def _insert_or_add(
    dialect: str, table: Table, key: tuple[str, ...], increments: tuple[str, ...]
) -> Any:
    return adding(_insert(dialect, table), table, key, increments)


def adding(stmt: Any, table: Table, key: tuple[str, ...], increments: tuple[str, ...]) -> Any:
    """`stmt`, an INSERT, adding `increments` to the row at `key` when it exists."""
    return stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + stmt.excluded[name] for name in increments},
    )


def insert_or_nothing(
    session: AsyncSession, model: type[DeclarativeBase], returning: tuple[str, ...] = ()
) -> Any:
    """INSERT … ON CONFLICT DO NOTHING into `model`'s table, for many rows at once
    (`session.execute(stmt, rows)`; `insert_if_absent` takes one); `returning`: columns
    of each row it inserted."""
    return _insert_or_nothing(_dialect(session), table_of(model), returning)


def insert_or_add(
    session: AsyncSession,
    model: type[DeclarativeBase],
    key: tuple[str, ...],
    increments: tuple[str, ...],
) -> Any:
    """INSERT adding `increments` to the row at `key` when it exists, for many rows at
    once (`add_to_counters` takes one)."""
    return _insert_or_add(_dialect(session), table_of(model), key, increments)


async def insert_if_absent(
    session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]
) -> bool:
    """Insert the row unless its primary key exists; True when this call inserted it.
    `values` are keyed by column name.

    Unlike SELECT-then-INSERT this cannot lose a race: two callers creating the same id
    at once both succeed, and exactly one of them is told it created the row.
    """
    dialect, table = _dialect(session), table_of(model)
    if _defaults_given(table, values):
        prepared = _prepared_insert_or_nothing(dialect, table, tuple(values))
        return bool((await prepared.execute(session, values)).rowcount)
    stmt = _insert_or_nothing(dialect, table)
    result = cast(CursorResult[Any], await session.execute(stmt, values))
    return bool(result.rowcount)


async def add_to_counters(
    session: AsyncSession,
    model: type[DeclarativeBase],
    key: dict[str, Any],
    increments: dict[str, int],
) -> None:
    """Create the row at `increments`, or add `increments` to it, in one statement."""
    values = {**key, **increments}
    table = table_of(model)
    if _defaults_given(table, values):
        prepared = _prepared_insert_or_add(_dialect(session), table, tuple(key), tuple(increments))
        await prepared.execute(session, values)
        return
    stmt = _insert_or_add(_dialect(session), table, tuple(key), tuple(increments))
    await session.execute(stmt, values)


def _defaults_given(table: Table, values: dict[str, Any]) -> bool:
    """Whether `values` gives every column that SQLAlchemy would fill in from a Python
    default (the database's own defaults need nothing)."""
    return _python_defaulted(table) <= values.keys()


@functools.cache
def _python_defaulted(table: Table) -> frozenset[str]:
    return frozenset(column.key for column in table.columns if column.default is not None)


def _with_binds(dialect: str, table: Table, columns: tuple[str, ...]) -> Any:
    """An INSERT of exactly `columns`, each bound under its own name."""
    binds = {name: bindparam(name, type_=table.c[name].type) for name in columns}
    return _insert(dialect, table).values(binds)


@functools.cache
def _prepared_insert_or_nothing(dialect: str, table: Table, columns: tuple[str, ...]) -> Prepared:
    return Prepared(_with_binds(dialect, table, columns).on_conflict_do_nothing())


@functools.cache
def _prepared_insert_or_add(
    dialect: str, table: Table, key: tuple[str, ...], increments: tuple[str, ...]
) -> Prepared:
    stmt = _with_binds(dialect, table, (*key, *increments))
    return Prepared(adding(stmt, table, key, increments))
