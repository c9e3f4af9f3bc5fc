"""Batch ingest stores new interactions together (interactions/bulk.py). Whatever a batch
holds — fresh interactions, replays, ids used twice, a user message stored earlier, bad
items — the verdicts and every stored row must be what storing the items one at a time
gives. The reference is the same batch in another project with the bulk path refused
(every group then falls back to one item at a time)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from chatledger.interactions import bulk, bulk_runs
from chatledger.server.deps import AppState
from tests.server.conftest import Account, authed, left_in_cycles
from tests.server.test_tasks_api import assert_no_drift

DAY = "2025-06-01"


def interaction(n: int, run_id: str = "trip", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "kind": "interaction",
        "id": f"i{n}",
        "run_id": run_id,
        "prompt": f"Question {n}?",
        "response": f"Answer {n}.",
        "model": "openai/gpt-4o" if n % 2 else "anthropic/claude-3-5-haiku-latest",
        "usage": {"input_tokens": 100 + n, "output_tokens": 20 + n, "cached_tokens": n},
        "created_at": f"{DAY}T10:{n:02d}:00Z",
        "total_ms": 900,
        "ttft_ms": 200,
        "user_message_id": f"u{n}",
        "assistant_message_id": f"a{n}",
        "metadata": {"client": "sync", "n": n},
    }
    return item | extra


def mixed_batch() -> list[dict[str, Any]]:
    return [
        {"kind": "run", "id": "trip", "name": "Trip", "created_at": f"{DAY}T09:00:00Z"},
        {
            "kind": "message",
            "id": "early",
            "run_id": "trip",
            "role": "user",
            "content": "Early question?",
            "created_at": f"{DAY}T09:30:00Z",
        },
        interaction(0),
        interaction(1),
        # Answers the user message stored above: linked, not a second message.
        interaction(2, prompt="Early question?", user_message_id="early"),
        interaction(3, cost_usd="0.5"),
        interaction(1),  # sent twice: a replay
        interaction(4, completed_at=f"{DAY}T09:00:00Z"),  # ends before it starts
        interaction(5, assistant_message_id="a0"),  # an id another message has
        interaction(6, model="gpt-4o"),  # no provider
        interaction(7, run_id="other"),
        {"kind": "spaceship"},
        interaction(8, run_id="other", user_message_id="u8", assistant_message_id="u8"),
        interaction(9),
        interaction(10, run_id="other", cost_usd="0.25"),
    ]


async def state(client: httpx.AsyncClient) -> dict[str, Any]:
    """What the API shows of the batch's runs, without what differs by account or clock
    (the owner; when a reply was linked to its user message)."""
    shown: dict[str, Any] = {}
    for run_id in ("trip", "other"):
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        run.pop("user_id")
        for message in run["messages"]:
            if message["role"] == "user":
                message.pop("updated_at")
        tasks = (await client.get(f"/v1/runs/{run_id}/tasks")).json()
        for task in tasks:
            task.pop("user_id")
            task.pop("heartbeat_at")
        shown[run_id] = {"run": run, "tasks": tasks}
    usage = (await client.get(f"/v1/usage/daily?from={DAY}&to={DAY}")).json()
    shown["usage"] = [row | {"user_id": None} for row in usage["rows"]]
    return shown


def verdicts(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (r["index"], r["kind"], r["id"], r["status"], (r["error"] or {}).get("code"))
        for r in body["results"]
    ]


def refusing(monkeypatch: pytest.MonkeyPatch, module: Any) -> Any:
    """A block in which `module`'s bulk path (its `store`) is refused: every group goes
    item by item."""

    async def refuse(*_: Any) -> None:
        raise bulk.NotFresh("refused by the test")

    class Switch:
        def __enter__(self) -> None:
            monkeypatch.setattr(module, "store", refuse)

        def __exit__(self, *_: Any) -> None:
            monkeypatch.undo()

    return Switch()


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
    assert [statuses.count(s) for s in ("created", "duplicate", "rejected")] == [9, 1, 5]
    assert await state(alice.client) == await state(bob.client)

    again = await alice.client.post("/v1/batch", json={"items": items})
    with one_at_a_time:
        reference_again = await bob.client.post("/v1/batch", json={"items": items})
    assert verdicts(again.json()) == verdicts(reference_again.json())
    assert again.json()["created"] == 0
    assert await state(alice.client) == await state(bob.client)
    await assert_no_drift(app)


async def test_interactions_without_metadata_land_as_if_one_at_a_time(
    alice: Account, bob: Account, one_at_a_time: Any
) -> None:
    # Stored in bulk, their rows share one request document and one reply metadata per
    # model; each must still read as its own.
    items = [interaction(n, run_id=f"r{n % 2}", metadata={}) for n in range(6)]
    items.append(interaction(6, run_id="r0", metadata={"client": "sync"}))
    bulk_answer = await alice.client.post("/v1/batch", json={"items": items})
    with one_at_a_time:
        reference = await bob.client.post("/v1/batch", json={"items": items})
    assert bulk_answer.json()["created"] == reference.json()["created"] == 7
    for run_id in ("r0", "r1"):
        ours = (await alice.client.get(f"/v1/runs/{run_id}")).json()["messages"]
        theirs = (await bob.client.get(f"/v1/runs/{run_id}")).json()["messages"]
        assert [m["metadata"] for m in ours] == [m["metadata"] for m in theirs]
        our_tasks = (await alice.client.get(f"/v1/runs/{run_id}/tasks")).json()
        their_tasks = (await bob.client.get(f"/v1/runs/{run_id}/tasks")).json()
        assert [t["request"] for t in our_tasks] == [t["request"] for t in their_tasks]
    replies = (await alice.client.get("/v1/runs/r0")).json()["messages"][1::2]
    assert [m["metadata"] for m in replies] == [{"model": "claude-3-5-haiku-latest"}] * 3 + [
        {"client": "sync", "model": "claude-3-5-haiku-latest"}
    ]


async def test_fresh_interactions_are_stored_whole(app: FastAPI, alice: Account) -> None:
    items = [interaction(n, run_id=f"r{n % 3}") for n in range(30)]
    items.append(interaction(30, run_id="r0", user_message_id=None, assistant_message_id=None))
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()
    assert (body["created"], body["duplicate"], body["rejected"]) == (31, 0, 0)
    runs = {r["id"]: r for r in (await alice.client.get("/v1/runs?limit=10")).json()["items"]}
    assert sum(r["task_count"] for r in runs.values()) == 31
    assert sum(r["message_count"] for r in runs.values()) == 62
    first = (await alice.client.get("/v1/runs/r0")).json()
    assert first["name"] == "Question 0?"
    assert [m["seq"] for m in first["messages"]] == list(range(1, 23))
    assert first["last_message_preview"] == "Answer 30."
    usage = (await alice.client.get(f"/v1/usage/daily?from={DAY}&to={DAY}")).json()
    assert usage["totals"]["requests"] == 31
    await assert_no_drift(app)


async def test_batches_into_runs_that_hold_messages_land_as_if_one_at_a_time(
    app: FastAPI, alice: Account, bob: Account, one_at_a_time: Any
) -> None:
    # Built before the runs are locked, each message is numbered on from its run's count
    # as locked; the project's price override prices what brings no cost.
    price = {"model_pattern": "gpt-4o*", "input_per_mtok": "1", "output_per_mtok": "2"}
    price["effective_from"] = f"{DAY}T00:00:00Z"
    for account in (alice, bob):
        assert (await account.client.post("/v1/prices", json=price)).status_code == 201
    batches = [
        [interaction(n, run_id=f"r{n % 2}") for n in range(4)],
        [interaction(n, run_id=f"r{n % 3}", metadata={}) for n in range(4, 10)],
    ]
    for items in batches:
        assert (await alice.client.post("/v1/batch", json={"items": items})).json()[
            "created"
        ] == len(items)
        with one_at_a_time:
            reference = await bob.client.post("/v1/batch", json={"items": items})
        assert reference.json()["created"] == len(items)
    for run_id in ("r0", "r1", "r2"):
        ours = (await alice.client.get(f"/v1/runs/{run_id}")).json()
        theirs = (await bob.client.get(f"/v1/runs/{run_id}")).json()
        for run in (ours, theirs):
            run.pop("user_id")
            for message in run["messages"]:
                message.pop("updated_at")
        assert ours == theirs
        assert [m["seq"] for m in ours["messages"]] == list(range(1, ours["message_count"] + 1))
    tasks = (await alice.client.get("/v1/runs/r0/tasks")).json()
    assert {t["price_source"].split()[0] for t in tasks if t["model"] == "gpt-4o"} == {"override"}
    ours_usage = (await alice.client.get(f"/v1/usage/daily?from={DAY}&to={DAY}")).json()
    theirs_usage = (await bob.client.get(f"/v1/usage/daily?from={DAY}&to={DAY}")).json()
    assert ours_usage["totals"] == theirs_usage["totals"]
    await assert_no_drift(app)


async def test_an_admins_items_in_a_members_run_are_the_members(
    app: FastAPI, alice: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    # The rows are built as the caller's own before the runs are read; a run that turns
    # out to be another user's has them built again as its owner's.
    bobs = await bob_in_alices_project.post("/v1/batch", json={"items": [interaction(0, "bobs")]})
    assert bobs.json()["created"] == 1
    items = [interaction(n, run_id="bobs" if n % 2 else "alices") for n in range(1, 7)]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()
    assert body["created"] == 6, body
    for run_id, owner, tasks in (("bobs", "bob", 4), ("alices", "alice", 3)):
        run = (await alice.client.get(f"/v1/runs/{run_id}")).json()
        assert (run["user_id"], run["task_count"], run["message_count"]) == (
            owner,
            tasks,
            2 * tasks,
        )
        stored = (await alice.client.get(f"/v1/runs/{run_id}/tasks")).json()
        assert {t["user_id"] for t in stored} == {owner}
    usage = (await alice.client.get(f"/v1/usage/daily?from={DAY}&to={DAY}&group_by=user")).json()
    assert {row["user_id"]: row["requests"] for row in usage["rows"]} == {"bob": 4, "alice": 3}
    await assert_no_drift(app)


async def test_a_run_of_another_user_is_refused_per_item(
    app: FastAPI, alice: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    mine = await alice.client.post("/v1/batch", json={"items": [interaction(0)]})
    assert mine.json()["created"] == 1
    items = [interaction(1), interaction(2, run_id="bobs")]
    body = (await bob_in_alices_project.post("/v1/batch", json={"items": items})).json()
    assert [r["status"] for r in body["results"]] == ["rejected", "created"]
    assert body["results"][0]["error"]["code"] == "not_found"
    trip = (await alice.client.get("/v1/runs/trip")).json()
    assert (trip["task_count"], trip["message_count"]) == (1, 2)
    await assert_no_drift(app)


async def test_a_stored_batch_leaves_nothing_for_the_cycle_collector(alice: Account) -> None:
    # A serving process collects cycles rarely (server/heap.py): what a batch leaves in
    # reference cycles stays for minutes. Statements built once leave none (a statement
    # built per call left ~100 objects each time: ~6 MB a worker over the ingest bench).
    items = [interaction(n, run_id=f"r{n % 3}") for n in range(30)]
    warm = await alice.client.post("/v1/batch", json={"items": items[:10]})
    assert warm.json()["created"] == 10  # every statement compiled and cached

    answer, left = await left_in_cycles(alice.client.post("/v1/batch", json={"items": items[10:]}))

    assert answer.json()["created"] == 20
    assert left == []


def runs_updated(app: FastAPI) -> list[str]:
    """The run ids the app's database is sent an UPDATE for from now on, one per
    parameter set (the bulk path's write-back is one executemany)."""
    state: AppState = app.state.chatledger
    updated: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE RUNS"):
            updated.extend(["?"] * (len(parameters) if many else 1))

    event.listen(state.database.write_engine.sync_engine, "before_cursor_execute", seen)
    return updated


async def test_a_groups_new_runs_are_made_with_its_sums(app: FastAPI, alice: Account) -> None:
    stored = await alice.client.post("/v1/batch", json={"items": [interaction(0, "old")]})
    assert stored.json()["created"] == 1
    updated = runs_updated(app)
    items = [interaction(n, run_id=("old", "new", "newer")[n % 3]) for n in range(1, 10)]
    body = (await alice.client.post("/v1/batch", json={"items": items})).json()
    assert body["created"] == 9, body
    # Only the run stored before is counted into; the new ones are made with the sums.
    assert len(updated) == 1
    for run_id, tasks, last in (("old", 4, 9), ("new", 3, 7), ("newer", 3, 8)):
        run = (await alice.client.get(f"/v1/runs/{run_id}")).json()
        assert (run["task_count"], run["message_count"]) == (tasks, 2 * tasks)
        assert [m["seq"] for m in run["messages"]] == list(range(1, 2 * tasks + 1))
        assert run["last_message_preview"] == f"Answer {last}."
    await assert_no_drift(app)


def runs_made_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run a group locks as if made by another transaction after this one looked
    (PostgreSQL's snapshot): not among the locked, so the group goes to make it."""
    locking = bulk_runs.locked

    async def not_yet_seen(*args: Any) -> dict[str, Any]:
        await locking(*args)
        return {}

    monkeypatch.setattr(bulk_runs, "locked", not_yet_seen)


async def test_a_run_made_meanwhile_sends_its_group_one_at_a_time(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await alice.client.post("/v1/batch", json={"items": [interaction(0)]})
    assert stored.json()["created"] == 1
    runs_made_meanwhile(monkeypatch)
    body = (
        await alice.client.post("/v1/batch", json={"items": [interaction(1), interaction(2)]})
    ).json()
    assert [r["status"] for r in body["results"]] == ["created", "created"]
    # Counted into the run as it is stored, one at a time: nothing lost, nothing twice.
    run = (await alice.client.get("/v1/runs/trip")).json()
    assert (run["task_count"], run["message_count"]) == (3, 6)
    assert [m["seq"] for m in run["messages"]] == list(range(1, 7))
    await assert_no_drift(app)


async def test_items_acting_for_several_users_land_as_if_one_at_a_time(
    app: FastAPI, alice: Account, bob: Account, one_at_a_time: Any
) -> None:
    # A service key's upload for its app's end users: each item acts for its own user,
    # and two of them add to one new run (the first one's), so the group is not told
    # fresh all at once but item by item.
    opened: list[httpx.AsyncClient] = []
    keys = [
        (await a.client.post("/v1/keys", json={"kind": "service"})).json() for a in (alice, bob)
    ]
    ours, theirs = (authed(app, key["secret"], opened) for key in keys)
    items = [
        interaction(0, run_id="shared", user_id="end-user-1"),
        interaction(1, run_id="shared", user_id="end-user-2"),
        interaction(2, run_id="own", user_id="end-user-2"),
    ]
    bulk_answer = await ours.post("/v1/batch", json={"items": items})
    with one_at_a_time:
        reference = await theirs.post("/v1/batch", json={"items": items})
    assert verdicts(bulk_answer.json()) == verdicts(reference.json())
    assert bulk_answer.json()["created"] == 3
    for run_id, owner, tasks in (("shared", "end-user-1", 2), ("own", "end-user-2", 1)):
        run, reference_run = [(await c.get(f"/v1/runs/{run_id}")).json() for c in (ours, theirs)]
        assert (run["user_id"], run["task_count"], run["message_count"]) == (
            owner,
            tasks,
            2 * tasks,
        )
        for shown in (run, reference_run):
            shown.pop("updated_at")
            for message in shown["messages"]:
                message.pop("updated_at")
        assert run == reference_run
    for client in opened:
        await client.aclose()
    await assert_no_drift(app)
