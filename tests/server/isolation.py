"""The world the isolation tests probe (tests/server/test_isolation.py): Alice owns one
of everything, Bob has a project of his own, Carol is a plain member of Alice's project,
and Alice's app has a service key. Also a snapshot of every row of Alice's tenancy, to
prove that a refused call changed nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import or_, select

from chatledger.db.base import Base
from chatledger.server.deps import AppState
from tests.server.conftest import Account, MakeAccount, authed

# In every text Alice stores (names, contents, replies, trace data): an answer to anyone
# else that contains it has leaked one of her rows.
MARKER = "alice-private-7f3a"
MODEL = "openai/gpt-4o"
USAGE = {"input_tokens": 10, "output_tokens": 5}
# Pending tasks, one per route that could end or move one.
OPEN_TASKS = ("a-task-open", "a-task-to-complete", "a-task-to-fail", "a-task-to-cancel")
DONE_TASK = "a-task-done"


@dataclass
class World:
    app: FastAPI
    # Path parameter name → the id of Alice's row that the tables fill it with.
    ids: dict[str, str]
    # Every id of Alice's that no outsider may ever be shown.
    secret_ids: set[str]
    # alice, service (Alice's project's service key), bob, carol.
    callers: dict[str, httpx.AsyncClient]


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


async def build_world(
    app: FastAPI,
    alice: Account,
    bob: Account,
    make_account: MakeAccount,
    opened: list[httpx.AsyncClient],
) -> World:
    a = alice.client
    expect(await a.put("/v1/runs/a-run", json={"name": f"{MARKER} run"}), 201)
    message = {"id": "a-msg", "role": "user", "content": f"{MARKER} hello"}
    expect(await a.post("/v1/runs/a-run/messages", json=message), 201)
    for task_id in (*OPEN_TASKS, DONE_TASK):
        task = {"id": task_id, "run_id": "a-run", "model": MODEL}
        expect(await a.post("/v1/tasks", json=task), 201)
    ending = {"response_text": MARKER, "usage": USAGE}
    expect(await a.post(f"/v1/tasks/{DONE_TASK}/complete", json=ending), 200)
    exchange = {"id": "a-interaction", "prompt": MARKER, "response": MARKER, "model": MODEL}
    interaction = expect(
        await a.post("/v1/runs/a-run/interactions", json={**exchange, "usage": USAGE}), 201
    )
    # A reply failing before its first token: the user message stays, status `error`.
    chat = {
        "run_id": "a-run",
        "message": {"id": "a-failed", "content": MARKER},
        "settings": {"fail_at": 0},
        "stream": False,
    }
    failed = expect(await a.post("/v1/chat", json=chat), 502)["error"]["details"]
    entry = {"node": "planner", "status": "completed", "data": {"note": MARKER}}
    trace = {"id": "a-trace", "name": MARKER, "entries": [entry]}
    expect(await a.put("/v1/automation/traces/thread/a-thread", json=trace), 201)
    # The project's prompt (its members share it), filled from Alice's own variable.
    template = {"role": "system", "content": "Say {{greeting}}"}
    prompt = {"id": "a-prompt-id", "name": "a-prompt", "messages": [template]}
    prompt["variables"] = [{"name": "greeting", "default": "hello"}]
    expect(await a.post("/v1/prompts", json=prompt), 201)
    expect(await a.put("/v1/variables/user/alice/greeting", json={"value": MARKER}), 201)
    price = {"model_pattern": "gpt-4o*", "input_per_mtok": "1", "output_per_mtok": "2"}
    override = expect(await a.post("/v1/prices", json=price), 201)["id"]
    spare_key = expect(await a.post("/v1/keys", json={"name": "spare"}), 201)["id"]
    user_key = expect(await a.get("/v1/me"), 200)["key_id"]
    expect(await a.post("/v1/orgs", json={"id": "a-org", "name": "Alice's org"}), 201)
    service = expect(await a.post("/v1/keys", json={"kind": "service"}), 201)

    carol = await make_account("carol")
    member = {"user_id": "carol", "role": "member"}
    expect(await a.post(f"/v1/projects/{alice.project_id}/members", json=member), 201)
    carols_key = expect(
        await carol.client.post("/v1/keys", json={"project_id": alice.project_id}), 201
    )

    ids = {
        "run_id": "a-run",
        "task_id": "a-task-open",
        "trace_id": "a-trace",
        "thread_id": "a-thread",
        "message_id": "a-failed",
        "org_id": "a-org",
        "project_id": alice.project_id,
        "key_id": spare_key,
        "user_id": alice.user_id,
        "name": "a-prompt",
        "override_id": override,
    }
    generated = {
        failed["task_id"],
        interaction["user_message"]["id"],
        interaction["assistant_message"]["id"],
    }
    return World(
        app=app,
        ids=ids,
        secret_ids=(set(ids.values()) - {alice.project_id})
        | set(OPEN_TASKS)
        | {DONE_TASK, "a-msg", "a-interaction", "a-prompt-id", user_key, service["id"]}
        | generated,
        callers={
            "alice": a,
            "service": authed(app, service["secret"], opened),
            "bob": bob.client,
            "carol": authed(app, carols_key["secret"], opened),
        },
    )


Rows = dict[str, list[tuple[Any, ...]]]


async def snapshot(world: World) -> Rows:
    """Every row of Alice's project and org (and scoped to her), table by table."""
    project, org = world.ids["project_id"], world.ids["org_id"]
    state: AppState = world.app.state.chatledger
    rows: Rows = {}
    async with state.database.reading() as session:
        for table in Base.metadata.sorted_tables:
            c = table.c
            if "project_id" in c:
                where = c.project_id == project
            elif "scope_id" in c:  # memberships, scoped variables
                where = c.scope_id.in_([project, org, world.ids["user_id"]])
            elif table.name == "projects":
                where = or_(c.id == project, c.org_id == org)
            elif table.name == "orgs":
                where = c.id == org
            else:  # users: people, not a tenant's data
                continue
            # Authenticating stamps the key used (Carol's is in Alice's project).
            columns = [column for column in c if column.name != "last_used_at"]
            stmt = select(*columns).where(where).order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(row) for row in await session.execute(stmt)]
    return rows


def json_strings(value: Any) -> set[str]:
    """Every string in a JSON document, keys excepted."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    found: set[str] = set()
    for child in value if isinstance(value, list) else ():
        found |= json_strings(child)
    return found


def alices_data_in(response: httpx.Response, world: World) -> set[str]:
    """Alice's ids and texts that an answer shows, beyond what its request sent (a 404
    names the id it was asked for; a new row of Bob's may carry an id Alice uses too)."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return {MARKER} if MARKER in response.text else set()
    request = response.request
    sent = set(request.url.path.split("/")) | set(request.url.params.values())
    sent |= json_strings(json.loads(request.content or b"null"))
    shown = json_strings(response.json()) - sent
    return {text for text in shown if text in world.secret_ids or MARKER in text}
