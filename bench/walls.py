"""What the tenant wall costs on PostgreSQL: the same transactions as chatledger itself
(no caller bound, so no row-level security) and behind a caller's wall (one more
statement per transaction, and the policies evaluated on every row read).

A project of 200 runs with 50 messages each, of two users. Measured, each many times:
a transaction reading one run by its key, and one listing a run's messages, as the
project's owner (sees all: the policy is a comparison) and as a member (each message is
checked against its run's owner). PostgreSQL only: SQLite has no wall to measure.

    python -m bench.walls [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import select

from bench.common import Figure, arguments, fresh_database, header, note, report
from chatledger.db import walls
from chatledger.db.engine import Database
from chatledger.db.migrate import upgrade
from chatledger.messages import service as messages
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller

PROJECT = "bench"
RUNS, MESSAGES_PER_RUN = 200, 50
# The wall adds a round trip to a transaction of a few: a few tenths of a millisecond.
TARGET_RATIO = 1.5


async def seed(database: Database) -> None:
    now = datetime.now(UTC)
    async with database.transaction() as session:
        session.add_all(
            [
                Run(
                    project_id=PROJECT,
                    id=f"run-{n}",
                    user_id=("owner", "member")[n % 2],
                    name=f"run {n}",
                    created_at=now,
                    updated_at=now,
                )
                for n in range(RUNS)
            ]
        )
    for n in range(RUNS):
        async with database.transaction() as session:
            for m in range(MESSAGES_PER_RUN):
                await messages.append(
                    session,
                    Caller(PROJECT, "owner", sees_all=True),
                    f"run-{n}",
                    messages.NewMessage(role="user", content=f"message {m}"),
                )


async def timed_ms(work: Callable[[], Awaitable[object]], caller: Caller | None) -> float:
    with walls.acting_as(caller) if caller else contextlib.nullcontext():
        started = time.perf_counter()
        await work()
        return (time.perf_counter() - started) * 1000


async def measure(database: Database, times: int) -> None:
    owner = Caller(PROJECT, "owner", sees_all=True, key_kind="user")
    member = Caller(PROJECT, "member", role="member", key_kind="user")
    callers: dict[str, Caller | None] = {"none": None, "owner": owner, "member": member}

    async def get_run() -> object:
        async with database.reading() as session:
            stmt = select(Run).where(Run.project_id == PROJECT, Run.id == "run-1")
            return await session.scalar(stmt)

    async def list_messages() -> object:
        async with database.reading() as session:
            return await messages.list_messages(session, member, "run-1")

    async def list_runs() -> object:
        async with database.reading() as session:
            return await runs.list_runs(session, member, limit=50)

    for name, work in (
        ("get a run", get_run),
        ("list a run's 50 messages", list_messages),
        ("list 50 runs", list_runs),
    ):
        # Interleaved, so that whatever else the machine does weighs on all three alike.
        spent: dict[str, list[float]] = {who: [] for who in callers}
        for _ in range(times):
            for who, caller in callers.items():
                spent[who].append(await timed_ms(work, caller))
        baseline = statistics.median(spent["none"])
        for who in ("owner", "member"):
            value = statistics.median(spent[who])
            passed = value / baseline <= TARGET_RATIO
            report(
                Figure(f"{name}, as {who}", value, "ms", baseline, f"<= {TARGET_RATIO}x", passed)
            )


async def main() -> None:
    options = arguments(__doc__ or "")
    times = 200 if options.quick else 2000
    with fresh_database("postgresql") as target:
        database = Database(target.url)
        try:
            await upgrade(database)
            async with database.transaction() as session:
                await tenants.ensure_project(session, PROJECT)
            await seed(database)
            header(f"tenant wall, median per read transaction ({times} each; baseline: no wall)")
            await measure(database, times)
            note("baseline: chatledger's own transactions, which row-level security skips")
        finally:
            await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
