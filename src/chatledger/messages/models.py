"""The `messages` table: one row per turn of text, never a JSON array rewritten per turn."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import JSON_, Id, UtcTimeStamp, utcnow


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "run_id"], ["runs.project_id", "runs.id"], ondelete="CASCADE"
        ),
        Index(None, "project_id", "run_id", "seq", unique=True),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    run_id: Mapped[str] = mapped_column(Id)
    # Position in the run, 1-based, taken from the run's message counter under its lock.
    seq: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(Id)
    role: Mapped[str] = mapped_column(String(16))  # system | user | assistant | tool
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="complete")  # pending|complete|error
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON_)
    task_id: Mapped[str | None] = mapped_column(Id)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON_, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
