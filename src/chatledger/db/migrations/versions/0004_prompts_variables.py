"""Prompts (versions, labels), scoped variables, and the built-in prompts.

The built-ins are seeded here, in the system project, as they were when this migration
was written: a later change to a built-in is a new version added by a new migration, so
a run that recorded a built-in version keeps pointing at the text it used.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types as they were when this migration was written (see env.py on why not imported).
JSON_ = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
ID = sa.String(128)

SYSTEM_PROJECT = "system"
SYSTEM_PROJECT_NAME = "chatledger built-ins"
SEEDED_AT = datetime(2026, 11, 22, tzinfo=UTC)
BUILTINS: list[dict[str, Any]] = [
    {
        "name": "assistant",
        "description": "A general assistant that knows today's date.",
        "messages": [
            {
                "role": "system",
                "content": (
                    "You are a helpful assistant. Answer in a {{tone}} way. When a request "
                    "is ambiguous, ask one short clarifying question instead of guessing. "
                    "Today is {{weekday}}, {{current_date}}."
                ),
            }
        ],
        "variables": [
            {
                "name": "tone",
                "default": "clear, friendly and concise",
                "description": "How the answers should sound.",
            }
        ],
    },
    {
        "name": "summarize",
        "description": "Summarizes the text the user sends.",
        "messages": [
            {
                "role": "system",
                "content": (
                    "Summarize the text the user sends in {{length}}. Keep the facts, "
                    "names, numbers and decisions; leave out repetition and filler. "
                    "Answer with the summary only."
                ),
            }
        ],
        "variables": [
            {
                "name": "length",
                "default": "three sentences",
                "description": "How long the summary should be.",
            }
        ],
    },
    {
        "name": "translate",
        "description": "Translates the text the user sends into another language.",
        "messages": [
            {
                "role": "system",
                "content": (
                    "Translate the text the user sends into {{language}}. Keep its "
                    "meaning, tone and formatting (lists, code, line breaks). Answer with "
                    "the translation only, without notes."
                ),
            }
        ],
        "variables": [
            {"name": "language", "description": "The language to translate into, e.g. French."}
        ],
    },
]


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_prompts_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_prompts"),
        sa.UniqueConstraint("project_id", "name", name="uq_prompts_project_id_name"),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("prompt_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("messages", JSON_, nullable=False),
        sa.Column("variables", JSON_, nullable=False),
        sa.Column("settings", JSON_, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id", "prompt_id"],
            ["prompts.project_id", "prompts.id"],
            name="fk_prompt_versions_project_id_prompt_id_prompts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_prompt_versions"),
        sa.UniqueConstraint(
            "project_id",
            "prompt_id",
            "version",
            name="uq_prompt_versions_project_id_prompt_id_version",
        ),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("project_id", ID, nullable=False),
        sa.Column("prompt_id", ID, nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("version_id", ID, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "prompt_id"],
            ["prompts.project_id", "prompts.id"],
            name="fk_prompt_labels_project_id_prompt_id_prompts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id", "version_id"],
            ["prompt_versions.project_id", "prompt_versions.id"],
            name="fk_prompt_labels_project_id_version_id_prompt_versions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "prompt_id", "label", name="pk_prompt_labels"),
    )
    op.create_table(
        "variables",
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("scope_id", sa.String(257), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("scope", "scope_id", "key", name="pk_variables"),
    )
    _seed_builtins()


def _seed_builtins() -> None:
    projects = sa.table(
        "projects",
        sa.column("id", ID),
        sa.column("name", sa.String(200)),
        sa.column("created_at", TS),
    )
    exists = op.get_bind().scalar(sa.select(projects.c.id).where(projects.c.id == SYSTEM_PROJECT))
    if exists is None:
        op.bulk_insert(
            projects,
            [{"id": SYSTEM_PROJECT, "name": SYSTEM_PROJECT_NAME, "created_at": SEEDED_AT}],
        )
    prompts, versions, labels = (
        sa.table(name, *(sa.column(c, t) for c, t in columns))
        for name, columns in (
            ("prompts", _PROMPT_COLUMNS),
            ("prompt_versions", _VERSION_COLUMNS),
            ("prompt_labels", _LABEL_COLUMNS),
        )
    )
    base = {"project_id": SYSTEM_PROJECT}
    op.bulk_insert(
        prompts,
        [
            {
                **base,
                "id": f"builtin-{b['name']}",
                "name": b["name"],
                "description": b["description"],
                "created_at": SEEDED_AT,
                "updated_at": SEEDED_AT,
            }
            for b in BUILTINS
        ],
    )
    op.bulk_insert(
        versions,
        [
            {
                **base,
                "id": f"builtin-{b['name']}-1",
                "prompt_id": f"builtin-{b['name']}",
                "version": 1,
                "messages": b["messages"],
                "variables": b["variables"],
                "settings": {},
                "created_at": SEEDED_AT,
                "created_by": "chatledger",
            }
            for b in BUILTINS
        ],
    )
    op.bulk_insert(
        labels,
        [
            {
                **base,
                "prompt_id": f"builtin-{b['name']}",
                "label": label,
                "version_id": f"builtin-{b['name']}-1",
                "updated_at": SEEDED_AT,
            }
            for b in BUILTINS
            for label in ("production", "latest")
        ],
    )


_PROMPT_COLUMNS = (
    ("project_id", ID),
    ("id", ID),
    ("name", sa.String(128)),
    ("description", sa.Text()),
    ("created_at", TS),
    ("updated_at", TS),
)
_VERSION_COLUMNS = (
    ("project_id", ID),
    ("id", ID),
    ("prompt_id", ID),
    ("version", sa.Integer()),
    ("messages", JSON_),
    ("variables", JSON_),
    ("settings", JSON_),
    ("created_at", TS),
    ("created_by", ID),
)
_LABEL_COLUMNS = (
    ("project_id", ID),
    ("prompt_id", ID),
    ("label", sa.String(64)),
    ("version_id", ID),
    ("updated_at", TS),
)


def downgrade() -> None:
    op.drop_table("variables")
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
    op.drop_table("prompts")
    # Only the project this migration made (not one that had the name before it).
    op.execute(
        sa.text("DELETE FROM projects WHERE id = :id AND name = :name").bindparams(
            id=SYSTEM_PROJECT, name=SYSTEM_PROJECT_NAME
        )
    )
