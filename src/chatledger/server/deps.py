"""What routes depend on: the app's collaborators, and the caller behind a request.

A route owns its transaction (`async with db.transaction()`), so that a write is
committed before its response is sent: an acknowledged write is a stored write.

The caller dependency also puts the request behind both walls around the data: each
request spends one token of its key's rate limit (server/ratelimit.py), and every
transaction the request opens, or the reply it starts, runs as that caller under the
database's row-level security on PostgreSQL (db/walls.py). Keys are looked up on every
request, never cached, so a revoked key stops at once on every replica.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from chatledger.config import Settings
from chatledger.db import walls
from chatledger.db.engine import Database
from chatledger.engine.chat import ChatEngine
from chatledger.server.ratelimit import RateLimiter
from chatledger.tenants import keys
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller


@dataclass
class AppState:
    settings: Settings
    database: Database
    engine: ChatEngine
    # `chatledger serve --no-auth`: every request is the local user (loopback only).
    no_auth: bool = False
    rate_limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limiter = RateLimiter(
            self.settings.rate_limit_per_minute, self.settings.rate_limit_burst
        )


# Dependencies are `async def` even when they never await: FastAPI runs a plain `def`
# dependency in its thread pool, two thread hand-offs per request for an attribute read.
async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.chatledger
    return state


StateDep = Annotated[AppState, Depends(app_state)]


async def database(state: StateDep) -> Database:
    return state.database


DatabaseDep = Annotated[Database, Depends(database)]


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            "an API key is required: Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def current_caller(
    state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> AsyncIterator[Caller]:
    """The caller; the request's transactions are theirs until the response is sent."""
    caller = await _authenticated(state, authorization)
    with walls.acting_as(caller):
        yield caller


async def _authenticated(state: AppState, authorization: str | None) -> Caller:
    if state.no_auth:
        return Caller(state.settings.local_project, state.settings.local_user, sees_all=True)
    secret = _bearer(authorization)
    key, role = None, None
    async with state.database.looking_up() as session:
        if found := await keys.authenticate(session, secret):
            key, role = found
            if key.kind == "service":
                role = "admin"
            elif role is None:  # no role in the project itself: perhaps one in its org
                role = await tenants.project_role(session, key.project_id, key.user_id)
    if key is None or role is None:
        raise HTTPException(401, "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
    state.rate_limiter.take(key.id)  # before the write below: a throttled request costs none
    if keys.needs_touch(key):
        async with state.database.transaction() as session:
            await keys.touch(session, key.id)
    return Caller(
        project_id=key.project_id,
        user_id=key.user_id,
        sees_all=key.kind == "service" or role in ("owner", "admin"),
        role=role,
        key_kind=key.kind,
        key_id=key.id,
    )


CallerDep = Annotated[Caller, Depends(current_caller)]


async def writer(caller: CallerDep) -> Caller:
    if not caller.can_write:
        raise HTTPException(403, "viewers cannot write")
    return caller


WriterDep = Annotated[Caller, Depends(writer)]


def acting_for(caller: Caller, user_id: str | None) -> Caller:
    """The caller, or for a service key the app's end user named in the request."""
    if user_id is None or user_id == caller.user_id:
        return caller
    if caller.key_kind not in ("service", "local"):
        raise HTTPException(403, "only service keys may act for another user")
    return caller.for_user(user_id)


# The admin key has a bucket of its own, never a user key's (key ids are UUIDs).
ADMIN_BUCKET = "admin"


async def admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    expected = state.settings.admin_key
    if state.no_auth:
        return
    if not expected:
        raise HTTPException(403, "admin routes are off: set CHATLEDGER_ADMIN_KEY")
    if not hmac.compare_digest(_bearer(authorization), expected):
        raise HTTPException(401, "the admin key is required", {"WWW-Authenticate": "Bearer"})
    state.rate_limiter.take(ADMIN_BUCKET)


AdminDep = Depends(admin)
