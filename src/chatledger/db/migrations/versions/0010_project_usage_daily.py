"""A project's daily usage by model, summed over its users, kept by the database.

`project_usage_daily` (project_id, day, model) holds the sums of `usage_daily`'s rows of
that project, day and model. Triggers on `usage_daily` write it in the same statement
as the row they sum, whichever code writes usage (a reply's end, a batch, a run's
deletion, `verify --repair`, a hand-written fix), so it cannot drift from those rows and
costs no statement of chatledger's own. A key's row exists exactly while `usage_daily`
has a row of it.

Why: an owner's usage by model over 90 days summed every user's rows, 18,000 of them for
100 users and two models: 9-15 ms on PostgreSQL for the query alone (a sequential scan
and a hash aggregate; 10 ms even for `count(*)`), the API's whole budget being 20 ms.
Here it reads 180 rows.

PostgreSQL: the trigger function runs as its owner (SECURITY DEFINER; the tables' owner,
whom the policies do not apply to), since a member's reply moves the project's totals
that the member may not read. Callers who see the whole project read the project's rows;
members' policy asks for "sees it all", which they never do: they see none.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "project_usage_daily"
ID = sa.String(128)
KEY = ("project_id", "day", "model")
SUMS = (
    "requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nano",
)
MEMBER_ROLE = "chatledger_caller"
PROJECT_ROLE = "chatledger_project_caller"
IN_PROJECT = "project_id = current_setting('chatledger.project_id', true)"
SEES_ALL = "current_setting('chatledger.sees_all', true) = 'on'"


def _key_of(row: str) -> str:
    """`project_id = OLD.project_id AND …`: the totals row of a usage row."""
    return " AND ".join(f"{name} = {row}.{name}" for name in KEY)


def _add(row: str) -> str:
    """Add a usage row's counters to its totals row, creating it at them."""
    columns = ", ".join((*KEY, *SUMS))
    values = ", ".join(f"{row}.{name}" for name in (*KEY, *SUMS))
    added = ", ".join(f"{name} = {TABLE}.{name} + excluded.{name}" for name in SUMS)
    return (
        f"INSERT INTO {TABLE} ({columns}) VALUES ({values})"
        f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}"
    )


def _change(old: str, new: str) -> str:
    """A usage row's counters changed in place: move its totals row by the difference."""
    moved = ", ".join(f"{name} = {name} + {new}.{name} - {old}.{name}" for name in SUMS)
    return f"UPDATE {TABLE} SET {moved} WHERE {_key_of(new)}"


def _take_away(row: str) -> str:
    """A usage row left its key: take its counters out, and the totals row with them
    once no usage row of that key is left."""
    subtracted = ", ".join(f"{name} = {name} - {row}.{name}" for name in SUMS)
    return (
        f"UPDATE {TABLE} SET {subtracted} WHERE {_key_of(row)};"
        f" DELETE FROM {TABLE} WHERE {_key_of(row)}"
        f" AND NOT EXISTS (SELECT 1 FROM usage_daily WHERE {_key_of(row)})"
    )


SAME_KEY = " AND ".join(f"NEW.{name} = OLD.{name}" for name in KEY)

SQLITE_TRIGGERS = {
    "project_usage_daily_insert": f"AFTER INSERT ON usage_daily BEGIN {_add('NEW')}; END",
    "project_usage_daily_update": (
        f"AFTER UPDATE ON usage_daily WHEN {SAME_KEY} BEGIN {_change('OLD', 'NEW')}; END"
    ),
    "project_usage_daily_rekey": (
        f"AFTER UPDATE ON usage_daily WHEN NOT ({SAME_KEY})"
        f" BEGIN {_take_away('OLD')}; {_add('NEW')}; END"
    ),
    "project_usage_daily_delete": f"AFTER DELETE ON usage_daily BEGIN {_take_away('OLD')}; END",
}

POSTGRES_FUNCTION = f"""
CREATE FUNCTION project_usage_daily_sum() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- Nested: OLD has no fields to compare on an INSERT.
    IF TG_OP = 'UPDATE' THEN
        IF {SAME_KEY} THEN
            {_change("OLD", "NEW")};
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        {_take_away("OLD")};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        {_add("NEW")};
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("project_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint(*KEY, name=f"pk_{TABLE}"),
    )
    sums = ", ".join(f"sum({name})" for name in SUMS)
    op.execute(
        f"INSERT INTO {TABLE} ({', '.join((*KEY, *SUMS))})"
        f" SELECT {', '.join(KEY)}, {sums} FROM usage_daily GROUP BY {', '.join(KEY)}"
    )
    if op.get_bind().dialect.name != "postgresql":
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    op.execute(POSTGRES_FUNCTION)
    op.execute(
        "CREATE TRIGGER project_usage_daily_sum AFTER INSERT OR UPDATE OR DELETE"
        " ON usage_daily FOR EACH ROW EXECUTE FUNCTION project_usage_daily_sum()"
    )
    op.execute(f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_wall ON {TABLE} TO {MEMBER_ROLE} USING ({IN_PROJECT} AND {SEES_ALL})"
    )
    op.execute(f"CREATE POLICY project_wall ON {TABLE} TO {PROJECT_ROLE} USING ({IN_PROJECT})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS project_usage_daily_sum ON usage_daily")
        op.execute("DROP FUNCTION IF EXISTS project_usage_daily_sum()")
    op.drop_table(TABLE)
