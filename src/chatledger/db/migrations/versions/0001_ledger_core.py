"""The ledger core: projects, users, runs, messages, tasks, usage_daily.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types as they were when this migration was written (see env.py on why not imported).
JSON_ = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
ID = sa.String(128)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "runs",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_source", sa.String(8), nullable=False),
        sa.Column("prompt_id", ID, nullable=True),
        sa.Column("settings", JSON_, nullable=False),
        sa.Column("variable_values", JSON_, nullable=False),
        sa.Column("metadata", JSON_, nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_cost_nano", sa.BigInteger(), nullable=False),
        sa.Column("last_message_at", TS, nullable=True),
        sa.Column("last_message_preview", sa.Text(), nullable=True),
        sa.Column("last_model", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_runs_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_runs"),
    )
    op.create_index(
        "ix_runs_project_id_user_id_updated_at", "runs", ["project_id", "user_id", "updated_at"]
    )
    op.create_table(
        "messages",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", JSON_, nullable=True),
        sa.Column("task_id", ID, nullable=True),
        sa.Column("metadata", JSON_, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "run_id"],
            ["runs.project_id", "runs.id"],
            name="fk_messages_project_id_run_id_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_messages"),
    )
    op.create_index(
        "ix_messages_project_id_run_id_seq",
        "messages",
        ["project_id", "run_id", "seq"],
        unique=True,
    )
    op.create_table(
        "tasks",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("user_message_id", ID, nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(100), nullable=True),
        sa.Column("task_name", sa.String(100), nullable=True),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("request", JSON_, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("response_text", sa.Text(), nullable=False),
        sa.Column("error", JSON_, nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=False),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False),
        sa.Column("cost_nano", sa.BigInteger(), nullable=True),
        sa.Column("price_source", sa.String(64), nullable=True),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("total_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id", "run_id"],
            ["runs.project_id", "runs.id"],
            name="fk_tasks_project_id_run_id_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_tasks"),
    )
    op.create_index(
        "ix_tasks_project_id_run_id_created_at", "tasks", ["project_id", "run_id", "created_at"]
    )
    op.create_index("ix_tasks_status_heartbeat_at", "tasks", ["status", "heartbeat_at"])
    op.create_table(
        "usage_daily",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("failed_requests", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nano", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "user_id", "day", "model", name="pk_usage_daily"),
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
    op.drop_index("ix_tasks_status_heartbeat_at", table_name="tasks")
    op.drop_index("ix_tasks_project_id_run_id_created_at", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("ix_messages_project_id_run_id_seq", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_runs_project_id_user_id_updated_at", table_name="runs")
    op.drop_table("runs")
    op.drop_table("users")
    op.drop_table("projects")
