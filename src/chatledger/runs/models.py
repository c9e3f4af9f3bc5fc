"""The `runs` table: one conversation, with aggregates kept equal to its rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import JSON_, Id, NanoUSD, UtcTimeStamp, utcnow


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # The run list is "my runs, newest activity first" (cursor pagination).
        Index(None, "project_id", "user_id", "updated_at"),
        # ... and the whole project's, for owners, admins and service keys.
        Index(None, "project_id", "updated_at", "id"),
    )

    project_id: Mapped[str] = mapped_column(Id, ForeignKey("projects.id"), primary_key=True)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(Id)
    name: Mapped[str] = mapped_column(String(200))
    name_source: Mapped[str] = mapped_column(String(8), default="auto")  # auto | user
    prompt_id: Mapped[str | None] = mapped_column(Id)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON_, default=dict)
    variable_values: Mapped[dict[str, Any]] = mapped_column(JSON_, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON_, default=dict)
    task_count: Mapped[int] = mapped_column(Integer, default=0)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cost_nano: Mapped[int] = mapped_column(NanoUSD, default=0)
    last_message_at: Mapped[datetime | None] = mapped_column(UtcTimeStamp)
    last_message_preview: Mapped[str | None] = mapped_column(Text)
    last_model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
