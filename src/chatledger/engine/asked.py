"""The record of a user's message as its turn starts (the save flow's step 1,
engine/planning.py), once the run has counted it in: the task that will answer it
stored before the model is called, the message stored, and the run's earlier messages
read for the model.

On SQLite that is two inserts and a read (none on a run that holds nothing yet), each a
call into the library. On PostgreSQL each statement is a round trip (engine/answered.py
says what one costs); there it is one statement:

    task     INSERT INTO tasks … ON CONFLICT DO NOTHING RETURNING id
    message  INSERT INTO messages … SELECT … FROM task ON CONFLICT DO NOTHING RETURNING id
    SELECT   how many rows each inserted, and the run's messages

The message reads the task's row, so it is stored only once the task is, as the
statements one by one would have it: a task id already taken is refused before the
message is stored. The read sees the run as it was when the statement began, without
the message it stores; the run's row lock, taken when it counted the message in, keeps
any other message from coming after it meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import bindparam

from chatledger.db.base import table_of
from chatledger.db.prepared import Prepared
from chatledger.db.upsert import insert_if_absent
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task

_tasks, _messages = table_of(Task), table_of(Message)


@dataclass(frozen=True)
class Asked:
    task_created: bool
    message_created: bool
    # The run's messages before this one, in order: id, role, content and status.
    earlier: Sequence[Any]


@functools.cache
def _one_statement(task_columns: tuple[str, ...]) -> Prepared:
    """The statement for a task row of these columns (the others left to their defaults:
    a new task has no cost or ending yet)."""
    given = [_tasks.c[name] for name in task_columns]
    task = (
        postgresql.insert(_tasks)
        .values({c.name: bindparam(f"task_{c.name}", type_=c.type) for c in given})
        .on_conflict_do_nothing()
        .returning(_tasks.c.id)
        .cte("task")
    )
    message_row = select(
        *(bindparam(f"message_{c.name}", type_=c.type) for c in _messages.c)
    ).select_from(task)
    message = (
        postgresql.insert(_messages)
        .from_select([c.name for c in _messages.c], message_row)
        .on_conflict_do_nothing()
        .returning(_messages.c.id)
        .cte("message")
    )
    # One row even when the run holds no message yet: what was inserted, on every row.
    one = select(literal_column("1").label("one")).subquery("one")
    of_the_run = and_(
        _messages.c.project_id == bindparam("in_project"), _messages.c.run_id == bindparam("run")
    )
    return Prepared(
        select(
            select(func.count()).select_from(task).scalar_subquery().label("task_created"),
            select(func.count()).select_from(message).scalar_subquery().label("message_created"),
            _messages.c.id,
            _messages.c.role,
            _messages.c.content,
            _messages.c.status,
        )
        .select_from(one.outerjoin(_messages, of_the_run))
        .order_by(_messages.c.seq)
    )


async def store(
    session: AsyncSession,
    task_row: dict[str, Any],
    message_row: dict[str, Any],
    *,
    read_earlier: bool = True,
) -> Asked:
    """Insert the task's row, then the message's (each unless its id exists), and read
    the run's earlier messages; `read_earlier=False`: the run holds nothing else (SQLite
    then reads nothing)."""
    if session.get_bind().dialect.name == "postgresql":
        return await _in_one_statement(session, task_row, message_row)
    if not await tasks.insert_row(session, task_row):
        return Asked(False, False, ())
    if not await insert_if_absent(session, Message, message_row):
        return Asked(True, False, ())
    if not read_earlier:
        return Asked(True, True, ())
    run = await messages.conversation(session, message_row["project_id"], message_row["run_id"])
    return Asked(True, True, [m for m in run if m.id != message_row["id"]])


async def _in_one_statement(
    session: AsyncSession, task_row: dict[str, Any], message_row: dict[str, Any]
) -> Asked:
    params = {
        **{f"task_{name}": value for name, value in task_row.items()},
        **{f"message_{name}": value for name, value in message_row.items()},
        "in_project": message_row["project_id"],
        "run": message_row["run_id"],
    }
    rows = (await _one_statement(tuple(task_row)).execute(session, params)).rows
    first = rows[0]
    earlier = [row for row in rows if row.id is not None]
    return Asked(bool(first.task_created), bool(first.message_created), earlier)
