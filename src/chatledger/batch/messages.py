"""The message items of a batch, which is what an app that keeps its chats' messages
uploads when it syncs its history: the fresh ones appended together (`messages.bulk`),
the others one at a time, with the verdict for each item that storing them one by one,
in order, would give.

A run of consecutive message items is a group. An item that is not fresh (its id is
stored already or used by an earlier item of the group, or its run is another user's)
is stored alone, at its place: the fresh items before it are stored first, so positions
in a run stay in upload order, and it is answered a duplicate or refused as it would be
on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.batch import blocks
from chatledger.batch.schemas import ItemResult, MessageItem
from chatledger.messages import bulk
from chatledger.messages.service import NewMessage
from chatledger.server.deps import acting_for
from chatledger.tenants.caller import Caller


@dataclass(frozen=True, slots=True)
class MessageEntry:
    """A message item checked and its ids settled, before the write transaction, with
    the verdict it gets when appended in bulk made ready."""

    index: int
    item: MessageItem
    pending: bulk.Pending
    created: ItemResult


def entry(caller: Caller, index: int, item: MessageItem) -> MessageEntry:
    """Raises what storing the item would raise for bad input, before any write."""
    fields = item.model_dump(exclude={"kind", "run_id", "user_id"})
    pending = bulk.prepare(acting_for(caller, item.user_id), item.run_id, NewMessage(**fields))
    created = ItemResult(index=index, kind="message", id=item.id, status="created")
    return MessageEntry(index, item, pending, created)


# Stores one item on its own, in a savepoint, and answers its verdict.
StoreOne = Callable[[MessageEntry], Awaitable[ItemResult]]


async def store_group(
    session: AsyncSession, caller: Caller, group: list[MessageEntry], one: StoreOne
) -> dict[int, ItemResult]:
    """The verdicts of a group of message items, by item index."""
    known = await bulk.lookup(session, caller.project_id, [e.pending for e in group])
    claimed: set[str] = set()  # ids the group's earlier items use
    owners = dict(known.run_owners)

    def fresh(message: MessageEntry) -> bool:
        pending = message.pending
        actor, owner = pending.caller, owners.setdefault(pending.run_id, pending.caller.user_id)
        visible = actor.sees_all or owner == actor.user_id
        new = pending.id not in known.messages and pending.id not in claimed
        claimed.add(pending.id)
        return visible and new

    async def store(block: list[MessageEntry]) -> None:
        await bulk.store(session, [message.pending for message in block])

    return await blocks.in_blocks(session, group, fresh, store, one)
