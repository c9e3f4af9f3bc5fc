"""engine/answered.py: the record of a turn that answered is one statement on PostgreSQL
and the same writes one by one on SQLite; either way a task already ended is counted
nothing twice, and a conflicting ending writes nothing."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import event, select

from chatledger import Ledger
from chatledger.db import walls
from chatledger.db.types import utcnow
from chatledger.engine import answered
from chatledger.errors import Conflict
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.providers import Delta, Finished, ModelRequest, StreamEvent
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tokens import TokenUsage
from chatledger.usage.models import UsageDaily
from tests.registered import registered

WRITES_ONE_BY_ONE = [
    "UPDATE tasks",  # the guarded terminal transition
    "UPDATE runs",  # the run's aggregates, and the reply counted in
    "INSERT INTO usage_daily",  # the day's usage
    "INSERT INTO messages",  # the reply's row
]


class Ending:
    """A model that says when it has sent its last event: what the database sees from
    then on is the turn's record."""

    name = "ending"

    def __init__(self) -> None:
        self.over = False

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        pass

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        yield Delta("Said ")
        yield Delta("and done.")
        yield Finished(TokenUsage(input_tokens=7, output_tokens=3))
        self.over = True


@pytest.fixture
def ending() -> Iterator[Ending]:
    with registered("ending", Ending()) as provider:
        yield provider


async def test_one_statement_on_postgresql_the_same_record_on_sqlite(
    ledger: Ledger, ending: Ending
) -> None:
    first = await (await ledger.chat("Hello", model="ending/said")).result()
    recorded: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        # The statements after the model's last event, but for a last progress flush.
        said = words[0] in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
        if ending.over and said and words[:2] != ["WITH", "progress"]:
            recorded.append(" ".join(words[:3] if words[1] == "INTO" else words[:2]))

    engine = ledger.database.write_engine.sync_engine
    ending.over = False
    event.listen(engine, "before_cursor_execute", seen)
    try:
        result = await (
            await ledger.chat("Again", model="ending/said", run_id=first.run_id)
        ).result()
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    if ledger.database.dialect == "postgresql":
        assert recorded == ["WITH ended"]
    else:
        assert recorded == WRITES_ONE_BY_ONE
    # Whichever way, the same record: the task, the run, the day's usage, the reply.
    async with ledger.database.reading() as session:
        task = await session.get_one(Task, (ledger.caller.project_id, result.task_id))
        run = await session.get_one(Run, (ledger.caller.project_id, result.run_id))
        used = (await session.scalars(select(UsageDaily))).one()
        reply = await session.get_one(Message, (run.project_id, result.assistant_message_id))
    assert (task.status, task.response_text, task.input_tokens, task.output_tokens) == (
        "completed",
        "Said and done.",
        7,
        3,
    )
    assert (run.task_count, run.message_count, run.total_tokens, run.last_model) == (
        2,
        4,
        20,
        "said",
    )
    assert (used.requests, used.input_tokens, used.output_tokens) == (2, 14, 6)
    assert (reply.seq, reply.role, reply.content, reply.task_id) == (
        4,
        "assistant",
        "Said and done.",
        task.id,
    )
    assert (reply.parent_id, reply.metadata_) == (result.user_message_id, {"model": "said"})
    assert reply.created_at == task.completed_at


async def _totals(ledger: Ledger, run_id: str) -> tuple[Any, ...]:
    async with ledger.database.reading() as session:
        run = await session.get_one(Run, (ledger.caller.project_id, run_id))
        used = (await session.scalars(select(UsageDaily))).one()
        replies = await session.scalars(select(Message.id).where(Message.role == "assistant"))
        return (
            (run.task_count, run.total_tokens, run.total_cost_nano, run.message_count),
            (used.requests, used.input_tokens, used.output_tokens, used.cost_nano),
            len(list(replies)),
        )


async def test_a_task_already_ended_is_counted_nothing_twice(
    ledger: Ledger, ending: Ending
) -> None:
    turn = await ledger.chat("Hello", model="ending/said")
    result = await turn.result()
    (run_before, usage_before, replies_before) = await _totals(ledger, result.run_id)
    plan = turn.plan
    reply = messages.NewMessage(
        role="assistant",
        content=result.text,
        task_id=plan.task_id,
        parent_id=plan.user_message_id,
        created_at=utcnow(),
    )

    # The same ending again (as a turn racing one ended through the API would send it):
    # the stored task answers it, and only the reply is counted in, apart.
    same = tasks.Outcome(
        status="completed", response_text=result.text, usage=result.usage, completed_at=utcnow()
    )
    with walls.acting_as(ledger.caller):
        async with ledger.database.transaction() as session:
            task, reply_id = await answered.record(session, ledger.caller, plan, same, reply)
    assert task.id == result.task_id and task.total_ms == result.total_ms
    assert reply_id != result.assistant_message_id
    (run_after, usage_after, replies_after) = await _totals(ledger, result.run_id)
    assert run_after[:3] == run_before[:3]
    assert run_after[3] == run_before[3] + 1 and replies_after == replies_before + 1
    assert usage_after == usage_before

    # Another ending is a conflict, and its transaction leaves nothing behind.
    other = tasks.Outcome(status="completed", response_text="Something else", usage=result.usage)
    with pytest.raises(Conflict), walls.acting_as(ledger.caller):
        async with ledger.database.transaction() as session:
            await answered.record(session, ledger.caller, plan, other, reply)
    assert await _totals(ledger, result.run_id) == (run_after, usage_after, replies_after)
