"""The interaction items of a batch, which is most of what an offline sync uploads: the
fresh ones stored together (`interactions.bulk`), the others one at a time, with the
verdict for each item that storing them one by one, in order, would give.

A run of consecutive interaction items is a group. Its items whose task is stored
already are replays: they write nothing, so they are answered after the rest. An item
that is neither fresh nor a replay (it reuses an id, or answers a user message stored
earlier) is recorded alone, at its place: the fresh items before it are stored first,
so positions in a run stay in upload order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.batch.schemas import InteractionItem, ItemResult
from chatledger.db.engine import Database
from chatledger.db.types import utcnow
from chatledger.interactions import bulk
from chatledger.prices import service as prices
from chatledger.server.deps import acting_for
from chatledger.tenants.caller import Caller
from chatledger.usage import tally as usage_tally


@dataclass(frozen=True, slots=True)
class Entry:
    """An interaction item checked and its ids settled, before the write transaction,
    with the verdict it gets when stored in bulk made ready."""

    index: int
    item: InteractionItem
    pending: bulk.Pending
    created: ItemResult


def entry(caller: Caller, index: int, item: InteractionItem) -> Entry:
    """Raises what recording the item would raise for bad input, before any write."""
    actor = acting_for(caller, item.user_id)
    pending = bulk.prepare(actor, item.run_id, item.new())
    # (pydantic-core's validating constructor is twice as fast as model_construct.)
    created = ItemResult(index=index, kind="interaction", id=item.id, status="created")
    return Entry(index, item, pending, created)


async def build(database: Database, caller: Caller, group: list[Entry]) -> bulk.Rows:
    """The rows of a group as storing it in bulk inserts them, built before the write
    transaction, as if every item were fresh and in a run of its own caller's: what
    other writers need not wait for (on SQLite the write lock is the database's). The
    project's prices are read only when an item brings no cost."""
    pendings = [entry.pending for entry in group]
    project_prices = None
    if any(p.new.cost_nano is None for p in pendings):
        async with database.reading() as session:
            project_prices = await prices.for_project(session, caller.project_id)
    owners = bulk.owned_by_callers(pendings)
    return bulk.build(pendings, owners, project_prices, utcnow(), database.write_engine.dialect)


# Stores one item on its own, in a savepoint, and answers its verdict.
StoreOne = Callable[[Entry], Awaitable[ItemResult]]


async def store_group(
    session: AsyncSession,
    caller: Caller,
    group: list[Entry],
    one: StoreOne,
    built: bulk.Rows | None = None,
) -> dict[int, ItemResult]:
    """The verdicts of a group of interaction items, by item index. `built`: the rows of
    the whole group (`build`), used when every item of it is fresh."""
    results: dict[int, ItemResult] = {}
    known = await bulk.lookup(session, caller.project_id, [e.pending for e in group])
    if _all_fresh(group, known):
        return await _store_block(session, group, one, built)
    claimed: set[str] = set()  # ids the group's earlier items use
    owners = dict(known.run_owners)
    block: list[Entry] = []
    replays: list[Entry] = []
    for entry in group:
        pending = entry.pending
        if pending.task_id in known.tasks:
            replays.append(entry)
            continue
        actor, owner = pending.caller, owners.setdefault(pending.run_id, pending.caller.user_id)
        visible = actor.sees_all or owner == actor.user_id
        if visible and known.is_fresh(pending) and claimed.isdisjoint(pending.ids):
            block.append(entry)
        else:
            results |= await _store_block(session, block, one)
            block = []
            results[entry.index] = await one(entry)
        claimed.update(pending.ids)
    whole = built if len(block) == len(group) else None
    results |= await _store_block(session, block, one, whole)
    for entry in replays:
        results[entry.index] = await one(entry)
    return results


def _all_fresh(group: list[Entry], known: bulk.Known) -> bool:
    """Whether the loop of `store_group` would put every item of the group in one block:
    nothing of it stored, no id used twice, one caller, who may add to every run. The
    usual upload, told in a few passes over the group, where the loop's steps cost ~1 µs
    an item while the write lock is held."""
    if not group or known.tasks or known.messages or known.answered:
        return False
    caller = group[0].pending.caller
    if any(entry.pending.caller is not caller for entry in group):
        return False  # (items acting for several users: whose runs they are matters)
    if not caller.sees_all and any(o != caller.user_id for o in known.run_owners.values()):
        return False
    ids = [id_ for entry in group for id_ in entry.pending.ids]
    return len(set(ids)) == len(ids)


async def _store_block(
    session: AsyncSession, block: list[Entry], one: StoreOne, built: bulk.Rows | None = None
) -> dict[int, ItemResult]:
    if not block:
        return {}
    try:
        async with usage_tally.savepoint(session):
            await bulk.store(session, [entry.pending for entry in block], built)
    except (bulk.NotFresh, IntegrityError):
        # Rolled back: the database knew better than the lookup. One at a time, then.
        return {entry.index: await one(entry) for entry in block}
    return {entry.index: entry.created for entry in block}
