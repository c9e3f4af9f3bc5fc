"""Scoped variables in the database (SQLite and PostgreSQL): a registered user's values
follow them into every project, while an app's end users (service keys) are kept apart
per project even when two apps use the same end-user id; setting twice updates in place.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from chatledger import Ledger
from chatledger.errors import InvalidInput, NotFound
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.variables import service as variables
from chatledger.variables.models import Variable


def service_key(project: str, end_user: str) -> Caller:
    return Caller(project, end_user, sees_all=True, role="admin", key_kind="service")


def user_key(project: str, user: str) -> Caller:
    return Caller(project, user, role="member", key_kind="user")


@pytest.fixture
async def projects(ledger: Ledger) -> Ledger:
    async with ledger.database.transaction() as session:
        for project in ("shop", "bank"):
            await tenants.ensure_project(session, project)
        await tenants.ensure_user(session, "ana")
    return ledger


async def values(ledger: Ledger, caller: Caller, *keys: str) -> dict[str, dict[str, str]]:
    async with ledger.database.reading() as session:
        return await variables.stored_values(session, caller, keys)


async def test_end_users_of_two_apps_never_share_values(projects: Ledger) -> None:
    async with projects.database.transaction() as session:
        await variables.put(session, service_key("shop", "u1"), "user", "u1", "plan", "gold")
        await variables.put(session, service_key("bank", "u1"), "user", "u1", "plan", "basic")

    assert await values(projects, service_key("shop", "u1"), "plan") == {"user": {"plan": "gold"}}
    assert await values(projects, service_key("bank", "u1"), "plan") == {"user": {"plan": "basic"}}
    # Nor does a registered user who happens to have the same id see either.
    assert await values(projects, user_key("shop", "u1"), "plan") == {}
    async with projects.database.reading() as session:
        rows = {(v.scope_id, v.value) for v in await session.scalars(select(Variable))}
        shown = await variables.get(session, service_key("shop", "u1"), "user", "u1", "plan")
    assert rows == {("shop/u1", "gold"), ("bank/u1", "basic")}
    assert variables.public_scope_id(shown) == "u1"


async def test_a_registered_users_values_follow_them_across_projects(projects: Ledger) -> None:
    async with projects.database.transaction() as session:
        await variables.put(session, user_key("shop", "ana"), "user", "ana", "tz", "Asia/Tokyo")

    assert await values(projects, user_key("bank", "ana"), "tz") == {"user": {"tz": "Asia/Tokyo"}}
    # An app's end user called "ana" is someone else.
    assert await values(projects, service_key("bank", "ana"), "tz") == {}


async def test_setting_again_updates_in_place(projects: Ledger) -> None:
    ana = user_key("shop", "ana")
    async with projects.database.transaction() as session:
        first, created = await variables.put(session, ana, "user", "ana", "k", "1", "about k")
    async with projects.database.transaction() as session:
        kept, again = await variables.put(
            session, ana, "user", "ana", "k", "2", None, keep_description=True
        )
    async with projects.database.transaction() as session:
        cleared, _ = await variables.put(session, ana, "user", "ana", "k", "3", None)

    assert (created, again) == (True, False)
    assert (kept.value, kept.description) == ("2", "about k")
    assert (cleared.value, cleared.description) == ("3", None)
    assert kept.created_at == first.created_at <= kept.updated_at <= cleared.updated_at


@pytest.mark.parametrize("key", ["", "1abc", "a-b", "a b", "x" * 65, "ключ"])
async def test_keys_are_identifiers(projects: Ledger, key: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        async with projects.database.transaction() as session:
            await variables.put(session, user_key("shop", "ana"), "user", "ana", key, "v")
    assert caught.value.field == "key"


async def test_a_member_cannot_write_project_values_and_no_one_sees_another_project(
    projects: Ledger,
) -> None:
    with pytest.raises(NotFound):
        async with projects.database.transaction() as session:
            await variables.put(session, user_key("shop", "ana"), "project", "shop", "k", "v")
    with pytest.raises(NotFound):
        async with projects.database.reading() as session:
            await variables.list_variables(session, service_key("shop", "x"), "project", "bank")
