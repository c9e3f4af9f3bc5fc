"""The sweeper (DESIGN.md invariants): tasks left `pending`/`streaming` with no heartbeat for
the lease become `interrupted`, their partial text kept, counted exactly once; sweeping
again changes nothing; tasks whose writer is alive are never touched. On real SQLite and
PostgreSQL databases."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import inspect, select, update

from chatledger import Conflict, Ledger, Settings
from chatledger.db.types import utcnow
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.providers import estimate_tokens
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tokens import TokenUsage
from chatledger.usage.models import UsageDaily

T = TypeVar("T")

LEASE_EXPIRED = {"kind": "lease_expired", "message": "no heartbeat for 60s"}


async def rows(ledger: Ledger, model: type[T], *where: Any) -> list[T]:
    async with ledger.database.reading() as session:
        return list(await session.scalars(select(model).where(*where)))


async def task_row(ledger: Ledger, task_id: str) -> Task:
    [task] = await rows(ledger, Task, Task.id == task_id)
    return task


def snapshot(row: object) -> dict[str, Any]:
    return {a.key: getattr(row, a.key) for a in inspect(row).mapper.column_attrs}


async def everything(ledger: Ledger) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables the sweeper may move, in a comparable form."""
    found = {}
    for model in (Run, Task, Message, UsageDaily):
        found[model.__tablename__] = sorted(
            (snapshot(row) for row in await rows(ledger, model)), key=repr
        )
    return found


async def live_task(
    ledger: Ledger,
    task_id: str,
    *,
    run_id: str = "r1",
    text: str | None = None,
    silent_for: float = 0,
    user_message_id: str | None = None,
) -> None:
    """A task as a writer leaves it: created, maybe some text streamed, and its last
    heartbeat `silent_for` seconds ago."""
    async with ledger.database.transaction() as session:
        await tasks.create(
            session,
            ledger.caller,
            tasks.NewTask(
                id=task_id,
                run_id=run_id,
                model="echo",
                provider="echo",
                user_message_id=user_message_id,
            ),
        )
        if text is not None:
            await tasks.progress(session, ledger.caller, task_id, text)
        await backdate(session, task_id, silent_for)


async def backdate(session: Any, task_id: str, seconds: float) -> None:
    await session.execute(
        update(Task)
        .where(Task.project_id == "local", Task.id == task_id)
        .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
    )


async def assert_counted_once(ledger: Ledger) -> None:
    assert await ledger.verify() == []
    ended = [t for t in await rows(ledger, Task) if t.is_terminal]
    daily = await rows(ledger, UsageDaily)
    assert sum(d.requests for d in daily) == len(ended)
    assert sum(d.failed_requests for d in daily) == sum(
        t.status in ("failed", "interrupted") for t in ended
    )


async def test_stale_live_tasks_are_interrupted_and_fresh_ones_left_alone(
    ledger: Ledger,
) -> None:
    assert ledger.settings.task_lease_seconds == 60
    await live_task(ledger, "stale-pending", silent_for=120)
    await live_task(ledger, "stale-streaming", text="The answer is", silent_for=61)
    await live_task(ledger, "stale-other-run", run_id="r2", text="Partial", silent_for=3600)
    await live_task(ledger, "fresh-pending")
    await live_task(ledger, "fresh-streaming", text="Still talking", silent_for=30)
    await live_task(ledger, "done-long-ago", silent_for=0)
    async with ledger.database.transaction() as session:
        await tasks.finish(
            session,
            ledger.caller,
            "done-long-ago",
            tasks.Outcome("completed", "Done.", TokenUsage(10, 5)),
        )
        await backdate(session, "done-long-ago", 7200)
    untouched = {
        task_id: snapshot(await task_row(ledger, task_id))
        for task_id in ("fresh-pending", "fresh-streaming", "done-long-ago")
    }
    before = {r.id: snapshot(r) for r in await rows(ledger, Run)}

    swept = await ledger.sweep()

    assert sorted(swept) == ["stale-other-run", "stale-pending", "stale-streaming"]
    for task_id, text in [
        ("stale-pending", ""),
        ("stale-streaming", "The answer is"),
        ("stale-other-run", "Partial"),
    ]:
        task = await task_row(ledger, task_id)
        assert (task.status, task.response_text, task.error) == ("interrupted", text, LEASE_EXPIRED)
        assert task.completed_at is not None
        assert (task.cost_nano, task.price_source) == (0, "free")
    for task_id, row in untouched.items():
        assert snapshot(await task_row(ledger, task_id)) == row

    # Interrupted attempts are counted into their runs (as usage, not as answers).
    runs = {r.id: r for r in await rows(ledger, Run)}
    assert runs["r1"].task_count == before["r1"]["task_count"] == 1
    assert runs["r2"].task_count == 0
    # The streamed text was paid for: its output tokens are estimated, and flagged so.
    streamed = estimate_tokens("The answer is"), estimate_tokens("Partial")
    assert all(n > 0 for n in streamed)
    assert runs["r1"].total_tokens == 15 + streamed[0]
    assert runs["r2"].total_tokens == streamed[1]
    assert (await task_row(ledger, "stale-streaming")).usage_estimated
    [daily] = await rows(ledger, UsageDaily)
    assert (daily.requests, daily.failed_requests) == (4, 3)
    assert (daily.input_tokens, daily.output_tokens) == (10, 5 + sum(streamed))
    await assert_counted_once(ledger)


async def test_sweeping_again_changes_nothing(ledger: Ledger) -> None:
    await live_task(ledger, "stale", text="half an answ", silent_for=300)
    await live_task(ledger, "fresh", text="going", silent_for=1)
    assert await ledger.sweep() == ["stale"]
    after_first = await everything(ledger)

    assert await ledger.sweep() == []
    assert await ledger.sweep() == []

    assert await everything(ledger) == after_first
    await assert_counted_once(ledger)


async def test_an_interrupted_task_never_changes_again(ledger: Ledger) -> None:
    await live_task(ledger, "stale", text="half", silent_for=300)
    assert await ledger.sweep() == ["stale"]
    stored = snapshot(await task_row(ledger, "stale"))

    # The writer that went silent comes back: too late, the task has ended.
    with pytest.raises(Conflict):
        async with ledger.database.transaction() as session:
            await tasks.progress(session, ledger.caller, "stale", "half an answer")
    with pytest.raises(Conflict):
        async with ledger.database.transaction() as session:
            await tasks.finish(
                session,
                ledger.caller,
                "stale",
                tasks.Outcome("completed", "half an answer", TokenUsage(3, 4)),
            )

    assert snapshot(await task_row(ledger, "stale")) == stored
    await assert_counted_once(ledger)


async def test_concurrent_sweeps_interrupt_each_task_once(ledger: Ledger) -> None:
    ids = [f"stale-{i}" for i in range(6)]
    for i, task_id in enumerate(ids):
        await live_task(ledger, task_id, run_id=f"r{i % 2}", text=f"text {i}", silent_for=90)

    results = await asyncio.gather(*(ledger.sweep() for _ in range(3)))

    swept = [task_id for result in results for task_id in result]
    assert sorted(swept) == ids
    assert {t.status for t in await rows(ledger, Task)} == {"interrupted"}
    [daily] = await rows(ledger, UsageDaily)
    assert (daily.requests, daily.failed_requests) == (6, 6)
    await assert_counted_once(ledger)


async def test_an_interrupted_reply_can_be_retried(ledger: Ledger) -> None:
    """A chat whose process died: its user message stays, its task is swept, and
    "try again" answers the same message with a second attempt."""
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, "r1", first_message="are you there?")
        await messages.append(
            session,
            ledger.caller,
            "r1",
            messages.NewMessage(role="user", content="are you there?", id="q-1"),
        )
    await live_task(ledger, "dead", text="Echo: are", silent_for=120, user_message_id="q-1")
    assert await ledger.sweep() == ["dead"]

    result = await (await ledger.retry("q-1")).result()

    assert result.status == "completed"
    assert result.text == "Echo: are you there?"
    attempts = sorted((t.attempt, t.status) for t in await rows(ledger, Task))
    assert attempts == [(1, "interrupted"), (2, "completed")]
    assert [m.role for m in await rows(ledger, Message)].count("user") == 1
    await assert_counted_once(ledger)


async def test_a_slow_reply_with_heartbeats_is_never_swept(settings: Settings) -> None:
    """The model says nothing for longer than the lease, but the writer's heartbeat keeps
    the task alive; a task with no writer is swept after the same lease."""
    short_lease = settings.model_copy(update={"task_lease_seconds": 0.6})
    async with Ledger(short_lease) as ledger:
        await live_task(ledger, "no-writer")
        # "Echo: hi" is two words, each after 0.8 s of silence: 1.6 s > the 0.6 s lease.
        turn = await ledger.chat("hi", settings={"delay_ms": 800})
        swept: list[str] = []
        deadline = time.monotonic() + 30
        while not turn.log.closed:
            swept += await ledger.sweep()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        result = await turn.result()

        assert result.status == "completed"
        assert swept == ["no-writer"]
        task = await task_row(ledger, result.task_id)
        assert (task.status, task.response_text) == ("completed", "Echo: hi")
        assert (await task_row(ledger, "no-writer")).status == "interrupted"
        await assert_counted_once(ledger)


async def test_a_heartbeat_arriving_before_the_sweep_renews_the_lease(ledger: Ledger) -> None:
    """The sweeper's ending is guarded by the heartbeat too: a writer that speaks up
    between the sweeper's look and its update keeps its task."""
    await live_task(ledger, "revived", text="still here", silent_for=300)
    looked_at = utcnow() - timedelta(seconds=60)
    async with ledger.database.transaction() as session:
        await tasks.progress(session, ledger.caller, "revived", "still here, and more")
    async with ledger.database.transaction() as session:
        task, ended = await tasks.finish(
            session,
            ledger.caller,
            "revived",
            tasks.Outcome("interrupted", silent_since=looked_at),
        )
    assert not ended
    assert task.status == "streaming"
    assert (await task_row(ledger, "revived")).response_text == "still here, and more"
    await assert_counted_once(ledger)
