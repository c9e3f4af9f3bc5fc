"""Usage held back to the end of a transaction that writes many runs (a batch).

A transaction holds the rows it writes locked until it ends, and two that take the
same rows in opposite orders wait for each other: a deadlock, which PostgreSQL breaks by
rolling one of them back (503 busy). Every write takes its run before the day's usage
rows. A batch writes many runs, one item after another; had it counted each item's
usage as it went, it would hold a usage row while it waited for a later item's run, and
a single write holding that run would wait for the usage row (tests/runs/
test_run_locks.py). So a batch tallies its usage here and writes it once at its end,
after every run it writes (`usage.service.held_back`).

The tally follows the transaction's savepoints (`savepoint`): what an item rolled back
had counted is dropped with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

UsageKey = tuple[Any, ...]  # `usage.service.KEY`'s values

_TALLY = "chatledger_usage_tally"


class Tally:
    """What a transaction's tasks added to each usage row, in the order counted."""

    __slots__ = ("_counted",)

    def __init__(self) -> None:
        self._counted: list[tuple[UsageKey, Mapping[str, int]]] = []

    def add(self, key: UsageKey, increments: Mapping[str, int]) -> None:
        self._counted.append((key, increments))

    def sums(self) -> dict[UsageKey, dict[str, int]]:
        """Each row's increments, summed."""
        summed: dict[UsageKey, dict[str, int]] = {}
        for key, increments in self._counted:
            row = summed.setdefault(key, dict.fromkeys(increments, 0))
            for name, n in increments.items():
                row[name] = row.get(name, 0) + n
        return summed

    def _mark(self) -> int:
        return len(self._counted)

    def _undo_to(self, mark: int) -> None:
        del self._counted[mark:]


def held(session: AsyncSession) -> Tally | None:
    """The tally of `session`'s transaction, if its usage is held back."""
    tally: Tally | None = session.info.get(_TALLY)
    return tally


def hold(session: AsyncSession) -> Tally:
    tally = session.info[_TALLY] = Tally()
    return tally


def release(session: AsyncSession) -> None:
    session.info.pop(_TALLY, None)


@contextlib.asynccontextmanager
async def savepoint(session: AsyncSession) -> AsyncIterator[None]:
    """A savepoint (`begin_nested`) whose tallied usage is dropped if it is rolled back."""
    tally = held(session)
    mark = 0 if tally is None else tally._mark()
    try:
        async with session.begin_nested():
            yield
    except BaseException:
        if tally is not None:
            tally._undo_to(mark)
        raise
