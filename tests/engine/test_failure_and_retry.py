"""Failed replies, retries and cancellation (DESIGN.md flows 1 and 3), on real SQLite and
PostgreSQL databases: a failure keeps the user message with `error` set and the partial
text; a retry reuses the message id and adds an attempt; usage is counted exactly once;
bad input writes nothing; a cancelled reply is recorded as `cancelled`, however and
whenever the cancel comes."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, inspect, select

from chatledger import Conflict, InvalidInput, Ledger, NotFound, Settings
from chatledger.engine.chat import Turn
from chatledger.engine.events import ChatEvent
from chatledger.engine.turn import TurnResult
from chatledger.messages.models import Message
from chatledger.providers import ChatMessage
from chatledger.providers.base import estimate_tokens
from chatledger.providers.echo import count_input_tokens
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.usage.models import UsageDaily

T = TypeVar("T")

CONTENT = "alpha beta gamma delta epsilon"
REPLY = f"Echo: {CONTENT}"


async def rows(ledger: Ledger, model: type[T], *where: Any) -> list[T]:
    async with ledger.database.reading() as session:
        return list(await session.scalars(select(model).where(*where)))


async def one(ledger: Ledger, model: type[T], *where: Any) -> T:
    found = await rows(ledger, model, *where)
    assert len(found) == 1, found
    return found[0]


def snapshot(row: object) -> dict[str, Any]:
    """A row's column values, to compare a row before and after."""
    return {a.key: getattr(row, a.key) for a in inspect(row).mapper.column_attrs}


async def messages_of(ledger: Ledger, run_id: str) -> list[Message]:
    return sorted(await rows(ledger, Message, Message.run_id == run_id), key=lambda m: m.seq)


async def counts(ledger: Ledger) -> dict[str, int]:
    """How many rows each table of the save flow holds."""
    async with ledger.database.reading() as session:
        return {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Run, Task, Message, UsageDaily)
        }


async def outcome(turn: Turn) -> TurnResult | BaseException:
    """The turn's result, or what `result()` raised (a cancelled turn may raise)."""
    [ended] = await asyncio.wait_for(
        asyncio.gather(turn.result(), return_exceptions=True), timeout=30
    )
    return ended


async def deltas_seen(turn: Turn, n: int) -> list[ChatEvent]:
    """Follow the turn until `n` deltas have come; returns them."""
    seen: list[ChatEvent] = []
    async for e in turn.events():
        if e.kind == "delta":
            seen.append(e)
            if len(seen) == n:
                break
    return seen


async def failed_at(ledger: Ledger, index: int, **request: Any) -> TurnResult:
    turn = await ledger.chat(CONTENT, settings={"fail_at": index}, **request)
    result = await turn.result()
    assert result.status == "failed"
    return result


async def assert_counted_once(ledger: Ledger) -> None:
    """Every total equals the sum of the rows it counts."""
    assert await ledger.verify() == []
    all_tasks = [t for t in await rows(ledger, Task) if t.is_terminal]
    for run in await rows(ledger, Run):
        mine = [t for t in all_tasks if t.run_id == run.id]
        assert run.total_tokens == sum(t.input_tokens + t.output_tokens for t in mine)
        assert run.task_count == sum(t.status == "completed" for t in mine)
    daily = await rows(ledger, UsageDaily)
    assert sum(d.requests for d in daily) == len(all_tasks)
    failed = [t for t in all_tasks if t.status in ("failed", "interrupted")]
    assert sum(d.failed_requests for d in daily) == len(failed)
    assert sum(d.input_tokens for d in daily) == sum(t.input_tokens for t in all_tasks)
    assert sum(d.output_tokens for d in daily) == sum(t.output_tokens for t in all_tasks)


# -- failures ----------------------------------------------------------------------------


async def test_failure_before_the_first_token(ledger: Ledger) -> None:
    turn = await ledger.chat(CONTENT, message_id="q-1", settings={"fail_at": 0})
    events = [e async for e in turn.events()]
    result = await turn.result()

    error = {
        "kind": "injected_failure",
        "message": "echo: injected failure at token 0",
        "retryable": False,
    }
    assert (result.status, result.text, result.error) == ("failed", "", error)
    assert result.assistant_message_id is None
    assert [e.kind for e in events] == ["run", "task", "error"]
    assert events[-1].data == error

    task = await one(ledger, Task)
    assert (task.status, task.response_text, task.error) == ("failed", "", error)
    assert (task.input_tokens, task.output_tokens, task.usage_estimated) == (0, 0, False)
    assert (task.cost_nano, task.price_source, task.ttft_ms) == (0, "free", None)
    assert task.completed_at is not None and task.total_ms is not None

    [user] = await messages_of(ledger, result.run_id)
    assert (user.id, user.role, user.content) == ("q-1", "user", CONTENT)
    assert user.status == "error"
    assert user.error == {**error, "task_id": task.id}

    run = await one(ledger, Run)
    assert (run.task_count, run.message_count, run.total_tokens, run.total_cost_nano) == (
        0,
        1,
        0,
        0,
    )
    [daily] = await rows(ledger, UsageDaily)
    assert (daily.requests, daily.failed_requests, daily.input_tokens) == (1, 1, 0)
    await assert_counted_once(ledger)


async def test_failure_mid_stream_keeps_the_partial_text_and_its_usage(ledger: Ledger) -> None:
    result = await failed_at(ledger, 2)

    partial = "Echo: alpha "
    assert result.text == partial
    task = await one(ledger, Task)
    assert (task.status, task.response_text) == ("failed", partial)
    # The input side is what the provider reported when the reply started (not an
    # estimate); only the output, cut short before its count came, is estimated.
    assert task.usage_estimated is True
    assert task.input_tokens == count_input_tokens((ChatMessage("user", CONTENT),))
    assert task.output_tokens == estimate_tokens(partial) > 0
    assert task.ttft_ms is not None
    assert result.usage.total == task.input_tokens + task.output_tokens

    run = await one(ledger, Run)
    assert run.total_tokens == task.input_tokens + task.output_tokens
    assert (run.task_count, run.message_count) == (0, 1)
    [daily] = await rows(ledger, UsageDaily)
    assert (daily.requests, daily.failed_requests) == (1, 1)
    assert (daily.input_tokens, daily.output_tokens) == (task.input_tokens, task.output_tokens)
    assert [m.role for m in await messages_of(ledger, run.id)] == ["user"]
    await assert_counted_once(ledger)


async def test_a_failed_exchange_is_left_out_of_the_next_turns_history(ledger: Ledger) -> None:
    first = await (await ledger.chat("hello")).result()
    await failed_at(ledger, 0, run_id=first.run_id)
    third = await (await ledger.chat("again", run_id=first.run_id)).result()

    history = (
        ChatMessage("user", "hello"),
        ChatMessage("assistant", "Echo: hello"),
        ChatMessage("user", "again"),
    )
    assert third.usage.input_tokens == count_input_tokens(history)
    run = await one(ledger, Run)
    assert (run.task_count, run.message_count) == (2, 5)
    await assert_counted_once(ledger)


# -- retries -----------------------------------------------------------------------------


async def test_retry_reuses_the_message_and_counts_usage_once(ledger: Ledger) -> None:
    failed = await failed_at(ledger, 2, message_id="q-1")
    first_task = await one(ledger, Task)
    run_before = await one(ledger, Run)

    turn = await ledger.retry("q-1", settings={"delay_ms": 20})
    # While the retry streams: still the one user message, no new row, count unchanged.
    [user] = await messages_of(ledger, failed.run_id)
    assert (user.id, user.status, user.error, user.task_id) == (
        "q-1",
        "complete",
        None,
        turn.plan.task_id,
    )
    assert (await one(ledger, Run)).message_count == 1
    result = await turn.result()

    assert result.status == "completed"
    assert result.text == REPLY
    assert (result.run_id, result.user_message_id) == (failed.run_id, "q-1")
    assert turn.plan.attempt == 2
    assert turn.log.events[1].data["attempt"] == 2
    second_task = await one(ledger, Task, Task.id == result.task_id)
    assert second_task.id != first_task.id
    assert (second_task.attempt, second_task.user_message_id) == (2, "q-1")
    assert second_task.request == {"model": "echo", "settings": {"delay_ms": 20}}
    # The retried message is the question again, once.
    assert second_task.input_tokens == count_input_tokens((ChatMessage("user", CONTENT),))
    # The failed attempt is kept as it was.
    assert snapshot(await one(ledger, Task, Task.id == first_task.id)) == snapshot(first_task)

    user, assistant = await messages_of(ledger, failed.run_id)
    assert (user.id, user.content, user.status, user.error) == ("q-1", CONTENT, "complete", None)
    assert user.task_id == second_task.id
    assert (assistant.role, assistant.content) == ("assistant", REPLY)
    assert (assistant.task_id, assistant.parent_id) == (second_task.id, "q-1")

    run = await one(ledger, Run)
    assert run.message_count == run_before.message_count + 1 == 2
    assert run.task_count == 1
    both = first_task.input_tokens + first_task.output_tokens
    both += second_task.input_tokens + second_task.output_tokens
    assert run.total_tokens == both
    [daily] = await rows(ledger, UsageDaily)
    assert (daily.requests, daily.failed_requests) == (2, 1)
    assert daily.input_tokens + daily.output_tokens == both
    await assert_counted_once(ledger)


async def test_a_retry_can_fail_again_and_be_retried_again(ledger: Ledger) -> None:
    await failed_at(ledger, 0, message_id="q-1")
    again = await (await ledger.retry("q-1", settings={"fail_at": 1})).result()
    assert again.status == "failed"
    [user] = await messages_of(ledger, again.run_id)
    assert user.status == "error"
    assert user.error is not None and user.error["task_id"] == again.task_id

    third = await (await ledger.retry("q-1")).result()

    assert third.status == "completed"
    attempts = sorted((t.attempt, t.status) for t in await rows(ledger, Task))
    assert attempts == [(1, "failed"), (2, "failed"), (3, "completed")]
    assert len(await messages_of(ledger, third.run_id)) == 2
    await assert_counted_once(ledger)


async def test_retry_refuses_answered_assistant_and_unknown_messages(ledger: Ledger) -> None:
    result = await (await ledger.chat("hello", message_id="q-1")).result()
    assert result.assistant_message_id is not None
    before = await counts(ledger)

    with pytest.raises(Conflict):
        await ledger.retry("q-1")
    with pytest.raises(InvalidInput) as raised:
        await ledger.retry(result.assistant_message_id)
    assert raised.value.field == "message_id"
    with pytest.raises(NotFound):
        await ledger.retry("no-such-message")

    assert await counts(ledger) == before
    assert ledger.engine._live == set()


async def test_retrying_a_message_being_answered_is_a_conflict(ledger: Ledger) -> None:
    turn = await ledger.chat("slow", message_id="q-1", settings={"delay_ms": 20})

    with pytest.raises(Conflict):
        await ledger.retry("q-1")
    with pytest.raises(Conflict):
        await ledger.chat("slow", message_id="q-1")

    assert (await turn.result()).status == "completed"
    assert len(await rows(ledger, Task)) == 1


async def test_sending_a_failed_message_again_is_a_retry(ledger: Ledger) -> None:
    failed = await failed_at(ledger, 2, message_id="q-1")
    before = await counts(ledger)

    # The same id with other content is not the same message: refused, nothing written.
    with pytest.raises(Conflict):
        await ledger.chat("something else entirely", message_id="q-1")
    assert await counts(ledger) == before
    [user] = await rows(ledger, Message)
    assert (user.content, user.status) == (CONTENT, "error")

    turn = await ledger.chat(CONTENT, message_id="q-1")
    result = await turn.result()

    assert result.status == "completed"
    assert (result.run_id, result.user_message_id) == (failed.run_id, "q-1")
    assert turn.plan.attempt == 2
    assert turn.plan.run_created is False
    assert len(await rows(ledger, Run)) == 1
    assert [m.role for m in await messages_of(ledger, failed.run_id)] == ["user", "assistant"]
    run = await one(ledger, Run)
    assert (run.message_count, run.task_count) == (2, 1)
    await assert_counted_once(ledger)

    # Answered now: sending it once more is refused, not answered twice.
    with pytest.raises(Conflict):
        await ledger.chat(CONTENT, message_id="q-1")
    assert len(await rows(ledger, Task)) == 2


# -- bad input writes nothing ------------------------------------------------------------


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"model": "nope/x"}, "model"),
    ({"model": "gpt-4o"}, "model"),
    ({"settings": {"delay_ms": "abc"}}, "delay_ms"),
    ({"settings": {"fail_at": 1.5}}, "fail_at"),
    ({"message_id": "not a valid id!"}, "message.id"),
    ({"task_id": "bad/id"}, "id"),
]
NOTHING = {"runs": 0, "tasks": 0, "messages": 0, "usage_daily": 0}


async def test_bad_input_is_refused_before_anything_is_written(ledger: Ledger) -> None:
    for request, field in [*BAD_REQUESTS, ({}, "content")]:
        with pytest.raises(InvalidInput) as raised:
            await ledger.chat("hello" if request else "   \n", **request)

        assert raised.value.field == field
        assert await counts(ledger) == NOTHING, request
    assert ledger.engine._live == set()


async def test_bad_input_on_a_follow_up_leaves_the_run_as_it_was(ledger: Ledger) -> None:
    first = await (await ledger.chat("hello")).result()
    before = await counts(ledger)
    run_before = snapshot(await one(ledger, Run))

    for request, field in BAD_REQUESTS:
        with pytest.raises(InvalidInput) as raised:
            await ledger.chat("follow-up", run_id=first.run_id, **request)

        assert raised.value.field == field
        assert await counts(ledger) == before, request
        assert snapshot(await one(ledger, Run)) == run_before, request


async def test_a_retry_with_a_bad_setting_writes_nothing(ledger: Ledger) -> None:
    await failed_at(ledger, 0, message_id="q-1")
    before = await counts(ledger)
    user_before = await one(ledger, Message)

    with pytest.raises(InvalidInput):
        await ledger.retry("q-1", settings={"delay_ms": "abc"})

    assert await counts(ledger) == before
    assert snapshot(await one(ledger, Message)) == snapshot(user_before)


# -- cancellation ------------------------------------------------------------------------


async def assert_cancelled(ledger: Ledger, turn: Turn, ended: TurnResult | BaseException) -> Task:
    """The turn is recorded as cancelled, its text kept and its usage counted once; its
    result is that record, not the cancellation."""
    assert isinstance(ended, TurnResult), ended
    assert ended.status == "cancelled"
    task = await one(ledger, Task, Task.id == turn.plan.task_id)
    assert task.status == "cancelled"
    assert task.error is not None and task.error["kind"] == "cancelled"
    assert REPLY.startswith(task.response_text)
    [user] = await messages_of(ledger, turn.plan.run_id)
    assert (user.role, user.status) == ("user", "error")
    assert user.error is not None and user.error["kind"] == "cancelled"
    assert turn.log.closed
    assert turn.log.events[-1].kind == "error"
    run = await one(ledger, Run, Run.id == turn.plan.run_id)
    assert (run.task_count, run.message_count) == (0, 1)
    assert run.total_tokens == task.input_tokens + task.output_tokens
    await assert_counted_once(ledger)
    assert ledger.engine._live == set()
    return task


async def test_cancelling_mid_stream_keeps_the_partial_text(ledger: Ledger) -> None:
    turn = await ledger.chat(CONTENT, settings={"delay_ms": 30})
    seen = await deltas_seen(turn, 2)
    turn.cancel()
    ended = await outcome(turn)

    task = await assert_cancelled(ledger, turn, ended)
    streamed = "".join(e.data["text"] for e in seen)
    assert task.response_text.startswith(streamed)
    assert 0 < len(task.response_text) < len(REPLY)
    assert task.usage_estimated is True
    assert task.output_tokens == estimate_tokens(task.response_text)


async def test_a_turn_cancelled_before_it_started_is_recorded(ledger: Ledger) -> None:
    turn = await ledger.chat(CONTENT, settings={"delay_ms": 30})
    turn.cancel()

    task = await assert_cancelled(ledger, turn, await outcome(turn))
    assert task.response_text == ""


async def test_a_turn_cancelled_as_its_stream_ends_is_recorded(ledger: Ledger) -> None:
    # No delay: the whole stream comes in the turn's first step, and the cancel lands
    # somewhere between its end and the recording of its completion (each turn in a run
    # of its own). Either way the task ends, exactly once; it is never left pending.
    statuses = []
    for steps in (0, 1, 2, 3, 5, 8, 13, 21, 34):
        turn = await ledger.chat(CONTENT)
        for _ in range(steps):
            await asyncio.sleep(0)
        turn.cancel()
        ended = await outcome(turn)

        task = await one(ledger, Task, Task.id == turn.plan.task_id)
        statuses.append(task.status)
        if task.status == "completed":
            # The cancel came while the completion was being recorded, or after: too late,
            # the reply stands.
            assert isinstance(ended, TurnResult) and ended.status == "completed", steps
            assert len(await messages_of(ledger, turn.plan.run_id)) == 2
            await assert_counted_once(ledger)
            continue
        task = await assert_cancelled(ledger, turn, ended)
        assert task.response_text == REPLY, "the whole reply had streamed"
    # Cancelled at once: the turn's first step streamed the whole reply and went straight
    # on to record it (closing its progress waits only for a write in flight, and none
    # was), so the cancel came too late. Cancels that land inside a stream are the tests
    # above; here no step leaves a task pending or counts it twice.
    assert statuses[0] == "completed"
    assert statuses[-1] == "completed"


async def test_a_cancel_while_a_failure_is_recorded_does_not_lose_it(ledger: Ledger) -> None:
    for steps in (0, 1, 2, 3, 5, 8, 13):
        turn = await ledger.chat(CONTENT, settings={"fail_at": 0})
        for _ in range(steps):
            await asyncio.sleep(0)
        turn.cancel()
        ended = await outcome(turn)

        # The reply had already failed: the failure stands, recorded in full.
        assert isinstance(ended, TurnResult) and ended.status == "failed", steps
        task = await one(ledger, Task, Task.id == turn.plan.task_id)
        assert task.status == "failed"
        [user] = await messages_of(ledger, turn.plan.run_id)
        assert user.status == "error"
    assert ledger.engine._live == set()
    await assert_counted_once(ledger)


async def test_cancelling_twice_records_once(ledger: Ledger) -> None:
    turn = await ledger.chat(CONTENT, settings={"delay_ms": 30})
    await deltas_seen(turn, 1)
    turn.cancel()
    await asyncio.sleep(0)  # the turn is now recording its cancellation
    turn.cancel()
    await ledger.engine.shutdown()

    await assert_cancelled(ledger, turn, await outcome(turn))


async def test_closing_the_ledger_records_replies_in_flight_as_cancelled(
    settings: Settings,
) -> None:
    async with Ledger(settings) as ledger:
        turn = await ledger.chat(CONTENT, settings={"delay_ms": 30})
        await deltas_seen(turn, 1)
    async with Ledger(settings) as reopened:
        await assert_cancelled(reopened, turn, await outcome(turn))


async def test_a_task_cancelled_elsewhere_stops_the_stream(ledger: Ledger) -> None:
    """Cancelled through the API (another transaction): the turn stops streaming and does
    not record over it; the cancellation counted the task once."""
    content = " ".join(f"w{i}" for i in range(40))
    turn = await ledger.chat(content, settings={"delay_ms": 20})
    await deltas_seen(turn, 2)
    async with ledger.database.transaction() as session:
        ended, _ = await tasks.finish(
            session, ledger.caller, turn.plan.task_id, tasks.Outcome("cancelled")
        )
        cancelled_row = {c: getattr(ended, c) for c in ("status", "response_text", "updated_at")}

    result = await asyncio.wait_for(turn.result(), timeout=30)

    assert result.status == "cancelled"
    assert len(result.text) < len(f"Echo: {content}")
    assert turn.log.events[-1].kind == "error"
    assert not any(e.kind == "done" for e in turn.log.events)
    task = await one(ledger, Task)
    # Nothing was written over the cancellation.
    assert {c: getattr(task, c) for c in cancelled_row} == cancelled_row
    assert task.status == "cancelled"
    [user_message] = await messages_of(ledger, result.run_id)
    # Its exchange failed, so the message is marked like any other failed exchange.
    assert (user_message.role, user_message.status) == ("user", "error")
    assert user_message.error is not None and user_message.error["kind"] == "cancelled"
    await assert_counted_once(ledger)
