"""Batch uploads take turns (server/limits.py `BatchTurns`): past
`batch_concurrency` at once, a batch waits before its body is read, so a client sending
many at once cannot grow the process without bound; other routes never wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from chatledger.batch import service as batch
from chatledger.config import Settings
from chatledger.server.app import create_app
from tests.server.conftest import ADMIN_KEY, Account


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    one_at_a_time = settings.model_copy(update={"admin_key": ADMIN_KEY, "batch_concurrency": 1})
    application = create_app(one_at_a_time)
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


async def test_a_batch_past_the_limit_waits_unread_until_one_is_done(
    alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
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

    first = asyncio.create_task(alice.client.post("/v1/batch", json=interactions("a", 3)))
    await asyncio.wait_for(storing.wait(), 30)
    second = asyncio.create_task(alice.client.post("/v1/batch", json=interactions("b", 2)))
    me = await alice.client.get("/v1/me")  # other routes do not wait for batches
    for _ in range(20):
        await asyncio.sleep(0)  # every chance for the second to get in

    assert me.status_code == 200
    assert checked == [3]  # the second is not read while the first is stored
    go_on.set()
    answers = [await first, await second]
    assert [a.json()["created"] for a in answers] == [3, 2]
    assert checked == [3, 2]
    usage = await alice.client.get("/v1/usage/daily")
    assert usage.json()["totals"]["requests"] == 5


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
