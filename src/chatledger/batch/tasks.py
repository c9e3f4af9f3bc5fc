"""The task items of a batch (ended model calls an app uploads when it syncs what it ran
offline): the fresh ones stored together (`tasks.bulk`), the others one at a time, with
the verdict for each item that storing them one by one, in order, would give.

A run of consecutive task items is a group. An item that is not fresh (its id is stored
already or used by an earlier item of the group, it answers a user message that a stored
or earlier task answers, which makes it a further attempt, or its run is another user's)
is stored alone, at its place: the fresh items before it are stored first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.batch import blocks
from chatledger.batch.schemas import ItemResult, TaskItem
from chatledger.server.deps import acting_for
from chatledger.tasks import bulk
from chatledger.tasks.schemas import cost_nano, provider_and_model
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage


@dataclass(frozen=True, slots=True)
class TaskEntry:
    """A task item checked and its ids settled, before the write transaction, with the
    verdict it gets when stored in bulk made ready."""

    index: int
    item: TaskItem
    pending: bulk.Pending
    created: ItemResult


def entry(caller: Caller, index: int, item: TaskItem) -> TaskEntry:
    """Raises what storing the item would raise for bad input, before any write."""
    provider, model = provider_and_model(item.model, item.provider)
    pending = bulk.Pending(
        caller=acting_for(caller, item.user_id),
        run_id=item.run_id,
        id=item.id,
        provider=provider,
        model=model,
        user_message_id=item.user_message_id,
        status=item.status,
        response_text=item.response_text,
        tokens=item.usage.tokens() if item.usage else TokenUsage(),
        error=item.error.model_dump() if item.error else None,
        cost_nano=cost_nano(item.cost_usd),
        ttft_ms=item.ttft_ms,
        total_ms=item.total_ms,
        created_at=item.created_at,
        completed_at=item.completed_at or item.created_at,
    )
    created = ItemResult(index=index, kind="task", id=item.id, status="created")
    return TaskEntry(index, item, bulk.checked(pending), created)


# Stores one item on its own, in a savepoint, and answers its verdict.
StoreOne = Callable[[TaskEntry], Awaitable[ItemResult]]


async def store_group(
    session: AsyncSession, caller: Caller, group: list[TaskEntry], one: StoreOne
) -> dict[int, ItemResult]:
    """The verdicts of a group of task items, by item index."""
    known = await bulk.lookup(session, caller.project_id, [e.pending for e in group])
    claimed: set[str] = set()  # task ids earlier items use
    answered = set(known.answered)  # user messages that stored or earlier tasks answer
    owners = dict(known.run_owners)

    def fresh(task: TaskEntry) -> bool:
        pending = task.pending
        actor, owner = pending.caller, owners.setdefault(pending.run_id, pending.caller.user_id)
        visible = actor.sees_all or owner == actor.user_id
        answers = pending.user_message_id
        further = answers is not None and answers in answered  # attempt 2 or later
        new = pending.id not in known.tasks and pending.id not in claimed
        claimed.add(pending.id)
        if answers is not None:
            answered.add(answers)
        return visible and new and not further

    async def store(block: list[TaskEntry]) -> None:
        await bulk.store(session, [task.pending for task in block])

    return await blocks.in_blocks(session, group, fresh, store, one)
