"""HTTP route for daily usage: what was spent per day, model and user, and in total."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from chatledger.db.types import utcnow
from chatledger.errors import InvalidInput
from chatledger.ids import ID_PATTERN
from chatledger.server.deps import CallerDep, DatabaseDep
from chatledger.usage import service as usage
from chatledger.usage.schemas import DailyUsage, GroupBy, UsageCounts, UsageRow

router = APIRouter(tags=["usage"])

DEFAULT_DAYS = 30
MAX_DAYS = 366


@router.get("/v1/usage/daily", response_model=DailyUsage)
async def daily_usage(
    db: DatabaseDep,
    caller: CallerDep,
    start: Annotated[date | None, Query(alias="from", description="first day (UTC)")] = None,
    end: Annotated[date | None, Query(alias="to", description="last day, inclusive")] = None,
    group_by: GroupBy | None = None,
    user_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> DailyUsage:
    """Usage and cost per UTC day (a task counts on the day it ended), by user and model,
    or summed per model or per user with `group_by`; default the last 30 days. Members
    see their own usage; owners, admins and service keys all of the project's."""
    end = end or utcnow().date()
    # Near the first day there is (0001-01-01) the default range is shorter, not a crash.
    start = start or end - timedelta(days=min(DEFAULT_DAYS - 1, (end - date.min).days))
    if end < start:
        raise InvalidInput("to", "must not be before from")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidInput("from", f"the range is at most {MAX_DAYS} days")
    async with db.reading() as session:
        found = await usage.daily(session, caller, start, end, group_by=group_by, user_id=user_id)
    totals = UsageCounts(**{name: sum(row[name] for row in found) for name in usage.COUNTERS})
    rows = [UsageRow(**row) for row in found]
    return DailyUsage(start=start, end=end, group_by=group_by, rows=rows, totals=totals)
