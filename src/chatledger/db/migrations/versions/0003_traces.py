"""Agent automation traces: traces (one per thread) and their entries, one row each.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types as they were when this migration was written (see env.py on why not imported).
JSON_ = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
ID = sa.String(128)


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("data", JSON_, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "thread_id"],
            ["runs.project_id", "runs.id"],
            name="fk_traces_project_id_thread_id_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_traces"),
    )
    op.create_index(
        "ix_traces_project_id_thread_id", "traces", ["project_id", "thread_id"], unique=True
    )
    op.create_index(
        "ix_traces_project_id_user_id_updated_at",
        "traces",
        ["project_id", "user_id", "updated_at"],
    )
    op.create_table(
        "trace_entries",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("trace_id", ID, nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("data", JSON_, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id", "trace_id"],
            ["traces.project_id", "traces.id"],
            name="fk_trace_entries_project_id_trace_id_traces",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "trace_id", "idx", name="pk_trace_entries"),
    )


def downgrade() -> None:
    op.drop_table("trace_entries")
    op.drop_index("ix_traces_project_id_user_id_updated_at", table_name="traces")
    op.drop_index("ix_traces_project_id_thread_id", table_name="traces")
    op.drop_table("traces")
