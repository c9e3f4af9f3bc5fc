"""Interactions over HTTP (DESIGN.md flow 4): one call records a finished exchange — the
run ensured (created if absent, named from the prompt), a completed task with its usage
and cost counted once, the user and assistant messages — and posting it again is a
replay that changes nothing, while other content under the same id is a conflict."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from tests.server.conftest import Account, authed
from tests.server.test_tasks_api import GPT4O_INPUT, GPT4O_OUTPUT, assert_no_drift, invalid_fields

EXCHANGE: dict[str, Any] = {
    "id": "i1",
    "prompt": "What is the capital of France?\nAnswer briefly.",
    "response": "Paris.",
    "model": "openai/gpt-4o",
    "usage": {"input_tokens": 12, "output_tokens": 3},
    "ttft_ms": 90,
    "total_ms": 1_500,
    "created_at": "2025-06-01T10:00:00Z",
    "metadata": {"source": "mobile"},
}
COST = 12 * GPT4O_INPUT + 3 * GPT4O_OUTPUT


async def post(client: httpx.AsyncClient, run_id: str = "s1", **change: Any) -> httpx.Response:
    return await client.post(f"/v1/runs/{run_id}/interactions", json={**EXCHANGE, **change})


async def test_an_interaction_creates_its_run_task_and_messages(
    app: FastAPI, alice: Account
) -> None:
    response = await post(alice.client)
    assert response.status_code == 201, response.text
    body = response.json()
    run, task = body["run"], body["task"]
    user, assistant = body["user_message"], body["assistant_message"]

    assert (run["id"], run["name"], run["name_source"]) == (
        "s1",
        "What is the capital of France?",
        "auto",
    )
    assert (run["task_count"], run["message_count"], run["total_tokens"]) == (1, 2, 15)
    assert run["total_cost_nano"] == COST
    assert run["created_at"].startswith("2025-06-01T10:00:00")
    assert (task["id"], task["status"], task["run_id"]) == ("i1", "completed", "s1")
    assert (task["provider"], task["model"], task["response_text"]) == (
        "openai",
        "gpt-4o",
        "Paris.",
    )
    assert (task["cost_nano"], task["ttft_ms"], task["total_ms"]) == (COST, 90, 1_500)
    assert task["user_message_id"] == user["id"]
    # It ended total_ms after it started: its usage counts on that day.
    assert task["completed_at"].startswith("2025-06-01T10:00:01.5")
    assert (user["role"], user["content"], user["seq"], user["task_id"]) == (
        "user",
        EXCHANGE["prompt"],
        1,
        "i1",
    )
    assert (assistant["role"], assistant["content"], assistant["seq"]) == ("assistant", "Paris.", 2)
    assert (assistant["task_id"], assistant["parent_id"]) == ("i1", user["id"])
    assert assistant["metadata"] == {"source": "mobile", "model": "gpt-4o"}

    stored = (await alice.client.get("/v1/runs/s1")).json()
    assert [m["id"] for m in stored["messages"]] == [user["id"], assistant["id"]]
    assert (await alice.client.get("/v1/tasks/i1")).json() == task
    usage = await alice.client.get(
        "/v1/usage/daily", params={"from": "2025-06-01", "to": "2025-06-01"}
    )
    assert usage.json()["totals"]["requests"] == 1
    assert usage.json()["totals"]["cost_nano"] == COST
    await assert_no_drift(app)


async def test_posting_it_again_changes_nothing(app: FastAPI, alice: Account) -> None:
    first = await post(alice.client)
    assert first.status_code == 201
    for _ in range(2):
        again = await post(alice.client)
        assert again.status_code == 200
        assert again.json() == first.json()
    # Naming the ids it was given is the same interaction too.
    named = await post(
        alice.client,
        user_message_id=first.json()["user_message"]["id"],
        assistant_message_id=first.json()["assistant_message"]["id"],
    )
    assert named.status_code == 200
    run = (await alice.client.get("/v1/runs/s1")).json()
    assert (run["task_count"], run["message_count"], run["total_tokens"]) == (1, 2, 15)
    assert len((await alice.client.get("/v1/runs/s1/tasks")).json()) == 1
    await assert_no_drift(app)


async def test_the_same_id_with_other_content_is_a_conflict(app: FastAPI, alice: Account) -> None:
    stored = (await post(alice.client)).json()
    changes: list[dict[str, Any]] = [
        {"response": "Lyon."},
        {"prompt": "And of Spain?"},
        {"usage": {"input_tokens": 12, "output_tokens": 4}},
        {"model": "openai/gpt-4o-mini"},
        {"cost_usd": "1"},
        {"assistant_message_id": "someone-else"},
    ]
    for change in changes:
        response = await post(alice.client, **change)
        assert response.status_code == 409, change
        assert response.json()["error"]["code"] == "conflict"
    # Under another run: a conflict too, and the run it would have created is not made.
    assert (await post(alice.client, run_id="s2")).status_code == 409
    assert (await alice.client.get("/v1/runs/s2")).status_code == 404
    # A task made through /v1/tasks is not an interaction to replay.
    await alice.client.post("/v1/tasks", json={"id": "t1", "run_id": "s1", "model": "echo"})
    assert (await post(alice.client, id="t1")).status_code == 409
    run = (await alice.client.get("/v1/runs/s1")).json()
    assert run["total_tokens"] == stored["run"]["total_tokens"]
    assert run["message_count"] == 2
    await assert_no_drift(app)


async def test_follow_ups_reuse_the_run(app: FastAPI, alice: Account) -> None:
    await post(alice.client)
    second = await post(
        alice.client,
        id="i2",
        prompt="And of Spain?",
        response="Madrid.",
        created_at="2025-06-01T10:01:00Z",
    )
    assert second.status_code == 201
    body = second.json()
    assert body["run"]["name"] == "What is the capital of France?"
    assert (body["user_message"]["seq"], body["assistant_message"]["seq"]) == (3, 4)
    assert (body["run"]["task_count"], body["run"]["total_tokens"]) == (2, 30)
    tasks = (await alice.client.get("/v1/runs/s1/tasks")).json()
    assert [t["id"] for t in tasks] == ["i1", "i2"]
    await assert_no_drift(app)


async def test_it_answers_a_user_message_stored_before(app: FastAPI, alice: Account) -> None:
    # The app stored the prompt itself, and its first reply failed.
    await alice.client.put("/v1/runs/s1", json={})
    stored = await alice.client.post(
        "/v1/runs/s1/messages",
        json={"id": "m1", "role": "user", "content": EXCHANGE["prompt"], "status": "error"},
    )
    assert stored.status_code == 201
    response = await post(alice.client, user_message_id="m1")
    assert response.status_code == 201, response.text
    user = response.json()["user_message"]
    assert (user["id"], user["seq"], user["status"], user["task_id"]) == ("m1", 1, "complete", "i1")
    assert response.json()["run"]["message_count"] == 2
    # Its text is not rewritten: other text under that id is a conflict.
    assert (await post(alice.client, id="i2", user_message_id="m1", prompt="?")).status_code == 409
    await assert_no_drift(app)


async def test_concurrent_identical_posts_store_it_once(app: FastAPI, alice: Account) -> None:
    responses = await asyncio.gather(*(post(alice.client) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["assistant_message"]["id"] for r in responses}) == 1
    run = (await alice.client.get("/v1/runs/s1")).json()
    assert (run["task_count"], run["message_count"], run["total_tokens"]) == (1, 2, 15)
    await assert_no_drift(app)


async def test_without_ids_or_times_the_server_chooses_them(alice: Account) -> None:
    body = {k: v for k, v in EXCHANGE.items() if k not in ("id", "created_at", "total_ms")}
    response = await alice.client.post("/v1/runs/s1/interactions", json=body)
    assert response.status_code == 201
    task = response.json()["task"]
    assert len(task["id"]) == 36
    ended = datetime.fromisoformat(task["completed_at"])
    assert datetime.now(UTC) - ended < timedelta(minutes=5)


async def test_other_users_runs_are_not_found(
    alice: Account, bob: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    await post(alice.client)
    assert (await bob.client.get("/v1/runs/s1")).status_code == 404
    assert (await bob.client.get("/v1/tasks/i1")).status_code == 404
    # In Alice's project, as a member, Bob cannot write into her run either.
    refused = await post(bob_in_alices_project, id="i2")
    assert refused.status_code == 404
    assert (await alice.client.get("/v1/runs/s1")).json()["message_count"] == 2
    mine = await post(bob_in_alices_project, run_id="bobs", id="i2")
    assert mine.json()["run"]["user_id"] == "bob"


async def test_a_service_key_records_for_an_end_user(app: FastAPI, alice: Account) -> None:
    key = (await alice.client.post("/v1/keys", json={"kind": "service"})).json()
    opened: list[httpx.AsyncClient] = []
    backend = authed(app, key["secret"], opened)
    response = await post(backend, user_id="end-user-7")
    assert response.status_code == 201
    assert response.json()["run"]["user_id"] == "end-user-7"
    assert response.json()["task"]["user_id"] == "end-user-7"
    for client in opened:
        await client.aclose()


async def test_bad_input_is_422_naming_the_field(alice: Account) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"usage": {"input_tokens": -1, "output_tokens": 3}}, "usage.input_tokens"),
        (
            {"usage": {"input_tokens": 1, "output_tokens": 3, "cached_tokens": 2}},
            "usage.cached_tokens",
        ),
        ({"created_at": future}, "created_at"),
        ({"completed_at": "2025-06-01T09:00:00Z"}, "completed_at"),  # before created_at
        ({"id": "not an id"}, "id"),
        ({"user_message_id": "x" * 129}, "user_message_id"),
        ({"model": "gpt-4o"}, "provider"),
        ({"prompt": None}, "prompt"),
    ]
    for change, field in cases:
        assert invalid_fields(await post(alice.client, **change)) == {field}, change
    assert invalid_fields(await post(alice.client, run_id="bad%20run")) == {"path.run_id"}
    assert (await alice.client.get("/v1/runs")).json()["items"] == []
