"""Tenancy rules that the ledger core needs: the project and user rows exist before
anything is written for them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.types import utcnow
from chatledger.db.upsert import insert_if_absent
from chatledger.tenants.models import Project, User


async def ensure_project(session: AsyncSession, project_id: str, name: str | None = None) -> None:
    values = {"id": project_id, "name": name or project_id, "created_at": utcnow()}
    await insert_if_absent(session, Project, values)


async def ensure_user(session: AsyncSession, user_id: str, name: str | None = None) -> None:
    values = {"id": user_id, "name": name, "email": None, "created_at": utcnow()}
    await insert_if_absent(session, User, values)
