"""The rules for scoped variables: who may read and write which scope, and the stored
values a render looks up.

    user     the user themself; a service key for any end user of its project
    project  the caller's project: members read, owners and admins write
    org      the org of the caller's project: its members read, org owners/admins write

Anything else answers 404, as another tenant's row would: a caller cannot tell a scope
it may not touch from one that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.types import utcnow
from chatledger.db.upsert import insert_if_absent
from chatledger.errors import InvalidInput, NotFound
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.tenants.models import Project
from chatledger.variables.models import SCOPES, Variable

KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_KEY_RE = re.compile(KEY_PATTERN)
MAX_VALUE_LENGTH = 100_000
MANAGERS = ("owner", "admin")


def stored_scope_id(caller: Caller, scope: str, scope_id: str) -> str:
    """The row owner: a service key's end users are qualified by its project."""
    if scope == "user" and caller.key_kind == "service":
        return f"{caller.project_id}/{scope_id}"
    return scope_id


def public_scope_id(variable: Variable) -> str:
    """The owner as the API names it (an end user without its project)."""
    return variable.scope_id.rpartition("/")[2]


async def org_of(session: AsyncSession, caller: Caller) -> str | None:
    project = await session.get(Project, caller.project_id)
    return None if project is None else project.org_id


async def _allowed(
    session: AsyncSession, caller: Caller, scope: str, scope_id: str, *, write: bool
) -> str:
    """The stored owner id of a scope the caller may read (or write); else 404."""
    if scope not in SCOPES:
        raise InvalidInput("scope", f"must be one of {', '.join(SCOPES)}")
    allowed = False
    if scope == "user":
        # Service keys (and the local operator) act for the project's end users.
        allowed = scope_id == caller.user_id or caller.key_kind in ("service", "local")
    elif scope == "project":
        allowed = scope_id == caller.project_id and (not write or caller.manages_project)
    elif scope_id == await org_of(session, caller):
        allowed = not write or (
            await tenants.role_in(session, "org", scope_id, caller.user_id) in MANAGERS
        )
    if not allowed:
        raise NotFound(f"{scope} variables", scope_id)
    return stored_scope_id(caller, scope, scope_id)


def _checked_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise InvalidInput("key", "a name of letters, digits and _ (at most 64), not a digit first")
    return key


async def get(
    session: AsyncSession, caller: Caller, scope: str, scope_id: str, key: str
) -> Variable:
    owner = await _allowed(session, caller, scope, scope_id, write=False)
    variable = await session.get(Variable, (scope, owner, key))
    if variable is None:
        raise NotFound("variable", f"{scope}/{scope_id}/{key}")
    return variable


async def put(
    session: AsyncSession,
    caller: Caller,
    scope: str,
    scope_id: str,
    key: str,
    value: str,
    description: str | None = None,
    *,
    keep_description: bool = False,
) -> tuple[Variable, bool]:
    """Set a variable; True when this call created it. `keep_description`: the caller
    gave none, so an existing one stays."""
    owner = await _allowed(session, caller, scope, scope_id, write=True)
    _checked_key(key)
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidInput("value", f"at most {MAX_VALUE_LENGTH} characters")
    now = utcnow()
    created = await insert_if_absent(
        session,
        Variable,
        {
            "scope": scope,
            "scope_id": owner,
            "key": key,
            "value": value,
            "description": description,
            "created_at": now,
            "updated_at": now,
        },
    )
    if not created:
        changes: dict[str, object] = {"value": value, "updated_at": now}
        if not keep_description:
            changes["description"] = description
        await session.execute(
            update(Variable)
            .where(Variable.scope == scope, Variable.scope_id == owner, Variable.key == key)
            .values(**changes)
        )
    variable = await session.get(Variable, (scope, owner, key), populate_existing=True)
    assert variable is not None
    return variable, created


async def remove(
    session: AsyncSession, caller: Caller, scope: str, scope_id: str, key: str
) -> None:
    variable = await get(session, caller, scope, scope_id, key)
    await _allowed(session, caller, scope, scope_id, write=True)
    await session.execute(
        delete(Variable).where(
            Variable.scope == variable.scope,
            Variable.scope_id == variable.scope_id,
            Variable.key == variable.key,
        )
    )
    session.expunge(variable)


async def _owners(session: AsyncSession, caller: Caller) -> dict[str, str]:
    """The scope ids whose values apply to the caller: scope → stored owner id."""
    owners = {
        "user": stored_scope_id(caller, "user", caller.user_id),
        "project": caller.project_id,
    }
    org_id = await org_of(session, caller)
    if org_id is not None:
        owners["org"] = org_id
    return owners


async def list_variables(
    session: AsyncSession, caller: Caller, scope: str | None = None, scope_id: str | None = None
) -> list[Variable]:
    """The variables that apply to the caller (their user, project and org), or those of
    one scope id the caller may read."""
    if scope_id is not None:
        if scope is None:
            raise InvalidInput("scope", "required with scope_id")
        owners = {scope: await _allowed(session, caller, scope, scope_id, write=False)}
    else:
        owners = await _owners(session, caller)
        if scope is not None:
            if scope not in SCOPES:
                raise InvalidInput("scope", f"must be one of {', '.join(SCOPES)}")
            owners = {s: owner for s, owner in owners.items() if s == scope}
    if not owners:
        return []
    where = or_(*(and_(Variable.scope == s, Variable.scope_id == o) for s, o in owners.items()))
    stmt = select(Variable).where(where).order_by(Variable.scope, Variable.key)
    return list(await session.scalars(stmt))


async def stored_values(
    session: AsyncSession, caller: Caller, keys: Iterable[str]
) -> dict[str, dict[str, str]]:
    """The caller's stored values of `keys`, by scope: {"project": {key: value}, …}."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    owners = await _owners(session, caller)
    where = or_(*(and_(Variable.scope == s, Variable.scope_id == o) for s, o in owners.items()))
    rows = await session.execute(
        select(Variable.scope, Variable.key, Variable.value).where(where, Variable.key.in_(wanted))
    )
    found: dict[str, dict[str, str]] = {}
    for scope, key, value in rows:
        found.setdefault(scope, {})[key] = value
    return found
