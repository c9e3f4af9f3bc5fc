"""The prompt tables: `prompts` (a name in a project), `prompt_versions` (immutable
snapshots of the template) and `prompt_labels` (movable names for a version:
`production`, what is used by default, and `latest`, which moves by itself)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, ForeignKeyConstraint, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import JSON_, Id, UtcTimeStamp, utcnow


class Prompt(Base):
    __tablename__ = "prompts"
    # Prompts are found by name (the API addresses them so): one per name per project.
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    project_id: Mapped[str] = mapped_column(Id, ForeignKey("projects.id"), primary_key=True)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)


class PromptVersion(Base):
    """A version is never changed once written: a run records the version it used, and
    that must keep meaning the same text."""

    __tablename__ = "prompt_versions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "prompt_id"], ["prompts.project_id", "prompts.id"], ondelete="CASCADE"
        ),
        UniqueConstraint("project_id", "prompt_id", "version"),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    prompt_id: Mapped[str] = mapped_column(Id)
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, … per prompt
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON_)  # [{role, content}]
    variables: Mapped[list[dict[str, Any]]] = mapped_column(JSON_)  # [{name, default?, …}]
    settings: Mapped[dict[str, Any]] = mapped_column(JSON_, default=dict)  # model, …
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(Id)


class PromptLabel(Base):
    __tablename__ = "prompt_labels"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "prompt_id"], ["prompts.project_id", "prompts.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["project_id", "version_id"],
            ["prompt_versions.project_id", "prompt_versions.id"],
            ondelete="CASCADE",
        ),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    prompt_id: Mapped[str] = mapped_column(Id, primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(Id)
    updated_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
