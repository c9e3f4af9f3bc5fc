"""A project's daily usage read from its index alone.

The owner's usage over 90 days sums every user's rows of those days (18,000 rows for
100 users and two models): through `(project_id, day, model)` each row cost a lookup in
the table, 16 ms on SQLite. With the user and the sums in the index too, the read never
leaves it (7 ms); every usage upsert writes a few more bytes of index (~2 µs on SQLite),
once per reply.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["project_id", "day", "model"]
# user_id too: the usage of each user (not grouped by model) is read from it as well.
COVERING = [*KEY, "user_id"]
SUMS = [
    "requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nano",
]


def upgrade() -> None:
    op.drop_index("ix_usage_daily_project_id_day_model", table_name="usage_daily")
    op.create_index("ix_usage_daily_project_day_sums", "usage_daily", [*COVERING, *SUMS])


def downgrade() -> None:
    op.drop_index("ix_usage_daily_project_day_sums", table_name="usage_daily")
    op.create_index("ix_usage_daily_project_id_day_model", "usage_daily", KEY)
