"""The Python client: local mode (the app in-process on a database URL), a client over
an injected httpx client with an API key, errors raised as chatledger's own, pagination
and the blocking Client."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from chatledger import Conflict, InvalidInput, NotFound
from chatledger.client import AsyncClient, Client
from tests.server.conftest import BASE_URL, Account


async def test_local_mode_runs_the_app_in_process(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        me = await client.me()
        assert me.user_id == "local"
        run = await client.runs.ensure("trip", name="Trip planning")
        assert (run.id, run.name, run.message_count) == ("trip", "Trip planning", 0)
        first = await client.messages.append("trip", "user", "Where to?", id="m1")
        again = await client.messages.append("trip", "user", "Where to?", id="m1")
        assert first.id == again.id == "m1"
        detail = await client.runs.get("trip")
        assert detail.message_count == 1
        assert [m.content for m in detail.messages] == ["Where to?"]

        with pytest.raises(Conflict):
            await client.messages.append("trip", "user", "Somewhere else", id="m1")
        with pytest.raises(NotFound):
            await client.runs.get("nowhere")
        with pytest.raises(InvalidInput) as invalid:
            await client.messages.append("trip", "narrator", "Once upon a time")
        assert invalid.value.field == "role"


async def test_iterate_walks_every_page(database_url: str) -> None:
    async with AsyncClient(database_url) as client:
        for n in range(7):
            await client.runs.ensure(f"run-{n}")
        page = await client.runs.list(limit=3)
        assert len(page.items) == 3 and page.next_cursor
        seen = [run.id async for run in client.runs.iterate(page_size=3)]
        assert sorted(seen) == [f"run-{n}" for n in range(7)]
        assert len(set(seen)) == 7


async def test_a_client_with_an_api_key_acts_as_its_user(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
    async with AsyncClient(http_client=http, api_key=alice.key) as client:
        me = await client.me()
        assert me.user_id == "alice"
        await client.runs.ensure("alices-run")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
    async with AsyncClient(http_client=http, api_key=bob.key) as client:
        with pytest.raises(NotFound):
            await client.runs.get("alices-run")


def test_the_blocking_client_in_local_mode(database_url: str) -> None:
    with Client(database_url) as client:
        client.runs.ensure("sync-run", name="Sync")
        client.messages.append("sync-run", "user", "hello")
        detail = client.runs.get("sync-run")
        assert (detail.name, detail.message_count) == ("Sync", 1)
        assert [run.id for run in client.runs.iterate()] == ["sync-run"]
        with pytest.raises(NotFound):
            client.runs.get("missing")
