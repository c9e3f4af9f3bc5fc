"""The rules for tasks: created before the model is called, progress while it streams,
and exactly one transition into a terminal state.

That transition is the only place usage is counted. It is a guarded UPDATE
(`WHERE status NOT IN terminal`), and the run's aggregates and `usage_daily` move in the
same transaction only when that UPDATE changed a row, so a replayed or concurrent
completion can never count a task twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, func, literal_column, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.base import table_of
from chatledger.db.engine import on_postgresql
from chatledger.db.loaded import as_loaded
from chatledger.db.prepared import Prepared
from chatledger.db.types import UtcTimeStamp, utcnow
from chatledger.db.upsert import insert_if_absent
from chatledger.errors import Conflict, InvalidInput, NotFound
from chatledger.ids import checked_id
from chatledger.prices import service as prices
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks.models import LIVE, TERMINAL, Task, token_columns
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage
from chatledger.usage import service as usage


@dataclass
class NewTask:
    run_id: str | None
    model: str
    provider: str
    id: str | None = None
    user_message_id: str | None = None
    service: str | None = None
    task_name: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    # Synced history keeps its own time; default now.
    created_at: datetime | None = None


@dataclass
class Outcome:
    """What a terminal transition records. None means "not reported"."""

    status: str
    response_text: str | None = None
    usage: TokenUsage | None = None
    error: dict[str, Any] | None = None
    # A cost the caller computed itself; otherwise it is priced here from the usage.
    cost_nano: int | None = None
    ttft_ms: int | None = None
    total_ms: int | None = None
    completed_at: datetime | None = None
    # The sweeper's guard: end the task only if it has sent no heartbeat since then.
    silent_since: datetime | None = None


def _visible(caller: Caller) -> Any:
    condition = Task.project_id == caller.project_id
    if not caller.sees_all:
        condition = condition & (Task.user_id == caller.user_id)
    return condition


async def get(session: AsyncSession, caller: Caller, task_id: str, *, fresh: bool = False) -> Task:
    """The caller's task; `fresh` reads it again even if this session has a copy (which
    may predate another transaction's change to it)."""
    stmt = select(Task).where(_visible(caller), Task.id == task_id)
    if fresh:
        stmt = stmt.execution_options(populate_existing=True)
    task = await session.scalar(stmt)
    if task is None:
        raise NotFound("task", task_id)
    return task


async def list_for_run(session: AsyncSession, caller: Caller, run_id: str) -> list[Task]:
    run = await runs.get(session, caller, run_id)
    stmt = (
        select(Task)
        .where(Task.project_id == run.project_id, Task.run_id == run.id)
        .order_by(Task.created_at, Task.id)
    )
    return list(await session.scalars(stmt))


async def answering(session: AsyncSession, run: Run, message_id: str) -> list[Task]:
    """The tasks (attempts) answering a message of `run`, wherever they were created: a
    task may name a message of another run of the same owner as the one it answers."""
    stmt = (
        select(Task)
        .where(
            Task.project_id == run.project_id,
            Task.user_message_id == message_id,
            # Only the owner's own: another member naming this id must not block it.
            Task.user_id == run.user_id,
        )
        .order_by(Task.created_at, Task.id)
    )
    return list(await session.scalars(stmt))


async def create(
    session: AsyncSession, caller: Caller, new: NewTask, run: Run | None = None
) -> tuple[Task, bool]:
    """Create a task (its run ensured, unless the caller passes the run it just ensured);
    True when this call created it.

    Creating the same task id again returns the stored task, so a client may retry the
    call; an id already used for another run is a conflict.
    """
    task_id = checked_id(new.id, "id")
    if run is None or run.id != new.run_id:
        run, _ = await runs.ensure(session, caller, new.run_id)
    created = await insert_row(session, await new_row(session, run, new, task_id))
    task = await get(session, caller, task_id)
    if not created and task.run_id != run.id:
        raise Conflict(f"task {task_id!r} belongs to another run", id=task_id)
    return task, created


class RunOfTask(Protocol):
    """What a new task takes from its run (a `Run`, or the chat's `runs.Opened`)."""

    @property
    def project_id(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def user_id(self) -> str: ...


async def insert_row(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Insert a task's row (`new_row`'s) unless its id exists; True when this call did."""
    return await insert_if_absent(session, Task, row)


async def new_row(
    session: AsyncSession,
    run: RunOfTask,
    new: NewTask,
    task_id: str,
    *,
    first_attempt: bool = False,
) -> dict[str, Any]:
    """A new task's row, `pending`, by column name, its attempt numbered. Attempts of a
    message are counted under a lock held until commit (`_serialize_attempts`), so the
    row is for this transaction to insert. `first_attempt` says that no task can name
    the user message yet (its id was made just now), so there is nothing to count."""
    if not new.model:
        raise InvalidInput("model", "is required")
    attempt = 1
    if new.user_message_id is not None and not first_attempt:
        await _serialize_attempts(session, run.project_id, new.user_message_id)
        previous = await session.scalar(
            select(func.count())
            .select_from(Task)
            .where(
                Task.project_id == run.project_id,
                Task.user_message_id == new.user_message_id,
            )
        )
        attempt = (previous or 0) + 1
    now = utcnow()
    return {
        "project_id": run.project_id,
        "id": task_id,
        "run_id": run.id,
        "user_id": run.user_id,
        "user_message_id": new.user_message_id,
        "attempt": attempt,
        "service": new.service,
        "task_name": new.task_name,
        "provider": new.provider,
        "model": new.model,
        "request": new.request,
        "status": "pending",
        "response_text": "",
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cache_write_tokens": 0,
        "usage_estimated": False,
        "created_at": new.created_at or now,
        "updated_at": new.created_at or now,
        "heartbeat_at": now,
    }


async def progress(
    session: AsyncSession, caller: Caller, task_id: str, response_text: str | None = None
) -> Task:
    """Record streaming progress (text so far) and a heartbeat for a live task."""
    now = utcnow()
    values: dict[str, Any] = {"status": "streaming", "heartbeat_at": now, "updated_at": now}
    if response_text is not None:
        values["response_text"] = response_text
    stmt = (
        update(Task)
        .where(_visible(caller), Task.id == task_id, Task.status.in_(LIVE))
        .values(**values)
        .returning(Task)
        # Not "evaluate": that would write the new values into a loaded copy of the task
        # even when the guard matched no row. The returned row refreshes it instead.
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    task = await session.scalar(stmt)
    if task is None:
        stored = await get(session, caller, task_id, fresh=True)
        raise Conflict(f"task {task_id!r} is already {stored.status}", status=stored.status)
    return task


_LIVE_LITERALS = ", ".join(f"'{status}'" for status in LIVE)

# The terminal transition, built once (Core: see db/loaded.py) and sent through the
# driver (db/prepared.py). Its SET clause is the parameters named after columns; the
# guard's parameters are named apart from them, its statuses written in (an IN list of
# parameters would be expanded on every call).
_tasks = table_of(Task)
# The guard of every terminal transition: the task named by `in_project` and `task`,
# while it has not ended.
UNENDED = (
    _tasks.c.project_id == bindparam("in_project"),
    _tasks.c.id == bindparam("task"),
    _tasks.c.status.not_in([literal_column(f"'{status}'") for status in TERMINAL]),
)
_END = Prepared(update(_tasks).where(*UNENDED).returning(*_tasks.c))
_END_IF_SILENT = Prepared(
    update(_tasks)
    .where(*UNENDED, _tasks.c.heartbeat_at < bindparam("silent_since", type_=UtcTimeStamp()))
    .returning(*_tasks.c)
)


async def progress_many(
    session: AsyncSession, texts: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str], str | None]:
    """Record streaming progress for many live tasks at once, keyed (project_id, task_id):
    one statement whatever their number. Returns the tasks whose progress was *not*
    recorded, with the status that stopped it (None: the task is gone).

    For chatledger's own progress writer, which knows the tasks it writes (its turns
    created them): nothing here checks who may see them.
    """
    if not texts:
        return {}
    params: dict[str, Any] = {}
    rows = []
    for n, ((project_id, task_id), text_so_far) in enumerate(texts.items()):
        rows.append(f"(:p{n}, :t{n}, :x{n})")
        params |= {f"p{n}": project_id, f"t{n}": task_id, f"x{n}": text_so_far}
    # A CTE with named columns: the one spelling of UPDATE … FROM (VALUES …) that SQLite
    # and PostgreSQL both take. The guard is `progress`'s: an ended task stays ended.
    stmt = text(
        f"WITH progress (project_id, id, response_text) AS (VALUES {', '.join(rows)})"
        " UPDATE tasks SET status = 'streaming', response_text = progress.response_text,"
        " heartbeat_at = :now, updated_at = :now"
        " FROM progress"
        " WHERE tasks.project_id = progress.project_id AND tasks.id = progress.id"
        f" AND tasks.status IN ({_LIVE_LITERALS})"
        " RETURNING tasks.project_id, tasks.id"
    ).bindparams(bindparam("now", type_=UtcTimeStamp()))
    written = {tuple(row) for row in await session.execute(stmt, {**params, "now": utcnow()})}
    missed = [key for key in texts if key not in written]
    if not missed:
        return {}
    found = {
        (row.project_id, row.id): row.status
        for row in await session.execute(
            select(Task.project_id, Task.id, Task.status).where(
                tuple_(Task.project_id, Task.id).in_(missed)
            )
        )
    }
    return {key: found.get(key) for key in missed}


async def finish(
    session: AsyncSession, caller: Caller, task_id: str, outcome: Outcome
) -> tuple[Task, bool]:
    """Move a task into a terminal state exactly once; True when this call moved it.

    Replaying the same outcome returns the stored task unchanged; a different outcome
    for a task that already ended is a conflict.
    """
    _check_terminal(outcome)
    task = await get(session, caller, task_id)
    if task.is_terminal:
        return _replayed(task, outcome), False
    ended = await end(session, task, outcome)
    if ended is not None:
        return ended, True
    # Another transaction ended it between our read and our update. Our copy was read
    # before that transaction committed: read what it stored (or NotFound, when it was
    # deleted with its run).
    stored = await get(session, caller, task_id, fresh=True)
    if not stored.is_terminal:  # only the sweeper's guard can miss a live task
        return stored, False
    return _replayed(stored, outcome), False


class LiveTask(Protocol):
    """What ending a task needs to know of it beforehand (a `Task`, or a chat's plan)."""

    @property
    def project_id(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...


async def ending(session: AsyncSession, task: LiveTask, outcome: Outcome) -> dict[str, Any]:
    """The columns a terminal transition writes, by name: the outcome's, the task priced
    here unless the outcome says what it cost."""
    _check_terminal(outcome)
    at = outcome.completed_at or utcnow()
    tokens = outcome.usage or TokenUsage()
    values: dict[str, Any] = {
        "status": outcome.status,
        "error": outcome.error,
        **token_columns(tokens),
        "ttft_ms": outcome.ttft_ms,
        "total_ms": outcome.total_ms,
        "updated_at": at,
        "completed_at": at,
    }
    if outcome.response_text is not None:
        values["response_text"] = outcome.response_text
    if outcome.cost_nano is not None:
        values["cost_nano"], values["price_source"] = outcome.cost_nano, "client"
    else:
        price = await prices.price(session, task.project_id, task.provider, task.model, tokens, at)
        values["cost_nano"], values["price_source"] = price.cost_nano, price.source
    return values


async def end(session: AsyncSession, task: LiveTask, outcome: Outcome) -> Task | None:
    """The terminal transition itself: one guarded UPDATE, and the run's aggregates and
    daily usage moved in the same transaction only when it changed the row. None when
    the guard matched nothing (the task had ended, or is gone); the caller, who knows
    how it read the task, says what that means. (A chat turn that answered ends its
    task and stores its reply in one statement instead: engine/answered.py.)"""
    values = await ending(session, task, outcome)
    guarded, where = _END, dict[str, Any](in_project=task.project_id, task=task.id)
    if outcome.silent_since is not None:
        guarded, where["silent_since"] = _END_IF_SILENT, outcome.silent_since
    row = (await guarded.execute(session, {**where, **values})).one_or_none()
    if row is None:
        return None
    # A copy of the task this session loaded (`finish` read it) now shows it ended.
    ended = as_loaded(session, Task, (task.project_id, task.id), row._asdict())
    counted = runs.EndedTask(
        ended.project_id,
        ended.run_id,
        completed=ended.status == "completed",
        tokens=ended.total_tokens,
        cost_nano=ended.cost_nano,
        model=ended.model,
        at=values["completed_at"],
    )
    await runs.add_task_usage(session, counted)
    await usage.count_task(session, ended)
    return ended


def _check_terminal(outcome: Outcome) -> None:
    if outcome.status not in TERMINAL:
        raise InvalidInput("status", f"must be one of {', '.join(TERMINAL)}")


async def _serialize_attempts(session: AsyncSession, project_id: str, message_id: str) -> None:
    """Hold, until commit, the right to number this message's next attempt.

    Attempts are counted, so two creates for one message must not count at once. SQLite
    runs one write transaction at a time already; PostgreSQL (read committed) would let
    both see the same count, so a transaction-scoped advisory lock on the message takes
    turns (the message row itself may not exist yet: a turn creates its task first).
    """
    if not on_postgresql(session):
        return
    key = func.hashtextextended(f"attempts:{project_id}:{message_id}", 0)
    await session.execute(select(func.pg_advisory_xact_lock(key)))


def _replayed(task: Task, outcome: Outcome) -> Task:
    """The stored task if `outcome` says the same as what is stored, else a conflict."""
    same = task.status == outcome.status
    if same and outcome.response_text is not None:
        same = task.response_text == outcome.response_text
    if same and outcome.usage is not None:
        same = task.tokens.counts() == outcome.usage.counts()
    if not same:
        raise Conflict(
            f"task {task.id!r} already ended as {task.status}", id=task.id, status=task.status
        )
    return task


async def stale(session: AsyncSession, older_than: datetime, limit: int = 500) -> list[Task]:
    """Live tasks, in any project, whose last heartbeat is older than `older_than`."""
    stmt = (
        select(Task)
        .where(Task.status.in_(LIVE), Task.heartbeat_at < older_than)
        .order_by(Task.heartbeat_at)
        .limit(limit)
    )
    return list(await session.scalars(stmt))
