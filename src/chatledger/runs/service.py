"""The rules for runs: who sees them, how they come to exist, and how their aggregates
move. Aggregates only ever move by the same statements that write the rows they sum, so
they cannot drift; `chatledger verify` proves it from the rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.base import table_of
from chatledger.db.loaded import refresh_if_loaded
from chatledger.db.prepared import Prepared
from chatledger.db.types import UtcTimeStamp, utcnow
from chatledger.db.upsert import insert_if_absent
from chatledger.errors import InvalidInput, NotFound
from chatledger.ids import checked_id
from chatledger.runs.models import Run
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller
from chatledger.usage import service as usage

NAME_LENGTH = 60
NAME_COLUMN_LENGTH = 200
PREVIEW_LENGTH = 200


def name_from_message(content: str) -> str:
    """A run's automatic name: the first line of its first message, cut at a word."""
    first_line = next((line for line in content.splitlines() if line.strip()), "")
    text = re.sub(r"\s+", " ", first_line).strip()
    if not text:
        return "New conversation"
    if len(text) <= NAME_LENGTH:
        return text
    cut = text[:NAME_LENGTH].rsplit(" ", 1)[0] or text[:NAME_LENGTH]
    return cut.rstrip(" ,.;:-") + "…"


def visible(stmt: Select[Any], caller: Caller) -> Select[Any]:
    stmt = stmt.where(Run.project_id == caller.project_id)
    if not caller.sees_all:
        stmt = stmt.where(Run.user_id == caller.user_id)
    return stmt


async def get(session: AsyncSession, caller: Caller, run_id: str) -> Run:
    run: Run | None = await session.scalar(visible(select(Run), caller).where(Run.id == run_id))
    if run is None:
        raise NotFound("run", run_id)
    return run


async def ensure(
    session: AsyncSession,
    caller: Caller,
    run_id: str | None,
    *,
    name: str | None = None,
    first_message: str | None = None,
    settings: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> tuple[Run, bool]:
    """The run with this id, created if absent; True when this call created it.

    A run that exists under another user of the project is not the caller's: 404.
    """
    run_id = checked_id(run_id, "run_id")
    values = _new_run(caller, run_id, name, first_message, settings, metadata, created_at)
    created = await insert_if_absent(session, Run, values)
    return await get(session, caller, run_id), created


def _new_run(
    caller: Caller,
    run_id: str,
    name: str | None,
    first_message: str | None,
    settings: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    created_at: datetime | None,
) -> dict[str, Any]:
    """The columns of a new run of the caller's, empty."""
    at = created_at or utcnow()
    if name is not None:
        # As `rename` does: a name longer than the column is a 500 on PostgreSQL.
        name = name.strip()[:NAME_COLUMN_LENGTH]
        if not name:
            raise InvalidInput("name", "must not be blank")
    return {
        "project_id": caller.project_id,
        "id": run_id,
        "user_id": caller.user_id,
        "name": name or name_from_message(first_message or ""),
        "name_source": "user" if name else "auto",
        "settings": settings or {},
        "variable_values": {},
        "metadata": metadata or {},
        "created_at": at,
        "updated_at": at,
    }


@dataclass(frozen=True)
class Opened:
    """The caller's run as a new message found it: the message counted in, the run's row
    locked until commit."""

    project_id: str
    id: str
    name: str
    user_id: str
    settings: dict[str, Any]
    created: bool
    seq: int  # the new message's position


async def open_for_message(
    session: AsyncSession,
    caller: Caller,
    run_id: str | None,
    content: str,
    at: datetime,
    *,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    absent: bool = False,
) -> Opened:
    """Count a new message into the caller's run, creating the run with it if absent (as
    `ensure` then `count_message`, in one statement either way when nothing races).
    `absent`: counting it in has just found no run of the caller's (engine/asked.py).

    The chat's first step: the run's columns come back from the write itself, so the
    turn needs no read of it. A run of another user of the project is a 404.
    """
    if (
        run_id is not None
        and not absent
        and (opened := await _count_in(session, caller, run_id, content, at))
    ):
        return opened
    run_id = checked_id(run_id, "run_id")
    values = _new_run(caller, run_id, name, content, settings, None, at)
    counted = {"message_count": 1, "last_message_at": at, "last_message_preview": _preview(content)}
    if await insert_if_absent(session, Run, {**values, **counted}):
        return Opened(
            caller.project_id,
            run_id,
            values["name"],
            caller.user_id,
            values["settings"],
            created=True,
            seq=1,
        )
    # Created meanwhile by a concurrent first message, or not the caller's run.
    if opened := await _count_in(session, caller, run_id, content, at):
        return opened
    raise NotFound("run", run_id)


async def _count_in(
    session: AsyncSession, caller: Caller, run_id: str, content: str, at: datetime
) -> Opened | None:
    stmt = _COUNT_MESSAGE if caller.sees_all else _COUNT_OWN_MESSAGE
    params = counting_params(caller, run_id, content, at)
    row = (await stmt.execute(session, params)).one_or_none()
    return None if row is None else counted_in(session, caller, run_id, row)


def counting_params(caller: Caller, run_id: str, content: str, at: datetime) -> dict[str, Any]:
    """The parameters of `COUNT_MESSAGE` and `COUNT_OWN_MESSAGE`."""
    return {
        "in_project": caller.project_id,
        "run": run_id,
        "owner": caller.user_id,
        **_counted(content, at),
    }


def counted_in(session: AsyncSession, caller: Caller, run_id: str, row: Any) -> Opened:
    """The run as counting a message into it returned it (`OPENED_COLUMNS`, by name), and
    the session's copy of the run, if it has one, brought up to date."""
    written = {column.name: getattr(row, column.name) for column in OPENED_COLUMNS}
    refresh_if_loaded(session, Run, (caller.project_id, run_id), written)
    return Opened(
        caller.project_id,
        run_id,
        row.name,
        row.user_id,
        row.settings,
        created=False,
        seq=row.message_count,
    )


async def list_runs(
    session: AsyncSession,
    caller: Caller,
    *,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
    query: str | None = None,
) -> list[Run]:
    """Newest activity first; `before` is the (updated_at, id) of the last row seen."""
    stmt = visible(select(Run), caller)
    if before is not None:
        at, run_id = before
        stmt = stmt.where(or_(Run.updated_at < at, (Run.updated_at == at) & (Run.id < run_id)))
    if query:
        stmt = stmt.where(func.lower(Run.name).contains(query.lower(), autoescape=True))
    stmt = stmt.order_by(Run.updated_at.desc(), Run.id.desc())
    if limit > 0:
        stmt = stmt.limit(limit)
    return list(await session.scalars(stmt))


async def rename(session: AsyncSession, caller: Caller, run_id: str, name: str) -> Run:
    name = name.strip()
    if not name:
        raise InvalidInput("name", "must not be blank")
    run = await get(session, caller, run_id)
    run.name = name[:NAME_COLUMN_LENGTH]
    run.name_source = "user"
    run.updated_at = utcnow()
    await session.flush()
    return run


async def delete_run(session: AsyncSession, caller: Caller, run_id: str) -> None:
    """Delete a run with its messages and tasks (their usage leaves usage_daily too)."""
    run = await get(session, caller, run_id)
    # Lock the tasks, then the run, in the order a task's terminal transition takes them
    # (task, run, daily usage). Otherwise the two deadlock on PostgreSQL; this way a
    # completion racing the delete either ends first, and is taken back out below, or
    # finds its task gone.
    where = (Task.project_id == run.project_id, Task.run_id == run.id)
    await session.execute(select(Task.id).where(*where).order_by(Task.id).with_for_update())
    await session.execute(
        select(Run.id).where(Run.project_id == run.project_id, Run.id == run.id).with_for_update()
    )
    await usage.forget_run(session, run.project_id, run.id)
    await session.execute(delete(Run).where(Run.project_id == run.project_id, Run.id == run.id))
    session.expunge(run)


def _latest(column: Any, at: Any) -> Any:
    """`column` moved forward to `at`, never back: history synced late (an old message, a
    task that ended earlier) is not new activity and must not sink the run in the list."""
    return case((column > at, column), else_=at)


# The statements a chat turn runs on its run, built once (Core, on the table: no ORM
# bookkeeping, no statement or cache key built per call) and run through the driver
# (db/prepared.py).
_runs = table_of(Run)
_at = bindparam("at", type_=UtcTimeStamp())
# (Parameters named apart from the columns: SQLAlchemy reserves those for SET values.)
_this_run = (_runs.c.project_id == bindparam("in_project"), _runs.c.id == bindparam("run"))
_count = update(_runs).values(
    message_count=_runs.c.message_count + 1,
    last_message_at=_latest(_runs.c.last_message_at, _at),
    last_message_preview=bindparam("preview"),
    updated_at=_latest(_runs.c.updated_at, _at),
)
# Each returns what it moved, so that a `Run` this session has loaded is kept up to date.
_counts = (_runs.c.message_count, _runs.c.last_message_at, _runs.c.last_message_preview)
OPENED_COLUMNS = (*_counts, _runs.c.updated_at, _runs.c.name, _runs.c.user_id, _runs.c.settings)
# A message counted into a run of the project, or of its owner only (`counting_params`;
# engine/asked.py runs them inside a turn's first statement on PostgreSQL).
COUNT_MESSAGE = _count.where(*_this_run)
COUNT_OWN_MESSAGE = COUNT_MESSAGE.where(_runs.c.user_id == bindparam("owner"))
_COUNT_MESSAGE = Prepared(COUNT_MESSAGE.returning(*OPENED_COLUMNS))
_COUNT_OWN_MESSAGE = Prepared(COUNT_OWN_MESSAGE.returning(*OPENED_COLUMNS))
_task_usage = {
    "task_count": _runs.c.task_count + bindparam("completed"),
    "total_tokens": _runs.c.total_tokens + bindparam("tokens"),
    "total_cost_nano": _runs.c.total_cost_nano + bindparam("cost_nano"),
    "last_model": bindparam("model"),
    "updated_at": _latest(_runs.c.updated_at, _at),
}
_usage_columns = (
    _runs.c.task_count,
    _runs.c.total_tokens,
    _runs.c.total_cost_nano,
    _runs.c.last_model,
    _runs.c.updated_at,
)
_ADD_TASK_USAGE = Prepared(
    update(_runs).where(*_this_run).values(**_task_usage).returning(*_usage_columns)
)
# The same, and the task's reply counted in as the run's next message (a chat turn's end:
# engine/answered.py runs it inside the turn's one statement, a CTE on PostgreSQL, a
# procedure's step on SQLite).
COUNT_TASK_AND_REPLY = (
    update(_runs)
    .where(*_this_run)
    .values(
        **_task_usage,
        message_count=_runs.c.message_count + 1,
        last_message_at=_latest(_runs.c.last_message_at, _at),
        last_message_preview=bindparam("preview"),
    )
)


async def count_message(
    session: AsyncSession, project_id: str, run_id: str, content: str, at: datetime
) -> int:
    """Count one new message into its run; returns the message's position (seq).

    The UPDATE takes the run's row lock, so concurrent appends to one run get distinct,
    gapless positions and message_count always equals the rows.
    """
    params = {"in_project": project_id, "run": run_id, **_counted(content, at)}
    row = (await _COUNT_MESSAGE.execute(session, params)).one_or_none()
    if row is None:
        raise NotFound("run", run_id)
    refresh_if_loaded(session, Run, (project_id, run_id), row._asdict())
    seq: int = row.message_count
    return seq


def _counted(content: str, at: datetime) -> dict[str, Any]:
    """The parameters of counting one more message into a run."""
    return {"at": at, "preview": _preview(content)}


def _preview(content: str) -> str:
    return content[:PREVIEW_LENGTH]


@dataclass(frozen=True)
class EndedTask:
    """A task that just reached a terminal state, as its run counts it; with `reply`,
    the task's answer, counted in as the run's next message."""

    project_id: str
    run_id: str
    completed: bool
    tokens: int
    cost_nano: int | None
    model: str
    at: datetime
    reply: str | None = None

    def params(self) -> dict[str, Any]:
        """The parameters of `add_task_usage`'s statement, and with `reply` of
        `COUNT_TASK_AND_REPLY`."""
        params = {
            "in_project": self.project_id,
            "run": self.run_id,
            "completed": 1 if self.completed else 0,
            "tokens": self.tokens,
            "cost_nano": self.cost_nano or 0,
            "model": self.model,
            "at": self.at,
        }
        return params if self.reply is None else {**params, **_counted(self.reply, self.at)}


async def add_task_usage(session: AsyncSession, ended: EndedTask) -> None:
    """Count a task that just reached a terminal state into its run, once."""
    written = (await _ADD_TASK_USAGE.execute(session, ended.params())).one_or_none()
    if written is not None:
        refresh_if_loaded(session, Run, (ended.project_id, ended.run_id), written._asdict())
