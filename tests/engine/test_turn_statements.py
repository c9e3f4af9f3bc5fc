"""A chat turn's statements (engine/asked.py, engine/answered.py): on PostgreSQL one to
store the task and the message and read the run once the run has counted the message
in, and one to record the answer; on SQLite the same writes one by one. Either way the
same rows; a task id already taken stores nothing, a task already ended is counted
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

ASKED_ONE_BY_ONE = [
    "UPDATE runs",  # the message counted in (both databases)
    "INSERT INTO tasks",  # the task, before the model is called
    "INSERT INTO messages",  # the user's message
    "SELECT FROM messages",  # the conversation, for the model
]
ANSWERED_ONE_BY_ONE = [
    "UPDATE tasks",  # the guarded terminal transition
    "UPDATE runs",  # the run's aggregates, and the reply counted in
    "INSERT INTO usage_daily",  # the day's usage
    "INSERT INTO messages",  # the reply's row
]


def shape(statement: str) -> str | None:
    """What a statement does, to what: `UPDATE runs`, `WITH ended` (its first CTE),
    `SELECT FROM messages`; None for the driver's transaction control."""
    words = statement.split()
    if words[0] in ("WITH", "UPDATE"):
        return " ".join(words[:2])
    if words[0] in ("INSERT", "DELETE"):
        return " ".join(words[:3])
    if words[0] == "SELECT" and "FROM" in words:
        return f"SELECT FROM {words[words.index('FROM') + 1]}"
    if words[0] == "SELECT":  # a function's call (an advisory lock)
        return " ".join(words[:2])
    return None


class Ending:
    """A model that says when it is called and when it has sent its last event."""

    name = "ending"

    def __init__(self) -> None:
        self.called = self.over = False
        self.asked: list[ModelRequest] = []

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        pass

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        self.called = True
        self.asked.append(request)
        yield Delta("Said ")
        yield Delta("and done.")
        yield Finished(TokenUsage(input_tokens=7, output_tokens=3))
        self.over = True


@pytest.fixture
def ending() -> Iterator[Ending]:
    with registered("ending", Ending()) as provider:
        yield provider


async def test_one_statement_each_way_on_postgresql_the_same_record_on_sqlite(
    ledger: Ledger, ending: Ending
) -> None:
    first = await (await ledger.chat("Hello", model="ending/said")).result()
    asked: list[str] = []
    answered: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        said = shape(statement)
        # Progress writes come and go with the clock: not what this counts.
        if said is None or said == "WITH progress":
            return
        if not ending.called:
            asked.append(said)
        elif ending.over:
            answered.append(said)

    engine = ledger.database.write_engine.sync_engine
    ending.called = ending.over = False
    event.listen(engine, "before_cursor_execute", seen)
    try:
        result = await (
            await ledger.chat("Again", model="ending/said", run_id=first.run_id)
        ).result()
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    if ledger.database.dialect == "postgresql":
        assert asked == ["UPDATE runs", "WITH task"]
        assert answered == ["WITH ended"]
    else:
        assert asked == ASKED_ONE_BY_ONE
        assert answered == ANSWERED_ONE_BY_ONE
    # Whichever way, the same record: the task, the run, the day's usage, the reply.
    async with ledger.database.reading() as session:
        task = await session.get_one(Task, (ledger.caller.project_id, result.task_id))
        run = await session.get_one(Run, (ledger.caller.project_id, result.run_id))
        used = (await session.scalars(select(UsageDaily))).one()
        reply = await session.get_one(Message, (run.project_id, result.assistant_message_id))
        question = await session.get_one(Message, (run.project_id, result.user_message_id))
    # The model saw the conversation so far and the new message, each once.
    assert [(m.role, m.content) for m in ending.asked[-1].messages] == [
        ("user", "Hello"),
        ("assistant", "Said and done."),
        ("user", "Again"),
    ]
    assert (question.seq, question.role, question.content, question.task_id) == (
        3,
        "user",
        "Again",
        task.id,
    )
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


async def test_a_task_id_already_taken_stores_nothing(ledger: Ledger, ending: Ending) -> None:
    first = await (await ledger.chat("Hello", model="ending/said", task_id="t-1")).result()
    with pytest.raises(Conflict, match="t-1"):
        await ledger.chat("Again", model="ending/said", run_id=first.run_id, task_id="t-1")
    async with ledger.database.reading() as session:
        run = await session.get_one(Run, (ledger.caller.project_id, first.run_id))
        stored = await session.scalars(select(Message.content).order_by(Message.seq))
        assert list(stored) == ["Hello", "Said and done."]
    assert run.message_count == 2
