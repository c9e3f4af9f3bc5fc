"""Tenancy over the API: users, orgs, projects, members, keys and the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatledger.ids import ID_PATTERN

Id = Annotated[str, Field(pattern=ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Role = Literal["owner", "admin", "member", "viewer"]


class UserCreate(BaseModel):
    id: Id | None = None
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    name: Name | None = None


class OrgCreate(BaseModel):
    id: Id | None = None
    name: Name


class ProjectCreate(BaseModel):
    id: Id | None = None
    name: Name
    org_id: Id | None = None


class MemberAdd(BaseModel):
    user_id: Id
    role: Role = "member"


class KeyCreate(BaseModel):
    kind: Literal["user", "service"] = "user"
    name: Name | None = None
    # Default: the caller's project. Keys for another project need a role there.
    project_id: Id | None = None


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    email: str | None
    name: str | None
    created_at: datetime


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    org_id: str | None
    created_at: datetime


class OrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    created_at: datetime


class MemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    scope: str
    scope_id: str
    user_id: str
    role: str


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str
    user_id: str
    kind: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    secret: str = Field(description="The key itself. Shown once: store it now.")


class UserCreated(BaseModel):
    user: UserRead
    project: ProjectRead
    api_key: KeyCreated


class Me(BaseModel):
    user_id: str
    project_id: str
    org_id: str | None
    role: str
    key_kind: str
    key_id: str | None
