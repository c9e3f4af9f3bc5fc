"""API keys as the database keeps them: hashes only, and a revocation that holds on the
very next request, on this replica and on another one over the same database."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from chatledger import Settings
from chatledger.server.app import create_app
from chatledger.server.deps import AppState
from tests.server.conftest import ADMIN_KEY, BASE_URL, Account


def client(app: FastAPI, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.fixture
async def replica(settings: Settings) -> AsyncIterator[FastAPI]:
    """A second app on the same database, as another replica behind a load balancer."""
    other = create_app(settings.model_copy(update={"admin_key": ADMIN_KEY}))
    async with other.router.lifespan_context(other):
        yield other


async def test_the_table_holds_hashes_never_secrets(app: FastAPI, alice: Account) -> None:
    made = await alice.client.post("/v1/keys", json={"kind": "service", "name": "app"})
    assert made.status_code == 201
    secrets = {alice.key, made.json()["secret"]}
    state: AppState = app.state.chatledger
    async with state.database.reading() as session:
        stored = [
            dict(row) for row in (await session.execute(text("SELECT * FROM api_keys"))).mappings()
        ]
    assert len(stored) == 2
    for row in stored:
        cells = " ".join(str(value) for value in row.values())
        for secret in secrets:
            assert secret not in cells
            # Not even the part after the prefix shown to people.
            assert secret[len(row["prefix"]) :] not in cells
    hashes = {hashlib.sha256(secret.encode()).hexdigest() for secret in secrets}
    assert {row["secret_hash"] for row in stored} == hashes
    assert {row["prefix"] for row in stored} == {secret[:12] for secret in secrets}


async def test_a_revoked_key_stops_at_once_on_every_replica(
    app: FastAPI, replica: FastAPI, alice: Account
) -> None:
    made = await alice.client.post("/v1/keys", json={"name": "laptop"})
    key_id, secret = made.json()["id"], made.json()["secret"]
    async with client(app, secret) as here, client(replica, secret) as there:
        # Both replicas have served the key (anything they might keep of it is warm).
        for _ in range(3):
            assert (await here.get("/v1/me")).status_code == 200
            assert (await there.get("/v1/me")).status_code == 200
        revoked = await alice.client.delete(f"/v1/keys/{key_id}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        for replica_client in (here, there):
            refused = await replica_client.get("/v1/runs")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            # A write is refused as well, and leaves nothing behind.
            assert (await replica_client.put("/v1/runs/late", json={})).status_code == 401
    assert (await alice.client.get("/v1/runs/late")).status_code == 404
    # Alice's other key is untouched.
    assert (await alice.client.get("/v1/me")).status_code == 200
