"""The client's resources beyond runs and messages, in local mode on both databases:
tasks, interactions, traces, batch, usage and chat (JSON and SSE), each returning the
server's schemas and raising chatledger's errors; the blocking Client over them; and a
client with an API key, for which another user's task is not found."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger import Conflict, InvalidInput, NotFound, ProviderError, TokenUsage
from chatledger.batch.schemas import RunItem
from chatledger.chat.schemas import ChatResult
from chatledger.client import AsyncClient, Client
from chatledger.db.engine import Database
from chatledger.tasks.schemas import TaskRead
from chatledger.traces.schemas import TraceEntryCreate
from chatledger.verify import find_drift
from tests.server.conftest import BASE_URL, Account

DAY = date(2025, 6, 1)
ENDED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CONTENT = "alpha beta gamma delta"
REPLY = f"Echo: {CONTENT}"


async def assert_no_drift(database_url: str) -> None:
    database = Database(database_url)
    try:
        async with database.reading() as session:
            assert await find_drift(session) == []
    finally:
        await database.dispose()


def entries(length: int) -> list[dict[str, Any]]:
    """An agent's trace after `length` node executions, the newest one still running."""
    made = [{"node": f"node-{i}", "status": "completed", "data": {"i": i}} for i in range(length)]
    if made:
        made[-1]["status"] = "running"
    return made


async def test_tasks_are_created_progressed_and_ended_once(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        task = await client.tasks.create("r1", "openai/gpt-4o", id="t1", request={"n": 1})
        assert isinstance(task, TaskRead)
        assert (task.status, task.provider, task.model, task.user_id) == (
            "pending",
            "openai",
            "gpt-4o",
            "local",
        )
        assert (await client.tasks.create("r1", "openai/gpt-4o", id="t1")).id == "t1"
        with pytest.raises(Conflict):
            await client.tasks.create("elsewhere", "openai/gpt-4o", id="t1")

        streaming = await client.tasks.progress("t1", "Hel")
        assert (streaming.status, streaming.response_text) == ("streaming", "Hel")
        usage = TokenUsage(input_tokens=100, output_tokens=50, cached_tokens=10)
        done = await client.tasks.complete("t1", "Hello", usage, ttft_ms=120, total_ms=900)
        assert (done.status, done.response_text, done.total_tokens) == ("completed", "Hello", 150)
        assert done.cost_nano and done.cost_usd and done.cost_usd > 0
        # A replay answers the same task; a different ending of it is a conflict.
        again = await client.tasks.complete("t1", "Hello", usage, ttft_ms=120, total_ms=900)
        assert again == done
        with pytest.raises(Conflict):
            await client.tasks.complete("t1", "Goodbye", usage)
        with pytest.raises(Conflict):
            await client.tasks.progress("t1", "more")

        await client.tasks.create("r1", "echo", id="t2")
        failed = await client.tasks.fail(
            "t2", "rate limited", usage={"input_tokens": 7, "output_tokens": 0}
        )
        assert (failed.status, failed.error) == ("failed", {"message": "rate limited"})
        await client.tasks.create("r1", "echo", id="t3")
        cancelled = await client.tasks.cancel("t3", "user pressed stop", cost_usd=Decimal("0"))
        assert cancelled.status == "cancelled"
        assert cancelled.error == {"kind": "cancelled", "message": "user pressed stop"}

        listed = await client.tasks.list_for_run("r1")
        assert [(t.id, t.status) for t in listed] == [
            ("t1", "completed"),
            ("t2", "failed"),
            ("t3", "cancelled"),
        ]
        assert (await client.tasks.get("t2")) == listed[1]
        run = await client.runs.get("r1")
        assert (run.task_count, run.total_tokens) == (1, 157)

        with pytest.raises(NotFound) as missing:
            await client.tasks.get("nope")
        assert missing.value.details["kind"] == "task"
        await client.tasks.create("r1", "echo", id="t4")
        too_cached = {"input_tokens": 1, "output_tokens": 1, "cached_tokens": 2}
        with pytest.raises(InvalidInput) as invalid:
            await client.tasks.complete("t4", "x", too_cached)
        assert invalid.value.field == "usage.cached_tokens"
        with pytest.raises(InvalidInput) as invalid:
            await client.tasks.create("r1", "gpt-4o")  # no provider
        assert invalid.value.field == "provider"
        future = datetime.now(UTC) + timedelta(days=1)
        with pytest.raises(InvalidInput) as invalid:
            await client.tasks.complete("t4", "x", usage, completed_at=future)
        assert invalid.value.field == "completed_at"
        assert (await client.tasks.get("t4")).status == "pending"
    await assert_no_drift(database_url)


async def test_an_interaction_is_recorded_once(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        recorded = await client.interactions.record(
            "support-1",
            "What is 2 + 2?",
            "4",
            "openai/gpt-4o",
            TokenUsage(input_tokens=12, output_tokens=1),
            id="i1",
            total_ms=300,
            metadata={"channel": "web"},
        )
        assert recorded.run.id == "support-1" and recorded.run.name == "What is 2 + 2?"
        assert (recorded.task.id, recorded.task.status, recorded.task.total_tokens) == (
            "i1",
            "completed",
            13,
        )
        assert (recorded.user_message.content, recorded.assistant_message.content) == (
            "What is 2 + 2?",
            "4",
        )
        usage = {"input_tokens": 12, "output_tokens": 1}
        replay = await client.interactions.record(
            "support-1",
            "What is 2 + 2?",
            "4",
            "openai/gpt-4o",
            usage,
            id="i1",
            total_ms=300,
            metadata={"channel": "web"},
        )
        assert replay.task == recorded.task
        with pytest.raises(Conflict):
            await client.interactions.record(
                "support-1", "What is 2 + 2?", "5", "openai/gpt-4o", usage, id="i1"
            )
        with pytest.raises(InvalidInput) as invalid:
            await client.interactions.record(
                "support-1", "Hi", "Hello", "openai/gpt-4o", {**usage, "input_tokens": -1}
            )
        assert invalid.value.field == "usage.input_tokens"
        run = await client.runs.get("support-1")
        assert (run.task_count, run.message_count, run.total_tokens) == (1, 2, 13)
    await assert_no_drift(database_url)


async def test_traces_upsert_by_thread_and_full_crud(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        first = await client.traces.upsert_thread("thread-1", entries(2), name="Planner")
        assert (first.created, first.entry_count, first.name) == (2, 2, "Planner")
        # The agent re-sends its whole trace as it grows: only new entries are stored.
        grown = await client.traces.upsert_thread("thread-1", entries(4))
        assert (grown.id, grown.created, grown.updated, grown.entry_count) == (first.id, 2, 1, 4)
        same = await client.traces.upsert_thread("thread-1", entries(4))
        assert (same.created, same.entry_count) == (0, 4)

        saved = await client.traces.save(
            "thread-2",
            [TraceEntryCreate(node="search", status="completed", data={"hits": 3})],
            id="trace-2",
        )
        assert (saved.id, saved.thread_id, saved.created) == ("trace-2", "thread-2", 1)

        detail = await client.traces.get(first.id)
        assert [(e.idx, e.node) for e in detail.entries] == [(i, f"node-{i}") for i in range(4)]
        assert (await client.traces.get_by_thread("thread-2")).entries[0].data == {"hits": 3}

        page = await client.traces.list(limit=1)
        assert len(page.items) == 1 and page.next_cursor
        assert sorted([t.id async for t in client.traces.iterate(page_size=1)]) == sorted(
            [first.id, "trace-2"]
        )
        assert [t.id for t in (await client.traces.list(thread_id="thread-2")).items] == ["trace-2"]

        renamed = await client.traces.update("trace-2", name="Search", data={"v": 1})
        assert (renamed.name, renamed.data, renamed.entry_count) == ("Search", {"v": 1}, 1)
        kept = await client.traces.update("trace-2", data={"v": 2})
        assert (kept.name, kept.data) == ("Search", {"v": 2})
        cleared = await client.traces.update("trace-2", name=None)
        assert (cleared.name, cleared.data) == (None, {"v": 2})

        await client.traces.delete("trace-2")
        with pytest.raises(NotFound):
            await client.traces.get("trace-2")
        with pytest.raises(NotFound):
            await client.traces.get_by_thread("thread-2")
        with pytest.raises(NotFound):
            await client.traces.delete("trace-2")
        with pytest.raises(InvalidInput) as invalid:
            await client.traces.upsert_thread("thread-1", [{"node": "", "status": "completed"}])
        assert invalid.value.field == "entries.0.node"
        with pytest.raises(Conflict):
            await client.traces.save("thread-3", entries(1), id=first.id)
        assert (await client.runs.get("thread-1")).id == "thread-1"  # the thread's run


async def test_batch_ingest_is_idempotent(database_url: str) -> None:
    items: list[Any] = [
        RunItem(kind="run", id="trip", name="Trip"),
        *(
            {
                "kind": "interaction",
                "id": f"i{n}",
                "run_id": "trip",
                "prompt": f"Question {n}?",
                "response": f"Answer {n}.",
                "model": "openai/gpt-4o",
                "usage": TokenUsage(input_tokens=10, output_tokens=5),
                "created_at": ENDED - timedelta(minutes=n + 1),
            }
            for n in range(3)
        ),
        {"kind": "message", "id": "bad id!", "run_id": "trip", "role": "user", "content": "x"},
    ]
    async with AsyncClient(database_url) as client:
        result = await client.batch.ingest(items)
        assert (result.created, result.duplicate, result.rejected) == (4, 0, 1)
        assert [r.status for r in result.results] == ["created"] * 4 + ["rejected"]
        assert result.results[-1].error is not None
        run = await client.runs.get("trip")
        assert (run.name, run.task_count, run.message_count, run.total_tokens) == (
            "Trip",
            3,
            6,
            45,
        )
        again = await client.batch.ingest(items)
        assert (again.created, again.duplicate, again.rejected) == (0, 4, 1)
        assert (await client.runs.get("trip")).model_dump() == run.model_dump()
        usage = await client.usage.daily(DAY, DAY)
        assert [(row.day, row.requests, row.input_tokens) for row in usage.rows] == [(DAY, 3, 30)]
    await assert_no_drift(database_url)


async def test_daily_usage_by_day_model_and_user(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        for n, model in enumerate(("openai/gpt-4o", "openai/gpt-4o", "echo")):
            await client.tasks.create("spend", model, id=f"t{n}")
            await client.tasks.complete(
                f"t{n}", "ok", TokenUsage(input_tokens=100, output_tokens=10), completed_at=ENDED
            )
        await client.tasks.create("spend", "echo", id="t-failed")
        error = {"kind": "timeout", "message": "slow"}
        await client.tasks.fail("t-failed", error, completed_at=ENDED + timedelta(days=1))

        daily = await client.usage.daily(DAY, "2025-06-02")
        assert (daily.start, daily.end, daily.group_by) == (DAY, date(2025, 6, 2), None)
        assert (daily.totals.requests, daily.totals.failed_requests) == (4, 1)
        assert daily.totals.input_tokens == 300 and daily.totals.cost_usd > 0
        by_model = await client.usage.daily(DAY, DAY, group_by="model")
        assert sorted((row.model, row.requests) for row in by_model.rows) == [
            ("echo", 1),
            ("gpt-4o", 2),
        ]
        by_user = await client.usage.daily(DAY, DAY, group_by="user")
        assert [(row.user_id, row.model, row.requests) for row in by_user.rows] == [
            ("local", None, 3)
        ]
        assert (await client.usage.daily(DAY, DAY, user_id="someone-else")).rows == []
        with pytest.raises(InvalidInput) as invalid:
            await client.usage.daily("2025-06-02", DAY)
        assert invalid.value.field == "to"
    await assert_no_drift(database_url)


async def test_chat_streams_events_and_sends_typed_results(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        events = [event async for event in client.chat.stream(CONTENT, run_name="Greek")]
        kinds = [event.kind for event in events]
        assert kinds[:2] == ["run", "task"] and kinds[-2:] == ["usage", "done"]
        assert set(kinds[2:-2]) == {"delta"}
        assert [event.id for event in events] == list(range(1, len(events) + 1))
        run, done = events[0].data, events[-1].data
        assert (run["name"], run["created"]) == ("Greek", True)
        text = "".join(event.data["text"] for event in events if event.kind == "delta")
        assert text == REPLY
        stored = await client.runs.get(run["id"])
        assert [(m.role, m.content) for m in stored.messages] == [
            ("user", CONTENT),
            ("assistant", REPLY),
        ]
        assert stored.messages[1].id == done["message_id"]
        task = await client.tasks.get(done["task_id"])
        assert (task.status, task.response_text) == ("completed", REPLY)
        replayed = [e async for e in client.chat.attach(done["task_id"])]
        assert replayed[-1].kind == "done"

        sent = await client.chat.send("and again", run_id=run["id"], message_id="m2")
        assert isinstance(sent, ChatResult)
        assert (sent.status, sent.text, sent.run_id, sent.user_message_id) == (
            "completed",
            "Echo: and again",
            run["id"],
            "m2",
        )
        assert sent.usage.output_tokens > 0 and sent.error is None

        with pytest.raises(ProviderError) as failed:
            await client.chat.send("try me", message_id="m3", settings={"fail_at": 0})
        assert failed.value.kind == "injected_failure"
        assert failed.value.details["message_id"] == "m3"
        retried = await client.chat.retry("m3")
        assert (retried.status, retried.user_message_id, retried.text) == (
            "completed",
            "m3",
            "Echo: try me",
        )
        with pytest.raises(Conflict):
            await client.chat.retry("m3")
        with pytest.raises(NotFound):
            await client.chat.retry("nope")
        with pytest.raises(InvalidInput) as invalid:
            await client.chat.send("hi", settings={"delay_ms": "slow"})
        assert invalid.value.field == "settings.delay_ms"
        with pytest.raises(InvalidInput) as invalid:
            _ = [e async for e in client.chat.stream("  ")]
        assert invalid.value.field == "message.content"
    await assert_no_drift(database_url)


async def test_chat_starts_from_a_prompt_with_variables(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        sent = await client.chat.send(
            "Les chats dorment beaucoup.",
            prompt="translate",
            variables={"language": "English"},
            message_id="p1",
        )
        stored = await client.runs.get(sent.run_id)
        system = stored.messages[0]
        assert (system.role, system.content.count("English")) == ("system", 1)
        assert [m.role for m in stored.messages] == ["system", "user", "assistant"]

        streamed = [
            event
            async for event in client.chat.stream(
                "hello",
                prompt={"name": "translate", "label": "production"},
                variables={"language": "French"},
            )
        ]
        assert [streamed[0].kind, streamed[-1].kind] == ["run", "done"]
        # `language` has no default: leaving it out is refused before anything is written.
        with pytest.raises(InvalidInput) as missing:
            await client.chat.send("hello", prompt="translate")
        assert str(missing.value) == "variables: no value for language"
        assert len((await client.runs.list()).items) == 2


async def test_local_mode_streams_a_reply_as_it_is_made(database_url: str) -> None:
    slow = {"delay_ms": 400}  # per token: the reply takes seconds after its first delta
    async with AsyncClient(database_url) as client:
        stream = aiter(client.chat.stream("one two three four five six", settings=slow))
        run, task = await anext(stream), await anext(stream)
        assert (run.kind, task.kind, (await anext(stream)).kind) == ("run", "task", "delta")
        # The first delta came while the reply was still being made: it can be cancelled.
        cancelled = await client.tasks.cancel(task.data["id"], "stop")
        assert cancelled.status == "cancelled"
        rest = [event async for event in stream]
        assert rest[-1].kind == "error" and rest[-1].data["kind"] == "cancelled"

        # A client that stops reading does not stop the record.
        async for event in client.chat.stream("seven eight", run_id=run.data["id"]):
            if event.kind == "task":
                task_id = event.data["id"]
                break
        deadline = asyncio.get_running_loop().time() + 30
        while (ended := await client.tasks.get(task_id)).status != "completed":
            assert asyncio.get_running_loop().time() < deadline, ended.status
            await asyncio.sleep(0.05)
        assert ended.response_text == "Echo: seven eight"
    await assert_no_drift(database_url)


def test_the_blocking_client_drives_the_new_resources(database_url: str) -> None:
    with Client(database_url) as client:
        client.tasks.create("sync-run", "openai/gpt-4o", id="t1")
        done = client.tasks.complete("t1", "ok", TokenUsage(input_tokens=3, output_tokens=2))
        assert isinstance(done, TaskRead) and done.status == "completed"
        with pytest.raises(Conflict):
            client.tasks.complete("t1", "other", TokenUsage(input_tokens=3, output_tokens=2))

        client.traces.upsert_thread("sync-run", entries(3))
        assert [t.entry_count for t in client.traces.iterate()] == [3]

        events = list(client.chat.stream("hello there", run_id="sync-run"))
        assert [e.kind for e in events][-2:] == ["usage", "done"]
        for event in client.chat.stream("stop early", run_id="sync-run"):
            assert event.kind == "run"
            break  # the generator is closed on the client's loop, the reply still recorded
        assert client.chat.send("last", run_id="sync-run").text == "Echo: last"
        assert client.runs.get("sync-run").message_count == 6
        with pytest.raises(NotFound):
            client.tasks.get("missing")


async def test_an_api_key_client_sees_only_its_users_tasks(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    def transport() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)

    async with (
        AsyncClient(http_client=transport(), api_key=alice.key) as alices,
        AsyncClient(http_client=transport(), api_key=bob.key) as bobs,
    ):
        task = await alices.tasks.create("alices-run", "echo", id="alices-task")
        assert task.user_id == "alice"
        await alices.traces.upsert_thread("alices-run", entries(1))
        with pytest.raises(NotFound):
            await bobs.tasks.get("alices-task")
        with pytest.raises(NotFound):
            await bobs.tasks.complete("alices-task", "hijacked", TokenUsage(1, 1))
        with pytest.raises(NotFound):
            await bobs.tasks.list_for_run("alices-run")
        with pytest.raises(NotFound):
            await bobs.traces.get_by_thread("alices-run")
        assert (await alices.tasks.get("alices-task")).status == "pending"
        assert (await bobs.usage.daily()).rows == []

        key = await alices.keys.create(name="laptop")
        assert key.secret and key.user_id == "alice"
        assert key.id in [k.id for k in await alices.keys.list()]
        assert (await alices.keys.revoke(key.id)).revoked_at is not None
        with pytest.raises(NotFound):
            await bobs.keys.revoke(key.id)
