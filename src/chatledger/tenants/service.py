"""Tenancy rules: orgs, projects, users and who may do what in them. Rows for a project
and user always exist before anything is written for them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.types import utcnow
from chatledger.db.upsert import insert_if_absent
from chatledger.errors import Conflict, InvalidInput, NotFound
from chatledger.ids import checked_id
from chatledger.tenants.caller import ROLES
from chatledger.tenants.models import Membership, Org, Project, User


async def ensure_project(
    session: AsyncSession, project_id: str, name: str | None = None, org_id: str | None = None
) -> bool:
    values = {
        "id": project_id,
        "name": name or project_id,
        "org_id": org_id,
        "created_at": utcnow(),
    }
    return await insert_if_absent(session, Project, values)


async def ensure_user(
    session: AsyncSession, user_id: str, name: str | None = None, email: str | None = None
) -> bool:
    values = {"id": user_id, "name": name, "email": email, "created_at": utcnow()}
    return await insert_if_absent(session, User, values)


def personal_project_id(user_id: str) -> str:
    """The id of the project made with a user (`create_user`)."""
    return f"personal-{user_id}"[:128]


async def create_user(
    session: AsyncSession, user_id: str | None, email: str | None, name: str | None
) -> tuple[User, Project]:
    """A new user with a personal project they own."""
    user_id = checked_id(user_id, "id")
    if email is not None and await session.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"a user with email {email!r} exists", field="email")
    if not await ensure_user(session, user_id, name, email):
        raise Conflict(f"user {user_id!r} exists", id=user_id)
    project_id = personal_project_id(user_id)
    await ensure_project(session, project_id, f"{name or email or user_id}'s project")
    await set_role(session, "project", project_id, user_id, "owner")
    user, project = await session.get(User, user_id), await session.get(Project, project_id)
    assert user is not None and project is not None
    return user, project


async def create_org(session: AsyncSession, org_id: str | None, name: str, owner: str) -> Org:
    org_id = checked_id(org_id, "id")
    if not await insert_if_absent(
        session, Org, {"id": org_id, "name": name, "created_at": utcnow()}
    ):
        raise Conflict(f"org {org_id!r} exists", id=org_id)
    await set_role(session, "org", org_id, owner, "owner")
    org = await session.get(Org, org_id)
    assert org is not None
    return org


async def create_project(
    session: AsyncSession, project_id: str | None, name: str, owner: str, org_id: str | None
) -> Project:
    project_id = checked_id(project_id, "id")
    if org_id is not None and await role_in(session, "org", org_id, owner) not in (
        "owner",
        "admin",
    ):
        raise NotFound("org", org_id)
    if not await ensure_project(session, project_id, name, org_id):
        raise Conflict(f"project {project_id!r} exists", id=project_id)
    await set_role(session, "project", project_id, owner, "owner")
    project = await session.get(Project, project_id)
    assert project is not None
    return project


async def set_role(
    session: AsyncSession, scope: str, scope_id: str, user_id: str, role: str
) -> Membership:
    """Give a user a role in an org or project (changing the role they had)."""
    if role not in ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(ROLES)}")
    if await session.get(User, user_id) is None:
        raise NotFound("user", user_id)
    membership = await session.get(Membership, (scope, scope_id, user_id))
    if membership is None:
        membership = Membership(
            scope=scope, scope_id=scope_id, user_id=user_id, role=role, created_at=utcnow()
        )
        session.add(membership)
    else:
        membership.role = role
    await session.flush()
    return membership


async def role_in(session: AsyncSession, scope: str, scope_id: str, user_id: str) -> str | None:
    membership = await session.get(Membership, (scope, scope_id, user_id))
    return None if membership is None else membership.role


async def project_role(session: AsyncSession, project_id: str, user_id: str) -> str | None:
    """The user's role in a project: their own membership, else their role in its org."""
    role = await role_in(session, "project", project_id, user_id)
    if role is not None:
        return role
    project = await session.get(Project, project_id)
    if project is None or project.org_id is None:
        return None
    return await role_in(session, "org", project.org_id, user_id)
