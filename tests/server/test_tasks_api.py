"""Tasks over HTTP: created before the model is called (run ensured, idempotent by id),
progress while live, and one terminal transition — complete, fail or cancel — that is
counted exactly once, replays answering the same task and contradictions 409."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI

from chatledger.server.deps import AppState
from chatledger.verify import find_drift
from tests.server.conftest import Account, authed

# A fixed end time, so the price is that day's list price (and the usage day is known).
AT = "2025-06-01T12:00:00Z"
# gpt-4o list prices per token, in nano-USD: $2.50 / $1.25 cached / $10.00 per million.
GPT4O_INPUT, GPT4O_CACHED, GPT4O_OUTPUT = 2_500, 1_250, 10_000
USAGE = {"input_tokens": 1_000, "output_tokens": 500, "cached_tokens": 200, "reasoning_tokens": 0}
USAGE_COST = 800 * GPT4O_INPUT + 200 * GPT4O_CACHED + 500 * GPT4O_OUTPUT
COMPLETION = {"response_text": "Hello!", "usage": USAGE, "completed_at": AT, "ttft_ms": 120}


async def create_task(
    client: httpx.AsyncClient, task_id: str | None, run_id: str = "r1", **fields: Any
) -> httpx.Response:
    body = {"id": task_id, "run_id": run_id, "model": "openai/gpt-4o", **fields}
    return await client.post("/v1/tasks", json=body)


async def run_totals(client: httpx.AsyncClient, run_id: str = "r1") -> tuple[int, int, Decimal]:
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    return run["task_count"], run["total_tokens"], Decimal(run["total_cost_usd"])


def invalid_fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    if "errors" in details:
        return {problem["field"] for problem in details["errors"]}
    return {details["field"]}


async def assert_no_drift(app: FastAPI) -> None:
    state: AppState = app.state.chatledger
    async with state.database.reading() as session:
        assert await find_drift(session) == []


async def test_create_ensures_the_run_and_is_idempotent(alice: Account) -> None:
    created = await create_task(alice.client, "t1", request={"temperature": 0.2}, service="app")
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["provider"], task["model"], task["status"]) == ("openai", "gpt-4o", "pending")
    assert task["run_id"] == "r1" and task["user_id"] == "alice"
    assert task["request"] == {"temperature": 0.2}
    assert task["cost_nano"] is None and task["cost_usd"] is None
    run = await alice.client.get("/v1/runs/r1")
    assert run.status_code == 200
    assert run.json()["task_count"] == 0

    again = await create_task(alice.client, "t1", request={"temperature": 0.2}, service="app")
    assert again.status_code == 200
    assert again.json() == task
    elsewhere = await create_task(alice.client, "t1", run_id="r2")
    assert elsewhere.status_code == 409
    assert elsewhere.json()["error"]["code"] == "conflict"
    # The refused call wrote nothing: not even the run it would have ensured.
    assert (await alice.client.get("/v1/runs/r2")).status_code == 404

    assert (await create_task(alice.client, "t2")).status_code == 201
    assert (await alice.client.get("/v1/tasks/t1")).json() == task
    listed = await alice.client.get("/v1/runs/r1/tasks")
    assert [t["id"] for t in listed.json()] == ["t1", "t2"]


async def test_the_provider_comes_from_the_model_or_is_required(alice: Account) -> None:
    bare = await create_task(alice.client, "t1", model="gpt-4o")
    assert invalid_fields(bare) == {"provider"}
    given = await create_task(alice.client, "t1", model="gpt-4o", provider="openai")
    assert (given.json()["provider"], given.json()["model"]) == ("openai", "gpt-4o")
    generated = await create_task(alice.client, None, model="anthropic/claude-3-5-haiku-latest")
    assert generated.status_code == 201
    assert generated.json()["provider"] == "anthropic"
    assert len(generated.json()["id"]) == 36  # a UUIDv7


async def test_progress_then_completion_counted_once(app: FastAPI, alice: Account) -> None:
    await create_task(alice.client, "t1")
    streaming = await alice.client.patch("/v1/tasks/t1", json={"response_text": "Hel"})
    assert streaming.status_code == 200
    assert (streaming.json()["status"], streaming.json()["response_text"]) == ("streaming", "Hel")
    heartbeat = await alice.client.patch("/v1/tasks/t1")
    assert heartbeat.json()["response_text"] == "Hel"
    beats = [datetime.fromisoformat(r.json()["heartbeat_at"]) for r in (streaming, heartbeat)]
    assert beats[1] >= beats[0]

    done = await alice.client.post("/v1/tasks/t1/complete", json=COMPLETION)
    assert done.status_code == 200, done.text
    task = done.json()
    assert task["status"] == "completed"
    assert (task["input_tokens"], task["output_tokens"], task["cached_tokens"]) == (1000, 500, 200)
    assert task["cost_nano"] == USAGE_COST
    assert Decimal(task["cost_usd"]) == Decimal("0.00725")
    assert task["price_source"].startswith("genai-prices ")
    assert task["completed_at"].startswith("2025-06-01T12:00:00")
    assert (task["ttft_ms"], task["usage_estimated"], task["total_tokens"]) == (120, False, 1500)
    assert await run_totals(alice.client) == (1, 1500, Decimal("0.00725"))

    replay = await alice.client.post("/v1/tasks/t1/complete", json=COMPLETION)
    assert replay.status_code == 200
    assert replay.json() == task
    other_text = await alice.client.post(
        "/v1/tasks/t1/complete", json={**COMPLETION, "response_text": "Bye"}
    )
    assert other_text.status_code == 409
    other_usage = await alice.client.post(
        "/v1/tasks/t1/complete", json={**COMPLETION, "usage": {**USAGE, "output_tokens": 9}}
    )
    assert other_usage.status_code == 409
    assert (await alice.client.post("/v1/tasks/t1/cancel")).status_code == 409
    late = await alice.client.patch("/v1/tasks/t1", json={"response_text": "more"})
    assert late.status_code == 409
    assert (await alice.client.get("/v1/tasks/t1")).json() == task
    assert await run_totals(alice.client) == (1, 1500, Decimal("0.00725"))
    await assert_no_drift(app)


async def test_unpriced_model_costs_null_and_client_costs_are_kept(
    app: FastAPI, alice: Account
) -> None:
    await create_task(alice.client, "mystery", model="acme/mystery-1")
    unpriced = await alice.client.post("/v1/tasks/mystery/complete", json=COMPLETION)
    assert unpriced.status_code == 200
    body = unpriced.json()
    assert (body["cost_nano"], body["cost_usd"], body["price_source"]) == (None, None, "unknown")
    await create_task(alice.client, "paid", model="acme/mystery-1")
    paid = await alice.client.post(
        "/v1/tasks/paid/complete", json={**COMPLETION, "cost_usd": "0.0123"}
    )
    assert (paid.json()["cost_nano"], paid.json()["price_source"]) == (12_300_000, "client")
    assert Decimal(paid.json()["cost_usd"]) == Decimal("0.0123")
    # Unknown adds nothing to the run's cost; the tokens still count.
    assert await run_totals(alice.client) == (2, 3000, Decimal("0.0123"))
    await assert_no_drift(app)


async def test_fail_and_cancel_end_a_task_once(app: FastAPI, alice: Account) -> None:
    await create_task(alice.client, "t1")
    failure = {
        "error": {"kind": "timeout", "message": "the model took too long", "retryable": True},
        "response_text": "Hal",
        "usage": {"input_tokens": 100, "output_tokens": 3},
        "completed_at": AT,
    }
    failed = await alice.client.post("/v1/tasks/t1/fail", json=failure)
    assert failed.status_code == 200, failed.text
    task = failed.json()
    assert task["status"] == "failed"
    assert task["error"] == failure["error"]
    assert task["cost_nano"] == 100 * GPT4O_INPUT + 3 * GPT4O_OUTPUT
    assert (await alice.client.post("/v1/tasks/t1/fail", json=failure)).json() == task
    assert (await alice.client.post("/v1/tasks/t1/complete", json=COMPLETION)).status_code == 409
    # Money spent on a failed attempt is not lost; it is not a completed task either.
    assert await run_totals(alice.client) == (0, 103, Decimal("0.00028"))

    await create_task(alice.client, "t2")
    cancelled = await alice.client.post("/v1/tasks/t2/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"]["kind"] == "cancelled"
    assert (await alice.client.post("/v1/tasks/t2/cancel", json={})).json() == cancelled.json()
    assert (await alice.client.post("/v1/tasks/t2/fail", json=failure)).status_code == 409
    assert await run_totals(alice.client) == (0, 103, Decimal("0.00028"))
    await assert_no_drift(app)


async def test_twenty_concurrent_identical_completions_count_once(
    app: FastAPI, alice: Account
) -> None:
    await create_task(alice.client, "t1")
    responses = await asyncio.gather(
        *(alice.client.post("/v1/tasks/t1/complete", json=COMPLETION) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.text for r in responses}) == 1
    assert await run_totals(alice.client) == (1, 1500, Decimal("0.00725"))
    usage = await alice.client.get("/v1/usage/daily", params={"from": "2025-06-01", "to": AT[:10]})
    assert usage.json()["totals"]["requests"] == 1
    assert usage.json()["totals"]["cost_nano"] == USAGE_COST
    await assert_no_drift(app)


async def test_another_users_tasks_are_not_found(alice: Account, bob: Account) -> None:
    await create_task(alice.client, "t1")
    assert (await bob.client.get("/v1/tasks/t1")).status_code == 404
    assert (await bob.client.get("/v1/runs/r1/tasks")).status_code == 404
    assert (await bob.client.patch("/v1/tasks/t1", json={})).status_code == 404
    refused = await bob.client.post("/v1/tasks/t1/complete", json=COMPLETION)
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
    assert (await bob.client.post("/v1/tasks/t1/cancel")).status_code == 404
    assert (await alice.client.get("/v1/tasks/t1")).json()["status"] == "pending"
    # Ids are per project: Bob's own "t1" in his own "r1" is another task altogether.
    assert (await create_task(bob.client, "t1")).status_code == 201
    assert (await alice.client.get("/v1/runs/r1/tasks")).json()[0]["user_id"] == "alice"


async def test_a_service_key_acts_for_its_end_users(app: FastAPI, alice: Account) -> None:
    service = (await alice.client.post("/v1/keys", json={"kind": "service"})).json()
    opened: list[httpx.AsyncClient] = []
    backend = authed(app, service["secret"], opened)
    created = await create_task(backend, "t1", run_id="u7-chat", user_id="end-user-7")
    assert created.json()["user_id"] == "end-user-7"
    done = await backend.post("/v1/tasks/t1/complete", json=COMPLETION)
    assert done.status_code == 200
    assert (await alice.client.get("/v1/runs/u7-chat")).json()["user_id"] == "end-user-7"
    for client in opened:
        await client.aclose()


async def test_bad_input_is_422_naming_the_field(alice: Account) -> None:
    assert invalid_fields(await create_task(alice.client, "bad id!")) == {"id"}
    assert invalid_fields(await create_task(alice.client, "t1", run_id="x" * 129)) == {"run_id"}
    assert invalid_fields(await alice.client.post("/v1/tasks", json={"run_id": "r1"})) == {"model"}
    assert (await alice.client.get("/v1/runs")).json()["items"] == []

    await create_task(alice.client, "t1")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"usage": {**USAGE, "input_tokens": -1}}, "usage.input_tokens"),
        ({"usage": {**USAGE, "cached_tokens": 1_001}}, "usage.cached_tokens"),
        ({"usage": {**USAGE, "reasoning_tokens": 501}}, "usage.reasoning_tokens"),
        ({"usage": {**USAGE, "output_tokens": 2**31}}, "usage.output_tokens"),
        ({"completed_at": future}, "completed_at"),
        ({"completed_at": "2025-06-01T12:00:00"}, "completed_at"),  # no time zone
        ({"cost_usd": "-0.01"}, "cost_usd"),
        ({"ttft_ms": -5}, "ttft_ms"),
    ]
    for change, field in cases:
        response = await alice.client.post("/v1/tasks/t1/complete", json={**COMPLETION, **change})
        assert invalid_fields(response) == {field}, change
    missing = await alice.client.post("/v1/tasks/t1/complete", json={"response_text": "x"})
    assert invalid_fields(missing) == {"usage"}
    no_message = await alice.client.post("/v1/tasks/t1/fail", json={"error": {"kind": "x"}})
    assert invalid_fields(no_message) == {"error.message"}
    bad_path = await alice.client.post("/v1/tasks/bad%20id/complete", json=COMPLETION)
    assert invalid_fields(bad_path) == {"path.task_id"}
    assert (await alice.client.get("/v1/tasks/t1")).json()["status"] == "pending"
