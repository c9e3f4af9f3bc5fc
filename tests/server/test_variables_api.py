"""Scoped variables over HTTP (SQLite and PostgreSQL): set, read, list and delete at user,
project and org scope; only the user writes their own, owners and admins their project's
and org's, a service key any end user's of its project; everyone else gets a 404, and
values are never seen across tenants."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.server.conftest import Account, authed

VARS = "/v1/variables"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text


@pytest.fixture
async def opened() -> Any:
    clients: list[httpx.AsyncClient] = []
    yield clients
    for client in clients:
        await client.aclose()


async def test_a_users_own_variable_round_trip(alice: Account) -> None:
    path = f"{VARS}/user/alice/user_timezone"

    created = ok(
        await alice.client.put(path, json={"value": "Asia/Tokyo", "description": "where I am"}),
        201,
    )
    updated = ok(await alice.client.put(path, json={"value": "Europe/Paris"}))

    assert created["scope"] == "user" and created["scope_id"] == "alice"
    assert (updated["value"], updated["description"]) == ("Europe/Paris", "where I am")
    assert ok(await alice.client.get(path)) == updated
    assert ok(await alice.client.get(VARS)) == [updated]
    assert ok(await alice.client.get(VARS, params={"scope": "project"})) == []
    cleared = ok(await alice.client.put(path, json={"value": "UTC", "description": None}))
    assert cleared["description"] is None
    ok(await alice.client.delete(path), 204)
    not_found(await alice.client.get(path))
    not_found(await alice.client.delete(path))


async def test_another_users_variables_are_not_found(alice: Account, bob: Account) -> None:
    ok(await alice.client.put(f"{VARS}/user/alice/secret", json={"value": "a"}), 201)
    project = f"{VARS}/project/{alice.project_id}/secret"
    ok(await alice.client.put(project, json={"value": "p"}), 201)

    for response in (
        await bob.client.get(f"{VARS}/user/alice/secret"),
        await bob.client.put(f"{VARS}/user/alice/secret", json={"value": "b"}),
        await bob.client.delete(f"{VARS}/user/alice/secret"),
        await bob.client.get(project),
        await bob.client.put(project, json={"value": "b"}),
        await bob.client.get(VARS, params={"scope": "user", "scope_id": "alice"}),
        await bob.client.get(VARS, params={"scope": "project", "scope_id": alice.project_id}),
    ):
        not_found(response)
    assert ok(await bob.client.get(VARS)) == []
    assert ok(await alice.client.get(f"{VARS}/user/alice/secret"))["value"] == "a"


async def test_members_read_project_values_only_owners_write_them(
    alice: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    path = f"{VARS}/project/{alice.project_id}/team"
    ok(await alice.client.put(path, json={"value": "Platform"}), 201)
    member = bob_in_alices_project

    assert ok(await member.get(path))["value"] == "Platform"
    assert [v["key"] for v in ok(await member.get(VARS))] == ["team"]
    not_found(await member.put(path, json={"value": "Mine"}))
    not_found(await member.delete(path))
    # His own user-scope values are his to set, in any project.
    ok(await member.put(f"{VARS}/user/bob/nickname", json={"value": "B"}), 201)
    assert ok(await alice.client.get(path))["value"] == "Platform"


async def test_org_values_belong_to_the_org_of_the_callers_project(
    app: FastAPI, alice: Account, bob: Account, opened: list[httpx.AsyncClient]
) -> None:
    ok(await alice.client.post("/v1/orgs", json={"id": "acme", "name": "Acme"}), 201)
    project = {"id": "acme-app", "name": "App", "org_id": "acme"}
    ok(await alice.client.post("/v1/projects", json=project), 201)
    key = ok(await alice.client.post("/v1/keys", json={"project_id": "acme-app"}), 201)
    alice_in_acme = authed(app, key["secret"], opened)
    path = f"{VARS}/org/acme/industry"

    # From her personal project (in no org) the org's values are not hers to touch.
    not_found(await alice.client.put(path, json={"value": "Rockets"}))
    ok(await alice_in_acme.put(path, json={"value": "Rockets"}), 201)
    assert [v["scope"] for v in ok(await alice_in_acme.get(VARS))] == ["org"]

    # Bob, an org member, reads them in the org's project but cannot write them...
    member = {"user_id": "bob", "role": "member"}
    ok(await alice_in_acme.post("/v1/orgs/acme/members", json=member), 201)
    bobs_key = ok(await bob.client.post("/v1/keys", json={"project_id": "acme-app"}), 201)
    bob_in_acme = authed(app, bobs_key["secret"], opened)
    assert ok(await bob_in_acme.get(path))["value"] == "Rockets"
    not_found(await bob_in_acme.put(path, json={"value": "Boats"}))
    not_found(await bob.client.get(path))
    # ...until he is an org admin.
    admin = {"user_id": "bob", "role": "admin"}
    ok(await alice_in_acme.post("/v1/orgs/acme/members", json=admin), 201)
    assert ok(await bob_in_acme.put(path, json={"value": "Boats"}))["value"] == "Boats"


async def test_a_service_key_keeps_its_end_users_values(
    app: FastAPI, alice: Account, bob: Account, opened: list[httpx.AsyncClient]
) -> None:
    keys = [
        ok(await account.client.post("/v1/keys", json={"kind": "service"}), 201)
        for account in (alice, bob)
    ]
    alices_app, bobs_app = (authed(app, key["secret"], opened) for key in keys)
    path = f"{VARS}/user/u1/plan"

    ok(await alices_app.put(path, json={"value": "gold"}), 201)
    ok(await bobs_app.put(path, json={"value": "free"}), 201)
    ok(await alices_app.put(f"{VARS}/project/{alice.project_id}/tier", json={"value": "a"}), 201)

    assert ok(await alices_app.get(path))["value"] == "gold"
    assert ok(await bobs_app.get(path))["value"] == "free"
    listed = ok(await alices_app.get(VARS, params={"scope": "user", "scope_id": "u1"}))
    assert [(v["scope_id"], v["value"]) for v in listed] == [("u1", "gold")]
    # Not a registered user's value: Alice's own key does not reach her app's end users.
    not_found(await alice.client.get(path))
    # Rendering for an end user uses that end user's values.
    prompt = {"name": "plan", "messages": [{"role": "system", "content": "Plan: {{plan}}"}]}
    ok(await alices_app.post("/v1/prompts", json=prompt), 201)
    rendered = ok(await alices_app.post("/v1/prompts/plan/render", json={"user_id": "u1"}))
    assert rendered["variables"]["plan"] == {"value": "gold", "source": "user"}
    missing = await alices_app.post("/v1/prompts/plan/render", json={"user_id": "u2"})
    assert missing.status_code == 422 and missing.json()["error"]["details"]["missing"] == ["plan"]
    # A user key may not render for someone else.
    other = await alice.client.post("/v1/prompts/plan/render", json={"user_id": "u1"})
    assert other.status_code == 403, other.text


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("put", f"{VARS}/team/x/k", {"value": "v"}, "path.scope"),
        ("put", f"{VARS}/user/alice/1k", {"value": "v"}, "path.key"),
        ("put", f"{VARS}/user/alice/a-b", {"value": "v"}, "path.key"),
        ("put", f"{VARS}/user/alice/k", {"value": "x" * 100_001}, "value"),
        ("put", f"{VARS}/user/alice/k", {"value": 3}, "value"),
        ("put", f"{VARS}/user/alice/k", {}, "value"),
        ("get", f"{VARS}?scope_id=alice", None, "scope"),
        ("get", f"{VARS}?scope=galaxy", None, "query.scope"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    alice: Account, method: str, path: str, body: Any, field: str
) -> None:
    kwargs = {"json": body} if body is not None else {}
    response = await getattr(alice.client, method)(path, **kwargs)

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    named = {p["field"] for p in details["errors"]} if "errors" in details else {details["field"]}
    assert named == {field}
    assert ok(await alice.client.get(VARS)) == []
