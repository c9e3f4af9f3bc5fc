"""Batch ingest and offline sync over HTTP (DESIGN.md flow 3): insert-only, idempotent by
id, a verdict per item, and re-uploading history changes no totals."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.server.conftest import Account
from tests.server.test_tasks_api import GPT4O_INPUT, GPT4O_OUTPUT, assert_no_drift

DAY = "2025-06-01"


def asked(i: int, **extra: str) -> dict[str, Any]:
    """An exchange made offline, as an interaction item of run "trip"."""
    return {
        "kind": "interaction",
        "id": f"i{i}",
        "run_id": "trip",
        "prompt": f"Question {i}?",
        "response": f"Answer {i}.",
        "model": "openai/gpt-4o",
        "usage": {"input_tokens": 10 + i, "output_tokens": 5},
        "created_at": f"{DAY}T10:{i:02d}:00Z",
        "total_ms": 800,
    } | extra


def offline_history(n: int) -> list[dict[str, Any]]:
    """What a client made offline: a run, then per turn a user message and its reply
    (an interaction), plus an agent trace and a failed call."""
    items: list[dict[str, Any]] = [{"kind": "run", "id": "trip", "name": "Trip"}]
    items += (asked(i) for i in range(n))
    items.append(
        {
            "kind": "task",
            "id": "failed-1",
            "run_id": "trip",
            "model": "openai/gpt-4o",
            "status": "failed",
            "response_text": "Partial",
            "usage": {"input_tokens": 7, "output_tokens": 1},
            "error": {"kind": "timeout", "message": "the provider timed out"},
            "created_at": f"{DAY}T11:00:00Z",
            "completed_at": f"{DAY}T11:00:30Z",
        }
    )
    items.append(
        {
            "kind": "message",
            "id": "note",
            "run_id": "trip",
            "role": "system",
            "content": "Be brief.",
            "created_at": f"{DAY}T09:59:00Z",
        }
    )
    items.append(
        {
            "kind": "trace_entries",
            "thread_id": "trip",
            "entries": [{"node": "planner", "status": "completed", "data": {"steps": 2}}],
        }
    )
    return items


async def totals(client: httpx.AsyncClient) -> dict[str, Any]:
    run = (await client.get("/v1/runs/trip")).json()
    usage = (await client.get(f"/v1/usage/daily?from={DAY}&to={DAY}")).json()
    return {
        "run": {
            k: run[k] for k in ("task_count", "message_count", "total_tokens", "total_cost_nano")
        },
        "usage": usage["rows"],
    }


async def test_offline_history_lands_once_and_reuploads_change_nothing(
    app: FastAPI, alice: Account
) -> None:
    items = offline_history(5)
    first = await alice.client.post("/v1/batch", json={"items": items})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["duplicate"], body["rejected"]) == (len(items), 0, 0)
    assert [r["status"] for r in body["results"]] == ["created"] * len(items)

    stored = await totals(alice.client)
    input_tokens = sum(10 + i for i in range(5)) + 7
    assert stored["run"] == {
        "task_count": 5,
        "message_count": 11,  # 5 exchanges of 2, and the system note
        "total_tokens": input_tokens + 5 * 5 + 1,
        "total_cost_nano": input_tokens * GPT4O_INPUT + 26 * GPT4O_OUTPUT,
    }
    [day] = stored["usage"]
    assert (day["day"], day["requests"], day["failed_requests"]) == (DAY, 6, 1)

    for _ in range(2):  # the client syncs its whole history again, twice
        again = await alice.client.post("/v1/batch", json={"items": items})
        assert (again.json()["created"], again.json()["duplicate"]) == (0, len(items))
        assert await totals(alice.client) == stored
    trace = (await alice.client.get("/v1/automation/traces/thread/trip")).json()
    assert trace["entry_count"] == 1
    await assert_no_drift(app)


async def test_a_bad_item_is_rejected_alone(app: FastAPI, alice: Account) -> None:
    items: list[dict[str, Any]] = [
        {"kind": "run", "id": "r1"},
        {"kind": "message", "id": "m1", "run_id": "r1", "role": "user", "content": "hi"},
        {"kind": "message", "id": "m1", "run_id": "r1", "role": "user", "content": "changed"},
        {"kind": "message", "id": "bad id!", "run_id": "r1", "role": "user", "content": "x"},
        {"kind": "spaceship", "id": "s1"},
        {
            "kind": "task",
            "id": "t1",
            "run_id": "r1",
            "model": "openai/gpt-4o",
            "status": "completed",
            "usage": {"input_tokens": 1, "output_tokens": 9**12},
        },
        {
            "kind": "interaction",
            "id": "i1",
            "run_id": "r1",
            "prompt": "p",
            "response": "r",
            "model": "openai/gpt-4o",
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "created_at": "2999-01-01T00:00:00Z",
        },
        {"kind": "message", "id": "m2", "run_id": "r1", "role": "assistant", "content": "ok"},
    ]
    response = await alice.client.post("/v1/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "created",
        "created",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "created",
    ]
    assert results[2]["error"]["code"] == "conflict"
    assert results[3]["error"]["details"]["errors"][0]["field"].endswith("id")
    assert "usage.output_tokens" in results[5]["error"]["message"]
    assert "future" in results[6]["error"]["message"]
    messages = (await alice.client.get("/v1/runs/r1/messages")).json()
    assert [(m["id"], m["content"]) for m in messages] == [("m1", "hi"), ("m2", "ok")]
    assert (await alice.client.get("/v1/tasks/t1")).status_code == 404
    await assert_no_drift(app)


async def test_an_item_refused_after_its_task_ended_counts_no_usage(
    app: FastAPI, alice: Account
) -> None:
    """An interaction whose reply reuses a message id is refused once its task has ended
    and its usage been counted (the batch holds usage back to its end: usage/tally.py);
    what it counted goes with it."""
    items = [asked(1, assistant_message_id="a1"), asked(2, assistant_message_id="a1"), asked(3)]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()
    assert [r["status"] for r in body["results"]] == ["created", "rejected", "created"]
    [day] = (await totals(alice.client))["usage"]
    assert (day["requests"], day["input_tokens"]) == (2, 11 + 13)
    await assert_no_drift(app)


async def test_items_missing_parents_create_them(alice: Account) -> None:
    items = [
        {"kind": "message", "id": "m1", "run_id": "fresh", "role": "user", "content": "Hello"},
        {
            "kind": "task",
            "id": "t1",
            "run_id": "other",
            "model": "openai/gpt-4o",
            "status": "cancelled",
        },
    ]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()
    assert body["created"] == 2
    assert (await alice.client.get("/v1/runs/fresh")).json()["name"] == "Hello"
    assert (await alice.client.get("/v1/tasks/t1")).json()["status"] == "cancelled"


async def test_another_tenants_ids_are_rejected_not_touched(alice: Account, bob: Account) -> None:
    await alice.client.put("/v1/runs/shared-name", json={})
    item = {"kind": "message", "id": "m", "run_id": "shared-name", "role": "user", "content": "x"}
    # Bob's project is another tenant: the same run id is simply his own run there.
    mine = (await bob.client.post("/v1/batch", json={"items": [item]})).json()
    assert mine["created"] == 1
    assert (await alice.client.get("/v1/runs/shared-name")).json()["message_count"] == 0


async def test_too_many_items_is_413(alice: Account) -> None:
    items = [{"kind": "run", "id": f"r{i}"} for i in range(1001)]
    response = await alice.client.post("/v1/batch", json={"items": items})
    assert response.status_code == 413
    assert (await alice.client.get("/v1/runs")).json()["items"] == []
