"""A database that cannot take a write right now is `Busy` (503 with Retry-After, which
the client retries), never an unexplained error: here a real PostgreSQL deadlock."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from chatledger import Busy, Ledger
from chatledger.runs import service as runs
from chatledger.runs.models import Run


async def test_a_deadlock_is_busy_and_the_other_transaction_commits(ledger: Ledger) -> None:
    if ledger.database.is_sqlite:
        pytest.skip("SQLite serialises write transactions: they cannot deadlock")
    async with ledger.database.transaction() as session:
        for run_id in ("a", "b"):
            await runs.ensure(session, ledger.caller, run_id)
    both_locked_one = asyncio.Barrier(2)

    async def bump(first: str, second: str) -> None:
        async with ledger.database.transaction() as session:
            for run_id in (first, second):
                await session.execute(
                    update(Run)
                    .where(Run.project_id == "local", Run.id == run_id)
                    .values(total_tokens=Run.total_tokens + 1)
                )
                if run_id == first:
                    await both_locked_one.wait()

    outcomes = await asyncio.gather(bump("a", "b"), bump("b", "a"), return_exceptions=True)

    assert sorted(type(o).__name__ for o in outcomes) == ["Busy", "NoneType"]
    busy = next(o for o in outcomes if isinstance(o, Busy))
    assert busy.retry_after > 0
    async with ledger.database.reading() as session:
        totals = {run.id: run.total_tokens for run in await runs.list_runs(session, ledger.caller)}
    assert totals == {"a": 1, "b": 1}  # the survivor's two bumps; the victim's rolled back
