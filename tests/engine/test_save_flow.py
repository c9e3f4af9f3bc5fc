"""DESIGN.md flow 1, step by step, on real SQLite and PostgreSQL databases: the run is
created and named from the first message, the task and the user message are stored
before the model is called, the reply is saved debounced while it streams, and its
completion stores text, tokens, cost and timings, moves the run's aggregates and adds the
assistant message. Follow-ups reuse the run; watchers come and go without touching the
record."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, select

from chatledger import Ledger, Settings
from chatledger.engine.chat import Turn
from chatledger.engine.events import ChatEvent
from chatledger.engine.progress import ProgressWriter
from chatledger.messages.models import Message
from chatledger.providers import ChatMessage, Delta, Finished, ModelRequest, StreamEvent
from chatledger.providers.base import estimate_tokens
from chatledger.providers.echo import count_input_tokens
from chatledger.runs.models import Run
from chatledger.runs.service import NAME_LENGTH
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tokens import TokenUsage
from chatledger.usage.models import UsageDaily
from tests.registered import registered

T = TypeVar("T")

# About thirty words: long enough for a reply that streams for a while with `delay_ms`.
LONG_MESSAGE = (
    "Tell me everything about the history of basketball, from the peach baskets in "
    "Springfield to the modern game, with the rules that changed along the way and why"
)


async def rows(ledger: Ledger, model: type[T], *where: Any) -> list[T]:
    """The stored rows, read in a session of their own (never the engine's)."""
    async with ledger.database.reading() as session:
        return list(await session.scalars(select(model).where(*where)))


async def messages_of(ledger: Ledger, run_id: str) -> list[Message]:
    return sorted(await rows(ledger, Message, Message.run_id == run_id), key=lambda m: m.seq)


async def one(ledger: Ledger, model: type[T], *where: Any) -> T:
    found = await rows(ledger, model, *where)
    assert len(found) == 1, found
    return found[0]


async def collect(turn: Turn, after: int = 0) -> list[ChatEvent]:
    return [e async for e in turn.events(after)]


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not true within {seconds}s"
        await asyncio.sleep(0.005)


def echo_of(content: str) -> str:
    return f"Echo: {content}"


# -- a provider that looks at the database when it is called -----------------------------


@dataclass
class Sighting:
    """What the database held at the moment the model was called."""

    request: ModelRequest
    runs: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    messages: list[dict[str, Any]]


class ProbeProvider:
    name = "probe"
    reply = ("Seen ", "it.")
    usage = TokenUsage(input_tokens=11, output_tokens=2)

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.sightings: list[Sighting] = []

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        pass

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        async with self.ledger.database.reading() as session:
            runs = [
                {"id": r.id, "name": r.name, "message_count": r.message_count}
                for r in await session.scalars(select(Run))
            ]
            tasks = [
                {
                    "id": t.id,
                    "status": t.status,
                    "provider": t.provider,
                    "model": t.model,
                    "request": t.request,
                    "attempt": t.attempt,
                    "user_message_id": t.user_message_id,
                    "response_text": t.response_text,
                    "completed_at": t.completed_at,
                }
                for t in await session.scalars(select(Task).order_by(Task.created_at))
            ]
            messages = [
                {
                    "id": m.id,
                    "role": m.role,
                    "content": m.content,
                    "status": m.status,
                    "task_id": m.task_id,
                }
                for m in await session.scalars(select(Message).order_by(Message.seq))
            ]
        self.sightings.append(Sighting(request, runs, tasks, messages))
        for text in self.reply:
            yield Delta(text)
        yield Finished(self.usage)


@pytest.fixture
def probe(ledger: Ledger) -> Iterator[ProbeProvider]:
    with registered("probe", ProbeProvider(ledger)) as provider:
        yield provider


# -- step 1: the run, named from the first message ----------------------------------------


async def test_first_message_creates_a_run_named_from_it(ledger: Ledger) -> None:
    assert await rows(ledger, Run) == []

    turn = await ledger.chat("What is the capital of France?")
    result = await turn.result()

    run = await one(ledger, Run)
    assert run.id == result.run_id == turn.plan.run_id
    assert run.name == "What is the capital of France?"
    assert run.name_source == "auto"
    assert (run.project_id, run.user_id) == ("local", "local")
    assert run.settings == {"model": "echo"}
    assert turn.plan.run_created is True
    first = turn.log.events[0]
    assert (first.kind, first.data) == (
        "run",
        {"id": run.id, "name": "What is the capital of France?", "created": True},
    )


NAMES = [
    ("\n\n   Plan my week:  \n- monday: gym\n- tuesday: rest", "Plan my week:"),
    ("  lots   of\tspace  here ", "lots of space here"),
    ("x" * 200, "x" * NAME_LENGTH + "…"),
]


async def test_long_and_multi_line_messages_give_a_cut_clean_name(ledger: Ledger) -> None:
    for content, expected in NAMES:
        result = await (await ledger.chat(content)).result()

        run = await one(ledger, Run, Run.id == result.run_id)
        assert (run.name, run.name_source) == (expected, "auto")

    result = await (await ledger.chat(LONG_MESSAGE)).result()

    name = (await one(ledger, Run, Run.id == result.run_id)).name
    assert name.endswith("…")
    kept = name[:-1]
    assert 10 < len(kept) <= NAME_LENGTH
    assert LONG_MESSAGE.startswith(kept)
    assert LONG_MESSAGE[len(kept)] == " ", "cut at a word boundary, not inside a word"

    # A name given with the first message is the user's, and is kept as given.
    named = await (await ledger.chat("hello", run_name="Trip planning")).result()
    run = await one(ledger, Run, Run.id == named.run_id)
    assert (run.name, run.name_source) == ("Trip planning", "user")


# -- step 1: task and user message exist before the model is called -----------------------


async def test_task_and_user_message_are_stored_before_the_model_is_called(
    ledger: Ledger, probe: ProbeProvider
) -> None:
    turn = await ledger.chat(
        "Is anyone there?",
        model="probe/m1",
        message_id="msg-1",
        task_id="task-1",
        settings={"temperature": 0.5},
    )
    result = await turn.result()

    assert result.status == "completed"
    [seen] = probe.sightings
    assert seen.runs == [{"id": result.run_id, "name": "Is anyone there?", "message_count": 1}]
    assert seen.tasks == [
        {
            "id": "task-1",
            "status": "pending",
            "provider": "probe",
            "model": "m1",
            "request": {"model": "probe/m1", "settings": {"temperature": 0.5}},
            "attempt": 1,
            "user_message_id": "msg-1",
            "response_text": "",
            "completed_at": None,
        }
    ]
    assert seen.messages == [
        {
            "id": "msg-1",
            "role": "user",
            "content": "Is anyone there?",
            "status": "complete",
            "task_id": "task-1",
        }
    ]
    assert seen.request == ModelRequest(
        "m1", (ChatMessage("user", "Is anyone there?"),), {"temperature": 0.5}
    )
    # The task id the stream uses is the stored one.
    assert turn.plan.task_id == result.task_id == "task-1"
    assert turn.log.events[1].data == {"id": "task-1", "attempt": 1, "model": "m1"}

    # A model with no known price is recorded as unpriced, not as free.
    task = await one(ledger, Task, Task.id == "task-1")
    assert (task.input_tokens, task.output_tokens) == (11, 2)
    assert (task.cost_nano, task.price_source) == (None, "unknown")
    assert task.response_text == "Seen it."
    run = await one(ledger, Run, Run.id == result.run_id)
    assert (run.total_tokens, run.total_cost_nano, run.last_model) == (13, 0, "m1")
    # The run remembers the model; the turn's own settings stay with its task.
    assert run.settings == {"model": "probe/m1"}
    assert await ledger.verify() == []


# -- step 2: the reply is saved while it streams -------------------------------------------


async def test_the_reply_is_saved_as_streaming_while_it_streams(ledger: Ledger) -> None:
    turn = await ledger.chat(LONG_MESSAGE, settings={"delay_ms": 30})
    final_text = echo_of(LONG_MESSAGE)
    seen: list[tuple[str, str]] = []

    deadline = time.monotonic() + 30
    while True:
        async with ledger.database.reading() as session:
            task = await session.get(Task, ("local", turn.plan.task_id))
            assert task is not None
            seen.append((task.status, task.response_text))
        if task.is_terminal:
            break
        assert time.monotonic() < deadline, "the turn did not end"
        await asyncio.sleep(0.005)
    await turn.result()

    streaming = [text for status, text in seen if status == "streaming"]
    assert any(0 < len(text) < len(final_text) for text in streaming), seen
    assert all(final_text.startswith(text) for text in streaming)
    # Each save holds at least what the one before it held.
    texts = [text for _, text in seen]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    statuses = [status for status, _ in seen]
    assert set(statuses) <= {"pending", "streaming", "completed"}
    assert statuses[-1] == "completed"
    assert "pending" not in statuses[statuses.index("streaming") :]


async def test_progress_writes_are_debounced(settings: Settings) -> None:
    debounced = settings.model_copy(update={"stream_debounce_ms": 200})
    progress_writes: list[float] = []

    async with Ledger(debounced) as ledger:

        def count(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            values = params.values() if isinstance(params, Mapping) else params or ()
            said = statement.upper()
            # The progress writer's statement names the status; `tasks.progress` binds it.
            if "UPDATE TASKS" in said and ("'STREAMING'" in said or "streaming" in values):
                progress_writes.append(time.monotonic())

        sync_engine = ledger.database.write_engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", count)
        try:
            content = " ".join(f"word{i}" for i in range(24))
            turn = await ledger.chat(content, settings={"delay_ms": 40})
            events = await collect(turn)
            result = await turn.result()
        finally:
            event.remove(sync_engine, "before_cursor_execute", count)

    deltas = [e for e in events if e.kind == "delta"]
    assert len(deltas) == 25
    assert result.status == "completed"
    assert result.total_ms is not None and result.total_ms >= 900
    # At most one write per 200 ms, the first 200 ms in: several while it streams.
    assert 2 <= len(progress_writes) <= result.total_ms / 200 + 2, progress_writes
    assert len(progress_writes) < len(deltas) / 2
    gaps = [b - a for a, b in itertools.pairwise(progress_writes)]
    assert all(gap >= 0.15 for gap in gaps), gaps


# -- step 3: completion --------------------------------------------------------------------


async def test_completion_stores_text_tokens_cost_and_timings(ledger: Ledger) -> None:
    content = "one two three four"
    before = datetime.now(UTC)
    turn = await ledger.chat(content, message_id="q-1", settings={"delay_ms": 20})
    result = await turn.result()

    task = await one(ledger, Task, Task.id == result.task_id)
    reply = echo_of(content)
    assert task.status == "completed"
    assert task.response_text == result.text == reply
    assert task.error is None
    assert task.input_tokens == count_input_tokens((ChatMessage("user", content),))
    assert task.output_tokens == estimate_tokens(reply)
    assert (task.cached_tokens, task.reasoning_tokens, task.usage_estimated) == (0, 0, False)
    assert (task.cost_nano, task.price_source) == (0, "free")
    assert (task.provider, task.model, task.service, task.task_name) == (
        "echo",
        "echo",
        "chat",
        "chat",
    )
    assert task.request == {"model": "echo", "settings": {"delay_ms": 20}}
    # echo sleeps before each of its 5 words: the first after ~20 ms, all after ~100 ms.
    assert task.ttft_ms is not None and task.total_ms is not None
    assert task.ttft_ms >= 15
    assert task.total_ms >= task.ttft_ms + 4 * 15
    assert task.completed_at is not None and before <= task.completed_at <= datetime.now(UTC)
    assert result.usage == TokenUsage(task.input_tokens, task.output_tokens)
    assert (result.cost_nano, result.price_source) == (0, "free")
    assert (result.ttft_ms, result.total_ms) == (task.ttft_ms, task.total_ms)

    # The assistant message is stored, linked to its task and to the question.
    user, assistant = await messages_of(ledger, result.run_id)
    assert (user.id, user.seq, user.role, user.content) == ("q-1", 1, "user", content)
    assert (user.status, user.error, user.task_id) == ("complete", None, task.id)
    assert assistant.id == result.assistant_message_id
    assert (assistant.seq, assistant.role, assistant.content) == (2, "assistant", reply)
    assert (assistant.task_id, assistant.parent_id) == (task.id, "q-1")
    assert (assistant.status, assistant.error) == ("complete", None)
    assert assistant.metadata_ == {"model": "echo"}
    assert task.user_message_id == result.user_message_id == "q-1"


async def test_run_aggregates_follow_each_turn(ledger: Ledger) -> None:
    first = await (await ledger.chat("first question")).result()
    second = await (await ledger.chat("second question", run_id=first.run_id)).result()

    run = await one(ledger, Run)
    tasks = await rows(ledger, Task, Task.run_id == run.id)
    messages = await rows(ledger, Message, Message.run_id == run.id)
    assert len(tasks) == run.task_count == 2
    assert len(messages) == run.message_count == 4
    assert run.total_tokens == sum(t.input_tokens + t.output_tokens for t in tasks) > 0
    assert run.total_cost_nano == 0
    last = max(messages, key=lambda m: m.seq)
    assert (last.role, last.id) == ("assistant", second.assistant_message_id)
    assert run.last_message_at == last.created_at
    assert run.last_message_preview == "Echo: second question"
    assert run.last_model == "echo"
    # The follow-up was asked with the whole conversation so far.
    history = (
        ChatMessage("user", "first question"),
        ChatMessage("assistant", "Echo: first question"),
        ChatMessage("user", "second question"),
    )
    assert second.usage.input_tokens == count_input_tokens(history)
    assert second.usage.input_tokens > first.usage.input_tokens

    [daily] = await rows(ledger, UsageDaily)
    assert (daily.project_id, daily.user_id, daily.model) == ("local", "local", "echo")
    assert daily.day == max(t.completed_at for t in tasks if t.completed_at).date()
    assert (daily.requests, daily.failed_requests) == (2, 0)
    assert daily.input_tokens == sum(t.input_tokens for t in tasks)
    assert daily.output_tokens == sum(t.output_tokens for t in tasks)
    assert daily.cost_nano == 0
    assert await ledger.verify() == []


# -- follow-ups ------------------------------------------------------------------------------


async def test_a_follow_up_reuses_the_run_and_sends_the_history(
    ledger: Ledger, probe: ProbeProvider
) -> None:
    first_turn = await ledger.chat("first", model="probe/m1")
    first = await first_turn.result()
    # No model given: the run's model is used.
    second_turn = await ledger.chat("second", run_id=first.run_id)
    second = await second_turn.result()

    assert second.run_id == first.run_id
    assert await one(ledger, Run) is not None
    assert second_turn.plan.run_created is False
    assert second_turn.log.events[0].data == {"id": first.run_id, "name": "first", "created": False}
    assert [s.request.messages for s in probe.sightings] == [
        (ChatMessage("user", "first"),),
        (
            ChatMessage("user", "first"),
            ChatMessage("assistant", "Seen it."),
            ChatMessage("user", "second"),
        ),
    ]
    assert probe.sightings[1].request.model == "m1"
    assert [(m.seq, m.role) for m in await messages_of(ledger, first.run_id)] == [
        (1, "user"),
        (2, "assistant"),
        (3, "user"),
        (4, "assistant"),
    ]
    run = await one(ledger, Run)
    assert (run.name, run.task_count, run.message_count) == ("first", 2, 4)


# -- events ------------------------------------------------------------------------------------


async def test_events_have_increasing_ids_and_come_in_order(ledger: Ledger) -> None:
    turn = await ledger.chat("one two three", settings={"delay_ms": 5})
    events = await collect(turn)
    result = await turn.result()

    assert [e.id for e in events] == list(range(1, len(events) + 1))
    kinds = [e.kind for e in events]
    assert kinds == ["run", "task", "delta", "delta", "delta", "delta", "usage", "done"]
    assert "".join(e.data["text"] for e in events if e.kind == "delta") == result.text
    task = await one(ledger, Task, Task.id == result.task_id)
    usage = events[-2].data
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        task.input_tokens,
        task.output_tokens,
    )
    assert (usage["price_source"], usage["estimated"]) == ("free", False)
    assert Decimal(usage["cost_usd"]) == 0
    assert (usage["ttft_ms"], usage["total_ms"]) == (task.ttft_ms, task.total_ms)
    assert events[-1].data == {
        "task_id": result.task_id,
        "message_id": result.assistant_message_id,
        "status": "completed",
    }


async def test_events_after_an_id_resume_after_it(ledger: Ledger) -> None:
    turn = await ledger.chat("a b c d e f", settings={"delay_ms": 10})
    head = []
    async for e in turn.events():
        head.append(e)
        if e.id == 3:
            break
    # A second watcher joins while the reply streams and resumes where the first stopped.
    tail = await collect(turn, after=3)
    await turn.result()

    everything = await collect(turn)
    assert head + tail == everything
    assert [e.id for e in tail] == list(range(4, len(everything) + 1))
    assert await collect(turn, after=5) == everything[5:]
    assert await collect(turn, after=len(everything)) == []


async def test_a_watcher_that_leaves_early_does_not_stop_the_record(ledger: Ledger) -> None:
    content = "keep going after I leave"
    turn = await ledger.chat(content, settings={"delay_ms": 15})
    watcher = turn.events()
    async for e in watcher:
        if e.kind == "delta":
            break
    await watcher.aclose()

    result = await asyncio.wait_for(turn.result(), timeout=30)

    assert result.status == "completed"
    assert result.text == echo_of(content)
    task = await one(ledger, Task, Task.id == result.task_id)
    assert (task.status, task.response_text) == ("completed", echo_of(content))
    assert [m.role for m in await messages_of(ledger, result.run_id)] == ["user", "assistant"]
    assert await ledger.verify() == []


async def test_a_cancelled_watcher_does_not_cancel_the_turn(ledger: Ledger) -> None:
    turn = await ledger.chat("slowly now", settings={"delay_ms": 15})
    seen: list[ChatEvent] = []

    async def watch() -> None:
        async for e in turn.events():
            seen.append(e)

    watcher = asyncio.create_task(watch())
    await within(10, lambda: _async(any(e.kind == "delta" for e in seen)))
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    # Someone awaiting the result and then cancelled must not cancel it either.
    waiter = asyncio.create_task(turn.result())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)

    result = await asyncio.wait_for(turn.result(), timeout=30)
    assert result.status == "completed"
    task = await one(ledger, Task, Task.id == result.task_id)
    assert task.status == "completed"


async def _async(value: bool) -> bool:
    return value


# -- the progress writer on its own ----------------------------------------------------------


async def new_task(ledger: Ledger) -> Task:
    async with ledger.database.transaction() as session:
        task, _ = await tasks.create(
            session, ledger.caller, tasks.NewTask(run_id=None, model="echo", provider="echo")
        )
    return task


async def test_progress_writer_writes_at_most_once_per_interval(ledger: Ledger) -> None:
    task = await new_task(ledger)
    writer = ProgressWriter(ledger.database, interval_s=1.0, heartbeat_s=60).follow(
        task.project_id, task.id
    )
    try:
        text = ""
        for i in range(30):  # many notes within one interval: one write carries them
            text += f"w{i} "
            writer.note(text)
            await asyncio.sleep(0.001)
        await within(10, lambda: _async(writer.writes >= 1))
        written = text
        writer.note(text + "more")  # within the interval after that write: not yet
        await asyncio.sleep(0.3)
        assert writer.writes == 1
    finally:
        await writer.close()
    stored = await one(ledger, Task, Task.id == task.id)
    assert stored.status == "streaming"
    assert stored.response_text == written  # the latest text when the write came


async def test_progress_writer_heartbeats_while_the_model_is_silent(ledger: Ledger) -> None:
    task = await new_task(ledger)
    writer = ProgressWriter(ledger.database, interval_s=0.02, heartbeat_s=0.1).follow(
        task.project_id, task.id
    )
    try:
        await within(10, lambda: _async(writer.writes >= 2))
    finally:
        await writer.close()
    stored = await one(ledger, Task, Task.id == task.id)
    assert (stored.status, stored.response_text) == ("streaming", "")
    assert stored.heartbeat_at > task.heartbeat_at


async def test_progress_writer_stops_when_the_task_ended_elsewhere(ledger: Ledger) -> None:
    task = await new_task(ledger)
    async with ledger.database.transaction() as session:
        await tasks.finish(session, ledger.caller, task.id, tasks.Outcome("cancelled"))
    writer = ProgressWriter(ledger.database, interval_s=0.02, heartbeat_s=60).follow(
        task.project_id, task.id
    )
    try:
        writer.note("too late")
        await within(10, lambda: _async(writer.ended_as is not None))
    finally:
        await writer.close()
    assert (writer.ended_as, writer.writes) == ("cancelled", 0)
    stored = await one(ledger, Task, Task.id == task.id)
    assert (stored.status, stored.response_text) == ("cancelled", "")
