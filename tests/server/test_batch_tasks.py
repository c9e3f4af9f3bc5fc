"""Batch ingest stores new ended task items together (tasks/bulk.py). Whatever a batch
holds — completed, failed and cancelled tasks, priced by the server or by the client,
further attempts at a user message, ids sent again or taken in another run, another
user's run, bad items — the verdicts, every stored row and the usage must be what
storing the items one at a time gives. The reference is the same batch in another
project with the bulk path refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger.tasks import bulk
from tests.server.conftest import Account
from tests.server.test_batch_bulk import (
    interaction,
    refusing,
    runs_made_meanwhile,
    state,
    verdicts,
)
from tests.server.test_tasks_api import assert_no_drift

DAY = "2025-06-01"


def task(n: int, run_id: str = "trip", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "kind": "task",
        "id": f"t{n}",
        "run_id": run_id,
        "model": "openai/gpt-4o",
        "status": "completed",
        "response_text": f"Reply {n}.",
        "usage": {"input_tokens": 100 + n, "output_tokens": 10 + n, "cached_tokens": n},
        "created_at": f"{DAY}T11:{n:02d}:00Z",
        "completed_at": f"{DAY}T11:{n:02d}:30Z",
        "ttft_ms": 150,
        "total_ms": 30_000,
    }
    return item | extra


def mixed_batch() -> list[dict[str, Any]]:
    return [
        {"kind": "run", "id": "trip", "name": "Trip", "created_at": f"{DAY}T09:00:00Z"},
        {"kind": "run", "id": "other", "name": "Other", "created_at": f"{DAY}T09:00:00Z"},
        task(0, user_message_id="q0"),  # priced by the server
        # A second attempt at the same question: numbered 2, one at a time.
        task(1, user_message_id="q0", status="failed", error={"message": "timeout"}),
        task(2, run_id="other", status="cancelled", usage=None, cost_usd="0.25"),
        task(3, run_id="other", user_message_id="q3", cost_usd="0.5"),
        task(0, user_message_id="q0"),  # sent twice: a duplicate
        task(3, run_id="trip"),  # its id taken in another run: refused
        task(4, completed_at=f"{DAY}T10:00:00Z"),  # ends before it starts: refused
        task(5, status="interrupted"),  # not a status a sync reports: refused
        task(6, run_id="made-by-a-task"),
        interaction(7),  # between two groups of tasks
        task(8, model="anthropic/claude-3-5-haiku-latest", completed_at=None),
        task(9, run_id="other", status="failed", usage=None, error={"message": "overloaded"}),
    ]


async def test_a_mixed_batch_lands_as_if_one_item_at_a_time(
    app: FastAPI, alice: Account, bob: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = mixed_batch()
    bulk_answer = await alice.client.post("/v1/batch", json={"items": items})
    with refusing(monkeypatch, bulk):
        reference = await bob.client.post("/v1/batch", json={"items": items})
    assert bulk_answer.status_code == reference.status_code == 200, bulk_answer.text
    assert verdicts(bulk_answer.json()) == verdicts(reference.json())
    statuses = [r["status"] for r in bulk_answer.json()["results"]]
    assert [statuses.count(s) for s in ("created", "duplicate", "rejected")] == [10, 1, 3]
    assert await state(alice.client) == await state(bob.client)
    made = (await alice.client.get("/v1/runs/made-by-a-task")).json()
    assert (made["name"], made["task_count"], made["message_count"]) == (
        "New conversation",
        1,
        0,
    )
    tasks = (await alice.client.get("/v1/runs/trip/tasks")).json()
    assert [(t["id"], t["attempt"], t["status"]) for t in tasks] == [
        ("i7", 1, "completed"),  # (by the time each was made: the interaction's at 10:07)
        ("t0", 1, "completed"),
        ("t1", 2, "failed"),
        ("t8", 1, "completed"),
    ]

    again = await alice.client.post("/v1/batch", json={"items": items})
    with refusing(monkeypatch, bulk):
        reference_again = await bob.client.post("/v1/batch", json={"items": items})
    assert verdicts(again.json()) == verdicts(reference_again.json())
    assert again.json()["created"] == 0
    assert await state(alice.client) == await state(bob.client)
    await assert_no_drift(app)


async def test_a_thousand_tasks_are_stored_whole(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    storing = bulk.store

    async def counted(session: Any, pendings: Any) -> None:
        groups.append(len(pendings))
        await storing(session, pendings)

    monkeypatch.setattr(bulk, "store", counted)
    items = [
        task(n % 60, run_id=f"r{n % 3}", id=f"t{n}", status=("completed", "failed")[n % 2])
        for n in range(1_000)
    ]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()

    assert (body["created"], body["duplicate"], body["rejected"]) == (1_000, 0, 0)
    assert groups == [1_000]  # one group, in bulk: no item fell back to one at a time
    runs = {r["id"]: r for r in (await alice.client.get("/v1/runs?limit=10")).json()["items"]}
    assert sum(r["task_count"] for r in runs.values()) == 500  # the completed ones
    usage = (await alice.client.get(f"/v1/usage/daily?from={DAY}&to={DAY}")).json()
    assert usage["totals"]["requests"] == 1_000
    assert usage["totals"]["failed_requests"] == 500
    await assert_no_drift(app)


async def test_a_members_tasks_in_another_users_run_are_refused_alone(
    app: FastAPI, alice: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    mine = await alice.client.post("/v1/batch", json={"items": [task(0, run_id="alices")]})
    assert mine.json()["created"] == 1
    items = [task(1, run_id="bobs"), task(2, run_id="alices"), task(3, run_id="bobs")]

    body = (await bob_in_alices_project.post("/v1/batch", json={"items": items})).json()

    assert [(r["status"], (r["error"] or {}).get("code")) for r in body["results"]] == [
        ("created", None),
        ("rejected", "not_found"),
        ("created", None),
    ]
    alices = (await alice.client.get("/v1/runs/alices/tasks")).json()
    assert [t["id"] for t in alices] == ["t0"]
    bobs = (await bob_in_alices_project.get("/v1/runs/bobs")).json()
    assert bobs["task_count"] == 2
    await assert_no_drift(app)


async def test_a_run_made_meanwhile_sends_its_group_one_at_a_time(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await alice.client.post("/v1/batch", json={"items": [task(0)]})
    assert stored.json()["created"] == 1
    runs_made_meanwhile(monkeypatch)
    body = (await alice.client.post("/v1/batch", json={"items": [task(1), task(2)]})).json()

    assert [r["status"] for r in body["results"]] == ["created", "created"]
    run = (await alice.client.get("/v1/runs/trip")).json()
    assert (run["task_count"], run["total_tokens"]) == (3, 101 + 11 + 102 + 12 + 100 + 10)
    usage = (await alice.client.get(f"/v1/usage/daily?from={DAY}&to={DAY}")).json()
    assert usage["totals"]["requests"] == 3
    await assert_no_drift(app)
