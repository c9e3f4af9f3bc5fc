"""Daily usage tables. `usage_daily`: per project, user, UTC day and model, the sums of
the tasks that ended that day. No NULLs in the key, so the upsert always finds its row.
`project_usage_daily`: the same summed over users, per project, day and model, kept by
the database itself (migration 0010)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import Id, NanoUSD


class UsageDaily(Base):
    __tablename__ = "usage_daily"
    # A project's usage over a range of days (the key starts with user_id), read from
    # the index alone: it holds the sums too (migration 0008).
    __table_args__ = (
        Index(
            "ix_usage_daily_project_day_sums",
            *("project_id", "day", "model", "user_id"),
            *("requests", "failed_requests", "input_tokens", "output_tokens"),
            *("cached_tokens", "reasoning_tokens", "cost_nano"),
        ),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(Id, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    failed_requests: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nano: Mapped[int] = mapped_column(NanoUSD, default=0)


class ProjectUsageDaily(Base):
    """`usage_daily` summed over the project's users. Written only by triggers on
    `usage_daily` (migration 0010), in the same statement as the row they sum, so it
    never drifts from it and costs no statement of its own; an owner's usage by model
    over 90 days reads 180 rows here instead of summing 18,000 (100 users, two models)."""

    __tablename__ = "project_usage_daily"

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nano: Mapped[int] = mapped_column(NanoUSD, default=0)
