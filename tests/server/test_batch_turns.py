"""Batch uploads take turns (server/limits.py `BatchTurns`): past
`batch_concurrency` at once, a batch waits before its body is read, so a client sending
many at once cannot grow the process without bound; other routes never wait for them.
In one of several worker processes sharing a port, a batch's answer closes its
connection, so that the client's next batch goes to whichever worker is free."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger.batch import service as batch
from chatledger.config import Settings
from chatledger.server.app import create_app
from tests.server.conftest import ADMIN_KEY, Account

# How the app is made: by default one batch at a time, set; or as it is by default in a
# process serving alone, or in one of several workers.
ONE_AT_A_TIME, ALONE, ONE_OF_SEVERAL = "one at a time", "alone", "one of several"


@pytest.fixture
async def app(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[FastAPI]:
    made = getattr(request, "param", ONE_AT_A_TIME)
    update: dict[str, Any] = {"admin_key": ADMIN_KEY}
    if made == ONE_AT_A_TIME:
        update["batch_concurrency"] = 1
    application = create_app(
        settings.model_copy(update=update), one_of_several=made == ONE_OF_SEVERAL
    )
    async with application.router.lifespan_context(application):
        yield application


def interactions(prefix: str, count: int) -> dict[str, Any]:
    items = [
        {
            "kind": "interaction",
            "id": f"{prefix}{n}",
            "run_id": f"run-{prefix}",
            "prompt": f"Question {n}?",
            "response": f"Answer {n}.",
            "model": "echo",
            "usage": {"input_tokens": 3, "output_tokens": 5},
        }
        for n in range(count)
    ]
    return {"items": items}


@dataclass
class HeldBatches:
    read_while_the_first_was_stored: list[int]  # the batches read by then, by size
    answers: list[httpx.Response]
    me: httpx.Response  # another route, asked meanwhile


async def two_batches_the_first_held(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> HeldBatches:
    """Sends a batch of three and, while it is stored, one of two; then lets them go."""
    checked: list[int] = []  # the batches whose bodies were read, by size
    storing, go_on = asyncio.Event(), asyncio.Event()
    real_check, real_store = batch.check, batch.store

    def check(caller: Any, items: Any, **options: Any) -> Any:
        checked.append(len(items))
        return real_check(caller, items, **options)

    async def store(*args: Any) -> Any:
        if not go_on.is_set():
            storing.set()
            await go_on.wait()
        return await real_store(*args)

    monkeypatch.setattr(batch, "check", check)
    monkeypatch.setattr(batch, "store", store)

    first = asyncio.create_task(client.post("/v1/batch", json=interactions("a", 3)))
    await asyncio.wait_for(storing.wait(), 30)
    second = asyncio.create_task(client.post("/v1/batch", json=interactions("b", 2)))
    me = await client.get("/v1/me")  # other routes do not wait for batches
    for _ in range(50):  # every chance for the second to get in (PostgreSQL: its key's lookup)
        if len(checked) == 2:
            break
        await asyncio.sleep(0.01)
    read = list(checked)
    go_on.set()
    return HeldBatches(read, [await first, await second], me)


async def test_a_batch_past_the_limit_waits_unread_until_one_is_done(
    alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await two_batches_the_first_held(alice.client, monkeypatch)
    assert held.me.status_code == 200
    assert held.read_while_the_first_was_stored == [3]  # the second waited unread
    assert [a.json()["created"] for a in held.answers] == [3, 2]
    usage = await alice.client.get("/v1/usage/daily")
    assert usage.json()["totals"]["requests"] == 5


@pytest.mark.parametrize(
    ("app", "read_meanwhile", "connection"),
    # Alone, two at once keep a SQLite writer busy; with several workers the others do.
    [(ALONE, [3, 2], None), (ONE_OF_SEVERAL, [3], "close")],
    indirect=["app"],
)
async def test_one_of_several_workers_stores_one_batch_at_a_time_and_closes_its_connection(
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
    read_meanwhile: list[int],
    connection: str | None,
) -> None:
    held = await two_batches_the_first_held(alice.client, monkeypatch)
    assert held.read_while_the_first_was_stored == read_meanwhile
    assert [a.json()["created"] for a in held.answers] == [3, 2]
    assert [a.headers.get("connection") for a in held.answers] == [connection] * 2
    assert held.me.status_code == 200 and "connection" not in held.me.headers


async def test_a_batch_over_the_size_limit_is_refused_without_waiting(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    storing, go_on = asyncio.Event(), asyncio.Event()
    real_store = batch.store

    async def store(*args: Any) -> Any:
        storing.set()
        await go_on.wait()
        return await real_store(*args)

    monkeypatch.setattr(batch, "store", store)
    held = asyncio.create_task(alice.client.post("/v1/batch", json=interactions("a", 1)))
    await asyncio.wait_for(storing.wait(), 30)

    limit = app.state.chatledger.settings.max_request_bytes
    oversized = await asyncio.wait_for(
        alice.client.post(
            "/v1/batch", content=b"x" * (limit + 1), headers={"content-type": "application/json"}
        ),
        30,
    )

    assert oversized.status_code == 413
    go_on.set()
    assert (await held).json()["created"] == 1
