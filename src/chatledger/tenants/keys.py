"""API keys: made once, shown once, stored as a SHA-256 hash with a short prefix for
people to recognise them by. Keys are 192 random bits, so a fast hash is enough: there is
nothing to brute-force that a slow hash would protect."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.prepared import Prepared
from chatledger.db.types import utcnow
from chatledger.errors import InvalidInput, NotFound
from chatledger.ids import new_id
from chatledger.tenants.models import ApiKey, Membership

KINDS = ("user", "service")
PREFIX_LENGTH = 12
# last_used_at is a hint for people, not an audit log: refresh it at most this often so
# that authenticating a request does not cost a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # shown once; only its hash is stored


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """What a request needs of the live key it presented."""

    id: str
    project_id: str
    user_id: str
    kind: str
    last_used_at: datetime | None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create(
    session: AsyncSession, project_id: str, user_id: str, kind: str, name: str | None = None
) -> NewKey:
    if kind not in KINDS:
        raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
    secret = f"cl_{kind[0]}_{secrets.token_urlsafe(24)}"
    key = ApiKey(
        id=new_id(),
        project_id=project_id,
        user_id=user_id,
        kind=kind,
        name=name,
        prefix=secret[:PREFIX_LENGTH],
        secret_hash=hash_secret(secret),
        created_at=utcnow(),
    )
    session.add(key)
    await session.flush()
    return NewKey(key, secret)


# Asked on every request: built once.
_own_role = (
    select(Membership.role)
    .where(
        Membership.scope == "project",
        Membership.scope_id == ApiKey.project_id,
        Membership.user_id == ApiKey.user_id,
    )
    .scalar_subquery()
)
# Columns, not the ApiKey entity: loading an ORM object (and keeping it in the session)
# cost a sixth of the lookup.
_KEY_AND_ROLE = Prepared(
    select(
        ApiKey.id,
        ApiKey.project_id,
        ApiKey.user_id,
        ApiKey.kind,
        ApiKey.last_used_at,
        ApiKey.revoked_at,
        _own_role.label("role"),
    ).where(ApiKey.secret_hash == bindparam("secret_hash"))
)


async def authenticate(
    session: AsyncSession, secret: str
) -> tuple[PresentedKey, str | None] | None:
    """The live key with this secret and its user's own role in the key's project (None:
    no membership of the project itself; an org's role is looked up apart), in one read:
    every request asks both."""
    found = await _KEY_AND_ROLE.execute(session, {"secret_hash": hash_secret(secret)})
    row = found.one_or_none()
    if row is None:
        return None
    key_id, project_id, user_id, kind, last_used_at, revoked_at, role = row
    if revoked_at is not None:
        return None
    return PresentedKey(key_id, project_id, user_id, kind, last_used_at), role


def needs_touch(key: PresentedKey) -> bool:
    return key.last_used_at is None or utcnow() - key.last_used_at >= LAST_USED_RESOLUTION


async def touch(session: AsyncSession, key_id: str) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


async def list_keys(session: AsyncSession, project_id: str, user_id: str | None) -> list[ApiKey]:
    """A project's keys; only the user's own unless `user_id` is None (managers)."""
    stmt = select(ApiKey).where(ApiKey.project_id == project_id)
    if user_id is not None:
        stmt = stmt.where(ApiKey.user_id == user_id)
    return list(await session.scalars(stmt.order_by(ApiKey.created_at, ApiKey.id)))


async def revoke(
    session: AsyncSession, project_id: str, key_id: str, user_id: str | None
) -> ApiKey:
    """Revoke a key of the project (only one's own unless `user_id` is None). Revoking
    twice is fine; the first revocation time is kept."""
    key = await session.get(ApiKey, key_id)
    if key is None or key.project_id != project_id or (user_id and key.user_id != user_id):
        raise NotFound("key", key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key
