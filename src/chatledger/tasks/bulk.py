"""Recording many ended tasks at once (a batch's task items: the model calls an app
uploads when it syncs what it ran offline): the row that `tasks.create` then
`tasks.finish` make for each, already ended, made for a whole group in a fixed handful
of statements. One at a time a task item cost a savepoint and some ten statements,
several through the ORM: ~600 items a second on SQLite, ~250 on PostgreSQL.

The group's stored runs are locked in id order and its new runs made with the group's
sums already in, its tasks inserted already ended and priced (`COPY` on PostgreSQL,
multi-row INSERTs on SQLite), each stored run's aggregates written once and the usage of
every task counted once (`usage.add`: a batch's at its end), all in the caller's
transaction. A task is counted as `tasks.end` counts it: into its run's task count only
when completed, its tokens and cost in any case, and into the day's usage by its status.

Only *fresh* tasks come here: `lookup` tells the caller which ids are stored and which
user messages stored tasks answer, and a task whose id is taken (a re-sync: a duplicate,
or a conflict) or that is a further attempt at a user message goes through
`tasks.create` and `tasks.finish` instead. Should the database disagree with what
`lookup` saw, `store` raises (`NotFresh`, `IntegrityError`) and the caller rolls the
group back and stores it one task at a time: the outcome is always the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.base import table_of
from chatledger.db.driver_rows import Columns
from chatledger.db.types import utcnow
from chatledger.errors import Conflict
from chatledger.ids import checked_id
from chatledger.interactions import bulk_runs
from chatledger.interactions import bulk_statements as statements
from chatledger.interactions.bulk import RUN_OWNERS, NotFresh, run_owner
from chatledger.interactions.bulk_rows import DriverValues
from chatledger.prices import service as prices
from chatledger.runs.service import name_from_message
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage
from chatledger.usage import service as usage

# What a synced task is recorded as having been made by (`tasks.NewTask.service`).
SERVICE = "sync"


class Pending(NamedTuple):
    """A task item checked as `tasks.create` and `tasks.finish` check it before
    writing, its ids settled."""

    caller: Caller
    run_id: str
    id: str
    provider: str
    model: str
    user_message_id: str | None
    status: str
    response_text: str
    tokens: TokenUsage
    error: dict[str, Any] | None
    cost_nano: int | None  # None: priced here
    ttft_ms: int | None
    total_ms: int | None
    created_at: datetime | None
    completed_at: datetime | None  # None: when it is stored


def checked(pending: Pending) -> Pending:
    """`pending`, its ids checked; raises what storing it one at a time raises for bad
    input, before any write."""
    checked_id(pending.id, "id")
    checked_id(pending.run_id, "run_id")
    if pending.user_message_id is not None:
        checked_id(pending.user_message_id, "user_message_id")
    ended, started = pending.completed_at, pending.created_at
    if ended and started and ended < started:
        raise Conflict("completed_at is before created_at", field="completed_at")
    return pending


@dataclass(frozen=True)
class Known:
    """What is already stored under the ids of a group."""

    tasks: frozenset[str]
    # User message ids that stored tasks answer (a new task for one is a further attempt).
    answered: frozenset[str]
    run_owners: dict[str, str]


async def lookup(session: AsyncSession, project_id: str, pendings: Sequence[Pending]) -> Known:
    run_ids = sorted({p.run_id for p in pendings})
    answering = [p.user_message_id for p in pendings if p.user_message_id is not None]
    return Known(
        tasks=await _TASK_IDS.present(session, project_id, [p.id for p in pendings]),
        answered=await _ANSWERED_IDS.present(session, project_id, answering),
        run_owners=dict(await RUN_OWNERS.rows(session, project_id, run_ids)),
    )


_TASK_IDS = statements.Lookup(table_of(Task).c.id)
_ANSWERED_IDS = statements.Lookup(table_of(Task).c.user_message_id)


async def store(session: AsyncSession, pendings: Sequence[Pending]) -> None:
    """Store fresh ended tasks (see the module docstring), in the caller's transaction."""
    project_id = pendings[0].caller.project_id
    now = utcnow()
    locked = await bulk_runs.locked(session, project_id, {p.run_id for p in pendings})
    first = bulk_runs.first_in_new_runs(pendings, locked)
    # As `runs.ensure` makes a run for a task: its caller's, made now, named by nothing.
    named = name_from_message("")
    created = bulk_runs.made(
        project_id, {run_id: (p.caller.user_id, named, now) for run_id, p in first.items()}
    )
    runs = {**created, **locked}
    owners = [run_owner(runs, p.caller, p.run_id) for p in pendings]
    project_prices = None
    if any(p.cost_nano is None for p in pendings):
        project_prices = await prices.for_project(session, project_id)
    deltas: dict[str, bulk_runs.RunDelta] = {}
    sums: dict[tuple[Any, ...], dict[str, int]] = {}
    rows: list[tuple[Any, ...]] = []
    values = DriverValues.of(session.get_bind().dialect)
    for p, owner in zip(pendings, owners, strict=True):
        ended_at = p.completed_at or p.created_at or now
        cost_nano, price_source = p.cost_nano, "client"
        if cost_nano is None:
            assert project_prices is not None
            price = project_prices.price(p.provider, p.model, p.tokens, ended_at)
            cost_nano, price_source = price.cost_nano, price.source
        delta = deltas.setdefault(p.run_id, bulk_runs.RunDelta())
        completed = p.status == "completed"
        delta.count_task(p.tokens.total, cost_nano, p.model, ended_at, completed=completed)
        key = (project_id, owner, ended_at.astimezone(UTC).date(), p.model)
        counters = sums.setdefault(key, dict.fromkeys(usage.COUNTERS, 0))
        for name, n in usage.increments(p.status, p.tokens, cost_nano).items():
            counters[name] += n
        rows.append(_row(project_id, p, owner, cost_nano, price_source, ended_at, now, values))
    for run_id, delta in deltas.items():
        runs[run_id].add(delta)
    if not await bulk_runs.create(session, created.values()):
        raise NotFresh("a run of the group was made meanwhile")
    try:
        columns = Columns(_COLUMNS, tuple(map(list, zip(*rows, strict=True))), frozenset())
        await statements.insert_rows(session, {table_of(Task): columns})
    except statements.IdTaken as exc:
        raise NotFresh(str(exc)) from exc
    await bulk_runs.write_back(session, locked.values())
    await usage.add(session, sums)


# The columns of an ended task's row (`tasks.new_row`, then `tasks.ending`'s).
_COLUMNS = (
    *("project_id", "id", "run_id", "user_id", "user_message_id", "attempt", "service"),
    *("task_name", "provider", "model", "request", "status", "response_text", "error"),
    *("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"),
    *("cache_write_tokens", "usage_estimated", "cost_nano", "price_source", "ttft_ms"),
    *("total_ms", "created_at", "updated_at", "heartbeat_at", "completed_at"),
)


def _row(
    project_id: str,
    p: Pending,
    owner: str,
    cost_nano: int | None,
    price_source: str | None,
    ended_at: datetime,
    now: datetime,
    values: DriverValues,
) -> tuple[Any, ...]:
    tokens, ended = p.tokens, values.timestamp(ended_at)
    return (
        *(project_id, p.id, p.run_id, owner, p.user_message_id, 1, SERVICE, None),
        *(p.provider, p.model, values.document({}), p.status, p.response_text),
        values.document(p.error),
        *(tokens.input_tokens, tokens.output_tokens, tokens.cached_tokens),
        *(tokens.reasoning_tokens, tokens.cache_write_tokens, values.boolean(tokens.estimated)),
        *(cost_nano, price_source, p.ttft_ms, p.total_ms),
        *(values.timestamp(p.created_at or now), ended, values.timestamp(now), ended),
    )
