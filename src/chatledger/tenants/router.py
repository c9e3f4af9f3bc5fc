"""HTTP routes for tenancy: who the caller is, users (admin key), orgs, projects,
members and API keys."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from chatledger.errors import NotFound
from chatledger.server.deps import AdminDep, CallerDep, DatabaseDep
from chatledger.tenants import keys
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.tenants.models import Project
from chatledger.tenants.schemas import (
    KeyCreate,
    KeyCreated,
    KeyRead,
    Me,
    MemberAdd,
    MemberRead,
    OrgCreate,
    OrgRead,
    ProjectCreate,
    ProjectRead,
    UserCreate,
    UserCreated,
    UserRead,
)

router = APIRouter(tags=["tenancy"])


def _created_key(new: keys.NewKey) -> KeyCreated:
    return KeyCreated(**KeyRead.model_validate(new.key).model_dump(), secret=new.secret)


def _human(caller: Caller) -> str:
    """Tenancy is changed by people (user keys), not by apps' service keys."""
    if caller.key_kind == "service":
        raise HTTPException(403, "service keys cannot manage orgs, projects or keys")
    return caller.user_id


@router.get("/v1/me", response_model=Me)
async def me(db: DatabaseDep, caller: CallerDep) -> Me:
    async with db.reading() as session:
        project = await session.get(Project, caller.project_id)
    return Me(
        user_id=caller.user_id,
        project_id=caller.project_id,
        org_id=project.org_id if project else None,
        role=caller.role,
        key_kind=caller.key_kind,
        key_id=caller.key_id,
    )


@router.post(
    "/v1/admin/users", status_code=201, response_model=UserCreated, dependencies=[AdminDep]
)
async def create_user(body: UserCreate, db: DatabaseDep) -> UserCreated:
    """A user with a personal project they own, and a user key for it (shown once)."""
    async with db.transaction() as session:
        user, project = await tenants.create_user(session, body.id, body.email, body.name)
        key = await keys.create(session, project.id, user.id, "user", "created with the user")
        return UserCreated(
            user=UserRead.model_validate(user),
            project=ProjectRead.model_validate(project),
            api_key=_created_key(key),
        )


@router.post("/v1/orgs", status_code=201, response_model=OrgRead)
async def create_org(body: OrgCreate, db: DatabaseDep, caller: CallerDep) -> OrgRead:
    async with db.transaction() as session:
        org = await tenants.create_org(session, body.id, body.name, _human(caller))
        return OrgRead.model_validate(org)


@router.post("/v1/orgs/{org_id}/members", status_code=201, response_model=MemberRead)
async def add_org_member(
    org_id: str, body: MemberAdd, db: DatabaseDep, caller: CallerDep
) -> MemberRead:
    async with db.transaction() as session:
        if await tenants.role_in(session, "org", org_id, _human(caller)) not in ("owner", "admin"):
            raise NotFound("org", org_id)
        membership = await tenants.set_role(session, "org", org_id, body.user_id, body.role)
        return MemberRead.model_validate(membership)


@router.post("/v1/projects", status_code=201, response_model=ProjectRead)
async def create_project(body: ProjectCreate, db: DatabaseDep, caller: CallerDep) -> ProjectRead:
    """A new project owned by the caller (in one of the caller's orgs, if given)."""
    async with db.transaction() as session:
        project = await tenants.create_project(
            session, body.id, body.name, _human(caller), body.org_id
        )
        return ProjectRead.model_validate(project)


@router.post("/v1/projects/{project_id}/members", status_code=201, response_model=MemberRead)
async def add_project_member(
    project_id: str, body: MemberAdd, db: DatabaseDep, caller: CallerDep
) -> MemberRead:
    async with db.transaction() as session:
        role = await tenants.project_role(session, project_id, _human(caller))
        if role not in ("owner", "admin"):
            raise NotFound("project", project_id)
        membership = await tenants.set_role(session, "project", project_id, body.user_id, body.role)
        return MemberRead.model_validate(membership)


@router.post("/v1/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, db: DatabaseDep, caller: CallerDep) -> KeyCreated:
    """A user key for a project the caller belongs to, or (owners and admins) a service
    key acting for the whole project. The secret is in this response only."""
    user_id = _human(caller)
    project_id = body.project_id or caller.project_id
    async with db.transaction() as session:
        role = await tenants.project_role(session, project_id, user_id)
        if role is None:
            raise NotFound("project", project_id)
        if body.kind == "service" and role not in ("owner", "admin"):
            raise HTTPException(403, "only owners and admins create service keys")
        return _created_key(await keys.create(session, project_id, user_id, body.kind, body.name))


@router.get("/v1/keys", response_model=list[KeyRead])
async def list_keys(db: DatabaseDep, caller: CallerDep) -> list[KeyRead]:
    """The project's keys: all of them for owners and admins, else the caller's own."""
    async with db.reading() as session:
        found = await keys.list_keys(
            session, caller.project_id, None if caller.manages_project else caller.user_id
        )
        return [KeyRead.model_validate(key) for key in found]


@router.delete("/v1/keys/{key_id}", response_model=KeyRead)
async def revoke_key(key_id: str, db: DatabaseDep, caller: CallerDep) -> KeyRead:
    """Revoke a key at once (one's own; owners and admins any of the project's)."""
    _human(caller)
    async with db.transaction() as session:
        key = await keys.revoke(
            session, caller.project_id, key_id, None if caller.manages_project else caller.user_id
        )
        return KeyRead.model_validate(key)
