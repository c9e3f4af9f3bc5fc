"""Tenant isolation, route by route: another tenant's id answers 404, never 403 or 200,
and changes nothing.

ROUTES says how each route of the app is checked, and a test fails when the app serves a
route that ROUTES does not list (or the other way round): a new route cannot ship without
an isolation check. The checks run against the world of tests/server/isolation.py —
Alice owns one of everything; Bob has his own project; Carol is a plain member of
Alice's project, who sees only her own rows there; Alice's app has a service key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from chatledger import Settings
from chatledger.server.app import create_app
from tests.server.conftest import Account, MakeAccount
from tests.server.isolation import (
    MARKER,
    MODEL,
    USAGE,
    World,
    alices_data_in,
    build_world,
    json_strings,
    snapshot,
)
from tests.server.test_tasks_api import assert_no_drift

Body = Mapping[str, Any] | Callable[[World], Mapping[str, Any]] | None


@dataclass(frozen=True)
class Exempt:
    """Not tenant data, or checked elsewhere: the reason says which."""

    why: str


@dataclass(frozen=True)
class Hidden:
    """Names one of Alice's rows (by path, else by body): each outsider gets 404."""

    body: Body = None
    # Path parameters filled with another of Alice's ids than the world's default.
    ids: Mapping[str, str] = field(default_factory=dict)
    # A read: Alice's service key sees it too.
    read: bool = False
    outsiders: tuple[str, ...] = ("bob", "carol")


@dataclass(frozen=True)
class Ensured:
    """Names Alice's run (or thread) in a route that creates it when absent. Ids are per
    project: in Bob's project the id names his own new row; for Carol, in Alice's
    project, it is 404."""

    body: Body = None
    # POST /v1/batch: a verdict per item instead of a status.
    per_item: bool = False


@dataclass(frozen=True)
class Listed:
    """A collection: outsiders' answers hold none of Alice's ids, hers holds `shows`."""

    shows: str  # a key of World.ids
    query: Mapping[str, str] = field(default_factory=dict)
    service: bool = True
    outsiders: tuple[str, ...] = ("bob", "carol")


Check = Exempt | Hidden | Ensured | Listed
# For what Alice's project shares with its members (its prompts, keys of one's own in it),
# only another project is outside.
BOB = ("bob",)
C = TypeVar("C", Exempt, Hidden, Ensured, Listed)

NEW_ENTRY = {"idx": 1, "node": "critic", "status": "completed"}
BATCH_ITEMS = [
    {"kind": "run", "id": "a-run"},
    {"kind": "message", "id": "x-batch-msg", "run_id": "a-run", "role": "user", "content": "hi"},
    {"kind": "task", "id": "x-batch-task", "run_id": "a-run", "model": MODEL}
    | {"status": "completed", "usage": USAGE},
    {"kind": "interaction", "id": "x-batch-i", "run_id": "a-run", "prompt": "p", "response": "r"}
    | {"model": MODEL, "usage": USAGE},
    {"kind": "trace_entries", "thread_id": "a-thread", "entries": [NEW_ENTRY]},
]
VARIABLE = "/v1/variables/{scope}/{scope_id}/{key}"
ALICES_VARIABLE = {"scope": "user", "scope_id": "alice", "key": "greeting"}
INTERACTION = {
    "id": "x-interaction",
    "prompt": "p",
    "response": "r",
    "model": MODEL,
    "usage": USAGE,
}

ROUTES: dict[tuple[str, str], Check] = {
    # -- public, or about the server rather than a tenant
    ("GET", "/healthz"): Exempt("liveness probe, no tenant data"),
    ("GET", "/readyz"): Exempt("readiness probe, no tenant data"),
    ("GET", "/metrics"): Exempt("Prometheus counters by route template, no ids"),
    ("GET", "/openapi.json"): Exempt("the API's schema"),
    ("GET", "/docs"): Exempt("the API's docs"),
    ("GET", "/docs/oauth2-redirect"): Exempt("the API docs' OAuth2 helper page"),
    ("GET", "/redoc"): Exempt("the API's docs"),
    # -- tenancy
    ("POST", "/v1/admin/users"): Exempt("admin key only; test_tenancy refuses user keys"),
    ("POST", "/v1/orgs"): Exempt("makes the caller's own org; org ids are global names"),
    ("GET", "/v1/me"): Listed(shows="user_id", service=False),
    ("POST", "/v1/orgs/{org_id}/members"): Hidden(body={"user_id": "carol", "role": "admin"}),
    ("POST", "/v1/projects"): Hidden(body={"name": "Sneaky", "org_id": "a-org"}),
    ("POST", "/v1/projects/{project_id}/members"): Hidden(
        body={"user_id": "carol", "role": "admin"}
    ),
    # Carol is a member of Alice's project: a user key of her own there is hers to make.
    ("POST", "/v1/keys"): Hidden(body=lambda w: {"project_id": w.ids["project_id"]}, outsiders=BOB),
    ("GET", "/v1/keys"): Listed(shows="key_id", service=False),
    ("DELETE", "/v1/keys/{key_id}"): Hidden(),
    # -- runs and messages
    ("POST", "/v1/runs"): Ensured(body={"id": "a-run", "name": "taken over"}),
    ("PUT", "/v1/runs/{run_id}"): Ensured(body={"name": "taken over"}),
    ("GET", "/v1/runs"): Listed(shows="run_id"),
    ("GET", "/v1/runs/{run_id}"): Hidden(read=True),
    ("PATCH", "/v1/runs/{run_id}"): Hidden(body={"name": "taken over"}),
    ("DELETE", "/v1/runs/{run_id}"): Hidden(),
    ("POST", "/v1/runs/{run_id}/messages"): Hidden(
        body={"id": "x-msg", "role": "user", "content": "hi"}
    ),
    ("GET", "/v1/runs/{run_id}/messages"): Hidden(read=True),
    ("POST", "/v1/runs/{run_id}/interactions"): Ensured(body=INTERACTION),
    # -- tasks
    ("POST", "/v1/tasks"): Ensured(body={"id": "x-task", "run_id": "a-run", "model": MODEL}),
    ("GET", "/v1/tasks/{task_id}"): Hidden(read=True),
    ("GET", "/v1/runs/{run_id}/tasks"): Hidden(read=True),
    ("PATCH", "/v1/tasks/{task_id}"): Hidden(body={"response_text": "overwritten"}),
    ("POST", "/v1/tasks/{task_id}/complete"): Hidden(
        body={"response_text": "done", "usage": USAGE}, ids={"task_id": "a-task-to-complete"}
    ),
    ("POST", "/v1/tasks/{task_id}/fail"): Hidden(
        body={"error": {"message": "no"}}, ids={"task_id": "a-task-to-fail"}
    ),
    ("POST", "/v1/tasks/{task_id}/cancel"): Hidden(
        body={"reason": "stop"}, ids={"task_id": "a-task-to-cancel"}
    ),
    ("GET", "/v1/tasks/{task_id}/stream"): Hidden(read=True, ids={"task_id": "a-task-done"}),
    # -- chat
    ("POST", "/v1/chat"): Ensured(
        body={"run_id": "a-run", "message": {"content": "hi"}, "stream": False}
    ),
    ("POST", "/v1/messages/{message_id}/retry"): Hidden(body={"stream": False}),
    # -- traces
    ("POST", "/v1/automation/traces"): Ensured(
        body={"thread_id": "a-thread", "entries": [NEW_ENTRY]}
    ),
    ("GET", "/v1/automation/traces"): Listed(shows="trace_id", query={"thread_id": "a-thread"}),
    ("GET", "/v1/automation/traces/{trace_id}"): Hidden(read=True),
    ("PATCH", "/v1/automation/traces/{trace_id}"): Hidden(body={"name": "taken over"}),
    ("DELETE", "/v1/automation/traces/{trace_id}"): Hidden(),
    ("GET", "/v1/automation/traces/thread/{thread_id}"): Hidden(read=True),
    ("PUT", "/v1/automation/traces/thread/{thread_id}"): Ensured(
        body={"name": "taken over", "entries": [NEW_ENTRY]}
    ),
    # -- prompts
    ("GET", "/v1/prompts/builtins"): Exempt("chatledger's own prompts, read-only, for everyone"),
    ("POST", "/v1/prompts"): Exempt(
        "makes a prompt in the caller's project; names are per project"
    ),
    ("GET", "/v1/prompts"): Listed(shows="name", outsiders=BOB),
    ("GET", "/v1/prompts/{name}"): Hidden(read=True, outsiders=BOB),
    ("GET", "/v1/prompts/{name}/versions"): Hidden(read=True, outsiders=BOB),
    ("POST", "/v1/prompts/{name}/versions"): Hidden(body={"labels": ["staging"]}, outsiders=BOB),
    ("PUT", "/v1/prompts/{name}/labels/{label}"): Hidden(
        body={"version": 1}, ids={"label": "staging"}, outsiders=BOB
    ),
    ("POST", "/v1/prompts/{name}/render"): Hidden(body={}, read=True, outsiders=BOB),
    # -- variables: Alice's own (a service key's end users have theirs, in its project)
    ("GET", "/v1/variables"): Listed(shows="user_id", service=False),
    ("GET", VARIABLE): Hidden(ids=ALICES_VARIABLE),
    ("PUT", VARIABLE): Hidden(body={"value": "taken over"}, ids=ALICES_VARIABLE),
    ("DELETE", VARIABLE): Hidden(ids=ALICES_VARIABLE),
    # -- price overrides: the project's, read by its members, written by its managers
    ("GET", "/v1/prices"): Listed(shows="override_id", outsiders=BOB),
    ("POST", "/v1/prices"): Exempt(
        "adds to the caller's own project; tests/prices refuses members (404)"
    ),
    ("DELETE", "/v1/prices/{override_id}"): Hidden(),
    ("POST", "/v1/prices/quote"): Exempt(
        "prices in the caller's own project; tests/prices shows others' overrides never apply"
    ),
    # -- usage and ingest
    ("GET", "/v1/usage/daily"): Listed(shows="user_id", query={"user_id": "alice"}),
    ("POST", "/v1/batch"): Ensured(body={"items": BATCH_ITEMS}, per_item=True),
}


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route, however deeply its router is included."""
    served = set()
    for route in iter_route_contexts(app.routes):
        # A route without methods (a mount, a websocket) is listed as "*" to be checked.
        for method in route.methods or {"*"}:
            if method != "HEAD":  # answered by the GET of the same route
                served.add((method, str(route.path)))
    return served


@pytest.fixture
async def world(
    app: FastAPI, alice: Account, bob: Account, make_account: MakeAccount
) -> AsyncIterator[World]:
    opened: list[httpx.AsyncClient] = []
    yield await build_world(app, alice, bob, make_account, opened)
    for client in opened:
        await client.aclose()


async def call(
    world: World, who: str, method: str, path: str, check: Hidden | Ensured | Listed
) -> httpx.Response:
    if isinstance(check, Listed):
        return await world.callers[who].request(method, path, params=dict(check.query))
    ids = {**world.ids, **check.ids} if isinstance(check, Hidden) else world.ids
    body = check.body(world) if callable(check.body) else check.body
    return await world.callers[who].request(method, path.format_map(ids), json=body)


def of_kind(kind: type[C]) -> list[tuple[str, str, C]]:
    return [(method, path, c) for (method, path), c in ROUTES.items() if isinstance(c, kind)]


def assert_not_found(response: httpx.Response, where: str) -> None:
    assert response.status_code == 404, f"{where}: {response.status_code} {response.text}"
    error = response.json()["error"]
    assert (error["code"], set(error)) == ("not_found", {"code", "message", "details"}), where


# -- the table is the app ---------------------------------------------------------------


def test_every_route_the_app_serves_has_an_isolation_check() -> None:
    served = served_routes(create_app(Settings(database_url="sqlite+aiosqlite:///:memory:")))
    unchecked = served - ROUTES.keys()
    assert not unchecked, f"routes without an isolation check; add them to ROUTES: {unchecked}"
    gone = ROUTES.keys() - served
    assert not gone, f"ROUTES lists routes the app does not serve: {gone}"


# -- outsiders ---------------------------------------------------------------------------


async def test_outsiders_lists_show_none_of_alices_rows(world: World) -> None:
    for method, path, check in of_kind(Listed):
        for who in check.outsiders:
            where = f"{who}: {method} {path}"
            response = await call(world, who, method, path, check)
            assert response.status_code == 200, f"{where}: {response.text}"
            assert not alices_data_in(response, world), f"{where}: {response.text}"


async def test_alices_ids_answer_404_to_outsiders_and_change_nothing(world: World) -> None:
    before = await snapshot(world)
    checks: list[tuple[str, str, Hidden | Ensured]] = [*of_kind(Hidden), *of_kind(Ensured)]
    for method, path, check in checks:
        outsiders = check.outsiders if isinstance(check, Hidden) else ("carol",)
        for who in outsiders:
            where = f"{who}: {method} {path}"
            response = await call(world, who, method, path, check)
            if isinstance(check, Ensured) and check.per_item:
                assert response.status_code == 200, f"{where}: {response.text}"
                codes = [item["error"]["code"] for item in response.json()["results"]]
                assert codes == ["not_found"] * len(BATCH_ITEMS), f"{where}: {response.text}"
            else:
                assert_not_found(response, where)
            assert not alices_data_in(response, world), f"{where}: {response.text}"
            assert await snapshot(world) == before, f"{where} changed Alice's rows"


# Ids are unique per project: Carol, in Alice's project, may try Alice's ids for rows of her
# own. The id is taken, so the write is refused (404, or 409 for a taken id) and lands
# nowhere, without showing Alice's row.
TAKEN_IDS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/runs/c-run/messages", {"id": "a-msg", "role": "user", "content": "x"}),
    (
        "POST",
        "/v1/runs/c-run/messages",
        {"id": "a-msg", "role": "user", "content": f"{MARKER} hello"},
    ),
    ("POST", "/v1/tasks", {"id": "a-task-open", "run_id": "c-run", "model": MODEL}),
    ("POST", "/v1/runs/c-run/interactions", INTERACTION | {"id": "a-interaction"}),
    ("PUT", "/v1/automation/traces/thread/c-thread", {"id": "a-trace"}),
    ("POST", "/v1/chat", {"message": {"id": "a-failed", "content": "x"}, "stream": False}),
    ("POST", "/v1/chat", {"message": {"id": "a-failed", "content": MARKER}, "stream": False}),
]


async def test_alices_ids_taken_by_a_member_for_her_own_rows_are_refused(world: World) -> None:
    carol = world.callers["carol"]
    assert (await carol.put("/v1/runs/c-run", json={})).status_code == 201
    before = await snapshot(world)
    statuses: dict[tuple[str, str], set[int]] = {}
    for method, path, body in TAKEN_IDS:
        where = f"carol: {method} {path} {body}"
        response = await carol.request(method, path, json=body)
        assert response.status_code in (404, 409), f"{where}: {response.text}"
        # The same answer whether or not Carol guessed Alice's text: no content oracle.
        statuses.setdefault((method, path), set()).add(response.status_code)
        assert not alices_data_in(response, world), f"{where}: {response.text}"
        assert await snapshot(world) == before, f"{where} changed Alice's rows"
    guessable = {route: seen for route, seen in statuses.items() if len(seen) > 1}
    assert not guessable, f"the answer tells whether Alice's text was guessed: {guessable}"
    item = {"kind": "message", "id": "a-msg", "run_id": "c-run", "role": "user", "content": "x"}
    response = await carol.post("/v1/batch", json={"items": [item]})
    assert response.json()["rejected"] == 1, response.text
    assert await snapshot(world) == before


async def test_a_member_uses_the_projects_prompt_with_her_own_variables(world: World) -> None:
    carol, bob = world.callers["carol"], world.callers["bob"]
    rendered = await carol.post("/v1/prompts/a-prompt/render", json={})
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["variables"]["greeting"] == {"value": "hello", "source": "default"}
    chat = {"message": {"content": "hi"}, "prompt": "a-prompt", "stream": False}
    answered = await carol.post("/v1/chat", json=chat)
    assert answered.status_code == 200, answered.text
    run = await carol.get(f"/v1/runs/{answered.json()['run_id']}")
    assert MARKER not in run.text
    before = await snapshot(world)
    assert_not_found(await bob.post("/v1/chat", json=chat), "bob: chat with Alice's prompt")
    # The project's variables are its managers' to set: a member is refused as an outsider.
    project_variable = f"/v1/variables/project/{world.ids['project_id']}/greeting"
    refused = await carol.put(project_variable, json={"value": "x"})
    assert_not_found(refused, "carol: PUT a project variable")
    assert await snapshot(world) == before
    mine = await world.callers["alice"].post("/v1/prompts/a-prompt/render", json={})
    assert mine.json()["variables"]["greeting"] == {"value": MARKER, "source": "user"}


async def test_in_another_project_alices_ids_name_the_callers_own_new_rows(
    app: FastAPI, world: World
) -> None:
    before = await snapshot(world)
    for method, path, check in of_kind(Ensured):
        where = f"bob: {method} {path}"
        response = await call(world, "bob", method, path, check)
        assert response.status_code in (200, 201), f"{where}: {response.text}"
        if check.per_item:
            assert response.json()["rejected"] == 0, f"{where}: {response.text}"
        assert not alices_data_in(response, world), f"{where}: {response.text}"
        assert await snapshot(world) == before, f"{where} changed Alice's rows"
    bobs_runs = (await world.callers["bob"].get("/v1/runs")).json()["items"]
    assert {run["user_id"] for run in bobs_runs} == {"bob"}
    await assert_no_drift(app)


# -- the 404s are not vacuous: the same calls reach Alice's rows for her -------------------


async def test_alice_and_her_service_key_reach_every_row(app: FastAPI, world: World) -> None:
    for method, path, listed in of_kind(Listed):
        for who in ("alice", "service") if listed.service else ("alice",):
            response = await call(world, who, method, path, listed)
            assert response.status_code == 200, f"{who}: {method} {path}: {response.text}"
            assert world.ids[listed.shows] in json_strings(response.json()), (who, path)

    checks: list[tuple[str, str, Hidden | Ensured]] = [*of_kind(Hidden), *of_kind(Ensured)]
    # Deletions last, the run's (which takes everything with it) very last.
    checks.sort(key=lambda c: (c[0] == "DELETE", c[1] == "/v1/runs/{run_id}"))
    for method, path, check in checks:
        callers = ("alice", "service") if isinstance(check, Hidden) and check.read else ("alice",)
        for who in callers:
            response = await call(world, who, method, path, check)
            assert response.is_success, f"{who}: {method} {path}: {response.text}"
            if isinstance(check, Ensured) and check.per_item:
                assert response.json()["rejected"] == 0, response.text
    await assert_no_drift(app)
