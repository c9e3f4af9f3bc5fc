"""A second caller role for callers who see their whole project (PostgreSQL only).

Owners, admins and service keys (`sees_all`) now run as `chatledger_project_caller`,
members and viewers still as `chatledger_caller` (db/walls.py picks the role). The
project role's policies say only "the caller's project": what migration 0006's rules
become when `chatledger.sees_all` is on, without asking it of every row.

Why: under 0006's rule `project_id = … AND (sees_all = 'on' OR user_id = …)` the planner
cannot know that the OR holds for every row of an owner's query. It guesses ~1.5%, plans
an owner's 90 days of usage (18,000 rows) for 90, and sorts them where it would hash: 16
ms against 9 ms for the same query under a project-only policy (which the planner folds
into a one-time check against the query's own `project_id = …`). The member role's rules
stay as they are.

Tables whose 0006 rule never looks at `sees_all` (prompts, their versions and labels,
price overrides, variables) keep their one policy, now applying to both roles; so do
the built-in prompts' readable policy.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

from chatledger.db import caller_roles

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MEMBER_ROLE = "chatledger_caller"
ROLE = "chatledger_project_caller"

PROJECT = "current_setting('chatledger.project_id', true)"
USER = "current_setting('chatledger.user_id', true)"
IN_PROJECT = f"project_id = {PROJECT}"

# 0006's rules with sees_all on.
POLICIES: dict[str, str] = {
    "runs": IN_PROJECT,
    "tasks": IN_PROJECT,
    "traces": IN_PROJECT,
    "usage_daily": IN_PROJECT,
    "messages": IN_PROJECT,
    "trace_entries": IN_PROJECT,
    "api_keys": f"user_id = {USER} OR {IN_PROJECT}",
}
# 0006's policies that do not depend on sees_all: shared by both roles.
SHARED = {
    "tenant_wall": ("prompts", "prompt_versions", "prompt_labels", "price_overrides", "variables"),
    "builtins_readable": ("prompts", "prompt_versions", "prompt_labels"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no roles: the query layer is its only wall
    op.execute(caller_roles.create(ROLE))
    op.execute(caller_roles.grant(ROLE))
    for table, rule in POLICIES.items():
        op.execute(f"CREATE POLICY project_wall ON {table} TO {ROLE} USING ({rule})")
    for policy, tables in SHARED.items():
        for table in tables:
            op.execute(f"ALTER POLICY {policy} ON {table} TO {MEMBER_ROLE}, {ROLE}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for policy, tables in SHARED.items():
        for table in tables:
            op.execute(f"ALTER POLICY {policy} ON {table} TO {MEMBER_ROLE}")
    for table in POLICIES:
        op.execute(f"DROP POLICY IF EXISTS project_wall ON {table}")
    op.execute(caller_roles.revoke(ROLE))
