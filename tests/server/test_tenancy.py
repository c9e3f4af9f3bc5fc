"""Users, projects, members and keys over HTTP: keys are secrets shown once and stored as
hashes, roles decide who sees what, revoked keys stop at once."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from chatledger.server.deps import AppState
from chatledger.tenants.keys import hash_secret
from chatledger.tenants.models import ApiKey
from tests.server.conftest import ADMIN_KEY, Account, authed


async def test_admin_creates_a_user_with_a_project_and_a_key(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/admin/users",
        json={"id": "carol", "email": "carol@example.com"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 201
    body = response.json()
    secret = body["api_key"]["secret"]
    assert body["api_key"]["prefix"] == secret[:12]
    me = await http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json() == {
        "user_id": "carol",
        "project_id": body["project"]["id"],
        "org_id": None,
        "role": "owner",
        "key_kind": "user",
        "key_id": body["api_key"]["id"],
    }
    again = await http.post(
        "/v1/admin/users", json={"id": "carol"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert again.status_code == 409


async def test_admin_routes_need_the_admin_key(http: httpx.AsyncClient, alice: Account) -> None:
    assert (await http.post("/v1/admin/users", json={})).status_code == 401
    denied = await alice.client.post("/v1/admin/users", json={})
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "unauthorized"


async def test_keys_are_stored_as_hashes_only(app: FastAPI, alice: Account) -> None:
    state: AppState = app.state.chatledger
    async with state.database.reading() as session:
        stored = list(await session.scalars(select(ApiKey)))
    assert [key.secret_hash for key in stored] == [hash_secret(alice.key)]
    for key in stored:
        row = {c.name: getattr(key, c.key) for c in ApiKey.__table__.columns}
        assert alice.key not in {str(v) for v in row.values()}


async def test_a_revoked_key_stops_at_once(app: FastAPI, alice: Account) -> None:
    created = await alice.client.post("/v1/keys", json={"name": "laptop"})
    assert created.status_code == 201
    second = created.json()
    opened: list[httpx.AsyncClient] = []
    laptop = authed(app, second["secret"], opened)
    assert (await laptop.get("/v1/me")).status_code == 200
    listed = await alice.client.get("/v1/keys")
    assert {k["id"] for k in listed.json()} >= {second["id"]}
    assert all("secret" not in k for k in listed.json())

    revoked = await alice.client.delete(f"/v1/keys/{second['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert (await laptop.get("/v1/me")).status_code == 401
    assert (await alice.client.get("/v1/me")).status_code == 200
    await laptop.aclose()


async def test_another_users_key_cannot_be_revoked(alice: Account, bob: Account) -> None:
    key = (await alice.client.post("/v1/keys", json={})).json()
    assert (await bob.client.delete(f"/v1/keys/{key['id']}")).status_code == 404


async def test_members_see_their_own_runs_admins_and_service_keys_see_all(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    # Alice adds Bob to her project as a member, and Bob makes a key for it.
    added = await alice.client.post(
        f"/v1/projects/{alice.project_id}/members", json={"user_id": "bob", "role": "member"}
    )
    assert added.status_code == 201
    bob_key = await bob.client.post("/v1/keys", json={"project_id": alice.project_id})
    assert bob_key.status_code == 201
    opened: list[httpx.AsyncClient] = []
    bob_there = authed(app, bob_key.json()["secret"], opened)

    assert (await alice.client.put("/v1/runs/alices", json={})).status_code == 201
    assert (await bob_there.put("/v1/runs/bobs", json={})).status_code == 201

    bob_sees = [r["id"] for r in (await bob_there.get("/v1/runs")).json()["items"]]
    assert bob_sees == ["bobs"]
    assert (await bob_there.get("/v1/runs/alices")).status_code == 404
    alice_sees = {r["id"] for r in (await alice.client.get("/v1/runs")).json()["items"]}
    assert alice_sees == {"alices", "bobs"}

    service = await alice.client.post("/v1/keys", json={"kind": "service"})
    assert service.status_code == 201
    app_server = authed(app, service.json()["secret"], opened)
    made = await app_server.put("/v1/runs/end-user-run", json={"user_id": "end-user-7"})
    assert made.json()["user_id"] == "end-user-7"
    seen = {r["id"] for r in (await app_server.get("/v1/runs")).json()["items"]}
    assert seen == {"alices", "bobs", "end-user-run"}
    # A member may not create service keys, nor act for another user.
    denied = await bob_there.post("/v1/keys", json={"kind": "service"})
    assert denied.status_code == 403
    assert (await bob_there.put("/v1/runs/x", json={"user_id": "alice"})).status_code == 403
    for client in opened:
        await client.aclose()


async def test_viewers_read_but_do_not_write(app: FastAPI, alice: Account, bob: Account) -> None:
    await alice.client.post(
        f"/v1/projects/{alice.project_id}/members", json={"user_id": "bob", "role": "viewer"}
    )
    key = (await bob.client.post("/v1/keys", json={"project_id": alice.project_id})).json()
    opened: list[httpx.AsyncClient] = []
    viewer = authed(app, key["secret"], opened)
    assert (await viewer.get("/v1/runs")).status_code == 200
    refused = await viewer.put("/v1/runs/r", json={})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    await viewer.aclose()


async def test_projects_and_orgs(alice: Account, bob: Account) -> None:
    org = await alice.client.post("/v1/orgs", json={"id": "acme", "name": "Acme"})
    assert org.status_code == 201
    project = await alice.client.post(
        "/v1/projects", json={"id": "acme-chat", "name": "Chat", "org_id": "acme"}
    )
    assert project.status_code == 201
    assert project.json()["org_id"] == "acme"
    # Bob is not in the org: he cannot put a project in it, nor add members to it.
    assert (
        await bob.client.post("/v1/projects", json={"name": "Sneaky", "org_id": "acme"})
    ).status_code == 404
    assert (
        await bob.client.post("/v1/orgs/acme/members", json={"user_id": "bob"})
    ).status_code == 404
    # Made an org member, Bob gets a role in its projects.
    added = await alice.client.post(
        "/v1/orgs/acme/members", json={"user_id": "bob", "role": "admin"}
    )
    assert added.status_code == 201
    key = await bob.client.post("/v1/keys", json={"project_id": "acme-chat", "kind": "service"})
    assert key.status_code == 201
    assert (
        await alice.client.post("/v1/orgs", json={"id": "acme", "name": "x"})
    ).status_code == 409
    unknown = await alice.client.post(
        f"/v1/projects/{alice.project_id}/members", json={"user_id": "nobody"}
    )
    assert unknown.status_code == 404
