"""ORM objects kept true to rows that Core statements wrote.

The save flow's hot statements are Core statements built once (no ORM bookkeeping, no
statement built per call), which write the table, not the objects a session has loaded.
These give those objects what the statement returned, as stored: nothing for the
session to flush, nothing stale for the rest of the transaction to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

M = TypeVar("M", bound=DeclarativeBase)


def refresh_if_loaded(
    session: AsyncSession, model: type[M], identity: tuple[Any, ...], written: Mapping[Any, Any]
) -> M | None:
    """Set `written` (column name → value) on the session's copy of the row, if it has
    one; returns that copy."""
    key = session.sync_session.identity_key(model, identity)
    loaded: M | None = session.identity_map.get(key)
    if loaded is not None:
        for name, value in written.items():
            set_committed_value(loaded, name, value)
    return loaded


def as_loaded(
    session: AsyncSession, model: type[M], identity: tuple[Any, ...], row: Mapping[Any, Any]
) -> M:
    """The ORM object of a whole row a statement returned, as if the session had loaded
    it: its own copy brought up to date, or a new one added without a statement."""
    loaded = refresh_if_loaded(session, model, identity, row)
    if loaded is not None:
        return loaded
    new = model(**row)
    make_transient_to_detached(new)  # its values are what is stored, not changes
    session.add(new)
    return new
