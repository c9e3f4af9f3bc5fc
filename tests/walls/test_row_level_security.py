"""The second wall, under the query layer (PostgreSQL row-level security, migrations 0006,
0009 and 0010): raw SQL with no WHERE at all, run in a caller's transaction, returns only that
caller's rows; with no caller set either caller role returns nothing; writes past the
wall change nothing; and the requests of the real app run behind it. PostgreSQL only:
SQLite has no roles."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.exc import ProgrammingError

from chatledger.db import walls
from chatledger.db.engine import Database
from chatledger.server.deps import AppState
from chatledger.tenants.caller import Caller
from tests.server.conftest import Account

# Every table with a project_id column, and what each holds of one account after fill().
TENANT_TABLES = (
    "runs",
    "messages",
    "tasks",
    "usage_daily",
    "project_usage_daily",
    "traces",
    "trace_entries",
    "prompts",
    "prompt_versions",
    "prompt_labels",
    "price_overrides",
    "api_keys",
)
# Rows carrying the user they belong to (the others belong through their run or trace).
USER_TABLES = ("runs", "tasks", "usage_daily", "traces")
SYSTEM_PROJECT = "system"  # the built-in prompts, readable by every caller
# The tenancy directory, deliberately not walled (see migration 0006).
OPEN_TABLES = {"projects", "users", "orgs", "memberships", "alembic_version"}
# The caller roles: members and viewers; owners, admins and service keys (whole project).
ROLES = (walls.CALLER_ROLE, walls.PROJECT_CALLER_ROLE)

Row = dict[str, Any]


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


def database_of(app: FastAPI) -> Database:
    state: AppState = app.state.chatledger
    return state.database


def owner(account: Account) -> Caller:
    return Caller(account.project_id, account.user_id, sees_all=True, key_kind="user")


async def rows(database: Database, table: str, caller: Caller | None = None) -> list[Row]:
    """`SELECT * FROM table`, no WHERE: as the caller, or as chatledger itself."""
    with walls.acting_as(caller) if caller else contextlib.nullcontext():
        async with database.reading() as session:
            found = await session.execute(text(f"SELECT * FROM {table}"))
            return [dict(row) for row in found.mappings()]


async def fill(account: Account, database: Database) -> None:
    """A row of the account's in every tenant table, made through the API where it can."""
    c, user = account.client, account.user_id
    chat = {"run_id": f"{user}-run", "message": {"content": f"hi from {user}"}, "stream": False}
    assert (await c.post("/v1/chat", json=chat)).status_code == 200
    trace = {"entries": [{"node": "planner", "status": "completed"}]}
    put = await c.put(f"/v1/automation/traces/thread/{user}-run", json=trace)
    assert put.status_code == 201, put.text
    prompt = {"name": f"{user}-prompt", "messages": [{"role": "system", "content": "hi"}]}
    assert (await c.post("/v1/prompts", json=prompt)).status_code == 201
    async with database.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO price_overrides (project_id, id, model_pattern, effective_from,"
                " input_per_mtok_nano, output_per_mtok_nano, created_at)"
                " VALUES (:p, :id, 'gpt-*', :at, 1, 2, :at)"
            ),
            {"p": account.project_id, "id": f"{user}-price", "at": datetime.now(UTC)},
        )


def projects_in(found: Sequence[Row]) -> set[str]:
    return {row["project_id"] for row in found}


async def test_a_query_missing_its_scope_sees_only_the_callers_rows(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    database = database_of(app)
    await fill(alice, database)
    await fill(bob, database)
    for table in TENANT_TABLES:
        everything = projects_in(await rows(database, table)) - {SYSTEM_PROJECT}
        # Without the wall the same query sees both tenants: the wall is what filters.
        assert everything == {alice.project_id, bob.project_id}, table
        for account in (alice, bob):
            seen = projects_in(await rows(database, table, owner(account)))
            assert seen - {SYSTEM_PROJECT} == {account.project_id}, f"{table} as {account}"


async def test_with_no_caller_set_the_caller_role_sees_nothing(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    database = database_of(app)
    await fill(alice, database)
    await fill(bob, database)
    for role in ROLES:
        async with database.reading() as session:
            await session.execute(text(f"SET LOCAL ROLE {role}"))
            for table in (*TENANT_TABLES, "variables"):
                found = await session.execute(text(f"SELECT * FROM {table}"))
                tenants = [r for r in found.mappings() if r.get("project_id") != SYSTEM_PROJECT]
                assert tenants == [], f"{table} as {role}"
            builtins = await session.scalar(text("SELECT count(*) FROM prompts"))
            assert builtins == 3  # only the built-ins, readable by anyone


async def test_a_member_sees_only_his_own_rows_of_the_project(
    app: FastAPI, alice: Account, bob_in_alices_project: Any
) -> None:
    database = database_of(app)
    await fill(alice, database)
    chat = {"run_id": "bob-run", "message": {"content": "hi from bob"}, "stream": False}
    assert (await bob_in_alices_project.post("/v1/chat", json=chat)).status_code == 200
    trace = {"entries": [{"node": "planner", "status": "completed"}]}
    put = await bob_in_alices_project.put("/v1/automation/traces/thread/bob-run", json=trace)
    assert put.status_code == 201
    member = Caller(alice.project_id, "bob", role="member", key_kind="user")
    for table in USER_TABLES:
        everyone = {r["user_id"] for r in await rows(database, table, owner(alice))}
        assert everyone == {"alice", "bob"}, table
        assert {r["user_id"] for r in await rows(database, table, member)} == {"bob"}, table
    # The project's usage summed over users is for those who see all users: Bob's reply
    # moved it (the trigger runs as chatledger), but he reads none of it.
    totals = await rows(database, "project_usage_daily", owner(alice))
    assert [(r["model"], r["requests"]) for r in totals] == [("echo", 2)]
    assert await rows(database, "project_usage_daily", member) == []
    bobs_messages = await rows(database, "messages", member)
    assert {r["run_id"] for r in bobs_messages} == {"bob-run"}
    assert len(await rows(database, "messages", owner(alice))) > len(bobs_messages)
    # Entries belong through their trace: Bob sees his, not Alice's.
    traces = {r["id"]: r["user_id"] for r in await rows(database, "traces", owner(alice))}
    entries = await rows(database, "trace_entries", owner(alice))
    assert {traces[e["trace_id"]] for e in entries} == {"alice", "bob"}
    entries = await rows(database, "trace_entries", member)
    assert {traces[e["trace_id"]] for e in entries} == {"bob"}


async def test_writes_past_the_wall_change_nothing(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    database = database_of(app)
    await fill(alice, database)
    await fill(bob, database)
    before = await rows(database, "runs")
    with walls.acting_as(owner(bob)):
        async with database.transaction() as session:
            renamed = await session.scalars(text("UPDATE runs SET name = 'renamed' RETURNING id"))
            assert list(renamed) == ["bob-run"]  # not Alice's
            await session.execute(text("DELETE FROM trace_entries"))
            changed = await session.scalars(
                text("UPDATE prompts SET description = 'x' RETURNING project_id")
            )
            assert list(changed) == [bob.project_id]  # the built-ins are read-only
        with pytest.raises(ProgrammingError, match="row-level security"):
            async with database.transaction() as session:
                await session.execute(
                    text("UPDATE runs SET project_id = :p WHERE id = 'bob-run'"),
                    {"p": alice.project_id},
                )
    after = {r["id"]: r for r in await rows(database, "runs")}
    assert after["alice-run"] == next(r for r in before if r["id"] == "alice-run")
    assert after["bob-run"]["name"] == "renamed"
    assert projects_in(await rows(database, "trace_entries")) == {alice.project_id}
    prompts = await rows(database, "prompts")
    assert [p["project_id"] for p in prompts if p["description"] == "x"] == [bob.project_id]


@pytest.fixture
def statements(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the app's database sends, with its parameters, in order; the
    statement that opens a transaction (BEGIN, and the wall's settings with it: sent to
    the driver directly, unseen by SQLAlchemy's events) with None for parameters, where
    a statement of SQLAlchemy's opens it. (A prepared statement opens its transaction in
    its own pipeline, with `walls.entering`: tests/db/test_deferred_begin.py.)"""
    sent: list[tuple[str, Any]] = []
    engine = database_of(app).write_engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    opening = walls.begin_statement

    def record_opening(quote: Callable[[str], str], scope: walls.Scope | None) -> str:
        statement = opening(quote, scope)
        sent.append((statement, None))
        return statement

    monkeypatch.setattr(walls, "begin_statement", record_opening)
    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


async def test_a_request_runs_behind_the_wall_of_its_caller(
    app: FastAPI, alice: Account, statements: list[tuple[str, Any]]
) -> None:
    assert (await alice.client.put("/v1/runs/r1", json={})).status_code == 201
    listing = len(statements)
    assert (await alice.client.get("/v1/runs")).status_code == 200
    sent = statements[listing:]
    # The key lookup comes first, as chatledger itself and outside any transaction; then
    # the caller's transaction, which its BEGIN puts behind the wall.
    assert "FROM api_keys" in sent[0][0]
    entering = [i for i, (sql, _) in enumerate(sent) if "set_config('role'" in sql]
    assert len(entering) == 1
    opening, _ = sent[entering[0]]
    assert opening.startswith("BEGIN; SELECT ")
    assert f"set_config('role', '{walls.PROJECT_CALLER_ROLE}', true)" in opening  # her own
    assert f"set_config('chatledger.project_id', '{alice.project_id}', true)" in opening
    assert "set_config('chatledger.user_id', 'alice', true)" in opening
    assert all(not sql.startswith("BEGIN") for sql, _ in sent[: entering[0]])
    assert any("FROM runs" in sql for sql, _ in sent[entering[0] + 1 :])
    # Nothing lingers once the request is over: this test's own context is unbound.
    assert walls.bound() is None


async def test_variables_are_walled_by_scope(app: FastAPI, alice: Account, bob: Account) -> None:
    database = database_of(app)
    now = datetime.now(UTC)
    async with database.transaction() as session:
        await session.execute(
            text("INSERT INTO orgs (id, name, created_at) VALUES ('org-a', 'A', :at)"), {"at": now}
        )
        await session.execute(
            text("UPDATE projects SET org_id = 'org-a' WHERE id = :p"), {"p": alice.project_id}
        )
        for scope, scope_id in (
            ("user", "alice"),
            ("user", "bob"),
            ("user", f"{alice.project_id}/end-user"),  # an end user of Alice's app
            ("user", f"{bob.project_id}/end-user"),
            ("project", alice.project_id),
            ("project", bob.project_id),
            ("org", "org-a"),
            ("org", "org-b"),
        ):
            await session.execute(
                text(
                    "INSERT INTO variables (scope, scope_id, key, value, created_at, updated_at)"
                    " VALUES (:scope, :scope_id, 'k', 'v', :at, :at)"
                ),
                {"scope": scope, "scope_id": scope_id, "at": now},
            )

    async def seen(caller: Caller) -> set[tuple[str, str]]:
        return {(r["scope"], r["scope_id"]) for r in await rows(database, "variables", caller)}

    assert await seen(owner(alice)) == {
        ("user", "alice"),
        ("project", alice.project_id),
        ("org", "org-a"),
    }
    service = Caller(alice.project_id, "alice", sees_all=True, key_kind="service")
    assert await seen(service) == {
        ("user", f"{alice.project_id}/end-user"),
        ("project", alice.project_id),
        ("org", "org-a"),
    }
    assert await seen(owner(bob)) == {("user", "bob"), ("project", bob.project_id)}


@pytest.mark.parametrize("role", ROLES)
async def test_every_table_is_walled_or_deliberately_open(app: FastAPI, role: str) -> None:
    """A table added later must take a side: a policy for every caller role (for all
    commands, not only reading), or a place in OPEN_TABLES."""
    async with database_of(app).reading() as session:
        found = await session.execute(
            text(
                "SELECT c.relname, c.relrowsecurity,"
                " EXISTS (SELECT 1 FROM information_schema.columns k WHERE k.table_schema ="
                "  current_schema() AND k.table_name = c.relname AND k.column_name = 'project_id'),"
                " EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = current_schema()"
                "  AND p.tablename = c.relname AND p.cmd = 'ALL' AND :role = ANY (p.roles))"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            ),
            {"role": role},
        )
        tables = {name: (secured, tenant, policy) for name, secured, tenant, policy in found}
    walled = {name for name, (secured, _, policy) in tables.items() if secured and policy}
    assert {name for name, (_, tenant, _) in tables.items() if tenant} <= walled
    assert set(TENANT_TABLES) | {"variables"} == walled
    assert set(tables) - walled == OPEN_TABLES


async def test_a_whole_project_caller_is_not_filtered_row_by_row(
    app: FastAPI, alice: Account
) -> None:
    # Migration 0009: for an owner, the policy is the project alone, which PostgreSQL
    # checks once against the query's own project_id; asking each row whether the caller
    # sees them all (0006's rule) made the planner expect a hundredth of the rows.
    database = database_of(app)
    member = Caller(alice.project_id, "bob", role="member", key_kind="user")
    sql = f"EXPLAIN SELECT * FROM usage_daily WHERE project_id = '{alice.project_id}'"
    plans = {}
    for caller in (owner(alice), member):
        with walls.acting_as(caller):
            async with database.reading() as session:
                plans[caller.sees_all] = " ".join(await session.scalars(text(sql)))
    assert "chatledger.user_id" not in plans[True], plans[True]
    assert "chatledger.user_id" in plans[False], plans[False]  # a member's rows are his own
