"""Fixtures for the HTTP API: the app on each database (its lifespan entered), an
unauthenticated client, and accounts — users made through the admin route, each with a
client carrying its own API key."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from chatledger import Settings
from chatledger.server.app import create_app

ADMIN_KEY = "test-admin-key"
BASE_URL = "http://chatledger.test"


@dataclass
class Account:
    user_id: str
    project_id: str
    key: str
    client: httpx.AsyncClient


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings.model_copy(update={"admin_key": ADMIN_KEY}))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        yield c


MakeAccount = Callable[[str], Awaitable[Account]]


@pytest.fixture
async def make_account(app: FastAPI, http: httpx.AsyncClient) -> AsyncIterator[MakeAccount]:
    clients: list[httpx.AsyncClient] = []

    async def make(user_id: str) -> Account:
        response = await http.post(
            "/v1/admin/users",
            json={"id": user_id, "name": user_id.title()},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return Account(
            user_id=user_id,
            project_id=body["project"]["id"],
            key=body["api_key"]["secret"],
            client=authed(app, body["api_key"]["secret"], clients),
        )

    yield make
    for client in clients:
        await client.aclose()


def authed(app: FastAPI, key: str, opened: list[httpx.AsyncClient]) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {key}"},
    )
    opened.append(client)
    return client


@pytest.fixture
async def alice(make_account: MakeAccount) -> Account:
    return await make_account("alice")


@pytest.fixture
async def bob(make_account: MakeAccount) -> Account:
    return await make_account("bob")


@pytest.fixture
async def bob_in_alices_project(
    app: FastAPI, alice: Account, bob: Account
) -> AsyncIterator[httpx.AsyncClient]:
    """Bob as a member of Alice's project: he sees only his own rows there."""
    added = await alice.client.post(
        f"/v1/projects/{alice.project_id}/members", json={"user_id": "bob", "role": "member"}
    )
    assert added.status_code == 201
    key = await bob.client.post("/v1/keys", json={"project_id": alice.project_id})
    opened: list[httpx.AsyncClient] = []
    yield authed(app, key.json()["secret"], opened)
    for client in opened:
        await client.aclose()


async def left_in_cycles(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, list[str]]:
    """The answer to `request`, and the types of what it left in reference cycles: what
    a serving process, whose collector runs rarely (server/heap.py), would keep for
    minutes. Statements built per call leave theirs; statements built once leave none."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage
    try:
        answer = await request
        gc.collect()
        return answer, [type(found).__qualname__ for found in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
