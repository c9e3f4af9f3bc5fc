"""The record of a user's message as its turn starts (the save flow's step 1,
engine/planning.py), once the run has counted it in: the task that will answer it
stored before the model is called, the message stored, and the run's earlier messages
read for the model.

On SQLite `store` does two inserts and a read (none on a run that holds nothing yet),
each a call into the library. On PostgreSQL each statement is a round trip
(engine/answered.py says what one costs); there it is one statement:

    task     INSERT INTO tasks … ON CONFLICT DO NOTHING RETURNING id
    message  INSERT INTO messages … SELECT … FROM task ON CONFLICT DO NOTHING RETURNING id
    SELECT   how many rows each inserted, and the run's messages

The message reads the task's row, so it is stored only once the task is, as the
statements one by one would have it: a task id already taken is refused before the
message is stored. The read sees the run as it was when the statement began, without
the message it stores; the run's row lock, taken when it counted the message in, keeps
any other message from coming after it meanwhile.

A follow-up turn that names its run and its model (most of them: a client sends its
model with each message) needs nothing of the run before its task is made but what the
database can work out itself, so on PostgreSQL `count_and_store` counts the message in
within the same statement, a CTE before the others:

    counted  UPDATE runs … RETURNING the run   (its row lock; the message's seq)
    task     INSERT INTO tasks … SELECT … FROM counted   (the run's owner and settings)
    message  INSERT INTO messages … SELECT … FROM task, counted

The task reads the run's row and the message the task's, so the writes happen in the
order the statements one by one take (run, task, message). The task's settings are the
run's stored settings under the turn's own, merged by the statement (jsonb `||`, then
`- 'model'`, as the planner merges dicts); the provider checks them once the statement
has answered, and a refusal takes the whole transaction back. No run of the caller's
by that id: `counted` is empty, nothing is written, and the planner goes the long way
(the run created with the message). The read's snapshot is taken as the statement
begins, before `counted` has the run's row lock: a message another turn counted in
while this one waited for the lock is missing from it, which the run's count tells (the
last message read is not the one before the new one), and the run is read again.

On SQLite `count_and_store` is one statement too: a procedure (db/sqlite_procedures.py)
whose steps are the same writes in the same order, first a stop unless the caller has
the run (then nothing is written and no row answered). The task's settings are merged
by the step that stores it, key by key as jsonb's `||` merges them (`_merged`). Its
answer is read once the steps have run: the run's columns (its settings among them, from
which the planner's copy of the task's settings is merged in Python), whether the task
and the message were stored (a task is stored by this call when it answers this call's
message: a taken id belongs to another's), and the run's other messages, as one JSON
array. SQLite runs one write transaction at a time, so no message can come in between.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    ColumnElement,
    Text,
    and_,
    case,
    exists,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import bindparam

from chatledger.db.base import table_of
from chatledger.db.engine import on_postgresql
from chatledger.db.prepared import Prepared
from chatledger.db.sqlite_procedures import Procedure, stop_unless
from chatledger.db.upsert import insert_if_absent
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller

_tasks, _messages, _runs = table_of(Task), table_of(Message), table_of(Run)


@dataclass(frozen=True)
class Asked:
    task_created: bool
    message_created: bool
    # The run's messages before this one, in order: id, seq, role, content and status.
    earlier: Sequence[Any]


@dataclass(frozen=True)
class Counted:
    """What `count_and_store` wrote and read: the run with the message counted in, the
    settings the task runs with, and what `store` would have answered."""

    run: runs.Opened
    settings: dict[str, Any]
    asked: Asked


class EarlierMessage(NamedTuple):
    """One of the run's messages before the new one, as SQLite's procedure reads it (a
    tuple: a long conversation makes many)."""

    id: str
    seq: int
    role: str
    content: str
    status: str


@functools.cache
def _one_statement(task_columns: tuple[str, ...]) -> Prepared:
    """The statement for a task row of these columns (the others left to their defaults:
    a new task has no cost or ending yet)."""
    return _statement(task_columns, None)


@functools.cache
def _counting_statement(task_columns: tuple[str, ...], own: bool) -> Prepared:
    """The same, the message counted into the run first (a run of its owner's, `own`)."""
    counting = runs.COUNT_OWN_MESSAGE if own else runs.COUNT_MESSAGE
    return _statement(task_columns, counting.returning(*runs.OPENED_COLUMNS).cte("counted"))


def _statement(task_columns: tuple[str, ...], counted: CTE | None) -> Prepared:
    task_values: dict[str, ColumnElement[Any]] = {
        name: bindparam(f"task_{name}", type_=_tasks.c[name].type) for name in task_columns
    }
    message_values: dict[str, ColumnElement[Any]] = {
        c.name: bindparam(f"message_{c.name}", type_=c.type) for c in _messages.c
    }
    run_columns: list[ColumnElement[Any]] = []
    if counted is not None:
        asked = task_values["request"]  # the turn's own: its model, its settings
        merged = _jsonb(counted.c.settings, "||", _jsonb(asked, "->", _text("settings")))
        settings = _jsonb(merged, "-", _text("model"))
        task_values["user_id"] = counted.c.user_id
        task_values["request"] = _jsonb(
            asked, "||", func.jsonb_build_object(_text("settings"), settings)
        )
        message_values["seq"] = counted.c.message_count
        run_columns = [*counted.c, settings.label("task_settings")]
    task = (
        postgresql.insert(_tasks)
        .from_select(list(task_values), select(*task_values.values()))
        .on_conflict_do_nothing()
        .returning(_tasks.c.id)
        .cte("task")
    )
    message = (
        postgresql.insert(_messages)
        .from_select(list(message_values), select(*message_values.values()).select_from(task))
        .on_conflict_do_nothing()
        .returning(_messages.c.id)
        .cte("message")
    )
    of_the_run = and_(
        _messages.c.project_id == bindparam("in_project"), _messages.c.run_id == bindparam("run")
    )
    # One row even when the run holds no message yet: what was written, on every row.
    one = select(literal_column("1").label("one")).subquery("one")
    rows_of = counted if counted is not None else one
    return Prepared(
        select(
            *run_columns,
            select(func.count()).select_from(task).scalar_subquery().label("task_created"),
            select(func.count()).select_from(message).scalar_subquery().label("message_created"),
            _messages.c.id,
            _messages.c.seq,
            _messages.c.role,
            _messages.c.content,
            _messages.c.status,
        )
        .select_from(rows_of.outerjoin(_messages, of_the_run))
        .order_by(_messages.c.seq)
    )


@functools.cache
def _sqlite_procedure(task_columns: tuple[str, ...], own: bool) -> Prepared:
    """`_counting_statement` on SQLite: its writes as the steps of a procedure, in the
    same order (db/sqlite_procedures.py), and what it answers read once they have run,
    but for the task's settings (`count_and_store` merges them from the run's). The step
    that stores the task merges them as on PostgreSQL, the run's under the turn's own,
    key by key (`_merged`)."""
    this_run = [_runs.c.project_id == bindparam("in_project"), _runs.c.id == bindparam("run")]
    counting = runs.COUNT_MESSAGE
    if own:
        this_run.append(_runs.c.user_id == bindparam("owner"))
        counting = runs.COUNT_OWN_MESSAGE
    task_values: dict[str, ColumnElement[Any]] = {
        name: bindparam(f"task_{name}", type_=_tasks.c[name].type) for name in task_columns
    }
    asked = task_values["request"]  # the turn's own: its model, its settings
    task_values["user_id"] = _runs.c.user_id
    task_values["request"] = func.json_set(
        asked,
        _text("$.settings"),
        _merged(_runs.c.settings, func.json_extract(asked, _text("$.settings"))),
    )
    message_values: dict[str, ColumnElement[Any]] = {
        c.name: bindparam(f"message_{c.name}", type_=c.type) for c in _messages.c
    }
    message_values["seq"] = _runs.c.message_count
    this_task = (
        _tasks.c.project_id == bindparam("in_project"),
        _tasks.c.id == bindparam("task_id"),
    )
    task_created = exists().where(
        *this_task, _tasks.c.user_message_id == bindparam("task_user_message_id")
    )
    procedure = Procedure(
        "turn_asked",
        [
            # No run of the caller's by that id: nothing written, no row answered.
            stop_unless(exists().where(*this_run)),
            counting,
            sqlite.insert(_tasks)
            .from_select(list(task_values), select(*task_values.values()).where(*this_run))
            .on_conflict_do_nothing(),
            sqlite.insert(_messages)
            .from_select(
                list(message_values),
                select(*message_values.values()).where(*this_run, task_created),
            )
            .on_conflict_do_nothing(),
        ],
    )
    the_run = this_run[:2]
    of_the_run = (
        _messages.c.project_id == bindparam("in_project"),
        _messages.c.run_id == bindparam("run"),
        _messages.c.id != bindparam("message_id"),
    )
    earlier = select(
        func.json_group_array(
            func.json_array(
                _messages.c.id,
                _messages.c.seq,
                _messages.c.role,
                _messages.c.content,
                _messages.c.status,
            )
        )
    ).where(*of_the_run)
    message_created = exists().where(
        _messages.c.project_id == bindparam("in_project"),
        _messages.c.id == bindparam("message_id"),
        _messages.c.task_id == bindparam("task_id"),
    )
    return procedure.call(
        *(select(c).where(*the_run).scalar_subquery().label(c.name) for c in runs.OPENED_COLUMNS),
        task_created.label("task_created"),
        message_created.label("message_created"),
        earlier.scalar_subquery().label("earlier"),
    )


def _merged(stored: Any, own: Any) -> Any:
    """SQLite: the JSON object `stored` with `own`'s keys over its own, as `{**stored,
    **own}` has them, less `model`. Each value keeps its JSON type (a value read from
    `json_each` is a plain SQL one: 1 for true, text for an object)."""

    def entries(settings: Any, name: str) -> Any:
        return func.json_each(settings).table_valued("key", "value", "type").alias(name)

    kept, overriding, own_keys = (
        entries(stored, "kept"),
        entries(own, "own"),
        entries(own, "own_keys"),
    )
    both = union_all(
        select(kept.c.key, kept.c.value, kept.c.type).where(
            kept.c.key.not_in(select(own_keys.c.key))
        ),
        select(overriding.c.key, overriding.c.value, overriding.c.type),
    ).subquery("merged")
    as_json = func.json(both.c.value)
    value = case(
        (both.c.type == _text("true"), func.json(_text("true"))),
        (both.c.type == _text("false"), func.json(_text("false"))),
        (both.c.type.in_([_text("object"), _text("array")]), as_json),
        else_=both.c.value,
    )
    return (
        select(func.json_group_object(both.c.key, value))
        .where(both.c.key != _text("model"))
        .scalar_subquery()
    )


def _jsonb(left: Any, operator: str, right: Any) -> ColumnElement[Any]:
    """`left operator right`, a jsonb value."""
    return left.op(operator, return_type=postgresql.JSONB)(right)  # type: ignore[no-any-return]


def _text(value: str) -> ColumnElement[str]:
    """A text literal written into the SQL: a key of the statement's own, not a parameter
    (a parameter of no type can be no argument of jsonb's operators and functions)."""
    return literal_column(f"'{value}'", Text)


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
    if on_postgresql(session):
        return await _in_one_statement(session, task_row, message_row)
    if not await tasks.insert_row(session, task_row):
        return Asked(False, False, ())
    if not await insert_if_absent(session, Message, message_row):
        return Asked(True, False, ())
    if not read_earlier:
        return Asked(True, True, ())
    return Asked(True, True, await _earlier(session, message_row))


async def count_and_store(
    session: AsyncSession,
    caller: Caller,
    task_row: dict[str, Any],
    message_row: dict[str, Any],
) -> Counted | None:
    """Count the message into the caller's run of `message_row`, then `store` it, in one
    statement (on SQLite a procedure's). The task's `request` is the turn's own model and
    settings, the run's settings merged under them; its owner and the message's seq come
    from the run's row. None when the caller has no such run: nothing was written."""
    run_id = message_row["run_id"]
    # Whose run it is comes from its row: a project's admin may write to a user's run.
    columns = tuple(name for name in task_row if name != "user_id")
    postgresql = on_postgresql(session)
    making = _counting_statement if postgresql else _sqlite_procedure
    statement = making(columns, not caller.sees_all)
    params = {
        **runs.counting_params(caller, run_id, message_row["content"], message_row["created_at"]),
        **_store_params(task_row, message_row),
    }
    rows = (await statement.execute(session, params)).rows
    if not rows:
        return None
    first = rows[0]
    opened = runs.counted_in(session, caller, run_id, first)
    if postgresql:
        settings, stored = first.task_settings, _asked(rows)
    else:
        # As the procedure merged them, from the run's settings it answered (merging
        # them once more in SQL would cost ~25 µs).
        settings = {**first.settings, **task_row["request"]["settings"]}
        settings.pop("model", None)
        stored = _asked_of_sqlite(first)
    if (stored.earlier[-1].seq if stored.earlier else 0) != opened.seq - 1:
        # Messages counted in while the statement waited for the run's lock: committed
        # after the snapshot its read sees. A read now sees them (and the lock keeps
        # any later one out).
        stored = replace(stored, earlier=await _earlier(session, message_row))
    return Counted(opened, settings, stored)


async def _in_one_statement(
    session: AsyncSession, task_row: dict[str, Any], message_row: dict[str, Any]
) -> Asked:
    statement = _one_statement(tuple(task_row))
    return _asked((await statement.execute(session, _store_params(task_row, message_row))).rows)


async def _earlier(session: AsyncSession, message_row: dict[str, Any]) -> list[Any]:
    """The run's messages but the one of `message_row`, read by a statement of their own."""
    run = await messages.conversation(session, message_row["project_id"], message_row["run_id"])
    return [m for m in run if m.id != message_row["id"]]


def _store_params(task_row: dict[str, Any], message_row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{f"task_{name}": value for name, value in task_row.items()},
        **{f"message_{name}": value for name, value in message_row.items()},
        "in_project": message_row["project_id"],
        "run": message_row["run_id"],
    }


_SEQ = operator.itemgetter(1)  # of a message as `_sqlite_procedure` reads it


def _asked_of_sqlite(row: Any) -> Asked:
    read = json.loads(row.earlier)
    read.sort(key=_SEQ)  # as the procedure read them; `json_group_array` keeps no order
    earlier = list(map(EarlierMessage._make, read))
    return Asked(bool(row.task_created), bool(row.message_created), earlier)


def _asked(rows: Sequence[Any]) -> Asked:
    first = rows[0]
    earlier = [row for row in rows if row.id is not None]
    return Asked(bool(first.task_created), bool(first.message_created), earlier)
