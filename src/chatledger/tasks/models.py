"""The `tasks` table: one model call (attempt), carrying its model, usage, cost and timing.

Usage lives here and only here; runs and daily usage are sums of these rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import JSON_, Id, NanoUSD, UtcTimeStamp, utcnow
from chatledger.tokens import TokenUsage

TERMINAL = ("completed", "failed", "cancelled", "interrupted")
LIVE = ("pending", "streaming")


def token_columns(usage: TokenUsage) -> dict[str, Any]:
    """A task's usage columns holding `usage` (the inverse of `Task.tokens`)."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "usage_estimated": usage.estimated,
    }


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "run_id"], ["runs.project_id", "runs.id"], ondelete="CASCADE"
        ),
        Index(None, "project_id", "run_id", "created_at"),
        # A message's attempts are numbered by counting them on every turn.
        Index(None, "project_id", "user_message_id"),
        # The sweeper looks for live tasks whose heartbeat is older than the lease.
        Index(None, "status", "heartbeat_at"),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    run_id: Mapped[str] = mapped_column(Id)
    # The run's owner, copied so usage and visibility need no join.
    user_id: Mapped[str] = mapped_column(Id)
    user_message_id: Mapped[str | None] = mapped_column(Id)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    service: Mapped[str | None] = mapped_column(String(100))
    task_name: Mapped[str | None] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON_, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    response_text: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON_)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # The part of input_tokens written into the provider's prompt cache (priced apart).
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    usage_estimated: Mapped[bool] = mapped_column(default=False)
    # NULL when the model has no known price: unknown is not the same as free.
    cost_nano: Mapped[int | None] = mapped_column(NanoUSD)
    price_source: Mapped[str | None] = mapped_column(String(64))
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    total_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcTimeStamp)

    @property
    def tokens(self) -> TokenUsage:
        return TokenUsage.of(self, estimated=self.usage_estimated)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL
