"""Batch ingest and offline sync (DESIGN.md flow 3): a list of items — runs, messages,
ended tasks, interactions, trace entries — stored insert-only and idempotently by id.

Items are checked first (`check`: validation, ids settled) and the rows of their
interactions built (`build`), outside the write transaction, so that another request's
writes never wait for that work. Then each item runs in a savepoint of the request's one
transaction (`store`): an item that is refused (bad input, a conflict) is rolled back
alone and reported `rejected` with its reason; an item already stored is `duplicate`
and changes nothing. Usage is counted only by a task's single terminal transition, so
re-uploading history changes no totals. Consecutive interaction items, the bulk of a
sync, are stored together when they are new (batch/interactions.py), and so are
consecutive message items (batch/messages.py) and consecutive task items
(batch/tasks.py), with the same verdicts as one at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger import storable
from chatledger.batch import interactions as interaction_items
from chatledger.batch import messages as message_items
from chatledger.batch import tasks as task_items
from chatledger.batch.body import Upload
from chatledger.batch.interactions import Entry
from chatledger.batch.messages import MessageEntry
from chatledger.batch.schemas import (
    InteractionItem,
    Item,
    ItemResult,
    MessageItem,
    RunItem,
    TaskItem,
    TraceItem,
)
from chatledger.batch.tasks import TaskEntry
from chatledger.db.engine import Database, rolled_back_for_another
from chatledger.errors import Busy, ChatledgerError, Conflict, InvalidInput
from chatledger.interactions import bulk
from chatledger.interactions import service as interactions
from chatledger.messages import service as messages
from chatledger.runs import service as runs
from chatledger.server.deps import acting_for
from chatledger.tasks import service as tasks
from chatledger.tasks.schemas import cost_nano, provider_and_model
from chatledger.tenants.caller import Caller
from chatledger.traces import service as traces
from chatledger.usage import service as daily_usage
from chatledger.usage import tally as usage_tally

_ITEM = TypeAdapter[Item](Item)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checked:
    """An item that passed validation, ready to be stored."""

    index: int
    item: Item


# What checking makes of each item: ready to store, or already its verdict (rejected).
CheckResult = Entry | MessageEntry | TaskEntry | Checked | ItemResult
# The items stored in groups (in bulk where they are fresh), one kind to a group.
Grouped = Entry | MessageEntry | TaskEntry


def check(caller: Caller, upload: Upload) -> list[CheckResult]:
    """Each item validated, before the write transaction: the CPU work of a batch that
    other requests' writes need not wait for. Items the body's read validated already
    (`body.Upload.valid`) have their ids settled only."""
    if upload.valid is not None:
        return [_checked(caller, index, item) for index, item in enumerate(upload.valid)]
    checked: list[CheckResult] = []
    for index, raw in enumerate(upload.raw):
        try:
            # What a database cannot store (NUL, …) rejects this item alone (the server's
            # request-wide check leaves a batch's items to this loop).
            if upload.check_each:
                storable.check_json(raw, f"items.{index}")
        except InvalidInput as exc:
            # Not even its kind and id are echoed back when they are what is wrong.
            kind, item_id = (_echoable(raw.get(name)) for name in ("kind", "id"))
            checked.append(_rejected(index, kind, item_id, _error(exc)))
            continue
        try:
            item = _ITEM.validate_python(raw)
        except ValidationError as exc:
            kind, item_id = raw.get("kind"), raw.get("id")
            checked.append(_rejected(index, kind, item_id, _validation_error(exc)))
            continue
        checked.append(_checked(caller, index, item))
    return checked


def _checked(caller: Caller, index: int, item: Item) -> CheckResult:
    try:
        if isinstance(item, MessageItem):
            return message_items.entry(caller, index, item)
        if isinstance(item, TaskItem):
            return task_items.entry(caller, index, item)
    except ChatledgerError:
        return Checked(index, item)  # stored on its own, it is refused with the reason
    if not isinstance(item, InteractionItem):
        return Checked(index, item)
    try:
        return interaction_items.entry(caller, index, item)
    except ChatledgerError as exc:
        return _rejected(index, item.kind, item.id, _error(exc))


# A group's rows, by the index of its first item.
Built = dict[int, bulk.Rows]


async def build(database: Database, caller: Caller, checked: list[CheckResult]) -> Built:
    """The rows of each group of interaction items (`interaction_items.build`), before
    the write transaction: what storing them in bulk inserts when they are all fresh."""
    return {
        group[0].index: await interaction_items.build(database, caller, group)
        for group in _groups(checked)
    }


def _groups(checked: list[CheckResult]) -> list[list[Entry]]:
    """The interaction items stored together: consecutive, as `store` meets them (an
    item rejected by `check` is between none; any other item ends a group)."""
    groups: list[list[Entry]] = [[]]
    for checked_item in checked:
        if isinstance(checked_item, Entry):
            groups[-1].append(checked_item)
        elif not isinstance(checked_item, ItemResult) and groups[-1]:
            groups.append([])
    return [group for group in groups if group]


# Times a batch's transaction is run when PostgreSQL keeps rolling it back for another.
ATTEMPTS = 3


async def store_in_transaction(
    database: Database, caller: Caller, checked: list[CheckResult], built: Built | None = None
) -> list[ItemResult]:
    """`store` in a transaction of its own, run again when PostgreSQL rolled it back to
    break a deadlock with another writer. A batch takes the runs of its items one after
    another, so two batches (or a batch and a write that makes a run) can take two runs
    in opposite orders; the rolled-back one has left nothing, and runs again once the
    other has its runs. Nothing outside the database remembers an attempt."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with database.transaction() as session:
                return await store(session, caller, checked, built)
        except Busy as busy:
            if attempt == ATTEMPTS or not rolled_back_for_another(busy):
                raise
            log.warning("a batch was rolled back to break a deadlock; storing it again")
    raise AssertionError("unreachable")


async def store(
    session: AsyncSession, caller: Caller, checked: list[CheckResult], built: Built | None = None
) -> list[ItemResult]:
    """The verdict of each item, in order, storing those `check` let through; `built`:
    the groups' rows (`build`), else they are built here."""
    async with daily_usage.held_back(session):  # written after every run: usage/tally.py
        return await _store_items(session, caller, checked, built or {})


async def _store_items(
    session: AsyncSession, caller: Caller, checked: list[CheckResult], built: Built
) -> list[ItemResult]:
    results: dict[int, ItemResult] = {}
    group: list[Grouped] = []  # consecutive items of one kind, stored together

    async def one(entry: Grouped | Checked) -> ItemResult:
        return await _store_one(session, caller, entry.index, entry.item)

    async def store_group() -> None:
        interactions = [entry for entry in group if isinstance(entry, Entry)]
        messages = [entry for entry in group if isinstance(entry, MessageEntry)]
        tasks = [entry for entry in group if isinstance(entry, TaskEntry)]
        group.clear()
        if interactions:
            rows = built.get(interactions[0].index)
            stored = await interaction_items.store_group(session, caller, interactions, one, rows)
            results.update(stored)
        if messages:
            results.update(await message_items.store_group(session, caller, messages, one))
        if tasks:
            results.update(await task_items.store_group(session, caller, tasks, one))

    for index, checked_item in enumerate(checked):
        if isinstance(checked_item, ItemResult):
            results[index] = checked_item
        elif isinstance(checked_item, (Entry, MessageEntry, TaskEntry)):
            if group and type(group[0]) is not type(checked_item):
                await store_group()  # one kind to a group
            group.append(checked_item)
        else:
            await store_group()
            results[index] = await one(checked_item)
    await store_group()
    return [results[index] for index in range(len(checked))]


async def _store_one(session: AsyncSession, caller: Caller, index: int, item: Item) -> ItemResult:
    """Store one item in a savepoint of its own: if it is refused, it alone is undone."""
    try:
        async with usage_tally.savepoint(session):
            created = await _store(session, acting_for(caller, item.user_id), item)
    except ChatledgerError as exc:
        return _rejected(index, item.kind, item.id, _error(exc))
    status = "created" if created else "duplicate"
    return ItemResult(index=index, kind=item.kind, id=_id_of(item), status=status)


def _error(exc: ChatledgerError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "details": exc.details}


async def _store(session: AsyncSession, caller: Caller, item: Item) -> bool:
    """Store one item; True when it was new."""
    if isinstance(item, RunItem):
        _, created = await runs.ensure(
            session,
            caller,
            item.id,
            name=item.name,
            settings=item.settings,
            metadata=item.metadata,
            created_at=item.created_at,
        )
        return created
    if isinstance(item, MessageItem):
        fields = item.model_dump(exclude={"kind", "run_id", "user_id"})
        await runs.ensure(session, caller, item.run_id, first_message=item.content)
        _, created = await messages.append(
            session, caller, item.run_id, messages.NewMessage(**fields)
        )
        return created
    if isinstance(item, TaskItem):
        return await _store_task(session, caller, item)
    if isinstance(item, InteractionItem):
        new = item.new()
        _, created = await interactions.record(session, caller, item.run_id, new)
        return created
    saved = await traces.store(
        session, caller, item.thread_id, _entries(item), name=item.name, trace_id=item.id
    )
    return saved.created or bool(saved.entries.created or saved.entries.updated)


async def _store_task(session: AsyncSession, caller: Caller, item: TaskItem) -> bool:
    provider, model = provider_and_model(item.model, item.provider)
    task, created = await tasks.create(
        session,
        caller,
        tasks.NewTask(
            id=item.id,
            run_id=item.run_id,
            model=model,
            provider=provider,
            user_message_id=item.user_message_id,
            service="sync",
            created_at=item.created_at,
        ),
    )
    if not created:
        return False  # insert-only: what is stored stays as it is
    if item.completed_at and item.created_at and item.completed_at < item.created_at:
        raise Conflict("completed_at is before created_at", field="completed_at")
    await tasks.finish(
        session,
        caller,
        task.id,
        tasks.Outcome(
            status=item.status,
            response_text=item.response_text,
            usage=item.usage.tokens() if item.usage else None,
            error=item.error.model_dump() if item.error else None,
            cost_nano=cost_nano(item.cost_usd),
            ttft_ms=item.ttft_ms,
            total_ms=item.total_ms,
            completed_at=item.completed_at or item.created_at,
        ),
    )
    return True


def _entries(item: TraceItem) -> list[traces.NewEntry]:
    return [traces.NewEntry(**entry.model_dump()) for entry in item.entries]


def _id_of(item: Item) -> str | None:
    return item.thread_id if isinstance(item, TraceItem) else item.id


def _echoable(value: Any) -> Any:
    try:
        storable.check_json(value)
    except InvalidInput:
        return None
    return value


def _rejected(index: int, kind: Any, item_id: Any, error: dict[str, Any]) -> ItemResult:
    return ItemResult(
        index=index,
        kind=kind if isinstance(kind, str) else None,
        id=item_id if isinstance(item_id, str) else None,
        status="rejected",
        error=error,
    )


def _validation_error(exc: ValidationError) -> dict[str, Any]:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]
    first = problems[0]
    return {
        "code": "invalid",
        "message": f"{first['field']}: {first['message']}",
        "details": {"errors": problems},
    }
