"""Daily usage: what each user spent per UTC day and model, counted from tasks as they
end. A task counts on the day it ended; only the guarded terminal transition calls
`count_task`, so each task is counted once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import date
from typing import Any

from sqlalchemy import BigInteger, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.upsert import add_to_counters, insert_or_add
from chatledger.tasks.models import TERMINAL, Task
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage
from chatledger.usage import tally as usage_tally
from chatledger.usage.models import ProjectUsageDaily, UsageDaily

FAILED = ("failed", "interrupted")
COUNTERS = (
    "requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nano",
)
KEY = ("project_id", "user_id", "day", "model")
GROUPINGS = {"model": ("model",), "user": ("user_id",), None: ("user_id", "model")}


def increments(status: str, tokens: TokenUsage, cost_nano: int | None) -> dict[str, int]:
    """What an ended task adds to its usage row: COUNTERS, by name."""
    return {
        "requests": 1,
        "failed_requests": int(status in FAILED),
        "input_tokens": tokens.input_tokens,
        "output_tokens": tokens.output_tokens,
        "cached_tokens": tokens.cached_tokens,
        "reasoning_tokens": tokens.reasoning_tokens,
        "cost_nano": cost_nano or 0,
    }


def _increments(task: Task, sign: int = 1) -> dict[str, int]:
    counted = increments(task.status, task.tokens, task.cost_nano)
    return {name: sign * n for name, n in counted.items()}


def _key(task: Task) -> tuple[Any, ...]:
    """The task's usage row, as KEY's values."""
    assert task.completed_at is not None, "only ended tasks are counted"
    return (task.project_id, task.user_id, task.completed_at.date(), task.model)


async def count_task(session: AsyncSession, task: Task) -> None:
    if (tally := usage_tally.held(session)) is not None:
        tally.add(_key(task), _increments(task))
        return
    key = dict(zip(KEY, _key(task), strict=True))
    await add_to_counters(session, UsageDaily, key, _increments(task))


async def add(session: AsyncSession, sums: Mapping[tuple[Any, ...], Mapping[str, int]]) -> None:
    """Add each row's increments (`sums`, by KEY's values) in one statement, in the lock
    order; or to the tally, while the transaction holds its usage back."""
    if (tally := usage_tally.held(session)) is not None:
        for key, increments in sums.items():
            tally.add(key, increments)
        return
    if not sums:
        return
    ordered = sorted(sums, key=lock_order)
    rows = [dict(zip(KEY, key, strict=True)) | dict(sums[key]) for key in ordered]
    await session.execute(insert_or_add(session, UsageDaily, KEY, COUNTERS), rows)


@contextlib.asynccontextmanager
async def held_back(session: AsyncSession) -> AsyncIterator[None]:
    """Hold the transaction's usage back until the block ends, then write it at once
    (usage/tally.py): for a transaction that writes many runs, a batch."""
    tally = usage_tally.hold(session)
    try:
        yield
    finally:
        usage_tally.release(session)
    await add(session, tally.sums())


async def forget_run(session: AsyncSession, project_id: str, run_id: str) -> None:
    """Take a run's ended tasks back out of daily usage, before the run is deleted, so
    that usage_daily stays equal to the tasks that exist: one update per usage row, in
    the lock order."""
    ended = await session.scalars(
        select(Task).where(
            Task.project_id == project_id, Task.run_id == run_id, Task.status.in_(TERMINAL)
        )
    )
    taken: dict[tuple[Any, ...], dict[str, int]] = {}
    for task in ended:
        sums = taken.setdefault(_key(task), dict.fromkeys(COUNTERS, 0))
        for name, n in _increments(task, sign=-1).items():
            sums[name] += n
    for key in sorted(taken, key=lock_order):
        row = zip(KEY, key, strict=True)
        await session.execute(
            update(UsageDaily)
            .where(*(getattr(UsageDaily, name) == value for name, value in row))
            .values({name: getattr(UsageDaily, name) + n for name, n in taken[key].items()})
        )


def lock_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The order in which a transaction writing several usage rows takes them: by the
    project's totals row first (project, day, model: migration 0010 writes it with each
    usage row), then the user. Transactions that all take rows in one order never wait
    for each other in a circle (a deadlock)."""
    project_id, user_id, day, model = key
    return (project_id, day, model, user_id)


async def daily(
    session: AsyncSession,
    caller: Caller,
    start: date,
    end: date,
    *,
    group_by: str | None = None,
    user_id: str | None = None,
) -> list[dict[str, Any]]:
    """The caller's daily usage from `start` to `end` (inclusive), one row per day and
    user and model, or summed per day and model (`group_by="model"`) or per day and user
    (`"user"`). Members see their own usage; owners, admins and service keys the
    project's, or one user's when `user_id` is given."""
    names = ("day", *GROUPINGS[group_by], *COUNTERS)
    if group_by == "model" and caller.sees_all and user_id is None:
        # The project's sums are kept apart (migration 0010): its rows as they are.
        totals = (
            select(*(getattr(ProjectUsageDaily, name) for name in names))
            .where(
                ProjectUsageDaily.project_id == caller.project_id,
                ProjectUsageDaily.day.between(start, end),
            )
            .order_by(ProjectUsageDaily.day, ProjectUsageDaily.model)
        )
        return [dict(zip(names, row, strict=True)) for row in await session.execute(totals)]
    keys = [getattr(UsageDaily, name) for name in GROUPINGS[group_by]]
    stmt = select(
        UsageDaily.day,
        *keys,
        # PostgreSQL sums bigints as numeric: the driver would make a Decimal of each.
        *(cast(func.sum(getattr(UsageDaily, name)), BigInteger) for name in COUNTERS),
    ).where(UsageDaily.project_id == caller.project_id, UsageDaily.day.between(start, end))
    if not caller.sees_all:
        stmt = stmt.where(UsageDaily.user_id == caller.user_id)
    if user_id is not None:
        stmt = stmt.where(UsageDaily.user_id == user_id)
    stmt = stmt.group_by(UsageDaily.day, *keys).order_by(UsageDaily.day, *keys)
    # Rows as plain tuples: a project's 90 days are thousands of them.
    return [dict(zip(names, row, strict=True)) for row in await session.execute(stmt)]
