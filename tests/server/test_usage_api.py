"""Daily usage over HTTP: the rows are the sums of the tasks that ended each day (by user
and model, or grouped per model or per user), members see only their own usage while
owners, admins and service keys see the project's, and bad ranges are refused."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from tests.server.conftest import Account, authed
from tests.server.test_tasks_api import assert_no_drift, invalid_fields

RANGE = {"from": "2025-06-01", "to": "2025-06-02"}
COUNTERS = (
    "requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nano",
)


async def spend(
    client: httpx.AsyncClient,
    task_id: str,
    *,
    model: str = "openai/gpt-4o",
    day: str = "2025-06-01",
    tokens: tuple[int, int, int, int] = (100, 50, 10, 5),
    fail: bool = False,
    run: str = "run",
) -> dict[str, Any]:
    """A task that ended on `day`, through the API; returns the ended task."""
    created = await client.post(
        "/v1/tasks", json={"id": task_id, "run_id": f"{run}-{day}", "model": model}
    )
    assert created.status_code == 201, created.text
    keys = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
    ending: dict[str, Any] = {
        "usage": dict(zip(keys, tokens, strict=True)),
        "completed_at": f"{day}T23:59:59Z",
    }
    if fail:
        ending["error"] = {"message": "rate limited"}
        ended = await client.post(f"/v1/tasks/{task_id}/fail", json=ending)
    else:
        ended = await client.post(
            f"/v1/tasks/{task_id}/complete", json={**ending, "response_text": "ok"}
        )
    assert ended.status_code == 200, ended.text
    task: dict[str, Any] = ended.json()
    return task


def expected(tasks: list[dict[str, Any]], *key: str) -> dict[tuple[Any, ...], dict[str, int]]:
    """The daily usage the tasks add up to, by completion day and `key` fields."""
    sums: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for task in tasks:
        row = sums[(task["completed_at"][:10], *(task[k] for k in key))]
        row["requests"] += 1
        row["failed_requests"] += task["status"] == "failed"
        for name in COUNTERS[2:6]:
            row[name] += task[name]
        row["cost_nano"] += task["cost_nano"] or 0
    return dict(sums)


def stored(body: dict[str, Any], *key: str) -> dict[tuple[Any, ...], dict[str, int]]:
    return {
        (row["day"], *(row[k] for k in key)): {name: row[name] for name in COUNTERS}
        for row in body["rows"]
    }


async def test_daily_usage_is_the_sum_of_the_tasks(app: FastAPI, alice: Account) -> None:
    tasks = [
        await spend(alice.client, "a"),
        await spend(alice.client, "b", tokens=(7, 3, 0, 0)),
        await spend(alice.client, "c", model="openai/gpt-4o-mini"),
        await spend(alice.client, "d", fail=True),
        await spend(alice.client, "e", day="2025-06-02"),
        await spend(alice.client, "f", model="acme/unpriced"),
        await spend(alice.client, "outside", day="2025-05-31"),
    ]
    in_range = tasks[:-1]
    response = await alice.client.get("/v1/usage/daily", params=RANGE)
    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"], body["group_by"]) == ("2025-06-01", "2025-06-02", None)
    assert stored(body, "user_id", "model") == expected(in_range, "user_id", "model")
    assert [(r["day"], r["model"]) for r in body["rows"]] == [
        ("2025-06-01", "gpt-4o"),
        ("2025-06-01", "gpt-4o-mini"),
        ("2025-06-01", "unpriced"),
        ("2025-06-02", "gpt-4o"),
    ]
    totals = body["totals"]
    assert totals["requests"] == 6 and totals["failed_requests"] == 1
    assert totals["cost_nano"] == sum(t["cost_nano"] or 0 for t in in_range)
    assert totals["input_tokens"] == sum(t["input_tokens"] for t in in_range)
    assert totals["total_tokens"] == totals["input_tokens"] + totals["output_tokens"]

    by_model = await alice.client.get("/v1/usage/daily", params={**RANGE, "group_by": "model"})
    assert stored(by_model.json(), "model") == expected(in_range, "model")
    assert all(row["user_id"] is None for row in by_model.json()["rows"])
    by_user = await alice.client.get("/v1/usage/daily", params={**RANGE, "group_by": "user"})
    assert stored(by_user.json(), "user_id") == expected(in_range, "user_id")
    assert by_user.json()["totals"] == totals
    await assert_no_drift(app)


async def test_members_see_their_own_usage_admins_and_service_keys_all(
    app: FastAPI, alice: Account, bob: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    alices = [await spend(alice.client, "a1"), await spend(alice.client, "a2", day="2025-06-02")]
    bobs = [await spend(bob_in_alices_project, "b1", tokens=(40, 20, 0, 0), run="bobs")]
    await spend(bob.client, "elsewhere")  # in Bob's own project

    as_member = (await bob_in_alices_project.get("/v1/usage/daily", params=RANGE)).json()
    assert stored(as_member, "user_id", "model") == expected(bobs, "user_id", "model")
    # Asking for another user's usage does not widen a member's view.
    peek = await bob_in_alices_project.get("/v1/usage/daily", params={**RANGE, "user_id": "alice"})
    assert peek.json()["rows"] == []

    as_owner = await alice.client.get("/v1/usage/daily", params={**RANGE, "group_by": "user"})
    assert stored(as_owner.json(), "user_id") == expected(alices + bobs, "user_id")
    # Summed over users (the project's totals, migration 0010): both users, one row a model.
    by_model = await alice.client.get("/v1/usage/daily", params={**RANGE, "group_by": "model"})
    assert stored(by_model.json(), "model") == expected(alices + bobs, "model")
    bobs_by_model = await bob_in_alices_project.get(
        "/v1/usage/daily", params={**RANGE, "group_by": "model"}
    )
    assert stored(bobs_by_model.json(), "model") == expected(bobs, "model")
    only_bob = await alice.client.get("/v1/usage/daily", params={**RANGE, "user_id": "bob"})
    assert stored(only_bob.json(), "user_id", "model") == expected(bobs, "user_id", "model")

    key = (await alice.client.post("/v1/keys", json={"kind": "service"})).json()
    opened: list[httpx.AsyncClient] = []
    backend = authed(app, key["secret"], opened)
    as_service = (await backend.get("/v1/usage/daily", params=RANGE)).json()
    assert stored(as_service, "user_id", "model") == expected(alices + bobs, "user_id", "model")
    by_model = await backend.get("/v1/usage/daily", params={**RANGE, "group_by": "model"})
    assert stored(by_model.json(), "model") == expected(alices + bobs, "model")
    for client in opened:
        await client.aclose()

    # Bob's own project is another tenant: nothing of Alice's, and his there is his.
    in_his_project = (await bob.client.get("/v1/usage/daily", params=RANGE)).json()
    assert {row["user_id"] for row in in_his_project["rows"]} == {"bob"}
    assert in_his_project["totals"]["requests"] == 1


async def test_the_default_range_is_the_last_30_days(alice: Account) -> None:
    today = datetime.now(UTC).date()
    created = await alice.client.post(
        "/v1/tasks", json={"id": "now", "run_id": "r", "model": "openai/gpt-4o"}
    )
    assert created.status_code == 201
    done = await alice.client.post(
        "/v1/tasks/now/complete",
        json={"response_text": "ok", "usage": {"input_tokens": 1, "output_tokens": 1}},
    )
    assert done.status_code == 200
    old = (datetime.now(UTC) - timedelta(days=40)).date().isoformat()
    await spend(alice.client, "old", day=old)
    body = (await alice.client.get("/v1/usage/daily")).json()
    assert (body["from"], body["to"]) == ((today - timedelta(days=29)).isoformat(), str(today))
    assert body["totals"]["requests"] == 1
    assert [row["day"] for row in body["rows"]] == [done.json()["completed_at"][:10]]


async def test_bad_ranges_are_422_naming_the_field(alice: Account) -> None:
    backwards = await alice.client.get(
        "/v1/usage/daily", params={"from": "2025-06-02", "to": "2025-06-01"}
    )
    assert invalid_fields(backwards) == {"to"}
    too_long = await alice.client.get(
        "/v1/usage/daily", params={"from": "2024-01-01", "to": "2025-06-01"}
    )
    assert invalid_fields(too_long) == {"from"}
    a_year = await alice.client.get(
        "/v1/usage/daily", params={"from": "2024-06-01", "to": "2025-06-01"}
    )
    assert a_year.status_code == 200  # 366 days, counting both ends
    not_a_date = await alice.client.get("/v1/usage/daily", params={"from": "June"})
    assert invalid_fields(not_a_date) == {"query.from"}
    grouping = await alice.client.get("/v1/usage/daily", params={"group_by": "day"})
    assert invalid_fields(grouping) == {"query.group_by"}
    assert (
        await alice.client.get("/v1/usage/daily", params={"user_id": "no way"})
    ).status_code == 422
