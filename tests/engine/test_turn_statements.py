"""A chat turn's statements (engine/asked.py, engine/answered.py): on PostgreSQL one to
count the message into its run, store the task and the message and read the run (two,
the count apart, when the turn leaves its model to the run), and one to record the
answer; on SQLite the same, each an INSERT into a procedure's view whose trigger writes
one by one (db/sqlite_procedures.py), and four to start a turn that leaves its model to
the run. Either way the same rows; the run's settings under the turn's own, a setting
refused writing nothing, a run named but absent created with the message, a task id
already taken storing nothing, a task already ended counted nothing twice, and a
conflicting ending writing nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import event, select, text

from chatledger import Ledger
from chatledger.db import walls
from chatledger.db.types import utcnow
from chatledger.engine import answered
from chatledger.engine.turn import ChatRequest
from chatledger.errors import Conflict, InvalidInput, NotFound
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.providers import Delta, Finished, ModelRequest, StreamEvent
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage
from chatledger.usage.models import UsageDaily
from tests.registered import registered

ASKED_ONE_BY_ONE = [
    "UPDATE runs",  # the message counted in (both databases)
    "INSERT INTO tasks",  # the task, before the model is called
    "INSERT INTO messages",  # the user's message
    "SELECT FROM messages",  # the conversation, for the model
]


def shape(statement: str) -> str | None:
    """What a statement does, to what: `UPDATE runs`, `WITH ended` (its first CTE),
    `SELECT FROM messages`, `INSERT INTO turn_asked` (a procedure, less its number);
    None for the driver's transaction control."""
    words = statement.split()
    if words[0] in ("WITH", "UPDATE"):
        return " ".join(words[:2])
    if words[0] in ("INSERT", "DELETE"):
        return re.sub(r"_\d+$", "", " ".join(words[:3]))
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
        if "refused" in settings:
            raise InvalidInput("settings.refused", "is not a setting of this model")

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


class Said:
    """The statements a turn sends before its model is called and after its last event."""

    def __init__(self, ledger: Ledger, ending: Ending) -> None:
        self.asked: list[str] = []
        self.answered: list[str] = []
        self._ending = ending
        self._engine = ledger.database.write_engine.sync_engine

    def __enter__(self) -> Said:
        self._ending.called = self._ending.over = False
        event.listen(self._engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        said = shape(statement)
        # Progress writes come and go with the clock: not what this counts.
        if said is None or said == "WITH progress":
            return
        if not self._ending.called:
            self.asked.append(said)
        elif self._ending.over:
            self.answered.append(said)


@pytest.mark.parametrize("names_its_model", [True, False])
async def test_one_statement_each_way_the_same_record_on_both(
    ledger: Ledger, ending: Ending, names_its_model: bool
) -> None:
    first = await (await ledger.chat("Hello", model="ending/said")).result()
    # Without a model of its own the turn takes the run's: read as the run counts it in.
    model = {"model": "ending/said"} if names_its_model else {}
    with Said(ledger, ending) as said:
        result = await (await ledger.chat("Again", run_id=first.run_id, **model)).result()
    asked, answered = said.asked, said.answered

    if ledger.database.dialect == "postgresql":
        assert asked == (["WITH counted"] if names_its_model else ["UPDATE runs", "WITH task"])
        assert answered == ["WITH ended"]
    else:
        assert asked == (["INSERT INTO turn_asked"] if names_its_model else ASKED_ONE_BY_ONE)
        assert answered == ["INSERT INTO turn_answered"]
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


@pytest.mark.parametrize("last", [False, True], ids=["then-more", "last"])
async def test_a_task_already_ended_is_counted_nothing_twice(
    ledger: Ledger, ending: Ending, last: bool
) -> None:
    """`last`: the end's statement commits with itself on PostgreSQL (a new message's
    end): answering no row, it has committed nothing, and what `record` writes instead
    goes in a transaction of its own."""
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
            task, reply_id = await answered.record(
                session, ledger.caller, plan, same, reply, last=last
            )
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
            await answered.record(session, ledger.caller, plan, other, reply, last=last)
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


async def test_a_turn_runs_with_the_runs_settings_under_its_own(
    ledger: Ledger, ending: Ending
) -> None:
    # Merged key by key, each value as it is (an object replaced, not merged; a flag, a
    # null and a list kept as JSON has them).
    stored = {
        "model": "ending/said",
        "tone": "dry",
        "length": 1,
        "style": {"a": 1},
        "stop": ["."],
        "loud": True,
        "seed": None,
    }
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, "r-1", settings=stored)
    own = {"length": 2, "style": {"b": 2}, "quiet": False}
    turn = await ledger.chat("Hello", model="ending/said", run_id="r-1", settings=own)
    result = await turn.result()

    merged = {
        "tone": "dry",
        "length": 2,
        "style": {"b": 2},
        "stop": ["."],
        "loud": True,
        "seed": None,
        "quiet": False,
    }
    assert ending.asked[-1].settings == merged
    task = await ledger.get_task(result.task_id)
    assert task.request == {"model": "ending/said", "settings": merged}
    # (1 == True in Python: the flags compared as themselves.)
    for settings in (ending.asked[-1].settings, task.request["settings"]):
        assert (settings["loud"], settings["quiet"]) == (True, False)
        assert isinstance(settings["loud"], bool) and isinstance(settings["quiet"], bool)
    assert (task.user_id, task.attempt, task.status) == (ledger.caller.user_id, 1, "completed")
    run = (await ledger.get_run("r-1")).run
    assert (run.settings, run.message_count, run.task_count) == (stored, 2, 1)


async def test_a_setting_refused_writes_nothing(ledger: Ledger, ending: Ending) -> None:
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, "r-1", settings={"refused": True})
    with pytest.raises(InvalidInput, match="refused"):
        await ledger.chat("Hello", model="ending/said", run_id="r-1")
    assert not ending.called
    detail = await ledger.get_run("r-1")
    assert (detail.run.message_count, detail.messages, detail.tasks) == (0, [], [])


async def test_a_run_named_but_absent_is_created_with_the_message(
    ledger: Ledger, ending: Ending
) -> None:
    with Said(ledger, ending) as said:
        turn = await ledger.chat("Hello there", model="ending/said", run_id="r-new")
        result = await turn.result()

    assert (result.run_id, turn.plan.run_created) == ("r-new", True)
    if ledger.database.dialect == "postgresql":
        # The run's count found nothing and wrote nothing: created, then the rest.
        assert said.asked == ["WITH counted", "INSERT INTO runs", "WITH task"]
    else:
        assert said.asked == ["INSERT INTO turn_asked", "INSERT INTO runs", *ASKED_ONE_BY_ONE[1:3]]
    detail = await ledger.get_run("r-new")
    assert (detail.run.name, detail.run.message_count, detail.run.task_count) == (
        "Hello there",
        2,
        1,
    )
    assert [(m.seq, m.role) for m in detail.messages] == [(1, "user"), (2, "assistant")]


async def test_a_turn_of_a_project_admin_is_the_runs_owners(ledger: Ledger, ending: Ending) -> None:
    first = await (await ledger.chat("Hello", model="ending/said")).result()
    admin = Caller(ledger.caller.project_id, "admin", sees_all=True, role="admin")
    with walls.acting_as(admin):
        turn = await ledger.engine.start(
            admin, ChatRequest("Again", run_id=first.run_id, model="ending/said")
        )
        result = await turn.result()
    task = await ledger.get_task(result.task_id)
    assert (task.user_id, task.run_id, task.status) == (
        ledger.caller.user_id,
        first.run_id,
        "completed",
    )

    # A member who is not the run's owner finds no such run, and writes nothing.
    member = Caller(ledger.caller.project_id, "member", role="member")
    with pytest.raises(NotFound), walls.acting_as(member):
        await ledger.engine.start(
            member, ChatRequest("Mine?", run_id=first.run_id, model="ending/said")
        )
    run = (await ledger.get_run(first.run_id)).run
    assert (run.message_count, run.task_count) == (4, 2)


async def _until_a_statement_waits_for_a_lock(ledger: Ledger) -> None:
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(500):
        async with ledger.database.reading() as session:
            if await session.scalar(waiting):
                return
        await asyncio.sleep(0.02)
    raise AssertionError("no statement came to wait for the run's lock")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_message_counted_in_while_a_turn_waits_is_in_its_conversation(
    ledger: Ledger, ending: Ending
) -> None:
    # The turn's one statement reads the run as it was when it began; a message another
    # transaction counts in while the statement waits for the run's lock comes after.
    first = await (await ledger.chat("Hello", model="ending/said")).result()
    project_id, run_id = ledger.caller.project_id, first.run_id
    meanwhile = messages.NewMessage(role="user", content="Meanwhile")
    async with ledger.database.transaction() as session:
        at = utcnow()
        seq = await runs.count_message(session, project_id, run_id, meanwhile.content, at)
        await messages.insert(session, project_id, run_id, seq, "m-meanwhile", meanwhile, at)
        started = asyncio.create_task(ledger.chat("After", model="ending/said", run_id=run_id))
        await _until_a_statement_waits_for_a_lock(ledger)
    result = await (await started).result()

    assert [m.content for m in ending.asked[-1].messages] == [
        "Hello",
        "Said and done.",
        "Meanwhile",
        "After",
    ]
    detail = await ledger.get_run(run_id)
    assert [(m.seq, m.content) for m in detail.messages] == [
        (1, "Hello"),
        (2, "Said and done."),
        (3, "Meanwhile"),
        (4, "After"),
        (5, "Said and done."),
    ]
    assert result.user_message_id == detail.messages[3].id
