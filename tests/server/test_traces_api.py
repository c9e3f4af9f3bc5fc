"""Automation traces over HTTP: PUT by thread keeps one trace id and stores only new
entries however often the whole trace is re-sent, full CRUD, cursor pages, cascades with
the run, 409/413/422 with the field named, and another user's trace is a 404."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from chatledger.server.deps import AppState
from chatledger.traces.models import Trace, TraceEntry
from tests.server.conftest import Account, authed, left_in_cycles

TRACES = "/v1/automation/traces"
T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def snapshot(length: int) -> list[dict[str, Any]]:
    """What an agent sends after `length` node executions: the newest one running."""
    entries: list[dict[str, Any]] = [
        {
            "node": f"node-{i}",
            "status": "completed",
            "data": {"output": f"step {i}"},
            "started_at": (T0 + timedelta(seconds=i)).isoformat(),
            "ended_at": (T0 + timedelta(seconds=i, milliseconds=250)).isoformat(),
        }
        for i in range(length)
    ]
    if entries:
        entries[-1].update(status="running", data={}, ended_at=None)
    return entries


async def put(
    client: httpx.AsyncClient, thread_id: str, length: int, **body: Any
) -> httpx.Response:
    return await client.put(
        f"{TRACES}/thread/{thread_id}", json={"entries": snapshot(length), **body}
    )


async def stored_rows(app: FastAPI) -> tuple[int, int]:
    """(traces, trace entries) in the database, across every tenant."""
    state: AppState = app.state.chatledger
    async with state.database.reading() as session:
        traces = await session.scalar(select(func.count()).select_from(Trace))
        entries = await session.scalar(select(func.count()).select_from(TraceEntry))
    return traces or 0, entries or 0


def invalid_fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    if "errors" in details:
        return {problem["field"] for problem in details["errors"]}
    return {details["field"]}


# -- upsert by thread ------------------------------------------------------------------


async def test_put_by_thread_keeps_one_trace_and_stores_only_new_entries(
    app: FastAPI, alice: Account
) -> None:
    first = await put(alice.client, "chat-1", 2, name="support agent")
    second = await put(alice.client, "chat-1", 5)
    third = await put(alice.client, "chat-1", 5)

    assert (first.status_code, second.status_code, third.status_code) == (201, 200, 200)
    trace_id = first.json()["id"]
    assert {r.json()["id"] for r in (first, second, third)} == {trace_id}
    assert [(r.json()["created"], r.json()["updated"]) for r in (first, second, third)] == [
        (2, 0),
        (3, 1),  # node-1 finished, three new nodes
        (0, 0),
    ]
    assert third.json()["entry_count"] == 5
    assert third.json()["name"] == "support agent"
    assert third.json()["thread_id"] == "chat-1"
    assert third.json()["user_id"] == "alice"

    by_thread = await alice.client.get(f"{TRACES}/thread/chat-1")
    by_id = await alice.client.get(f"{TRACES}/{trace_id}")
    assert by_thread.status_code == by_id.status_code == 200
    assert by_thread.json() == by_id.json()
    entries = by_id.json()["entries"]
    assert [(e["idx"], e["node"], e["status"]) for e in entries] == [
        *((i, f"node-{i}", "completed") for i in range(4)),
        (4, "node-4", "running"),
    ]
    assert entries[1]["data"] == {"output": "step 1"}
    assert datetime.fromisoformat(entries[1]["ended_at"]) == T0 + timedelta(seconds=1.25)
    assert await stored_rows(app) == (1, 5)
    # The thread is a run: saving its trace ensured it.
    assert (await alice.client.get("/v1/runs/chat-1")).status_code == 200


async def test_post_saves_and_is_safe_to_repeat(alice: Account) -> None:
    body = {"id": "trace-a", "thread_id": "chat-1", "entries": snapshot(3)}

    created = await alice.client.post(TRACES, json=body)
    again = await alice.client.post(TRACES, json=body)
    grown = await alice.client.post(TRACES, json={**body, "entries": snapshot(4)})

    assert (created.status_code, again.status_code, grown.status_code) == (201, 200, 200)
    assert [r.json()["created"] for r in (created, again, grown)] == [3, 0, 1]
    assert {r.json()["id"] for r in (created, again, grown)} == {"trace-a"}
    other = await alice.client.post(TRACES, json={**body, "id": "trace-b"})
    assert other.status_code == 409
    assert other.json()["error"]["details"]["trace_id"] == "trace-a"


async def test_a_running_entry_completes_and_final_ones_conflict(alice: Account) -> None:
    running = {"node": "search", "status": "running", "started_at": T0.isoformat()}
    done = {**running, "status": "completed", "data": {"hits": 2}, "ended_at": T0.isoformat()}
    put_entries = f"{TRACES}/thread/chat-1"
    assert (await alice.client.put(put_entries, json={"entries": [running]})).status_code == 201

    completed = await alice.client.put(put_entries, json={"entries": [done]})
    stale = await alice.client.put(put_entries, json={"entries": [running]})
    rewrite = await alice.client.put(
        put_entries, json={"entries": [{**done, "data": {"hits": 3}}, {"node": "n", "status": "x"}]}
    )

    assert (completed.status_code, completed.json()["updated"]) == (200, 1)
    assert (stale.status_code, stale.json()["updated"], stale.json()["created"]) == (200, 0, 0)
    assert rewrite.status_code == 409
    error = rewrite.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"]["idx"] == 0
    assert "0" in error["message"]
    stored = (await alice.client.get(put_entries)).json()
    assert stored["entry_count"] == 1  # the conflicting call wrote nothing
    assert stored["entries"][0]["status"] == "completed"
    assert stored["entries"][0]["data"] == {"hits": 2}


async def test_concurrent_puts_for_one_thread_make_one_trace(app: FastAPI, alice: Account) -> None:
    lengths = [4, 9, 1, 7, 9, 3, 8, 6, 2, 9, 5, 9]

    responses = await asyncio.gather(*(put(alice.client, "busy", n) for n in lengths))

    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.json()["created"] for r in responses) == 9
    trace = (await alice.client.get(f"{TRACES}/thread/busy")).json()
    assert [e["idx"] for e in trace["entries"]] == list(range(9))
    assert [e["status"] for e in trace["entries"]] == ["completed"] * 8 + ["running"]
    assert await stored_rows(app) == (1, 9)


# -- read, list, change, delete --------------------------------------------------------


async def test_list_pages_newest_first(alice: Account) -> None:
    for n in range(5):
        assert (await put(alice.client, f"chat-{n}", n + 1)).status_code == 201
    await put(alice.client, "chat-0", 2)  # new activity: chat-0 is newest now

    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await alice.client.get(TRACES, params=params)).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [t["thread_id"] for t in seen] == ["chat-0", "chat-4", "chat-3", "chat-2", "chat-1"]
    assert [t["entry_count"] for t in seen] == [2, 5, 4, 3, 2]
    assert all("entries" not in t for t in seen)
    only = (await alice.client.get(TRACES, params={"thread_id": "chat-3"})).json()
    assert [t["thread_id"] for t in only["items"]] == ["chat-3"]
    assert only["next_cursor"] is None
    bad = await alice.client.get(TRACES, params={"cursor": "not-a-cursor"})
    assert invalid_fields(bad) == {"cursor"}


async def test_patch_renames_and_sets_data(alice: Account) -> None:
    trace_id = (await put(alice.client, "chat-1", 2, name="first")).json()["id"]

    renamed = await alice.client.patch(f"{TRACES}/{trace_id}", json={"name": "second"})
    with_data = await alice.client.patch(
        f"{TRACES}/{trace_id}", json={"data": {"rating": 5, "tags": ["ok"]}}
    )
    cleared = await alice.client.patch(f"{TRACES}/{trace_id}", json={"name": None})

    assert (renamed.status_code, renamed.json()["name"]) == (200, "second")
    assert with_data.json()["name"] == "second"
    assert with_data.json()["data"] == {"rating": 5, "tags": ["ok"]}
    assert with_data.json()["entry_count"] == 2
    assert (cleared.json()["name"], cleared.json()["data"]) == (None, {"rating": 5, "tags": ["ok"]})
    stored = (await alice.client.get(f"{TRACES}/{trace_id}")).json()
    assert (stored["name"], stored["data"], stored["entry_count"]) == (
        None,
        {"rating": 5, "tags": ["ok"]},
        2,
    )
    assert invalid_fields(await alice.client.patch(f"{TRACES}/{trace_id}", json={"name": ""})) == {
        "name"
    }


async def test_delete_removes_the_trace_and_its_entries(app: FastAPI, alice: Account) -> None:
    trace_id = (await put(alice.client, "chat-1", 3)).json()["id"]

    deleted = await alice.client.delete(f"{TRACES}/{trace_id}")

    assert deleted.status_code == 204
    assert (await alice.client.get(f"{TRACES}/{trace_id}")).status_code == 404
    assert (await alice.client.get(f"{TRACES}/thread/chat-1")).status_code == 404
    assert (await alice.client.delete(f"{TRACES}/{trace_id}")).status_code == 404
    assert await stored_rows(app) == (0, 0)
    assert (await alice.client.get("/v1/runs/chat-1")).status_code == 200


async def test_deleting_the_run_deletes_its_trace(app: FastAPI, alice: Account) -> None:
    trace_id = (await put(alice.client, "chat-1", 3)).json()["id"]
    await put(alice.client, "chat-2", 2)

    assert (await alice.client.delete("/v1/runs/chat-1")).status_code == 204

    assert (await alice.client.get(f"{TRACES}/{trace_id}")).status_code == 404
    assert await stored_rows(app) == (1, 2)


# -- who sees what ---------------------------------------------------------------------


async def test_another_users_trace_is_not_found(
    app: FastAPI, alice: Account, bob: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    trace_id = (await put(alice.client, "alices-chat", 2)).json()["id"]

    for client in (bob.client, bob_in_alices_project):
        for response in (
            await client.get(f"{TRACES}/{trace_id}"),
            await client.get(f"{TRACES}/thread/alices-chat"),
            await client.patch(f"{TRACES}/{trace_id}", json={"name": "mine"}),
            await client.delete(f"{TRACES}/{trace_id}"),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "not_found"
        assert (await client.get(TRACES)).json()["items"] == []
    # In Alice's project her thread is hers: Bob cannot write into it.
    for response in (
        await put(bob_in_alices_project, "alices-chat", 3),
        await bob_in_alices_project.post(TRACES, json={"thread_id": "alices-chat"}),
    ):
        assert response.status_code == 404, response.text
    # In his own project the same thread id is simply another thread.
    his = await put(bob.client, "alices-chat", 3)
    assert his.status_code == 201
    assert (his.json()["id"] != trace_id, his.json()["user_id"]) == (True, "bob")
    mine = (await alice.client.get(f"{TRACES}/thread/alices-chat")).json()
    assert (mine["id"], mine["entry_count"], mine["name"]) == (trace_id, 2, None)
    assert await stored_rows(app) == (2, 5)


async def test_a_service_key_saves_for_an_end_user(app: FastAPI, alice: Account) -> None:
    key = (await alice.client.post("/v1/keys", json={"kind": "service"})).json()
    opened: list[httpx.AsyncClient] = []
    backend = authed(app, key["secret"], opened)

    saved = await put(backend, "their-chat", 2, user_id="end-user-7")

    assert (saved.status_code, saved.json()["user_id"]) == (201, "end-user-7")
    denied = await put(alice.client, "x", 1, user_id="end-user-7")  # user keys may not
    assert denied.status_code == 403
    for client in opened:
        await client.aclose()


# -- limits and bad input --------------------------------------------------------------


async def test_more_than_a_thousand_entries_is_413(app: FastAPI, alice: Account) -> None:
    entries = [{"node": "n", "status": "completed"} for _ in range(1001)]

    too_many = await alice.client.put(f"{TRACES}/thread/chat-1", json={"entries": entries})

    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "payload_too_large"
    assert too_many.json()["error"]["details"] == {"limit": 1000, "given": 1001}
    assert await stored_rows(app) == (0, 0)
    fits = await alice.client.put(f"{TRACES}/thread/chat-1", json={"entries": entries[:1000]})
    assert (fits.status_code, fits.json()["created"]) == (201, 1000)


async def test_bad_input_is_422_naming_the_field(app: FastAPI, alice: Account) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ok = {"node": "n", "status": "completed"}
    cases: list[tuple[Any, str]] = [
        ([{"status": "completed"}], "entries.0.node"),
        ([{"node": "n"}], "entries.0.status"),
        ([ok, {**ok, "idx": 0}], "entries.1.idx"),
        ([{**ok, "idx": -1}], "entries.0.idx"),
        ([{**ok, "output": "x"}], "entries.0.output"),  # extra fields are not dropped
        ([{**ok, "data": [1, 2]}], "entries.0.data"),
        ([{**ok, "data": {"x": "nul\u0000"}}], "entries.0.data.x"),
        ([{**ok, "started_at": future}], "entries.0.started_at"),
        ([{**ok, "started_at": "2025-01-01T00:00:00"}], "entries.0.started_at"),
        (
            [{**ok, "started_at": T0.isoformat(), "ended_at": (T0 - timedelta(1)).isoformat()}],
            "entries.0.ended_at",
        ),
        ("not a list", "entries"),
    ]
    for entries, field in cases:
        response = await alice.client.put(f"{TRACES}/thread/chat-1", json={"entries": entries})
        assert invalid_fields(response) == {field}, entries
    nan = await alice.client.put(
        f"{TRACES}/thread/chat-1",
        content=b'{"entries": [{"node": "n", "status": "completed", "data": {"x": NaN}}]}',
        headers={"Content-Type": "application/json"},
    )
    assert invalid_fields(nan) == {"entries.0.data.x"}
    assert invalid_fields(await put(alice.client, "bad%20thread", 1)) == {"path.thread_id"}
    assert invalid_fields(await put(alice.client, "chat-1", 1, id="bad id")) == {"id"}
    assert invalid_fields(await put(alice.client, "chat-1", 1, name="x" * 201)) == {"name"}
    no_thread = await alice.client.post(TRACES, json={"entries": []})
    assert invalid_fields(no_thread) == {"thread_id"}
    assert await stored_rows(app) == (0, 0)
    assert (await alice.client.get("/v1/runs")).json()["items"] == []


async def test_saving_a_thread_leaves_nothing_for_the_cycle_collector(alice: Account) -> None:
    # An agent saves its thread at every step: each save's statements are built once
    # (traces/service.py), where built per call they left objects in reference cycles.
    url = "/v1/automation/traces/thread/agent-1"
    for length in (1, 2):  # every statement compiled and cached
        assert (await alice.client.put(url, json={"entries": snapshot(length)})).is_success

    answer, left = await left_in_cycles(alice.client.put(url, json={"entries": snapshot(4)}))

    assert answer.json()["created"] == 2
    assert left == []
