"""The overrides of each project, kept in memory: pricing a completion must not cost a
query on the hot path (most projects have no override at all).

A write forgets its project's entry once its transaction has committed (never before:
a reader could otherwise load the old rows again and keep them). A load that raced a
write is not kept either: each entry carries a generation that a forget moves on.
Another process's writes are seen within `TTL_S`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chatledger.pricing import Rates

TTL_S = 10.0
_CHANGED = "chatledger.prices.changed"


@dataclass(frozen=True, slots=True)
class Override:
    id: str
    provider: str | None
    model_pattern: str
    effective_from: datetime
    rates: Rates


Key = tuple[str, str]  # (database URL, project id)
Loader = Callable[[], Awaitable[tuple[Override, ...]]]

_entries: dict[Key, tuple[float, tuple[Override, ...]]] = {}
_generations: dict[Key, int] = {}


def key(session: AsyncSession, project_id: str) -> Key:
    return (session.get_bind().engine.url.render_as_string(), project_id)


async def overrides(session: AsyncSession, project_id: str, load: Loader) -> tuple[Override, ...]:
    k = key(session, project_id)
    entry = _entries.get(k)
    if entry is not None and time.monotonic() - entry[0] < TTL_S:
        return entry[1]
    generation = _generations.get(k, 0)
    loaded = await load()
    if _generations.get(k, 0) == generation:
        _entries[k] = (time.monotonic(), loaded)
    return loaded


def forget_on_commit(session: AsyncSession, project_id: str) -> None:
    """Mark the project's overrides as changed by this transaction."""
    session.info.setdefault(_CHANGED, set()).add(key(session, project_id))


def _forget(k: Key) -> None:
    _generations[k] = _generations.get(k, 0) + 1
    _entries.pop(k, None)


@event.listens_for(Session, "after_commit")
def _forget_committed(session: Session) -> None:
    for k in session.info.pop(_CHANGED, ()):
        _forget(k)


@event.listens_for(Session, "after_rollback")
def _drop_uncommitted(session: Session, *_: Any) -> None:
    session.info.pop(_CHANGED, None)
