"""A group of a batch's items of one kind, stored in blocks: the items that are fresh, in
one go (the kind's bulk path), and each item that is not, alone at its place, after the
fresh items before it. The same for messages and for ended tasks (batch/messages.py,
batch/tasks.py); what makes an item fresh is the kind's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.batch.schemas import ItemResult
from chatledger.interactions.bulk import NotFresh
from chatledger.usage import tally as usage_tally


class _Grouped(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def created(self) -> ItemResult: ...


E = TypeVar("E", bound=_Grouped)


async def in_blocks(
    session: AsyncSession,
    group: Sequence[E],
    fresh: Callable[[E], bool],
    store: Callable[[list[E]], Awaitable[None]],
    one: Callable[[E], Awaitable[ItemResult]],
) -> dict[int, ItemResult]:
    """The verdicts of `group`'s items, by item index, storing them in order: `fresh`
    tells (item by item, in order) whether an item can go with the block before it;
    `store` stores a block in bulk, `one` an item alone (in a savepoint of its own)."""
    results: dict[int, ItemResult] = {}
    block: list[E] = []
    for entry in group:
        if fresh(entry):
            block.append(entry)
            continue
        results |= await _stored(session, block, store, one)
        block = []
        results[entry.index] = await one(entry)
    return results | await _stored(session, block, store, one)


async def _stored(
    session: AsyncSession,
    block: list[E],
    store: Callable[[list[E]], Awaitable[None]],
    one: Callable[[E], Awaitable[ItemResult]],
) -> dict[int, ItemResult]:
    if not block:
        return {}
    try:
        async with usage_tally.savepoint(session):
            await store(block)
    except (NotFresh, IntegrityError):
        # Rolled back: the database knew better than the lookup. One at a time, then.
        return {entry.index: await one(entry) for entry in block}
    return {entry.index: entry.created for entry in block}
