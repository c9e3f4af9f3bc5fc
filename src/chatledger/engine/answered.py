"""The record of a chat turn that answered (the save flow's step 3, engine/chat.py): its
task ended exactly once, counted into its run and the day's usage, and its reply stored
as the run's next message, all in one transaction.

It is one statement on both databases. On PostgreSQL each statement is a round trip,
and a round trip costs this process ~200 µs of CPU (docs/benchmarks.md); there each
write is a data-modifying CTE:

    ended    UPDATE tasks … WHERE (the guard: not yet ended) RETURNING its run, owner…
    counted  UPDATE runs … FROM ended           (the run's aggregates, the reply's seq)
    used     INSERT INTO usage_daily … SELECT … FROM ended, counted ON CONFLICT … add
    reply    INSERT INTO messages … SELECT … FROM counted, used

PostgreSQL promises no order between a WITH's sub-statements; here each one reads the
rows of the one before it, so it has nothing to write until that one has written: the
task, the run, the usage row and the message are taken in that order, the order in
which `tasks.end` and every other path that writes a run and usage take them (so that
concurrent turns and batches never deadlock). When the guard matches nothing, `ended`
is empty and so is every write after it: nothing is counted twice.

SQLite cannot write in a CTE. There the same writes are the steps of a procedure, an
INSERT into a view whose trigger runs them (db/sqlite_procedures.py), one call into the
library where they were four: first a stop unless the task is not yet ended (the
guard: then nothing is written and no row answered), then the run, the usage row and
the reply, each reading the task as not yet ended, and last the task's own transition.
Its answer, the reply's seq, is read once the steps have run.

Either way the statement answers no more than whether it ended the task: what the task
recorded is what it was given (`Answered`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC
from typing import Any

from sqlalchemy import exists, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import bindparam

from chatledger.db.base import table_of
from chatledger.db.engine import on_postgresql
from chatledger.db.prepared import Prepared
from chatledger.db.sqlite_procedures import Procedure, stop_unless
from chatledger.db.upsert import adding
from chatledger.engine.turn import TurnPlan
from chatledger.ids import new_id
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage
from chatledger.usage import service as usage
from chatledger.usage.models import UsageDaily

_tasks, _runs, _usage, _messages = (table_of(m) for m in (Task, Run, UsageDaily, Message))
# What the terminal transition sets, each bound apart from the column's own name (an
# UPDATE reserves those), and what the reply's row takes from this turn.
_ENDED_COLUMNS = (
    *("status", "error", "response_text", "ttft_ms", "total_ms", "updated_at", "completed_at"),
    *("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cache_write_tokens"),
    *("usage_estimated", "cost_nano", "price_source"),
)
_REPLY_COLUMNS = tuple(c.name for c in _messages.c if c.name != "seq")


def _one_statement() -> Prepared:
    ended = (
        update(_tasks)
        .where(*tasks.UNENDED)
        .values(
            {name: bindparam(f"set_{name}", type_=_tasks.c[name].type) for name in _ENDED_COLUMNS}
        )
        .returning(_tasks.c.project_id, _tasks.c.run_id, _tasks.c.user_id, _tasks.c.model)
        .cte("ended")
    )
    counted = (
        runs.COUNT_TASK_AND_REPLY.where(_runs.c.id == ended.c.run_id)
        .returning(_runs.c.message_count)
        .cte("counted")
    )
    usage_row = select(
        ended.c.project_id,
        ended.c.user_id,
        bindparam("day", type_=_usage.c.day.type),
        ended.c.model,
        *(bindparam(f"add_{name}", type_=_usage.c[name].type) for name in usage.COUNTERS),
    ).select_from(ended.join(counted, true()))
    used = (
        adding(
            postgresql.insert(_usage).from_select([*usage.KEY, *usage.COUNTERS], usage_row),
            _usage,
            usage.KEY,
            usage.COUNTERS,
        )
        .returning(_usage.c.day)
        .cte("used")
    )
    reply_row = select(
        *(bindparam(f"reply_{name}", type_=_messages.c[name].type) for name in _REPLY_COLUMNS),
        counted.c.message_count,
    ).select_from(counted.join(used, true()))
    reply = (
        postgresql.insert(_messages)
        .from_select([*_REPLY_COLUMNS, "seq"], reply_row)
        .on_conflict_do_nothing()
        .returning(_messages.c.id)
        .cte("reply")
    )
    return Prepared(
        select(counted.c.message_count.label("reply_seq"))
        .select_from(ended.join(counted, true()))
        .add_cte(reply)
    )


def _sqlite_procedure() -> Prepared:
    """The same statement's steps, one by one, run by SQLite as one statement
    (db/sqlite_procedures.py), and its answer: the reply's seq, read once the steps have
    run."""
    unended = select(_tasks.c.run_id).where(*tasks.UNENDED)
    counted = _runs.c.project_id == bindparam("in_project"), _runs.c.id == bindparam("run")
    usage_row = select(
        _tasks.c.project_id,
        _tasks.c.user_id,
        bindparam("day", type_=_usage.c.day.type),
        _tasks.c.model,
        *(bindparam(f"add_{name}", type_=_usage.c[name].type) for name in usage.COUNTERS),
    ).where(*tasks.UNENDED)
    reply_row = select(
        *(bindparam(f"reply_{name}", type_=_messages.c[name].type) for name in _REPLY_COLUMNS),
        _runs.c.message_count,
    ).where(*counted)
    procedure = Procedure(
        "turn_answered",
        [
            # Ended already (or gone with its run): nothing written, no row answered.
            stop_unless(exists(unended.where(_tasks.c.run_id == bindparam("run")))),
            runs.COUNT_TASK_AND_REPLY,
            adding(
                sqlite.insert(_usage).from_select([*usage.KEY, *usage.COUNTERS], usage_row),
                _usage,
                usage.KEY,
                usage.COUNTERS,
            ),
            sqlite.insert(_messages)
            .from_select([*_REPLY_COLUMNS, "seq"], reply_row)
            .on_conflict_do_nothing(),
            # Last: the steps before it read the task as not yet ended.
            update(_tasks)
            .where(*tasks.UNENDED)
            .values(
                {
                    name: bindparam(f"set_{name}", type_=_tasks.c[name].type)
                    for name in _ENDED_COLUMNS
                }
            ),
        ],
    )
    return procedure.call(
        select(_runs.c.message_count).where(*counted).scalar_subquery().label("reply_seq"),
    )


_ANSWERED = _one_statement()
_ANSWERED_ON_SQLITE = _sqlite_procedure()


@dataclass(frozen=True, slots=True)
class Answered:
    """What ending a turn's task recorded, as its `usage` event and the turn's result
    tell it (engine/chat.py): the values the statement wrote, with no ORM object made of
    the row (~100 µs a reply) nor the row read back."""

    id: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cache_write_tokens: int
    usage_estimated: bool
    cost_nano: int | None
    price_source: str | None
    ttft_ms: int | None
    total_ms: int | None

    @classmethod
    def of(cls, task: Task) -> Answered:
        return cls(**{name: getattr(task, name) for name in _ANSWERED_FIELDS})


_ANSWERED_FIELDS = tuple(field.name for field in fields(Answered))


async def record(
    session: AsyncSession,
    caller: Caller,
    plan: TurnPlan,
    outcome: tasks.Outcome,
    reply: messages.NewMessage,
    *,
    last: bool = False,
) -> tuple[Answered, str]:
    """End the turn's task with `outcome` (completed) and store `reply`, its answer, as
    the run's next message: what the task recorded and the reply's id. `last`: nothing
    else is written in the session's transaction, which may then commit with the
    statement (`Prepared.execute`).

    A task ended meanwhile elsewhere (cancelled through the API) is answered as a
    replay or its conflict (`tasks.finish`), and the reply is counted in apart."""
    ended = await _in_one_statement(session, plan, outcome, reply, last)
    if ended is not None:
        return ended
    task, _ = await tasks.finish(session, caller, plan.task_id, outcome)
    reply_id = await messages.add_reply(session, plan.project_id, plan.run_id, reply)
    return Answered.of(task), reply_id


async def _in_one_statement(
    session: AsyncSession,
    plan: TurnPlan,
    outcome: tasks.Outcome,
    reply: messages.NewMessage,
    last: bool,
) -> tuple[Answered, str] | None:
    values = await tasks.ending(session, plan.task, outcome)
    at = values["completed_at"]
    tokens = outcome.usage or TokenUsage()
    reply_id = new_id()
    row = messages.row(plan.project_id, plan.run_id, 0, reply_id, reply, at)
    del row["seq"]  # the run's count, which the statement takes as it counts the reply in
    counted = usage.increments(outcome.status, tokens, values["cost_nano"])
    params: dict[str, Any] = {
        "task": plan.task_id,
        **{f"set_{name}": values[name] for name in _ENDED_COLUMNS},
        **runs.EndedTask(
            plan.project_id,
            plan.run_id,
            completed=outcome.status == "completed",
            tokens=tokens.total,
            cost_nano=values["cost_nano"],
            model=plan.model,
            at=at,
            reply=reply.content,
        ).params(),
        "day": at.astimezone(UTC).date(),  # the UTC day, as the stored row says
        **{f"add_{name}": n for name, n in counted.items()},
        **{f"reply_{name}": value for name, value in row.items()},
    }
    statement = _ANSWERED if on_postgresql(session) else _ANSWERED_ON_SQLITE
    written = await statement.execute(session, params, last=last)
    if written.one_or_none() is None:
        if written.committed:
            # It wrote nothing (the task had ended), and its transaction is over: what
            # `record` writes instead goes in a transaction of its own.
            await session.commit()
        return None
    answered = {name: values[name] for name in _ANSWERED_FIELDS if name != "id"}
    return Answered(plan.task_id, **answered), reply_id
