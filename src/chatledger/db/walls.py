"""The second tenant wall, under the query layer: on PostgreSQL a transaction opened for
a caller runs as one of two roles, whose row-level security policies let it see only
the caller's project: `chatledger_caller` for members and viewers, and in the project
only the caller's own rows (migration 0006); `chatledger_project_caller` for owners,
admins and service keys, who see the whole project (migration 0009: a policy that need
not ask of each row whether the caller sees it all, which the planner can estimate). A
query that forgets its `WHERE project_id = …` then still finds nothing of anyone else's.

Who the caller is travels with the code that serves them: `acting_as(caller)` binds it
for the current asyncio context (a request, a Ledger call), and asyncio tasks started
inside inherit it, so the reply a request launches writes under the same wall.
Transactions opened with no caller bound (migrations, the sweeper, admin routes, the
authentication lookup, `verify`) are chatledger's own work and run as the connecting
user, which owns the tables and so is not subject to their policies.

SQLite has no roles: there the query layer is the only wall.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Protocol

CALLER_ROLE = "chatledger_caller"
PROJECT_CALLER_ROLE = "chatledger_project_caller"
CALLER_ROLES = (CALLER_ROLE, PROJECT_CALLER_ROLE)


class Scope(Protocol):
    """What the policies need to know of a caller (`tenants.caller.Caller` has it)."""

    @property
    def project_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def sees_all(self) -> bool: ...
    @property
    def key_kind(self) -> str: ...


_bound: ContextVar[Scope | None] = ContextVar("chatledger_caller", default=None)

# The role and the caller, all local to the transaction (`true`), so they end with it and
# a pooled connection never carries them to the next. set_config('role', …) is SET LOCAL
# ROLE in a form that takes values. Sent with the BEGIN itself (`begin_statement`,
# `entering`).
_ENTER = (
    "SELECT set_config('role', {role}, true),"
    " set_config('chatledger.project_id', {project_id}, true),"
    " set_config('chatledger.user_id', {user_id}, true),"
    " set_config('chatledger.sees_all', {sees_all}, true),"
    " set_config('chatledger.key_kind', {key_kind}, true)"
)


@contextlib.contextmanager
def acting_as(scope: Scope) -> Iterator[None]:
    """Transactions opened inside this block (and tasks started in it) are the caller's."""
    token = _bound.set(scope)
    try:
        yield
    finally:
        _bound.reset(token)


@contextlib.contextmanager
def acting_as_chatledger() -> Iterator[None]:
    """Transactions opened inside this block (and tasks started in it) are chatledger's
    own work, whoever the surrounding context acts for."""
    token = _bound.set(None)
    try:
        yield
    finally:
        _bound.reset(token)


def bound() -> Scope | None:
    """The caller the current context acts for, if any."""
    return _bound.get()


def role_of(scope: Scope) -> str:
    return PROJECT_CALLER_ROLE if scope.sees_all else CALLER_ROLE


def begin_statement(quote: Callable[[str], str], scope: Scope | None) -> str:
    """What opens a PostgreSQL transaction for `scope` (None: chatledger's own) as one
    simple query: BEGIN, and with a caller the wall around them, in one round trip. A
    simple query cannot take parameters, so the values are spelled as literals by `quote`
    (the driver's quoting)."""
    if scope is None:
        return "BEGIN"
    values = _settings(scope)
    return "BEGIN; " + _ENTER.format_map({name: quote(v) for name, v in values.items()})


def entering(scope: Scope) -> tuple[str, dict[str, str]]:
    """The wall's settings for `scope` as a statement with parameters (psycopg's named
    placeholders), for a transaction opened in a pipeline (db/deferred_begin.py): the
    same statement for every caller, which the driver can prepare."""
    values = _settings(scope)
    return _ENTER.format_map({name: f"%({name})s" for name in values}), values


def _settings(scope: Scope) -> dict[str, str]:
    return {
        "role": role_of(scope),
        "project_id": scope.project_id,
        "user_id": scope.user_id,
        "sees_all": "on" if scope.sees_all else "off",
        "key_kind": scope.key_kind,
    }
