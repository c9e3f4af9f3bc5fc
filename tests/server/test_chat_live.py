"""Live chat against a REAL uvicorn server (SQLite and PostgreSQL), read with httpx as it
streams: events arrive while the reply is made, with increasing ids; a failure mid-stream
is an `error` event; a client that goes away does not stop the record; a client that
re-attaches with Last-Event-ID gets only what it missed; a finished reply, or one
answered by another process, is replayed from the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger import Settings
from chatledger.server.app import create_app
from chatledger.server.deps import AppState
from chatledger.verify import find_drift
from tests.server.conftest import ADMIN_KEY
from tests.server.live import GatedProvider, Sse, gated_provider, serving, sse_events

CONTENT = "one two three four five six seven eight nine ten"
REPLY = f"Echo: {CONTENT}"
DEADLINE_S = 30

Login = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, str]]:
    app = create_app(settings.model_copy(update={"admin_key": ADMIN_KEY}))
    async with serving(app) as base_url:
        yield app, base_url


@pytest.fixture
async def login(served: tuple[FastAPI, str]) -> AsyncIterator[Login]:
    """A client of the real server with a new user's key."""
    _, base_url = served
    clients: list[httpx.AsyncClient] = []

    async def make(user_id: str) -> httpx.AsyncClient:
        async with httpx.AsyncClient(base_url=base_url) as admin:
            made = await admin.post(
                "/v1/admin/users",
                json={"id": user_id},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
        assert made.status_code == 201, made.text
        key = made.json()["api_key"]["secret"]
        client = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=DEADLINE_S
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def alice(login: Login) -> httpx.AsyncClient:
    return await login("alice")


@pytest.fixture
def gated() -> Any:
    with gated_provider() as provider:
        yield provider


async def take(events: AsyncIterator[Sse], n: int) -> list[Sse]:
    return [await anext(events) for _ in range(n)]


async def until_task(client: httpx.AsyncClient, task_id: str, *statuses: str) -> dict[str, Any]:
    """The task once its status is one of `statuses` (polled, with a deadline)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            task: dict[str, Any] = (await client.get(f"/v1/tasks/{task_id}")).json()
            if task["status"] in statuses:
                return task
            await asyncio.sleep(0.02)


def text_of(events: list[Sse]) -> str:
    return "".join(e.data["text"] for e in events if e.kind == "delta")


async def assert_no_drift(app: FastAPI) -> None:
    state: AppState = app.state.chatledger
    async with state.database.reading() as session:
        assert await find_drift(session) == []


async def test_a_reply_streams_while_it_is_made(
    served: tuple[FastAPI, str], alice: httpx.AsyncClient, gated: GatedProvider
) -> None:
    gated.release(1)  # the headers wait for the first token
    body = {"message": {"content": CONTENT}, "model": "gated/m"}
    async with alice.stream("POST", "/v1/chat", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = aiter(sse_events(response))
        head = await take(events, 3)
        assert [(e.id, e.kind) for e in head] == [("1", "run"), ("2", "task"), ("3", "delta")]
        task_id = head[1].data["id"]
        # The model is held after its first word: that word came while the reply was live.
        task = (await alice.get(f"/v1/tasks/{task_id}")).json()
        assert task["status"] in ("pending", "streaming")
        gated.release(100)
        rest = [event async for event in events]
    kinds = [e.kind for e in rest]
    assert kinds == ["delta"] * (len(rest) - 2) + ["usage", "done"]
    assert [int(e.id or 0) for e in head + rest] == list(range(1, len(head + rest) + 1))
    run = (await alice.get(f"/v1/runs/{head[0].data['id']}")).json()
    assert run["messages"][1]["content"] == text_of(head + rest) == REPLY
    assert run["messages"][1]["id"] == rest[-1].data["message_id"]
    assert rest[-2].data["output_tokens"] > 0
    await assert_no_drift(served[0])


async def test_a_failure_mid_stream_is_an_error_event(
    served: tuple[FastAPI, str], alice: httpx.AsyncClient
) -> None:
    body = {"message": {"id": "m1", "content": CONTENT}, "settings": {"fail_at": 3}}
    async with alice.stream("POST", "/v1/chat", json=body) as response:
        assert response.status_code == 200
        events = [event async for event in sse_events(response)]
    assert [e.kind for e in events] == ["run", "task", "delta", "delta", "delta", "error"]
    assert events[-1].data["kind"] == "injected_failure"
    task = (await alice.get(f"/v1/tasks/{events[1].data['id']}")).json()
    assert task["status"] == "failed"
    assert task["response_text"] == text_of(events) == "Echo: one two "
    [message] = (await alice.get(f"/v1/runs/{events[0].data['id']}/messages")).json()
    assert (message["id"], message["status"]) == ("m1", "error")
    await assert_no_drift(served[0])


async def test_a_client_that_goes_away_does_not_stop_the_record(
    served: tuple[FastAPI, str], alice: httpx.AsyncClient
) -> None:
    body = {"message": {"content": CONTENT}, "settings": {"delay_ms": 30}}
    async with alice.stream("POST", "/v1/chat", json=body) as response:
        events = aiter(sse_events(response))
        run, task, delta = await take(events, 3)
        assert delta.kind == "delta"
    # The connection is closed; the reply goes on and is recorded in full.
    stored = await until_task(alice, task.data["id"], "completed", "failed", "cancelled")
    assert (stored["status"], stored["response_text"]) == ("completed", REPLY)
    messages = (await alice.get(f"/v1/runs/{run.data['id']}/messages")).json()
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", CONTENT),
        ("assistant", REPLY),
    ]
    await assert_no_drift(served[0])


async def test_a_client_reattaches_after_the_last_event_it_saw(
    alice: httpx.AsyncClient, login: Login, gated: GatedProvider
) -> None:
    gated.release(2)
    body = {"message": {"content": CONTENT}, "model": "gated/m"}
    async with alice.stream("POST", "/v1/chat", json=body) as first:
        seen = await take(aiter(sse_events(first)), 4)
    assert [e.id for e in seen] == ["1", "2", "3", "4"]
    task_id = seen[1].data["id"]

    path = f"/v1/tasks/{task_id}/stream"
    bob = await login("bob")
    assert (await bob.get(path, headers={"Last-Event-ID": "4"})).status_code == 404
    async with (
        alice.stream("GET", path, headers={"Last-Event-ID": "4"}) as resumed,
        alice.stream("GET", path, params={"after": 3}) as by_query,
        alice.stream("GET", path, headers={"Last-Event-ID": "r7"}) as from_replay,
    ):
        assert resumed.status_code == by_query.status_code == from_replay.status_code == 200
        gated.release(100)
        later = [event async for event in sse_events(resumed)]
        after_3 = [event async for event in sse_events(by_query)]
        snapshot = [event async for event in sse_events(from_replay)]

    ids = [int(e.id or 0) for e in later]
    assert ids == list(range(5, 5 + len(later)))
    assert [e.kind for e in later][-2:] == ["usage", "done"]
    assert text_of(seen) + text_of(later) == REPLY
    assert after_3[1:] == later and after_3[0].id == "4"
    # A client holding a replay's text gets the text so far once, to replace its own.
    assert [(e.kind, e.data.get("replay")) for e in snapshot[:2]] == [
        ("task", True),
        ("delta", True),
    ]
    assert (snapshot[1].id, snapshot[1].data["text"]) == ("4", text_of(seen))
    assert snapshot[2:] == later


async def test_a_replayed_usage_event_is_the_live_one(alice: httpx.AsyncClient) -> None:
    # The live event tells what the turn gave its task's end (engine/answered.py: nothing
    # is read back), the replay what the database stored: every field the same.
    body = {"message": {"content": CONTENT}, "settings": {"delay_ms": 1}}
    async with alice.stream("POST", "/v1/chat", json=body) as response:
        live = {e.kind: e.data for e in [event async for event in sse_events(response)]}
    task_id = live["task"]["id"]
    async with alice.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
        replayed = {e.kind: e.data for e in [event async for event in sse_events(response)]}
    assert replayed["usage"] == live["usage"]
    assert live["usage"]["cost_usd"] is not None and live["usage"]["ttft_ms"] is not None


async def test_a_finished_reply_is_replayed_from_the_database(
    alice: httpx.AsyncClient,
) -> None:
    done = await alice.post("/v1/chat", json={"message": {"content": CONTENT}, "stream": False})
    answer = done.json()
    async with alice.stream("GET", f"/v1/tasks/{answer['task_id']}/stream") as response:
        assert response.status_code == 200
        events = [event async for event in sse_events(response)]
    assert [(e.id, e.kind) for e in events] == [
        ("r1", "task"),
        ("r2", "delta"),
        ("r3", "usage"),
        ("r4", "done"),
    ]
    assert events[0].data["status"] == "completed" and events[1].data["replay"] is True
    assert events[1].data["text"] == REPLY
    assert events[2].data["output_tokens"] == answer["usage"]["output_tokens"]
    assert events[3].data["message_id"] == answer["assistant_message_id"]

    failed = await alice.post(
        "/v1/chat",
        json={"message": {"content": CONTENT}, "settings": {"fail_at": 2}, "stream": False},
    )
    async with alice.stream("GET", f"/v1/tasks/{failed.json()['task_id']}/stream") as response:
        events = [event async for event in sse_events(response)]
    assert [e.kind for e in events] == ["task", "delta", "error"]
    assert events[1].data["text"] == "Echo: one "
    assert events[2].data["kind"] == "injected_failure"


async def test_a_reply_answered_elsewhere_is_followed_through_the_database(
    served: tuple[FastAPI, str], alice: httpx.AsyncClient
) -> None:
    # Another process (a replica, an app recording its own calls) writes the task.
    created = await alice.post("/v1/tasks", json={"id": "t1", "run_id": "r1", "model": "echo"})
    assert created.status_code == 201, created.text
    await alice.patch("/v1/tasks/t1", json={"response_text": "Hel"})
    async with alice.stream("GET", "/v1/tasks/t1/stream") as response:
        events = aiter(sse_events(response))
        task, first = await take(events, 2)
        assert (task.kind, task.data["status"]) == ("task", "streaming")
        assert (first.kind, first.data) == ("delta", {"text": "Hel", "replay": True})
        await alice.patch("/v1/tasks/t1", json={"response_text": "Hello"})
        assert (await anext(events)).data == {"text": "lo"}
        usage = {"input_tokens": 3, "output_tokens": 2}
        ended = await alice.post(
            "/v1/tasks/t1/complete", json={"response_text": "Hello!", "usage": usage}
        )
        assert ended.status_code == 200, ended.text
        rest = [event async for event in events]
    assert [(e.kind, e.data.get("text")) for e in rest] == [
        ("delta", "!"),
        ("usage", None),
        ("done", None),
    ]
    assert rest[1].data["input_tokens"] == 3
    assert rest[2].data == {"task_id": "t1", "message_id": None, "status": "completed"}
    await assert_no_drift(served[0])


async def test_the_schema_documents_each_stream_as_what_it_sends(
    served: tuple[FastAPI, str], alice: httpx.AsyncClient
) -> None:
    """Following a reply only ever streams SSE; a chat turn answers SSE or, with
    `stream: false`, JSON."""
    paths = (await alice.get("/openapi.json")).json()["paths"]

    def answered_as(path: str, method: str) -> list[str]:
        return sorted(paths[path][method]["responses"]["200"]["content"])

    assert answered_as("/v1/tasks/{task_id}/stream", "get") == ["text/event-stream"]
    for path in ("/v1/chat", "/v1/messages/{message_id}/retry"):
        assert answered_as(path, "post") == ["application/json", "text/event-stream"]
