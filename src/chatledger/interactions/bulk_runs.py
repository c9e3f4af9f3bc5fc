"""The runs of a group of interactions stored in bulk (`interactions.bulk`): what the
group adds to each (`RunDelta`), the runs stored already, locked and counted into and
written back once (`RunTotals`, `locked`, `write_back`), and the runs the group makes,
inserted with its sums already in (`NewRun`, `made`, `create`), so that a batch of
interactions in new runs updates no run. Groups of messages and of ended tasks stored in
bulk (`messages.bulk`, `tasks.bulk`) count into their runs the same way."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db import loaded
from chatledger.db.base import table_of
from chatledger.interactions import bulk_statements as statements
from chatledger.runs.models import Run
from chatledger.runs.service import PREVIEW_LENGTH


@dataclass
class RunDelta:
    """What a group adds to one run, in the order of its interactions: as
    `runs.count_message` and `runs.add_task_usage` would move the run, summed."""

    messages: int = 0
    tasks: int = 0
    tokens: int = 0
    cost_nano: int = 0
    last_message_at: datetime | None = None
    last_message_preview: str | None = None
    last_model: str | None = None
    updated_at: datetime | None = None

    def count_message(self, content: str, at: datetime) -> None:
        self.messages += 1
        self.last_message_at = _later(self.last_message_at, at)
        self.last_message_preview = content[:PREVIEW_LENGTH]
        self.updated_at = _later(self.updated_at, at)

    def count_task(
        self,
        tokens: int,
        cost_nano: int | None,
        model: str,
        at: datetime,
        completed: bool = True,
    ) -> None:
        """An ended task: into the run's task count only when `completed`, as
        `runs.add_task_usage` counts it; its tokens, cost and model in any case."""
        self.tasks += completed
        self.tokens += tokens
        self.cost_nano += cost_nano or 0
        self.last_model = model
        self.updated_at = _later(self.updated_at, at)


def _later(known: datetime | None, at: datetime) -> datetime:
    """Times only move forward."""
    return at if known is None else max(known, at)


@dataclass
class RunTotals:
    """A run's aggregates as locked, moved in memory by the group, written back once."""

    project_id: str
    id: str
    user_id: str
    message_count: int
    task_count: int
    total_tokens: int
    total_cost_nano: int
    last_message_at: datetime | None
    updated_at: datetime
    last_message_preview: str | None = None
    last_model: str | None = None

    # The columns written back (`_WRITE_BACK`).
    WRITTEN: ClassVar[tuple[str, ...]] = (
        "message_count",
        "task_count",
        "total_tokens",
        "total_cost_nano",
        "last_message_at",
        "last_message_preview",
        "last_model",
        "updated_at",
    )

    def add(self, delta: RunDelta) -> int:
        """The group's messages and tasks counted in; answers the message count before
        them (the group's first message comes next)."""
        before = self.message_count
        self.message_count += delta.messages
        self.task_count += delta.tasks
        self.total_tokens += delta.tokens
        self.total_cost_nano += delta.cost_nano
        if delta.last_message_at is not None:
            self.last_message_at = _later(self.last_message_at, delta.last_message_at)
        if delta.messages:
            self.last_message_preview = delta.last_message_preview
        if delta.last_model is not None:  # (a failed task's model is the last too)
            self.last_model = delta.last_model
        if delta.updated_at is not None:
            self.updated_at = max(self.updated_at, delta.updated_at)
        return before

    def written(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.WRITTEN}


# One empty document for every new run's row: made JSON once (`db.driver_rows`).
_NOTHING: dict[str, Any] = {}


@dataclass
class NewRun(RunTotals):
    """A run the group makes: inserted once its sums are in, where an existing one is
    locked, counted into and written back."""

    name: str = ""
    created_at: datetime | None = None

    def row(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "id": self.id,
            "user_id": self.user_id,
            "name": self.name,
            "name_source": "auto",
            "settings": _NOTHING,
            "variable_values": _NOTHING,
            "metadata": _NOTHING,
            "created_at": self.created_at,
            **self.written(),
        }


class _InARun(Protocol):
    @property
    def run_id(self) -> str: ...


InARun = TypeVar("InARun", bound=_InARun)


def first_in_new_runs(items: Iterable[InARun], stored: Collection[str]) -> dict[str, InARun]:
    """The first of the group's items naming each run not `stored` yet, by run id: the
    one that makes the run when the items are stored one at a time."""
    first: dict[str, InARun] = {}
    for item in items:
        if item.run_id not in stored:
            first.setdefault(item.run_id, item)
    return first


def made(project_id: str, runs: dict[str, tuple[str, str, datetime]]) -> dict[str, NewRun]:
    """The runs a group makes, by id, from each one's (owner, name, when made): empty
    until the group is counted in, in id order (the order `create` inserts them in)."""
    return {
        run_id: NewRun(
            project_id,
            run_id,
            owner,
            message_count=0,
            task_count=0,
            total_tokens=0,
            total_cost_nano=0,
            last_message_at=None,
            updated_at=at,
            name=name,
            created_at=at,
        )
        for run_id, (owner, name, at) in sorted(runs.items())
    }


async def locked(
    session: AsyncSession, project_id: str, run_ids: Collection[str]
) -> dict[str, RunTotals]:
    """Those of the runs stored already, locked in id order: the one lock order of run
    rows, whoever writes several, so that concurrent groups cannot deadlock."""
    return {
        row.id: RunTotals(project_id, *row)
        for row in await _LOCKED_RUNS.rows(session, project_id, list(run_ids))
    }


async def create(session: AsyncSession, runs: Iterable[NewRun]) -> bool:
    """Insert the new runs with their sums, in id order; False when one of them was
    stored already (made meanwhile by another transaction): nothing is then theirs to
    count into, and the caller takes the transaction back."""
    rows = [run.row() for run in runs]
    return not rows or await statements.insert_new(session, Run, rows) == len(rows)


async def write_back(session: AsyncSession, runs: Iterable[RunTotals]) -> None:
    """The locked runs' aggregates, as the group moved them."""
    written = {(run.project_id, run.id): run.written() for run in runs}
    if not written:  # every run of the group made by it, its sums in
        return
    await session.execute(
        _WRITE_BACK,
        [{"in_project": key[0], "run": key[1], **values} for key, values in written.items()],
    )
    # A run loaded by an item of the batch stored on its own, earlier, must not go stale.
    for key, values in written.items():
        loaded.refresh_if_loaded(session, Run, key, values)


_runs = table_of(Run)
_LOCKED_RUNS = statements.Lookup(
    _runs.c.id,
    _runs.c.user_id,
    _runs.c.message_count,
    _runs.c.task_count,
    _runs.c.total_tokens,
    _runs.c.total_cost_nano,
    _runs.c.last_message_at,
    _runs.c.updated_at,
    # Written back as they are when the group does not move them (a group of messages
    # leaves the last model as it was).
    _runs.c.last_message_preview,
    _runs.c.last_model,
    locking=True,
)
# Built once, run with a parameter set per run: SQLAlchemy's ORM bulk UPDATE by primary
# key cost ~100 µs a run, sorting out per row what to set and how.
_WRITE_BACK = (
    update(_runs)
    .where(_runs.c.project_id == bindparam("in_project"), _runs.c.id == bindparam("run"))
    .values({name: bindparam(name) for name in RunTotals.WRITTEN})
)
