"""Indexes for the reads that scale with a project's size (measured on 100,000 runs and
1,000,000 tasks, see docs/benchmarks.md):

    tasks (project_id, user_message_id)      numbering a message's attempts on every
                                             turn scanned the project's tasks
    runs (project_id, updated_at, id)        the run list of owners, admins and service
                                             keys (members use the user_id index)
    usage_daily (project_id, day, model)     a project's daily usage over a date range

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_tasks_project_id_user_message_id", "tasks", ["project_id", "user_message_id"]),
    ("ix_runs_project_id_updated_at_id", "runs", ["project_id", "updated_at", "id"]),
    ("ix_usage_daily_project_id_day_model", "usage_daily", ["project_id", "day", "model"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
