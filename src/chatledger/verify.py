"""`chatledger verify`: recompute every aggregate from the rows it sums and name each
difference; with `repair`, write the recomputed values (for data written around
chatledger, e.g. by hand or by an older tool)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import BigInteger, case, cast, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.base import table_of
from chatledger.messages.models import Message
from chatledger.runs.models import Run
from chatledger.tasks.models import TERMINAL, Task
from chatledger.usage.models import ProjectUsageDaily, UsageDaily
from chatledger.usage.service import COUNTERS, FAILED

RUN_FIELDS = ("task_count", "message_count", "total_tokens", "total_cost_nano")
USAGE_FIELDS = COUNTERS  # the counters of both daily usage tables


@dataclass(frozen=True)
class Drift:
    table: str
    key: tuple[Any, ...]
    field: str
    stored: int
    expected: int

    def __str__(self) -> str:
        key = "/".join(str(part) for part in self.key)
        return f"{self.table} {key}: {self.field} is {self.stored}, rows say {self.expected}"


async def find_drift(session: AsyncSession) -> list[Drift]:
    return await _run_drift(session) + await _usage_drift(session) + await _totals_drift(session)


async def repair(session: AsyncSession) -> list[Drift]:
    """Write the recomputed values wherever they differ; returns what was changed."""
    drifts = await find_drift(session)
    for drift in drifts:
        if drift.table == "runs":
            project_id, run_id = drift.key
            await session.execute(
                update(Run)
                .where(Run.project_id == project_id, Run.id == run_id)
                .values({drift.field: drift.expected})
            )
    usage_keys = {d.key for d in drifts if d.table == "usage_daily"}
    if usage_keys:
        await _rewrite(session, UsageDaily, usage_keys, await _usage_from_tasks(session))
    # The usage rows' repair moved the project's totals with them (migration 0010's
    # triggers): what differs now is drift of the totals themselves.
    if totals_keys := {d.key for d in await _totals_drift(session)}:
        await _rewrite(session, ProjectUsageDaily, totals_keys, await _totals_from_usage(session))
    return drifts


async def _rewrite(
    session: AsyncSession,
    model: type[UsageDaily] | type[ProjectUsageDaily],
    keys: set[tuple[Any, ...]],
    expected: Mapping[Any, list[int]],
) -> None:
    """Each key's row as recomputed: replaced, or gone when nothing backs it."""
    names = [column.name for column in table_of(model).primary_key.columns]
    for key in keys:
        where = [getattr(model, name) == value for name, value in zip(names, key, strict=True)]
        await session.execute(delete(model).where(*where))
        if key in expected:
            values = dict(zip(USAGE_FIELDS, expected[key], strict=True))
            await session.execute(
                insert(model).values(**dict(zip(names, key, strict=True)), **values)
            )


async def _run_drift(session: AsyncSession) -> list[Drift]:
    tasks = (
        select(
            Task.project_id,
            Task.run_id,
            func.sum(case((Task.status == "completed", 1), else_=0)).label("task_count"),
            func.sum(Task.input_tokens + Task.output_tokens).label("total_tokens"),
            func.sum(func.coalesce(Task.cost_nano, 0)).label("total_cost_nano"),
        )
        .where(Task.status.in_(TERMINAL))
        .group_by(Task.project_id, Task.run_id)
        .subquery()
    )
    counted = (
        select(Message.project_id, Message.run_id, func.count().label("message_count"))
        .group_by(Message.project_id, Message.run_id)
        .subquery()
    )
    stmt = (
        select(
            Run.project_id,
            Run.id,
            *(getattr(Run, name) for name in RUN_FIELDS),
            func.coalesce(tasks.c.task_count, 0),
            func.coalesce(counted.c.message_count, 0),
            func.coalesce(tasks.c.total_tokens, 0),
            func.coalesce(tasks.c.total_cost_nano, 0),
        )
        .outerjoin(tasks, (tasks.c.project_id == Run.project_id) & (tasks.c.run_id == Run.id))
        .outerjoin(counted, (counted.c.project_id == Run.project_id) & (counted.c.run_id == Run.id))
        .order_by(Run.project_id, Run.id)
    )
    drifts = []
    for row in await session.execute(stmt):
        project_id, run_id, *values = row
        stored, expected = values[: len(RUN_FIELDS)], values[len(RUN_FIELDS) :]
        for name, have, want in zip(RUN_FIELDS, stored, expected, strict=True):
            if int(have) != int(want):
                drifts.append(Drift("runs", (project_id, run_id), name, int(have), int(want)))
    return drifts


UsageKey = tuple[str, str, date, str]


async def _usage_from_tasks(session: AsyncSession) -> dict[UsageKey, list[int]]:
    """Daily usage summed in Python: the UTC day of a timestamp is spelled differently on
    each database, and this is a maintenance command, not a hot path."""
    totals: dict[UsageKey, list[int]] = defaultdict(lambda: [0] * len(USAGE_FIELDS))
    stmt = select(
        Task.project_id,
        Task.user_id,
        Task.completed_at,
        Task.model,
        Task.status,
        Task.input_tokens,
        Task.output_tokens,
        Task.cached_tokens,
        Task.reasoning_tokens,
        Task.cost_nano,
    ).where(Task.status.in_(TERMINAL))
    async for row in await session.stream(stmt.execution_options(yield_per=1000)):
        project_id, user_id, completed_at, model, status, *tokens, cost_nano = row
        counts = [1, int(status in FAILED), *tokens, cost_nano or 0]
        assert completed_at is not None, "a terminal task has an end time"
        total = totals[(project_id, user_id, completed_at.date(), model)]
        for index, n in enumerate(counts):
            total[index] += n
    return dict(totals)


async def _usage_drift(session: AsyncSession) -> list[Drift]:
    stored = await _stored(session, UsageDaily)
    return _compare("usage_daily", stored, await _usage_from_tasks(session))


async def _stored(
    session: AsyncSession, model: type[UsageDaily] | type[ProjectUsageDaily]
) -> dict[tuple[Any, ...], list[int]]:
    """A usage table's counters by key, read as plain rows: never the session's objects,
    which a repair earlier in the same transaction (or its triggers) may have outdated."""
    key = [getattr(model, column.name) for column in table_of(model).primary_key.columns]
    found = await session.execute(select(*key, *(getattr(model, n) for n in USAGE_FIELDS)))
    return {tuple(row[: len(key)]): list(row[len(key) :]) for row in found}


def _compare(
    table: str, stored: Mapping[Any, list[int]], expected: Mapping[Any, list[int]]
) -> list[Drift]:
    """Each counter of each key that differs; a key missing on one side counts zero."""
    zero = [0] * len(USAGE_FIELDS)
    drifts = []
    for key in sorted(set(expected) | set(stored)):
        have, want = stored.get(key, zero), expected.get(key, zero)
        for name, a, b in zip(USAGE_FIELDS, have, want, strict=True):
            if a != b:
                drifts.append(Drift(table, key, name, a, b))
    return drifts


TotalsKey = tuple[str, date, str]


async def _totals_from_usage(session: AsyncSession) -> dict[TotalsKey, list[int]]:
    """`project_usage_daily` as it should be: `usage_daily` summed over users."""
    key = (UsageDaily.project_id, UsageDaily.day, UsageDaily.model)
    sums = (cast(func.sum(getattr(UsageDaily, name)), BigInteger) for name in USAGE_FIELDS)
    found = await session.execute(select(*key, *sums).group_by(*key))
    return {(project_id, day, model): list(values) for project_id, day, model, *values in found}


async def _totals_drift(session: AsyncSession) -> list[Drift]:
    stored = await _stored(session, ProjectUsageDaily)
    return _compare("project_usage_daily", stored, await _totals_from_usage(session))
