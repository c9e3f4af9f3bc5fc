"""Daily usage: what each user spent per UTC day and model, counted from tasks as they
end. A task counts on the day it ended; only the guarded terminal transition calls
`count_task`, so each task is counted once."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import BigInteger, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.upsert import add_to_counters
from chatledger.tasks.models import TERMINAL, Task
from chatledger.tenants.caller import Caller
from chatledger.usage.models import UsageDaily

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
GROUPINGS = {"model": ("model",), "user": ("user_id",), None: ("user_id", "model")}


def _increments(task: Task, sign: int = 1) -> dict[str, int]:
    return {
        "requests": sign,
        "failed_requests": sign * (task.status in FAILED),
        "input_tokens": sign * task.input_tokens,
        "output_tokens": sign * task.output_tokens,
        "cached_tokens": sign * task.cached_tokens,
        "reasoning_tokens": sign * task.reasoning_tokens,
        "cost_nano": sign * (task.cost_nano or 0),
    }


def _key(task: Task) -> dict[str, object]:
    assert task.completed_at is not None, "only ended tasks are counted"
    return {
        "project_id": task.project_id,
        "user_id": task.user_id,
        "day": task.completed_at.date(),
        "model": task.model,
    }


async def count_task(session: AsyncSession, task: Task) -> None:
    await add_to_counters(session, UsageDaily, _key(task), _increments(task))


async def forget_run(session: AsyncSession, project_id: str, run_id: str) -> None:
    """Take a run's ended tasks back out of daily usage, before the run is deleted, so
    that usage_daily stays equal to the tasks that exist."""
    ended = await session.scalars(
        select(Task).where(
            Task.project_id == project_id, Task.run_id == run_id, Task.status.in_(TERMINAL)
        )
    )
    for task in ended:
        key = _key(task)
        decrements = _increments(task, sign=-1)
        await session.execute(
            update(UsageDaily)
            .where(*(getattr(UsageDaily, name) == value for name, value in key.items()))
            .values({name: getattr(UsageDaily, name) + n for name, n in decrements.items()})
        )


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
    names = ("day", *GROUPINGS[group_by], *COUNTERS)
    # Rows as plain tuples: a project's 90 days are thousands of them.
    return [dict(zip(names, row, strict=True)) for row in await session.execute(stmt)]
