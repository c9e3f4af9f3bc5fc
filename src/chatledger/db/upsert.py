"""INSERT … ON CONFLICT for whichever database the session is on. Both dialects speak it;
SQLAlchemy just spells it from two modules."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def _insert(session: AsyncSession, model: type[DeclarativeBase]) -> Any:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model.__table__)


async def insert_if_absent(
    session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]
) -> bool:
    """Insert the row unless its primary key exists; True when this call inserted it.
    `values` are keyed by column name.

    Unlike SELECT-then-INSERT this cannot lose a race: two callers creating the same id
    at once both succeed, and exactly one of them is told it created the row.
    """
    stmt = _insert(session, model).values(**values).on_conflict_do_nothing()
    # SQLAlchemy keeps an INSERT's rowcount only when asked; psycopg's is -1 (truthy)
    # once the cursor is closed, which would report every conflict as a creation.
    stmt = stmt.execution_options(preserve_rowcount=True)
    result = cast(CursorResult[Any], await session.execute(stmt))
    return bool(result.rowcount)


async def add_to_counters(
    session: AsyncSession,
    model: type[DeclarativeBase],
    key: dict[str, Any],
    increments: dict[str, int],
) -> None:
    """Create the row at `increments`, or add `increments` to it, in one statement."""
    table = model.__table__
    stmt = _insert(session, model).values(**key, **increments)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + stmt.excluded[name] for name in increments},
    )
    await session.execute(stmt)
