"""Per-project price overrides, and cache-write tokens on tasks.

An override prices the models matching `model_pattern` (a glob) of one provider, or of
any when `provider` is null, from `effective_from` on. Prices are integer nano-USD per
million tokens, like every amount of money here, so a cost is exact on both databases.
A null cache rate means "the input rate".

Cache writes are the part of `input_tokens` written into the provider's prompt cache
(Anthropic prices them above the input rate); like cache reads they are a subset of the
input, never added on top.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types as they were when this migration was written (see env.py on why not imported).
TS = sa.DateTime(timezone=True)
ID = sa.String(128)


def upgrade() -> None:
    op.create_table(
        "price_overrides",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("model_pattern", sa.String(200), nullable=False),
        sa.Column("effective_from", TS, nullable=False),
        sa.Column("input_per_mtok_nano", sa.BigInteger(), nullable=False),
        sa.Column("output_per_mtok_nano", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_per_mtok_nano", sa.BigInteger(), nullable=True),
        sa.Column("cache_write_per_mtok_nano", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_price_overrides_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_price_overrides"),
    )
    op.create_index(
        "ix_price_overrides_project_id_effective_from",
        "price_overrides",
        ["project_id", "effective_from"],
    )
    with op.batch_alter_table("tasks") as tasks:
        tasks.add_column(
            sa.Column("cache_write_tokens", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as tasks:
        tasks.drop_column("cache_write_tokens")
    op.drop_index("ix_price_overrides_project_id_effective_from", table_name="price_overrides")
    op.drop_table("price_overrides")
