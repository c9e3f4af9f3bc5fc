"""Recording many finished exchanges at once (batch ingest, offline sync): the rows that
`service.record` makes for one interaction, made for a whole group in a fixed handful of
statements instead of some twenty per interaction. The group's stored runs are locked
and its new runs made with the group's sums already in, its tasks inserted already
completed, its messages inserted, and each stored run's aggregates and each day's usage
moved once by the group's sums (a batch's usage at its end: usage/tally.py), all in the
caller's transaction. The rows themselves
(`build`: pricing, the row documents, their conversion for the driver) can be made
before it, as batch ingest does: on SQLite the write lock is the whole database's, and
it was held through that work (~30% of a group's time in the transaction). Only what
the locked runs decide is left for `store`: each message's position, and the rows
again for a run that turns out to be another user's.

Only *fresh* interactions come here: `lookup` tells the caller which ids are already
stored, and an interaction whose task or message ids are taken (a replay, an id sent
twice, a user message stored earlier) is recorded by `service.record` instead. A fresh
interaction's usage is counted with the insert of its completed task, which the primary
key lets happen once only. Should the database disagree with what `lookup` saw (another
transaction stored an id meanwhile) or a run turn out to be another user's, `store`
raises (`IntegrityError`, `NotFresh`) and the caller rolls the group back and records it
one interaction at a time: the outcome is always what `record` would have made.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db import driver_rows
from chatledger.db.base import table_of
from chatledger.db.types import utcnow
from chatledger.ids import checked_id
from chatledger.interactions import bulk_rows, bulk_runs
from chatledger.interactions import bulk_statements as statements
from chatledger.interactions.service import NewInteraction, ended_at
from chatledger.messages.models import Message
from chatledger.prices import service as prices
from chatledger.runs.models import Run
from chatledger.runs.service import name_from_message
from chatledger.tasks.models import Task
from chatledger.tasks.schemas import provider_and_model
from chatledger.tenants.caller import Caller
from chatledger.usage import service as daily_usage
from chatledger.usage.service import COUNTERS


class NotFresh(Exception):
    """The group cannot be stored in bulk after all; record it one at a time."""


class Pending(NamedTuple):
    """An interaction checked as `record` checks it before writing, its ids settled.
    (Made for every item of a batch: a NamedTuple is made in a third of the time of a
    frozen dataclass, whose fields are each set through `object.__setattr__`.)"""

    caller: Caller
    run_id: str
    new: NewInteraction
    provider: str
    model: str
    task_id: str
    user_message_id: str
    assistant_message_id: str
    ended_at: datetime

    @property
    def ids(self) -> tuple[str, str, str]:
        return (self.task_id, self.user_message_id, self.assistant_message_id)


def prepare(caller: Caller, run_id: str, new: NewInteraction) -> Pending:
    """Raises what `record` raises for bad input, in the same order, before any write."""
    provider, model = provider_and_model(new.model, new.provider)
    return Pending(
        caller=caller,
        run_id=checked_id(run_id, "run_id"),
        new=new,
        provider=provider,
        model=model,
        task_id=checked_id(new.id, "id"),
        user_message_id=checked_id(new.user_message_id, "user_message_id"),
        assistant_message_id=checked_id(new.assistant_message_id, "assistant_message_id"),
        ended_at=ended_at(new),
    )


@dataclass(frozen=True)
class Known:
    """What is already stored under the ids of a group."""

    tasks: frozenset[str]
    messages: frozenset[str]
    # User message ids that stored tasks answer (a new task for one is a further attempt).
    answered: frozenset[str]
    run_owners: dict[str, str]

    def is_fresh(self, pending: Pending) -> bool:
        task_id, user_message_id, assistant_message_id = pending.ids
        return (
            len(set(pending.ids)) == 3
            and task_id not in self.tasks
            and user_message_id not in self.messages
            and assistant_message_id not in self.messages
            and user_message_id not in self.answered
        )


async def lookup(session: AsyncSession, project_id: str, pendings: Sequence[Pending]) -> Known:
    task_ids = [p.task_id for p in pendings]
    message_ids = [i for p in pendings for i in (p.user_message_id, p.assistant_message_id)]
    user_message_ids = [p.user_message_id for p in pendings]
    run_ids = sorted({p.run_id for p in pendings})
    owners = await RUN_OWNERS.rows(session, project_id, run_ids)
    return Known(
        tasks=await _TASK_IDS.present(session, project_id, task_ids),
        messages=await MESSAGE_IDS.present(session, project_id, message_ids),
        answered=await _ANSWERED_IDS.present(session, project_id, user_message_ids),
        run_owners=dict(owners),
    )


_TASK_IDS = statements.Lookup(table_of(Task).c.id)
MESSAGE_IDS = statements.Lookup(table_of(Message).c.id)
_ANSWERED_IDS = statements.Lookup(table_of(Task).c.user_message_id)
RUN_OWNERS = statements.Lookup(table_of(Run).c.id, table_of(Run).c.user_id)


UsageKey = tuple[str, str, Any, str]  # (project, user, day, model): `usage.KEY`


@dataclass(frozen=True)
class Rows:
    """A group's rows as `store` inserts them, built by `build`: before the write
    transaction (batch ingest builds them before its runs are locked, so that other
    writers do not wait for this work), each message's position left to number once the
    runs' counts are locked."""

    pendings: Sequence[Pending]
    owners: tuple[str, ...]  # each interaction's run owner, as its rows have it
    now: datetime
    tasks: driver_rows.Columns
    messages: driver_rows.Columns  # `seq` numbered by `store`
    message_runs: list[str]  # each message's run, in order
    runs: dict[str, bulk_runs.RunDelta]
    usage: dict[UsageKey, dict[str, int]]

    def holds(self, pendings: Sequence[Pending]) -> bool:
        return len(pendings) == len(self.pendings) and all(
            map(operator.is_, pendings, self.pendings)
        )


def build(
    pendings: Sequence[Pending],
    owners: Sequence[str],
    project_prices: prices.ProjectPrices | None,
    now: datetime,
    dialect: Dialect,
) -> Rows:
    """The rows of fresh interactions whose runs belong to `owners` (one per pending);
    `project_prices` may be None when every interaction brings its cost."""
    project_id = pendings[0].caller.project_id
    rows = bulk_rows.GroupRows(project_id, now, bulk_rows.DriverValues.of(dialect))
    message_runs: list[str] = []
    runs: dict[str, bulk_runs.RunDelta] = {}
    usage: dict[UsageKey, dict[str, int]] = {}
    for p, owner in zip(pendings, owners, strict=True):
        new, tokens = p.new, p.new.usage
        cost_nano, price_source = new.cost_nano, "client"
        if cost_nano is None:
            assert project_prices is not None, "an interaction without its cost needs prices"
            price = project_prices.price(p.provider, p.model, tokens, p.ended_at)
            cost_nano, price_source = price.cost_nano, price.source
        asked_at = new.created_at or now
        rows.add(p, owner, cost_nano, price_source, asked_at)
        run = runs.setdefault(p.run_id, bulk_runs.RunDelta())
        run.count_message(new.prompt, asked_at)
        run.count_task(tokens.total, cost_nano, p.model, p.ended_at)
        run.count_message(new.response, p.ended_at)
        message_runs += (p.run_id, p.run_id)
        day = p.ended_at.astimezone(UTC).date()
        counters = usage.setdefault((project_id, owner, day, p.model), dict.fromkeys(COUNTERS, 0))
        counters["requests"] += 1
        counters["input_tokens"] += tokens.input_tokens
        counters["output_tokens"] += tokens.output_tokens
        counters["cached_tokens"] += tokens.cached_tokens
        counters["reasoning_tokens"] += tokens.reasoning_tokens
        counters["cost_nano"] += cost_nano or 0
    return Rows(
        pendings=pendings,
        owners=tuple(owners),
        now=now,
        tasks=rows.tasks(),
        messages=rows.messages(),
        message_runs=message_runs,
        runs=runs,
        usage=usage,
    )


def owned_by_callers(pendings: Sequence[Pending]) -> list[str]:
    """The owners `build` assumes before the runs are read: each interaction's caller,
    as when it creates its run or adds to one of its own (a batch's usual case)."""
    return [p.caller.user_id for p in pendings]


async def store(
    session: AsyncSession, pendings: Sequence[Pending], built: Rows | None = None
) -> None:
    """Store fresh interactions (see the module docstring), in the caller's transaction:
    their rows as `built` has them when it holds these interactions with the owners
    their runs have, else built here."""
    project_id = pendings[0].caller.project_id
    now = utcnow() if built is None else built.now
    locked = await bulk_runs.locked(session, project_id, {p.run_id for p in pendings})
    created = _runs_to_create(project_id, pendings, locked, now)
    runs = {**created, **locked}
    owners = tuple(run_owner(runs, p.caller, p.run_id) for p in pendings)
    if built is not None and not built.holds(pendings):
        raise ValueError("rows built for other interactions")
    rows = built
    if rows is None or rows.owners != owners:  # (an admin's items in a member's run)
        project_prices = await prices.for_project(session, project_id)
        rows = build(pendings, owners, project_prices, now, session.get_bind().dialect)
    # Each run's messages numbered on from its count as locked (none, for a run made
    # now), in the group's order; a new run is made with the group's sums already in.
    numbers = {
        run_id: itertools.count(runs[run_id].add(delta) + 1) for run_id, delta in rows.runs.items()
    }
    seq = [next(numbers[run_id]) for run_id in rows.message_runs]
    if not await bulk_runs.create(session, created.values()):
        # One made meanwhile by another transaction (or another user's, which row-level
        # security hides from a member) is not the group's to count into.
        raise NotFresh("a run of the group was made meanwhile")
    try:
        await statements.insert_rows(
            session,
            {table_of(Task): rows.tasks, table_of(Message): rows.messages.replaced("seq", seq)},
        )
    except statements.IdTaken as exc:
        raise NotFresh(str(exc)) from exc
    await bulk_runs.write_back(session, locked.values())
    await daily_usage.add(session, rows.usage)


def run_owner(runs: dict[str, bulk_runs.RunTotals], caller: Caller, run_id: str) -> str:
    """The owner of a run the caller may add to, among a group's `runs` (locked or made);
    NotFresh when it is not the caller's to add to."""
    run = runs.get(run_id)
    # Missing: another user's run, which row-level security hides from a member.
    if run is None or not (caller.sees_all or run.user_id == caller.user_id):
        raise NotFresh(f"run {run_id!r} is another user's")
    return run.user_id


def _runs_to_create(
    project_id: str,
    pendings: Sequence[Pending],
    stored: dict[str, bulk_runs.RunTotals],
    now: datetime,
) -> dict[str, bulk_runs.NewRun]:
    """The group's runs not stored yet, as the first interaction naming each would make
    it: its caller's, named after its prompt, empty until the group is counted in."""
    first = bulk_runs.first_in_new_runs(pendings, stored)
    return bulk_runs.made(
        project_id,
        {
            run_id: (p.caller.user_id, name_from_message(p.new.prompt), p.new.created_at or now)
            for run_id, p in first.items()
        },
    )
