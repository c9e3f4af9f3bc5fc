"""The wall as deployed: chatledger connecting as an ordinary role that owns its database
(not a superuser, which row-level security never applies to). Opening the database
migrates it as that role, which makes itself a member of the caller role; chatledger's
own work (the admin route) still sees every tenant, each caller only their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url

from chatledger import Settings
from chatledger.db import walls
from chatledger.server.app import create_app
from chatledger.server.deps import AppState
from chatledger.tenants.caller import Caller
from tests.server.conftest import ADMIN_KEY, BASE_URL


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def ordinary_role_url(postgres_template: tuple[str, str] | None) -> Iterator[str]:
    """An empty database owned by a new login role with no superuser power; its URL."""
    if postgres_template is None:
        pytest.skip("no PostgreSQL server (set CHATLEDGER_TEST_POSTGRES_URL)")
    admin_url, _ = postgres_template
    name = f"chatledger_walls_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
        # CREATEROLE: what the migration needs to add itself to the caller role.
        admin.execute(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER CREATEROLE')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    try:
        yield make_url(admin_url).set(username=name, database=name).render_as_string(False)
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
async def served(ordinary_role_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(database_url=ordinary_role_url, admin_key=ADMIN_KEY))
    async with app.router.lifespan_context(app):
        yield app


async def new_user(app: FastAPI, user_id: str) -> tuple[str, httpx.AsyncClient]:
    """A user made through the admin route (chatledger's own work), and their client."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as admin:
        made = await admin.post(
            "/v1/admin/users",
            json={"id": user_id},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
    assert made.status_code == 201, made.text
    key = made.json()["api_key"]["secret"]
    client = httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, headers={"Authorization": f"Bearer {key}"}
    )
    return made.json()["project"]["id"], client


async def test_the_wall_holds_when_chatledger_is_not_a_superuser(served: FastAPI) -> None:
    state: AppState = served.state.chatledger
    database = state.database
    async with database.reading() as session:
        assert await session.scalar(
            text("SELECT NOT rolsuper FROM pg_roles WHERE rolname = current_user")
        )
    projects = {}
    for user in ("alice", "bob"):
        project, client = await new_user(served, user)
        projects[user] = project
        async with client:
            chat = {"message": {"content": f"hi from {user}"}, "stream": False}
            answered = await client.post("/v1/chat", json=chat)
            assert answered.status_code == 200, answered.text
            assert len((await client.get("/v1/runs")).json()["items"]) == 1

    async def runs_seen() -> set[str]:
        async with database.reading() as session:
            found = await session.execute(text("SELECT project_id FROM runs"))
            return {project for (project,) in found}

    assert await runs_seen() == set(projects.values())
    for user, project in projects.items():
        with walls.acting_as(Caller(project, user, sees_all=True, key_kind="user")):
            assert await runs_seen() == {project}
