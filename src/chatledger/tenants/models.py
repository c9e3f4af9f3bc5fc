"""Tenancy tables: orgs, the projects every row belongs to, the users acting in them,
their roles, and their API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import Id, UtcTimeStamp, utcnow


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    org_id: Mapped[str | None] = mapped_column(Id, ForeignKey("orgs.id"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)


class Membership(Base):
    """A user's role in an org or a project: owner | admin | member | viewer."""

    __tablename__ = "memberships"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)  # org | project
    scope_id: Mapped[str] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)


class ApiKey(Base):
    """An API key, stored as a hash only: the secret is shown once, when created."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    project_id: Mapped[str] = mapped_column(Id, ForeignKey("projects.id"))
    # The user a user key acts as; for a service key, the user who created it.
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(8))  # user | service
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcTimeStamp)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcTimeStamp)
