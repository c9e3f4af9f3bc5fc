"""Batch ingest appends new message items together (messages/bulk.py). Whatever a batch
holds — fresh messages in new and stored runs, ids sent again, ids taken with other
content, another user's run, bad items — the verdicts and every stored row must be what
storing the items one at a time gives. The reference is the same batch in another
project with the bulk path refused (every group then falls back to one item at a
time)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger.messages import bulk
from chatledger.runs.service import PREVIEW_LENGTH
from tests.server.conftest import Account
from tests.server.test_batch_bulk import interaction, refusing, runs_made_meanwhile, verdicts
from tests.server.test_tasks_api import assert_no_drift

DAY = "2025-06-01"


def message(n: int, run_id: str = "trip", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "kind": "message",
        "id": f"m{n}",
        "run_id": run_id,
        "role": "user" if n % 2 == 0 else "assistant",
        "content": f"Message {n}\nwith a second line.",
        "created_at": f"{DAY}T08:{n:02d}:00Z",
    }
    return item | extra


def mixed_batch() -> list[dict[str, Any]]:
    return [
        {"kind": "run", "id": "trip", "name": "Trip", "created_at": f"{DAY}T07:00:00Z"},
        message(0),
        message(1, parent_id="m0", metadata={"model": "gpt-4o", "n": 1}),
        message(2, run_id="fresh"),  # a run made by its first message
        message(3, run_id="fresh", created_at=f"{DAY}T07:30:00Z"),  # older than the last
        message(0),  # sent twice, the same: a duplicate
        message(1, content="Other words."),  # its id taken with other content: refused
        message(4, role="robot"),  # not a role: refused by validation
        message(5, status="error", error={"code": "provider_error", "message": "boom"}),
        {"kind": "spaceship"},
        message(6, task_id="i0"),
        interaction(0),  # between two groups of messages: numbered in upload order
        message(7),
        message(8, run_id="fresh", content="   "),  # blank: still a message
        message(9, run_id="bad run id!"),  # refused: the run id
    ]


async def state(client: httpx.AsyncClient, run_ids: tuple[str, ...]) -> dict[str, Any]:
    """What the API shows of the batch's runs, without what differs by account or clock
    (the owner; when a run made by a message was made; when a reply was linked to its
    user message)."""
    shown: dict[str, Any] = {}
    for run_id in run_ids:
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        run.pop("user_id")
        if run_id == "fresh":
            run.pop("created_at")
            run.pop("updated_at")
        for stored in run["messages"]:
            if stored["role"] == "user":  # (a user message's reply links it: at the clock)
                stored.pop("updated_at")
        shown[run_id] = run
    return shown


@pytest.fixture
def one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> Any:
    return refusing(monkeypatch, bulk)


async def test_a_mixed_batch_lands_as_if_one_item_at_a_time(
    app: FastAPI, alice: Account, bob: Account, one_at_a_time: Any
) -> None:
    items = mixed_batch()
    bulk_answer = await alice.client.post("/v1/batch", json={"items": items})
    with one_at_a_time:
        reference = await bob.client.post("/v1/batch", json={"items": items})
    assert bulk_answer.status_code == reference.status_code == 200, bulk_answer.text
    assert verdicts(bulk_answer.json()) == verdicts(reference.json())
    statuses = [r["status"] for r in bulk_answer.json()["results"]]
    assert [statuses.count(s) for s in ("created", "duplicate", "rejected")] == [10, 1, 4]
    runs = ("trip", "fresh")
    assert await state(alice.client, runs) == await state(bob.client, runs)
    fresh = (await alice.client.get("/v1/runs/fresh")).json()
    assert fresh["name"] == "Message 2"
    assert [m["seq"] for m in fresh["messages"]] == [1, 2, 3]
    # History synced late never moves a run's times back.
    assert fresh["last_message_at"].startswith(f"{DAY}T08:08:00")
    trip = (await alice.client.get("/v1/runs/trip")).json()
    assert [m["id"] for m in trip["messages"]] == ["m0", "m1", "m5", "m6", "u0", "a0", "m7"]

    again = await alice.client.post("/v1/batch", json={"items": items})
    with one_at_a_time:
        reference_again = await bob.client.post("/v1/batch", json={"items": items})
    assert verdicts(again.json()) == verdicts(reference_again.json())
    assert again.json()["created"] == 0
    assert await state(alice.client, runs) == await state(bob.client, runs)
    await assert_no_drift(app)


async def test_a_thousand_messages_are_appended_whole(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await alice.client.post("/v1/batch", json={"items": [message(0, run_id="r0")]})
    assert stored.json()["created"] == 1
    groups: list[int] = []
    storing = bulk.store

    async def counted(session: Any, pendings: Any) -> None:
        groups.append(len(pendings))
        await storing(session, pendings)

    monkeypatch.setattr(bulk, "store", counted)
    items = [message(n, run_id=f"r{n % 3}", created_at=None) for n in range(1, 1_000)]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()

    assert (body["created"], body["duplicate"], body["rejected"]) == (999, 0, 0)
    assert groups == [999]  # one group, in bulk: no item fell back to one at a time
    for run_id, count in (("r0", 334), ("r1", 333), ("r2", 333)):
        run = (await alice.client.get(f"/v1/runs/{run_id}")).json()
        assert run["message_count"] == count
        assert [m["seq"] for m in run["messages"]] == list(range(1, count + 1))
        assert run["last_message_preview"] == run["messages"][-1]["content"][:PREVIEW_LENGTH]
    assert (await alice.client.get("/v1/runs/r0")).json()["messages"][1]["id"] == "m3"
    await assert_no_drift(app)


async def test_a_members_messages_into_another_users_run_are_refused_alone(
    app: FastAPI, alice: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    mine = await alice.client.post("/v1/batch", json={"items": [message(0, run_id="alices")]})
    assert mine.json()["created"] == 1
    items = [message(1, run_id="bobs"), message(2, run_id="alices"), message(3, run_id="bobs")]

    body = (await bob_in_alices_project.post("/v1/batch", json={"items": items})).json()

    assert [(r["status"], (r["error"] or {}).get("code")) for r in body["results"]] == [
        ("created", None),
        ("rejected", "not_found"),
        ("created", None),
    ]
    alices = (await alice.client.get("/v1/runs/alices")).json()
    assert [m["id"] for m in alices["messages"]] == ["m0"]
    bobs = (await bob_in_alices_project.get("/v1/runs/bobs")).json()
    assert [(m["id"], m["seq"]) for m in bobs["messages"]] == [("m1", 1), ("m3", 2)]
    await assert_no_drift(app)


async def test_a_run_made_meanwhile_sends_its_group_one_at_a_time(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await alice.client.post("/v1/batch", json={"items": [message(0)]})
    assert stored.json()["created"] == 1
    runs_made_meanwhile(monkeypatch)
    body = (await alice.client.post("/v1/batch", json={"items": [message(1), message(2)]})).json()

    assert [r["status"] for r in body["results"]] == ["created", "created"]
    # Counted into the run as it is stored, one at a time: nothing lost, nothing twice.
    run = (await alice.client.get("/v1/runs/trip")).json()
    assert run["message_count"] == 3
    assert [m["seq"] for m in run["messages"]] == [1, 2, 3]
    await assert_no_drift(app)


async def test_an_id_stored_meanwhile_is_answered_as_one_at_a_time(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await alice.client.post("/v1/batch", json={"items": [message(1)]})
    assert stored.json()["created"] == 1
    looking_up = bulk.lookup

    async def stale(session: Any, project_id: str, pendings: Any) -> bulk.Known:
        """What a lookup saw before another transaction stored the id."""
        known = await looking_up(session, project_id, pendings)
        return bulk.Known(messages=frozenset(), run_owners=known.run_owners)

    monkeypatch.setattr(bulk, "lookup", stale)
    items = [message(0), message(1), message(3, content="changed"), message(1, id="m3")]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()

    assert [r["status"] for r in body["results"]] == ["created", "duplicate", "created", "rejected"]
    run = (await alice.client.get("/v1/runs/trip")).json()
    assert [(m["id"], m["seq"]) for m in run["messages"]] == [("m1", 1), ("m0", 2), ("m3", 3)]
    await assert_no_drift(app)


async def test_a_message_between_interactions_splits_their_group(
    app: FastAPI, alice: Account
) -> None:
    # The interactions' rows are built before the write transaction, group by group: a
    # message between two interactions must end the first group there too.
    items = [interaction(0), message(0), interaction(1), message(1), message(2)]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()

    assert [r["status"] for r in body["results"]] == ["created"] * 5
    run = (await alice.client.get("/v1/runs/trip")).json()
    assert [m["id"] for m in run["messages"]] == ["u0", "a0", "m0", "u1", "a1", "m1", "m2"]
    assert [m["seq"] for m in run["messages"]] == list(range(1, 8))
    await assert_no_drift(app)
