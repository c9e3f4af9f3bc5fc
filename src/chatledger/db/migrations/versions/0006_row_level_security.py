"""Row-level security: the tenant wall under the query layer (PostgreSQL only).

A transaction opened for a caller runs as the role `chatledger_caller` with the caller in
four transaction-local settings (db/walls.py): `chatledger.project_id`,
`chatledger.user_id`, `chatledger.sees_all` (on for owners, admins and service keys) and
`chatledger.key_kind`. The policies below are the tenancy rules of DESIGN.md again, in
the database:

    runs, tasks, traces, usage_daily   the caller's project; members only their own rows
    messages, trace_entries            those of runs (traces) the caller may see
    prompts, prompt_versions,          the caller's project; the built-ins (project
      prompt_labels                      "system") readable by every caller, never written
    price_overrides                    the caller's project
    api_keys                           the caller's own keys; a project's all to managers
    variables                          user scope: the user (a service key: its project's
                                         end users); project scope: the project; org
                                         scope: the org of the caller's project

With nothing set, every comparison is with NULL (or '' once the session has set it
before): a query missing its scope sees no row at all.

Not walled: projects, users, orgs and memberships, the tenancy directory. The key lookup
reads them before there is a caller, and the tenancy routes cross projects by design
(creating a project, adding a member, a key for another project one belongs to); their
rules stay in tenants/service.py.

chatledger's own work (migrations, the sweeper, admin routes, verify) binds no caller and
runs as the connecting user, the tables' owner, which their policies do not apply to (no
FORCE ROW LEVEL SECURITY). The role is shared by every database of the server and kept on
downgrade. Creating it needs CREATEROLE; where the connecting user may not, a superuser
runs once: `CREATE ROLE chatledger_caller NOLOGIN; GRANT chatledger_caller TO <user>;`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

from chatledger.db import caller_roles

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "chatledger_caller"
SYSTEM_PROJECT = "system"  # the built-in prompts' project (migration 0004)

PROJECT = "current_setting('chatledger.project_id', true)"
USER = "current_setting('chatledger.user_id', true)"
SEES_ALL = "current_setting('chatledger.sees_all', true) = 'on'"
KEY_KIND = "current_setting('chatledger.key_kind', true)"

IN_PROJECT = f"project_id = {PROJECT}"
OWN_ROWS = f"{IN_PROJECT} AND ({SEES_ALL} OR user_id = {USER})"


def _through(parent: str, child: str, parent_key: str) -> str:
    """Rows of a child table visible when their parent row is the caller's."""
    return (
        f"{IN_PROJECT} AND ({SEES_ALL} OR EXISTS (SELECT 1 FROM {parent}"
        f" WHERE {parent}.project_id = {child}.project_id"
        f" AND {parent}.id = {child}.{parent_key} AND {parent}.user_id = {USER}))"
    )


VARIABLES = (
    "(scope = 'user' AND CASE "
    # A service key's end users are stored as "<project>/<user>" (variables/service.py).
    f" WHEN {KEY_KIND} = 'service' THEN starts_with(scope_id, {PROJECT} || '/')"
    # The local operator (no-auth server, embedded Ledger) is every user there is.
    f" WHEN {KEY_KIND} = 'local' THEN true"
    f" ELSE scope_id = {USER} END)"
    f" OR (scope = 'project' AND scope_id = {PROJECT})"
    f" OR (scope = 'org' AND scope_id = (SELECT org_id FROM projects WHERE id = {PROJECT}))"
)

POLICIES: dict[str, str] = {
    "runs": OWN_ROWS,
    "tasks": OWN_ROWS,
    "traces": OWN_ROWS,
    "usage_daily": OWN_ROWS,
    "messages": _through("runs", "messages", "run_id"),
    "trace_entries": _through("traces", "trace_entries", "trace_id"),
    "prompts": IN_PROJECT,
    "prompt_versions": IN_PROJECT,
    "prompt_labels": IN_PROJECT,
    "price_overrides": IN_PROJECT,
    "api_keys": f"user_id = {USER} OR ({IN_PROJECT} AND {SEES_ALL})",
    "variables": VARIABLES,
}
BUILTIN_TABLES = ("prompts", "prompt_versions", "prompt_labels")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no roles: the query layer is its only wall
    op.execute(caller_roles.create(ROLE))
    op.execute(caller_roles.grant(ROLE))
    for table, rule in POLICIES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_wall ON {table} TO {ROLE} USING ({rule})")
    for table in BUILTIN_TABLES:
        # Permissive policies add up: reading may also see the built-ins; writing may not.
        op.execute(
            f"CREATE POLICY builtins_readable ON {table} FOR SELECT TO {ROLE}"
            f" USING (project_id = '{SYSTEM_PROJECT}')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in BUILTIN_TABLES:
        op.execute(f"DROP POLICY IF EXISTS builtins_readable ON {table}")
    for table in POLICIES:
        op.execute(f"DROP POLICY IF EXISTS tenant_wall ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(caller_roles.revoke(ROLE))
